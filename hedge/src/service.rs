use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use seawall_core::BoxError;
use tower::Service;

use crate::future::{Core, ResponseFuture};
use crate::policy::{DefaultPolicy, HedgePolicy};
use crate::state::Shared;

/// Sends a second attempt (up to `max_attempts`) when the first has not answered after the
/// hedge delay, within the hedge budget; made by [`HedgeLayer`](crate::HedgeLayer).
///
/// The first success answers the call; the other attempts are dropped. Each hedge takes a
/// clone of the inner service (hence `S: Clone`) and readies it before calling it, so
/// `poll_ready` only ever readies the service of the first attempt.
pub struct Hedge<S, P = DefaultPolicy> {
    inner: S,
    core: Arc<Core<S, P>>,
}

impl<S: Clone, P> Hedge<S, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<P>>) -> Self {
        let template = inner.clone();
        Self {
            inner,
            core: Arc::new(Core { shared, template }),
        }
    }
}

impl<S, P> Hedge<S, P> {
    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, P> Clone for Hedge<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            core: self.core.clone(),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Hedge<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = &self.core.shared.state;
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("name", &state.name)
            .field("max_attempts", &state.max_attempts())
            .finish_non_exhaustive()
    }
}

impl<S, Req, P> Service<Req> for Hedge<S, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: HedgePolicy<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.core.shared;
        let state = &shared.state;
        // Copied only when a hedge may follow: the first attempt takes the request itself.
        let hedge = state
            .admit()
            .and_then(|delay| Some((shared.policy.clone_request(&req)?, delay)));
        let core = (hedge.is_some() || state.records_latency()).then(|| self.core.clone());
        ResponseFuture::new(self.inner.call(req), core, hedge)
    }
}
