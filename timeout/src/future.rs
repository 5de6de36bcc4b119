//! The response future of [`Timeout`](crate::Timeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use seawall_core::{BoxError, Rejected, RejectionKind};
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::cover;
use crate::deadline::{Budget, Deadline};
use crate::event::TimedOutEvent;
use crate::state::Shared;

pin_project! {
    /// The inner call, raced against its timeout; or, when the caller's time was already up,
    /// the rejection, ready at once.
    ///
    /// The timer is armed when the inner call first returns `Pending`: a call that answers on
    /// its first poll (a cache hit, a rejection from an inner layer) never touches the timer
    /// wheel. Under deadline propagation it fires at the deadline the inner call was handed,
    /// and under an adaptive timeout at the call's start plus its timeout, the start its
    /// latency is measured from: the timer, the deadline and the measurement never disagree.
    /// A timeout with a deadline arms none while a timeout below has one armed that fires no
    /// later (a client stack's total over its attempt timeout): one timer per waiting call.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        budget: Budget,
        // When the call started, for a timeout that learns from latency.
        started: Option<Instant>,
        // A retry's attempt under a caller's deadline (current while it is polled): while the
        // learned timeout is open-ended, it waits for that deadline.
        stretch: bool,
        shared: Arc<Shared>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running {
            #[pin]
            inner: F,
            #[pin]
            sleep: Option<Sleep>,
            waited: Waited,
        },
        // The caller's deadline had passed before the inner service was called.
        Expired,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        budget: Budget,
        started: Option<Instant>,
        stretch: bool,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            state: State::Running {
                inner,
                sleep: None,
                waited: Waited(false),
            },
            budget,
            started,
            stretch,
            shared,
        }
    }

    pub(crate) fn expired(budget: Budget, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Expired,
            budget,
            started: None,
            stretch: false,
            shared,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("timeout", &self.budget.timeout)
            .field("by_caller", &self.budget.by_caller)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    // Only the answer of a fixed timeout without a recorder and a `Pending` covered from below
    // are polled inline: arming and polling the timer, an adaptive timeout's recording and the
    // time-left histogram are out of line, which keeps this poll small enough to inline into
    // the caller's (callgrind, `benches/callgrind.sh timeout`).
    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.as_mut().project();
        let budget = this.budget;
        let StateProj::Running {
            mut inner,
            sleep,
            waited,
        } = this.state.project()
        else {
            return Poll::Ready(Err(timed_out(this.shared, *budget)));
        };
        // With a deadline, a timer armed below that fires no later wakes the call in time:
        // while one is, this timeout needs none of its own.
        let (polled, covered_until) = match budget.deadline {
            Some(deadline) => {
                let listening = cover::listen();
                let polled = deadline.scope(|| inner.as_mut().poll(cx));
                (polled, listening.covers(deadline.0).then_some(deadline.0))
            }
            None => (inner.as_mut().poll(cx), None),
        };
        let Poll::Ready(result) = polled else {
            // A timer below covers the call until its deadline: this timeout arms none, and
            // a stack's total takes no call out of line on each `Pending` of an attempt.
            if let Some(deadline) = covered_until
                && sleep.is_none()
            {
                waited.0 = true;
                cover::report(deadline);
                return Poll::Pending;
            }
            return self.wait(cx).map(Err);
        };
        this.shared.completed.increment(1);
        // Only a recorder keeps the time left (the counter above binds one installed since):
        // without one, a fixed timeout reads no clock here.
        if this.started.is_some() || this.shared.metrics.is_recording() {
            self.answered(result.is_ok());
        }
        Poll::Ready(result.map_err(Into::into))
    }
}

impl<F> ResponseFuture<F> {
    /// Records an answer: an adaptive timeout's latency, and the time left for a recorder.
    #[inline(never)]
    fn answered(self: Pin<&mut Self>, ok: bool) {
        let this = self.project();
        let (shared, budget, started) = (&**this.shared, *this.budget, *this.started);
        let StateProj::Running { sleep, waited, .. } = this.state.project() else {
            return;
        };
        // A call that answers on its first poll took no time: its whole budget is left, and
        // the clock need not be read.
        let remaining = if waited.0 {
            let now = Instant::now();
            if let Some(started) = started {
                shared.live.answered(now - started, now);
            }
            let at = match (sleep.as_pin_mut(), budget.deadline) {
                (Some(timer), _) => timer.deadline(),
                (None, Some(Deadline(at))) => at,
                (None, None) => now,
            };
            at.saturating_duration_since(now)
        } else {
            // An error that took no time is a refusal below (a full bulkhead), not the
            // downstream's latency: it must not end a backoff its slower calls need.
            if let Some(started) = started
                && ok
            {
                shared.live.answered(Duration::ZERO, started);
            }
            budget.timeout
        };
        if shared.metrics.is_recording() {
            shared.remaining.record(remaining.as_secs_f64());
        }
    }

