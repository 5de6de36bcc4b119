use std::fmt;

use http::{HeaderMap, Response, StatusCode};
use tonic::Code;

use super::{Classified, Classify, Outcome, Report, ReportBody};
use crate::grpc::RETRY_PUSHBACK_MS;

/// Classifies gRPC responses by status code, from the headers of a trailers-only response or
/// from the trailers at the end of the stream.
///
/// By default `UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS` are
/// failures, `CANCELLED` counts for nothing and the other codes (the caller's own mistakes,
/// such as `NOT_FOUND` or `INVALID_ARGUMENT`) are successes: they say nothing bad about the
/// server. A non-200 HTTP status or an error is a failure.
///
/// Overload is not failure: `RESOURCE_EXHAUSTED` (a quota, a full queue) and an `UNAVAILABLE`
/// that carries `grpc-retry-pushback-ms` (the server names when to come back, as gRPC's
/// retry design A6 has it) are [`Outcome::Overload`] by default. Any code can be moved to any
/// class with [`with_failure`](Self::with_failure), [`with_overload`](Self::with_overload),
/// [`with_overload_on_pushback`](Self::with_overload_on_pushback),
/// [`with_success`](Self::with_success) and [`ignoring`](Self::ignoring).
///
/// A stream that ends without a `grpc-status` (a proxy or load balancer cut it short), or with
/// one that is not a number, ends as tonic's client reports it: `UNKNOWN`, a failure by default.
///
/// When the status comes in trailers, the response body is wrapped in a [`ReportBody`] that
/// reports the outcome once, when the trailers arrive or the stream ends; a body dropped before
/// its end reports [`Outcome::Ignored`].
///
/// ```
/// use seawall_core::classify::{GrpcCodes, Outcome};
/// use tonic::Code;
///
/// let codes = GrpcCodes::new();
/// assert_eq!(codes.outcome(Code::ResourceExhausted), Outcome::Overload);
/// assert_eq!(codes.outcome(Code::Unavailable), Outcome::Failure);
/// assert_eq!(codes.outcome_with_pushback(Code::Unavailable), Outcome::Overload);
/// assert_eq!(
///     codes.with_failure(Code::ResourceExhausted).outcome(Code::ResourceExhausted),
///     Outcome::Failure
/// );
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrpcCodes {
    failures: u32,
    overload: u32,
    /// Codes that are overload when they carry a retry pushback, whatever their class.
    pushback: u32,
    ignored: u32,
}

impl Default for GrpcCodes {
    fn default() -> Self {
        Self::new()
    }
}

const fn bit(code: Code) -> u32 {
    1 << (code as i32 as u32)
}

impl GrpcCodes {
    /// The default failure, overload and ignored sets.
    pub const fn new() -> Self {
        Self {
            failures: bit(Code::Unknown)
                | bit(Code::DeadlineExceeded)
                | bit(Code::Internal)
                | bit(Code::Unavailable)
                | bit(Code::DataLoss),
            overload: bit(Code::ResourceExhausted),
            pushback: bit(Code::Unavailable),
            ignored: bit(Code::Cancelled),
        }
    }

    /// Counts `code` as a failure, with or without a retry pushback.
    #[must_use]
    pub const fn with_failure(mut self, code: Code) -> Self {
        self = self.with_success(code);
        self.failures |= bit(code);
        self
    }

    /// Counts `code` as [`Outcome::Overload`]: the server asks for less load.
    #[must_use]
    pub const fn with_overload(mut self, code: Code) -> Self {
        self = self.with_success(code);
        self.overload |= bit(code);
        self
    }

    /// Counts `code` as [`Outcome::Overload`] when it carries `grpc-retry-pushback-ms`, and as
    /// its class says otherwise.
    #[must_use]
    pub const fn with_overload_on_pushback(mut self, code: Code) -> Self {
        self.pushback |= bit(code);
        self
    }

    /// Counts `code` as neither success nor failure.
    #[must_use]
    pub const fn ignoring(mut self, code: Code) -> Self {
        self = self.with_success(code);
        self.ignored |= bit(code);
        self
    }

