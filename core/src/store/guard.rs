//! The timeout and breaker around a layer's calls to its shared store, its failure policy
//! and its errors.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use crate::config::{self, ConfigError, Raw, Scalar, Written};
use crate::metrics::MetricScope;

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
const MAX_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_FAILURES: u32 = 3;
const MAX_FAILURES: u32 = 1000;
const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(1);
const OPEN_FOR: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(3600);

/// What a layer does with a call when its shared store cannot answer in time (it failed, hung
/// past the timeout, or its breaker is open).
///
/// There is no default: whether a quota may be exceeded while its store is down is a product
/// decision. Written in configuration files as `"fail_open"`, `"fail_closed"` or `"local"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnStoreFailure {
    /// Admit the call (a rate limit) or allow the retry (a budget), and count it in the
    /// fallback metric: availability over the quota.
    FailOpen,
    /// Refuse the call with a rejection of kind `StoreUnavailable` (`503` with `Retry-After`
    /// over HTTP), or the retry: the quota over availability.
    FailClosed,
    /// Apply a local share of the quota in each replica (for a rate limit, the quota divided
    /// by the expected number of replicas): the fleet keeps roughly its quota while each
    /// replica decides alone.
    Local,
}

impl OnStoreFailure {
    /// Every policy.
    pub const ALL: [Self; 3] = [Self::FailOpen, Self::FailClosed, Self::Local];

    /// Its name in configuration files and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
            Self::Local => "local",
        }
    }

    /// What a configuration error says the field expects.
    pub const EXPECTED: &'static str = "one of `fail_open`, `fail_closed`, `local`";
}

impl crate::metrics::Label for OnStoreFailure {
    const KEY: &'static str = "policy";
    const ALL: &'static [Self] = &Self::ALL;

    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

impl fmt::Display for OnStoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Scalar for OnStoreFailure {
    fn from_written(written: &Written) -> Option<Self> {
        match written {
            Written::Str(s) => Self::ALL.into_iter().find(|p| p.as_str() == s.trim()),
            _ => None,
        }
    }

    fn write<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The timeout and breaker around a layer's calls to its shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreGuardConfig {
    timeout: Duration,
    failures: u32,
    open_for: Duration,
}

impl Default for StoreGuardConfig {
    /// A 50 ms timeout; the breaker opens after 3 failures in a row, for 1 s.
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            failures: DEFAULT_FAILURES,
            open_for: DEFAULT_OPEN_FOR,
        }
    }
}

impl StoreGuardConfig {
    /// Calls bounded by `timeout` in `(0s, 10s]`; the breaker opens after `failures` in
    /// `[1, 1000]` failed calls in a row, for `open_for` in `[1ms, 1h]`.
    pub fn new(timeout: Duration, failures: u32, open_for: Duration) -> Result<Self, ConfigError> {
        Self::from_raw(timeout.into(), failures.into(), open_for.into())
    }

    /// As [`new`](Self::new), from the fields as written in a configuration file (`timeout`,
    /// `failures`, `open_for`), with errors that name them.
    pub fn from_raw(
        timeout: Raw<Duration>,
        failures: Raw<u32>,
        open_for: Raw<Duration>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            timeout: config::positive_duration("timeout", timeout, MAX_TIMEOUT)?,
            failures: config::count_in("failures", failures, 1..=MAX_FAILURES)?,
            open_for: config::duration_in("open_for", open_for, OPEN_FOR)?,
        })
    }

    /// The longest a call to the store may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Failed calls in a row that open the breaker.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How long the breaker stays open before a call probes the store again.
    pub fn open_for(&self) -> Duration {
        self.open_for
    }
}

/// Why a call to a shared store failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// No answer within the guard's timeout.
    Timeout,
    /// The store could not be reached: refused, reset or closed connections.
    Connection,
    /// The store answered with an error of its own, such as a failing script.
    Script,
    /// The store's answer made no sense: a malformed reply, or one of the wrong shape.
    Response,
}

