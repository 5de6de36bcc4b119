//! What the hedge's hooks are told.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a hedge hook is told when a hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgeEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The attempt the hedge is: 2 for the first hedge.
    pub attempt: u32,
    /// How long the call had waited when the hedge was sent.
    pub waited: Duration,
}

/// What a hook is told when a hedge answered the call first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgeWonEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The attempt that answered: 2 for the first hedge.
    pub attempt: u32,
    /// How long the call took.
    pub elapsed: Duration,
}

/// What a hook is told when a hedge was due but the budget was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExhaustedEvent<'a> {
    /// The layer instance's name.
    pub name: &'a str,
    /// The attempt that was not sent.
    pub attempt: u32,
}

pub(crate) type HedgeHook = Arc<dyn Fn(HedgeEvent<'_>) + Send + Sync>;
pub(crate) type WonHook = Arc<dyn Fn(HedgeWonEvent<'_>) + Send + Sync>;
pub(crate) type BudgetHook = Arc<dyn Fn(BudgetExhaustedEvent<'_>) + Send + Sync>;

/// The hooks of one layer.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) on_hedge: Option<HedgeHook>,
    pub(crate) on_hedge_won: Option<WonHook>,
    pub(crate) on_budget_exhausted: Option<BudgetHook>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_hedge", &self.on_hedge.is_some())
            .field("on_hedge_won", &self.on_hedge_won.is_some())
            .field("on_budget_exhausted", &self.on_budget_exhausted.is_some())
            .finish()
    }
}
