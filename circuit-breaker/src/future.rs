//! The response future of [`CircuitBreaker`](crate::CircuitBreaker) and the report that
//! carries a call's outcome back to its breaker.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use seawall_core::classify::{Classified, Classify, Outcome, Report, endpoint_fault};
use seawall_core::{BoxError, rejected};
use tokio::time::Instant;

use crate::breaker::{Breaker, Permit};
use crate::retry_after::RetryAfter;

/// The classifier and Retry-After reader of one layer.
pub(crate) struct Policy<C, H> {
    pub(crate) classify: C,
    pub(crate) retry_after: H,
}

/// Hands one call's outcome to its breaker, exactly once; dropped unreported (the call was
/// cancelled), it frees the call's probe slot and records nothing.
///
/// It travels inside a response body when the outcome is only known at the end of a stream
/// (gRPC trailers).
pub struct CallReport {
    breaker: Arc<Breaker>,
    permit: Permit,
    start: Option<Instant>,
    hint: Option<Duration>,
    done: bool,
}

impl CallReport {
    pub(crate) fn new(breaker: Arc<Breaker>, permit: Permit) -> Self {
        // Timed only when a slow-call rule or an observer wants the duration: the clock read
        // is most of an untimed call's cost.
        let start = breaker.times_calls().then(Instant::now);
        Self {
            breaker,
            permit,
            start,
            hint: None,
            done: false,
        }
    }
}

impl Report for CallReport {
    fn report(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker
            .record(self.permit, outcome, self.start, self.hint);
    }
}

impl Drop for CallReport {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.cancel(self.permit);
        }
    }
}

impl fmt::Debug for CallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallReport")
            .field("name", self.breaker.name())
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The inner call, whose outcome goes to the breaker when it completes; or the breaker's
    /// rejection, ready at once.
    pub struct ResponseFuture<F, C, H> {
        #[pin]
        state: State<F, C, H>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C, H> {
        Called {
            #[pin]
            inner: F,
            report: Option<CallReport>,
            policy: Arc<Policy<C, H>>,
        },
        Rejected {
            error: Option<BoxError>,
        },
    }
}

impl<F, C, H> ResponseFuture<F, C, H> {
    pub(crate) fn called(inner: F, report: CallReport, policy: Arc<Policy<C, H>>) -> Self {
        Self {
            state: State::Called {
                inner,
                report: Some(report),
                policy,
            },
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }
}

impl<F, C, H> fmt::Debug for ResponseFuture<F, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Called { report, .. } => f
                .debug_struct("ResponseFuture")
                .field("report", report)
                .finish_non_exhaustive(),
            State::Rejected { error } => f
                .debug_struct("ResponseFuture")
                .field("rejected", error)
                .finish(),
        }
    }
}

impl<F, C, H, T, E> Future for ResponseFuture<F, C, H>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
    H: RetryAfter<T, BoxError>,
{
    type Output = Result<C::Response<CallReport>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called {
                inner,
                report,
                policy,
            } => {
                let result = ready!(inner.poll(cx)).map_err(Into::into);
                let mut report = report
                    .take()
                    .expect("ResponseFuture polled after completion");
                let result = match result {
                    // Stopped further in before it reached the downstream: no evidence.
                    Err(err)
                        if rejected(&*err).is_some_and(|r| !r.kind().is_downstream_failure()) =>
                    {
                        report.report(Outcome::Ignored);
                        return Poll::Ready(Err(err));
                    }
                    result => result,
                };
                report.hint = policy.retry_after.retry_after(result.as_ref());
                let mut classified = policy.classify.classify(result.as_ref());
                if classified == Classified::Now(Outcome::Failure)
                    && endpoint_fault(&policy.classify, result.as_ref())
                {
                    classified = Classified::Now(report.breaker.endpoint_fault());
                }
                // A probe is scored on its response head. Its outcome at the end of a stream
                // (a server-streaming call, a long download) may be hours away, and until then
                // it would hold a half-open slot and keep every other call out. A head that
                // leaves the outcome to the end of the stream shows no failure: a success.
                if report.permit.is_probe()
                    && let Ok(response) = result
                {
                    let outcome = match classified {
                        Classified::Now(outcome) => outcome,
                        Classified::AtEndOfStream => Outcome::Success,
                    };
                    report.report(outcome);
                    return Poll::Ready(Ok(policy.classify.watch(response, None)));
                }
                Poll::Ready(
                    policy
                        .classify
                        .report_classified(classified, result, report),
                )
            }
            StateProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
