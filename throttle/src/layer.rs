use std::fmt;
use std::sync::Arc;

use seawall_core::classify::AnyError;
use tower::Layer;

use crate::config::{ThrottleConfig, ThrottleConfigBuilder};
use crate::event::{RejectedEvent, ThrottlingChangedEvent};
use crate::handle::ThrottleHandle;
use crate::service::Throttle;
use crate::state::{Shared, State};

/// Puts one client-side throttle in front of every service it wraps.
///
/// The window, the random draws and the metric handles (registered with the recorder in place
/// when the layer is built) are made once, in [`new`](Self::new); every clone of the layer,
/// every service it makes and every handle share them, so a router that calls `layer` per
/// connection still has one throttle.
///
/// `C` classifies results ([`AnyError`] by default: any error is a failure, which counts as an
/// accept unless [`accept_failures`](crate::ThrottleConfigBuilder::accept_failures) is off).
/// Give it `HttpStatus` or `GrpcCodes` so that the downstream's overload refusals count.
pub struct ThrottleLayer<C = AnyError> {
    shared: Arc<Shared<C>>,
}

impl ThrottleLayer {
    /// A layer from a validated configuration.
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Arc::new(State::new(&config)),
                classify: AnyError,
            }),
        }
    }

    /// A builder whose `build` makes the layer.
    pub fn builder() -> ThrottleConfigBuilder<Self> {
        ThrottleConfigBuilder::new()
    }
}

impl<C> ThrottleLayer<C> {
    /// Classifies results with `classify` (such as `HttpStatus` or `GrpcCodes` from
    /// `seawall_core::classify`), keeping the same throttle.
    pub fn classify<C2>(self, classify: C2) -> ThrottleLayer<C2> {
        ThrottleLayer {
            shared: Arc::new(Shared {
                state: self.shared.state.clone(),
                classify,
            }),
        }
    }

    /// Calls `hook` on every call the throttle rejects. The hook is the throttle's, shared by
    /// every clone of the layer whenever it is set.
    pub fn on_rejected(self, hook: impl Fn(RejectedEvent<'_>) + Send + Sync + 'static) -> Self {
        self.shared.state.hooks.on_rejected.set(hook);
        self
    }

    /// Calls `hook` when the throttle starts rejecting calls and when it stops.
    pub fn on_throttling(
        self,
        hook: impl Fn(ThrottlingChangedEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.shared.state.hooks.on_throttling.set(hook);
        self
    }

    /// A handle on the layer's throttle.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle::new(self.shared.state.clone())
    }

    /// The layer and a handle on its throttle.
    pub fn pair(self) -> (Self, ThrottleHandle) {
        let handle = self.handle();
        (self, handle)
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.shared.state.name
    }
}

impl From<ThrottleConfig> for ThrottleLayer {
    fn from(config: ThrottleConfig) -> Self {
        Self::new(config)
    }
}

impl<C> Clone for ThrottleLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S, C> Layer<S> for ThrottleLayer<C> {
    type Service = Throttle<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle::new(inner, self.shared.clone())
    }
}

impl<C> fmt::Debug for ThrottleLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleLayer")
            .field("name", &self.shared.state.name)
            .finish_non_exhaustive()
    }
}
