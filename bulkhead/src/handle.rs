//! A view of a bulkhead from outside its calls.

use std::sync::Arc;

use seawall_core::config::ConfigError;

use crate::config::BulkheadConfig;
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

    /// The configuration the bulkhead was built with or last [reloaded](Self::reload) with
    /// (the limit in force now is [`limit`](Self::limit): an adaptive limit or
    /// [`set_limit`](Self::set_limit) moves it).
    pub fn config(&self) -> BulkheadConfig {
        self.state.config()
    }

    /// Takes the limit, `queue_limit`, `max_wait` and `sample_window` of `config` while calls
    /// flow, without a restart.
    ///
    /// Calls in flight keep their slots and calls in the queue their places: a lower limit
    /// admits no new call until those in flight are below it, a shorter queue takes no new
    /// call until it is below its new length, and a call already waiting keeps the wait it
    /// started with. An adaptive limit keeps the limit it reached (within its new bounds) and
    /// adapts from there under its new settings. A `config` with another name, another kind of
    /// limit (fixed or adaptive), other partitions, borrowing or `max_reader_idle` is refused
    /// with a [`ConfigError`] naming the field, and the bulkhead goes on as it was.
    ///
    /// ```
    /// use seawall_bulkhead::{BulkheadConfig, BulkheadLayer};
    ///
    /// # fn main() -> Result<(), seawall_core::config::ConfigError> {
    /// let (_layer, handle) = BulkheadLayer::builder().name("db").max_concurrent(10).build()?.pair();
    /// handle.reload(BulkheadConfig::builder().name("db").max_concurrent(20).queue_limit(5).build()?)?;
    /// assert_eq!(handle.limit(), 20);
    /// assert_eq!(handle.config().queue_limit(), 5);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reload(&self, config: BulkheadConfig) -> Result<(), ConfigError> {
        if let Some(change) = self.state.reload(&config)? {
            tracing::info!(
                name = %self.state.name,
                from = change.from,
                to = change.to,
                "limit set by reload"
            );
        }
        Ok(())
    }

    /// Whether [`reload`](Self::reload) would take `config`, changing nothing.
    pub fn check_reload(&self, config: &BulkheadConfig) -> Result<(), ConfigError> {
        self.state.check_reload(config)
    }
}
