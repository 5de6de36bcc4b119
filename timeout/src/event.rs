//! What the timeout's hook is told.

use std::time::Duration;

use seawall_core::{Event, RejectionKind};

/// What a timeout hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOutEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The time the call was given, after any deadline shortened it.
    pub timeout: Duration,
    /// `TimedOut`, or `DeadlineExceeded` when the caller's deadline ended the call.
    pub kind: RejectionKind,
}

impl Event for TimedOutEvent<'_> {
    type Of<'a> = TimedOutEvent<'a>;
}
