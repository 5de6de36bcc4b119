use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use seawall_core::BoxError;
use tower::Service;

use crate::future::ResponseFuture;
use crate::source::Source;
use crate::state::Shared;
use crate::trigger::Trigger;

/// Answers failed or rejected calls of the inner service from a fallback source.
///
/// Made by [`FallbackLayer`](crate::FallbackLayer).
pub struct Fallback<S, Src, W> {
    inner: S,
    shared: Arc<Shared<Src, W>>,
}

impl<S, Src, W> Fallback<S, Src, W> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<Src, W>>) -> Self {
        Self { inner, shared }
    }

    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, Src, W> Clone for Fallback<S, Src, W> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, Src, W> fmt::Debug for Fallback<S, Src, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, Req, Src, W> Service<Req> for Fallback<S, Src, W>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Src: Source<Req, S::Response>,
    W: Trigger<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Src::Kept, Src::Future, Src, W, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.shared.calls.increment(1);
        let kept = self.shared.source.keep(&req);
        ResponseFuture::new(self.inner.call(req), kept, self.shared.clone())
    }
}
