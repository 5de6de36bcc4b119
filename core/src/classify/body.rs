use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

#[cfg(feature = "grpc")]
use super::codes::GrpcCodes;
use super::{Outcome, Report};

pin_project! {
    /// A response body that hands its call's outcome to a [`Report`] once: when the body
    /// ends, fails or is dropped.
    ///
    /// A server sees the end of a body in one of two ways: a poll that returns `None` (or a
    /// trailers frame), or `is_end_stream()` turning true after the last frame. hyper takes the
    /// second: it stops polling and drops the body, so both count as the end here, and so does
    /// dropping a body whose `is_end_stream()` is true. Dropped before its end (the client went
    /// away), the body reports [`Outcome::Ignored`], which says nothing of the downstream; an
    /// error from the inner body is a [`Outcome::Failure`]. Until then it tells the report whose
    /// turn it is after each poll ([`Report::waiting_for_reader`],
    /// [`Report::waiting_for_producer`]).
    pub struct ReportBody<B: Body, R: Report> {
        #[pin]
        inner: B,
        watch: Option<Watch<R>>,
    }

    impl<B: Body, R: Report> PinnedDrop for ReportBody<B, R> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(watch) = this.watch.take() {
                let outcome = if this.inner.is_end_stream() {
                    watch.verdict.at_end(None)
                } else {
                    Outcome::Ignored
                };
                watch.report.report(outcome);
            }
        }
    }
}

struct Watch<R> {
    report: R,
    verdict: Verdict,
}

/// How the outcome is decided at the end of the body.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Already decided by the response head; only its report waits for the end.
    Decided(Outcome),
    /// Decided by the `grpc-status` the stream ends with.
    #[cfg(feature = "grpc")]
    Grpc(GrpcCodes),
}

impl Verdict {
    #[cfg_attr(not(feature = "grpc"), allow(unused_variables))]
    fn at_end(self, trailers: Option<&HeaderMap>) -> Outcome {
        match self {
            Self::Decided(outcome) => outcome,
            #[cfg(feature = "grpc")]
            Self::Grpc(codes) => codes.at_end(trailers),
        }
    }
}

impl<B: Body, R: Report> ReportBody<B, R> {
    /// `inner`, reporting nothing.
    pub fn new(inner: B) -> Self {
        Self { inner, watch: None }
    }

    /// `inner`, reporting `outcome` to `report` when it ends, [`Outcome::Ignored`] if it is
    /// dropped before, or [`Outcome::Failure`] if it fails.
    pub fn reporting(inner: B, report: R, outcome: Outcome) -> Self {
        Self::watching(inner, report, Verdict::Decided(outcome))
    }

    /// `inner`, reporting to `report` the outcome of the `grpc-status` it ends with.
    #[cfg(feature = "grpc")]
    pub(crate) fn grpc(inner: B, report: R, codes: GrpcCodes) -> Self {
        Self::watching(inner, report, Verdict::Grpc(codes))
    }

    fn watching(inner: B, report: R, verdict: Verdict) -> Self {
        Self {
            inner,
            watch: Some(Watch { report, verdict }),
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body + fmt::Debug, R: Report> fmt::Debug for ReportBody<B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportBody")
            .field("inner", &self.inner)
            .field("reporting", &self.watch.is_some())
            .finish()
    }
}

impl<B: Body, R: Report> Body for ReportBody<B, R> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) else {
            if let Some(watch) = this.watch.as_mut() {
                watch.report.waiting_for_producer();
            }
            return Poll::Pending;
        };
        let Some(watch) = this.watch.as_mut() else {
            return Poll::Ready(frame);
        };
        let outcome = match &frame {
            Some(Ok(frame)) => match frame.trailers_ref() {
                Some(trailers) => Some(watch.verdict.at_end(Some(trailers))),
                None if this.inner.is_end_stream() => Some(watch.verdict.at_end(None)),
                None => None,
            },
            Some(Err(_)) => Some(Outcome::Failure),
            None => Some(watch.verdict.at_end(None)),
        };
        match outcome {
            None => watch.report.waiting_for_reader(),
            Some(outcome) => {
                if let Some(watch) = this.watch.take() {
                    watch.report.report(outcome);
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tests::Collect;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};

    fn full(report: &Collect, outcome: Outcome) -> ReportBody<Full<Bytes>, Collect> {
        ReportBody::reporting(
            Full::new(Bytes::from_static(b"hi")),
            report.clone(),
            outcome,
        )
    }

    #[tokio::test]
    async fn a_body_that_ends_with_its_last_frame_reports_with_that_frame() {
        // As hyper reads it: one frame, then `is_end_stream()`, never a poll for `None`.
        let c = Collect::default();
        let mut body = full(&c, Outcome::Failure);
        assert!(body.frame().await.unwrap().unwrap().is_data());
        assert!(body.is_end_stream());
        assert_eq!(c.outcomes(), [Outcome::Failure]);
        drop(body);
        assert_eq!(c.outcomes(), [Outcome::Failure], "reported once");
    }

    #[test]
    fn a_body_dropped_after_its_end_reports_its_outcome() {
        let c = Collect::default();
        drop(ReportBody::reporting(
            Empty::<Bytes>::new(),
            c.clone(),
            Outcome::Success,
        ));
        assert_eq!(c.outcomes(), [Outcome::Success]);
    }

    #[test]
    fn a_body_dropped_before_its_end_reports_ignored() {
        let c = Collect::default();
        drop(full(&c, Outcome::Success));
        assert_eq!(c.outcomes(), [Outcome::Ignored]);
    }

    #[tokio::test]
    async fn a_body_polled_to_its_end_reports_once() {
        let c = Collect::default();
        let body = full(&c, Outcome::Success);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
        assert_eq!(c.outcomes(), [Outcome::Success]);
    }

    /// Records the turns a body reports.
    struct Turns(std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>);

    impl Report for Turns {
        fn report(self, outcome: Outcome) {
            self.0.lock().unwrap().push(outcome.as_str());
        }

        fn waiting_for_reader(&mut self) {
            self.0.lock().unwrap().push("reader");
        }

        fn waiting_for_producer(&mut self) {
            self.0.lock().unwrap().push("producer");
        }
    }

    #[tokio::test]
    async fn the_body_says_whose_turn_it_is() {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, std::io::Error>>();
        let mut body = ReportBody::reporting(
            http_body_util::StreamBody::new(rx),
            Turns(log.clone()),
            Outcome::Success,
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(*log.lock().unwrap(), ["producer", "reader", "success"]);
    }

    #[tokio::test]
    async fn an_unwatched_body_passes_frames_through() {
        let body = ReportBody::<_, Collect>::new(Full::new(Bytes::from_static(b"hi")));
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
    }
}
