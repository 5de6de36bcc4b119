//! What the chaos layer's hook is told.

use seawall_core::Event;

/// The kind of fault injected into a call, the `fault` label of
/// `seawall_chaos_injected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// An injected error.
    Error,
    /// A chosen response in place of the inner service's.
    Response,
    /// The configured latency (or the capacity model's queueing and service time).
    Latency,
    /// A slow-call fault's extra delay.
    Slow,
    /// A call that never returns.
    Hang,
    /// The capacity model's queue was full.
    QueueFull,
}

impl Fault {
    pub(crate) const ALL: [Fault; 6] = [
        Self::Error,
        Self::Response,
        Self::Latency,
        Self::Slow,
        Self::Hang,
        Self::QueueFull,
    ];

    /// A short lowercase label, as used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Response => "response",
            Self::Latency => "latency",
            Self::Slow => "slow",
            Self::Hang => "hang",
            Self::QueueFull => "queue_full",
        }
    }
}

impl seawall_core::metrics::Label for Fault {
    const KEY: &'static str = "fault";
    const ALL: &'static [Self] = &Self::ALL;

    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

/// What an injection hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// What was injected.
    pub fault: Fault,
}

impl Event for InjectedEvent<'_> {
    type Of<'a> = InjectedEvent<'a>;
}
