//! What the retry layer's hooks are told.

use std::time::Duration;

use seawall_core::Event;

/// What a retry hook is told, before the wait for each retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The number of the attempt about to be made: 2 for the first retry.
    pub attempt: u32,
    /// The wait before it.
    pub delay: Duration,
}

impl Event for RetryEvent<'_> {
    type Of<'a> = RetryEvent<'a>;
}
