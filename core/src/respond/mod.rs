//! The service under [`http::ErrorResponseLayer`](crate::http::ErrorResponseLayer) and
//! [`grpc::ErrorStatusLayer`](crate::grpc::ErrorStatusLayer): it answers every error of the
//! stack below with a response, so the stack's error is `Infallible`.

mod future;

pub use self::future::ResponseFuture;

use std::convert::Infallible;
use std::fmt::{self, Write};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use tower::Service;

use crate::{BoxError, Rejected};

/// The body of a response from an [`ErrorResponse`] service: the inner service's own, or the
/// short one written for an error.
pub type ResponseBody<B> = Either<B, Full<Bytes>>;

/// How an [`ErrorResponse`] service writes an error as a response. Sealed.
pub trait ErrorMapping: sealed::Sealed + Copy {
    /// The response that answers `err`.
    fn response(&self, err: BoxError) -> http::Response<Full<Bytes>>;
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
    M: ErrorMapping,
{
    type Response = http::Response<ResponseBody<B>>;
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