impl StoreErrorKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [
        Self::Timeout,
        Self::Connection,
        Self::Script,
        Self::Response,
    ];

    /// The `error` label of the errors metric.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Script => "script",
            Self::Response => "response",
        }
    }
}

impl crate::metrics::Label for StoreErrorKind {
    const KEY: &'static str = "error";
    const ALL: &'static [Self] = &Self::ALL;

    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

/// A failed call to a shared store. Its message is for logs, never for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

impl StoreError {
    /// A failure of `kind`, described by `message`.
    pub fn new(kind: StoreErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }

    /// Why the call failed.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// What the store or its client said.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store {}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for StoreError {}

/// The names of a layer's store metrics; each layer keeps its own prefix
/// (`seawall_rate_limit_store_...`, `seawall_retry_budget_store_...`).
#[derive(Debug, Clone, Copy)]
pub struct StoreMetricNames {
    /// Failed calls to the store, by `error`.
    pub errors: &'static str,
    /// Calls made to the store, answered or not.
    pub round_trips: &'static str,
    /// How long the calls the store answered took, in seconds.
    pub round_trip_seconds: &'static str,
    /// Decisions made by the failure policy, by `policy`.
    pub fallbacks: &'static str,
}

/// The metric handles of one guard.
#[derive(Clone)]
struct StoreMetrics {
    errors: [Counter; StoreErrorKind::ALL.len()],
    fallbacks: [Counter; OnStoreFailure::ALL.len()],
    round_trips: Counter,
    round_trip_seconds: Histogram,
}

impl StoreMetrics {
    fn new(scope: &MetricScope, names: &StoreMetricNames) -> Self {
        Self {
            errors: scope.counters::<StoreErrorKind, { StoreErrorKind::ALL.len() }>(names.errors),
            fallbacks: scope
                .counters::<OnStoreFailure, { OnStoreFailure::ALL.len() }>(names.fallbacks),
            round_trips: scope.counter(names.round_trips, &[]),
            round_trip_seconds: scope.histogram(names.round_trip_seconds, &[]),
        }
    }
}

// The breaker's state in one word: two bits of state, 62 of payload.
const STATE_SHIFT: u32 = 62;
const PAYLOAD: u64 = (1 << STATE_SHIFT) - 1;
/// Closed; the payload counts failed calls in a row.
const CLOSED: u64 = 0;
/// Open; the payload is when a probe may go, in ns after the epoch.
const OPEN: u64 = 1;
/// A probe is out; the payload is when it times out, after which another may go.
const PROBING: u64 = 2;

fn pack(state: u64, payload: u64) -> u64 {
    (state << STATE_SHIFT) | (payload & PAYLOAD)
}

/// The timeout and breaker around a layer's calls to its shared store, and their metrics.
///
/// Made once per layer and shared by its clones; deciding whether a call may go is one atomic
/// load while the breaker is closed.
pub struct StoreGuard {
    config: StoreGuardConfig,
    name: Arc<str>,
    epoch: Instant,
    state: AtomicU64,
    metrics: StoreMetrics,
}

impl fmt::Debug for StoreGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreGuard")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("open", &self.is_open())
            .finish()
    }
}

impl StoreGuard {
    /// A closed guard whose metrics are registered in `scope` under `names`.
    pub fn new(config: StoreGuardConfig, scope: &MetricScope, names: &StoreMetricNames) -> Self {
        Self {
            config,
            name: scope.name().clone(),
            epoch: Instant::now(),
            state: AtomicU64::new(pack(CLOSED, 0)),
            metrics: StoreMetrics::new(scope, names),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &StoreGuardConfig {
        &self.config
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(PAYLOAD)
    }

    fn remaining(&self, until: u64, now: u64) -> Duration {
        Duration::from_nanos(until.saturating_sub(now))
    }

    /// Whether the breaker keeps calls from the store now (open, or a probe is out).
    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) >> STATE_SHIFT != CLOSED
    }

