//! Rejections as gRPC statuses, for tonic servers and clients.
//!
//! A tonic server turns a layer's error into a status only when a `tonic::Status` is in its
//! source chain; any other error resets the stream and the client sees
//! `Internal: h2 protocol error`. [`ErrorStatusLayer`] answers every error with a
//! trailers-only response instead:
//!
//! | rejection | code |
//! |---|---|
//! | `CircuitOpen`, `BulkheadFull`, `BudgetExhausted`, `Injected`, `Throttled` | `UNAVAILABLE` |
//! | `RateLimited` | `RESOURCE_EXHAUSTED` |
//! | `TimedOut` | `DEADLINE_EXCEEDED` |
//!
//! with the rejection as `grpc-message` and, when known, its `retry_after` as
//! `grpc-retry-pushback-ms`. Any other error becomes the status tonic itself would give it
//! (`Status::from_error`). On a client stack (around a `Channel`) the same layer lets the
//! tonic client see these codes.

use bytes::Bytes;
use http::HeaderValue;
use http::Response;
use http_body_util::Full;
use tonic::{Code, Status};
use tower::Layer;

use crate::respond::{ErrorMapping, ErrorResponse, sealed};
use crate::{BoxError, RejectionKind, rejected};

/// The header in which a gRPC server tells a client how long to wait before retrying.
pub const RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// Answers every error of the stack below with a trailers-only gRPC response.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorStatusLayer {
    _priv: (),
}

impl ErrorStatusLayer {
    /// The adapter layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for ErrorStatusLayer {
    type Service = ErrorResponse<S, GrpcMapping>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse::new(inner)
    }
}

/// Writes errors as gRPC statuses; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub enum GrpcMapping {}

impl sealed::Sealed for GrpcMapping {}

impl ErrorMapping for GrpcMapping {
    fn response(err: BoxError) -> Response<Full<Bytes>> {
        let Some(rejection) = rejected(&*err) else {
            return Status::from_error(err).into_http();
        };
        tracing::debug!(%rejection, "rejection answered");
        let status = Status::new(code_of(rejection.kind()), rejection.to_string());
        let mut response = status.into_http::<Full<Bytes>>();
        if let Some(after) = rejection.retry_after() {
            let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
            response
                .headers_mut()
                .insert(RETRY_PUSHBACK_MS, HeaderValue::from(millis));
        }
        response
    }
}

/// The gRPC code a rejection of `kind` is answered with.
pub fn code_of(kind: RejectionKind) -> Code {
    match kind {
        RejectionKind::RateLimited => Code::ResourceExhausted,
        RejectionKind::TimedOut => Code::DeadlineExceeded,
        RejectionKind::Throttled => Code::Unavailable,
        _ => Code::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Rejected;

    fn header<'a>(res: &'a Response<Full<Bytes>>, name: &str) -> Option<&'a str> {
        res.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn rejections_become_trailers_only_statuses() {
        let cases = [
            (RejectionKind::CircuitOpen, "14"),
            (RejectionKind::BulkheadFull, "14"),
            (RejectionKind::BudgetExhausted, "14"),
            (RejectionKind::Throttled, "14"),
            (RejectionKind::RateLimited, "8"),
            (RejectionKind::TimedOut, "4"),
        ];
        for (kind, code) in cases {
            let res = GrpcMapping::response(Box::new(Rejected::new(kind, "dep")));
            assert_eq!(res.status(), http::StatusCode::OK);
            assert_eq!(header(&res, "content-type"), Some("application/grpc"));
            assert_eq!(header(&res, "grpc-status"), Some(code), "{kind:?}");
        }
    }

    #[test]
    fn message_and_pushback_are_set() {
        let err = Rejected::new(RejectionKind::CircuitOpen, "payments")
            .with_retry_after(Duration::from_millis(1500));
        let res = GrpcMapping::response(Box::new(err));
        assert_eq!(
            header(&res, "grpc-message"),
            Some("circuit%20open%20(payments),%20retry%20after%201.5s")
        );
        assert_eq!(header(&res, RETRY_PUSHBACK_MS), Some("1500"));
    }

    #[test]
    fn a_status_in_the_chain_is_kept() {
        let res = GrpcMapping::response(Box::new(Status::not_found("no such order")));
        assert_eq!(header(&res, "grpc-status"), Some("5"));
    }
}