    /// Waits for the timer of a call whose inner call returned `Pending` and that no timer
    /// below covers: arms it on the first `Pending`, and gives the call's error once it fires.
    #[inline(never)]
    fn wait(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BoxError> {
        let this = self.project();
        let StateProj::Running {
            mut sleep, waited, ..
        } = this.state.project()
        else {
            return Poll::Ready(timed_out(this.shared, *this.budget));
        };
        if sleep.is_none() {
            sleep.set(Some(timer(*this.budget, *this.started)));
        }
        let Some(mut timer) = sleep.as_pin_mut() else {
            unreachable!("armed above");
        };
        if timer.as_mut().poll(cx).is_pending() {
            waited.0 = true;
            cover::report(timer.deadline());
            return Poll::Pending;
        }
        fired(
            this.shared,
            *this.budget,
            *this.started,
            *this.stretch,
            timer,
            waited,
            cx,
        )
    }
}

/// The call's error once its timer has fired: an adaptive timeout that has risen since the
/// call started waits on, to the longer time, first.
#[cold]
#[inline(never)]
fn fired(
    shared: &Shared,
    budget: Budget,
    started: Option<Instant>,
    stretch: bool,
    mut timer: Pin<&mut Sleep>,
    waited: &mut Waited,
    cx: &mut Context<'_>,
) -> Poll<BoxError> {
    if let Some(started) = started {
        loop {
            let at = timer.deadline();
            if budget.deadline.is_none() {
                // The timeout has risen since this call started (calls cut off before it
                // doubled it): the call gets that longer time, so that one wave of calls to a
                // downstream that became slower is not all cut at the old timeout.
                let learned = shared.live.learned_at(at);
                let longer = match Deadline::current() {
                    Some(Deadline(deadline)) if stretch && learned.open_ended => deadline,
                    _ => started + learned.timeout,
                };
                if longer > at {
                    timer.as_mut().reset(longer);
                    if timer.as_mut().poll(cx).is_pending() {
                        waited.0 = true;
                        cover::report(timer.deadline());
                        return Poll::Pending;
                    }
                    continue;
                }
            }
            // A cut says only that the call would have taken at least its time: it may hold
            // the learned timeout, never raise it (answers do).
            shared.live.cut(at - started, at, budget.by_caller);
            break;
        }
    }
    Poll::Ready(timed_out(shared, budget))
}

/// Whether a call has returned `Pending`: it then took time, and it told the timeout listening
/// above, if any, of the timer that will wake it.
struct Waited(bool);

impl Drop for Waited {
    #[inline]
    fn drop(&mut self) {
        // Dropped with the call, its timer with it (or the one below it told of).
        if self.0 {
            cover::withdraw();
        }
    }
}

#[inline]
fn timer(budget: Budget, started: Option<Instant>) -> Sleep {
    match (budget.deadline, started) {
        (Some(Deadline(at)), _) => sleep_until(at),
        (None, Some(started)) => sleep_until(started + budget.timeout),
        (None, None) => sleep(budget.timeout),
    }
}

#[cold]
#[inline(never)]
fn timed_out(shared: &Shared, budget: Budget) -> BoxError {
    let timeout = budget.timeout;
    let kind = if budget.by_caller {
        shared.deadline_exceeded.increment(1);
        RejectionKind::DeadlineExceeded
    } else {
        shared.timed_out.increment(1);
        RejectionKind::TimedOut
    };
    shared.remaining.record(0.0);
    tracing::debug!(rejected_by = %shared.name, rejection = kind.as_str(), ?timeout, "call ended by its timeout");
    shared.on_timeout.call(TimedOutEvent {
        name: &shared.name,
        timeout,
        kind,
    });
    Rejected::new(kind, shared.name.clone()).into()
}

#[cfg(test)]
mod tests {
    use std::future::{Pending, pending};
    use std::pin::pin;
    use std::task::Waker;

    use tower::{Layer, Service, service_fn};

    use super::*;
    use crate::TimeoutLayer;

    fn timeout(timeout: u64) -> TimeoutLayer {
        TimeoutLayer::builder()
            .name("dep")
            .timeout(Duration::from_millis(timeout))
            .build()
            .unwrap()
    }

    /// Whether each of a total timeout's and an attempt timeout's futures has a timer armed
    /// after their first poll, the attempt's inner call still waiting.
    fn armed_after_first_poll(total: u64, attempt: u64) -> (bool, bool) {
        let hanging = service_fn(|()| pending::<Result<(), BoxError>>());
        let mut svc = timeout(total)
            .scoped()
            .layer(timeout(attempt).layer(hanging));
        let mut call: Pin<&mut ResponseFuture<ResponseFuture<Pending<_>>>> = pin!(svc.call(()));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        let State::Running { inner, .. } = &call.state else {
            panic!("called");
        };
        (has_timer(&call.state), has_timer(&inner.state))
    }

    fn has_timer<F>(state: &State<F>) -> bool {
        matches!(state, State::Running { sleep: Some(_), .. })
    }

    #[tokio::test(start_paused = true)]
    async fn a_total_timeout_arms_no_timer_while_an_earlier_attempt_timer_is_armed() {
        assert_eq!(armed_after_first_poll(500, 300), (false, true));
        assert_eq!(
            armed_after_first_poll(300, 300),
            (false, true),
            "one timer for one instant"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_total_timeout_arms_its_timer_when_the_attempt_would_outlive_it() {
        assert_eq!(armed_after_first_poll(200, 300), (true, true));
    }
}
