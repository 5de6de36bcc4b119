use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{Counter, Histogram};
use seawall_core::BoxError;
use seawall_core::metrics::MetricScope;
use tower::Service;

use crate::config::TimeoutConfig;
use crate::deadline::Deadlines;
use crate::future::ResponseFuture;
use crate::layer::TimedOutEvent;

pub(crate) type TimeoutHook = Arc<dyn Fn(TimedOutEvent<'_>) + Send + Sync>;

/// What every clone of one layer's services shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) completed: Counter,
    pub(crate) timed_out: Counter,
    pub(crate) deadline_exceeded: Counter,
    pub(crate) remaining: Histogram,
    pub(crate) on_timeout: Option<TimeoutHook>,
}

impl Shared {
    pub(crate) fn new(config: &TimeoutConfig, metrics: MetricScope) -> Self {
        const CALLS: &str = "seawall_timeout_calls_total";
        Self {
            name: config.name.clone(),
            timeout: config.timeout,
            completed: metrics.counter(CALLS, &[("result", "completed")]),
            timed_out: metrics.counter(CALLS, &[("result", "timed_out")]),
            deadline_exceeded: metrics.counter(CALLS, &[("result", "deadline_exceeded")]),
            remaining: metrics.histogram("seawall_timeout_remaining_seconds", &[]),
            on_timeout: None,
        }
    }
}

/// Ends a call that takes longer than its timeout with
/// [`Rejected`](seawall_core::Rejected) of kind `TimedOut`, or `DeadlineExceeded` when the
/// caller's propagated deadline was the shorter.
///
/// Made by [`TimeoutLayer`](crate::TimeoutLayer).
pub struct Timeout<S, D> {
    inner: S,
    shared: Arc<Shared>,
    deadlines: D,
}

impl<S, D> Timeout<S, D> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, deadlines: D) -> Self {
        Self {
            inner,
            shared,
            deadlines,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, D: Clone> Clone for Timeout<S, D> {
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.shared.clone(),
            self.deadlines.clone(),
        )
    }
}

impl<S: fmt::Debug, D: fmt::Debug> fmt::Debug for Timeout<S, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("inner", &self.inner)
            .field("timeout", &self.shared.timeout)
            .field("deadlines", &self.deadlines)
            .finish()
    }
}

impl<S, Req, D> Service<Req> for Timeout<S, D>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    D: Deadlines<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let budget = self.deadlines.apply(&mut req, self.shared.timeout);
        tracing::trace!(name = %self.shared.name, timeout = ?budget.timeout, "call");
        if budget.by_caller && budget.timeout.is_zero() {
            // The caller has given up already: calling the inner service would be wasted work.
            return ResponseFuture::expired(budget, self.shared.clone());
        }
        ResponseFuture::new(self.inner.call(req), budget, self.shared.clone())
    }
}
