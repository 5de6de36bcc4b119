use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::time::Duration;

use seawall_core::inplace::{self, EarlyClone};
use seawall_core::{Attempt, BoxError, Deadline, time};
use tokio::time::Instant;
use tower::Service;

use crate::deadline::Deadlines;
use crate::future::ResponseFuture;
use crate::state::{Learned, Shared};

/// Ends a call that takes longer than its timeout with
/// [`Rejected`](seawall_core::Rejected) of kind `TimedOut`, or `DeadlineExceeded` when the
/// caller's propagated deadline was the shorter.
///
/// Made by [`TimeoutLayer`](crate::TimeoutLayer).
pub struct Timeout<S, D> {
    inner: S,
    shared: Arc<Shared>,
    deadlines: D,
}

impl<S, D> Timeout<S, D> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, deadlines: D) -> Self {
        Self {
            inner,
            shared,
            deadlines,
        }
    }

    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, D: Clone> Clone for Timeout<S, D> {
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.shared.clone(),
            self.deadlines.clone(),
        )
    }
}

impl<S: fmt::Debug, D: fmt::Debug> fmt::Debug for Timeout<S, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("inner", &self.inner)
            .field("timeout", &self.shared.live.ceiling())
            .field("deadlines", &self.deadlines)
            .finish()
    }
}

impl<S, Req, D> Service<Req> for Timeout<S, D>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    D: Deadlines<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        inplace::build::<S::Future, _>(|| self.call_in_place(req))
    }
}

impl<S, D> Timeout<S, D> {
    /// `call`'s body, run where `inplace::build` puts it.
    #[inline(always)]
    fn call_in_place<Req>(&mut self, mut req: Req) -> ResponseFuture<S::Future>
    where
        S: Service<Req>,
        D: Deadlines<Req>,
    {
        let live = &*self.shared.live;
        // The deadline, an adaptive timeout's start and the layers below called here (retry's
        // budget) share one clock reading.
        let clock = (D::READS_CLOCK || live.adaptive.is_some()).then(time::CallScope::open);
        let (timeout, started, extended, stretch) = match &live.adaptive {
            None => (live.ceiling(), None, false, false),
            Some(_) => {
                let now = time::call_now();
                let attempt = attempt_timeout(live.learned_at(now), now);
                (
                    attempt.timeout,
                    Some(now),
                    attempt.extended,
                    attempt.stretch,
                )
            }
        };
        let mut budget = self.deadlines.apply(&mut req, timeout);
        if extended {
            // Given the caller's whole budget, past its usual timeout: if it still times out,
            // the downstream was slow, not the caller short of time.
            budget.by_caller = false;
        }
        // A copy: the budget's own address handed to tracing would keep it in memory, its
        // checks below read back from there.
        let timeout = budget.timeout;
        tracing::trace!(name = %self.shared.name, ?timeout, "call");
        if budget.by_caller && budget.timeout.is_zero() {
            // The caller has given up already: calling the inner service would be wasted work.
            return ResponseFuture::expired(budget, self.shared.clone());
        }
        // Built where the caller keeps it (`seawall_core::inplace`): the scopes end inside
        // the inner call's closure, so that nothing is dropped after it.
        let shared = EarlyClone::new::<S::Future>(&self.shared);
        let (deadline, service) = (budget.deadline, &mut self.inner);
        let inner = inplace::call(move || {
            let _clock = clock;
            // The layers below see the deadline while they are called, as while polled.
            Deadline::scope_if(deadline, || service.call(req))
        });
        ResponseFuture::new(inner, budget, started, stretch, shared.get(&self.shared))
    }
}

/// An attempt's timeout.
struct AttemptTimeout {
    timeout: Duration,
    /// Lengthened to what the caller's deadline leaves.
    extended: bool,
    /// A retry's attempt under a caller's deadline: while the learned timeout is open-ended,
    /// it may wait for the deadline, even if already running.
    stretch: bool,
}

/// The timeout of an attempt whose learned timeout is `usual`: an attempt that no retry can
/// follow, or one of a retry's attempts at a downstream that answered no call within the
/// ceiling since calls were last cut there, gets what is left of the caller's deadline, if
/// more, since cutting it early would only turn a slow answer into a failure.
fn attempt_timeout(usual: Learned, now: Instant) -> AttemptTimeout {
    let mut attempt = AttemptTimeout {
        timeout: usual.timeout,
        extended: false,
        stretch: false,
    };
    if let Some(current) = Attempt::current()
        && let Some(Deadline(at)) = Deadline::current()
    {
        attempt.stretch = true;
        let left = at.saturating_duration_since(now);
        if (current.last || usual.open_ended) && left > usual.timeout {
            attempt.timeout = left;
            attempt.extended = true;
        }
    }
    attempt
}
