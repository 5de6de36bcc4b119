use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use seawall_core::classify::Classify;
use tower::Service;

use crate::future::{CallReport, ResponseFuture};
use crate::window::Shared;

/// Counts each call's outcome into its component's window.
///
/// Made by [`HealthLayer`](crate::HealthLayer).
pub struct HealthService<S, C> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S, C> HealthService<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self { inner, shared }
    }

    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, C> Clone for HealthService<S, C> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, C> fmt::Debug for HealthService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C> Service<Req> for HealthService<S, C>
where
    S: Service<Req>,
    S::Error: 'static,
    C: Classify<S::Response, S::Error>,
{
    type Response = C::Response<CallReport>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), self.shared.clone())
    }
}
