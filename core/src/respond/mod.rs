//! The service under [`http::ErrorResponseLayer`](crate::http::ErrorResponseLayer) and
//! [`grpc::ErrorStatusLayer`](crate::grpc::ErrorStatusLayer): it answers every error of the
//! stack below with a response, so the stack's error is `Infallible`.
//!
//! Its responses keep the inner service's body type: the short answer to an error is written
//! into that type ([`ErrorBody`]). A body of its own (an `Either` of the inner body and the
//! error's) would be boxed once more per request by `axum::Router::layer`, which boxes every
//! response body that is not axum's own, and polled through the `Either` on every frame.

mod future;

pub use self::future::ResponseFuture;

use std::convert::Infallible;
use std::fmt::{self, Write};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Either, Full};
use tower::Service;

use crate::classify::{Report, ReportBody};
use crate::{BoxError, Rejected};

/// A response body the error adapters can write their answer to an error into, so that they
/// answer with the inner service's own body type.
///
/// Implemented for axum's `Body` (`axum_core::body::Body`), tonic's `Body` (feature `grpc`),
/// `Full<Bytes>`, `Bytes`, `String`, http-body-util's `BoxBody` and `UnsyncBoxBody` over `Bytes`, an
/// `Either` whose right side is one of them, and a [`ReportBody`] (a circuit breaker's
/// response body on a client) over one of them. A service answering with another body type
/// goes under the adapters once its body is mapped into one of these, e.g. with
/// `Either::Left` (`tower_http::map_response_body`, or `ServiceExt::map_response`):
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::{Either, Empty, Full};
/// use seawall_core::http::ErrorResponseLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// let inner = service_fn(|_: Request<()>| async {
///     Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
/// })
/// .map_response(|res| res.map(Either::<_, Full<Bytes>>::Left));
/// let _svc = ErrorResponseLayer::new().layer(inner);
/// ```
pub trait ErrorBody: Sized {
    /// A body holding `text`, the adapter's whole answer (empty for a gRPC status, whose
    /// message travels in its headers).
    fn from_text(text: Bytes) -> Self;
}

impl ErrorBody for Full<Bytes> {
    fn from_text(text: Bytes) -> Self {
        Full::new(text)
    }
}

impl ErrorBody for Bytes {
    fn from_text(text: Bytes) -> Self {
        text
    }
}

impl ErrorBody for String {
    fn from_text(text: Bytes) -> Self {
        // The adapters write only text of their own, which is UTF-8.
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl<E: 'static> ErrorBody for BoxBody<Bytes, E> {
    fn from_text(text: Bytes) -> Self {
        Full::new(text).map_err(|never| match never {}).boxed()
    }
}

impl<E: 'static> ErrorBody for UnsyncBoxBody<Bytes, E> {
    fn from_text(text: Bytes) -> Self {
        Full::new(text)
            .map_err(|never| match never {})
            .boxed_unsync()
    }
}

impl<L, R: ErrorBody> ErrorBody for Either<L, R> {
    fn from_text(text: Bytes) -> Self {
        Either::Right(R::from_text(text))
    }
}

impl<B, R> ErrorBody for ReportBody<B, R>
where
    B: http_body::Body + ErrorBody,
    R: Report,
{
    fn from_text(text: Bytes) -> Self {
        // The adapter's own answer: no outcome of a call below to report.
        ReportBody::new(B::from_text(text))
    }
}

impl ErrorBody for axum_core::body::Body {
    fn from_text(text: Bytes) -> Self {
        text.into()
    }
}

#[cfg(feature = "grpc")]
impl ErrorBody for tonic::body::Body {
    fn from_text(text: Bytes) -> Self {
        if text.is_empty() {
            tonic::body::Body::empty()
        } else {
            tonic::body::Body::new(Full::new(text))
        }
    }
}

