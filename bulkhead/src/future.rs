//! The response future of [`Bulkhead`](crate::Bulkhead), and the [`Completion`] that gives
//! the slot back.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use seawall_core::classify::{Classified, Classify, Outcome, Report};
use seawall_core::{BoxError, Deadline, Rejected, RejectionKind, rejected};
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::event::RejectReason;
use crate::semaphore::Waiter;
use crate::state::Shared;

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        // Queued for a slot, holding an unused clone of the inner service and the request.
        Waiting {
            #[pin]
            sleep: Sleep,
            svc: Option<S>,
            req: Option<Req>,
            since: Instant,
        },
        // Given a slot; the clone of the inner service is made ready before the call.
        Readying {
            svc: Option<S>,
            req: Option<Req>,
        },
        Called {
            #[pin]
            fut: F,
        },
        Rejected {
            err: Option<BoxError>,
        },
        // Answered. Set before every `Ready`, so that a poll after the answer can never reach
        // the slot logic again (an expired waiter would take a slot it was never given).
        Done,
    }
}

pin_project! {
    /// A call through the bulkhead: waiting for a slot, then the inner call.
    ///
    /// The slot is held by the future itself and given back when the inner call finishes (or,
    /// with a classifier that watches the response body, when the body ends), or when the
    /// future is dropped.
    ///
    /// `F` is the inner service's future, a parameter rather than a bound so that whether the
    /// future is `Send` depends only on what it holds, also in a spawned `async` block.
    pub struct ResponseFuture<S, Req, C, F = <S as Service<Req>>::Future> {
        #[pin]
        state: State<S, Req, F>,
        permit: Permit<C>,
    }
}

impl<S, Req, C> ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    pub(crate) fn called(fut: S::Future, permit: Permit<C>) -> Self {
        Self {
            state: State::Called { fut },
            permit,
        }
    }

    pub(crate) fn waiting(svc: S, req: Req, permit: Permit<C>, sleep: Sleep) -> Self {
        Self {
            state: State::Waiting {
                sleep,
                svc: Some(svc),
                req: Some(req),
                since: Instant::now(),
            },
            permit,
        }
    }

    pub(crate) fn rejected(err: BoxError) -> Self {
        Self {
            state: State::Rejected { err: Some(err) },
            permit: Permit::none(),
        }
    }
}

impl<S, Req, C, F> fmt::Debug for ResponseFuture<S, Req, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Readying { .. } => "readying",
            State::Called { .. } => "called",
            State::Rejected { .. } => "rejected",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    type Output = Result<C::Response<Completion<C>>, BoxError>;

    // A call admitted at once is polled inline and the other states out of line: the whole
    // state machine, polled out of line, was 42 instructions a call (callgrind,
    // `benches/callgrind.sh bulkhead`).
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let StateProj::Called { fut } = this.state.as_mut().project() {
            let result = ready!(fut.poll(cx)).map_err(Into::into);
            this.state.set(State::Done);
            return Poll::Ready(this.permit.complete(result));
        }
        poll_not_called(this.state, this.permit, cx)
    }
}

#[cold]
#[inline(never)]
fn poll_not_called<S, Req, C>(
    mut state: Pin<&mut State<S, Req, S::Future>>,
    permit: &mut Permit<C>,
    cx: &mut Context<'_>,
) -> Poll<Result<C::Response<Completion<C>>, BoxError>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
{
    loop {
        match state.as_mut().project() {
            StateProj::Called { fut } => {
                let result = ready!(fut.poll(cx)).map_err(Into::into);
                state.set(State::Done);
                return Poll::Ready(permit.complete(result));
            }
            StateProj::Waiting {
                sleep,
                svc,
                req,
                since,
            } => {
                if !permit.poll_granted(cx) {
                    if sleep.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if let Some(err) = permit.expire(*since) {
                        state.set(State::Done);
                        return Poll::Ready(Err(err));
                    }
                }
                permit.hold_granted(*since);
                let (svc, req) = (svc.take(), req.take());
                state.set(State::Readying { svc, req });
            }
            StateProj::Readying { svc, req } => {
                let inner = svc.as_mut().expect("polled after completion");
                if let Err(err) = ready!(inner.poll_ready(cx)) {
                    permit.release();
                    state.set(State::Done);
                    return Poll::Ready(Err(err.into()));
                }
                let req = req.take().expect("polled after completion");
                let fut = inner.call(req);
                state.set(State::Called { fut });
            }
            StateProj::Rejected { err } => {
                let err = err.take().expect("a rejection is answered once");
                state.set(State::Done);
                return Poll::Ready(Err(err));
            }
            StateProj::Done => panic!("bulkhead future polled after completion"),
        }
    }
}

/// When a call started, for the adaptive limit.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// When the call started, as the adaptive limit keeps times.
    start: u64,
    in_flight: usize,
}

