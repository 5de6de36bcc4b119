//! Stamping the caller's deadline on arrival, before any queue.
//!
//! A timeout that reads `grpc-timeout` when the request reaches it counts the budget from
//! there: a request that waited 900 ms in a rate limiter's or a bulkhead's queue for a 1 s
//! deadline would still be given a whole second. [`InboundDeadlineLayer`], outermost in a
//! server stack, turns the caller's budget into an instant as the request arrives, so every
//! layer below measures against the same deadline: queues are left when it passes, and a
//! timeout reached after it rejects the call without running it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::config::DeadlineConfig;
use crate::deadline::{Deadline, HeaderDeadlines};

/// Stamps the caller's [`Deadline`] on each request as it arrives (from `grpc-timeout`, a
/// configured millisecond header, or a `Deadline` already in its extensions) and makes it
/// [current](Deadline::current) for every layer below.
///
/// It adds no failure of its own: the stack's errors and responses pass through unchanged.
///
/// ```
/// use std::time::Duration;
/// use http::Request;
/// use seawall_timeout::{Deadline, DeadlineConfig, InboundDeadlineLayer};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let svc = InboundDeadlineLayer::new(DeadlineConfig::inbound()).layer(service_fn(
///     |_req: Request<()>| async { Ok::<_, std::convert::Infallible>(Deadline::current()) },
/// ));
/// let req = Request::builder().header("grpc-timeout", "250m").body(()).unwrap();
/// let deadline = svc.oneshot(req).await.unwrap().unwrap();
/// assert_eq!(deadline.remaining(), Duration::from_millis(250));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct InboundDeadlineLayer {
    deadlines: HeaderDeadlines,
}

impl InboundDeadlineLayer {
    /// Reads the caller's deadline where `config` says; its `write` setting is not used.
    pub fn new(config: DeadlineConfig) -> Self {
        Self {
            deadlines: HeaderDeadlines::new(config),
        }
    }
}

impl<S> Layer<S> for InboundDeadlineLayer {
    type Service = InboundDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InboundDeadline {
            inner,
            deadlines: self.deadlines.clone(),
        }
    }
}

/// Stamps the caller's deadline on arrival; made by [`InboundDeadlineLayer`].
#[derive(Clone)]
pub struct InboundDeadline<S> {
    inner: S,
    deadlines: HeaderDeadlines,
}

impl<S> InboundDeadline<S> {
    seawall_core::define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for InboundDeadline<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundDeadline")
            .field("inner", &self.inner)
            .field("deadlines", &self.deadlines)
            .finish()
    }
}

impl<S, B> Service<Request<B>> for InboundDeadline<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InboundFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let deadline = self.deadlines.callers(&req);
        let inner = match deadline {
            Some(deadline) => {
                req.extensions_mut().insert(deadline);
                deadline.scope(|| self.inner.call(req))
            }
            None => self.inner.call(req),
        };
        InboundFuture { inner, deadline }
    }
}

pin_project! {
    /// The inner call, polled with the caller's deadline [current](Deadline::current).
    pub struct InboundFuture<F> {
        #[pin]
        inner: F,
        deadline: Option<Deadline>,
    }
}

impl<F> fmt::Debug for InboundFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundFuture")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for InboundFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        match *this.deadline {
            Some(deadline) => deadline.scope(|| this.inner.poll(cx)),
            None => this.inner.poll(cx),
        }
    }
}
