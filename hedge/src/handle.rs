//! A view of a hedge layer from outside its calls.

use std::sync::Arc;
use std::time::Duration;

use seawall_core::config::ConfigError;

use crate::config::HedgeConfig;
use crate::state::State;

/// Reads a hedge layer's current delay, its recent latency and its budget, and reloads its
/// configuration.
///
/// Every handle and every service of one layer share the same state: a reload applies to
/// every service the layer made, those made before it included.
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
        self.state.max_attempts()
    }

    /// The configuration in force.
    pub fn config(&self) -> HedgeConfig {
        self.state.config()
    }

    /// Applies `config` (already validated by its builder or deserializer) from the next call
    /// on, keeping the budget's counts and the latency estimate: a fixed delay, the most
    /// attempts and the budget ratio change live. Refused, with nothing changed, when it names
    /// another layer, another kind of delay or other percentile settings, or another budget
    /// window, which are built with the layer (a restart changes them).
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_hedge::{HedgeConfig, HedgeLayer};
    ///
    /// # fn main() -> Result<(), seawall_core::config::ConfigError> {
    /// let (_layer, handle) = HedgeLayer::builder()
    ///     .name("search")
    ///     .delay(Duration::from_millis(50))
    ///     .build()?
    ///     .pair();
    /// let sooner = HedgeConfig::builder()
    ///     .name("search")
    ///     .delay(Duration::from_millis(20))
    ///     .max_attempts(3)
    ///     .build()?;
    /// handle.reload(sooner)?;
    /// assert_eq!(handle.max_attempts(), 3);
    ///
    /// let percentile = HedgeConfig::builder().name("search").build()?;
    /// assert_eq!(handle.reload(percentile).unwrap_err().field(), "delay");
    /// assert_eq!(handle.config().max_attempts(), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reload(&self, config: HedgeConfig) -> Result<(), ConfigError> {
        self.state.reload(&config)
    }

    /// Whether [`reload`](Self::reload) would take `config`, changing nothing: a stack checks
    /// every layer's new configuration before it reloads any.
    pub fn check_reload(&self, config: &HedgeConfig) -> Result<(), ConfigError> {
        self.state.check_reload(config)
    }
}
