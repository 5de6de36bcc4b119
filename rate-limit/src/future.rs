//! The response future of [`RateLimit`](crate::RateLimit).

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

use crate::limiter::Limiter;
use crate::service::Shared;

pin_project! {
    /// A call through a rate limit: the inner call once admitted, a wait for a permit, or a
    /// rejection that is ready at once.
    ///
    /// A waiting call holds no permit: dropping it takes nothing from the quota and records
    /// nothing.
    ///
    /// `F` (the inner service's future) and `K` (the limiter's key) are parameters rather than
    /// bounds, so that whether the future is `Send` depends only on what it holds, also in a
    /// spawned `async` block.
    pub struct ResponseFuture<
        S,
        Req,
        L,
        F = <S as Service<Req>>::Future,
        K = <L as Limiter<Req>>::Key,
    > {
        #[pin]
        state: State<S, Req, L, F, K>,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<S, Req, L, F, K> {
        Called {
            #[pin]
            future: F,
        },
        Waiting {
            #[pin]
            sleep: Sleep,
            call: Parked<S, Req, L, K>,
        },
        Rejected {
            error: Option<BoxError>,
        },
        Done,
    }
}

/// A call waiting for a permit, with the ready service that will take it.
struct Parked<S, Req, L, K> {
    service: S,
    request: Req,
    key: K,
    started: Instant,
    deadline: Instant,
    shared: Arc<Shared<L>>,
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
        let started = Instant::now();
        Self {
            state: State::Waiting {
                sleep: sleep_until(started + wait),
                call: Parked {
                    service,
                    request,
                    key,
                    started,
                    deadline: started + max_wait,
                    shared,
                },
            },
        }
    }
}

impl<S, Req, L, F, K> fmt::Debug for ResponseFuture<S, Req, L, F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Rejected { .. } => "rejected",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, Req, L> Future for ResponseFuture<S, Req, L>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    L: Limiter<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Called { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Waiting { mut sleep, call } => {
                    ready!(sleep.as_mut().poll(cx));
                    match call.shared.limiter.check(&call.key) {
                        Ok(()) => {
                            let StateReplace::Waiting { call, .. } =
                                state.as_mut().project_replace(State::Done)
                            else {
                                unreachable!("the state was Waiting")
                            };
                            let Parked {
                                mut service,
                                request,
                                started,
                                shared,
                                ..
                            } = call;
                            shared.admitted_after(started.elapsed());
                            state.set(State::Called {
                                future: service.call(request),
                            });
                        }
                        Err(wait) => {
                            // Another caller took the permit; wait again if the deadline allows.
                            let now = Instant::now();
                            match now.checked_add(wait) {
                                Some(at) if at <= call.deadline => sleep.reset(at),
                                _ => {
                                    let error = call.shared.reject(wait);
                                    state.set(State::Done);
                                    return Poll::Ready(Err(error));
                                }
                            }
                        }
                    }
                }
                StateProj::Rejected { error } => {
                    let error = error
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}
