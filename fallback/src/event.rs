//! What the fallback's hook is told.

use seawall_core::Event;

use crate::trigger::Cause;

/// What a fallback hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// Why the fallback answered.
    pub cause: Cause,
}

impl Event for FallbackEvent<'_> {
    type Of<'a> = FallbackEvent<'a>;
}
