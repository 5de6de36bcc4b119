//! What the outlier detector's hooks and handle tell.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use seawall_core::{Event, Hook};

/// Why an endpoint was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EjectionReason {
    /// Too many failures in a row.
    ConsecutiveFailures,
    /// A success rate far below the other endpoints'.
    SuccessRate,
    /// The probe sent when its ejection ended failed.
    ProbeFailed,
    /// A handle ejected it.
    Forced,
}

impl EjectionReason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 4] = [
        Self::ConsecutiveFailures,
        Self::SuccessRate,
        Self::ProbeFailed,
        Self::Forced,
    ];

    /// A short lowercase label, as used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConsecutiveFailures => "consecutive_failures",
            Self::SuccessRate => "success_rate",
            Self::ProbeFailed => "probe_failed",
            Self::Forced => "forced",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl seawall_core::metrics::Label for EjectionReason {
    const KEY: &'static str = "reason";
    const ALL: &'static [Self] = &Self::ALL;

    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

impl fmt::Display for EjectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What an ejection hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectedEvent<'a, K> {
    /// The endpoint set's name.
    pub name: &'a str,
    /// The endpoint ejected.
    pub key: &'a K,
    /// Why.
    pub reason: EjectionReason,
    /// For how long.
    pub duration: Duration,
    /// Its ejections in a row, this one included (what the base ejection time is multiplied
    /// by).
    pub ejections: u32,
}

/// What a return hook is told when an ejected endpoint is back in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnedEvent<'a, K> {
    /// The endpoint set's name.
    pub name: &'a str,
    /// The endpoint back in.
    pub key: &'a K,
    /// Whether a probe passed before it returned (otherwise its time was up, or a handle
    /// returned it).
    pub probed: bool,
}

/// What an ejection that the share cap refused is told, through the skipped hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkippedEvent<'a, K> {
    /// The endpoint set's name.
    pub name: &'a str,
    /// The endpoint that stays in.
    pub key: &'a K,
    /// Why it would have been ejected.
    pub reason: EjectionReason,
}

/// An endpoint as a handle lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus<K> {
    /// Its key.
    pub key: K,
    /// Time left in its ejection (zero while a probe decides), or `None` when it is in.
    pub ejected_for: Option<Duration>,
    /// Its ejections in a row, decayed by one per interval spent in.
    pub ejections: u32,
    /// Its failures in a row.
    pub consecutive_failures: u32,
    /// Its successes and failures since the last success-rate comparison.
    pub successes: u64,
    /// See `successes`.
    pub failures: u64,
}

/// Names [`EjectedEvent`] for its hook.
pub(crate) struct Ejected<K>(PhantomData<fn() -> K>);

impl<K: 'static> Event for Ejected<K> {
    type Of<'a> = EjectedEvent<'a, K>;
}

/// Names [`ReturnedEvent`] for its hook.
pub(crate) struct Returned<K>(PhantomData<fn() -> K>);

impl<K: 'static> Event for Returned<K> {
    type Of<'a> = ReturnedEvent<'a, K>;
}

/// Names [`SkippedEvent`] for its hook.
pub(crate) struct Skipped<K>(PhantomData<fn() -> K>);

impl<K: 'static> Event for Skipped<K> {
    type Of<'a> = SkippedEvent<'a, K>;
}

// Each event borrows the key, so a hook is named by a marker: `EjectedEvent<'static, K>` would
// ask `K: 'static` of every type that holds the set.

/// The hooks of one endpoint set.
pub(crate) struct Hooks<K> {
    pub(crate) on_ejected: Hook<Ejected<K>>,
    pub(crate) on_returned: Hook<Returned<K>>,
    pub(crate) on_skipped: Hook<Skipped<K>>,
}

impl<K> Default for Hooks<K> {
    fn default() -> Self {
        Self {
            on_ejected: Hook::default(),
            on_returned: Hook::default(),
            on_skipped: Hook::default(),
        }
    }
}

impl<K> fmt::Debug for Hooks<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_ejected", &self.on_ejected)
            .field("on_returned", &self.on_returned)
            .field("on_skipped", &self.on_skipped)
            .finish()
    }
}
