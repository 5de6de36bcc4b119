//! What the hedge's hooks are told.

use std::time::Duration;

use seawall_core::{Event, Hook};

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

impl Event for HedgeEvent<'_> {
    type Of<'a> = HedgeEvent<'a>;
}

impl Event for HedgeWonEvent<'_> {
    type Of<'a> = HedgeWonEvent<'a>;
}

impl Event for BudgetExhaustedEvent<'_> {
    type Of<'a> = BudgetExhaustedEvent<'a>;
}

/// The hooks of one layer.
#[derive(Clone, Default, Debug)]
pub(crate) struct Hooks {
    pub(crate) on_hedge: Hook<HedgeEvent<'static>>,
    pub(crate) on_hedge_won: Hook<HedgeWonEvent<'static>>,
    pub(crate) on_budget_exhausted: Hook<BudgetExhaustedEvent<'static>>,
}
