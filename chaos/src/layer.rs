use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use seawall_core::key::KeyExtractor;
use seawall_core::metrics::MetricScope;
use tokio::time::Instant;
use tower::Layer;

use crate::config::{ChaosConfig, ChaosConfigBuilder};
use crate::event::InjectedEvent;
use crate::service::Chaos;
use crate::state::Shared;
use crate::target::{Everything, NoResponse, RespondFn, TargetFn, TargetKeys};

/// Applies [`Chaos`] to every call of the inner service.
///
/// Its state (schedule, random numbers, capacity model, metric handles) is created when it is
/// built and shared by every service it makes.
pub struct ChaosLayer<T = Everything, R = NoResponse> {
    shared: Arc<Shared>,
    target: T,
    respond: R,
}

impl ChaosLayer {
    /// A layer from a validated configuration; its schedule starts now.
    pub fn new(config: ChaosConfig) -> Self {
        let metrics = MetricScope::new(config.name.clone());
        Self {
            shared: Arc::new(Shared::new(config, &metrics, Instant::now())),
            target: Everything,
            respond: NoResponse,
        }
    }

    /// A builder whose `build` makes the layer.
    pub fn builder() -> ChaosConfigBuilder<Self> {
        ChaosConfigBuilder::new()
    }
}

impl<T, R> ChaosLayer<T, R> {
    /// Injects faults only into the calls for which `predicate` returns `true`.
    pub fn target<F>(self, predicate: F) -> ChaosLayer<TargetFn<F>, R> {
        ChaosLayer {
            shared: self.shared,
            target: TargetFn(Arc::new(predicate)),
            respond: self.respond,
        }
    }

    /// Injects faults only into the calls whose key, as `extract` reads it (core's one key
    /// trait: `Route`, `Header`, `ClientIp`, `ByAuthority` or
    /// [`key_fn`](seawall_core::key::key_fn)), is one of `keys`: one route, one tenant, one
    /// host fails while the rest work. The keys are the ones given, so memory stays bounded
    /// whatever the traffic.
    ///
    /// ```
    /// use seawall_chaos::{ChaosLayer, Faults};
    /// use seawall_core::key::key_fn;
    ///
    /// # fn main() -> Result<(), seawall_core::config::ConfigError> {
    /// // Only tenant 7's calls fail.
    /// let layer = ChaosLayer::builder()
    ///     .faults(Faults::errors(1.0))
    ///     .build()?
    ///     .target_keys(key_fn(|req: &(u32, String)| req.0), [7]);
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    pub fn target_keys<X: KeyExtractor>(
        self,
        extract: X,
        keys: impl IntoIterator<Item = X::Key>,
    ) -> ChaosLayer<TargetKeys<X>, R> {
        ChaosLayer {
            shared: self.shared,
            target: TargetKeys::new(extract, keys),
            respond: self.respond,
        }
    }

    /// Injects faults only into the calls `target` picks, for a [`Target`] of your own.
    ///
    /// [`Target`]: crate::Target
    pub fn targeting<T2>(self, target: T2) -> ChaosLayer<T2, R> {
        ChaosLayer {
            shared: self.shared,
            target,
            respond: self.respond,
        }
    }

    /// Answers calls hit by a `response` fault with `respond(&request)`.
    pub fn respond_with<F>(self, respond: F) -> ChaosLayer<T, RespondFn<F>> {
        ChaosLayer {
            shared: self.shared,
            target: self.target,
            respond: RespondFn(Arc::new(respond)),
        }
    }

    /// Counts the schedule's phases from `epoch` instead of from when the layer was built.
    pub fn starting_at(mut self, epoch: Instant) -> Self {
        Arc::make_mut(&mut self.shared).restart_at(epoch);
        self
    }

    /// Calls `hook` each time a fault is injected.
    pub fn on_injected(self, hook: impl Fn(InjectedEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.on_injected.set(hook);
        self
    }

    /// A handle that turns injection on and off and reads the capacity model's queue.
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle {
            shared: self.shared.clone(),
        }
    }

    /// The layer and a handle on it.
    pub fn pair(self) -> (Self, ChaosHandle) {
        let handle = self.handle();
        (self, handle)
    }

    /// The configuration the layer was built from.
    pub fn config(&self) -> &ChaosConfig {
        &self.shared.config
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl From<ChaosConfig> for ChaosLayer {
    fn from(config: ChaosConfig) -> Self {
        Self::new(config)
    }
}

impl<S, T: Clone, R: Clone> Layer<S> for ChaosLayer<T, R> {
    type Service = Chaos<S, T, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::new(
            inner,
            self.shared.clone(),
            self.target.clone(),
            self.respond.clone(),
        )
    }
}

impl<T: Clone, R: Clone> Clone for ChaosLayer<T, R> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            target: self.target.clone(),
            respond: self.respond.clone(),
        }
    }
}

impl<T, R> fmt::Debug for ChaosLayer<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Turns a chaos layer's injection on and off while it runs.
#[derive(Clone)]
pub struct ChaosHandle {
    shared: Arc<Shared>,
}

impl ChaosHandle {
    /// Starts injecting faults.
    pub fn enable(&self) {
        self.shared.enabled.store(true, Ordering::Relaxed);
        tracing::info!(name = %self.shared.name, "chaos enabled");
    }

    /// Stops injecting faults: every call passes untouched.
    pub fn disable(&self) {
        self.shared.enabled.store(false, Ordering::Relaxed);
        tracing::info!(name = %self.shared.name, "chaos disabled");
    }

    /// Whether faults are being injected.
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::Relaxed)
    }

    /// The number of calls waiting for a worker in the capacity model, now.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }
}

impl fmt::Debug for ChaosHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosHandle")
            .field("name", &self.shared.name)
            .field("enabled", &self.is_enabled())
            .finish()
    }
}