    /// Whether a call may go to the store now; `Err` with how long until the breaker lets one
    /// through again.
    ///
    /// While open, the first call after `open_for` is let through as the probe; calls during
    /// the probe are kept out until it answers or times out.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (state, payload) = (current >> STATE_SHIFT, current & PAYLOAD);
            if state == CLOSED {
                return Ok(());
            }
            let now = self.nanos(Instant::now());
            if now < payload {
                return Err(self.remaining(payload, now));
            }
            let probe_until = now.saturating_add(nanos(self.config.timeout));
            match self.state.compare_exchange(
                current,
                pack(PROBING, probe_until),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    tracing::debug!(name = %self.name, "probing the shared store");
                    return Ok(());
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Bounds an admitted call by the timeout, and records how it went when it ends.
    ///
    /// Dropped before it ends, it records nothing; a probe dropped that way lets the next
    /// probe go once its timeout has passed.
    pub fn guard<F, T>(self: &Arc<Self>, call: F) -> Guarded<F>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        Guarded {
            call,
            timeout: sleep_until(started + self.config.timeout),
            guard: self.clone(),
            started,
        }
    }

    /// Records a call that answered after `elapsed`, closing the breaker.
    pub fn succeeded(&self, elapsed: Duration) {
        self.metrics.round_trips.increment(1);
        self.metrics
            .round_trip_seconds
            .record(elapsed.as_secs_f64());
        let closed = pack(CLOSED, 0);
        let before = self.state.swap(closed, Ordering::AcqRel);
        if before >> STATE_SHIFT != CLOSED {
            tracing::info!(name = %self.name, "shared store answers again, breaker closed");
        }
    }