/// How an [`ErrorResponse`] service writes an error as a response. Sealed.
pub trait ErrorMapping: sealed::Sealed + Copy {
    /// The response that answers `err`, its body the whole text.
    fn response(&self, err: BoxError) -> http::Response<Bytes>;
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// The client-visible text of a rejection: what happened and, when known, when to come back;
/// the rejecting layer's name only when `with_name`, since it tells outsiders how the service
/// is built.
pub(crate) fn rejection_message(rejection: &Rejected, with_name: bool) -> String {
    let mut message = rejection.kind().to_string();
    if with_name {
        let _ = write!(message, " ({})", rejection.name());
    }
    if let Some(after) = rejection.retry_after() {
        let _ = write!(message, ", retry after {after:?}");
    }
    message
}

/// Answers every error of the inner service with a response written by `M`.
pub struct ErrorResponse<S, M> {
    inner: S,
    mapping: M,
    ready_error: Option<BoxError>,
}

impl<S, M> ErrorResponse<S, M> {
    pub(crate) fn new(inner: S, mapping: M) -> Self {
        Self {
            inner,
            mapping,
            ready_error: None,
        }
    }

    crate::define_inner_service_accessors!();
}

impl<S: Clone, M: Copy> Clone for ErrorResponse<S, M> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.mapping)
    }
}

impl<S: fmt::Debug, M> fmt::Debug for ErrorResponse<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorResponse")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, B, M> Service<Req> for ErrorResponse<S, M>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: ErrorBody,
    M: ErrorMapping,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready_error.is_none()
            && let Err(err) = std::task::ready!(self.inner.poll_ready(cx))
        {
            // Answered by the next call, so that the error becomes a response too.
            self.ready_error = Some(err.into());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.ready_error.take() {
            Some(err) => ResponseFuture::failed(err, self.mapping),
            None => ResponseFuture::called(self.inner.call(req), self.mapping),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Empty};
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use crate::RejectionKind;
    use crate::http::ErrorResponseLayer;

    async fn text<B>(body: B) -> String
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: fmt::Debug,
    {
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn full() -> BoxError {
        Box::new(Rejected::new(RejectionKind::BulkheadFull, "db"))
    }

    // Written as `Response<axum_core::body::Body>`: the adapter's response is the inner
    // service's, so axum's `Router::layer` has no other body to box.
    #[tokio::test]
    async fn an_error_is_answered_in_the_inner_services_own_body_type() {
        let inner = service_fn(|_: Request<()>| async {
            Err::<Response<axum_core::body::Body>, _>(full())
        });
        let res: Response<axum_core::body::Body> = ErrorResponseLayer::new()
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(text(res.into_body()).await, "bulkhead full");

        let ok = service_fn(|_: Request<()>| async {
            Ok::<_, BoxError>(Response::new(axum_core::body::Body::from("served")))
        });
        let res = ErrorResponseLayer::new()
            .layer(ok)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(text(res.into_body()).await, "served");
    }

    #[tokio::test]
    async fn every_error_body_holds_the_text() {
        let hello = || Bytes::from_static(b"bulkhead full");
        assert_eq!(text(Full::from_text(hello())).await, "bulkhead full");
        assert_eq!(String::from_text(hello()), "bulkhead full");
        assert_eq!(Bytes::from_text(hello()), "bulkhead full");
        assert_eq!(
            text(BoxBody::<Bytes, BoxError>::from_text(hello())).await,
            "bulkhead full"
        );
        assert_eq!(
            text(UnsyncBoxBody::<Bytes, BoxError>::from_text(hello())).await,
            "bulkhead full"
        );
        assert_eq!(
            text(Either::<Empty<Bytes>, Full<Bytes>>::from_text(hello())).await,
            "bulkhead full"
        );
        assert_eq!(
            text(axum_core::body::Body::from_text(hello())).await,
            "bulkhead full"
        );
    }

    #[cfg(feature = "grpc")]
    #[tokio::test]
    async fn a_grpc_status_answers_in_tonics_body_with_nothing_in_it() {
        let inner =
            service_fn(|_: Request<()>| async { Err::<Response<tonic::body::Body>, _>(full()) });
        let res = crate::grpc::ErrorStatusLayer::new()
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.headers()["grpc-status"], "14");
        assert!(http_body::Body::is_end_stream(res.body()));
        let written = tonic::body::Body::from_text(Bytes::from_static(b"x"));
        assert_eq!(text(written).await, "x");
    }
}
