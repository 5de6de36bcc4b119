use http::{Response, StatusCode};

use super::{Classified, Classify, GrpcCodes, Outcome, Report, ReportBody};

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

    fn mark_endpoint_fault(&self, response: &mut Response<B>) {
        super::http::mark_endpoint_fault(response);
    }

    fn has_endpoint_fault(&self, response: &Response<B>) -> bool {
        super::http::has_endpoint_fault(response)
    }
}

/// The body type of responses [`GrpcCodes`] watches.
#[deprecated(note = "renamed `ReportBody`, which every end-of-body report now shares")]
pub type GrpcBody<B, R> = ReportBody<B, R>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tests::Collect;
    use crate::grpc::RETRY_PUSHBACK_MS;
    use bytes::Bytes;
    use http::HeaderMap;
    use http_body::{Body, Frame};
    use http_body_util::{BodyExt, Full, StreamBody};
    use tonic::Code;

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