enum Slot {
    Empty,
    Held(Option<Sample>),
    Queued(Arc<Waiter>),
}

/// One call's claim on the bulkhead: nothing, a place in the queue or a slot. Dropping it
/// gives back whatever it holds.
pub(crate) struct Permit<C> {
    shared: Option<Arc<Shared<C>>>,
    partition: Option<usize>,
    slot: Slot,
}

impl<C> Permit<C> {
    fn none() -> Self {
        Self {
            shared: None,
            partition: None,
            slot: Slot::Empty,
        }
    }

    /// A slot taken when `in_flight` calls were in flight, this one included.
    #[inline]
    pub(crate) fn held(shared: Arc<Shared<C>>, partition: Option<usize>, in_flight: usize) -> Self {
        let sample = shared.state.is_adaptive().then(|| Sample {
            start: shared.state.enter(),
            in_flight,
        });
        Self {
            shared: Some(shared),
            partition,
            slot: Slot::Held(sample),
        }
    }

    pub(crate) fn queued(
        shared: Arc<Shared<C>>,
        partition: Option<usize>,
        waiter: Arc<Waiter>,
    ) -> Self {
        Self {
            shared: Some(shared),
            partition,
            slot: Slot::Queued(waiter),
        }
    }

    fn shared(&self) -> &Shared<C> {
        self.shared
            .as_deref()
            .expect("a permit in use has its bulkhead")
    }

    fn poll_granted(&self, cx: &mut Context<'_>) -> bool {
        match &self.slot {
            Slot::Queued(waiter) => self.shared().state.semaphore.poll_granted(waiter, cx),
            _ => true,
        }
    }

    /// Gives up the place in the queue after `max_wait`: the rejection, or `None` when a slot
    /// was handed over just in time.
    #[cold]
    fn expire(&mut self, since: Instant) -> Option<BoxError> {
        let shared = self.shared();
        // A slot held by a body nobody reads may be ours now.
        shared.state.release_idle();
        if let Slot::Queued(waiter) = &self.slot
            && shared.state.semaphore.leave(waiter)
        {
            return None;
        }
        shared.state.wait.record(since.elapsed().as_secs_f64());
        let err = reject(shared, self.partition, RejectReason::WaitExpired);
        self.slot = Slot::Empty;
        Some(err)
    }

    fn hold_granted(&mut self, since: Instant) {
        let shared = self.shared();
        let state = &shared.state;
        state.wait.record(since.elapsed().as_secs_f64());
        let sample = state.is_adaptive().then(|| Sample {
            start: state.enter(),
            in_flight: state.semaphore.in_flight(),
        });
        self.slot = Slot::Held(sample);
    }

    /// Classifies the inner call's result and gives the slot back: now, or through the
    /// [`Completion`] when the classifier waits for the end of the response body.
    // Always: in the client stack LLVM left it out of line in the breaker's poll once that
    // poll's callers changed, 39 instructions a call and 14 more in the state's drop.
    #[inline(always)]
    fn complete<Res>(
        &mut self,
        result: Result<Res, BoxError>,
    ) -> Result<C::Response<Completion<C>>, BoxError>
    where
        C: Classify<Res, BoxError>,
    {
        let shared = self.shared();
        match (shared.classify.classify(result.as_ref()), result) {
            (Classified::Now(outcome), result) => {
                // A call shed further in (a breaker, a timeout, another bulkhead) is the stack
                // asking for less, as an overload refusal is.
                let outcome = match &result {
                    Err(err) if rejected(&**err).is_some() => Outcome::Overload,
                    _ => outcome,
                };
                let classify = &shared.classify;
                let response = result.map(|res| classify.watch(res, None));
                self.finish(outcome);
                response
            }
            (Classified::AtEndOfStream, Ok(res)) => {
                let classify = shared.classify.clone();
                let completion = Completion::new(mem::replace(self, Self::none()));
                Ok(classify.watch(res, Some(completion)))
            }
            (Classified::AtEndOfStream, Err(err)) => {
                self.finish(Outcome::Failure);
                Err(err)
            }
        }
    }

    /// Feeds the outcome to the adaptive limit, then gives the slot back.
    fn finish(&mut self, outcome: Outcome) {
        if let Slot::Held(Some(sample)) = self.slot
            && outcome != Outcome::Ignored
        {
            let shared = self.shared();
            // A failure backs the algorithm off, but only overload says the downstream wants
            // fewer calls: a brownout's errors are no reason to go below what Little's law
            // needs.
            let dropped = matches!(outcome, Outcome::Failure | Outcome::Overload);
            let overload = outcome == Outcome::Overload;
            shared
                .state
                .sample(sample.start, sample.in_flight, dropped, overload);
        }
        self.release();
    }

