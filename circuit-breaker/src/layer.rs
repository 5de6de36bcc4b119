use std::fmt;
use std::sync::Arc;

use seawall_core::classify::AnyError;
use tower::Layer;

use crate::breaker::{Breaker, Observers};
use crate::config::{CircuitBreakerConfig, CircuitBreakerConfigBuilder};
use crate::future::Policy;
use crate::handle::CircuitBreakerHandle;
use crate::retry_after::NoRetryAfter;
use crate::service::CircuitBreaker;
use crate::state::{OutcomeEvent, RejectedEvent, StateChangedEvent};

/// Puts one circuit breaker in front of every service it wraps.
///
/// The breaker, its metric handles (registered with the recorder in place when the layer is
/// built) and its hooks are made once, in [`new`](Self::new); every clone of the layer and
/// every service it makes share them, so a router that calls `layer` per connection still has
/// one breaker.
///
/// `C` classifies results ([`AnyError`] by default), `H` reads open durations from results
/// ([`NoRetryAfter`] by default).
pub struct CircuitBreakerLayer<C = AnyError, H = NoRetryAfter> {
    breaker: Arc<Breaker>,
    policy: Arc<Policy<C, H>>,
}

impl CircuitBreakerLayer {
    /// A layer from a validated configuration.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        let observers = Arc::new(Observers::new(config.name.clone().into(), true));
        Self {
            breaker: Breaker::new(&config, observers, None, None),
            policy: Arc::new(Policy {
                classify: AnyError,
                retry_after: NoRetryAfter,
            }),
        }
    }

    /// A builder whose `build` makes the layer.
    pub fn builder() -> CircuitBreakerConfigBuilder<Self> {
        CircuitBreakerConfigBuilder::new()
    }
}

impl<C, H> CircuitBreakerLayer<C, H> {
    /// Classifies results with `classify` (such as `HttpStatus` or `GrpcCodes` from
    /// `seawall_core::classify`), keeping the same breaker.
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2, H>
    where
        H: Clone,
    {
        CircuitBreakerLayer {
            breaker: self.breaker,
            policy: Arc::new(Policy {
                classify,
                retry_after: self.policy.retry_after.clone(),
            }),
        }
    }

    /// Stays open as long as `retry_after` reads from the result that tripped the breaker
    /// (see [`RetryAfter`](crate::RetryAfter)), when it reads anything, clamped to the
    /// configuration's [`hinted_open_range`](crate::CircuitBreakerConfig::hinted_open_range).
    pub fn open_duration_from<H2>(self, retry_after: H2) -> CircuitBreakerLayer<C, H2>
    where
        C: Clone,
    {
        CircuitBreakerLayer {
            breaker: self.breaker,
            policy: Arc::new(Policy {
                classify: self.policy.classify.clone(),
                retry_after,
            }),
        }
    }

    /// Calls `hook` on every state change. Hooks are shared by every clone of the layer and
    /// every handle, whenever they were made.
    pub fn on_state_change(
        self,
        hook: impl Fn(StateChangedEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.breaker.observers().hooks.state_change.set(hook);
        self
    }

    /// Calls `hook` on every rejected call.
    pub fn on_rejected(self, hook: impl Fn(RejectedEvent<'_>) + Send + Sync + 'static) -> Self {
        self.breaker.observers().hooks.rejected.set(hook);
        self
    }

    /// Calls `hook` with the outcome of every call let through.
    pub fn on_outcome(self, hook: impl Fn(OutcomeEvent<'_>) + Send + Sync + 'static) -> Self {
        self.breaker.observers().hooks.outcome.set(hook);
        self
    }

    /// A handle on the layer's breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breaker.clone())
    }

    /// The layer and a handle on its breaker.
    pub fn pair(self) -> (Self, CircuitBreakerHandle) {
        let handle = self.handle();
        (self, handle)
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        self.breaker.observers().name()
    }
}

impl From<CircuitBreakerConfig> for CircuitBreakerLayer {
    fn from(config: CircuitBreakerConfig) -> Self {
        Self::new(config)
    }
}

impl<C, H> Clone for CircuitBreakerLayer<C, H> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<S, C, H> Layer<S> for CircuitBreakerLayer<C, H> {
    type Service = CircuitBreaker<S, C, H>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breaker.clone(), self.policy.clone())
    }
}

impl<C, H> fmt::Debug for CircuitBreakerLayer<C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("name", self.breaker.name())
            .field("state", &self.breaker.state())
            .finish_non_exhaustive()
    }
}
