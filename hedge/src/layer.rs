use std::fmt;
use std::sync::Arc;

use tower::Layer;

use crate::config::{HedgeConfig, HedgeConfigBuilder};
use crate::event::{BudgetExhaustedEvent, HedgeEvent, HedgeWonEvent, Hooks};
use crate::handle::HedgeHandle;
use crate::policy::DefaultPolicy;
use crate::service::Hedge;
use crate::state::{Shared, State};

/// Applies a [`Hedge`] to every call of the inner service.
///
/// The budget, the latency estimate and the metric handles are created when the layer is
/// built (with the metrics recorder in place then) and shared by every service the layer
/// makes, and by every [`HedgeHandle`]; a router that calls `layer` per connection still has
/// one budget.
///
/// `P` decides which requests may be hedged ([`DefaultPolicy`]: a `Clone` request whose type
/// is [`Idempotent`](crate::Idempotent), an `http::Request` only with an idempotent method).
pub struct HedgeLayer<P = DefaultPolicy> {
    shared: Arc<Shared<P>>,
}

impl HedgeLayer {
    /// A layer from a validated configuration.
    pub fn new(config: HedgeConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Arc::new(State::new(&config)),
                hooks: Hooks::default(),
                policy: Arc::new(DefaultPolicy),
            }),
        }
    }

    /// A builder whose `build` makes the layer.
    pub fn builder() -> HedgeConfigBuilder<Self> {
        HedgeConfigBuilder::new()
    }
}

impl<P> HedgeLayer<P> {
    /// Decides with `policy` which requests may be hedged, keeping the same budget and
    /// estimate: `HttpPolicy` (feature `http`) for HTTP requests.
    pub fn policy<P2>(self, policy: P2) -> HedgeLayer<P2> {
        HedgeLayer {
            shared: Arc::new(Shared {
                state: self.shared.state.clone(),
                hooks: self.shared.hooks.clone(),
                policy: Arc::new(policy),
            }),
        }
    }

    /// Calls `hook` each time a hedge is sent.
    pub fn on_hedge(self, hook: impl Fn(HedgeEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.hooks.on_hedge.set(hook);
        self
    }

    /// Calls `hook` each time a hedge answers a call before the first attempt.
    pub fn on_hedge_won(self, hook: impl Fn(HedgeWonEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.hooks.on_hedge_won.set(hook);
        self
    }

    /// Calls `hook` each time a hedge is due but the budget is spent.
    pub fn on_budget_exhausted(
        self,
        hook: impl Fn(BudgetExhaustedEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.shared.hooks.on_budget_exhausted.set(hook);
        self
    }

    /// A handle on the layer's delay, latency and budget.
    pub fn handle(&self) -> HedgeHandle {
        HedgeHandle::new(self.shared.state.clone())
    }

    /// The layer and a handle on it.
    pub fn pair(self) -> (Self, HedgeHandle) {
        let handle = self.handle();
        (self, handle)
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.shared.state.name
    }
}

impl From<HedgeConfig> for HedgeLayer {
    fn from(config: HedgeConfig) -> Self {
        Self::new(config)
    }
}

impl<P> Clone for HedgeLayer<P> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Clone, P> Layer<S> for HedgeLayer<P> {
    type Service = Hedge<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::new(inner, self.shared.clone())
    }
}

impl<P> fmt::Debug for HedgeLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("name", &self.shared.state.name)
            .field("max_attempts", &self.shared.state.max_attempts())
            .finish_non_exhaustive()
    }
}
