use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use seawall_core::BoxError;
use tokio::time::Instant;
use tower::Service;

use crate::event::Fault;
use crate::future::ResponseFuture;
use crate::injector::Decision;
use crate::state::Shared;
use crate::target::{Respond, Target};

/// Injects faults into the calls of the inner service, as its [`ChaosLayer`] was configured.
///
/// Made by [`ChaosLayer`](crate::ChaosLayer).
///
/// [`ChaosLayer`]: crate::ChaosLayer
pub struct Chaos<S, T, R> {
    inner: S,
    shared: Arc<Shared>,
    target: T,
    respond: R,
}

impl<S, T, R> Chaos<S, T, R> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, target: T, respond: R) -> Self {
        Self {
            inner,
            shared,
            target,
            respond,
        }
    }

    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, T: Clone, R: Clone> Clone for Chaos<S, T, R> {
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.shared.clone(),
            self.target.clone(),
            self.respond.clone(),
        )
    }
}

impl<S: fmt::Debug, T, R> fmt::Debug for Chaos<S, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .field("enabled", &self.shared.enabled.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S, Req, T, R> Service<Req> for Chaos<S, T, R>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    T: Target<Req>,
    R: Respond<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.shared.enabled.load(Ordering::Relaxed) || !self.target.matches(&req) {
            return ResponseFuture::call(self.inner.call(req));
        }
        let now = Instant::now();
        let decision = self.shared.lock().decide(&self.shared.schedule, now);
        match decision {
            Decision::Pass => ResponseFuture::call(self.inner.call(req)),
            Decision::Delay { until, slow } => {
                self.shared
                    .injected(if slow { Fault::Slow } else { Fault::Latency });
                ResponseFuture::delayed(self.inner.call(req), until)
            }
            Decision::Error => ResponseFuture::ready(Err(self.shared.error(Fault::Error))),
            Decision::QueueFull => ResponseFuture::ready(Err(self.shared.error(Fault::QueueFull))),
            Decision::Hang => {
                self.shared.injected(Fault::Hang);
                ResponseFuture::hang()
            }
            Decision::Respond => match self.respond.respond(&req) {
                Some(response) => {
                    self.shared.injected(Fault::Response);
                    ResponseFuture::ready(Ok(response))
                }
                None => ResponseFuture::call(self.inner.call(req)),
            },
        }
    }
}
