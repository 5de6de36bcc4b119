use std::fmt;
use std::sync::Arc;

use seawall_core::classify::AnyError;
use tower::Layer;

use crate::config::{BulkheadConfig, BulkheadConfigBuilder};
use crate::event::{LimitChangedEvent, RejectedEvent};
use crate::handle::BulkheadHandle;
use crate::partition::{PartitionByKey, PartitionFn, Unpartitioned};
use crate::service::Bulkhead;
use crate::state::{Hooks, Shared, State};

/// Applies a [`Bulkhead`] to every call of the inner service.
///
/// The semaphore, the adaptive limit and the metric handles are created when the layer is
/// built (with the metrics recorder in place then) and shared by every service the layer
/// makes, and by every [`BulkheadHandle`].
pub struct BulkheadLayer<C = AnyError, K = Unpartitioned> {
    shared: Arc<Shared<C>>,
    key: K,
}

impl BulkheadLayer {
    /// A layer from a validated configuration.
    pub fn new(config: BulkheadConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Arc::new(State::new(&config)),
                hooks: Hooks::default(),
                classify: Arc::new(AnyError),
            }),
            key: Unpartitioned,
        }
    }

    /// A builder whose `build` makes the layer.
    pub fn builder() -> BulkheadConfigBuilder<Self> {
        BulkheadConfigBuilder::new()
    }
}

impl<C, K> BulkheadLayer<C, K> {
    /// A handle to read the figures of this bulkhead and change its limit.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle::new(self.shared.state.clone())
    }

    /// The layer and a handle to it.
    pub fn pair(self) -> (Self, BulkheadHandle) {
        let handle = self.handle();
        (self, handle)
    }

    /// Judges results with `classify` (default: any error is a failure). An adaptive limit
    /// counts a failure, and any [`Rejected`](seawall_core::Rejected) from further in, as a
    /// drop; ignored results teach it nothing. A classifier that waits for the end of the
    /// response body (`GrpcCodes`) also holds the slot until then.
    pub fn classify<C2>(self, classify: C2) -> BulkheadLayer<C2, K> {
        BulkheadLayer {
            shared: Arc::new(Shared {
                state: self.shared.state.clone(),
                hooks: self.shared.hooks.clone(),
                classify: Arc::new(classify),
            }),
            key: self.key,
        }
    }

    /// Puts each call in the partition whose index (in configuration order) `key` returns;
    /// an index past the last partition counts as the last one.
    ///
    /// ```
    /// use http::Request;
    /// use seawall_bulkhead::BulkheadLayer;
    ///
    /// # fn main() -> Result<(), seawall_core::config::ConfigError> {
    /// let layer = BulkheadLayer::builder()
    ///     .max_concurrent(100)
    ///     .partition("live", 0.9)
    ///     .partition("batch", 0.1)
    ///     .build()?
    ///     .partition_by(|req: &Request<()>| usize::from(req.headers().contains_key("x-batch")));
    /// # Ok(())
    /// # }
    /// ```
    pub fn partition_by<F>(self, key: F) -> BulkheadLayer<C, PartitionFn<F>> {
        BulkheadLayer {
            shared: self.shared,
            key: PartitionFn::new(key),
        }
    }

    /// Spreads calls over the partitions by the key `extract` reads (core's one key trait:
    /// `ClientIp`, `Header`, `Route`, `ByAuthority` or [`key_fn`](seawall_core::key::key_fn)),
    /// by a hash of the key, so a key always lands in the same partition and no memory is kept
    /// per key. One noisy key then takes at most its partition's share (with borrowing, more
    /// only while the others leave slots idle), shared with the keys hashed beside it: with
    /// `n` equal partitions, one key's neighbours are about a `1/n` of the others.
    ///
    /// ```
    /// use http::Request;
    /// use seawall_bulkhead::BulkheadLayer;
    /// use seawall_core::key::key_fn;
    ///
    /// # fn main() -> Result<(), seawall_core::config::ConfigError> {
    /// let mut builder = BulkheadLayer::builder().max_concurrent(100).borrowing(false);
    /// for tenant in ["a", "b", "c", "d"] {
    ///     builder = builder.partition(tenant, 0.25);
    /// }
    /// let layer = builder.build()?.partition_by_key(key_fn(|req: &Request<()>| {
    ///     let tenant = req.headers().get("x-tenant-id")?.to_str().ok()?;
    ///     tenant.parse::<u64>().ok()
    /// }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn partition_by_key<X>(self, extract: X) -> BulkheadLayer<C, PartitionByKey<X>> {
        let partitions = self.shared.state.semaphore.partitions();
        BulkheadLayer {
            shared: self.shared,
            key: PartitionByKey::new(extract, partitions),
        }
    }

    /// Calls `hook` each time a call is rejected.
    pub fn on_rejected(self, hook: impl Fn(RejectedEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.hooks.on_rejected.set(hook);
        self
    }

    /// Calls `hook` each time the limit moves: by the adaptive algorithm or by a
    /// [`BulkheadHandle::set_limit`]. The hook is the bulkhead's, shared by every clone of the
    /// layer and every handle, whenever they were made; setting it again replaces it.
    pub fn on_limit_change(
        self,
        hook: impl Fn(LimitChangedEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.shared.state.on_limit_change.set(hook);
        self
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.shared.state.name
    }
}

#[cfg(feature = "http")]
impl<C, K> BulkheadLayer<C, K> {
    /// Holds each call's slot until its HTTP response body ends (or is dropped), not just
    /// until the response head arrives: a streaming download then counts as in flight for as
    /// long as it streams. The layer then takes services answering `http::Response`s.
    ///
    /// A body ends when it is polled to its end or when `is_end_stream()` turns true after a
    /// frame (hyper then stops polling and drops it); the call's outcome is reported then, so an
    /// adaptive limit learns from it. A body dropped before its end counts for nothing. A body
    /// whose client stops reading gives its slot back after
    /// [`max_reader_idle`](crate::BulkheadConfigBuilder::max_reader_idle).
    ///
    /// It wraps the classifier set so far, so call it after [`classify`](Self::classify).
    pub fn release_on_body_end(self) -> BulkheadLayer<crate::body::BodyEnd<C>, K> {
        let classify = crate::body::BodyEnd::new(self.shared.classify.clone());
        BulkheadLayer {
            shared: Arc::new(Shared {
                state: self.shared.state.clone(),
                hooks: self.shared.hooks.clone(),
                classify: Arc::new(classify),
            }),
            key: self.key,
        }
    }
}

impl From<BulkheadConfig> for BulkheadLayer {
    fn from(config: BulkheadConfig) -> Self {
        Self::new(config)
    }
}

impl<C, K: Clone> Clone for BulkheadLayer<C, K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            key: self.key.clone(),
        }
    }
}

impl<S, C, K: Clone> Layer<S> for BulkheadLayer<C, K> {
    type Service = Bulkhead<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, self.shared.clone(), self.key.clone())
    }
}

impl<C, K: fmt::Debug> fmt::Debug for BulkheadLayer<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("name", &self.shared.state.name)
            .field("limit", &self.shared.state.semaphore.limit())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
