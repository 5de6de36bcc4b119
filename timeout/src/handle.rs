//! A handle on a timeout: read what it is, change it while calls run.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use seawall_core::config::ConfigError;
use tokio::time::Instant;

use crate::config::TimeoutConfig;
use crate::state::Live;

/// Reads and reloads one timeout layer; cheap to clone, and shared with every service of the
/// layer it came from.
///
/// From [`TimeoutLayer::handle`](crate::TimeoutLayer::handle) or
/// [`TimeoutLayer::pair`](crate::TimeoutLayer::pair).
#[derive(Clone)]
pub struct TimeoutHandle {
    name: Arc<str>,
    live: Arc<Live>,
}

impl TimeoutHandle {
    pub(crate) fn new(name: Arc<str>, live: Arc<Live>) -> Self {
        Self { name, live }
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration in force.
    pub fn config(&self) -> TimeoutConfig {
        self.live.config()
    }

    /// The timeout a call starting now would be given (before any deadline shortens it or a
    /// last attempt lengthens it).
    pub fn timeout(&self) -> Duration {
        self.live.timeout_at(Instant::now())
    }

    /// The percentile of recent latency an adaptive timeout follows; `None` for a fixed one,
    /// or until the window holds enough calls.
    pub fn percentile(&self) -> Option<Duration> {
        self.live.percentile()
    }

    /// Puts `config` in force for the calls that start from now on; the calls in flight keep
    /// the timeout they were given. A fixed timeout takes a new duration; an adaptive one new
    /// bounds (floor, ceiling) and multiplier, and keeps the latencies it learned.
    ///
    /// Refused, with the old configuration kept, when `config` has another name, another mode
    /// (fixed or adaptive), or another quantile, window or minimum of samples: those are the
    /// estimate's shape, which a restart changes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall_timeout::{TimeoutConfig, TimeoutLayer};
    ///
    /// # fn main() -> Result<(), seawall_core::config::ConfigError> {
    /// let (layer, handle) = TimeoutLayer::builder()
    ///     .name("db")
    ///     .timeout(Duration::from_millis(250))
    ///     .build()?
    ///     .pair();
    /// let faster = TimeoutConfig::builder().name("db").timeout(Duration::from_millis(100)).build()?;
    /// handle.reload(faster)?;
    /// assert_eq!(layer.timeout(), Duration::from_millis(100));
    /// # Ok(())
    /// # }
    /// ```
    pub fn reload(&self, config: TimeoutConfig) -> Result<(), ConfigError> {
        self.live.reload(&config)?;
        tracing::info!(name = %self.name, timeout = ?config.timeout(), "timeout reloaded");
        Ok(())
    }

    /// Whether [`reload`](Self::reload) would take `config`, changing nothing: a stack checks
    /// every layer's new configuration before it reloads any.
    pub fn check_reload(&self, config: &TimeoutConfig) -> Result<(), ConfigError> {
        self.live.check_reload(config)
    }
}

impl fmt::Debug for TimeoutHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutHandle")
            .field("name", &self.name)
            .field("config", &self.config())
            .finish()
    }
}
