//! The stacks the lab compares, each a tower service over the simulated downstream.
//!
//! Every protected stack gets the same [`Settings`], so the comparison is of the layers, not
//! of their tuning. Each builder returns a [`Built`]: the service, whose errors are already
//! sorted into [`Failure`]s, and, when it has a circuit breaker, a probe of its state.
//!
//! The seawall stack is built by one function, [`seawall()`](fn@seawall): the recommended client
//! stack with the shared settings (and seawall's adaptive bulkhead in place of a fixed limit).

use std::fmt;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::{Rng as _, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seawall_core::{BoxError, RejectionKind, rejected};
use tower::retry::Policy;
use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::lab::metrics::{BreakerState, Failure};
use crate::lab::sim::{Downstream, Request, Response};
use crate::lab::workload::BreakerProbe;

/// The stacks, by the names `--stack` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StackKind {
    /// No protection at all: the downstream as it is.
    Unprotected,
    /// What many clients do: 3 retries, no backoff, no jitter, no budget, a 1 s timeout.
    Naive,
    /// tower's built-ins: retry with `TpsBudget`, timeouts, concurrency limit and load shed.
    Tower,
    /// The tower-resilience crate: retry, circuit breaker, bulkhead and time limiters.
    TowerResilience,
    /// seawall's recommended client stack.
    Seawall,
}

impl StackKind {
    /// Every stack, in report order.
    pub const ALL: [StackKind; 5] = [
        Self::Unprotected,
        Self::Naive,
        Self::Tower,
        Self::TowerResilience,
        Self::Seawall,
    ];

    /// Its name on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unprotected => "unprotected",
            Self::Naive => "naive",
            Self::Tower => "tower",
            Self::TowerResilience => "tower-resilience",
            Self::Seawall => "seawall",
        }
    }

    /// The stack called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for StackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// What every protected stack is configured with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// How long one attempt may take: about ten times the healthy downstream's p99.9.
    pub attempt_timeout: Duration,
    /// How long a call may take, retries included.
    pub total_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first retry's backoff before jitter; it doubles per retry.
    pub backoff_base: Duration,
    /// The longest backoff.
    pub backoff_max: Duration,
    /// Retries allowed as a share of requests: 8.5%, so that with the floor they stay under the
    /// SRE book's 10% of requests at the suite's 1000 req/s (Finagle's and tower's default,
    /// 20%, would let retries add up to 21% load to a failing downstream).
    pub budget_ratio: f32,
    /// Retries allowed per second whatever the ratio (10/s).
    pub budget_floor: u32,
    /// How long deposits count.
    pub budget_ttl: Duration,
    /// Calls in flight at once; past it, calls are rejected at once (seawall's adaptive
    /// bulkhead moves below it).
    pub concurrency: usize,
    /// The failure rate that opens a breaker.
    pub breaker_failure_rate: f64,
    /// The calls a breaker judges its failure rate over: 200, because over 100 calls a 30%
    /// error rate reaches 50% by chance often enough to open a breaker in a long brownout.
    pub breaker_window: usize,
    /// The fewest calls in the window before a breaker may open.
    pub breaker_min_calls: usize,
    /// How long a breaker stays open before probing.
    pub breaker_open: Duration,
    /// Probe calls a half-open breaker lets through.
    pub breaker_probes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_millis(100),
            total_timeout: Duration::from_secs(1),
            max_retries: 2,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            budget_ratio: 0.085,
            budget_floor: 10,
            budget_ttl: Duration::from_secs(10),
            concurrency: 32,
            breaker_failure_rate: 0.5,
            breaker_window: 200,
            breaker_min_calls: 20,
            breaker_open: Duration::from_secs(1),
            breaker_probes: 5,
        }
    }
}

/// The naive client's retries.
pub const NAIVE_RETRIES: u32 = 3;
/// The naive client's timeout.
pub const NAIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// A stack ready to run: its service and, when it has a breaker, a probe of its state.
pub struct Built<S> {
    /// The stack over the downstream.
    pub service: S,
    /// Reads the breaker's state for a key.
    pub breaker: Option<BreakerProbe>,
}

