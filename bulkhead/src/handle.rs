//! A view of a bulkhead from outside its calls.

use std::sync::Arc;

use seawall_core::config::ConfigError;

use crate::state::State;

/// Reads a bulkhead's figures and changes its limit at runtime.
///
/// Every handle and every service of one layer share the same bulkhead.
#[derive(Debug, Clone)]
pub struct BulkheadHandle {
    state: Arc<State>,
}

impl BulkheadHandle {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Calls holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.state.semaphore.in_flight()
    }

    /// Calls waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.state.semaphore.queued()
    }

    /// The concurrency limit now.
    pub fn limit(&self) -> usize {
        self.state.semaphore.limit()
    }

    /// Calls of the partition named `name` holding a slot now; `None` if there is no such
    /// partition.
    pub fn partition_in_flight(&self, name: &str) -> Option<usize> {
        let index = self
            .state
            .partition_names
            .iter()
            .position(|p| &**p == name)?;
        self.state.semaphore.partition_in_flight(index)
    }

    /// Sets the limit: for a fixed limit anything in `[1, 1000000]`; for an adaptive one a
    /// value within its min and max, from which the algorithm goes on adapting. A lower limit
    /// lets calls in flight finish and admits new ones once they are below it. A limit that
    /// moves fires the layer's `on_limit_change` hook.
    pub fn set_limit(&self, limit: usize) -> Result<(), ConfigError> {
        if let Some(change) = self.state.set_limit(limit)? {
            tracing::info!(
                name = %self.state.name,
                from = change.from,
                to = change.to,
                "limit set by handle"
            );
        }
        Ok(())
    }

    /// Whether the limit adapts to the downstream.
    pub fn is_adaptive(&self) -> bool {
        self.state.is_adaptive()
    }

    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        self.state.semaphore.partitions()
    }
}