    /// Records a failed call, opening the breaker after enough failures in a row.
    pub fn failed(&self, error: &StoreError) {
        self.metrics.errors[error.kind as usize].increment(1);
        self.metrics.round_trips.increment(1);
        tracing::warn!(name = %self.name, %error, "shared store call failed");
        let open_for = nanos(self.config.open_for);
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (state, payload) = (current >> STATE_SHIFT, current & PAYLOAD);
            let next = match state {
                CLOSED if payload + 1 < u64::from(self.config.failures) => {
                    pack(CLOSED, payload + 1)
                }
                OPEN => return,
                _ => pack(OPEN, self.nanos(Instant::now()).saturating_add(open_for)),
            };
            match self
                .state
                .compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if next >> STATE_SHIFT == OPEN {
                        tracing::warn!(
                            name = %self.name,
                            open_for = ?self.config.open_for,
                            "shared store failing, breaker open: the failure policy decides"
                        );
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Counts a decision the failure policy made.
    pub fn fell_back(&self, policy: OnStoreFailure) {
        self.metrics.fallbacks[policy as usize].increment(1);
        tracing::debug!(name = %self.name, %policy, "shared store unavailable, policy applied");
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(PAYLOAD)
}

pin_project! {
    /// A call to a shared store bounded by its guard's timeout; see [`StoreGuard::guard`].
    pub struct Guarded<F> {
        #[pin]
        call: F,
        #[pin]
        timeout: Sleep,
        guard: Arc<StoreGuard>,
        started: Instant,
    }
}

impl<F> fmt::Debug for Guarded<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("guard", &self.guard.name)
            .finish_non_exhaustive()
    }
}

impl<F, T> Future for Guarded<F>
where
    F: Future<Output = Result<T, StoreError>>,
{
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.call.poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                ready!(this.timeout.poll(cx));
                Err(StoreError::new(
                    StoreErrorKind::Timeout,
                    format_args!("no answer within {:?}", this.guard.config.timeout),
                ))
            }
        };
        match &result {
            Ok(_) => this.guard.succeeded(this.started.elapsed()),
            Err(error) => this.guard.failed(error),
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestRecorder;

    const NAMES: StoreMetricNames = StoreMetricNames {
        errors: "seawall_test_store_errors_total",
        round_trips: "seawall_test_store_round_trips_total",
        round_trip_seconds: "seawall_test_store_round_trip_seconds",
        fallbacks: "seawall_test_store_fallbacks_total",
    };

    fn guard(failures: u32) -> Arc<StoreGuard> {
        let config =
            StoreGuardConfig::new(Duration::from_millis(50), failures, Duration::from_secs(1))
                .unwrap();
        Arc::new(StoreGuard::new(config, &MetricScope::new("t"), &NAMES))
    }

    fn fail(kind: StoreErrorKind) -> impl Future<Output = Result<(), StoreError>> {
        std::future::ready(Err(StoreError::new(kind, "boom")))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let g = guard(3);
        for _ in 0..2 {
            g.guard(fail(StoreErrorKind::Connection)).await.unwrap_err();
        }
        g.guard(std::future::ready(Ok::<_, StoreError>(())))
            .await
            .unwrap();
        for _ in 0..2 {
            g.guard(fail(StoreErrorKind::Script)).await.unwrap_err();
        }
        assert!(g.admit().is_ok(), "two in a row since the success");
        g.guard(fail(StoreErrorKind::Response)).await.unwrap_err();
        assert_eq!(g.admit(), Err(Duration::from_secs(1)));
        assert!(g.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_after_open_for_and_its_success_closes() {
        let g = guard(1);
        g.guard(fail(StoreErrorKind::Connection)).await.unwrap_err();
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(g.admit(), Err(Duration::from_millis(600)));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(g.admit().is_ok(), "the probe");
        assert!(g.admit().is_err(), "only one probe at a time");
        g.guard(std::future::ready(Ok::<_, StoreError>(())))
            .await
            .unwrap();
        assert!(g.admit().is_ok() && !g.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_a_lost_probe_expires() {
        let g = guard(1);
        g.guard(fail(StoreErrorKind::Connection)).await.unwrap_err();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(g.admit().is_ok());
        g.guard(fail(StoreErrorKind::Connection)).await.unwrap_err();
        assert_eq!(g.admit(), Err(Duration::from_secs(1)), "open again");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(g.admit().is_ok(), "a probe whose call is dropped...");
        assert!(g.admit().is_err());
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(g.admit().is_ok(), "...lets another go after the timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_hangs_ends_at_the_timeout() {
        let g = guard(3);
        let started = Instant::now();
        let err = g
            .guard(std::future::pending::<Result<(), StoreError>>())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Timeout);
        assert_eq!(started.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn errors_fallbacks_and_round_trips_are_counted() {
        let recorder = TestRecorder::new();
        let g = recorder.install_for(|| guard(10));
        g.guard(fail(StoreErrorKind::Script)).await.unwrap_err();
        g.guard(std::future::pending::<Result<(), StoreError>>())
            .await
            .unwrap_err();
        g.guard(std::future::ready(Ok::<_, StoreError>(())))
            .await
            .unwrap();
        g.fell_back(OnStoreFailure::Local);
        let count = |metric, labels: &[(&str, &str)]| recorder.counter(metric, labels);
        assert_eq!(
            count(NAMES.errors, &[("name", "t"), ("error", "script")]),
            1
        );
        assert_eq!(
            count(NAMES.errors, &[("name", "t"), ("error", "timeout")]),
            1
        );
        assert_eq!(count(NAMES.round_trips, &[("name", "t")]), 3);
        assert_eq!(
            count(NAMES.fallbacks, &[("name", "t"), ("policy", "local")]),
            1
        );
        assert_eq!(
            recorder
                .histogram(NAMES.round_trip_seconds, &[("name", "t")])
                .len(),
            1
        );
    }

    #[test]
    fn config_errors_name_the_field_and_its_range() {
        let err = StoreGuardConfig::new(Duration::ZERO, 3, Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `timeout`: 0ns is outside the allowed range (0s, 10s]"
        );
        let err = StoreGuardConfig::new(DEFAULT_TIMEOUT, 0, Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.field(), "failures");
        let err = StoreGuardConfig::new(DEFAULT_TIMEOUT, 3, Duration::ZERO).unwrap_err();
        assert_eq!(err.field(), "open_for");
        let policy = Raw::<OnStoreFailure>::from(OnStoreFailure::Local);
        assert_eq!(
            policy.value("on_failure", OnStoreFailure::EXPECTED),
            Ok(OnStoreFailure::Local)
        );
    }
}
