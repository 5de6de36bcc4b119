//! What the throttle's hooks are told.

use seawall_core::Event;

/// What a rejection hook is told about a call the throttle refused locally.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RejectedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The rejection probability the call was refused with.
    pub probability: f64,
}

/// What a throttling hook is told when the throttle starts rejecting calls (its rejection
/// probability rose above zero) or stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottlingChangedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// Whether the throttle now rejects calls.
    pub throttling: bool,
    /// The rejection probability now.
    pub probability: f64,
}

/// What the shed on latency concluded from an answer (see the crate docs, "Shedding on
/// latency").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedChange {
    /// An elevated answer: the throttle sheds the probe and waits for the next answer.
    Probed,
    /// The next answer came back faster: the downstream's queue answers the fleet's shed.
    QueueConfirmed,
    /// The next answer came back as slow: the downstream is slower, and that is its latency.
    Adopted,
    /// The shed decayed to nothing.
    Released,
}

/// What a shed hook is told when the shed on latency changes its mind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShedChangedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// What changed.
    pub change: ShedChange,
    /// The shed probability now.
    pub probability: f64,
}

impl Event for RejectedEvent<'_> {
    type Of<'a> = RejectedEvent<'a>;
}

impl Event for ThrottlingChangedEvent<'_> {
    type Of<'a> = ThrottlingChangedEvent<'a>;
}

impl Event for ShedChangedEvent<'_> {
    type Of<'a> = ShedChangedEvent<'a>;
}

/// How a call through the throttle ended, as its metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallResult {
    /// The downstream answered with a success: an accept.
    Success,
    /// The downstream answered with a failure: an accept unless failures are not accepted.
    Failure,
    /// The downstream refused the call for overload: a request without an accept.
    Overload,
    /// The call counts for nothing (a client error, or a rejection from further in).
    Ignored,
    /// The throttle refused the call locally: a request without an accept.
    Rejected,
    /// The shed on latency refused the call locally; the window does not count it.
    Shed,
}

impl CallResult {
    pub(crate) const ALL: [Self; 6] = [
        Self::Success,
        Self::Failure,
        Self::Overload,
        Self::Ignored,
        Self::Rejected,
        Self::Shed,
    ];

    /// A short lowercase label, as used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Overload => "overload",
            Self::Ignored => "ignored",
            Self::Rejected => "rejected",
            Self::Shed => "shed",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl seawall_core::metrics::Label for CallResult {
    const KEY: &'static str = "result";
    const ALL: &'static [Self] = &Self::ALL;

    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}
