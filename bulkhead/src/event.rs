//! What the bulkhead's hooks are told.

use seawall_core::Event;

/// Why a call was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// No slot was free and the queue (or the partition's part of it) had no room.
    Full,
    /// The call waited `max_wait` in the queue without getting a slot.
    WaitExpired,
}

impl RejectReason {
    /// A short lowercase label, as used in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::WaitExpired => "wait_expired",
        }
    }
}

/// What a rejection hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// Why the call was rejected.
    pub reason: RejectReason,
    /// The partition the call belonged to, if the bulkhead is partitioned.
    pub partition: Option<&'a str>,
}

/// What a limit hook is told when an adaptive limit (or a handle) moves the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitChangedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The limit before.
    pub from: usize,
    /// The limit now.
    pub to: usize,
}

impl Event for RejectedEvent<'_> {
    type Of<'a> = RejectedEvent<'a>;
}

impl Event for LimitChangedEvent<'_> {
    type Of<'a> = LimitChangedEvent<'a>;
}
