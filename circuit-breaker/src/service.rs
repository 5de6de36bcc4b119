use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use seawall_core::BoxError;
use seawall_core::classify::Classify;
use tower::Service;

use crate::breaker::Breaker;
use crate::future::{CallReport, Policy, ResponseFuture};
use crate::retry_after::RetryAfter;

/// Rejects calls while its breaker is open, and feeds the breaker the outcome of the calls it
/// lets through.
///
/// Made by [`CircuitBreakerLayer`](crate::CircuitBreakerLayer); every service a layer makes
/// shares the layer's one breaker.
pub struct CircuitBreaker<S, C, H> {
    inner: S,
    breaker: Arc<Breaker>,
    policy: Arc<Policy<C, H>>,
}

impl<S, C, H> CircuitBreaker<S, C, H> {
    pub(crate) fn new(inner: S, breaker: Arc<Breaker>, policy: Arc<Policy<C, H>>) -> Self {
        Self {
            inner,
            breaker,
            policy,
        }
    }

    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, C, H> Clone for CircuitBreaker<S, C, H> {
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.breaker.clone(),
            self.policy.clone(),
        )
    }
}

impl<S: fmt::Debug, C, H> fmt::Debug for CircuitBreaker<S, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("name", self.breaker.name())
            .field("state", &self.breaker.state())
            .finish()
    }
}

impl<S, Req, C, H> Service<Req> for CircuitBreaker<S, C, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    H: RetryAfter<S::Response, BoxError>,
{
    type Response = C::Response<CallReport>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Never inline: inlined into the caller's (tower's `Either::call` in the client stack),
    // the response future was moved once more, 29 instructions of `memcpy` a call
    // (`benches/callgrind.sh stack`).
    #[inline(never)]
    fn call(&mut self, req: Req) -> Self::Future {
        call(&mut self.inner, req, self.breaker.clone(), &self.policy)
    }
}

/// Admits `req` through `breaker` and calls `inner`, or answers with the rejection.
#[inline]
pub(crate) fn call<S, Req, C, H>(
    inner: &mut S,
    req: Req,
    breaker: Arc<Breaker>,
    policy: &Arc<Policy<C, H>>,
) -> ResponseFuture<S::Future, C, H>
where
    S: Service<Req>,
{
    match breaker.admit() {
        Ok(permit) => {
            let report = CallReport::new(breaker, permit);
            ResponseFuture::called(inner.call(req), report, policy.clone())
        }
        Err(rejection) => ResponseFuture::rejected(rejection),
    }
}
