use std::fmt;
use std::sync::Arc;

use tower::Layer;

use seawall_core::config::ConfigError;

use crate::config::{Quota, RateLimitConfig, RateLimitConfigBuilder};
use crate::event::{RejectedEvent, WaitedEvent};
use crate::extract::KeyExtractor;
use crate::fleet::config::FleetConfig;
use crate::fleet::{Fleet, FleetKeyed};
use crate::handle::RateLimitHandle;
use crate::limiter::{Direct, Keyed, sealed::Sealed};
use crate::service::RateLimit;
use crate::state::Shared;
use crate::store::QuotaStore;

/// Applies a [`RateLimit`] to every call of the inner service.
///
/// Its limiter and metric handles are made when it is built (metrics with the recorder in place
/// then); every service it makes, and every clone of it, shares them.
pub struct RateLimitLayer<L = Direct> {
    shared: Arc<Shared<L>>,
}

impl RateLimitLayer {
    /// A layer with one bucket for all calls, from a validated configuration.
    pub fn new(config: RateLimitConfig) -> Self {
        let limiter = Direct::new(&config);
        Self {
            shared: Arc::new(Shared::new(config, limiter)),
        }
    }

    /// A builder whose `build` makes the layer.
    pub fn builder() -> RateLimitConfigBuilder<Self> {
        RateLimitConfigBuilder::new()
    }

    /// One bucket per key that `extractor` reads off each request, instead of one for all.
    ///
    /// At most `max_keys` keys are tracked; see [`Keyed`] for what happens past that.
    pub fn keyed<E: KeyExtractor>(self, extractor: E) -> RateLimitLayer<Keyed<E>> {
        let limiter = Keyed::new(&self.shared.config, extractor);
        RateLimitLayer {
            shared: Arc::new(self.shared.with_limiter(Arc::new(limiter))),
        }
    }

    /// Keeps the bucket in `store`, which every replica of the fleet shares, as the
    /// configuration's `fleet` section says, so that the quota holds for the fleet; see
    /// [`Fleet`] for leases, what happens when the store is down, and the overshoot bound.
    ///
    /// A `ConfigError` for `fleet` when the configuration has none.
    pub fn with_store<S: QuotaStore>(
        self,
        store: S,
    ) -> Result<RateLimitLayer<Fleet<S>>, ConfigError> {
        let limiter = Fleet::new(&self.shared.config, self.fleet_config()?, store);
        Ok(RateLimitLayer {
            shared: Arc::new(self.shared.with_limiter(Arc::new(limiter))),
        })
    }

    /// Keeps the bucket in the Redis at the configuration's `fleet.redis_url`, as
    /// [`with_store`](Self::with_store) does with a [`RedisStore`](crate::store::RedisStore).
    /// Connects lazily: a Redis that is down when the layer is built is the failure policy's
    /// to handle, not an error.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn with_redis(
        self,
    ) -> Result<RateLimitLayer<Fleet<crate::store::RedisStore>>, ConfigError> {
        let store = crate::store::RedisStore::open(self.fleet_config()?)?;
        self.with_store(store)
    }

    fn fleet_config(&self) -> Result<&FleetConfig, ConfigError> {
        self.shared.config.fleet.as_ref().ok_or_else(|| {
            ConfigError::expected(
                "fleet",
                "nothing",
                "a fleet section such as { on_failure = \"local\", expected_replicas = 3 }",
            )
        })
    }
}

impl<S: QuotaStore> RateLimitLayer<Fleet<S>> {
    /// One bucket per key that `extractor` reads off each request, shared by the fleet: each
    /// key's bucket lives in the store under its [`StoreKey`](crate::store::StoreKey) bytes.
    pub fn keyed<E: KeyExtractor>(self, extractor: E) -> RateLimitLayer<FleetKeyed<E, S>> {
        let limiter = self
            .shared
            .limiter
            .keyed(extractor, self.shared.config.max_keys);
        RateLimitLayer {
            shared: Arc::new(self.shared.with_limiter(Arc::new(limiter))),
        }
    }

    /// The limit's bucket in the store, and its local lease.
    pub fn fleet(&self) -> &Fleet<S> {
        &self.shared.limiter
    }

    /// A handle that reads the limit's configuration and reloads its quota, for this replica
    /// (each replica reloads its own, as it reads its own configuration).
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle::new(self.shared.live.clone(), self.shared.limiter.clone())
    }

    /// The layer and a handle on it.
    pub fn pair(self) -> (Self, RateLimitHandle) {
        let handle = self.handle();
        (self, handle)
    }
}

impl<E: KeyExtractor, S: QuotaStore> RateLimitLayer<FleetKeyed<E, S>> {
    /// A handle that reads the limit's configuration and reloads the quota of every key, for
    /// this replica.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle::new(self.shared.live.clone(), self.shared.limiter.clone())
    }

    /// The layer and a handle on it.
    pub fn pair(self) -> (Self, RateLimitHandle) {
        let handle = self.handle();
        (self, handle)
    }
}

impl<L> RateLimitLayer<L> {
    /// Calls `hook` each time a call is rejected.
    pub fn on_rejected(self, hook: impl Fn(RejectedEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.on_rejected.set(hook);
        self
    }

    /// Calls `hook` each time a call is admitted after waiting for a permit.
    pub fn on_waited(self, hook: impl Fn(WaitedEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.on_waited.set(hook);
        self
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The layer's configuration, as it was built (a [`RateLimitHandle`] reads the one in
    /// force after a reload).
    pub fn config(&self) -> &RateLimitConfig {
        &self.shared.config
    }

    /// The quota the layer was built with.
    pub fn quota(&self) -> Quota {
        self.shared.config.quota
    }
}

impl RateLimitLayer<Direct> {
    /// A handle that reads the limit's configuration and reloads its quota.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle::new(self.shared.live.clone(), self.shared.limiter.clone())
    }

    /// The layer and a handle on it.
    pub fn pair(self) -> (Self, RateLimitHandle) {
        let handle = self.handle();
        (self, handle)
    }
}

impl<E: KeyExtractor> RateLimitLayer<Keyed<E>> {
    /// A handle that reads the limit's configuration and reloads the quota of every key.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle::new(self.shared.live.clone(), self.shared.limiter.clone())
    }

    /// The layer and a handle on it.
    pub fn pair(self) -> (Self, RateLimitHandle) {
        let handle = self.handle();
        (self, handle)
    }

    /// How many keys are tracked now.
    pub fn tracked_keys(&self) -> usize {
        self.shared.limiter.len()
    }

    /// Forgets every idle key now, as the sweep that runs when new keys arrive does.
    pub fn sweep(&self) {
        self.shared.limiter.sweep();
    }
}

impl From<RateLimitConfig> for RateLimitLayer {
    fn from(config: RateLimitConfig) -> Self {
        Self::new(config)
    }
}

impl<L> Clone for RateLimitLayer<L> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S, L: Sealed> Layer<S> for RateLimitLayer<L> {
    type Service = RateLimit<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.shared.clone())
    }
}

impl<L: fmt::Debug> fmt::Debug for RateLimitLayer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("name", &self.shared.config.name)
            .field("quota", &self.shared.config.quota)
            .field("max_wait", &self.shared.config.max_wait)
            .field("limiter", &self.shared.limiter)
            .finish()
    }
}
