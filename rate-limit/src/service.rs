use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use seawall_core::{BoxError, Deadline};
use tower::Service;

use crate::future::ResponseFuture;
use crate::limiter::{Check, Limiter, sealed::Sealed};
use crate::state::Shared;

/// Admits calls at the rate of a quota, rejecting the rest with
/// [`Rejected`](seawall_core::Rejected) of kind `RateLimited` or making them wait up to a max.
///
/// Made by [`RateLimitLayer`](crate::RateLimitLayer). The inner service must be `Clone`: a
/// call that waits takes the ready service with it and leaves a clone behind.
pub struct RateLimit<S, L: Sealed> {
    inner: S,
    shared: Arc<Shared<L>>,
    /// This clone's copy of the limiter, which a reload swaps.
    cache: L::Cache,
}

impl<S, L: Sealed> RateLimit<S, L> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<L>>) -> Self {
        let cache = shared.limiter.cache();
        Self {
            inner,
            shared,
            cache,
        }
    }

    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, L: Sealed> Clone for RateLimit<S, L> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, L: Sealed + fmt::Debug> fmt::Debug for RateLimit<S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("name", &self.shared.config.name)
            .field("quota", &self.shared.config.quota)
            .field("limiter", &self.shared.limiter)
            .finish()
    }
}

impl<S, Req, L> Service<Req> for RateLimit<S, L>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    L: Limiter<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, L>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        let key = shared.limiter.key(&req);
        match shared.limiter.check_cached(&mut self.cache, &key) {
            Check::Permit => {
                shared.admitted();
                ResponseFuture::called(self.inner.call(req))
            }
            check => self.not_at_once(req, key, check),
        }
    }
}

impl<S, L: Sealed> RateLimit<S, L> {
    #[cold]
    #[inline(never)]
    fn not_at_once<Req>(
        &mut self,
        req: Req,
        key: L::Key,
        check: Check<L::Ask>,
    ) -> ResponseFuture<S, Req, L>
    where
        S: Service<Req> + Clone,
        L: Limiter<Req>,
    {
        // Never waiting past the caller's deadline: a permit that comes later is no use.
        let max_wait = self.shared.live.max_wait().map(Deadline::bound);
        match check {
            Check::Permit => unreachable!("admitted calls are called at once"),
            Check::Limited(wait) => match max_wait {
                Some(max_wait) if wait <= max_wait => {
                    tracing::trace!(name = %self.shared.config.name, ?wait, "waiting for a permit");
                    let ready = self.take_ready();
                    ResponseFuture::waiting(ready, req, key, wait, max_wait, self.shared.clone())
                }
                _ => ResponseFuture::rejected(self.shared.reject(wait)),
            },
            Check::Unavailable(retry_after) => {
                ResponseFuture::rejected(self.shared.unavailable(retry_after))
            }
            Check::Ask(ask) => {
                let ready = self.take_ready();
                let max_wait = max_wait.unwrap_or(Duration::ZERO);
                ResponseFuture::asking(ready, req, key, ask, max_wait, self.shared.clone())
            }
        }
    }

    /// The service `poll_ready` readied, for a call that goes on later; a clone takes its
    /// place.
    fn take_ready(&mut self) -> S
    where
        S: Clone,
    {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}
