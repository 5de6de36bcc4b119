use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use seawall_core::metrics::MetricScope;
use tower::Layer;

use crate::config::{DeadlineConfig, TimeoutConfig, TimeoutConfigBuilder};
use crate::deadline::{HeaderDeadlines, NoDeadlines};
use crate::event::TimedOutEvent;
use crate::service::Timeout;
use crate::state::Shared;

/// Applies a [`Timeout`] to every call of the inner service.
///
/// Its metric handles are registered when it is built, with the recorder in place then.
#[derive(Clone)]
pub struct TimeoutLayer<D = NoDeadlines> {
    shared: Arc<Shared>,
    deadlines: D,
}

impl TimeoutLayer {
    /// A layer from a validated configuration.
    pub fn new(config: TimeoutConfig) -> Self {
        Self {
            shared: Arc::new(Shared::new(&config, MetricScope::new(config.name.clone()))),
            deadlines: NoDeadlines,
        }
    }

    /// A builder whose `build` makes the layer.
    pub fn builder() -> TimeoutConfigBuilder<Self> {
        TimeoutConfigBuilder::new()
    }

    /// Propagates deadlines through HTTP requests as `config` says; the layer then takes
    /// `http::Request`s only.
    pub fn propagate(self, config: DeadlineConfig) -> TimeoutLayer<HeaderDeadlines> {
        TimeoutLayer {
            shared: self.shared,
            deadlines: HeaderDeadlines::new(config),
        }
    }
}

impl<D> TimeoutLayer<D> {
    /// Calls `hook` each time a call times out or its caller's deadline passes.
    pub fn on_timeout(self, hook: impl Fn(TimedOutEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.on_timeout.set(hook);
        self
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl From<TimeoutConfig> for TimeoutLayer {
    fn from(config: TimeoutConfig) -> Self {
        Self::new(config)
    }
}

impl<S, D: Clone> Layer<S> for TimeoutLayer<D> {
    type Service = Timeout<S, D>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.shared.clone(), self.deadlines.clone())
    }
}

impl<D: fmt::Debug> fmt::Debug for TimeoutLayer<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutLayer")
            .field("name", &self.shared.name)
            .field("timeout", &self.shared.timeout)
            .field("deadlines", &self.deadlines)
            .finish()
    }
}
