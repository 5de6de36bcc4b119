use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::Counter;
use seawall_core::metrics::MetricScope;
use seawall_core::{BoxError, Deadline, Hook, Rejected, RejectionKind};
use tower::Service;

use crate::config::RateLimitConfig;
use crate::future::ResponseFuture;
use crate::layer::{RejectedEvent, WaitedEvent};
use crate::limiter::{Check, Limiter};

/// What every clone of one layer's services shares.
pub(crate) struct Shared<L> {
    pub(crate) config: RateLimitConfig,
    pub(crate) limiter: Arc<L>,
    pub(crate) permitted: Counter,
    pub(crate) waited: Counter,
    pub(crate) rejected: Counter,
    pub(crate) unavailable: Counter,
    pub(crate) on_rejected: Hook<RejectedEvent<'static>>,
    pub(crate) on_waited: Hook<WaitedEvent<'static>>,
}

impl<L> Shared<L> {
    pub(crate) fn new(config: RateLimitConfig, limiter: L) -> Self {
        const CALLS: &str = "seawall_rate_limit_calls_total";
        let metrics = MetricScope::new(config.name.clone());
        Self {
            permitted: metrics.counter(CALLS, &[("result", "permitted")]),
            waited: metrics.counter(CALLS, &[("result", "waited")]),
            rejected: metrics.counter(CALLS, &[("result", "rejected")]),
            unavailable: metrics.counter(CALLS, &[("result", "unavailable")]),
            config,
            limiter: Arc::new(limiter),
            on_rejected: Hook::default(),
            on_waited: Hook::default(),
        }
    }

    /// The same metric handles and hooks over another limiter.
    pub(crate) fn with_limiter<M>(&self, limiter: Arc<M>) -> Shared<M> {
        Shared {
            config: self.config.clone(),
            limiter,
            permitted: self.permitted.clone(),
            waited: self.waited.clone(),
            rejected: self.rejected.clone(),
            unavailable: self.unavailable.clone(),
            on_rejected: self.on_rejected.clone(),
            on_waited: self.on_waited.clone(),
        }
    }

    /// Records a rejection and builds its error.
    #[cold]
    #[inline(never)]
    pub(crate) fn reject(&self, retry_after: Duration) -> BoxError {
        let name = &self.config.name;
        self.rejected.increment(1);
        tracing::debug!(rejected_by = %name, rejection = "rate_limited", ?retry_after, "call rejected");
        self.on_rejected.call(RejectedEvent { name, retry_after });
        Rejected::new(RejectionKind::RateLimited, name.clone())
            .with_retry_after(retry_after)
            .into()
    }

    /// Records a call refused because the shared store could not answer and the limit fails
    /// closed, and builds its error.
    #[cold]
    #[inline(never)]
    pub(crate) fn unavailable(&self, retry_after: Duration) -> BoxError {
        let name = &self.config.name;
        self.unavailable.increment(1);
        tracing::debug!(%name, ?retry_after, "quota store unavailable, call refused");
        Rejected::new(RejectionKind::StoreUnavailable, name.clone())
            .with_retry_after(retry_after)
            .into()
    }

    /// Records a call admitted at once.
    #[inline]
    pub(crate) fn admitted(&self) {
        self.permitted.increment(1);
        tracing::trace!(name = %self.config.name, "permitted");
    }

    /// Records a call admitted after waiting `waited`.
    #[cold]
    #[inline(never)]
    pub(crate) fn admitted_after(&self, waited: Duration) {
        let name = &self.config.name;
        self.waited.increment(1);
        tracing::trace!(%name, ?waited, "permitted after waiting");
        self.on_waited.call(WaitedEvent { name, waited });
    }
}

impl<L> Clone for Shared<L> {
    fn clone(&self) -> Self {
        self.with_limiter(self.limiter.clone())
    }
}

/// Admits calls at the rate of a quota, rejecting the rest with
/// [`Rejected`](seawall_core::Rejected) of kind `RateLimited` or making them wait up to a max.
///
/// Made by [`RateLimitLayer`](crate::RateLimitLayer). The inner service must be `Clone`: a
/// call that waits takes the ready service with it and leaves a clone behind.
pub struct RateLimit<S, L> {
    inner: S,
    shared: Arc<Shared<L>>,
}

impl<S, L> RateLimit<S, L> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<L>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, L> Clone for RateLimit<S, L> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, L: fmt::Debug> fmt::Debug for RateLimit<S, L> {
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
        match shared.limiter.check(&key) {
            Check::Permit => {
                shared.admitted();
                ResponseFuture::called(self.inner.call(req))
            }
            check => self.not_at_once(req, key, check),
        }
    }
}

impl<S, L> RateLimit<S, L> {
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
        let max_wait = self.shared.config.max_wait.map(Deadline::bound);
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
