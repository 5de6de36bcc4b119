//! A handle on a breaker: read its figures, force its state, watch its transitions.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use seawall_core::config::ConfigError;
use tokio::sync::watch;

use crate::breaker::Breaker;
use crate::config::CircuitBreakerConfig;
use crate::state::CircuitState;
use crate::window::WindowCounts;

/// Reads and steers one circuit breaker; cheap to clone, and shared with every service of the
/// layer it came from.
///
/// From [`CircuitBreakerLayer::handle`](crate::CircuitBreakerLayer::handle),
/// [`CircuitBreakerLayer::pair`](crate::CircuitBreakerLayer::pair) or, per key,
/// [`KeyedCircuitBreakerLayer::handle`](crate::KeyedCircuitBreakerLayer::handle).
///
/// What it reads reflects the time elapsed with no traffic: an open breaker whose open
/// duration is over reads half-open (the next call would be a probe), a half-open one whose
/// probes did not decide within the maximum wait reads open. With automatic transitions (the
/// default) a timer also makes those moves, so the state gauge and [`subscribe`](Self::subscribe)
/// see them too.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    breaker: Arc<Breaker>,
}

impl CircuitBreakerHandle {
    pub(crate) fn new(breaker: Arc<Breaker>) -> Self {
        Self { breaker }
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        self.breaker.name()
    }

    /// The key of a keyed breaker, as `Debug` writes it.
    pub fn key(&self) -> Option<&str> {
        self.breaker.key()
    }

    /// The current state, as the time elapsed has left it.
    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// The calls, failures and slow calls in the window now; in half-open, the probes' decided
    /// so far.
    pub fn counts(&self) -> WindowCounts {
        self.breaker.counts()
    }

    /// Failures over calls in the window now; 0 when it is empty.
    pub fn failure_rate(&self) -> f64 {
        self.counts().failure_rate()
    }

    /// Slow calls over calls in the window now; 0 when it is empty.
    pub fn slow_call_rate(&self) -> f64 {
        self.counts().slow_call_rate()
    }

    /// Failures in a row just now.
    pub fn consecutive_failures(&self) -> u32 {
        self.breaker.consecutive_failures()
    }

    /// Time left until an open breaker lets probes through; `None` unless open (or when a
    /// half-open phase has just timed out and its open time is not set yet).
    pub fn open_remaining(&self) -> Option<Duration> {
        self.breaker.open_remaining()
    }

    /// Rejects every call until another state is set through a handle.
    pub fn force_open(&self) {
        self.breaker.force(CircuitState::ForcedOpen, false);
    }

    /// Closes the breaker now, with an empty window (a breaker already closed is left as it is;
    /// see [`reset`](Self::reset)).
    pub fn force_closed(&self) {
        self.breaker.force(CircuitState::Closed, false);
    }

    /// Lets every call through and records nothing, until another state is set.
    pub fn disable(&self) {
        self.breaker.force(CircuitState::Disabled, false);
    }

    /// Lets every call through and records and reports outcomes, but never trips, until
    /// another state is set.
    pub fn metrics_only(&self) {
        self.breaker.force(CircuitState::MetricsOnly, false);
    }

    /// Back to closed as new: empty window, no failures in a row, and the open backoff starting
    /// over.
    pub fn reset(&self) {
        self.breaker.force(CircuitState::Closed, true);
    }

    /// A receiver that sees every state the breaker enters (with automatic transitions, also
    /// the moves time alone makes).
    pub fn subscribe(&self) -> watch::Receiver<CircuitState> {
        self.breaker.subscribe()
    }

    /// The configuration the breaker judges by now: the one it was built with, or the last
    /// one [`reload`](Self::reload) took.
    pub fn config(&self) -> CircuitBreakerConfig {
        self.breaker.config()
    }

    /// Judges by `config` from now on, without a restart: thresholds, minimum calls, open
    /// duration, probes and the rest apply to the next call recorded or the next transition.
    ///
    /// The breaker keeps its state, the calls in its window, its run of failures, the calls in
    /// flight (each is recorded when it ends) and the phase under way: an open breaker stays
    /// open until the end it was given, a half-open phase keeps its probes and its deadline.
    /// A `config` with another name or another window is refused with a [`ConfigError`] that
    /// names the field, and the breaker goes on with the configuration it had.
    ///
    /// ```
    /// use seawall_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    ///
    /// # fn main() -> Result<(), seawall_core::config::ConfigError> {
    /// let (_layer, handle) = CircuitBreakerLayer::builder()
    ///     .name("db")
    ///     .count_window(50)
    ///     .build()?
    ///     .pair();
    /// let stricter = CircuitBreakerConfig::builder()
    ///     .name("db")
    ///     .count_window(50)
    ///     .minimum_calls(10)
    ///     .failure_rate_threshold(0.25)
    ///     .build()?;
    /// handle.reload(stricter)?;
    /// assert_eq!(handle.config().failure_rate_threshold(), Some(0.25));
    ///
    /// let resized = CircuitBreakerConfig::builder().name("db").count_window(10).build()?;
    /// assert_eq!(handle.reload(resized).unwrap_err().field(), "window");
    /// assert_eq!(handle.config().minimum_calls(), 10);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reload(&self, config: CircuitBreakerConfig) -> Result<(), ConfigError> {
        self.breaker.reload(&config)
    }

    /// Whether [`reload`](Self::reload) would take `config`, changing nothing: a stack checks
    /// every layer's new configuration before it reloads any.
    pub fn check_reload(&self, config: &CircuitBreakerConfig) -> Result<(), ConfigError> {
        self.breaker.check_reload(config)
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("name", &self.name())
            .field("key", &self.key())
            .field("state", &self.state())
            .field("counts", &self.counts())
            .finish()
    }
}
