//! What every service of one retry layer shares: its settings, budget, metric handles and hook.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use metrics::{Counter, Histogram};
use seawall_core::Hook;
use seawall_core::backoff::Backoff;
use seawall_core::metrics::MetricScope;
use seawall_core::time::nanos;
use tokio::time::Instant;

use crate::budget::RetryBudget;
use crate::config::RetryConfig;
use crate::event::RetryEvent;
use crate::fleet::LayerBudget;

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
    pub(crate) scope: MetricScope,
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
            scope: scope.clone(),
        }
    }
}

/// The settings a handle may reload, shared by every copy of a layer's state: `max_attempts`
/// is read by every call, so it is an atomic; the rest only when a retry is planned, under a
/// lock taken only then.
pub(crate) struct Settings {
    pub(crate) max_attempts: AtomicU32,
    pub(crate) config: RwLock<RetryConfig>,
}

/// What a retry's plan reads of the settings.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_delay: Duration,
    pub(crate) max_elapsed: Option<Duration>,
}

impl Settings {
    fn new(config: &RetryConfig) -> Self {
        Self {
            max_attempts: AtomicU32::new(config.max_attempts),
            config: RwLock::new(config.clone()),
        }
    }

    /// The most attempts a call may make now.
    #[inline]
    pub(crate) fn max_attempts(&self) -> u32 {
        self.max_attempts.load(Ordering::Relaxed)
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> RwLockReadGuard<'_, RetryConfig> {
        self.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limits a retry is planned within now.
    pub(crate) fn limits(&self) -> Limits {
        let config = self.config();
        Limits {
            max_attempts: config.max_attempts,
            backoff: config.backoff,
            max_delay: config.max_delay,
            max_elapsed: config.max_elapsed,
        }
    }

    /// Takes `config` in, which the caller has checked.
    pub(crate) fn set(&self, config: RetryConfig) {
        let mut live = self.config.write().unwrap_or_else(PoisonError::into_inner);
        self.max_attempts
            .store(config.max_attempts, Ordering::Relaxed);
        *live = config;
    }
}

/// Until when a downstream's `Retry-After` holds back every retry of the layer.
///
/// A 429 or 503 with `Retry-After` speaks for the downstream, not for the one request that got
/// it: the requests in flight beside it would otherwise retry into the same refusal before it
/// expires. One word per layer, however many requests: nanoseconds since the layer was built.
pub(crate) struct Suspension {
    epoch: Instant,
    until: AtomicU64,
}

impl Suspension {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            until: AtomicU64::new(0),
        }
    }

    fn nanos_at(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.epoch))
    }

    /// Holds retries back until `after` past `now`, unless they are held longer already.
    pub(crate) fn hold(&self, now: Instant, after: Duration) {
        let until = self.nanos_at(now).saturating_add(nanos(after));
        self.until.fetch_max(until, Ordering::Relaxed);
    }

    /// How long retries are still held back at `now`; zero when they are not.
    pub(crate) fn left(&self, now: Instant) -> Duration {
        let until = self.until.load(Ordering::Relaxed);
        Duration::from_nanos(until.saturating_sub(self.nanos_at(now)))
    }
}

/// What every clone of one layer's services shares.
pub(crate) struct Shared<P> {
    pub(crate) name: Arc<str>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) budget: Option<LayerBudget>,
    pub(crate) seed: u64,
    /// Numbers the retries, whose jitter RNG is seeded from `seed` and this number, so that a
    /// run on one thread repeats exactly.
    pub(crate) sequence: AtomicU64,
    pub(crate) suspension: Arc<Suspension>,
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
            .unwrap_or_else(|| RandomState::new().hash_one(config.name.as_ptr()));
        Self {
            name: config.name.clone().into(),
            settings: Arc::new(Settings::new(config)),
            budget: config
                .budget
                .map(|budget| LayerBudget::Own(RetryBudget::seeded(budget, seed))),
            seed,
            sequence: AtomicU64::new(0),
            suspension: Arc::new(Suspension::new()),
            policy: Arc::new(policy),
            metrics: Metrics::new(&scope),
            on_retry: Hook::default(),
        }
    }

    /// The same settings and metric handles with another policy.
    pub(crate) fn with_policy<Q>(&self, policy: Arc<Q>) -> Shared<Q> {
        Shared {
            name: self.name.clone(),
            settings: self.settings.clone(),
            budget: self.budget.clone(),
            seed: self.seed,
            sequence: AtomicU64::new(0),
            suspension: self.suspension.clone(),
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
