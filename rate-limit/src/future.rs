//! The response future of [`RateLimit`](crate::RateLimit), and the round trip of a
//! fleet-wide limit ([`Ask`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use seawall_core::BoxError;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::Service;

use crate::limiter::{Check, Decision, Limiter};
use crate::state::Shared;

pub use crate::fleet::Ask;

pin_project! {
    /// A call through a rate limit: the inner call once admitted, a wait for a permit, a round
    /// trip to a fleet-wide limit's store, or a rejection that is ready at once.
    ///
    /// A waiting call holds no permit: dropping it takes nothing from the quota and records
    /// nothing.
    ///
    /// `F` (the inner service's future), `K` (the limiter's key) and `A` (its round trip) are
    /// parameters rather than bounds, so that whether the future is `Send` depends only on
    /// what it holds, also in a spawned `async` block.
    pub struct ResponseFuture<
        S,
        Req,
        L,
        F = <S as Service<Req>>::Future,
        K = <L as Limiter<Req>>::Key,
        A = <L as Limiter<Req>>::Ask,
    > {
        #[pin]
        state: State<S, Req, L, F, K, A>,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<S, Req, L, F, K, A> {
        Called {
            #[pin]
            future: F,
        },
        Waiting {
            #[pin]
            sleep: Sleep,
            call: Parked<S, Req, L, K>,
        },
        Asking {
            #[pin]
            ask: A,
            call: Parked<S, Req, L, K>,
        },
        Rejected {
            error: Option<BoxError>,
        },
        Done,
    }
}

/// A call waiting for a permit or the store's answer, with the ready service that will take
/// it.
struct Parked<S, Req, L, K> {
    service: S,
    request: Req,
    key: K,
    started: Instant,
    /// Until when the call may wait for a permit.
    deadline: Instant,
    /// Whether it has waited for one.
    waited: bool,
    shared: Arc<Shared<L>>,
}

impl<S, Req, L, K> Parked<S, Req, L, K> {
    fn new(service: S, request: Req, key: K, max_wait: Duration, shared: Arc<Shared<L>>) -> Self {
        let started = Instant::now();
        Self {
            service,
            request,
            key,
            started,
            deadline: started + max_wait,
            waited: false,
            shared,
        }
    }
}

impl<S, Req, L> ResponseFuture<S, Req, L>
where
    S: Service<Req>,
    L: Limiter<Req>,
{
    pub(crate) fn called(future: S::Future) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn waiting(
        service: S,
        request: Req,
        key: L::Key,
        wait: Duration,
        max_wait: Duration,
        shared: Arc<Shared<L>>,
    ) -> Self {
        let mut call = Parked::new(service, request, key, max_wait, shared);
        call.waited = true;
        Self {
            state: State::Waiting {
                sleep: sleep_until(call.started + wait),
                call,
            },
        }
    }

    pub(crate) fn asking(
        service: S,
        request: Req,
        key: L::Key,
        ask: L::Ask,
        max_wait: Duration,
        shared: Arc<Shared<L>>,
    ) -> Self {
        Self {
            state: State::Asking {
                ask,
                call: Parked::new(service, request, key, max_wait, shared),
            },
        }
    }
}

impl<S, Req, L, F, K, A> fmt::Debug for ResponseFuture<S, Req, L, F, K, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Asking { .. } => "asking",
            State::Rejected { .. } => "rejected",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// What a parked call does next.
enum Next<A> {
    Call,
    Wait(Instant),
    Ask(A),
    Fail(BoxError),
}

impl<S, Req, L, K> Parked<S, Req, L, K> {
    /// What follows from a decision about this call.
    fn next<A>(&self, check: Check<A>) -> Next<A> {
        match check {
            Check::Permit => Next::Call,
            Check::Ask(ask) => Next::Ask(ask),
            Check::Unavailable(retry_after) => Next::Fail(self.shared.unavailable(retry_after)),
            // Another caller took the permit; wait again if the deadline allows.
            Check::Limited(wait) => match Instant::now().checked_add(wait) {
                Some(at) if at <= self.deadline => Next::Wait(at),
                _ => Next::Fail(self.shared.reject(wait)),
            },
        }
    }
}

impl<A> From<Decision> for Check<A> {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Permit => Check::Permit,
            Decision::Limited(wait) => Check::Limited(wait),
            Decision::Unavailable(wait) => Check::Unavailable(wait),
        }
    }
}

impl<S, Req, L> Future for ResponseFuture<S, Req, L>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    L: Limiter<Req>,
{
    type Output = Result<S::Response, BoxError>;

    // An admitted call's poll is inlined into the caller's and the other states' kept out of
    // line: the whole state machine, polled out of line, was 38 instructions a call, its
    // prologue alone 13 (callgrind, `benches/callgrind.sh rate-limit`).
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        if let StateProj::Called { future } = state.as_mut().project() {
            return future.poll(cx).map_err(Into::into);
        }
        poll_not_called(state, cx)
    }
}

/// The state of a call through `S` limited by `L`.
type StateOf<S, Req, L> = State<
    S,
    Req,
    L,
    <S as Service<Req>>::Future,
    <L as Limiter<Req>>::Key,
    <L as Limiter<Req>>::Ask,
>;

#[cold]
#[inline(never)]
fn poll_not_called<S, Req, L>(
    mut state: Pin<&mut StateOf<S, Req, L>>,
    cx: &mut Context<'_>,
) -> Poll<Result<S::Response, BoxError>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    L: Limiter<Req>,
{
    loop {
        let next = match state.as_mut().project() {
            StateProj::Called { future } => return future.poll(cx).map_err(Into::into),
            StateProj::Waiting { mut sleep, call } => {
                ready!(sleep.as_mut().poll(cx));
                match call.next(call.shared.limiter.check(&call.key)) {
                    Next::Wait(at) => {
                        sleep.reset(at);
                        continue;
                    }
                    next => next,
                }
            }
            StateProj::Asking { ask, call } => {
                let decision = ready!(ask.poll(cx));
                call.next(decision.into())
            }
            StateProj::Rejected { error } => {
                let error = error
                    .take()
                    .expect("ResponseFuture polled after completion");
                return Poll::Ready(Err(error));
            }
            StateProj::Done => panic!("ResponseFuture polled after completion"),
        };
        let mut call = match state.as_mut().project_replace(State::Done) {
            StateReplace::Waiting { call, .. } | StateReplace::Asking { call, .. } => call,
            _ => unreachable!("only parked calls go on"),
        };
        match next {
            Next::Call => {
                if call.waited {
                    call.shared.admitted_after(call.started.elapsed());
                } else {
                    call.shared.admitted();
                }
                state.set(State::Called {
                    future: call.service.call(call.request),
                });
            }
            Next::Wait(at) => {
                call.waited = true;
                state.set(State::Waiting {
                    sleep: sleep_until(at),
                    call,
                });
            }
            Next::Ask(ask) => state.set(State::Asking { ask, call }),
            Next::Fail(error) => return Poll::Ready(Err(error)),
        }
    }
}