impl<S> fmt::Debug for Built<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Built")
            .field("breaker", &self.breaker.is_some())
            .finish_non_exhaustive()
    }
}

/// Sorts a stack's error into what the client can tell of it.
pub fn classify(err: BoxError) -> Failure {
    if let Some(rejection) = rejected(&*err) {
        return match rejection.kind() {
            RejectionKind::Injected => Failure::Downstream,
            RejectionKind::TimedOut | RejectionKind::DeadlineExceeded => Failure::Timeout,
            RejectionKind::CircuitOpen => Failure::CircuitOpen,
            RejectionKind::BulkheadFull | RejectionKind::RateLimited => Failure::BulkheadFull,
            RejectionKind::BudgetExhausted => Failure::Budget,
            _ => Failure::Other,
        };
    }
    if err.is::<tower::timeout::error::Elapsed>() {
        Failure::Timeout
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        Failure::BulkheadFull
    } else {
        Failure::Other
    }
}

/// A seeded random stream that every clone draws from, so that each retry gets its own
/// jitter (tower's backoff is cloned per request with its generator).
#[derive(Debug, Clone)]
pub struct SharedRng(Arc<Mutex<ChaCha8Rng>>);

impl SharedRng {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))))
    }

    /// A number in `[0, 1)`.
    pub fn unit(&self) -> f64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .random()
    }
}

impl tower::util::rng::Rng for SharedRng {
    fn next_u64(&mut self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_u64()
    }
}

// ===== unprotected =====

/// No protection: the downstream as it is.
pub fn unprotected(
    downstream: Downstream,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    Built {
        service: downstream.map_err(classify as fn(BoxError) -> Failure),
        breaker: None,
    }
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
        Some(*req)
    }
}

/// 3 retries, no backoff or jitter, no budget, no breaker, a 1 s timeout per attempt.
pub fn naive(
    downstream: Downstream,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    let service = ServiceBuilder::new()
        .map_err(classify as fn(BoxError) -> Failure)
        .layer(tower::retry::RetryLayer::new(NaivePolicy {
            retries_left: NAIVE_RETRIES,
        }))
        .timeout(NAIVE_TIMEOUT)
        .service(downstream);
    Built {
        service,
        breaker: None,
    }
}

// ===== tower =====

/// Retries failures (not load-shed rejections) with jittered exponential backoff, as far as
/// a shared `TpsBudget` allows.
#[derive(Clone)]
struct BudgetPolicy {
    budget: Arc<TpsBudget>,
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
        if !std::mem::replace(&mut self.deposited, true) {
            self.budget.deposit();
        }
        match result {
            Ok(_) => None,
            Err(err) if err.is::<tower::load_shed::error::Overloaded>() => None,
            Err(_) if self.retries >= self.max_retries || !self.budget.withdraw() => None,
            Err(_) => {
                self.retries += 1;
                Some(self.backoff.next_backoff())
            }
        }
    }

    fn clone_request(&mut self, req: &Request) -> Option<Request> {
        Some(*req)
    }
}

/// tower's built-ins: a total timeout, retry with `TpsBudget` and jittered backoff, load shed
/// over a concurrency limit, and a per-attempt timeout.
pub fn tower(
    downstream: Downstream,
    settings: &Settings,
    seed: u64,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    let mut backoff = ExponentialBackoffMaker::new(
        settings.backoff_base,
        settings.backoff_max,
        1.0,
        SharedRng::new(seed),
    )
    .expect("valid backoff settings");
    let policy = BudgetPolicy {
        budget: Arc::new(TpsBudget::new(
            settings.budget_ttl,
            settings.budget_floor,
            settings.budget_ratio,
        )),
        backoff: backoff.make_backoff(),
        retries: 0,
        max_retries: settings.max_retries,
        deposited: false,
    };
    let service = ServiceBuilder::new()
        .map_err(classify as fn(BoxError) -> Failure)
        .timeout(settings.total_timeout)
        .layer(tower::retry::RetryLayer::new(policy))
        .load_shed()
        .concurrency_limit(settings.concurrency)
        .timeout(settings.attempt_timeout)
        .service(downstream);
    Built {
        service,
        breaker: None,
    }
}

// ===== tower-resilience =====

