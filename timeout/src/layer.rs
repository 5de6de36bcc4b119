use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use seawall_core::metrics::MetricScope;
use tower::Layer;

use crate::config::{DeadlineConfig, TimeoutConfig, TimeoutConfigBuilder};
use crate::deadline::{HeaderDeadlines, NoDeadlines, ScopedDeadlines};
use crate::event::TimedOutEvent;
use crate::handle::TimeoutHandle;
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

    /// Honours the caller's [current](seawall_core::Deadline::current) deadline and makes its
    /// own current for the layers below, with any request type and no headers: a client
    /// stack's total timeout, which the attempts below it must not outlive.
    pub fn scoped(self) -> TimeoutLayer<ScopedDeadlines> {
        TimeoutLayer {
            shared: self.shared,
            deadlines: ScopedDeadlines,
        }
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

impl TimeoutLayer<HeaderDeadlines> {
    /// For a timeout below an [`InboundDeadlineLayer`](crate::InboundDeadlineLayer) that reads
    /// the same headers, as in a server stack: the caller's deadline is the one that layer made
    /// [current](crate::Deadline::current), and the headers are not read a second time. Without
    /// such a layer above, neither the headers nor a `Deadline` extension are read at all.
    #[must_use]
    pub fn below_inbound(mut self) -> Self {
        self.deadlines = self.deadlines.stamped_above();
        self
    }
}

impl<D> TimeoutLayer<D> {
    /// Calls `hook` each time a call times out or its caller's deadline passes.
    pub fn on_timeout(self, hook: impl Fn(TimedOutEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.on_timeout.set(hook);
        self
    }

    /// The longest a call may take: the fixed timeout, or an adaptive timeout's ceiling.
    pub fn timeout(&self) -> Duration {
        self.shared.live.ceiling()
    }

    /// A handle on the layer's timeout: read it, reload it.
    pub fn handle(&self) -> TimeoutHandle {
        TimeoutHandle::new(self.shared.name.clone(), self.shared.live.clone())
    }

    /// The layer and a handle on its timeout.
    pub fn pair(self) -> (Self, TimeoutHandle) {
        let handle = self.handle();
        (self, handle)
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
            .field("timeout", &self.shared.live.ceiling())
            .field("deadlines", &self.deadlines)
            .finish()
    }
}
