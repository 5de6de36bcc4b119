use std::fmt;
use std::sync::Arc;

use seawall_core::classify::AnyError;
use tower::Layer;

use crate::config::RateConfig;
use crate::service::HealthService;
use crate::tracker::HealthTracker;
use crate::window::{Shared, rate_component};

/// Watches the error rate and latency of the calls through it and reports them as a
/// component of a [`HealthTracker`].
pub struct HealthLayer<C = AnyError> {
    shared: Arc<Shared<C>>,
}

impl HealthLayer {
    /// A layer reporting into `tracker` as the component `config` names; any error is a
    /// failed call.
    pub fn new(tracker: &HealthTracker, config: RateConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                window: rate_component(tracker, config),
                classifier: AnyError,
            }),
        }
    }
}

impl<C> HealthLayer<C> {
    /// The name of the component the layer reports as.
    pub fn name(&self) -> &str {
        self.shared.window.config().component.name()
    }

    /// Judges calls with `classifier` (for example `HttpStatus` to count 5xx answers too).
    pub fn classify<C2>(self, classifier: C2) -> HealthLayer<C2> {
        HealthLayer {
            shared: Arc::new(Shared {
                window: self.shared.window.clone(),
                classifier,
            }),
        }
    }
}

impl<C> Clone for HealthLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C> fmt::Debug for HealthLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthLayer")
            .field("config", self.shared.window.config())
            .finish_non_exhaustive()
    }
}

impl<S, C> Layer<S> for HealthLayer<C> {
    type Service = HealthService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        HealthService::new(inner, self.shared.clone())
    }
}
