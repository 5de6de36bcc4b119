//! The response future of [`HealthService`](crate::HealthService).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use seawall_core::classify::{Classify, Outcome, Report};
use seawall_core::{BoxError, Rejected, rejected};
use tokio::time::Instant;

use crate::window::{RateWindow, Shared};

pin_project! {
    /// The inner call; its outcome is counted when it ends (or its body does).
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: F,
        shared: Arc<Shared<C>>,
        start: Option<Instant>,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(inner: F, shared: Arc<Shared<C>>) -> Self {
        // The clock is read only when latency counts.
        let start = shared
            .window
            .config()
            .slow_call_duration
            .map(|_| Instant::now());
        Self {
            inner,
            shared,
            start,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// Counts one call's outcome into its window.
pub struct CallReport {
    window: Arc<RateWindow>,
    start: Option<Instant>,
}

impl fmt::Debug for CallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallReport").finish_non_exhaustive()
    }
}

impl Report for CallReport {
    fn report(self, outcome: Outcome) {
        let slow = match (self.start, self.window.config().slow_call_duration) {
            (Some(start), Some(threshold)) => start.elapsed() > threshold,
            _ => false,
        };
        match outcome {
            // Shedding load (ours or the downstream's) is not our service failing.
            Outcome::Ignored | Outcome::Overload => {}
            Outcome::Failure => self.window.record(true),
            Outcome::Success => self.window.record(slow),
        }
    }
}

/// Whether `err` is a [`Rejected`] that says nothing about the downstream: load the stack shed
/// itself (a rate limit, a full bulkhead, an open breaker). Counting those would let a client
/// flooding past the rate limit make the service unready, and the load balancer pull it.
fn is_shed_load<E: 'static>(err: &E) -> bool {
    let err: &dyn Any = err;
    let rejection = match err.downcast_ref::<BoxError>() {
        Some(boxed) => rejected(&**boxed),
        None => err.downcast_ref::<Rejected>(),
    };
    rejection.is_some_and(|r| !r.kind().is_downstream_failure())
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    C: Classify<Res, E>,
    E: 'static,
{
    type Output = Result<C::Response<CallReport>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let report = CallReport {
            window: this.shared.window.clone(),
            start: *this.start,
        };
        match result {
            Err(err) if is_shed_load(&err) => {
                report.report(Outcome::Ignored);
                Poll::Ready(Err(err))
            }
            result => Poll::Ready(this.shared.classifier.report(result, report)),
        }
    }
}
