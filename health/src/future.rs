//! The response future of [`HealthService`](crate::HealthService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use seawall_core::classify::{Classify, Outcome, Report};
use tokio::time::Instant;

use crate::service::Shared;
use crate::window::RateWindow;

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
        let start = shared.window.config().slow_call.map(|_| Instant::now());
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
        let slow = match (self.start, self.window.config().slow_call) {
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

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    C: Classify<Res, E>,
{
    type Output = Result<C::Response<CallReport>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let report = CallReport {
            window: this.shared.window.clone(),
            start: *this.start,
        };
        Poll::Ready(this.shared.classifier.report(result, report))
    }
}
