//! A view of a hedge layer from outside its calls.

use std::sync::Arc;
use std::time::Duration;

use crate::state::State;

/// Reads a hedge layer's current delay, its recent latency and its budget.
///
/// Every handle and every service of one layer share the same state.
#[derive(Debug, Clone)]
pub struct HedgeHandle {
    state: Arc<State>,
}

impl HedgeHandle {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The delay after which a call made now would be hedged; `None` while a percentile
    /// delay has seen too few calls.
    pub fn delay(&self) -> Option<Duration> {
        self.state.delay_now()
    }

    /// The `q` quantile of the first attempts' recent latency, when the delay is a
    /// percentile (a first attempt that a hedge beat counts with the time it had taken then).
    pub fn latency(&self, q: f64) -> Option<Duration> {
        self.state.latency_quantile(q)
    }

    /// Hedges the budget allows now.
    pub fn budget_available(&self) -> u64 {
        self.state.budget_available()
    }

    /// The most attempts per call, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.state.max_attempts
    }
}
