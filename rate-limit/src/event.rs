//! What the rate limit's hooks are told.

use std::time::Duration;

use seawall_core::Event;

/// What a rejection hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// How long until the call's bucket has a permit again.
    pub retry_after: Duration,
}

/// What a wait hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// How long the call waited for its permit.
    pub waited: Duration,
}

impl Event for RejectedEvent<'_> {
    type Of<'a> = RejectedEvent<'a>;
}

impl Event for WaitedEvent<'_> {
    type Of<'a> = WaitedEvent<'a>;
}
