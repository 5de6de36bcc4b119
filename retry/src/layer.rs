use std::fmt;
use std::sync::Arc;

use tower::Layer;

use crate::budget::RetryBudget;
use crate::config::{RetryConfig, RetryConfigBuilder};
use crate::event::RetryEvent;
use crate::fleet::{Budget, LayerBudget};
use crate::handle::RetryHandle;
use crate::policy::DefaultPolicy;
use crate::service::Retry;
use crate::state::Shared;

/// Applies [`Retry`] to every call of the inner service.
///
/// Its budget and metric handles are made when it is built (with the recorder in place then)
/// and shared by every service it wraps, so axum calling `layer()` per connection still gives
/// one budget.
pub struct RetryLayer<P = DefaultPolicy> {
    shared: Arc<Shared<P>>,
}

impl RetryLayer {
    /// A layer from a validated configuration, retrying with [`DefaultPolicy`].
    pub fn new(config: RetryConfig) -> Self {
        Self {
            shared: Arc::new(Shared::new(&config, DefaultPolicy)),
        }
    }

    /// A builder whose `build` makes the layer.
    pub fn builder() -> RetryConfigBuilder<Self> {
        RetryConfigBuilder::new()
    }
}

impl<P> RetryLayer<P> {
    /// Decides what is retried with `policy` (such as `HttpPolicy` or `GrpcPolicy`).
    pub fn policy<Q>(self, policy: Q) -> RetryLayer<Q> {
        RetryLayer {
            shared: Arc::new(self.shared.with_policy(Arc::new(policy))),
        }
    }

    /// Draws retries from `budget`, which other layers may share, instead of the layer's own.
    pub fn with_budget(self, budget: RetryBudget) -> Self {
        self.update(|shared| shared.budget = Some(LayerBudget::Own(budget)))
    }

    /// Draws retries from `budget`, such as a [`FleetBudget`](crate::FleetBudget) that every
    /// replica of a fleet shares, instead of the layer's own.
    pub fn with_shared_budget(self, budget: impl Budget) -> Self {
        let budget: Arc<dyn Budget> = Arc::new(budget);
        self.update(|shared| shared.budget = Some(LayerBudget::Shared(budget)))
    }

    /// Calls `hook` before the wait for each retry.
    pub fn on_retry(self, hook: impl Fn(RetryEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.on_retry.set(hook);
        self
    }

    /// The layer's own budget retries are drawn from, if any (`None` with a shared one).
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget.as_ref().and_then(LayerBudget::own)
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A handle that reads and reloads the layer's settings and its own budget (as the layer
    /// has them now: take it after `with_budget`).
    pub fn handle(&self) -> RetryHandle {
        RetryHandle::new(
            self.shared.name.clone(),
            self.shared.settings.clone(),
            self.shared.budget.clone(),
        )
    }

    /// The layer and a handle on it.
    pub fn pair(self) -> (Self, RetryHandle) {
        let handle = self.handle();
        (self, handle)
    }

    fn update(self, f: impl FnOnce(&mut Shared<P>)) -> Self {
        let mut shared = self.shared.with_policy(self.shared.policy.clone());
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }
}

impl From<RetryConfig> for RetryLayer {
    fn from(config: RetryConfig) -> Self {
        Self::new(config)
    }
}

impl<P> Clone for RetryLayer<P> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Clone, P> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.shared.clone())
    }
}

impl<P: fmt::Debug> fmt::Debug for RetryLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        let limits = s.settings.limits();
        f.debug_struct("RetryLayer")
            .field("name", &s.name)
            .field("max_attempts", &limits.max_attempts)
            .field("backoff", &limits.backoff)
            .field("max_delay", &limits.max_delay)
            .field("max_elapsed", &limits.max_elapsed)
            .field("budget", &s.budget)
            .field("policy", &s.policy)
            .finish()
    }
}