    /// Lets go of a slot that was given back for it.
    fn forget(&mut self) {
        if let Slot::Held(Some(sample)) = mem::replace(&mut self.slot, Slot::Empty) {
            self.shared().state.leave(sample.start);
        }
    }

    // The check for nothing held is inlined: a permit is released when its call completes
    // and again, holding nothing, when it is dropped, and the second call out of line was 17
    // of the bulkhead's 338 instructions a call (callgrind, `benches/callgrind.sh bulkhead`).
    #[inline]
    fn release(&mut self) {
        if !matches!(self.slot, Slot::Empty) {
            self.release_held();
        }
    }

    #[inline]
    fn release_held(&mut self) {
        match mem::replace(&mut self.slot, Slot::Empty) {
            Slot::Empty => {}
            Slot::Held(sample) => {
                let state = &self.shared().state;
                if let Some(sample) = sample {
                    state.leave(sample.start);
                }
                state.semaphore.release(self.partition);
            }
            Slot::Queued(waiter) => {
                let semaphore = &self.shared().state.semaphore;
                if semaphore.leave(&waiter) {
                    semaphore.release(self.partition);
                }
            }
        }
    }
}

impl<C> Drop for Permit<C> {
    fn drop(&mut self) {
        if let Slot::Held(Some(sample)) = &self.slot {
            // Cancelled before its answer (a timeout further out, a caller gone): no outcome,
            // but the slot was busy all that time, which Little's law must count.
            self.shared().state.count_cancelled(sample.start);
        }
        self.release();
    }
}

/// Builds the rejection of a call the bulkhead had no slot for.
#[cold]
#[inline(never)]
pub(crate) fn reject<C>(
    shared: &Shared<C>,
    partition: Option<usize>,
    reason: RejectReason,
) -> BoxError {
    shared.state.rejected.increment(1);
    shared.state.count_rejected();
    shared.hooks.rejected(&shared.state, reason, partition);
    // A caller whose deadline passed (in the queue, say) ran out of its own time.
    let kind = match Deadline::current() {
        Some(deadline) if deadline.has_passed() => RejectionKind::DeadlineExceeded,
        _ => RejectionKind::BulkheadFull,
    };
    Rejected::new(kind, shared.state.name.clone()).into()
}

/// Holds a call's slot until its outcome is reported, then gives it back (and teaches the
/// adaptive limit). Dropped without a report, it gives the slot back and teaches nothing.
///
/// It appears in response types whose classifier waits for the end of the response body,
/// such as `GrpcCodes`, or any classifier after `BulkheadLayer::release_on_body_end`. While
/// the body waits for its reader, the slot goes back after `max_reader_idle` (see
/// [`BulkheadConfigBuilder::max_reader_idle`](crate::BulkheadConfigBuilder::max_reader_idle)).
pub struct Completion<C> {
    permit: Permit<C>,
    /// The time slice since which the body waits for its reader, while it does.
    reader_since: Option<u64>,
}

impl<C> Completion<C> {
    /// Takes over the permit of a call whose response head is going out: from now on the body
    /// waits for its reader.
    fn new(permit: Permit<C>) -> Self {
        let mut completion = Self {
            permit,
            reader_since: None,
        };
        completion.wait_for_reader();
        completion
    }

    fn wait_for_reader(&mut self) {
        if !matches!(self.permit.slot, Slot::Held(_)) {
            return;
        }
        let state = &self.permit.shared().state;
        let now = state.idle.now();
        if self.reader_since == Some(now) || !self.stop_waiting() {
            return;
        }
        let state = &self.permit.shared().state;
        state
            .idle
            .enter(self.permit.partition, now, &state.semaphore);
        self.reader_since = Some(now);
    }

    /// Stops counting the body as waiting for its reader; false if its slot was given back
    /// meanwhile, which the permit then forgets.
    fn stop_waiting(&mut self) -> bool {
        let Some(since) = self.reader_since.take() else {
            return true;
        };
        let state = &self.permit.shared().state;
        if state.idle.leave(self.permit.partition, since) {
            return true;
        }
        self.permit.forget();
        false
    }
}

impl<C> fmt::Debug for Completion<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("holds_slot", &matches!(self.permit.slot, Slot::Held(_)))
            .field("waits_for_reader", &self.reader_since.is_some())
            .finish()
    }
}

impl<C: Send + Sync + 'static> Report for Completion<C> {
    fn report(mut self, outcome: Outcome) {
        self.stop_waiting();
        self.permit.finish(outcome);
    }

    fn waiting_for_reader(&mut self) {
        self.wait_for_reader();
    }

    fn waiting_for_producer(&mut self) {
        self.stop_waiting();
    }
}

impl<C> Drop for Completion<C> {
    fn drop(&mut self) {
        // The permit, dropped next, releases the slot unless it was given back.
        self.stop_waiting();
    }
}
