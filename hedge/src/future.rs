//! The response future of [`Hedge`](crate::Hedge): the first attempt, the hedges it sends
//! after their delays, and the first answer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use pin_project_lite::pin_project;
use seawall_core::BoxError;
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::policy::HedgePolicy;
use crate::state::Shared;

/// What a call's hedges need: the layer's shared state and a clone of the inner service as
/// it was given, from which each hedge takes its own, readied before it is called.
///
/// One `Arc` per service (made when the layer wraps it), so that a call clones only this
/// handle, not the stack below.
pub(crate) struct Core<S, P> {
    pub(crate) shared: Arc<Shared<P>>,
    pub(crate) template: S,
}

pin_project! {
    /// A hedge in flight, with its attempt number.
    struct Attempt<F> {
        #[pin]
        fut: F,
        attempt: u32,
    }
}

impl<F: Future> Future for Attempt<F> {
    type Output = (u32, F::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.fut.poll(cx).map(|output| (*this.attempt, output))
    }
}

/// The hedges of a call that may be hedged.
struct Hedging<S, Req, F> {
    /// The copy the next hedge sends; `None` once no more hedges will be sent.
    request: Option<Req>,
    delay: Duration,
    /// Attempts sent so far, the first included.
    sent: u32,
    /// A clone of the inner service being readied for the next hedge.
    readying: Option<S>,
    /// Made when the first hedge is sent: the path that does not hedge allocates nothing.
    in_flight: Option<FuturesUnordered<Attempt<F>>>,
}

impl<S, Req, F> Hedging<S, Req, F> {
    fn is_busy(&self) -> bool {
        self.readying.is_some() || self.in_flight.as_ref().is_some_and(|set| !set.is_empty())
    }
}

pin_project! {
    /// A call through the hedge layer: the first attempt, then, while it has not answered,
    /// a hedge after each delay, as long as the budget allows. The first success answers the
    /// call and every other attempt is dropped; an error waits for the attempts still in
    /// flight, and is the answer only when none of them succeeds.
    ///
    /// The inner future's type is a parameter (its default the inner service's) rather than a
    /// bound on the type, so that whether the future is `Send` depends only on what it holds:
    /// a bound here would make rustc prove the inner service's `Service` impl again for a
    /// spawned `async` block, where it fails for any inner layer whose error converts into
    /// `BoxError`.
    pub struct ResponseFuture<S, Req, P, F = <S as Service<Req>>::Future> {
        #[pin]
        primary: Option<F>,
        // Armed when the first attempt first waits, so a call answered at once never touches
        // the timer wheel.
        #[pin]
        timer: Option<Sleep>,
        hedging: Option<Hedging<S, Req, F>>,
        // Present when hedges may be sent or the first attempt's latency is recorded.
        core: Option<Arc<Core<S, P>>>,
        // When the first attempt first waited: a call counts its time (and its hedge delay)
        // from its first poll.
        start: Option<Instant>,
        error: Option<BoxError>,
    }
}

impl<S, Req, P, F> ResponseFuture<S, Req, P, F> {
    /// The first attempt `primary`; `hedge` is the copy of the request and the delay when the
    /// call may be hedged.
    pub(crate) fn new(
        primary: F,
        core: Option<Arc<Core<S, P>>>,
        hedge: Option<(Req, Duration)>,
    ) -> Self {
        Self {
            primary: Some(primary),
            timer: None,
            hedging: hedge.map(|(request, delay)| Hedging {
                request: Some(request),
                delay,
                sent: 1,
                readying: None,
                in_flight: None,
            }),
            core,
            start: None,
            error: None,
        }
    }
}

impl<S, Req, P, F> fmt::Debug for ResponseFuture<S, Req, P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("primary", &self.primary.is_some())
            .field("sent", &self.hedging.as_ref().map_or(1, |h| h.sent))
            .finish_non_exhaustive()
    }
}

