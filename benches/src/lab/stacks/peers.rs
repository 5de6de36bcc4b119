//! The stacks seawall's is compared with: none, a naive retry loop, tower's built-ins and the
//! tower-resilience crate.
//!
//! They see error statuses as errors (5xx and 429, what an HTTP client retries, turned into a
//! [`StatusError`] right above the downstream), as a tower user does with an
//! `error_for_status`-style layer, since tower's retry and tower-resilience's breaker judge
//! errors; their answers come back as statuses at the top. None of them reads `Retry-After`:
//! neither crate has the concept.

use std::future::{Ready, ready};
use std::sync::Arc;

use seawall::hedge::{Delay, HedgeConfig, PercentileDelay};
use seawall_core::BoxError;
use tower::buffer::Buffer;
use tower::hedge::Hedge;
use tower::layer::layer_fn;
use tower::retry::Policy;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Service, ServiceBuilder};

use super::balance::Spread;
use super::settings::{NAIVE_RETRIES, NAIVE_TIMEOUT, PeerSettings};
use super::{SharedRng, StatusError, classify, status_as_error};
use crate::lab::metrics::{BreakerState, Failure};
use crate::lab::sim::{Request, Response};
use crate::lab::workload::{BreakerProbe, Built, EjectedProbe};

fn built<S>(service: S, breaker: Option<BreakerProbe>) -> Built<S> {
    Built {
        service,
        breaker,
        keyed_breaker: false,
        ejected: None,
    }
}

// ===== unprotected =====

/// No protection: the downstream as it is, with only the caller's deadline.
pub fn unprotected(
    downstream: Spread,
    deadline: std::time::Duration,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    let service = ServiceBuilder::new()
        .map_err(classify as fn(BoxError) -> Failure)
        .timeout(deadline)
        .service(downstream);
    built(service, None)
}

// ===== naive =====

/// Retries every failure at once, up to `NAIVE_RETRIES` times.
#[derive(Debug, Clone, Copy)]
struct NaivePolicy {
    retries_left: u32,
}

impl Policy<Request, Response, BoxError> for NaivePolicy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request,
        result: &mut Result<Response, BoxError>,
    ) -> Option<Self::Future> {
        if result.is_err() && self.retries_left > 0 {
            self.retries_left -= 1;
            Some(ready(()))
        } else {
            None
        }
    }

    fn clone_request(&mut self, req: &Request) -> Option<Request> {
        clone(req)
    }
}

fn clone(req: &Request) -> Option<Request> {
    let mut copy = Request::new(*req.body());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// 3 retries, no backoff or jitter, no budget, no breaker, a 1 s timeout per attempt, and
/// the workload's deadline as its total timeout.
pub fn naive(
    downstream: Spread,
    deadline: std::time::Duration,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    let service = ServiceBuilder::new()
        .map_result(status_back as fn(Result<Response, BoxError>) -> Result<Response, Failure>)
        .timeout(deadline)
        .layer(tower::retry::RetryLayer::new(NaivePolicy {
            retries_left: NAIVE_RETRIES,
        }))
        .timeout(NAIVE_TIMEOUT)
        .map_result(status_as_error as fn(_) -> _)
        .service(downstream);
    built(service, None)
}

/// A peer's result with an error status back as the response it was.
fn status_back(result: Result<Response, BoxError>) -> Result<Response, Failure> {
    match result {
        Ok(res) => Ok(res),
        Err(err) => match super::find::<StatusError>(&*err) {
            Some(status) => Ok(status.response()),
            None => Err(classify(err)),
        },
    }
}

// ===== tower =====

/// Retries failures (not load-shed rejections) with jittered exponential backoff, as far as
/// a shared `TpsBudget` allows.
#[derive(Clone)]
struct BudgetPolicy {
    budget: Option<Arc<TpsBudget>>,
    backoff: ExponentialBackoff<SharedRng>,
    retries: u32,
    max_retries: u32,
    deposited: bool,
}

impl Policy<Request, Response, BoxError> for BudgetPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request,
        result: &mut Result<Response, BoxError>,
    ) -> Option<Self::Future> {
        if let Some(budget) = &self.budget
            && !std::mem::replace(&mut self.deposited, true)
        {
            budget.deposit();
        }
        match result {
            Ok(_) => None,
            Err(err) if err.is::<tower::load_shed::error::Overloaded>() => None,
            Err(_) if self.retries >= self.max_retries => None,
            Err(_) if self.budget.as_ref().is_some_and(|b| !b.withdraw()) => None,
            Err(_) => {
                self.retries += 1;
                Some(self.backoff.next_backoff())
            }
        }
    }

    fn clone_request(&mut self, req: &Request) -> Option<Request> {
        clone(req)
    }
}

/// A [`PercentileDelay`]'s values, read through its serde form (its methods are setters).
#[derive(serde::Deserialize)]
struct Percentile {
    quantile: f64,
    min_samples: u64,
    #[serde(with = "seawall_core::config::duration")]
    window: std::time::Duration,
}

