use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use seawall_core::classify::AnyError;
use tower::Layer;

use crate::config::{OutlierConfig, OutlierConfigBuilder};
use crate::discover::OutlierDiscover;
use crate::event::{EjectedEvent, ReturnedEvent, SkippedEvent};
use crate::future::Binding;
use crate::handle::OutlierHandle;
use crate::probe::{NoProbe, ProbeFn};
use crate::service::Endpoint;
use crate::state::SetState;

/// One endpoint set: `layer` wraps a `Discover` (such as `tower::discover::ServiceList`) so
/// that each of its services is an [`Endpoint`] of the set; [`endpoint`](Self::endpoint)
/// wraps one service by hand.
///
/// The set, its metric handles and hooks are created when the layer is built and shared by
/// every clone, every endpoint and every [`OutlierHandle`]. `K` is the endpoints' key, `C`
/// classifies results ([`AnyError`] by default), `P` makes the probe an ejected endpoint
/// answers before it returns ([`NoProbe`] by default).
pub struct OutlierLayer<K, C = AnyError, P = NoProbe> {
    set: Arc<SetState<K>>,
    classify: Arc<C>,
    probe: P,
}

impl<K> OutlierLayer<K> {
    /// A layer from a validated configuration.
    pub fn new(config: OutlierConfig) -> Self {
        Self {
            set: Arc::new(SetState::new(&config)),
            classify: Arc::new(AnyError),
            probe: NoProbe,
        }
    }

    /// A builder whose `build` makes the layer.
    pub fn builder() -> OutlierConfigBuilder<Self> {
        OutlierConfigBuilder::new()
    }
}

impl<K, C, P> OutlierLayer<K, C, P> {
    /// Judges results with `classify` (such as `HttpStatus` or `GrpcCodes` from
    /// `seawall_core::classify`), keeping the same set. A `Rejected` from further in that is
    /// not the endpoint's failure (a full bulkhead, an open breaker) counts for nothing.
    pub fn classify<C2>(self, classify: C2) -> OutlierLayer<K, C2, P> {
        OutlierLayer {
            set: self.set,
            classify: Arc::new(classify),
            probe: self.probe,
        }
    }

    /// Lets an ejected endpoint back in only once it answers the request `probe` makes with a
    /// success (as the classifier judges the response head); a failed probe ejects it again,
    /// for longer. Call it before making endpoints.
    pub fn probe<F>(self, probe: F) -> OutlierLayer<K, C, ProbeFn<F>> {
        self.set.probes.store(true, Ordering::Release);
        OutlierLayer {
            set: self.set,
            classify: self.classify,
            probe: ProbeFn::new(probe),
        }
    }

    /// Calls `hook` each time an endpoint is ejected.
    pub fn on_ejected(self, hook: impl Fn(EjectedEvent<'_, K>) + Send + Sync + 'static) -> Self
    where
        K: 'static,
    {
        self.set.hooks.on_ejected.set(hook);
        self
    }

    /// Calls `hook` each time an ejected endpoint comes back in.
    pub fn on_returned(self, hook: impl Fn(ReturnedEvent<'_, K>) + Send + Sync + 'static) -> Self
    where
        K: 'static,
    {
        self.set.hooks.on_returned.set(hook);
        self
    }

    /// Calls `hook` each time a detector would eject an endpoint but the share cap refuses.
    pub fn on_skipped(self, hook: impl Fn(SkippedEvent<'_, K>) + Send + Sync + 'static) -> Self
    where
        K: 'static,
    {
        self.set.hooks.on_skipped.set(hook);
        self
    }

    /// A handle on the set.
    pub fn handle(&self) -> OutlierHandle<K> {
        OutlierHandle::new(self.set.clone())
    }

    /// The layer and a handle on its set.
    pub fn pair(self) -> (Self, OutlierHandle<K>) {
        let handle = self.handle();
        (self, handle)
    }

    /// The set's name.
    pub fn name(&self) -> &str {
        &self.set.name
    }
}

impl<K: fmt::Debug + 'static, C, P: Clone> OutlierLayer<K, C, P> {
    /// `svc` as the endpoint `key` of the set, for a hand-made list of endpoints (a
    /// `ServiceList` of them, say). The endpoint leaves the set when its last clone is dropped.
    pub fn endpoint<S>(&self, key: K, svc: S) -> Endpoint<S, K, C, P> {
        let binding = Arc::new(Binding {
            member: self.set.register(key),
            classify: self.classify.clone(),
            probe: self.probe.clone(),
        });
        Endpoint::new(svc, binding)
    }
}

impl<K> From<OutlierConfig> for OutlierLayer<K> {
    fn from(config: OutlierConfig) -> Self {
        Self::new(config)
    }
}

impl<K, C, P: Clone> Clone for OutlierLayer<K, C, P> {
    fn clone(&self) -> Self {
        Self {
            set: self.set.clone(),
            classify: self.classify.clone(),
            probe: self.probe.clone(),
        }
    }
}

impl<D, K, C, P: Clone> Layer<D> for OutlierLayer<K, C, P> {
    type Service = OutlierDiscover<D, K, C, P>;

    fn layer(&self, discover: D) -> Self::Service {
        OutlierDiscover::new(
            discover,
            self.set.clone(),
            self.classify.clone(),
            self.probe.clone(),
        )
    }
}

impl<K, C, P> fmt::Debug for OutlierLayer<K, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierLayer")
            .field("set", &self.set)
            .finish_non_exhaustive()
    }
}
