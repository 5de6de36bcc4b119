use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{Counter, Histogram};
use seawall_core::backoff::Backoff;
use seawall_core::metrics::MetricScope;
use seawall_core::{BoxError, Hook};
use tokio::time::Instant;
use tower::Service;

use crate::budget::RetryBudget;
use crate::config::RetryConfig;
use crate::fleet::LayerBudget;
use crate::future::ResponseFuture;
use crate::layer::RetryEvent;
use crate::policy::RetryPolicy;

/// The metric handles of one layer instance.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) success_without_retry: Counter,
    pub(crate) success_with_retry: Counter,
    pub(crate) failed_without_retry: Counter,
    pub(crate) failed_with_retry: Counter,
    pub(crate) attempts: Counter,
    pub(crate) budget_exhausted: Counter,
    pub(crate) attempts_per_call: Histogram,
    pub(crate) duration: Histogram,
}

impl Metrics {
    fn new(scope: &MetricScope) -> Self {
        const CALLS: &str = "seawall_retry_calls_total";
        Self {
            success_without_retry: scope.counter(CALLS, &[("kind", "success_without_retry")]),
            success_with_retry: scope.counter(CALLS, &[("kind", "success_with_retry")]),
            failed_without_retry: scope.counter(CALLS, &[("kind", "failed_without_retry")]),
            failed_with_retry: scope.counter(CALLS, &[("kind", "failed_with_retry")]),
            attempts: scope.counter("seawall_retry_attempts_total", &[]),
            budget_exhausted: scope.counter("seawall_retry_budget_exhausted_total", &[]),
            attempts_per_call: scope.histogram("seawall_retry_call_attempts", &[]),
            duration: scope.histogram("seawall_retry_call_duration_seconds", &[]),
        }
    }
}

/// What every clone of one layer's services shares.
pub(crate) struct Shared<P> {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_delay: Duration,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) budget: Option<LayerBudget>,
    pub(crate) seed: u64,
    /// Numbers the retries, whose jitter RNG is seeded from `seed` and this number, so that a
    /// run on one thread repeats exactly.
    pub(crate) sequence: AtomicU64,
    pub(crate) policy: Arc<P>,
    pub(crate) metrics: Metrics,
    pub(crate) on_retry: Hook<RetryEvent<'static>>,
}

impl<P> Shared<P> {
    pub(crate) fn new(config: &RetryConfig, policy: P) -> Self {
        let scope = MetricScope::new(config.name.clone());
        // Without a seed, each layer draws its own, so a fleet of clients does not jitter in
        // step.
        let seed = config
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(Arc::as_ptr(&config.name)));
        Self {
            name: config.name.clone(),
            max_attempts: config.max_attempts,
            backoff: config.backoff,
            max_delay: config.max_delay,
            max_elapsed: config.max_elapsed,
            budget: config
                .budget
                .map(|budget| LayerBudget::Own(RetryBudget::seeded(budget, seed))),
            seed,
            sequence: AtomicU64::new(0),
            policy: Arc::new(policy),
            metrics: Metrics::new(&scope),
            on_retry: Hook::default(),
        }
    }

    /// The same settings and metric handles with another policy.
    pub(crate) fn with_policy<Q>(&self, policy: Arc<Q>) -> Shared<Q> {
        Shared {
            name: self.name.clone(),
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            max_delay: self.max_delay,
            max_elapsed: self.max_elapsed,
            budget: self.budget.clone(),
            seed: self.seed,
            sequence: AtomicU64::new(0),
            policy,
            metrics: self.metrics.clone(),
            on_retry: self.on_retry.clone(),
        }
    }
}

/// What a call's retries need: the layer's shared state and a clone of the inner service as
/// it was given, from which a call that must retry takes its own, readied before each retry.
///
/// One `Arc` per service (made when the layer wraps it), so that a call that needs no retry
/// clones only this handle, not the whole stack below.
pub(crate) struct Core<S, P> {
    pub(crate) shared: Arc<Shared<P>>,
    pub(crate) template: S,
}

/// Retries failed calls of the inner service as its policy says, within max attempts, max
/// elapsed time and the retry budget.
///
/// Made by [`RetryLayer`](crate::RetryLayer).
pub struct Retry<S, P> {
    inner: S,
    core: Arc<Core<S, P>>,
}

impl<S: Clone, P> Retry<S, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<P>>) -> Self {
        let template = inner.clone();
        Self {
            inner,
            core: Arc::new(Core { shared, template }),
        }
    }
}

impl<S, P> Retry<S, P> {
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

impl<S: Clone, P> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            core: self.core.clone(),
        }
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for Retry<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.core.shared;
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("name", &shared.name)
            .field("max_attempts", &shared.max_attempts)
            .field("policy", &shared.policy)
            .finish()
    }
}

impl<S, Req, P> Service<Req> for Retry<S, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: RetryPolicy<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.core.shared;
        let request = if shared.max_attempts > 1 {
            shared.policy.clone_request(&req)
        } else {
            None
        };
        // Every call is timed, for the duration histogram.
        let now = Instant::now();
        if let Some(budget) = &shared.budget {
            budget.deposit(now);
        }
        let started = Some(now);
        // The service that `poll_ready` readied takes the first attempt; retries, if any, take
        // a clone of the template.
        let future = self.inner.call(req);
        ResponseFuture::new(future, request, self.core.clone(), started)
    }
}
