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

impl Event for RejectedEvent<'_> {
    type Of<'a> = RejectedEvent<'a>;
}

impl Event for ThrottlingChangedEvent<'_> {
    type Of<'a> = ThrottlingChangedEvent<'a>;
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
}

impl CallResult {
    pub(crate) const ALL: [Self; 5] = [
        Self::Success,
        Self::Failure,
        Self::Overload,
        Self::Ignored,
        Self::Rejected,
    ];

    /// A short lowercase label, as used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Overload => "overload",
            Self::Ignored => "ignored",
            Self::Rejected => "rejected",
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
