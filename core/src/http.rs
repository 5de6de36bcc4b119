//! Rejections as HTTP responses, so a stack goes under `axum::Router::layer` as it is.
//!
//! [`ErrorResponseLayer`] sits outermost in a server stack and answers every error with a
//! response: a [`Rejected`] becomes the status a client and a load balancer act on, any other
//! error a plain `500`. The stack's error is then `Infallible` and needs no
//! `HandleErrorLayer`.
//!
//! Nothing internal reaches the client: the body of a rejection says what happened and when
//! to come back (`rate limited, retry after 1.2s`), and any other error is answered with
//! `internal server error` and logged at `warn` here. The name of the rejecting layer tells
//! outsiders how the service is built, so it appears (`rate limited (api), ...`) only with
//! [`ErrorResponseLayer::with_layer_names`].
//!
//! | rejection | status |
//! |---|---|
//! | `CircuitOpen`, `BulkheadFull`, `BudgetExhausted`, `Throttled`, `StoreUnavailable` | `503 Service Unavailable`, with `Retry-After` when known |
//! | `RateLimited` | `429 Too Many Requests`, with `Retry-After` when known |
//! | `TimedOut`, `DeadlineExceeded` | `504 Gateway Timeout` |
//! | `Injected` | `500 Internal Server Error` |
//!
//! The response keeps the inner service's body type, the answer to an error written into it
//! ([`ErrorBody`](crate::respond::ErrorBody)): under `axum::Router::layer` nothing more is
//! boxed per request.
//!
//! A `503` or `429` tells the caller this service sheds load and is up, which overload-aware
//! callers answer with throttling and backoff rather than an open breaker (see
//! [`classify`](crate::classify)). An injected failure stands in for a server failing, so it
//! is answered as one.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, StatusCode};
//! use seawall_core::http::ErrorResponseLayer;
//! use seawall_core::{BoxError, Rejected, RejectionKind};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let inner = service_fn(|_: Request<()>| async {
//!     Err::<http::Response<String>, BoxError>(Rejected::new(RejectionKind::RateLimited, "api").into())
//! });
//! let svc = ErrorResponseLayer::new().layer(inner);
//! let res = svc.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! # }
//! ```

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use tower::Layer;

use crate::respond::{ErrorMapping, ErrorResponse, rejection_message, sealed};
use crate::{BoxError, Rejected, RejectionKind, rejected};

/// Answers every error of the stack below with an HTTP response.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorResponseLayer {
    mapping: HttpMapping,
}

impl ErrorResponseLayer {
    /// The adapter layer; rejections are answered without the rejecting layer's name.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also names the rejecting layer in the body (`rate limited (api)`), for services whose
    /// clients are trusted to see how they are built.
    #[must_use]
    pub fn with_layer_names(mut self) -> Self {
        self.mapping.layer_names = true;
        self
    }
}

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S, HttpMapping>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse::new(inner, self.mapping)
    }
}

/// Writes errors as HTTP responses; see the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpMapping {
    layer_names: bool,
}

impl sealed::Sealed for HttpMapping {}

impl ErrorMapping for HttpMapping {
    fn response(&self, err: BoxError) -> Response<Bytes> {
        match rejected(&*err) {
            Some(rejection) => {
                tracing::debug!(%rejection, "rejection answered");
                rejection_response(rejection, self.layer_names)
            }
            None => {
                tracing::warn!(error = %err, "error answered with 500");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal server error".into(),
                )
            }
        }
    }
}

/// The status a rejection of `kind` is answered with.
pub fn status_of(kind: RejectionKind) -> StatusCode {
    match kind {
        RejectionKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        RejectionKind::TimedOut | RejectionKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        RejectionKind::Throttled => StatusCode::SERVICE_UNAVAILABLE,
        RejectionKind::Injected => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn rejection_response(rejection: &Rejected, layer_names: bool) -> Response<Bytes> {
    let status = status_of(rejection.kind());
    let mut response = text(status, rejection_message(rejection, layer_names));
    if let (Some(after), false) = (
        rejection.retry_after(),
        status == StatusCode::GATEWAY_TIMEOUT,
    ) {
        // Retry-After takes whole seconds; rounding up never invites a client back too early.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn text(status: StatusCode, body: String) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn answer(err: BoxError) -> (StatusCode, Option<String>, String) {
        answer_with(HttpMapping::default(), err).await
    }

    async fn answer_with(
        mapping: HttpMapping,
        err: BoxError,
    ) -> (StatusCode, Option<String>, String) {
        let res = mapping.response(err);
        let retry = res
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let status = res.status();
        (
            status,
            retry,
            String::from_utf8(res.into_body().to_vec()).unwrap(),
        )
    }

    fn rejection(kind: RejectionKind, after: Option<Duration>) -> BoxError {
        let r = Rejected::new(kind, "dep");
        Box::new(match after {
            Some(after) => r.with_retry_after(after),
            None => r,
        })
    }

    #[tokio::test]
    async fn each_kind_gets_its_status() {
        let cases = [
            (RejectionKind::CircuitOpen, StatusCode::SERVICE_UNAVAILABLE),
            (RejectionKind::BulkheadFull, StatusCode::SERVICE_UNAVAILABLE),
            (
                RejectionKind::BudgetExhausted,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (RejectionKind::Injected, StatusCode::INTERNAL_SERVER_ERROR),
            (RejectionKind::Throttled, StatusCode::SERVICE_UNAVAILABLE),
            (
                RejectionKind::StoreUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (RejectionKind::RateLimited, StatusCode::TOO_MANY_REQUESTS),
            (RejectionKind::TimedOut, StatusCode::GATEWAY_TIMEOUT),
        ];
        for (kind, status) in cases {
            assert_eq!(answer(rejection(kind, None)).await.0, status, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn retry_after_is_rounded_up_to_whole_seconds() {
        let (status, retry, body) = answer(rejection(
            RejectionKind::RateLimited,
            Some(Duration::from_millis(1200)),
        ))
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("2"));
        assert_eq!(body, "rate limited, retry after 1.2s");
        let open = answer(rejection(
            RejectionKind::CircuitOpen,
            Some(Duration::from_secs(5)),
        ))
        .await;
        assert_eq!(open.1.as_deref(), Some("5"));
    }

    #[tokio::test]
    async fn layer_names_are_shown_only_when_asked_for() {
        let hidden = answer(rejection(RejectionKind::BulkheadFull, None)).await;
        assert_eq!(hidden.2, "bulkhead full");
        let layer = ErrorResponseLayer::new().with_layer_names();
        let shown = answer_with(layer.mapping, rejection(RejectionKind::BulkheadFull, None)).await;
        assert_eq!(shown.2, "bulkhead full (dep)");
    }

    #[tokio::test]
    async fn other_errors_are_500_without_their_details() {
        let (status, retry, body) = answer("secret connection string".into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry, None);
        assert_eq!(body, "internal server error");
    }
}