impl<S, Req, P> Future for ResponseFuture<S, Req, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: HedgePolicy<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();

        if let Some(primary) = this.primary.as_mut().as_pin_mut() {
            match primary.poll(cx) {
                Poll::Pending => {
                    if this.start.is_none()
                        && let Some(core) = this.core
                    {
                        *this.start = Some(core.shared.state.now());
                    }
                }
                Poll::Ready(result) => {
                    this.primary.set(None);
                    match result {
                        Ok(response) => {
                            if let Some(core) = this.core {
                                let state = &core.shared.state;
                                match *this.start {
                                    None => state.record_at_once(),
                                    Some(start) => {
                                        // A hedge still out lost: the call was late, not slow.
                                        if this.hedging.as_ref().is_some_and(Hedging::is_busy) {
                                            state.hedge_decided(false);
                                        }
                                        if state.records_latency() {
                                            let now = state.now();
                                            state.record_latency(now - start, now);
                                        }
                                    }
                                }
                            }
                            this.timer.set(None);
                            *this.hedging = None;
                            *this.error = None;
                            return Poll::Ready(Ok(response));
                        }
                        Err(err) => keep_first(this.error, err.into()),
                    }
                }
            }
        }

        if let (Some(hedging), Some(core), Some(start)) =
            (this.hedging.as_mut(), this.core.as_ref(), *this.start)
        {
            let shared = &core.shared;
            let won = 'hedges: loop {
                if let Some(set) = hedging.in_flight.as_mut() {
                    while let Poll::Ready(Some((attempt, result))) = set.poll_next_unpin(cx) {
                        match result {
                            Ok(response) => break 'hedges Some((attempt, response)),
                            Err(err) => keep_first(this.error, err.into()),
                        }
                    }
                }

                if let Some(svc) = hedging.readying.as_mut() {
                    match svc.poll_ready(cx) {
                        Poll::Pending => {}
                        Poll::Ready(Err(err)) => {
                            hedging.readying = None;
                            keep_first(this.error, err.into());
                        }
                        Poll::Ready(Ok(())) => {
                            let mut svc = hedging.readying.take().expect("being readied");
                            let request = next_request(&mut hedging.request, hedging.sent, shared);
                            let attempt = Attempt {
                                fut: svc.call(request),
                                attempt: hedging.sent,
                            };
                            hedging
                                .in_flight
                                .get_or_insert_with(FuturesUnordered::new)
                                .push(attempt);
                            continue;
                        }
                    }
                }

                // No hedge after the first attempt failed: hedges are for slow calls.
                if hedging.request.is_some() && hedging.readying.is_none() && this.primary.is_some()
                {
                    if this.timer.is_none() {
                        let due = start + hedging.delay * hedging.sent;
                        this.timer.set(Some(tokio::time::sleep_until(due)));
                    }
                    let timer = this.timer.as_mut().as_pin_mut().expect("armed");
                    if timer.poll(cx).is_ready() {
                        let now = shared.state.now();
                        if shared.state.withdraw(now) {
                            hedging.sent += 1;
                            shared.hedge_sent(hedging.sent, now - start);
                            hedging.readying = Some(core.template.clone());
                            if hedging.sent < shared.state.max_attempts() {
                                let next = start + hedging.delay * hedging.sent;
                                let timer = this.timer.as_mut().as_pin_mut().expect("armed");
                                timer.reset(next);
                            } else {
                                this.timer.set(None);
                            }
                            continue;
                        }
                        shared.budget_exhausted(hedging.sent + 1);
                        hedging.request = None;
                        this.timer.set(None);
                    }
                }
                break None;
            };

            if let Some((attempt, response)) = won {
                let now = shared.state.now();
                let elapsed = now - start;
                // The first attempt took at least this long: a sample from above the delay,
                // without which the percentile would only ever see the attempts that beat
                // their hedges, and drift down.
                if this.primary.is_some() {
                    shared.state.record_hedged(elapsed, now);
                }
                shared.state.hedge_decided(true);
                shared.hedge_won(attempt, elapsed);
                this.primary.set(None);
                this.timer.set(None);
                *this.hedging = None;
                *this.error = None;
                return Poll::Ready(Ok(response));
            }
        }

        let busy = this.primary.is_some() || this.hedging.as_ref().is_some_and(Hedging::is_busy);
        if busy {
            return Poll::Pending;
        }
        // Every attempt sent has failed, and no hedge is being readied.
        this.timer.set(None);
        *this.hedging = None;
        Poll::Ready(Err(this
            .error
            .take()
            .expect("ResponseFuture polled after completion")))
    }
}

/// The request for the hedge numbered `sent`: a fresh copy while more hedges may follow, the
/// held copy itself for the last one (or when no further copy can be made).
fn next_request<Req, P: HedgePolicy<Req>>(
    held: &mut Option<Req>,
    sent: u32,
    shared: &Shared<P>,
) -> Req {
    if sent < shared.state.max_attempts()
        && let Some(copy) = held
            .as_ref()
            .and_then(|req| shared.policy.clone_request(req))
    {
        return copy;
    }
    held.take()
        .expect("a request is held while hedges may be sent")
}

fn keep_first(slot: &mut Option<BoxError>, err: BoxError) {
    if slot.is_none() {
        *slot = Some(err);
    }
}
