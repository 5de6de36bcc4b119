//! Holding a call's slot until its HTTP response body ends.
//!
//! A handler that streams a large body keeps working (and the downstream it reads from keeps
//! serving) long after the response head went out. Counting it as finished at the head lets
//! the bulkhead admit more streams than it was meant to.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use seawall_core::classify::{Classified, Classify, Outcome, Report};

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
    type Response<R: Report> = Response<HoldBody<B, R>>;

    fn classify(&self, result: Result<&Response<B>, &E>) -> Classified {
        match result {
            Ok(response) if response.body().is_end_stream() => self.inner.classify(Ok(response)),
            Ok(_) => Classified::AtEndOfStream,
            Err(err) => self.inner.classify(Err(err)),
        }
    }

    fn watch<R: Report>(&self, response: Response<B>, report: Option<R>) -> Self::Response<R> {
        let hold = report.map(|report| Hold {
            outcome: match self.inner.classify(Ok(&response)) {
                Classified::Now(outcome) => outcome,
                Classified::AtEndOfStream => Outcome::Success,
            },
            report,
        });
        response.map(|inner| HoldBody { inner, hold })
    }
}

struct Hold<R> {
    outcome: Outcome,
    report: R,
}

pin_project! {
    /// A response body that reports its call's outcome (and so gives the bulkhead slot back)
    /// when it ends, fails or is dropped.
    pub struct HoldBody<B, R: Report> {
        #[pin]
        inner: B,
        hold: Option<Hold<R>>,
    }

    impl<B, R: Report> PinnedDrop for HoldBody<B, R> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(hold) = this.project().hold.take() {
                // Dropped before its end: the client went away, which says nothing of the
                // downstream.
                hold.report.report(Outcome::Ignored);
            }
        }
    }
}

impl<B, R: Report> HoldBody<B, R> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: fmt::Debug, R: Report> fmt::Debug for HoldBody<B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HoldBody")
            .field("inner", &self.inner)
            .field("holding", &self.hold.is_some())
            .finish()
    }
}

impl<B: Body, R: Report> Body for HoldBody<B, R> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let end = match &frame {
            None => this.hold.take().map(|hold| (hold, None)),
            Some(Err(_)) => this.hold.take().map(|hold| (hold, Some(Outcome::Failure))),
            Some(Ok(_)) => None,
        };
        if let Some((hold, outcome)) = end {
            hold.report.report(outcome.unwrap_or(hold.outcome));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
