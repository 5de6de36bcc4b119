//! Holding a call's slot until its HTTP response body ends.
//!
//! A handler that streams a large body keeps working (and the downstream it reads from keeps
//! serving) long after the response head went out. Counting it as finished at the head lets
//! the bulkhead admit more streams than it was meant to.
//!
//! The body is seawall-core's `ReportBody`, which sees the end of a body as hyper does: hyper
//! stops polling and drops a body once `is_end_stream()` is true after a frame, so the call's
//! outcome (and a sample for an adaptive limit) is reported then, not only on a poll that
//! returns `None`.

use std::fmt;
use std::sync::Arc;

use http::Response;
use http_body::Body;
use seawall_core::classify::{Classified, Classify, Outcome, Report, ReportBody};

/// A classifier that defers every response's outcome to the end of its body; made by
/// [`BulkheadLayer::release_on_body_end`](crate::BulkheadLayer::release_on_body_end).
///
/// The outcome itself comes from the wrapped classifier, judged on the response head; a
/// classifier that reads trailers (`GrpcCodes`) already waits for the end of the stream and
/// needs no wrapping.
pub struct BodyEnd<C> {
    inner: Arc<C>,
}

impl<C> BodyEnd<C> {
    pub(crate) fn new(inner: Arc<C>) -> Self {
        Self { inner }
    }
}

impl<C> fmt::Debug for BodyEnd<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyEnd").finish_non_exhaustive()
    }
}

impl<B, E, C> Classify<Response<B>, E> for BodyEnd<C>
where
    B: Body,
    C: Classify<Response<B>, E>,
{
    type Response<R: Report> = Response<ReportBody<B, R>>;

    fn classify(&self, result: Result<&Response<B>, &E>) -> Classified {
        match result {
            Ok(response) if response.body().is_end_stream() => self.inner.classify(Ok(response)),
            Ok(_) => Classified::AtEndOfStream,
            Err(err) => self.inner.classify(Err(err)),
        }
    }

    fn watch<R: Report>(&self, response: Response<B>, report: Option<R>) -> Self::Response<R> {
        let Some(report) = report else {
            return response.map(ReportBody::new);
        };
        let outcome = match self.inner.classify(Ok(&response)) {
            Classified::Now(outcome) => outcome,
            Classified::AtEndOfStream => Outcome::Success,
        };
        response.map(|inner| ReportBody::reporting(inner, report, outcome))
    }

    fn mark_endpoint_fault(&self, response: &mut Response<B>) {
        self.inner.mark_endpoint_fault(response);
    }

    fn has_endpoint_fault(&self, response: &Response<B>) -> bool {
        self.inner.has_endpoint_fault(response)
    }
}

/// The body of responses after [`BulkheadLayer::release_on_body_end`](crate::BulkheadLayer::release_on_body_end).
#[deprecated(note = "seawall-core's `ReportBody`, which every end-of-body report now shares")]
pub type HoldBody<B, R> = ReportBody<B, R>;
