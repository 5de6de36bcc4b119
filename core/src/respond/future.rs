use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::{ErrorBody, ErrorMapping};
use crate::BoxError;

pin_project! {
    /// The response future of an [`ErrorResponse`](super::ErrorResponse) service.
    pub struct ResponseFuture<F, M> {
        #[pin]
        state: State<F>,
        mapping: M,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] inner: F },
        Failed { error: Option<BoxError> },
    }
}

impl<F, M> ResponseFuture<F, M> {
    pub(super) fn called(inner: F, mapping: M) -> Self {
        Self {
            state: State::Called { inner },
            mapping,
        }
    }

    pub(super) fn failed(error: BoxError, mapping: M) -> Self {
        Self {
            state: State::Failed { error: Some(error) },
            mapping,
        }
    }
}

impl<F, M> fmt::Debug for ResponseFuture<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E, M> Future for ResponseFuture<F, M>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: ErrorBody,
    E: Into<BoxError>,
    M: ErrorMapping,
{
    type Output = Result<http::Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let error = match this.state.project() {
            StateProj::Called { inner } => match ready!(inner.poll(cx)) {
                Ok(response) => return Poll::Ready(Ok(response)),
                Err(err) => err.into(),
            },
            StateProj::Failed { error } => error.take().expect("polled after completion"),
        };
        Poll::Ready(Ok(this.mapping.response(error).map(B::from_text)))
    }
}
