use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use seawall_core::BoxError;
use seawall_core::classify::{AnyError, Classify};
use seawall_core::inplace::{self, EarlyClone};
use tower::Service;

use crate::future::{CallReport, ResponseFuture};
use crate::state::Shared;

/// Rejects calls locally with the throttle's rejection probability, and counts the outcome
/// of the calls it lets through; made by [`ThrottleLayer`](crate::ThrottleLayer).
///
/// Every service a layer makes shares the layer's one throttle. `poll_ready` is the inner
/// service's: a throttled call is rejected in `call`, with a future that is ready at once.
pub struct Throttle<S, C = AnyError> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S, C> Throttle<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self { inner, shared }
    }

    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, C> Clone for Throttle<S, C> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Throttle<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("name", &self.shared.state.name)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C> Service<Req> for Throttle<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    type Response = C::Response<CallReport>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        inplace::build::<S::Future, _>(move || match self.shared.state.admit() {
            Ok(()) => {
                // Built where the caller keeps it: see `seawall_core::inplace`.
                let shared = EarlyClone::new::<S::Future>(&self.shared);
                let inner = inplace::call(|| self.inner.call(req));
                ResponseFuture::called(inner, shared.get(&self.shared))
            }
            Err(rejection) => ResponseFuture::rejected(rejection),
        })
    }
}
