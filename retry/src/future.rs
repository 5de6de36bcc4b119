//! The response future of [`Retry`](crate::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use seawall_core::time::nanos;
use seawall_core::{Attempt, BoxError, Rejected, RejectionKind, rejected};
use tokio::time::{Instant, Sleep, sleep};
use tower::Service;
use tracing::Span;

use crate::event::RetryEvent;
use crate::policy::{RetryPolicy, Verdict};
use crate::state::{Core, Shared};

pin_project! {
    /// One call with its retries: the current attempt, the wait before the next one, or the
    /// inner service getting ready for it.
    ///
    /// It holds the copy of the request a retry would send and allocates nothing: the jitter
    /// RNG is seeded and the timer set only when a retry is due. Dropping it drops the attempt
    /// or the wait in flight, and no further attempt starts.
    ///
    /// `F` is the inner service's future. It is a parameter of its own, not a bound on the
    /// type, so that whether the future is `Send` depends only on what it holds: a bound here
    /// would make rustc prove the inner service's `Service` impl again for a spawned `async`
    /// block, where it fails for any inner layer whose error converts into `BoxError`.
    pub struct ResponseFuture<S, Req, P, F = <S as Service<Req>>::Future> {
        #[pin]
        state: State<F>,
        service: Option<S>,
        request: Option<Req>,
        core: Arc<Core<S, P>>,
        attempt: u32,
        started: Option<Instant>,
        previous_delay: Duration,
        // The span of the retry in flight (none for the first attempt), a child of the
        // request's span: what the layers below record lands in it.
        span: Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // The attempt in flight.
        Called {
            #[pin]
            future: F,
        },
        // The wait before the next attempt.
        Waiting {
            #[pin]
            sleep: Sleep,
        },
        // The inner service getting ready for the next attempt.
        Retrying,
    }
}

impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        future: S::Future,
        request: Option<Req>,
        core: Arc<Core<S, P>>,
        started: Option<Instant>,
    ) -> Self {
        Self {
            state: State::Called { future },
            service: None,
            request,
            core,
            attempt: 1,
            started,
            previous_delay: Duration::ZERO,
            span: Span::none(),
        }
    }
}

impl<S, Req, P, F> fmt::Debug for ResponseFuture<S, Req, P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Retrying => "retrying",
        };
        f.debug_struct("ResponseFuture")
            .field("name", &self.core.shared.name)
            .field("attempt", &self.attempt)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, Req, P> Future for ResponseFuture<S, Req, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: RetryPolicy<Req, S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    // Inline, as `Retry::call`: with both in the caller, the future is built where it is
    // polled and the success path takes no call of its own: 290 / 327 → 228 / 224 instructions
    // at once / pending once (each alone: 267 / 280, 278 / 315; `benches/callgrind.sh retry`).
    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let StateProj::Called { future } = this.state.project() else {
                if let Some(out) = ready!(self.as_mut().poll_between(cx)) {
                    return Poll::Ready(out);
                }
                continue;
            };
            let polled = this.span.in_scope(|| future.poll(cx));
            let result = ready!(polled).map_err(Into::into);
            let shared = &*this.core.shared;
            let verdict = shared.policy.judge(result.as_ref());
            if verdict == Verdict::Success {
                finish(shared, *this.attempt, *this.started, true);
                return Poll::Ready(result);
            }
            if let Some(out) = self.as_mut().judged(verdict, result) {
                return Poll::Ready(out);
            }
        }
    }
}

