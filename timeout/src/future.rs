//! The response future of [`Timeout`](crate::Timeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use seawall_core::{BoxError, Rejected, RejectionKind};
use tokio::time::{Sleep, sleep};

use crate::deadline::{Budget, Deadline};
use crate::layer::TimedOutEvent;
use crate::service::Shared;

pin_project! {
    /// The inner call, raced against its timeout.
    ///
    /// The timer starts when the inner call first returns `Pending`: a call that answers on its
    /// first poll (a cache hit, a rejection from an inner layer) never touches the clock or the
    /// timer wheel.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        timeout: Duration,
        deadline: Option<Deadline>,
        shared: Arc<Shared>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, budget: Budget, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            sleep: None,
            timeout: budget.timeout,
            deadline: budget.deadline,
            shared,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let polled = match *this.deadline {
            Some(deadline) => deadline.scope(|| this.inner.as_mut().poll(cx)),
            None => this.inner.as_mut().poll(cx),
        };
        if let Poll::Ready(result) = polled {
            this.shared.completed.increment(1);
            return Poll::Ready(result.map_err(Into::into));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(sleep(*this.timeout)));
        }
        if let Some(timer) = this.sleep.as_pin_mut() {
            ready!(timer.poll(cx));
        }
        Poll::Ready(Err(timed_out(this.shared, *this.timeout)))
    }
}

#[cold]
#[inline(never)]
fn timed_out(shared: &Shared, timeout: Duration) -> BoxError {
    shared.timed_out.increment(1);
    tracing::debug!(name = %shared.name, ?timeout, "call timed out");
    if let Some(hook) = &shared.on_timeout {
        hook(TimedOutEvent {
            name: &shared.name,
            timeout,
        });
    }
    Rejected::new(RejectionKind::TimedOut, shared.name.clone()).into()
}