mod tr {
    pub(super) use tower_resilience::bulkhead::{BulkheadLayer, BulkheadServiceError};
    pub(super) use tower_resilience::circuitbreaker::{
        CircuitBreakerError, CircuitBreakerLayer, CircuitState,
    };
    pub(super) use tower_resilience::retry::{FnInterval, RetryBudgetBuilder, RetryLayer};
    pub(super) use tower_resilience::timelimiter::{TimeLimiterError, TimeLimiterLayer};
}

type TrAttemptError =
    tr::CircuitBreakerError<tr::BulkheadServiceError<tr::TimeLimiterError<BoxError>>>;
type TrError = tr::TimeLimiterError<TrAttemptError>;

fn classify_tr(err: TrError) -> Failure {
    use tr::{BulkheadServiceError as B, CircuitBreakerError as C, TimeLimiterError as T};
    match err {
        T::Timeout => Failure::Timeout,
        T::Inner(C::OpenCircuit) => Failure::CircuitOpen,
        T::Inner(C::Inner(B::Bulkhead(_))) => Failure::BulkheadFull,
        T::Inner(C::Inner(B::Inner(T::Timeout))) => Failure::Timeout,
        T::Inner(C::Inner(B::Inner(T::Inner(err)))) => classify(err),
    }
}

fn is_rejection(err: &TrAttemptError) -> bool {
    use tr::{BulkheadServiceError as B, CircuitBreakerError as C};
    matches!(err, C::OpenCircuit | C::Inner(B::Bulkhead(_)))
}

/// tower-resilience with the same settings: a total time limiter, retry with an AIMD budget
/// (one token per success, five per retry: the 20% ratio) and seeded jittered backoff, a
/// count-based circuit breaker, a bulkhead that rejects when full, and a per-attempt time
/// limiter.
///
/// Its breaker times its open state with `std::time::Instant`, wall time, which a paused
/// clock does not move: in the lab an opened breaker stays open until the run ends.
pub fn tower_resilience(
    downstream: Downstream,
    settings: &Settings,
    seed: u64,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    let (breaker, handle) = tr::CircuitBreakerLayer::builder()
        .name("lab")
        .failure_rate_threshold(settings.breaker_failure_rate)
        .sliding_window_size(settings.breaker_window)
        .minimum_number_of_calls(settings.breaker_min_calls)
        .wait_duration_in_open(settings.breaker_open)
        .permitted_calls_in_half_open(settings.breaker_probes)
        .build_with_handle()
        .expect("valid breaker settings");
    let bulkhead = tr::BulkheadLayer::builder()
        .max_concurrent_calls(settings.concurrency)
        .reject_when_full()
        .build()
        .expect("valid bulkhead settings");
    let budget = tr::RetryBudgetBuilder::new()
        .aimd()
        .min_budget(50)
        .max_budget(500)
        .deposit_amount(1)
        .withdraw_amount(5)
        .build()
        .expect("valid budget settings");
    let rng = SharedRng::new(seed);
    let (base, max) = (settings.backoff_base, settings.backoff_max);
    let retry = tr::RetryLayer::<Request, Response, TrAttemptError>::builder()
        .max_attempts(settings.max_retries as usize + 1)
        .backoff(tr::FnInterval::new(move |attempt| {
            let step = base.saturating_mul(1 << attempt.min(16)).min(max);
            step + step.mul_f64(rng.unit())
        }))
        .budget(budget)
        .retry_on(|err: &TrAttemptError| !is_rejection(err))
        .build();
    let service = ServiceBuilder::new()
        .map_err(classify_tr as fn(TrError) -> Failure)
        .layer(
            tr::TimeLimiterLayer::builder()
                .timeout_duration(settings.total_timeout)
                .cancel_running_future(true)
                .build(),
        )
        .layer(retry)
        .layer(breaker)
        .layer(bulkhead)
        .layer(
            tr::TimeLimiterLayer::builder()
                .timeout_duration(settings.attempt_timeout)
                .cancel_running_future(true)
                .build(),
        )
        .service(downstream);
    let probe: BreakerProbe = Arc::new(move |_key| match handle.state() {
        tr::CircuitState::Closed => BreakerState::Closed,
        tr::CircuitState::Open => BreakerState::Open,
        tr::CircuitState::HalfOpen => BreakerState::HalfOpen,
    });
    Built {
        service,
        breaker: Some(probe),
    }
}