/// Hedges every request (tower's hedge has no method or budget check; the lab's requests are
/// all idempotent reads).
#[derive(Debug, Clone, Copy)]
struct HedgeAll;

impl tower::hedge::Policy<Request> for HedgeAll {
    fn clone_request(&self, req: &Request) -> Option<Request> {
        clone(req)
    }

    fn can_retry(&self, _req: &Request) -> bool {
        true
    }
}

/// tower's built-ins: a total timeout, retry with `TpsBudget` and jittered backoff, load shed
/// over a concurrency limit, and a per-attempt timeout.
///
/// With `hedge` (a scenario that asks the stacks to hedge), `tower::hedge` sits between retry
/// and load shed (behind a `Buffer`, since tower's retry clones its service and a hedge is not
/// `Clone`), where the seawall stack hedges: it hedges once a call has waited past the
/// configured percentile of its recent latencies (tower's hedge has only percentile delays, so
/// a fixed delay is read as seawall-hedge's default percentile), after as many samples, over
/// the same rotation period. It has no hedge budget.
pub fn tower(
    downstream: Spread,
    settings: &PeerSettings,
    hedge: Option<&HedgeConfig>,
    seed: u64,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    let mut backoff = ExponentialBackoffMaker::new(
        settings.backoff_base,
        settings.backoff_max.max(settings.backoff_base),
        1.0,
        SharedRng::new(seed),
    )
    .expect("valid backoff settings");
    let policy = BudgetPolicy {
        budget: settings
            .budget
            .map(|b| Arc::new(TpsBudget::new(b.ttl, b.min_per_second, b.ratio as f32))),
        backoff: backoff.make_backoff(),
        retries: 0,
        max_retries: settings.max_retries,
        deposited: false,
    };
    let hedge = hedge.map(|config| {
        let percentile = match config.delay() {
            Delay::Percentile(percentile) => *percentile,
            Delay::Fixed(_) => PercentileDelay::default(),
        };
        let p: Percentile = serde_json::to_value(percentile)
            .and_then(serde_json::from_value)
            .expect("a percentile delay reads back");
        // `Hedge` is not `Clone` and tower's retry clones its service: a `Buffer` makes it so,
        // as a tower user would (a task that owns the hedge; bounded like the concurrency).
        let bound = settings.concurrency.max(1);
        layer_fn(move |service| {
            let hedge = Hedge::new::<Request>(
                service,
                HedgeAll,
                p.min_samples,
                p.quantile as f32,
                p.window,
            );
            Buffer::new(hedge, bound)
        })
    });
    let service = ServiceBuilder::new()
        .map_result(status_back as fn(Result<Response, BoxError>) -> Result<Response, Failure>)
        .timeout(settings.total_timeout)
        .layer(tower::retry::RetryLayer::new(policy))
        .option_layer(hedge)
        .load_shed()
        .concurrency_limit(settings.concurrency)
        .timeout(settings.attempt_timeout)
        .map_result(status_as_error as fn(_) -> _)
        .service(downstream);
    built(service, None)
}

// ===== tower-resilience =====

mod tr {
    pub(super) use tower_resilience::bulkhead::{BulkheadLayer, BulkheadServiceError};
    pub(super) use tower_resilience::circuitbreaker::{
        CircuitBreakerError, CircuitBreakerLayer, CircuitState,
    };
    pub(super) use tower_resilience::hedge::{HedgeError, HedgeLayer};
    pub(super) use tower_resilience::retry::{FnInterval, RetryBudgetBuilder, RetryLayer};
    pub(super) use tower_resilience::timelimiter::{TimeLimiterError, TimeLimiterLayer};
}

type TrAttemptError =
    tr::CircuitBreakerError<tr::BulkheadServiceError<tr::TimeLimiterError<BoxError>>>;
type TrError = tr::TimeLimiterError<TrAttemptError>;

fn classify_tr(result: Result<Response, TrError>) -> Result<Response, Failure> {
    use tr::{BulkheadServiceError as B, CircuitBreakerError as C, TimeLimiterError as T};
    match result {
        Ok(res) => Ok(res),
        Err(T::Timeout) => Err(Failure::Timeout),
        Err(T::Inner(C::OpenCircuit)) => Err(Failure::CircuitOpen),
        Err(T::Inner(C::Inner(B::Bulkhead(_)))) => Err(Failure::BulkheadFull),
        Err(T::Inner(C::Inner(B::Inner(T::Timeout)))) => Err(Failure::Timeout),
        Err(T::Inner(C::Inner(B::Inner(T::Inner(err))))) => status_back(Err(err)),
    }
}

impl From<TrError> for Failure {
    fn from(err: TrError) -> Self {
        match classify_tr(Err(err)) {
            Ok(res) => Failure::Status(res.status().as_u16()),
            Err(failure) => failure,
        }
    }
}

/// An attempt's error as tower-resilience's hedge takes it: its hedge asks for `Clone` errors
/// (and `BoxError` is not), though it moves its attempts' errors and never clones them.
#[derive(Debug)]
struct SharedError(Arc<TrAttemptError>);

