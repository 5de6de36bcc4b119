//! Registering a layer's metric handles once, when the layer is built.
//!
//! A layer never looks a metric up by name per call: it keeps the [`Counter`], [`Gauge`] and
//! [`Histogram`] handles this module registers with the recorder in place at build time (the
//! global one, or a local one in tests), every one labelled `name = <layer instance>`, and
//! describes each metric to that recorder (help text and unit) as it does, so that the
//! Prometheus exporter writes `# HELP` for every seawall metric.
//!
//! A layer is often built before the application installs its recorder (in a `lazy` static, a
//! constructor, a test). `metrics` then hands out handles that drop every value, silently, for
//! good. A handle registered here while no recorder is installed is a stand-in instead: it
//! binds itself to the recorder (registering and describing the metric) once one is installed,
//! together with the other handles of its scope, so a recorder installed after the layer is
//! built still gets its metrics. Until then, counts and histogram samples are dropped, as
//! `metrics`' own macros drop them, while gauges (which report state, not calls) keep their
//! value and hand it over (a gauge set once at build time is exported from the layer's first
//! call on; see [`MetricScope::bind_late`]).
//!
//! A [`Counter`] or histogram stand-in looks for a recorder on each use. A [`CallCounter`], on
//! a layer's per-call path, does not: without a recorder its count costs a load and a branch
//! on its state and a thread-local countdown, and it looks only when the countdown runs out,
//! once every [`LOOK_EVERY`] dropped counts on the thread. A recorder installed later is so
//! found within `LOOK_EVERY` per-call counts on each thread; from then on it gets every count
//! ([`MetricScope::bind_late`] binds at once). Handles registered with a recorder in place are
//! the recorder's own, with no cost added per call.
//!
//! Call latency goes to histograms (`*_seconds`, and retry's attempts per call). The `metrics`
//! facade has no notion of buckets: the Prometheus exporter renders a histogram as a summary
//! (quantiles over a sliding window) unless it is given buckets, which dashboards and alerts
//! need to aggregate across replicas. [`HISTOGRAMS`] lists every seawall histogram with its
//! default buckets ([`DURATION_BUCKETS`], [`ATTEMPT_BUCKETS`]), ready for the exporter's
//! `set_buckets_for_metric`:
//!
//! ```ignore
//! let mut builder = metrics_exporter_prometheus::PrometheusBuilder::new();
//! for &(metric, buckets) in seawall_core::metrics::HISTOGRAMS {
//!     builder = builder.set_buckets_for_metric(Matcher::Full(metric.into()), buckets)?;
//! }
//! ```
//!
//! ```
//! # #[cfg(feature = "test-util")] {
//! use seawall_core::metrics::MetricScope;
//! use seawall_core::testing::TestRecorder;
//!
//! // Built before any recorder is installed: counts made now are dropped...
//! let calls = MetricScope::new("db").counter("seawall_timeout_calls_total", &[("result", "completed")]);
//! calls.increment(2);
//! // ...and the recorder installed later gets every count from then on.
//! let recorder = TestRecorder::new();
//! recorder.install_for(|| calls.increment(1));
//! calls.increment(1);
//! assert_eq!(recorder.counter("seawall_timeout_calls_total", &[("name", "db")]), 2);
//! # }
//! ```

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Label as KeyLabel,
    Level, Metadata, Recorder, SharedString, Unit,
};

/// The metric handles of one layer instance are registered through this.
///
/// Handles registered before a recorder is installed bind to one installed later, the scope's
/// handles together: counts and histogram samples made before it is found are dropped, gauge
/// values are handed over (see the [module docs](self)).
#[derive(Clone)]
pub struct MetricScope {
    name: Arc<str>,
    waiting: Arc<Waiting>,
}

