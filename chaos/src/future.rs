//! The response future of [`Chaos`](crate::Chaos).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use seawall_core::BoxError;
use tokio::time::{Instant, Sleep, sleep_until};

pin_project! {
    /// A call as the chaos layer let it go: through, delayed, answered at once, or never.
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        Call { #[pin] fut: F },
        Delayed { #[pin] sleep: Sleep, #[pin] fut: F },
        Ready { result: Option<Result<T, BoxError>> },
        Hang,
    }
}

impl<F, T> ResponseFuture<F, T> {
    pub(crate) fn call(fut: F) -> Self {
        Self {
            state: State::Call { fut },
        }
    }

    pub(crate) fn delayed(fut: F, until: Instant) -> Self {
        Self {
            state: State::Delayed {
                sleep: sleep_until(until),
                fut,
            },
        }
    }

    pub(crate) fn ready(result: Result<T, BoxError>) -> Self {
        Self {
            state: State::Ready {
                result: Some(result),
            },
        }
    }

    pub(crate) fn hang() -> Self {
        Self { state: State::Hang }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Call { .. } => "call",
            State::Delayed { .. } => "delayed",
            State::Ready { .. } => "ready",
            State::Hang => "hang",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Call { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Delayed { sleep, fut } => {
                ready!(sleep.poll(cx));
                fut.poll(cx).map_err(Into::into)
            }
            StateProj::Ready { result } => {
                Poll::Ready(result.take().expect("polled after completion"))
            }
            // A hang never answers and never wakes: only its caller's timeout or cancellation
            // ends it.
            StateProj::Hang => Poll::Pending,
        }
    }
}