// Only a success, the first attempt's as a rule, is polled inline: the rest, a failure's
// plan and the attempts after it, are kept out of line, which kept the loop's projections of
// every state out of the success path (callgrind, `benches/callgrind.sh retry`).
impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: RetryPolicy<Req, S::Response>,
{
    /// Ends the call with the attempt's `result`, or plans a retry and returns `None`.
    #[inline(never)]
    fn judged(
        self: Pin<&mut Self>,
        verdict: Verdict,
        result: Result<S::Response, BoxError>,
    ) -> Option<Result<S::Response, BoxError>> {
        let mut this = self.project();
        let shared = &*this.core.shared;
        let ask = match verdict {
            Verdict::Success => {
                finish(shared, *this.attempt, *this.started, true);
                return Some(result);
            }
            Verdict::Failure => {
                finish(shared, *this.attempt, *this.started, false);
                return Some(result);
            }
            Verdict::Retry { not_before } => Ask {
                not_before,
                overload: false,
            },
            Verdict::Overloaded { not_before } => Ask {
                not_before,
                overload: true,
            },
        };
        let plan = if let Some(request) = this.request.as_ref() {
            plan_retry(
                shared,
                shared.policy.authority(request),
                *this.attempt,
                *this.started,
                this.previous_delay,
                ask,
                result.as_ref().err(),
            )
        } else {
            Plan::Stop
        };
        match plan {
            Plan::Stop => {
                finish(shared, *this.attempt, *this.started, false);
                return Some(result);
            }
            Plan::BudgetExhausted => {
                finish(shared, *this.attempt, *this.started, false);
                return Some(result.map_err(|last| {
                    Rejected::new(RejectionKind::BudgetExhausted, shared.name.clone())
                        .with_source(last)
                        .into()
                }));
            }
            Plan::Retry(delay) if delay.is_zero() => this.state.set(State::Retrying),
            Plan::Retry(delay) => this.state.set(State::Waiting {
                sleep: sleep(delay),
            }),
        }
        None
    }

    /// Waits out the delay before the next attempt and starts it, with the call's output
    /// when the inner service fails to get ready for it and `None` once it is called.
    #[inline(never)]
    fn poll_between(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<S::Response, BoxError>>> {
        let mut this = self.project();
        let shared = &*this.core.shared;
        if let StateProj::Waiting { sleep } = this.state.as_mut().project() {
            ready!(sleep.poll(cx));
            this.state.set(State::Retrying);
        }
        let service = this
            .service
            .get_or_insert_with(|| this.core.template.clone());
        if let Err(err) = ready!(service.poll_ready(cx)) {
            finish(shared, *this.attempt, *this.started, false);
            return Poll::Ready(Some(Err(err.into())));
        }
        let Some(req) = this.request.take() else {
            unreachable!("a retry is planned only with a copy of the request");
        };
        *this.attempt += 1;
        if *this.attempt < shared.settings.max_attempts() {
            *this.request = shared.policy.clone_request(&req);
        }
        let span = tracing::debug_span!("retry", name = &*shared.name, attempt = *this.attempt);
        let attempt = attempt(
            shared,
            *this.attempt,
            this.request.is_some(),
            Instant::now(),
        );
        let future = span.in_scope(|| attempt.scope(|| service.call(req)));
        *this.span = span;
        this.state.set(State::Called { future });
        Poll::Ready(None)
    }
}

/// Attempt `number`, the last when no copy of the request is kept for another or the budget
/// refused a retry lately: the layers below (an attempt timeout) read it while called.
pub(crate) fn attempt<P>(
    shared: &Shared<P>,
    number: u32,
    copy_kept: bool,
    now: Instant,
) -> Attempt {
    let refused = shared
        .budget
        .as_ref()
        .and_then(|budget| budget.own())
        .is_some_and(|budget| budget.recently_refused_at(now));
    Attempt {
        number,
        last: !copy_kept || refused,
    }
}

// Inlined into the success path: out of line, its call and prologue were 15 of the 325
// instructions a call (callgrind, `benches/callgrind.sh retry`).
#[inline(always)]
fn finish<P>(shared: &Shared<P>, attempts: u32, started: Option<Instant>, success: bool) {
    let m = &shared.metrics;
    let calls = match (success, attempts > 1) {
        (true, false) => &m.success_without_retry,
        (true, true) => &m.success_with_retry,
        (false, false) => &m.failed_without_retry,
        (false, true) => &m.failed_with_retry,
    };
    calls.increment_both(1, &m.attempts, u64::from(attempts));
    // Only a recorder keeps a sample (the counters above bind one installed since), so without
    // one neither histogram is fed and the clock is not read.
    if m.scope.is_recording() {
        record(shared, attempts, started);
    }
}

#[cold]
#[inline(never)]
fn record<P>(shared: &Shared<P>, attempts: u32, started: Option<Instant>) {
    let m = &shared.metrics;
    m.attempts_per_call.record(f64::from(attempts));
    if let Some(started) = started {
        m.duration.record(started.elapsed().as_secs_f64());
    }
}

/// What the policy asked of a retry: not before when, if it named a time, and whether the
/// downstream refused for load.
#[derive(Clone, Copy)]
struct Ask {
    not_before: Option<Duration>,
    overload: bool,
}

/// What follows a result the policy would retry.
enum Plan {
    /// A retry, after this wait.
    Retry(Duration),
    /// No retry: the call ends with its result.
    Stop,
    /// No retry because the budget has none left: an error ends the call as a
    /// `BudgetExhausted` rejection whose source is the error, so that a retry layer further out
    /// does not retry what this one refused. A response is returned as it is.
    BudgetExhausted,
}

/// The wait before the next attempt, or why no retry may start.
#[cold]
#[inline(never)]
fn plan_retry<P>(
    shared: &Shared<P>,
    authority: Option<&str>,
    attempt: u32,
    started: Option<Instant>,
    previous_delay: &mut Duration,
    Ask {
        not_before,
        overload,
    }: Ask,
    error: Option<&BoxError>,
) -> Plan {
    let name = &*shared.name;
    let limits = shared.settings.limits();
    let now = Instant::now();
    // The downstream's own hint (a response's Retry-After, a status's pushback) holds back
    // every retry of the layer to the same authority; an inner layer's (a breaker's, a keyed
    // rate limit's) speaks for what this request met there, and only holds back this request.
    let key = shared.suspension.key(authority);
    if let Some(hint) = not_before
        && error.is_none_or(|e| rejected(&**e).is_none())
    {
        shared.suspension.hold(key, now, hint);
    }
    let held = shared.suspension.left(key, now);
    let not_before = match not_before {
        _ if held.is_zero() => not_before,
        Some(hint) => Some(hint.max(held)),
        None => Some(held),
    };
    if attempt >= limits.max_attempts {
        tracing::debug!(name, attempt, "max attempts reached");
        return Plan::Stop;
    }
    if let Some(hint) = not_before
        && hint > limits.max_delay
    {
        tracing::debug!(name, attempt, ?hint, max_delay = ?limits.max_delay, "retry hint beyond max delay, giving up");
        return Plan::Stop;
    }
    // A fresh small RNG per retry keeps the future small; numbering the retries makes a run on
    // one thread repeat exactly.
    let n = shared.sequence.fetch_add(1, Ordering::Relaxed);
    let mut rng = SmallRng::seed_from_u64(shared.seed.wrapping_add(n));
    // Before the first retry, zero: the backoff reads it as its base.
    let backoff = limits.backoff.delay(attempt, *previous_delay, &mut rng);
    *previous_delay = backoff;
    // An overload refusal says only "not now", and one downstream refuses a whole burst of
    // calls at once. Retried within the backoff's first 100 ms, the burst's retries come back
    // as a smaller copy of it, into the same overload whenever that lasts longer; spread over
    // half the time the call has left, they reach the downstream in moments the burst did not
    // fill, and the call keeps the other half for the retry itself.
    let spread = match (overload, limits.max_elapsed, started) {
        (true, Some(max), Some(started)) => {
            let left = max.saturating_sub(now.saturating_duration_since(started));
            Duration::from_nanos(rng.random_range(0..=nanos(left / 2)))
        }
        _ => Duration::ZERO,
    };
    // Never sooner than the hint (at most `max_delay`, checked above), never longer than
    // `max_delay`.
    let delay = not_before
        .map_or(backoff, |hint| hint.max(backoff))
        .max(spread)
        .min(limits.max_delay);
    // A retry whose wait ends at the limit would have no time at all: the caller's deadline
    // (a stack's total timeout) abandons it as it starts, after the downstream took it.
    if let (Some(max), Some(started)) = (limits.max_elapsed, started)
        && now.saturating_duration_since(started) + delay >= max
    {
        tracing::debug!(
            name,
            attempt,
            ?delay,
            "retry would end after max elapsed, giving up"
        );
        return Plan::Stop;
    }
    if let Some(budget) = &shared.budget
        && !budget.withdraw()
    {
        shared.metrics.budget_exhausted.increment(1);
        tracing::debug!(name, attempt, "retry budget exhausted");
        return Plan::BudgetExhausted;
    }
    let next = attempt + 1;
    match error {
        Some(error) => tracing::debug!(name, attempt = next, ?delay, %error, "retrying"),
        None => tracing::debug!(name, attempt = next, ?delay, "retrying"),
    }
    shared.on_retry.call(RetryEvent {
        name,
        attempt: next,
        delay,
    });
    Plan::Retry(delay)
}