impl fmt::Debug for MetricScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricScope")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Every seawall metric: its name, unit and help text.
const DESCRIPTIONS: &[(&str, Option<Unit>, &str)] = &[
    (
        "seawall_bulkhead_idle_released_total",
        Some(Unit::Count),
        "Slots given back because the response body's reader stopped reading.",
    ),
    (
        "seawall_bulkhead_in_flight",
        Some(Unit::Count),
        "Calls holding a bulkhead slot.",
    ),
    (
        "seawall_bulkhead_limit",
        Some(Unit::Count),
        "The bulkhead's current concurrency limit.",
    ),
    (
        "seawall_bulkhead_queued",
        Some(Unit::Count),
        "Calls waiting for a bulkhead slot.",
    ),
    (
        "seawall_bulkhead_rejected_total",
        Some(Unit::Count),
        "Calls a full bulkhead rejected.",
    ),
    (
        "seawall_bulkhead_wait_seconds",
        Some(Unit::Seconds),
        "How long calls waited for a bulkhead slot.",
    ),
    (
        "seawall_chaos_injected_total",
        Some(Unit::Count),
        "Faults a chaos layer injected, by fault.",
    ),
    (
        "seawall_circuit_breaker_call_duration_seconds",
        Some(Unit::Seconds),
        "How long calls the breaker let through took, to their outcome.",
    ),
    (
        "seawall_circuit_breaker_calls_total",
        Some(Unit::Count),
        "Calls through a circuit breaker, by outcome.",
    ),
    (
        "seawall_circuit_breaker_failure_rate",
        None,
        "The failure rate in the breaker's window, from 0 to 1.",
    ),
    (
        "seawall_circuit_breaker_slow_call_rate",
        None,
        "The slow-call rate in the breaker's window, from 0 to 1.",
    ),
    (
        "seawall_circuit_breaker_state",
        None,
        "1 for the breaker's current state, 0 for the others.",
    ),
    (
        "seawall_circuit_breaker_transitions_total",
        Some(Unit::Count),
        "Circuit breaker state changes, by from and to.",
    ),
    (
        "seawall_fallback_calls_total",
        Some(Unit::Count),
        "Calls through a fallback layer.",
    ),
    (
        "seawall_fallback_total",
        Some(Unit::Count),
        "Calls answered by a fallback, by cause.",
    ),
    (
        "seawall_health_state",
        None,
        "1 for the component's current health state, 0 for the others.",
    ),
    (
        "seawall_hedge_budget_exhausted_total",
        Some(Unit::Count),
        "Hedges not sent because the hedge budget was spent.",
    ),
    (
        "seawall_hedge_calls_total",
        Some(Unit::Count),
        "Calls through a hedge layer.",
    ),
    (
        "seawall_hedge_sent_total",
        Some(Unit::Count),
        "Hedges sent (attempts after a call's first).",
    ),
    (
        "seawall_hedge_won_total",
        Some(Unit::Count),
        "Calls a hedge answered before the first attempt did.",
    ),
    (
        "seawall_outlier_ejected",
        None,
        "Endpoints of the set ejected now.",
    ),
    (
        "seawall_outlier_ejections_skipped_total",
        Some(Unit::Count),
        "Ejections refused because the share of endpoints ejected was at its cap.",
    ),
    (
        "seawall_outlier_ejections_total",
        Some(Unit::Count),
        "Endpoints ejected, by reason.",
    ),
    (
        "seawall_outlier_endpoint_ejected",
        None,
        "1 while the endpoint is ejected, 0 while it is in (with per-endpoint labels only).",
    ),
    ("seawall_outlier_endpoints", None, "Endpoints in the set."),
    (
        "seawall_rate_limit_keys_evicted_total",
        Some(Unit::Count),
        "Keys a keyed rate limit evicted to make room for new ones.",
    ),
    (
        "seawall_rate_limit_calls_total",
        Some(Unit::Count),
        "Calls through a rate limit, by result.",
    ),
    (
        "seawall_rate_limit_store_errors_total",
        Some(Unit::Count),
        "Failed calls from a rate limit to its shared quota store, by error.",
    ),
    (
        "seawall_rate_limit_store_fallbacks_total",
        Some(Unit::Count),
        "Rate limit decisions made by the failure policy while the shared store could not answer, by policy.",
    ),
    (
        "seawall_rate_limit_store_round_trip_seconds",
        Some(Unit::Seconds),
        "How long the rate limit's calls to its shared quota store took.",
    ),
    (
        "seawall_rate_limit_store_round_trips_total",
        Some(Unit::Count),
        "Calls from a rate limit to its shared quota store.",
    ),
    (
        "seawall_retry_attempts_total",
        Some(Unit::Count),
        "Attempts sent, the first of each call included: over seawall_retry_calls_total, the load retries multiply.",
    ),
    (
        "seawall_retry_budget_exhausted_total",
        Some(Unit::Count),
        "Retries refused because the retry budget was spent.",
    ),
    (
        "seawall_retry_budget_store_errors_total",
        Some(Unit::Count),
        "Failed calls from a fleet-wide retry budget to its shared store, by error.",
    ),
    (
        "seawall_retry_budget_store_fallbacks_total",
        Some(Unit::Count),
        "Retry budget decisions made by the failure policy while the shared store could not answer, by policy.",
    ),
    (
        "seawall_retry_budget_store_round_trip_seconds",
        Some(Unit::Seconds),
        "How long the retry budget's calls to its shared store took.",
    ),
    (
        "seawall_retry_budget_store_round_trips_total",
        Some(Unit::Count),
        "Calls from a fleet-wide retry budget to its shared store.",
    ),
    (
        "seawall_retry_call_attempts",
        Some(Unit::Count),
        "Attempts per call through a retry layer, the first included.",
    ),
    (
        "seawall_retry_call_duration_seconds",
        Some(Unit::Seconds),
        "How long calls through a retry layer took, every attempt and wait included.",
    ),
    (
        "seawall_retry_calls_total",
        Some(Unit::Count),
        "Calls through a retry layer, by kind.",
    ),
    (
        "seawall_throttle_calls_total",
        Some(Unit::Count),
        "Calls through a client-side throttle, by result.",
    ),
    (
        "seawall_throttle_rejection_probability",
        None,
        "The probability that a call is rejected locally now, from 0 to 1.",
    ),
    (
        "seawall_timeout_calls_total",
        Some(Unit::Count),
        "Calls through a timeout, by result.",
    ),
    (
        "seawall_timeout_remaining_seconds",
        Some(Unit::Seconds),
        "Time left of a call's timeout when it ended (0 for calls that timed out).",
    ),
];

/// Default buckets of the duration histograms, in seconds: 1 ms to 10 s, about three per
/// decade, so that p50 and p99 of calls from a fast cache to a slow dependency stay within a
/// bucket of the truth and the 1 s to 10 s timeouts of a typical stack fall on a boundary.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Default buckets of the attempts-per-call histogram: one bucket per attempt up to five, then
/// the long tail a generous `max_attempts` allows.
pub const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 10.0];

/// Every seawall histogram and its default buckets.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    ("seawall_bulkhead_wait_seconds", DURATION_BUCKETS),
    (
        "seawall_circuit_breaker_call_duration_seconds",
        DURATION_BUCKETS,
    ),
    ("seawall_retry_call_attempts", ATTEMPT_BUCKETS),
    ("seawall_retry_call_duration_seconds", DURATION_BUCKETS),
    ("seawall_timeout_remaining_seconds", DURATION_BUCKETS),
];

