//! Rejections as gRPC statuses, for tonic servers and clients.
//!
//! A tonic server turns a layer's error into a status only when a `tonic::Status` is in its
//! source chain; any other error resets the stream and the client sees
//! `Internal: h2 protocol error`. [`ErrorStatusLayer`] answers every error with a
//! trailers-only response instead:
//!
//! | rejection | code |
//! |---|---|
//! | `CircuitOpen`, `BulkheadFull`, `BudgetExhausted`, `Injected`, `Throttled`, `StoreUnavailable` | `UNAVAILABLE` |
//! | `RateLimited` | `RESOURCE_EXHAUSTED` |
//! | `TimedOut`, `DeadlineExceeded` | `DEADLINE_EXCEEDED` |
//!
//! with what happened as `grpc-message` (`rate limited, retry after 1.2s`) and, when known,
//! the `retry_after` as `grpc-retry-pushback-ms`. On a client stack (around a `Channel`) the
//! same layer lets the tonic client see these codes.
//!
//! Nothing internal reaches the caller. A `tonic::Status` in the error's source chain is the
//! service's own answer and is sent as it is. Any other error is logged at `warn` here and
//! answered with `UNKNOWN` and the message `internal error` (a transport error keeps the code
//! tonic gives it, such as `UNAVAILABLE` for a refused connection, with the code's generic
//! description), never with its own text: "redis: connection refused 10.0.3.7:6379" is for
//! the logs. The rejecting layer's name appears in the message (`rate limited (api)`) only
//! with [`ErrorStatusLayer::with_layer_names`].

use bytes::Bytes;
use http::HeaderValue;
use http::Response;
use tonic::{Code, Status};
use tower::Layer;

use crate::respond::{ErrorMapping, ErrorResponse, rejection_message, sealed};
use crate::{BoxError, RejectionKind, rejected};

/// The header in which a gRPC server tells a client how long to wait before retrying.
pub const RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// Answers every error of the stack below with a trailers-only gRPC response.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorStatusLayer {
    mapping: GrpcMapping,
}

impl ErrorStatusLayer {
    /// The adapter layer; rejections are answered without the rejecting layer's name.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also names the rejecting layer in `grpc-message` (`rate limited (api)`), for services
    /// whose callers are trusted to see how they are built.
    #[must_use]
    pub fn with_layer_names(mut self) -> Self {
        self.mapping.layer_names = true;
        self
    }
}

impl<S> Layer<S> for ErrorStatusLayer {
    type Service = ErrorResponse<S, GrpcMapping>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse::new(inner, self.mapping)
    }
}

/// Writes errors as gRPC statuses; see the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMapping {
    layer_names: bool,
}

impl sealed::Sealed for GrpcMapping {}

impl ErrorMapping for GrpcMapping {
    fn response(&self, err: BoxError) -> Response<Bytes> {
        let Some(rejection) = rejected(&*err) else {
            return opaque_status(err).into_http();
        };
        tracing::debug!(%rejection, "rejection answered");
        let message = rejection_message(rejection, self.layer_names);
        let status = Status::new(code_of(rejection.kind()), message);
        let mut response = status.into_http::<Bytes>();
        if let Some(after) = rejection.retry_after() {
            let millis = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
            response
                .headers_mut()
                .insert(RETRY_PUSHBACK_MS, HeaderValue::from(millis));
        }
        response
    }
}

/// The status that answers an error no seawall layer made: a `Status` the service chose
/// itself, or one that keeps only the code.
fn opaque_status(err: BoxError) -> Status {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
    while let Some(e) = source {
        if let Some(status) = e.downcast_ref::<Status>() {
            return status.clone();
        }
        source = e.source();
    }
    tracing::warn!(error = %err, "error answered with a status that hides it");
    match Status::from_error(err).code() {
        Code::Unknown => Status::unknown("internal error"),
        code => Status::new(code, code.description()),
    }
}

/// The gRPC code a rejection of `kind` is answered with.
pub fn code_of(kind: RejectionKind) -> Code {
    match kind {
        RejectionKind::RateLimited => Code::ResourceExhausted,
        RejectionKind::TimedOut | RejectionKind::DeadlineExceeded => Code::DeadlineExceeded,
        RejectionKind::Throttled => Code::Unavailable,
        _ => Code::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Rejected;

    fn header<'a>(res: &'a Response<Bytes>, name: &str) -> Option<&'a str> {
        res.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn rejections_become_trailers_only_statuses() {
        let cases = [
            (RejectionKind::CircuitOpen, "14"),
            (RejectionKind::BulkheadFull, "14"),
            (RejectionKind::BudgetExhausted, "14"),
            (RejectionKind::Throttled, "14"),
            (RejectionKind::StoreUnavailable, "14"),
            (RejectionKind::RateLimited, "8"),
            (RejectionKind::TimedOut, "4"),
        ];
        for (kind, code) in cases {
            let res = GrpcMapping::default().response(Box::new(Rejected::new(kind, "dep")));
            assert_eq!(res.status(), http::StatusCode::OK);
            assert_eq!(header(&res, "content-type"), Some("application/grpc"));
            assert_eq!(header(&res, "grpc-status"), Some(code), "{kind:?}");
        }
    }

    #[test]
    fn message_and_pushback_are_set() {
        let err = Rejected::new(RejectionKind::CircuitOpen, "payments")
            .with_retry_after(Duration::from_millis(1500));
        let res = GrpcMapping::default().response(Box::new(err));
        assert_eq!(
            header(&res, "grpc-message"),
            Some("circuit%20open,%20retry%20after%201.5s")
        );
        assert_eq!(header(&res, RETRY_PUSHBACK_MS), Some("1500"));
    }

    #[test]
    fn layer_names_are_shown_only_when_asked_for() {
        let mapping = ErrorStatusLayer::new().with_layer_names().mapping;
        let res = mapping.response(Box::new(Rejected::new(RejectionKind::BulkheadFull, "db")));
        assert_eq!(header(&res, "grpc-message"), Some("bulkhead%20full%20(db)"));
    }

    #[test]
    fn other_errors_hide_their_text() {
        let res = GrpcMapping::default().response("redis: connection refused 10.0.3.7:6379".into());
        assert_eq!(header(&res, "grpc-status"), Some("2"));
        assert_eq!(header(&res, "grpc-message"), Some("internal%20error"));
    }

    #[test]
    fn a_status_in_the_chain_is_kept() {
        let res = GrpcMapping::default().response(Box::new(Status::not_found("no such order")));
        assert_eq!(header(&res, "grpc-status"), Some("5"));
    }
}