impl Clone for SharedError {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

fn share(err: TrAttemptError) -> SharedError {
    SharedError(Arc::new(err))
}

/// The attempt's error back from the hedge's: `AllAttemptsFailed` carries the first attempt's
/// error, as a call that was not hedged fails, so the retry above judges it the same way.
fn unshare(err: tr::HedgeError<SharedError>) -> TrAttemptError {
    Arc::try_unwrap(err.into_inner().0)
        .expect("tower-resilience's hedge moves its attempts' errors, it never clones them")
}

fn is_rejection(err: &TrAttemptError) -> bool {
    use tr::{BulkheadServiceError as B, CircuitBreakerError as C};
    matches!(err, C::OpenCircuit | C::Inner(B::Bulkhead(_)))
}

/// tower-resilience with the same settings: a total time limiter, retry with an AIMD budget
/// (one token per success, `1 / ratio` per retry) and seeded jittered backoff, a count-based
/// circuit breaker, a bulkhead that rejects when full, and a per-attempt time limiter.
///
/// With `hedge` (a scenario that asks the stacks to hedge) and a fixed delay, its hedge sits
/// between retry and the breaker, where the seawall stack hedges, with the same delay and
/// attempts; it has no hedge budget. It has only fixed (or per-attempt) delays, so with a
/// percentile delay it does not hedge.
///
/// Its breaker times its open state with `std::time::Instant`, wall time, which a paused
/// clock does not move: in the lab an opened breaker stays open until the run ends, so a run
/// in which it opened is marked invalid. Its outlier ejection, when the scenario asks for one,
/// is under the balancer in `downstream` ([`spread_tower_resilience`]); `ejected` reads it.
///
/// [`spread_tower_resilience`]: super::balance::spread_tower_resilience
pub fn tower_resilience(
    downstream: Spread,
    settings: &PeerSettings,
    hedge: Option<&HedgeConfig>,
    ejected: Option<EjectedProbe>,
    seed: u64,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    let (breaker, handle) = tr::CircuitBreakerLayer::builder()
        .name("lab")
        .failure_rate_threshold(settings.breaker_failure_rate)
        .sliding_window_size(settings.breaker_window)
        .minimum_number_of_calls(settings.breaker_minimum_calls)
        .wait_duration_in_open(settings.breaker_open)
        .permitted_calls_in_half_open(settings.breaker_probes)
        .build_with_handle()
        .expect("valid breaker settings");
    let bulkhead = tr::BulkheadLayer::builder()
        .max_concurrent_calls(settings.concurrency)
        .reject_when_full()
        .build()
        .expect("valid bulkhead settings");
    let mut retry = tr::RetryLayer::<Request, Response, TrAttemptError>::builder()
        .max_attempts(settings.max_retries as usize + 1);
    if let Some(budget) = settings.budget {
        let withdraw = (1.0 / budget.ratio).round().max(1.0) as usize;
        retry = retry.budget(
            tr::RetryBudgetBuilder::new()
                .aimd()
                .min_budget(budget.min_per_second as usize * withdraw)
                .max_budget(500.max(withdraw * 100))
                .deposit_amount(1)
                .withdraw_amount(withdraw)
                .build()
                .expect("valid budget settings"),
        );
    }
    let rng = SharedRng::new(seed);
    let (base, max) = (settings.backoff_base, settings.backoff_max);
    let retry = retry
        .backoff(tr::FnInterval::new(move |attempt| {
            let step = base.saturating_mul(1 << attempt.min(16)).min(max);
            step.mul_f64(rng.unit())
        }))
        .retry_on(|err: &TrAttemptError| !is_rejection(err))
        .build();
    let hedge = hedge.and_then(|config| match config.delay() {
        Delay::Fixed(delay) => Some(
            ServiceBuilder::new()
                .map_err(unshare as fn(_) -> _)
                .layer(
                    tr::HedgeLayer::builder()
                        .delay(*delay)
                        .max_hedged_attempts(config.max_attempts() as usize)
                        .build(),
                )
                .map_err(share as fn(_) -> _),
        ),
        Delay::Percentile(_) => None,
    });
    let service = ServiceBuilder::new()
        .map_result(classify_tr as fn(Result<Response, TrError>) -> Result<Response, Failure>)
        .layer(
            tr::TimeLimiterLayer::builder()
                .timeout_duration(settings.total_timeout)
                .cancel_running_future(true)
                .build(),
        )
        .layer(retry)
        .option_layer(hedge)
        .layer(breaker)
        .layer(bulkhead)
        .layer(
            tr::TimeLimiterLayer::builder()
                .timeout_duration(settings.attempt_timeout)
                .cancel_running_future(true)
                .build(),
        )
        .map_result(status_as_error as fn(_) -> _)
        .service(downstream);
    let probe: BreakerProbe = Arc::new(move |_key| match handle.state() {
        tr::CircuitState::Closed => BreakerState::Closed,
        tr::CircuitState::Open => BreakerState::Open,
        tr::CircuitState::HalfOpen => BreakerState::HalfOpen,
    });
    Built {
        ejected,
        ..built(service, Some(probe))
    }
}