/// The unit and help text of `metric`; one that is missing from the table still gets help
/// text, so that a scrape stays valid.
fn description(metric: &'static str) -> (Option<Unit>, SharedString) {
    match DESCRIPTIONS.iter().find(|(name, ..)| *name == metric) {
        Some(&(_, unit, help)) => (unit, SharedString::const_str(help)),
        None => (None, SharedString::const_str("A seawall metric.")),
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn describe(recorder: &dyn Recorder, kind: Kind, metric: &'static str) {
    let (unit, help) = description(metric);
    let name = KeyName::from_const_str(metric);
    match kind {
        Kind::Counter => recorder.describe_counter(name, unit, help),
        Kind::Gauge => recorder.describe_gauge(name, unit, help),
        Kind::Histogram => recorder.describe_histogram(name, unit, help),
    }
}

/// Whether `recorder` is the no-op one `metrics` falls back to when none is installed.
///
/// `metrics` has no way to ask; its fallback is zero-sized, while a recorder that records
/// anything holds its storage.
fn is_fallback(recorder: &dyn Recorder) -> bool {
    std::mem::size_of_val(recorder) == 0
}

/// Whether a recorder is installed now, globally or on this thread: a thread-local and a
/// global load. A layer that keeps a gauge only for a recorder asks this until one is.
#[inline]
pub fn recorder_installed() -> bool {
    !metrics::with_recorder(is_fallback)
}

impl MetricScope {
    /// A scope whose metrics carry the label `name = <name>`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            waiting: Arc::default(),
        }
    }

    /// Binds the handles registered before a recorder was installed, if one is now. A handle
    /// binds itself when it finds one (a [`Counter`], gauge or histogram on its next use, a
    /// [`CallCounter`] within [`LOOK_EVERY`] counts on a thread), and the scope's others with
    /// it; code that may go long without recording anything (a health tracker between
    /// changes) calls this when it is asked for its state.
    pub fn bind_late(&self) {
        self.waiting.bind_all();
    }

    fn late<H>(&self, metric: &'static str, key: Key) -> Late<H> {
        Late {
            metric,
            key,
            handle: OnceLock::new(),
            waiting: self.waiting.clone(),
        }
    }

    fn wait<T: Bind + 'static>(&self, late: Arc<T>) -> Arc<T> {
        let weak: Weak<dyn Bind> = Arc::downgrade(&late) as Weak<dyn Bind>;
        self.waiting.push(weak);
        late
    }

    /// Whether the scope's handles keep what they are given: a recorder was installed when
    /// they were registered, or they have bound to one since. A layer that pays for a sample
    /// only a recorder keeps (a clock read for a duration) asks this first; it is one load.
    //
    // Inlined: a call into it for that load was 8 of the count-window breaker's 443
    // instructions a call (callgrind, `benches/callgrind.sh circuit-breaker`).
    #[inline]
    pub fn is_recording(&self) -> bool {
        self.waiting.recording.load(Ordering::Relaxed)
    }

    /// The layer instance's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Registers the counter `metric` with the extra `labels`.
    pub fn counter(&self, metric: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        let key = self.key(metric, labels);
        metrics::with_recorder(|recorder| match is_fallback(recorder) {
            true => Counter::from_arc(self.wait(Arc::new(LateCounter {
                late: self.late(metric, key),
            }))),
            false => {
                self.waiting.recording.store(true, Ordering::Relaxed);
                register_counter(recorder, metric, &key)
            }
        })
    }

    /// Registers the counter `metric` with the extra `labels`, for a layer's per-call path:
    /// see [`CallCounter`].
    pub fn call_counter(
        &self,
        metric: &'static str,
        labels: &[(&'static str, &str)],
    ) -> CallCounter {
        let key = self.key(metric, labels);
        metrics::with_recorder(|recorder| match is_fallback(recorder) {
            true => CallCounter(self.wait(Arc::new(LateCounter {
                late: self.late(metric, key),
            }))),
            false => {
                self.waiting.recording.store(true, Ordering::Relaxed);
                let counter = register_counter(recorder, metric, &key);
                let late = self.late(metric, key);
                let _ = late.handle.set(counter);
                CallCounter(Arc::new(LateCounter { late }))
            }
        })
    }

    /// Registers the gauge `metric` with the extra `labels`.
    pub fn gauge(&self, metric: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        let key = self.key(metric, labels);
        metrics::with_recorder(|recorder| match is_fallback(recorder) {
            true => Gauge::from_arc(self.wait(Arc::new(LateGauge {
                late: self.late(metric, key),
                value: AtomicU64::new(0f64.to_bits()),
            }))),
            false => {
                self.waiting.recording.store(true, Ordering::Relaxed);
                register_gauge(recorder, metric, &key)
            }
        })
    }

    /// One counter of `metric` per value of the label `L`, in the order of `L::ALL`.
    pub fn counters<L: Label, const N: usize>(&self, metric: &'static str) -> [Counter; N] {
        const { assert!(N == L::ALL.len(), "one handle per value of the label") };
        std::array::from_fn(|i| self.counter(metric, &[(L::KEY, L::ALL[i].as_str())]))
    }

    /// One [`CallCounter`] of `metric` per value of the label `L`, in the order of `L::ALL`:
    /// [`counters`](Self::counters) for a layer's per-call path.
    pub fn call_counters<L: Label, const N: usize>(
        &self,
        metric: &'static str,
    ) -> [CallCounter; N] {
        const { assert!(N == L::ALL.len(), "one handle per value of the label") };
        std::array::from_fn(|i| self.call_counter(metric, &[(L::KEY, L::ALL[i].as_str())]))
    }

    /// One gauge of `metric` per value of the label `L`, in the order of `L::ALL`, each with
    /// the `extra` labels first.
    pub fn gauges<L: Label, const N: usize>(
        &self,
        metric: &'static str,
        extra: &[(&'static str, &str)],
    ) -> [Gauge; N] {
        const { assert!(N == L::ALL.len(), "one handle per value of the label") };
        std::array::from_fn(|i| {
            let mut labels = extra.to_vec();
            labels.push((L::KEY, L::ALL[i].as_str()));
            self.gauge(metric, &labels)
        })
    }

    /// Registers the histogram `metric` with the extra `labels`.
    pub fn histogram(&self, metric: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        let key = self.key(metric, labels);
        metrics::with_recorder(|recorder| match is_fallback(recorder) {
            true => Histogram::from_arc(self.wait(Arc::new(LateHistogram {
                late: self.late(metric, key),
            }))),
            false => {
                self.waiting.recording.store(true, Ordering::Relaxed);
                register_histogram(recorder, metric, &key)
            }
        })
    }

    fn key(&self, metric: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels = std::iter::once(KeyLabel::new("name", self.name.to_string()))
            .chain(labels.iter().map(|&(k, v)| KeyLabel::new(k, v.to_owned())))
            .collect::<Vec<_>>();
        Key::from_parts(metric, labels)
    }
}

fn register_counter(recorder: &dyn Recorder, metric: &'static str, key: &Key) -> Counter {
    describe(recorder, Kind::Counter, metric);
    recorder.register_counter(key, &METADATA)
}

fn register_gauge(recorder: &dyn Recorder, metric: &'static str, key: &Key) -> Gauge {
    describe(recorder, Kind::Gauge, metric);
    recorder.register_gauge(key, &METADATA)
}

fn register_histogram(recorder: &dyn Recorder, metric: &'static str, key: &Key) -> Histogram {
    describe(recorder, Kind::Histogram, metric);
    recorder.register_histogram(key, &METADATA)
}

/// A metric registered before any recorder was installed, and its handle once one is.
struct Late<H> {
    metric: &'static str,
    key: Key,
    handle: OnceLock<H>,
    waiting: Arc<Waiting>,
}

impl<H> Late<H> {
    /// The recorder's handle, registered on the first call that finds a recorder installed;
    /// the scope's other waiting handles are bound with it, so that a gauge set once at build
    /// time is exported too.
    //
    // The bound handle inline and the look out of line: as one function, its prologue made a
    // bound stand-in's every sample cost 20 instructions more (callgrind, `PROBE_RECORDER=late
    // benches/callgrind.sh stack`: 140 a call of the stack in `handle`).
    #[inline]
    fn handle(&self, register: fn(&dyn Recorder, &'static str, &Key) -> H) -> Option<&H> {
        match self.handle.get() {
            Some(handle) => Some(handle),
            None => self.bind(register),
        }
    }

    #[cold]
    #[inline(never)]
    fn bind(&self, register: fn(&dyn Recorder, &'static str, &Key) -> H) -> Option<&H> {
        let handle = metrics::with_recorder(|recorder| {
            (!is_fallback(recorder)).then(|| register(recorder, self.metric, &self.key))
        })?;
        let handle = self.handle.get_or_init(|| handle);
        self.waiting.bind_all();
        Some(handle)
    }
}

/// A late handle that can bind itself to the recorder now installed.
trait Bind: Send + Sync {
    fn bind(&self);
}

/// The late handles of one scope that have not been bound yet.
#[derive(Default)]
struct Waiting {
    handles: Mutex<Vec<Weak<dyn Bind>>>,
    /// Whether a recorder has been seen: at registration, or by a binding since.
    recording: AtomicBool,
}

impl Waiting {
    fn push(&self, late: Weak<dyn Bind>) {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(late);
    }

    fn bind_all(&self) {
        if metrics::with_recorder(is_fallback) {
            return;
        }
        self.recording.store(true, Ordering::Relaxed);
        let waiting = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for late in waiting.iter().filter_map(Weak::upgrade) {
            late.bind();
        }
    }
}

/// A counter and the recorder's handle for it once bound: counts are dropped until then. A
/// [`CallCounter`] registered with a recorder in place is bound from the start.
struct LateCounter {
    late: Late<Counter>,
}

impl Bind for LateCounter {
    fn bind(&self) {
        let _ = self.late.handle(register_counter);
    }
}

impl CounterFn for LateCounter {
    fn increment(&self, value: u64) {
        if let Some(counter) = self.late.handle(register_counter) {
            counter.increment(value);
        }
    }

    fn absolute(&self, value: u64) {
        if let Some(counter) = self.late.handle(register_counter) {
            counter.absolute(value);
        }
    }
}

/// How many per-call counts a thread drops, while no recorder is installed, between two looks
/// for one: the most a [`CallCounter`] misses of a recorder installed after it was registered,
/// on each thread, before it finds it.
//
// A look is `metrics`' thread-local, a call to load its global and the countdown set again
// (≈ 20–25 instructions out of line, callgrind); once in 65 counts it is under half an
// instruction a count.
pub const LOOK_EVERY: u32 = 64;

thread_local! {
    /// Per-call counts this thread still drops before it looks for a recorder again.
    // Const-initialised and without a destructor: one load and one store of the thread's
    // block, no lazy-initialisation check.
    static DROPS_BEFORE_LOOK: Cell<u32> = const { Cell::new(0) };
}

/// Whether an unbound [`CallCounter`] should look for a recorder now; counts one drop if not.
/// When it should, the countdown is left wrapped, and the look sets it.
#[inline]
fn look_due() -> bool {
    DROPS_BEFORE_LOOK.with(|left| {
        let (next, due) = left.get().overflowing_sub(1);
        left.set(next);
        due
    })
}

/// Whether a recorder is installed, looked for only once every [`LOOK_EVERY`] asks (and
/// unbound [`CallCounter`] counts) on this thread while none is: for a layer that keeps a
/// state only for a recorder (a gauge it does not update without one) and so asks on every call
/// until it sees one. Once one is found, every ask on the thread looks, until one finds none.
#[inline]
pub fn look_for_recorder() -> bool {
    look_due() && look_now()
}

/// The countdown's end: whether a recorder is installed; the countdown starts again if not,
/// and stays at its end if so, so that the thread's next ask or unbound count looks too.
#[cold]
#[inline(never)]
fn look_now() -> bool {
    let found = recorder_installed();
    DROPS_BEFORE_LOOK.with(|left| left.set(if found { 0 } else { LOOK_EVERY }));
    found
}

/// The next per-call count on this thread that finds its counter unbound looks for a recorder:
/// `TestRecorder::install_for` calls it, so that a test's counts reach it from its first call.
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn look_on_next_count() {
    DROPS_BEFORE_LOOK.with(|left| left.set(0));
}

/// A counter on a layer's per-call path, from [`MetricScope::call_counter`].
///
/// A [`Counter`] registered before a recorder is installed is a stand-in that, on every
/// increment, goes through a dynamic call and an out-of-line look for a recorder. This one,
/// until a recorder is found, drops the count after one load and branch on its state and a
/// thread-local countdown, and looks for a recorder once every [`LOOK_EVERY`] such counts on the
/// thread (see the [module docs](self)); once bound it goes straight to the recorder's handle.
#[derive(Clone)]
//
// One shape for both: a counter registered with a recorder in place is a `LateCounter`
// bound from the start, so that an unbound count is one state check, not a variant's tag
// and then the state (2 instructions a count, callgrind).
pub struct CallCounter(Arc<LateCounter>);

impl CallCounter {
    /// Adds `value` to the counter.
    #[inline]
    pub fn increment(&self, value: u64) {
        if !self.add(value) && look_due() {
            look_and_count(Some((self, value)), None);
        }
    }

    /// Adds `value` to this counter and `other_value` to `other`, with one countdown for both
    /// while they are unbound: for a layer that updates two counters a call.
    // Always: LLVM kept it out of line in retry's poll, where its call and prologue cost more
    // than it saves (callgrind, `benches/callgrind.sh retry`).
    #[inline(always)]
    pub fn increment_both(&self, value: u64, other: &CallCounter, other_value: u64) {
        let counted = self.add(value);
        let other_counted = other.add(other_value);
        if !(counted && other_counted) && look_due() {
            look_and_count(
                (!counted).then_some((self, value)),
                (!other_counted).then_some((other, other_value)),
            );
        }
    }

    /// Adds `value` to the recorder's counter if there is one (`true`); drops it if not.
    #[inline]
    fn add(&self, value: u64) -> bool {
        match self.0.late.handle.get() {
            Some(counter) => {
                counter.increment(value);
                true
            }
            None => false,
        }
    }
}

/// The countdown's end for unbound counters: binds them to the recorder installed now, if
/// one is, and counts their values.
#[cold]
#[inline(never)]
fn look_and_count(first: Option<(&CallCounter, u64)>, second: Option<(&CallCounter, u64)>) {
    if !look_now() {
        return;
    }
    for (counter, value) in [first, second].into_iter().flatten() {
        if let Some(bound) = counter.0.late.handle(register_counter) {
            bound.increment(value);
        }
    }
}

impl fmt::Debug for CallCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bound = self.0.late.handle.get().is_some();
        f.debug_struct("CallCounter")
            .field("bound", &bound)
            .finish()
    }
}

/// A gauge's value kept here and set on the recorder's gauge once there is one.
struct LateGauge {
    late: Late<Gauge>,
    value: AtomicU64,
}

impl LateGauge {
    fn update(&self, change: impl Fn(f64) -> f64) {
        let mut bits = self.value.load(Ordering::Acquire);
        let value = loop {
            let next = change(f64::from_bits(bits));
            match self.value.compare_exchange_weak(
                bits,
                next.to_bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break next,
                Err(actual) => bits = actual,
            }
        };
        if let Some(gauge) = self.late.handle(register_gauge) {
            gauge.set(value);
        }
    }
}

impl Bind for LateGauge {
    fn bind(&self) {
        if let Some(gauge) = self.late.handle(register_gauge) {
            gauge.set(f64::from_bits(self.value.load(Ordering::Acquire)));
        }
    }
}

impl GaugeFn for LateGauge {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

/// A metric label whose values are a fixed set, as an enum: its key and every value are
/// written once, beside the type, and [`MetricScope::counters`] and [`MetricScope::gauges`]
/// register one handle per value from them, so a layer indexes an array per call instead of
/// looking a label up.
///
/// ```
/// use seawall_core::metrics::{Label, MetricScope};
///
/// #[derive(Clone, Copy)]
/// enum Outcome { Hit, Miss }
///
/// impl Label for Outcome {
///     const KEY: &'static str = "outcome";
///     const ALL: &'static [Self] = &[Self::Hit, Self::Miss];
///     fn as_str(self) -> &'static str {
///         match self { Self::Hit => "hit", Self::Miss => "miss" }
///     }
/// }
///
/// let calls: [_; 2] = MetricScope::new("cache").counters::<Outcome, 2>("seawall_cache_calls_total");
/// calls[Outcome::Miss as usize].increment(1);
/// ```
pub trait Label: Copy + 'static {
    /// The label's key (`outcome`, `state`).
    const KEY: &'static str;
    /// Every value, in the order arrays of handles are indexed by.
    const ALL: &'static [Self];
    /// The value as exported.
    fn as_str(self) -> &'static str;
}

/// Samples go to the recorder's histogram once there is one; earlier ones are dropped.
struct LateHistogram {
    late: Late<Histogram>,
}

impl Bind for LateHistogram {
    fn bind(&self) {
        let _ = self.late.handle(register_histogram);
    }
}

impl HistogramFn for LateHistogram {
    fn record(&self, value: f64) {
        if let Some(histogram) = self.late.handle(register_histogram) {
            histogram.record(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestRecorder;
    use proptest::prelude::*;

    #[test]
    fn handles_carry_the_layer_name_and_extra_labels() {
        let recorder = TestRecorder::new();
        let (counter, gauge) = recorder.install_for(|| {
            let scope = MetricScope::new("payments");
            (
                scope.counter("seawall_test_calls_total", &[("result", "ok")]),
                scope.gauge("seawall_test_level", &[]),
            )
        });
        counter.increment(2);
        gauge.set(1.0);
        let labels = [("name", "payments"), ("result", "ok")];
        assert_eq!(recorder.counter("seawall_test_calls_total", &labels), 2);
        assert_eq!(
            recorder.counter("seawall_test_calls_total", &[("name", "other")]),
            0
        );
        assert_eq!(
            recorder.gauge("seawall_test_level", &[("name", "payments")]),
            Some(1.0)
        );
        assert_eq!(
            recorder.gauge("seawall_test_level", &[("name", "payments")]),
            Some(1.0)
        );
    }

    #[derive(Clone, Copy)]
    enum Tier {
        Low,
        High,
    }

    impl super::Label for Tier {
        const KEY: &'static str = "level";
        const ALL: &'static [Self] = &[Self::Low, Self::High];
        fn as_str(self) -> &'static str {
            match self {
                Self::Low => "low",
                Self::High => "high",
            }
        }
    }

    #[test]
    fn a_label_gets_one_handle_per_value_keyed_and_in_order() {
        let recorder = TestRecorder::new();
        let (counters, gauges) = recorder.install_for(|| {
            let scope = MetricScope::new("db");
            (
                scope.counters::<Tier, 2>("seawall_test_calls_total"),
                scope.gauges::<Tier, 2>("seawall_test_level", &[("component", "disk")]),
            )
        });
        counters[Tier::High as usize].increment(3);
        gauges[Tier::Low as usize].set(1.0);
        let high = [("name", "db"), ("level", "high")];
        assert_eq!(recorder.counter("seawall_test_calls_total", &high), 3);
        let low = [("name", "db"), ("level", "low")];
        assert_eq!(recorder.counter("seawall_test_calls_total", &low), 0);
        let low = [("name", "db"), ("component", "disk"), ("level", "low")];
        assert_eq!(recorder.gauge("seawall_test_level", &low), Some(1.0));
    }

    #[test]
    fn handles_made_before_a_recorder_reach_it_once_installed() {
        let scope = MetricScope::new("db");
        let counter = scope.counter("seawall_bulkhead_rejected_total", &[]);
        let gauge = scope.gauge("seawall_bulkhead_in_flight", &[]);
        let histogram = scope.histogram("seawall_bulkhead_wait_seconds", &[]);
        counter.increment(2);
        gauge.increment(3.0);
        histogram.record(9.0);

        let recorder = TestRecorder::new();
        let labels = [("name", "db")];
        recorder.install_for(|| {
            counter.increment(1);
            gauge.decrement(1.0);
            histogram.record(0.5);
        });
        assert_eq!(
            recorder.counter("seawall_bulkhead_rejected_total", &labels),
            1,
            "counts before the recorder are dropped"
        );
        assert_eq!(
            recorder.gauge("seawall_bulkhead_in_flight", &labels),
            Some(2.0)
        );
        assert_eq!(
            recorder.histogram("seawall_bulkhead_wait_seconds", &labels),
            [0.5],
            "samples before the recorder are dropped"
        );
        // Bound for good: later values reach it without a recorder in scope.
        counter.increment(4);
        assert_eq!(
            recorder.counter("seawall_bulkhead_rejected_total", &labels),
            5
        );
    }

    #[test]
    fn a_gauge_set_once_is_bound_with_its_scope() {
        let scope = MetricScope::new("cache");
        let limit = scope.gauge("seawall_bulkhead_limit", &[]);
        let calls = scope.counter("seawall_bulkhead_rejected_total", &[]);
        limit.set(64.0);
        let other = MetricScope::new("other");
        let level = other.gauge("seawall_health_state", &[]);
        level.set(1.0);

        let recorder = TestRecorder::new();
        let labels = [("name", "cache")];
        recorder.install_for(|| calls.increment(1));
        assert_eq!(
            recorder.gauge("seawall_bulkhead_limit", &labels),
            Some(64.0)
        );
        let other_labels = [("name", "other")];
        assert_eq!(recorder.gauge("seawall_health_state", &other_labels), None);
        recorder.install_for(|| other.bind_late());
        assert_eq!(
            recorder.gauge("seawall_health_state", &other_labels),
            Some(1.0)
        );
    }

    #[test]
    fn a_call_counter_drops_counts_made_before_a_recorder() {
        let calls = MetricScope::new("api").call_counter("seawall_test_calls_total", &[]);
        calls.increment(2);
        let recorder = TestRecorder::new();
        let labels = [("name", "api")];
        recorder.install_for(|| calls.increment(1));
        assert_eq!(recorder.counter("seawall_test_calls_total", &labels), 1);
        recorder.install_for(|| calls.increment(4));
        assert_eq!(recorder.counter("seawall_test_calls_total", &labels), 5);
    }

    #[test]
    fn two_call_counters_incremented_together_bind_to_a_recorder_installed_later() {
        // Two scopes: binding one counter does not bind the other with its scope.
        let calls = MetricScope::new("api").call_counter("seawall_test_calls_total", &[]);
        let attempts = MetricScope::new("db").call_counter("seawall_test_attempts_total", &[]);
        calls.increment_both(1, &attempts, 2);
        let recorder = TestRecorder::new();
        recorder.install_for(|| calls.increment_both(1, &attempts, 3));
        assert_eq!(
            recorder.counter("seawall_test_calls_total", &[("name", "api")]),
            1
        );
        assert_eq!(
            recorder.counter("seawall_test_attempts_total", &[("name", "db")]),
            3
        );
        // Bound for good, each: later counts reach it without a recorder in scope.
        calls.increment_both(1, &attempts, 1);
        assert_eq!(
            recorder.counter("seawall_test_calls_total", &[("name", "api")]),
            2
        );
        assert_eq!(
            recorder.counter("seawall_test_attempts_total", &[("name", "db")]),
            4
        );
    }

    #[test]
    fn a_call_counter_is_bound_with_its_scope() {
        let scope = MetricScope::new("api");
        let calls = scope.call_counter("seawall_test_calls_total", &[]);
        calls.increment(2);
        let recorder = TestRecorder::new();
        recorder.install_for(|| scope.bind_late());
        calls.increment(3);
        assert_eq!(
            recorder.counter("seawall_test_calls_total", &[("name", "api")]),
            3
        );
    }

    /// Runs `f` on a new thread, whose countdown to a look for a recorder starts at zero.
    fn on_a_new_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    #[test]
    fn a_call_counter_finds_a_recorder_installed_later_within_look_every_counts() {
        on_a_new_thread(|| {
            let scope = MetricScope::new("api");
            let calls = scope.call_counter("seawall_test_calls_total", &[]);
            let retries = scope.call_counter("seawall_test_retries_total", &[]);
            calls.increment(1); // looks: none, and drops the next LOOK_EVERY counts unlooked
            let recorder = TestRecorder::new();
            let count = |metric| recorder.counter(metric, &[("name", "api")]);
            // Not `install_for`: a recorder installed as an application does, unannounced.
            metrics::with_local_recorder(&recorder, || {
                for _ in 0..LOOK_EVERY {
                    calls.increment(1);
                }
                assert_eq!(count("seawall_test_calls_total"), 0, "not looked for yet");
                calls.increment(1);
                assert_eq!(
                    count("seawall_test_calls_total"),
                    1,
                    "found at the next look"
                );
                retries.increment(2);
                assert_eq!(
                    count("seawall_test_retries_total"),
                    2,
                    "bound with its scope"
                );
            });
            for _ in 0..10 {
                calls.increment_both(1, &retries, 1);
            }
            assert_eq!(count("seawall_test_calls_total"), 11, "every count since");
            assert_eq!(count("seawall_test_retries_total"), 12);
        });
    }

    #[test]
    fn a_thread_that_found_a_recorder_binds_its_other_call_counters_on_their_next_count() {
        on_a_new_thread(|| {
            let calls = MetricScope::new("api").call_counter("seawall_test_calls_total", &[]);
            let other = MetricScope::new("db").call_counter("seawall_test_calls_total", &[]);
            let recorder = TestRecorder::new();
            metrics::with_local_recorder(&recorder, || {
                calls.increment(1);
                other.increment(1);
            });
            assert_eq!(
                recorder.counter("seawall_test_calls_total", &[("name", "db")]),
                1
            );
        });
    }

    #[test]
    fn without_a_recorder_a_thread_looks_for_one_once_every_look_every_counts() {
        on_a_new_thread(|| {
            let calls = MetricScope::new("api").call_counter("seawall_test_calls_total", &[]);
            for round in 0..3 {
                assert!(look_due(), "round {round}: a look");
                look_and_count(Some((&calls, 1)), None);
                for _ in 0..LOOK_EVERY {
                    assert!(!look_due(), "round {round}: a count dropped unlooked");
                }
            }
        });
    }

    #[test]
    fn a_call_counter_registered_with_a_recorder_is_its_own() {
        let recorder = TestRecorder::new();
        let calls = recorder.install_for(|| {
            MetricScope::new("api").call_counter("seawall_test_calls_total", &[("result", "ok")])
        });
        calls.increment(5);
        let labels = [("name", "api"), ("result", "ok")];
        assert_eq!(recorder.counter("seawall_test_calls_total", &labels), 5);
    }

    #[test]
    fn a_layer_that_asks_for_a_recorder_on_every_call_finds_one_within_look_every_asks() {
        on_a_new_thread(|| {
            assert!(
                !look_for_recorder(),
                "looks: none, and answers the next asks unlooked"
            );
            let recorder = TestRecorder::new();
            metrics::with_local_recorder(&recorder, || {
                for ask in 0..LOOK_EVERY {
                    assert!(!look_for_recorder(), "ask {ask}: not looked for yet");
                }
                for ask in 0..3 {
                    assert!(look_for_recorder(), "ask {ask}: found, and each ask looks");
                }
            });
            assert!(!look_for_recorder(), "gone: the look finds none");
            assert!(!look_for_recorder(), "and the countdown starts again");
        });
    }

    /// What the reference model and the counters are given: counter `first` (and `second`,
    /// with `increment_both`) counts `value`, with a recorder in scope or not.
    #[derive(Debug, Clone)]
    struct Count {
        first: usize,
        second: Option<usize>,
        value: u64,
        recorder: bool,
    }

    fn count() -> impl Strategy<Value = Count> {
        (
            0..3usize,
            proptest::option::of(1..3usize),
            1..5u64,
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(first, step, value, recorder)| Count {
                first,
                second: step.map(|step| (first + step) % 3),
                value,
                recorder,
            })
    }

    proptest! {
        #[test]
        fn call_counters_count_what_the_reference_model_counts(
            counts in proptest::collection::vec(count(), 1..400),
        ) {
            on_a_new_thread(move || {
                let calls: Vec<CallCounter> = (0..3)
                    .map(|i| MetricScope::new(format!("c{i}")).call_counter("seawall_test_calls_total", &[]))
                    .collect();
                let recorder = TestRecorder::new();
                // The model: a countdown per thread, a bound flag and a total per counter.
                let (mut left, mut bound, mut total) = (0u32, [false; 3], [0u64; 3]);
                for c in &counts {
                    let unbound: Vec<usize> =
                        [Some(c.first), c.second].into_iter().flatten().filter(|&i| !bound[i]).collect();
                    for i in [Some(c.first), c.second].into_iter().flatten().filter(|&i| bound[i]) {
                        total[i] += c.value;
                    }
                    if !unbound.is_empty() {
                        match (left, c.recorder) {
                            (0, true) => unbound.iter().for_each(|&i| {
                                bound[i] = true;
                                total[i] += c.value;
                            }),
                            (0, false) => left = LOOK_EVERY,
                            _ => left -= 1,
                        }
                    }
                    let run = || match c.second {
                        Some(j) => calls[c.first].increment_both(c.value, &calls[j], c.value),
                        None => calls[c.first].increment(c.value),
                    };
                    match c.recorder {
                        true => metrics::with_local_recorder(&recorder, run),
                        false => run(),
                    }
                }
                for (i, &total) in total.iter().enumerate() {
                    let name = format!("c{i}");
                    assert_eq!(recorder.counter("seawall_test_calls_total", &[("name", &name)]), total);
                }
            });
        }
    }

    #[test]
    fn call_counters_get_one_handle_per_value_keyed_and_in_order() {
        let scope = MetricScope::new("db");
        let calls = scope.call_counters::<Tier, 2>("seawall_test_calls_total");
        let recorder = TestRecorder::new();
        recorder.install_for(|| calls[Tier::Low as usize].increment(1));
        calls[Tier::High as usize].increment(3);
        let high = [("name", "db"), ("level", "high")];
        assert_eq!(recorder.counter("seawall_test_calls_total", &high), 3);
        let low = [("name", "db"), ("level", "low")];
        assert_eq!(recorder.counter("seawall_test_calls_total", &low), 1);
    }

    #[test]
    fn every_metric_is_described_with_help_text() {
        let recorder = TestRecorder::new();
        recorder.install_for(|| {
            let scope = MetricScope::new("db");
            let _ = scope.counter("seawall_retry_calls_total", &[("kind", "x")]);
            let _ = scope.gauge("seawall_circuit_breaker_state", &[]);
            let _ = scope.histogram("seawall_bulkhead_wait_seconds", &[]);
        });
        let wait = recorder
            .description("seawall_bulkhead_wait_seconds")
            .unwrap();
        assert_eq!(wait.0, Some(Unit::Seconds));
        assert!(wait.1.contains("waited"), "{wait:?}");
        assert!(recorder.description("seawall_retry_calls_total").is_some());
        assert!(
            recorder
                .description("seawall_circuit_breaker_state")
                .is_some()
        );
    }

    #[test]
    fn every_histogram_is_described_with_increasing_buckets() {
        for &(name, buckets) in HISTOGRAMS {
            assert!(
                DESCRIPTIONS.iter().any(|(other, ..)| *other == name),
                "{name} has no description"
            );
            assert!(!buckets.is_empty(), "{name}");
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}");
        }
    }

    #[test]
    fn retry_attempts_are_described_as_every_attempt_as_the_alerts_read_them() {
        // The amplification alert divides attempts by calls: the first attempts are in.
        let (_, _, help) = DESCRIPTIONS
            .iter()
            .find(|(name, ..)| *name == "seawall_retry_attempts_total")
            .expect("described");
        assert!(help.contains("the first of each call included"), "{help}");
    }

    #[test]
    fn the_table_describes_each_metric_once() {
        for (i, (name, unit, help)) in DESCRIPTIONS.iter().enumerate() {
            assert!(name.starts_with("seawall_") && !help.is_empty(), "{name}");
            assert!(
                DESCRIPTIONS[..i].iter().all(|(other, ..)| other != name),
                "{name} twice"
            );
            if name.ends_with("_total") {
                assert_eq!(*unit, Some(Unit::Count), "{name}");
            }
            if name.ends_with("_seconds") {
                assert_eq!(*unit, Some(Unit::Seconds), "{name}");
            }
        }
    }
}