    /// Counts `code` as a success.
    #[must_use]
    pub const fn with_success(mut self, code: Code) -> Self {
        let b = bit(code);
        self.failures &= !b;
        self.overload &= !b;
        self.pushback &= !b;
        self.ignored &= !b;
        self
    }

    /// The outcome of a call that ended with `code` and no retry pushback.
    pub fn outcome(&self, code: Code) -> Outcome {
        let b = bit(code);
        if self.failures & b != 0 {
            Outcome::Failure
        } else if self.overload & b != 0 {
            Outcome::Overload
        } else if self.ignored & b != 0 {
            Outcome::Ignored
        } else {
            Outcome::Success
        }
    }

    /// The outcome of a call that ended with `code` and a `grpc-retry-pushback-ms`.
    pub fn outcome_with_pushback(&self, code: Code) -> Outcome {
        if self.pushback & bit(code) != 0 {
            Outcome::Overload
        } else {
            self.outcome(code)
        }
    }

    /// The outcome of a call whose status is in `metadata`, if it is there.
    fn outcome_of(&self, metadata: &HeaderMap) -> Option<Outcome> {
        let code = status_of(metadata)?;
        Some(if metadata.contains_key(RETRY_PUSHBACK_MS) {
            self.outcome_with_pushback(code)
        } else {
            self.outcome(code)
        })
    }

    /// The outcome of a stream that ended with `trailers`.
    pub(crate) fn at_end(&self, trailers: Option<&HeaderMap>) -> Outcome {
        trailers
            .and_then(|trailers| self.outcome_of(trailers))
            .unwrap_or_else(|| self.outcome(Code::Unknown))
    }
}

/// The `grpc-status` in `headers`, read as tonic reads it (anything but a known code is
/// `UNKNOWN`).
fn status_of(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|status| Code::from_bytes(status.as_bytes()))
}

impl fmt::Debug for GrpcCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |mask: u32| {
            (0..=16)
                .map(Code::from_i32)
                .filter(move |code| mask & bit(*code) != 0)
        };
        f.debug_struct("GrpcCodes")
            .field("failures", &set(self.failures).collect::<Vec<_>>())
            .field("overload", &set(self.overload).collect::<Vec<_>>())
            .field(
                "overload_on_pushback",
                &set(self.pushback).collect::<Vec<_>>(),
            )
            .field("ignored", &set(self.ignored).collect::<Vec<_>>())
            .finish()
    }
}

impl<B, E> Classify<Response<B>, E> for GrpcCodes
where
    B: http_body::Body + 'static,
    E: 'static,
{
    type Response<R: Report> = Response<ReportBody<B, R>>;

    fn classify(&self, result: Result<&Response<B>, &E>) -> Classified {
        let response = match result {
            Ok(response) => response,
            Err(_) => return Classified::Now(Outcome::Failure),
        };
        if response.status() != StatusCode::OK {
            return Classified::Now(Outcome::Failure);
        }
        match self.outcome_of(response.headers()) {
            Some(outcome) => Classified::Now(outcome),
            None => Classified::AtEndOfStream,
        }
    }

    fn watch<R: Report>(&self, response: Response<B>, report: Option<R>) -> Self::Response<R> {
        let report = report.and_then(|report| match self.outcome_of(response.headers()) {
            Some(outcome) => {
                report.report(outcome);
                None
            }
            None => Some(report),
        });
        response.map(|inner| match report {
            Some(report) => ReportBody::grpc(inner, report, *self),
            None => ReportBody::new(inner),
        })
    }
}

