//! The breaker's states and what its hooks are told.

use std::fmt;
use std::time::Duration;

use seawall_core::Event;

/// Where a circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls pass and their outcomes fill the window.
    Closed,
    /// Calls are rejected until the open duration is over.
    Open,
    /// A few probe calls pass; their outcomes decide between closed and open.
    HalfOpen,
    /// Calls pass and nothing is recorded (set through the handle).
    Disabled,
    /// Calls pass and outcomes are recorded and reported, but the breaker never trips (set
    /// through the handle).
    MetricsOnly,
    /// Every call is rejected until the handle says otherwise.
    ForcedOpen,
}

impl CircuitState {
    pub(crate) const ALL: [Self; 6] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::Disabled,
        Self::MetricsOnly,
        Self::ForcedOpen,
    ];

    /// A short lowercase label, as used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics_only",
            Self::ForcedOpen => "forced_open",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    pub(crate) const fn from_index(index: u64) -> Self {
        match index {
            0 => Self::Closed,
            1 => Self::Open,
            2 => Self::HalfOpen,
            3 => Self::Disabled,
            4 => Self::MetricsOnly,
            _ => Self::ForcedOpen,
        }
    }

    /// Whether calls are rejected in this state (all of them, or those beyond the probes).
    pub fn rejects(self) -> bool {
        matches!(self, Self::Open | Self::HalfOpen | Self::ForcedOpen)
    }
}

impl seawall_core::metrics::Label for CircuitState {
    const KEY: &'static str = "state";
    const ALL: &'static [Self] = &Self::ALL;

    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a call that the breaker let through ended, as its metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// A success within the slow-call duration.
    Success,
    /// A failure within the slow-call duration.
    Failure,
    /// A success that took longer than the slow-call duration.
    SlowSuccess,
    /// A failure that took longer than the slow-call duration.
    SlowFailure,
    /// An outcome that counts for nothing.
    Ignored,
}

impl CallOutcome {
    pub(crate) const ALL: [Self; 5] = [
        Self::Success,
        Self::Failure,
        Self::SlowSuccess,
        Self::SlowFailure,
        Self::Ignored,
    ];

    /// A short lowercase label, as used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::SlowSuccess => "slow_success",
            Self::SlowFailure => "slow_failure",
            Self::Ignored => "ignored",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// Whether the call failed.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failure | Self::SlowFailure)
    }

    /// Whether the call was slow.
    pub fn is_slow(self) -> bool {
        matches!(self, Self::SlowSuccess | Self::SlowFailure)
    }
}

impl seawall_core::metrics::Label for CallOutcome {
    const KEY: &'static str = "outcome";
    const ALL: &'static [Self] = &Self::ALL;

    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

/// What a state-change hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChangedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The key of a keyed breaker, as `Debug` writes it.
    pub key: Option<&'a str>,
    /// The state left.
    pub from: CircuitState,
    /// The state entered.
    pub to: CircuitState,
}

/// Why a breaker rejected a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The breaker is open, forced open, or half-open with every probe slot taken.
    Open,
    /// The breaker is closed and shed the call: a run of failures has reached the length
    /// that makes an outage likely but not yet the one that opens it (see
    /// [`ConsecutiveFailures::Adaptive`](crate::ConsecutiveFailures::Adaptive)). Counted as
    /// `seawall_circuit_breaker_calls_total{outcome="shed"}`, not `"rejected"`.
    Shed,
}

impl RejectReason {
    /// A short lowercase label, as used in metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Shed => "shed",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a rejection hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The key of a keyed breaker, as `Debug` writes it.
    pub key: Option<&'a str>,
    /// The state that rejected the call (closed for a shed).
    pub state: CircuitState,
    /// Why: an open breaker, or a shed while closed.
    pub reason: RejectReason,
    /// Time left until the breaker lets probes through, when known.
    pub retry_after: Option<Duration>,
}

/// What an outcome hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The key of a keyed breaker, as `Debug` writes it.
    pub key: Option<&'a str>,
    /// How the call ended.
    pub outcome: CallOutcome,
    /// The state the call was admitted in.
    pub state: CircuitState,
    /// How long the call took; `None` for a call that began before the hook was set (and
    /// with neither a slow-call rule nor a metrics recorder, was not timed).
    pub duration: Option<Duration>,
}

impl Event for StateChangedEvent<'_> {
    type Of<'a> = StateChangedEvent<'a>;
}

impl Event for RejectedEvent<'_> {
    type Of<'a> = RejectedEvent<'a>;
}

impl Event for OutcomeEvent<'_> {
    type Of<'a> = OutcomeEvent<'a>;
}