// ===== seawall =====

/// seawall's recommended client stack, outermost first:
///
/// 1. total timeout (`total_timeout`): retries never outlast the caller;
/// 2. retry (`max_retries`, exponential backoff from `backoff_base` to `backoff_max` with full
///    jitter seeded from `seed`, a retry budget of `budget_*`), which never retries an open
///    breaker or plans a wait past the total timeout;
/// 3. circuit breaker keyed by `Request::key`, so that only a failing shard's breaker opens;
/// 4. per-attempt timeout (`attempt_timeout`);
/// 5. an adaptive bulkhead (Gradient2 between a quarter of `concurrency` and `concurrency`,
///    judged every 100 ms; no queue: full means an immediate rejection), which holds the
///    concurrency where the downstream's latency stays flat, so overload is shed at the door
///    while hung calls (slow-drip) can still have their slots;
///
/// then the downstream. Errors go through [`classify`], which knows every `Rejected` kind.
pub fn seawall(
    downstream: Downstream,
    settings: &Settings,
    seed: u64,
) -> Built<impl Service<Request, Response = Response, Error = Failure>> {
    use seawall::bulkhead::{BulkheadLayer, Gradient2Config};
    use seawall::circuit_breaker::{CircuitBreakerConfig, CircuitState, KeyedCircuitBreakerLayer};
    use seawall::retry::{BudgetConfig, RetryConfig, RetryLayer};
    use seawall::timeout::TimeoutLayer;
    use seawall_core::backoff::{Backoff, Jitter};

    let timeout = |name: &str, timeout| {
        TimeoutLayer::builder()
            .name(name)
            .timeout(timeout)
            .build()
            .expect("valid timeout")
    };
    let backoff = Backoff::exponential(settings.backoff_base)
        .cap(settings.backoff_max)
        .jitter(Jitter::Full)
        .build()
        .expect("valid backoff");
    let budget = BudgetConfig::new(
        f64::from(settings.budget_ratio),
        settings.budget_floor,
        settings.budget_ttl,
    )
    .expect("valid budget");
    let retry = RetryConfig::builder()
        .name("lab")
        .max_attempts(settings.max_retries + 1)
        .backoff(backoff)
        .budget(budget)
        .seed(seed)
        .build()
        .expect("valid retry")
        .within(settings.total_timeout);
    let breaker_config = CircuitBreakerConfig::builder()
        .name("lab")
        .count_window(settings.breaker_window as u32)
        .minimum_calls(settings.breaker_min_calls as u32)
        .failure_rate_threshold(settings.breaker_failure_rate)
        .open_duration(settings.breaker_open)
        .half_open_probes(settings.breaker_probes as u32)
        .build()
        .expect("valid breaker");
    let breaker = KeyedCircuitBreakerLayer::new(breaker_config, |req: &Request| req.key);
    let bulkhead = BulkheadLayer::builder()
        .name("lab")
        .adaptive(
            Gradient2Config::new()
                .initial(settings.concurrency)
                .min(settings.concurrency / 4)
                .max(settings.concurrency),
        )
        .max_queue(0)
        .sample_window(Duration::from_millis(100))
        .build()
        .expect("valid bulkhead");
    let handles = breaker.clone();
    let probe: BreakerProbe = Arc::new(move |key| match handles.handle(&key).map(|h| h.state()) {
        Some(CircuitState::Open | CircuitState::ForcedOpen) => BreakerState::Open,
        Some(CircuitState::HalfOpen) => BreakerState::HalfOpen,
        _ => BreakerState::Closed,
    });
    let service = ServiceBuilder::new()
        .map_err(classify as fn(BoxError) -> Failure)
        .layer(timeout("total", settings.total_timeout))
        .layer(RetryLayer::new(retry))
        .layer(breaker)
        .layer(timeout("attempt", settings.attempt_timeout))
        .layer(bulkhead)
        .service(downstream);
    Built {
        service,
        breaker: Some(probe),
    }
}
