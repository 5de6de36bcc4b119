use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use seawall_core::inplace::{self, EarlyClone};
use seawall_core::{Attempt, BoxError, time};
use tower::Service;

use crate::budget::SlotCache;
use crate::fleet::LayerBudget;
use crate::future::ResponseFuture;
use crate::policy::RetryPolicy;
use crate::state::{Core, Shared};

/// Retries failed calls of the inner service as its policy says, within max attempts, max
/// elapsed time and the retry budget.
///
/// Made by [`RetryLayer`](crate::RetryLayer).
pub struct Retry<S, P> {
    inner: S,
    core: Arc<Core<S, P>>,
    slots: SlotCache,
}

impl<S: Clone, P> Retry<S, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<P>>) -> Self {
        let template = inner.clone();
        Self {
            inner,
            core: Arc::new(Core { shared, template }),
            slots: SlotCache::new(),
        }
    }
}

impl<S, P> Retry<S, P> {
    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, P> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            core: self.core.clone(),
            slots: self.slots,
        }
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for Retry<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.core.shared;
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("name", &shared.name)
            .field("max_attempts", &shared.settings.max_attempts())
            .field("policy", &shared.policy)
            .finish()
    }
}

impl<S, Req, P> Service<Req> for Retry<S, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: RetryPolicy<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Inline with the future's poll: see there.
    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        inplace::build::<S::Future, _>(move || {
            let shared = &self.core.shared;
            let max_attempts = shared.settings.max_attempts();
            let request = if max_attempts > 1 {
                shared.policy.clone_request(&req)
            } else {
                None
            };
            // Every call is timed, for the duration histogram; with the reading of a layer
            // above that read the clock for this call (a stack's total timeout).
            let now = time::call_now();
            let refused = match &shared.budget {
                Some(LayerBudget::Own(budget)) => {
                    let slot = budget.slot_of(&mut self.slots, now);
                    budget.deposit_in(slot);
                    budget.recently_refused_in(slot)
                }
                Some(LayerBudget::Shared(budget)) => {
                    budget.deposit(now);
                    false
                }
                None => false,
            };
            // The service that `poll_ready` readied takes the first attempt; retries, if any,
            // take a clone of the template.
            let attempt = Attempt {
                number: 1,
                last: request.is_none() || refused,
            };
            // Built where the caller keeps it: see `seawall_core::inplace`.
            let core = EarlyClone::new::<S::Future>(&self.core);
            let future = inplace::call(|| attempt.scope(|| self.inner.call(req)));
            ResponseFuture::new(future, request, core.get(&self.core), Some(now))
        })
    }
}
