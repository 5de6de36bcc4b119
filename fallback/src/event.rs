//! What the fallback's hook is told.

use std::sync::Arc;

use crate::trigger::Cause;

/// What a fallback hook is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// Why the fallback answered.
    pub cause: Cause,
}

pub(crate) type FallbackHook = Arc<dyn Fn(FallbackEvent<'_>) + Send + Sync>;