/// The body type of responses [`GrpcCodes`] watches.
#[deprecated(note = "renamed `ReportBody`, which every end-of-body report now shares")]
pub type GrpcBody<B, R> = ReportBody<B, R>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tests::Collect;
    use bytes::Bytes;
    use http_body::{Body, Frame};
    use http_body_util::{BodyExt, Full, StreamBody};

    fn trailers_only(code: Code) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::default());
        res.headers_mut()
            .insert("grpc-status", (code as i32).to_string().parse().unwrap());
        res
    }

    type Frames =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>;

    fn streaming(trailer: Option<Code>) -> Response<Frames> {
        let mut frames = vec![Ok(Frame::data(Bytes::from_static(b"msg")))];
        if let Some(code) = trailer {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", (code as i32).to_string().parse().unwrap());
            frames.push(Ok(Frame::trailers(t)));
        }
        Response::new(StreamBody::new(futures::stream::iter(frames)))
    }

    fn classify_now(codes: GrpcCodes, code: Code) -> Vec<Outcome> {
        let c = Collect::default();
        let _ = Classify::<_, ()>::report(&codes, Ok(trailers_only(code)), c.clone());
        c.outcomes()
    }

    #[test]
    fn trailers_only_responses_are_classified_at_once() {
        let codes = GrpcCodes::default();
        assert_eq!(classify_now(codes, Code::Ok), [Outcome::Success]);
        assert_eq!(classify_now(codes, Code::Unavailable), [Outcome::Failure]);
        assert_eq!(classify_now(codes, Code::NotFound), [Outcome::Success]);
        assert_eq!(classify_now(codes, Code::Cancelled), [Outcome::Ignored]);
        assert_eq!(
            classify_now(
                codes.with_failure(Code::ResourceExhausted),
                Code::ResourceExhausted
            ),
            [Outcome::Failure]
        );
        assert_eq!(
            classify_now(codes.with_success(Code::Internal), Code::Internal),
            [Outcome::Success]
        );
    }

    #[test]
    fn resource_exhausted_and_pushed_back_unavailable_are_overload() {
        let codes = GrpcCodes::default();
        assert_eq!(
            classify_now(codes, Code::ResourceExhausted),
            [Outcome::Overload]
        );
        let mut pushed_back = trailers_only(Code::Unavailable);
        pushed_back
            .headers_mut()
            .insert(RETRY_PUSHBACK_MS, "250".parse().unwrap());
        let c = Collect::default();
        let _ = Classify::<_, ()>::report(&codes, Ok(pushed_back), c.clone());
        assert_eq!(c.outcomes(), [Outcome::Overload]);
        // A pushback on a code outside the pushback set changes nothing.
        let mut internal = trailers_only(Code::Internal);
        internal
            .headers_mut()
            .insert(RETRY_PUSHBACK_MS, "250".parse().unwrap());
        let _ = Classify::<_, ()>::report(&codes, Ok(internal), c.clone());
        assert_eq!(c.outcomes()[1], Outcome::Failure);
    }

    #[test]
    fn overload_codes_are_configurable() {
        let strict = GrpcCodes::new()
            .with_failure(Code::ResourceExhausted)
            .with_failure(Code::Unavailable);
        assert_eq!(strict.outcome(Code::ResourceExhausted), Outcome::Failure);
        assert_eq!(
            strict.outcome_with_pushback(Code::Unavailable),
            Outcome::Failure
        );
        let lenient = GrpcCodes::new()
            .with_overload(Code::Unavailable)
            .with_success(Code::ResourceExhausted)
            .with_overload_on_pushback(Code::Internal);
        assert_eq!(lenient.outcome(Code::Unavailable), Outcome::Overload);
        assert_eq!(lenient.outcome(Code::ResourceExhausted), Outcome::Success);
        assert_eq!(lenient.outcome(Code::Internal), Outcome::Failure);
        assert_eq!(
            lenient.outcome_with_pushback(Code::Internal),
            Outcome::Overload
        );
        assert_eq!(
            GrpcCodes::new()
                .ignoring(Code::ResourceExhausted)
                .outcome(Code::ResourceExhausted),
            Outcome::Ignored
        );
    }

    #[tokio::test]
    async fn a_pushback_in_the_trailers_is_overload_at_end_of_stream() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "14".parse().unwrap());
        trailers.insert(RETRY_PUSHBACK_MS, "1000".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"msg"))),
            Ok(Frame::trailers(trailers)),
        ];
        let res = Response::new(StreamBody::new(futures::stream::iter(frames)));
        let c = Collect::default();
        let res = Classify::<_, ()>::report(&GrpcCodes::new(), Ok(res), c.clone()).unwrap();
        drain(res.into_body()).await;
        assert_eq!(c.outcomes(), [Outcome::Overload]);
    }

    #[test]
    fn non_200_and_errors_are_failures() {
        let c = Collect::default();
        let mut res = Response::new(Full::<Bytes>::default());
        *res.status_mut() = StatusCode::BAD_GATEWAY;
        let _ = Classify::<_, ()>::report(&GrpcCodes::new(), Ok(res), c.clone());
        let _ = GrpcCodes::new().report(Err::<Response<Full<Bytes>>, _>("reset"), c.clone());
        assert_eq!(c.outcomes(), [Outcome::Failure, Outcome::Failure]);
    }

    async fn drain<B: Body>(body: B) {
        let _ = body.collect().await;
    }

    #[tokio::test]
    async fn trailers_decide_at_end_of_stream_exactly_once() {
        for (code, expected) in [
            (Code::Ok, Outcome::Success),
            (Code::Internal, Outcome::Failure),
        ] {
            let c = Collect::default();
            let res =
                Classify::<_, ()>::report(&GrpcCodes::new(), Ok(streaming(Some(code))), c.clone())
                    .unwrap();
            assert!(
                c.outcomes().is_empty(),
                "nothing is known before the body ends"
            );
            drain(res.into_body()).await;
            assert_eq!(c.outcomes(), [expected]);
        }
    }

    #[tokio::test]
    async fn a_stream_without_grpc_status_is_unknown() {
        // tonic's client reports such a stream as `UNKNOWN`: a proxy may have cut it short.
        let c = Collect::default();
        let res =
            Classify::<_, ()>::report(&GrpcCodes::new(), Ok(streaming(None)), c.clone()).unwrap();
        drain(res.into_body()).await;
        let mut trailers = HeaderMap::new();
        trailers.insert("x-other", "1".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![Ok(Frame::trailers(trailers))];
        let res = Response::new(StreamBody::new(futures::stream::iter(frames)));
        let res = Classify::<_, ()>::report(&GrpcCodes::new(), Ok(res), c.clone()).unwrap();
        drain(res.into_body()).await;
        assert_eq!(c.outcomes(), [Outcome::Failure, Outcome::Failure]);
        let lenient = GrpcCodes::new().with_success(Code::Unknown);
        let res = Classify::<_, ()>::report(&lenient, Ok(streaming(None)), c.clone()).unwrap();
        drain(res.into_body()).await;
        assert_eq!(
            c.outcomes()[2],
            Outcome::Success,
            "unknown is configurable as any code"
        );
    }

    #[tokio::test]
    async fn a_dropped_body_reports_ignored_once() {
        let c = Collect::default();
        let res =
            Classify::<_, ()>::report(&GrpcCodes::new(), Ok(streaming(Some(Code::Ok))), c.clone())
                .unwrap();
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
        assert_eq!(c.outcomes(), [Outcome::Ignored]);
    }

    #[tokio::test]
    async fn a_stream_whose_last_frame_ends_it_reports_at_that_frame() {
        // hyper reads no further once `is_end_stream()` is true, and drops the body.
        let c = Collect::default();
        let res = Response::new(Full::new(Bytes::from_static(b"msg")));
        let res = Classify::<_, ()>::report(&GrpcCodes::new(), Ok(res), c.clone()).unwrap();
        let mut body = res.into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        assert_eq!(c.outcomes(), [Outcome::Failure], "no grpc-status: UNKNOWN");
        drop(body);
        assert_eq!(c.outcomes(), [Outcome::Failure]);
    }

    #[test]
    fn an_empty_stream_dropped_unpolled_is_unknown() {
        let c = Collect::default();
        let res = Response::new(Full::<Bytes>::default());
        let res = Classify::<_, ()>::report(&GrpcCodes::new(), Ok(res), c.clone()).unwrap();
        assert!(c.outcomes().is_empty());
        drop(res);
        assert_eq!(c.outcomes(), [Outcome::Failure]);
    }

    #[tokio::test]
    async fn a_body_error_is_a_failure() {
        let c = Collect::default();
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            vec![Err(std::io::Error::other("reset"))];
        let res = Response::new(StreamBody::new(futures::stream::iter(frames)));
        let res = Classify::<_, ()>::report(&GrpcCodes::new(), Ok(res), c.clone()).unwrap();
        drain(res.into_body()).await;
        assert_eq!(c.outcomes(), [Outcome::Failure]);
    }
}
