//! The breaker's shared state: a state machine in atomics, a sliding window, and half-open
//! probe slots.
//!
//! Why atomics: every call through a breaker reads its state, and every completed call
//! writes to its window. A lock there would serialise all callers on one cache line and, in
//! an async lock, allocate. Here a call in the closed state costs one load of the state word,
//! a slot swap in the window and a few loads to check the rates. Only transitions (a handful
//! a minute at worst) take a `Mutex`, to keep gauges, the watch channel and the backoff in
//! step.
//!
//! Every transition bumps a generation, packed with the state in one `AtomicU64`. A call keeps
//! the generation it was admitted in; a result that comes back after the breaker has moved on
//! (a slow call admitted while closed that ends after the breaker opened and closed again) is
//! not counted against the new state, as gobreaker does.
//!
//! Half-open probes live in one more `AtomicU64`: the generation's low 16 bits, probes in
//! flight, successes and failures, 16 bits each, changed only by compare-and-swap, so no
//! interleaving ever admits more than the configured number of probes at once, nor (with
//! slow start) more in flight than one plus the phase's successes. A probe that
//! belongs to an earlier half-open phase keeps its slot until it ends (it still loads the
//! downstream) but its result does not count in the current phase.
//!
//! Time alone moves an open breaker to half-open, and a half-open one whose probes have not
//! decided in time back to open. A call that finds such a move due makes it; so does a timer
//! task (with automatic transitions, the default) that runs only while the breaker is open or
//! half-open, so that gauges and subscribers (health followers) see the move without traffic.
//! The task holds a weak reference and ends when the breaker is dropped. With automatic
//! transitions a move takes effect at the time it was due, whoever makes it, so the breaker
//! behaves the same however late the task or the next call runs.

use std::ops::RangeInclusive;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use metrics::{Counter, Gauge, Histogram};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seawall_core::backoff::{Backoff, Jitter};
use seawall_core::classify::Outcome;
use seawall_core::config::ConfigError;
use seawall_core::metrics::{CallCounter, MetricScope};
use seawall_core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use seawall_core::sync::{Mutex, MutexGuard};
use seawall_core::{Attempt, BoxError, Hook, Rejected, RejectionKind};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{CircuitBreakerConfig, ConsecutiveFailures, OpenDuration, Window};
use crate::run::{self, AdaptiveRun, AdmissionRing, RunRule, RunVerdict, Slot};
use crate::state::{
    CallOutcome, CircuitState, OutcomeEvent, RejectReason, RejectedEvent, StateChangedEvent,
};
use crate::window::{CountWindow, Padded, Sample, SlidingWindow, TimeWindow, WindowCounts};
use seawall_core::time::{nanos, seconds_since};

/// Beyond any duration a configuration allows.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

// ===== shed band word: on (1) | first attempts owed a shed (31) =====

const BAND_ON: u32 = 1 << 31;
const BAND_OWED: u32 = BAND_ON - 1;

// ===== state word =====

const STATE_BITS: u32 = 3;

fn pack(generation: u64, state: CircuitState) -> u64 {
    (generation << STATE_BITS) | state.index() as u64
}

fn state_of(word: u64) -> CircuitState {
    CircuitState::from_index(word & ((1 << STATE_BITS) - 1))
}

fn generation_of(word: u64) -> u64 {
    word >> STATE_BITS
}

// ===== probe word: phase tag (16) | in flight (16) | successes (16) | failures (16) =====
// Successes and failures belong to the phase of the tag; probes in flight may be of any phase.

const PROBE_BAD: u64 = 1;
const PROBE_OK: u64 = 1 << 16;
const PROBE_IN_FLIGHT: u64 = 1 << 32;
const PROBE_IN_FLIGHT_MASK: u64 = 0xffff << 32;
const PROBE_TAG_SHIFT: u32 = 48;
// In the probe counts word, under the same tag.
const PROBE_SLOW: u64 = 1;
const PROBE_FAILED: u64 = 1 << 16;

fn probe_tag(generation: u64) -> u64 {
    generation & 0xffff
}

fn probe_field(word: u64, unit: u64) -> u32 {
    ((word / unit) & 0xffff) as u32
}

// ===== observers: metrics and hooks, shared by every breaker of a keyed layer =====

struct Metrics {
    calls: [CallCounter; 5],
    rejected: Counter,
    shed: Counter,
    duration: Histogram,
    transitions: [[Counter; 6]; 6],
    /// `None` for keyed breakers: a per-key state has no single value to report.
    gauges: Option<Gauges>,
}

struct Gauges {
    state: [Gauge; 6],
    failure_rate: Gauge,
    slow_call_rate: Gauge,
}

impl Metrics {
    fn new(scope: &MetricScope, gauges: bool) -> Self {
        const CALLS: &str = "seawall_circuit_breaker_calls_total";
        const TRANSITIONS: &str = "seawall_circuit_breaker_transitions_total";
        let calls = scope.call_counters::<CallOutcome, { CallOutcome::ALL.len() }>(CALLS);
        let transitions = std::array::from_fn(|from| {
            std::array::from_fn(|to| {
                if from == to {
                    return Counter::noop();
                }
                let labels = [
                    ("from", CircuitState::ALL[from].as_str()),
                    ("to", CircuitState::ALL[to].as_str()),
                ];
                scope.counter(TRANSITIONS, &labels)
            })
        });
        let gauges = gauges.then(|| {
            let state = scope.gauges::<CircuitState, { CircuitState::ALL.len() }>(
                "seawall_circuit_breaker_state",
                &[],
            );
            state[CircuitState::Closed.index()].set(1.0);
            Gauges {
                state,
                failure_rate: scope.gauge("seawall_circuit_breaker_failure_rate", &[]),
                slow_call_rate: scope.gauge("seawall_circuit_breaker_slow_call_rate", &[]),
            }
        });
        Self {
            calls,
            rejected: scope.counter(CALLS, &[("outcome", "rejected")]),
            shed: scope.counter(CALLS, &[("outcome", "shed")]),
            duration: scope.histogram("seawall_circuit_breaker_call_duration_seconds", &[]),
            transitions,
            gauges,
        }
    }
}

#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) state_change: Hook<StateChangedEvent<'static>>,
    pub(crate) rejected: Hook<RejectedEvent<'static>>,
    pub(crate) outcome: Hook<OutcomeEvent<'static>>,
}

/// The metric handles and hooks of one layer, shared by all its breakers.
pub(crate) struct Observers {
    name: Arc<str>,
    metrics: Metrics,
    pub(crate) hooks: Hooks,
    /// Whether the duration histogram keeps its samples (its handle is a recorder's); until
    /// then a call is not timed.
    scope: MetricScope,
}

impl Observers {
    /// Registers the metrics of the layer `name`; `gauges` is false for keyed layers.
    pub(crate) fn new(name: Arc<str>, gauges: bool) -> Self {
        let scope = MetricScope::new(name.clone());
        Self {
            metrics: Metrics::new(&scope, gauges),
            name,
            hooks: Hooks::default(),
            scope,
        }
    }

    /// Whether a call's duration has a taker: the histogram of a recorder, or an outcome hook.
    //
    // Reading the clock twice costs 20 to 40 ns a call on the project's VM, about half of the
    // count-window breaker's whole cost (see benches/RESULTS.md); a layer with neither taker
    // skips it. A recorder installed after the build is seen once the handles bind to it,
    // within `seawall_core::metrics::LOOK_EVERY` calls recorded after it was installed.
    #[inline]
    fn wants_durations(&self) -> bool {
        self.hooks.outcome.is_set() || self.scope.is_recording()
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }
}

// ===== the breaker =====

/// Where a keyed breaker tells its map that it started or stopped rejecting calls, so that
/// eviction can spare open breakers without scanning the map for them.
pub(crate) struct Tracker {
    moved: Arc<Mutex<Vec<usize>>>,
    slot: usize,
    /// Whether `slot` waits in `moved`; read and written only under its lock, so one breaker
    /// queues at most once between two looks.
    queued: AtomicBool,
}

impl Tracker {
    pub(crate) fn new(moved: Arc<Mutex<Vec<usize>>>, slot: usize) -> Self {
        Self {
            moved,
            slot,
            queued: AtomicBool::new(false),
        }
    }

    fn queue(&self) {
        let mut moved = self.moved.lock().unwrap_or_else(|e| e.into_inner());
        if !self.queued.swap(true, Ordering::Relaxed) {
            moved.push(self.slot);
        }
    }

    /// Lets the breaker queue again; under the lock of `moved`, which the caller holds.
    pub(crate) fn unqueue(&self) {
        self.queued.store(false, Ordering::Relaxed);
    }
}

/// What a call was admitted as; its result is recorded accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permit {
    generation: u64,
    kind: PermitKind,
    /// The call's place in admission order, for a call admitted while closed.
    seq: Option<u64>,
}

impl Permit {
    /// Whether the call is a half-open probe.
    pub(crate) fn is_probe(self) -> bool {
        self.kind == PermitKind::Probe
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    Closed,
    Probe,
    MetricsOnly,
    Untracked,
}

impl PermitKind {
    fn state(self) -> CircuitState {
        match self {
            Self::Closed => CircuitState::Closed,
            Self::Probe => CircuitState::HalfOpen,
            Self::MetricsOnly => CircuitState::MetricsOnly,
            Self::Untracked => CircuitState::Disabled,
        }
    }
}

/// The rules a breaker judges by, swapped whole by a reload.
struct Rules {
    /// What they were made from, as a handle reads it back.
    config: CircuitBreakerConfig,
    minimum_calls: u64,
    failure_rate: Option<RateRule>,
    slow_call_rate: Option<RateRule>,
    slow_call_duration: Option<Duration>,
    consecutive_failures: Option<RunRule>,
    open_duration: OpenDuration,
    open_jitter: f64,
    hinted_open: RangeInclusive<Duration>,
    probes: u32,
    probes_to_close: u32,
    probe_slow_start: bool,
    half_open_max_wait: Duration,
    automatic_transitions: bool,
    seed: u64,
    overload_is_failure: bool,
    endpoint_fault_is_failure: bool,
}

impl Rules {
    /// Whether no rate with a threshold trips it, so that successes alone cannot trip (a
    /// success lowers a rate or adds a call, and neither raises the rule's statistic).
    fn rates_below(&self, counts: &WindowCounts) -> bool {
        self.failure_rate
            .is_none_or(|rule| !rule.trips(counts.failure_rate(), counts.calls))
            && self
                .slow_call_rate
                .is_none_or(|rule| !rule.trips(counts.slow_call_rate(), counts.calls))
    }

    fn new(config: &CircuitBreakerConfig, seed: u64) -> Self {
        Self {
            config: config.clone(),
            minimum_calls: u64::from(config.minimum_calls),
            failure_rate: config
                .failure_rate
                .map(|t| RateRule::new(t, config.noise_margin)),
            slow_call_rate: config
                .slow_call_rate
                .map(|t| RateRule::new(t, config.noise_margin)),
            slow_call_duration: config.slow_call_duration,
            consecutive_failures: config.consecutive_failures.map(|rule| match rule {
                ConsecutiveFailures::Fixed(n) => RunRule::Fixed(n),
                ConsecutiveFailures::Adaptive { min, one_in } => {
                    RunRule::Adaptive(AdaptiveRun::new(min, one_in, run::RIDE))
                }
            }),
            open_duration: config.open_duration,
            open_jitter: config.open_jitter,
            hinted_open: config.hinted_open_range(),
            probes: config.half_open_probes,
            probes_to_close: config.probes_to_close(),
            probe_slow_start: config.half_open_slow_start,
            half_open_max_wait: config.half_open_max_wait,
            automatic_transitions: config.automatic_transitions,
            seed,
            overload_is_failure: config.overload_is_failure,
            endpoint_fault_is_failure: config.endpoint_fault_is_failure,
        }
    }
}

/// A rate threshold with its noise margin (see
/// [`noise_margin`](crate::CircuitBreakerConfigBuilder::noise_margin)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateRule {
    threshold: f64,
    /// `z² · t(1 − t)`: what `(r − t)² · n` must reach.
    noise: f64,
}

impl RateRule {
    pub(crate) fn new(threshold: f64, sigmas: f64) -> Self {
        Self {
            threshold,
            noise: sigmas * sigmas * (threshold * (1.0 - threshold)),
        }
    }

    /// Whether a rate `rate` over `calls` calls trips: at or above the threshold by the noise
    /// margin, or every call counted. Squared, so that no call takes a square root.
    #[inline]
    pub(crate) fn trips(self, rate: f64, calls: u64) -> bool {
        let excess = rate - self.threshold;
        excess >= 0.0 && (rate >= 1.0 || excess * excess * calls as f64 >= self.noise)
    }
}

/// What transitions keep between them, under the transition lock.
struct Recovery {
    /// Openings since the last full recovery (half-open to closed, or a reset).
    openings: u32,
    previous_open: Duration,
}

/// One circuit breaker's shared state.
pub(crate) struct Breaker {
    observers: Arc<Observers>,
    key: Option<Arc<str>>,
    epoch: Instant,
    /// Generation and state: read by every call, written only by transitions.
    word: Padded<AtomicU64>,
    /// Nanoseconds since `epoch` when the open state ends; written only on entering open.
    open_until: AtomicU64,
    /// Nanoseconds since `epoch` when half-open gives up on its probes; written only on
    /// entering half-open.
    probe_deadline: AtomicU64,
    probes: AtomicU64,
    /// The phase tag (16) | failed probes (16) | slow probes (16) of the half-open phase, for
    /// the counts reported in half-open; the decision is the probe word's.
    probe_counts: AtomicU64,
    consecutive: Padded<AtomicU32>,
    /// The run of failures that trips the breaker, set when the current run began (in
    /// completion order, the rule used when the admission ring has lost the run).
    run_limit: AtomicU32,
    /// The run of failures that starts shedding, set with `run_limit`.
    shed_limit: AtomicU32,
    /// Whether a run of failures is in its shed band (`BAND_ON`), and how many first attempts
    /// are owed a shed (one for each failure of the run in the band); zero on the path of
    /// every call while no run is that long.
    band: AtomicU32,
    /// The admission number of the latest failure that fed the band: a success admitted after
    /// it ends the run, and the band.
    band_seq: AtomicU64,
    /// The outcomes of the calls admitted while closed, in admission order.
    ring: AdmissionRing,
    window: SlidingWindow,
    // Behind an atomic pointer so that a reload swaps them whole while calls read them: a
    // call loads them only to judge a slow call, an overload or a trip, never on the path of
    // a plain success.
    rules: ArcSwap<Rules>,
    /// Whether the rules judge slow calls, so that every call is timed; kept beside them so
    /// that a call need not load the rules to know.
    slow_rule: AtomicBool,
    transitions: Mutex<Recovery>,
    state_tx: watch::Sender<CircuitState>,
    tracker: Option<Tracker>,
    /// Whether a timer task follows this breaker; set and cleared under the transition lock.
    timed: AtomicBool,
    this: Weak<Breaker>,
}

impl Breaker {
    pub(crate) fn new(
        config: &CircuitBreakerConfig,
        observers: Arc<Observers>,
        key: Option<Arc<str>>,
        tracker: Option<Tracker>,
    ) -> Arc<Self> {
        let window = match config.window {
            Window::Count(n) => SlidingWindow::Count(CountWindow::new(n)),
            Window::Time(span) => SlidingWindow::Time(TimeWindow::new(span.as_secs())),
        };
        let seed = config.seed.unwrap_or_else(random_seed);
        Arc::new_cyclic(|this| Self {
            observers,
            key,
            epoch: Instant::now(),
            word: Padded(AtomicU64::new(pack(0, CircuitState::Closed))),
            open_until: AtomicU64::new(0),
            probe_deadline: AtomicU64::new(u64::MAX),
            probes: AtomicU64::new(0),
            probe_counts: AtomicU64::new(0),
            consecutive: Padded::default(),
            run_limit: AtomicU32::new(u32::MAX),
            shed_limit: AtomicU32::new(u32::MAX),
            band: AtomicU32::new(0),
            band_seq: AtomicU64::new(0),
            ring: AdmissionRing::new(),
            window,
            rules: ArcSwap::from_pointee(Rules::new(config, seed)),
            slow_rule: AtomicBool::new(config.slow_call_duration.is_some()),
            transitions: Mutex::new(Recovery {
                openings: 0,
                previous_open: Duration::ZERO,
            }),
            state_tx: watch::Sender::new(CircuitState::Closed),
            tracker,
            timed: AtomicBool::new(false),
            this: this.clone(),
        })
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        self.observers.name()
    }

    pub(crate) fn observers(&self) -> &Observers {
        &self.observers
    }

    pub(crate) fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub(crate) fn tracker(&self) -> Option<&Tracker> {
        self.tracker.as_ref()
    }

    /// Whether the breaker rejects calls now (open, half-open or forced open), as transitions
    /// have left it.
    pub(crate) fn rejects(&self) -> bool {
        state_of(self.word.load(Ordering::Acquire)).rejects()
    }

    /// The state as time has left it: open past its end reads half-open, half-open past its
    /// deadline reads open, whether or not a call or the timer has made the move yet.
    pub(crate) fn state(&self) -> CircuitState {
        let (word, ends) = self.ends(self.word.load(Ordering::Acquire));
        let state = state_of(word);
        if ends == u64::MAX || self.now_nanos() < ends {
            return state;
        }
        match state {
            CircuitState::Open => CircuitState::HalfOpen,
            CircuitState::HalfOpen => CircuitState::Open,
            state => state,
        }
    }

    fn rules(&self) -> Guard<Arc<Rules>> {
        self.rules.load()
    }

    /// The configuration the breaker judges by now.
    pub(crate) fn config(&self) -> CircuitBreakerConfig {
        self.rules().config.clone()
    }

    /// Checks that `config` may replace the live one: the same name and window.
    pub(crate) fn check_reload(&self, config: &CircuitBreakerConfig) -> Result<(), ConfigError> {
        let rules = self.rules();
        let live = &rules.config;
        ConfigError::same_name(&config.name, &live.name)?;
        if config.window != live.window {
            return Err(ConfigError::needs_restart(
                "window",
                format_args!("{:?}", config.window),
                format_args!("{:?}", live.window),
            ));
        }
        Ok(())
    }

    /// Judges by `config` from now on, keeping the state, the window, the calls in flight and
    /// the open or half-open phase under way; refused, with nothing changed, when `config`
    /// names another breaker or another window.
    pub(crate) fn reload(&self, config: &CircuitBreakerConfig) -> Result<(), ConfigError> {
        {
            // Under the transition lock, so that no transition reads half old and half new
            // rules.
            let _recovery = self.lock();
            self.check_reload(config)?;
            let seed = config.seed.unwrap_or(self.rules().seed);
            self.rules.store(Arc::new(Rules::new(config, seed)));
            self.slow_rule
                .store(config.slow_call_duration.is_some(), Ordering::Relaxed);
            let state = state_of(self.word.load(Ordering::Acquire));
            if matches!(state, CircuitState::Open | CircuitState::HalfOpen) {
                // Automatic transitions may have just been turned on.
                self.follow_time();
            }
        }
        tracing::info!(name = %self.name(), key = self.key(), "circuit breaker reloaded");
        self.reassess();
        Ok(())
    }

    /// Decides again, under the rules now in force, what the calls already recorded decide: a
    /// window over a lowered threshold trips, probes enough for fewer probes close. Otherwise
    /// the decision would wait for a call that changes the window, or, in half-open, for a
    /// probe slot that the probes already decided hold.
    fn reassess(&self) {
        let (word, ends) = self.ends(self.word.load(Ordering::Acquire));
        let now = self.now_nanos();
        match state_of(word) {
            CircuitState::Closed => {
                let counts = self
                    .window
                    .counts(self.since_epoch(Instant::now()).as_secs());
                let consecutive = self.consecutive.load(Ordering::Relaxed);
                // New thresholds: the window's calm was judged by the old ones.
                self.window.settle(0, false);
                let latest = self.ring.latest();
                if self.judge(&self.rules(), &counts, latest, consecutive) == RunVerdict::Trip {
                    self.transition(word, CircuitState::Open, None, now);
                }
            }
            CircuitState::HalfOpen if now < ends => {
                let probes = self.probes.load(Ordering::Acquire);
                if probes >> PROBE_TAG_SHIFT != probe_tag(generation_of(word)) {
                    return;
                }
                let rules = self.rules();
                let needed = rules.probes_to_close;
                if probe_field(probes, PROBE_OK) >= needed {
                    self.transition(word, CircuitState::Closed, None, now);
                } else if probe_field(probes, PROBE_BAD) > rules.probes - needed {
                    self.transition(word, CircuitState::Open, None, now);
                }
            }
            _ => {}
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<CircuitState> {
        self.state_tx.subscribe()
    }

    fn since_epoch(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }

    fn now_nanos(&self) -> u64 {
        nanos(self.since_epoch(Instant::now()))
    }

    /// The window's counts; in half-open, the probes' of the current phase.
    pub(crate) fn counts(&self) -> WindowCounts {
        let (word, ends) = self.ends(self.word.load(Ordering::Acquire));
        match state_of(word) {
            CircuitState::HalfOpen => self.probe_counts(generation_of(word)),
            // Half-open by now, and no probe has been let through yet.
            CircuitState::Open if self.now_nanos() >= ends => WindowCounts::default(),
            _ => self
                .window
                .counts(self.since_epoch(Instant::now()).as_secs()),
        }
    }

    /// The probes decided in the half-open phase of `generation`.
    fn probe_counts(&self, generation: u64) -> WindowCounts {
        let tag = probe_tag(generation);
        let probes = self.probes.load(Ordering::Acquire);
        if probes >> PROBE_TAG_SHIFT != tag {
            return WindowCounts::default();
        }
        let calls = u64::from(probe_field(probes, PROBE_OK) + probe_field(probes, PROBE_BAD));
        let counts = self.probe_counts.load(Ordering::Acquire);
        if counts >> PROBE_TAG_SHIFT != tag {
            return WindowCounts {
                calls,
                ..WindowCounts::default()
            };
        }
        WindowCounts {
            calls,
            failures: u64::from(probe_field(counts, PROBE_FAILED)).min(calls),
            slow: u64::from(probe_field(counts, PROBE_SLOW)).min(calls),
        }
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// Time left in the open state, if open and its end is set (a half-open phase that timed
    /// out has no end until the move back to open is made).
    pub(crate) fn open_remaining(&self) -> Option<Duration> {
        let (word, until) = self.ends(self.word.load(Ordering::Acquire));
        let now = self.now_nanos();
        if state_of(word) != CircuitState::Open || now >= until {
            return None;
        }
        Some(Duration::from_nanos(until - now))
    }

    /// `word` (or the word it has become) and when its state ends, in nanoseconds since
    /// `epoch`: the end of open, the probe deadline of half-open, `u64::MAX` for the others.
    //
    // Seqlock-style: the time is read after the word, then the word again, and only a pair
    // that reads the same word twice is returned. Each time has an atomic of its own that only
    // the entry into its state writes, before the word (and the mutex orders entries). So a
    // time written by a later entry was written after the word left `word`'s state, and the
    // second read of the word, which comes after it, sees that. One `until` shared by both
    // states could not be checked this way: entering half-open overwrote it (with `u64::MAX`
    // when there is no maximum wait) while the word still read open, so a caller between the
    // two stores read the same word twice and rejected with a `retry_after` of 584 years.
    fn ends(&self, mut word: u64) -> (u64, u64) {
        loop {
            let ends = match state_of(word) {
                CircuitState::Open => self.open_until.load(Ordering::Acquire),
                CircuitState::HalfOpen => self.probe_deadline.load(Ordering::Acquire),
                _ => return (word, u64::MAX),
            };
            let again = self.word.load(Ordering::Acquire);
            if again == word {
                return (word, ends);
            }
            word = again;
        }
    }

    /// Whether a call admitted now is timed: a slow-call rule judges it, or an observer takes
    /// its duration (see [`Observers::wants_durations`]).
    #[inline]
    pub(crate) fn times_calls(&self) -> bool {
        self.slow_rule.load(Ordering::Relaxed) || self.observers.wants_durations()
    }

    // ===== admission =====

    /// Admits a call, or rejects it with a [`Rejected`] of kind `CircuitOpen`.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Permit, BoxError> {
        let word = self.word.load(Ordering::Acquire);
        match self.fast_permit(word) {
            Some(permit) => Ok(permit),
            None => self.admit_slow(word),
        }
    }

    #[inline]
    fn fast_permit(&self, word: u64) -> Option<Permit> {
        let (kind, seq) = match state_of(word) {
            CircuitState::Closed if self.band.load(Ordering::Relaxed) == 0 => {
                (PermitKind::Closed, Some(self.ring.admit()))
            }
            CircuitState::MetricsOnly => (PermitKind::MetricsOnly, None),
            CircuitState::Disabled => (PermitKind::Untracked, None),
            _ => return None,
        };
        Some(Permit {
            generation: generation_of(word),
            kind,
            seq,
        })
    }

    #[cold]
    #[inline(never)]
    fn admit_slow(&self, mut word: u64) -> Result<Permit, BoxError> {
        // Each round follows one transition another call or this one made; a few suffice.
        for _ in 0..4 {
            if let Some(permit) = self.fast_permit(word) {
                return Ok(permit);
            }
            let (current, ends) = self.ends(word);
            if current != word {
                // A transition came in between: follow it.
                word = current;
                continue;
            }
            let generation = generation_of(word);
            match state_of(word) {
                CircuitState::Closed => {
                    if self.take_shed() {
                        return Err(self.shed());
                    }
                    return Ok(Permit {
                        generation,
                        kind: PermitKind::Closed,
                        seq: Some(self.ring.admit()),
                    });
                }
                CircuitState::Open => {
                    let now = self.now_nanos();
                    if now < ends {
                        let left = Duration::from_nanos(ends - now);
                        return Err(self.reject(CircuitState::Open, Some(left)));
                    }
                    self.transition(word, CircuitState::HalfOpen, None, self.due_at(ends, now));
                }
                CircuitState::HalfOpen => {
                    // The deadline comes first: past it, half-open has given up on its
                    // probes, however many slots are free.
                    let now = self.now_nanos();
                    if now >= ends {
                        self.transition(word, CircuitState::Open, None, self.due_at(ends, now));
                    } else if self.try_probe(generation) {
                        return Ok(Permit {
                            generation,
                            kind: PermitKind::Probe,
                            seq: None,
                        });
                    } else {
                        return Err(self.reject(CircuitState::HalfOpen, None));
                    }
                }
                state => return Err(self.reject(state, None)),
            }
            word = self.word.load(Ordering::Acquire);
        }
        Err(self.reject(state_of(word), None))
    }

    fn try_probe(&self, generation: u64) -> bool {
        let tag = probe_tag(generation);
        let mut current = self.probes.load(Ordering::Acquire);
        loop {
            if current >> PROBE_TAG_SHIFT != tag {
                return false;
            }
            let in_flight = probe_field(current, PROBE_IN_FLIGHT);
            let succeeded = probe_field(current, PROBE_OK);
            let taken = in_flight + succeeded + probe_field(current, PROBE_BAD);
            let rules = self.rules();
            if taken >= rules.probes || (rules.probe_slow_start && in_flight > succeeded) {
                return false;
            }
            match self.probes.compare_exchange_weak(
                current,
                current + PROBE_IN_FLIGHT,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether a call admitted now in the closed state is shed: while a run of failures is in
    /// its shed band, a retry always (the repeat of a call into a downstream that failed it),
    /// a first attempt when the run owes one a shed.
    fn take_shed(&self) -> bool {
        let retry = Attempt::current().is_some_and(|attempt| attempt.number > 1);
        let mut band = self.band.load(Ordering::Acquire);
        loop {
            if band == 0 {
                return false;
            }
            if retry {
                return true;
            }
            if band & BAND_OWED == 0 {
                return false;
            }
            match self.band.compare_exchange_weak(
                band,
                band - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => band = actual,
            }
        }
    }

    /// A failure of admission number `seq` (if known) made a run in its shed band: one more
    /// first attempt is owed a shed.
    #[cold]
    #[inline(never)]
    fn feed_band(&self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.band_seq.fetch_max(seq, Ordering::AcqRel);
        }
        let _ = self
            .band
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |band| {
                Some(BAND_ON | ((band & BAND_OWED) + 1).min(BAND_OWED))
            });
    }

    /// A success of admission number `seq` was recorded while the band was on: it ends the run,
    /// and the band unless it was admitted before the run's latest failure or the calls before
    /// it still fail more often than the breaker rides through (a downstream failing most calls
    /// with a success now and then, as a queue past the callers' timeouts, would otherwise
    /// end every band with its first success and send its whole load again).
    #[cold]
    #[inline(never)]
    fn end_band(&self, seq: Option<u64>) {
        if seq.is_some_and(|seq| seq <= self.band_seq.load(Ordering::Acquire)) {
            return;
        }
        let ride = match self.rules().consecutive_failures {
            Some(RunRule::Adaptive(rule)) => rule.ride(),
            _ => 1.0,
        };
        let recent = self.window.failures_before_latest(run::RECENT).unwrap_or(0);
        if recent as f64 / run::RECENT as f64 <= ride {
            self.band.store(0, Ordering::Release);
        }
    }

    /// Sheds a call: a local rejection of the closed state, with no `retry_after`.
    #[cold]
    #[inline(never)]
    fn shed(&self) -> BoxError {
        self.observers.metrics.shed.increment(1);
        tracing::debug!(rejected_by = %self.name(), rejection = "circuit_shed", key = self.key(), "call shed");
        self.observers.hooks.rejected.call(RejectedEvent {
            name: self.name(),
            key: self.key(),
            state: CircuitState::Closed,
            reason: RejectReason::Shed,
            retry_after: None,
        });
        Rejected::new(RejectionKind::CircuitOpen, self.name().clone()).into()
    }

    #[cold]
    #[inline(never)]
    fn reject(&self, state: CircuitState, retry_after: Option<Duration>) -> BoxError {
        self.observers.metrics.rejected.increment(1);
        tracing::debug!(rejected_by = %self.name(), rejection = "circuit_open", key = self.key(), %state, ?retry_after, "call rejected");
        self.observers.hooks.rejected.call(RejectedEvent {
            name: self.name(),
            key: self.key(),
            state,
            reason: RejectReason::Open,
            retry_after,
        });
        let rejection = Rejected::new(RejectionKind::CircuitOpen, self.name().clone());
        match retry_after {
            Some(after) => rejection.with_retry_after(after).into(),
            None => rejection.into(),
        }
    }

    // ===== recording =====

    /// The outcome of a failure an outlier set marked as its endpoint's own: none, since
    /// another endpoint of the set succeeds and the dependency is up, unless
    /// `endpoint_fault_is_failure`.
    #[cold]
    pub(crate) fn endpoint_fault(&self) -> Outcome {
        if self.rules().endpoint_fault_is_failure {
            Outcome::Failure
        } else {
            Outcome::Ignored
        }
    }

    /// Records how a call admitted with `permit` ended; `start` is when it began;
    /// `hint` how long to stay open should this result trip the breaker.
    #[inline]
    pub(crate) fn record(
        &self,
        permit: Permit,
        outcome: Outcome,
        start: Option<Instant>,
        hint: Option<Duration>,
    ) {
        if permit.kind == PermitKind::Untracked {
            return;
        }
        let now = (start.is_some() || self.window.needs_clock()).then(Instant::now);
        let elapsed = start
            .zip(now)
            .map(|(start, now)| now.saturating_duration_since(start));
        let slow = elapsed.is_some_and(|elapsed| {
            self.rules()
                .slow_call_duration
                .is_some_and(|limit| elapsed > limit)
        });
        let outcome = match outcome {
            // A downstream shedding load is up: by default its refusals count for nothing.
            Outcome::Overload if self.rules().overload_is_failure => Outcome::Failure,
            Outcome::Overload => Outcome::Ignored,
            outcome => outcome,
        };
        let call = match (outcome, slow) {
            (Outcome::Success, false) => CallOutcome::Success,
            (Outcome::Success, true) => CallOutcome::SlowSuccess,
            (Outcome::Failure, false) => CallOutcome::Failure,
            (Outcome::Failure, true) => CallOutcome::SlowFailure,
            (Outcome::Ignored | Outcome::Overload, _) => CallOutcome::Ignored,
        };
        self.observers.metrics.calls[call.index()].increment(1);
        if let Some(elapsed) = elapsed {
            self.observers
                .metrics
                .duration
                .record(elapsed.as_secs_f64());
        }
        if self.observers.hooks.outcome.is_set() {
            self.outcome_hook(permit, call, elapsed);
        }
        tracing::trace!(name = %self.name(), outcome = call.as_str(), "call recorded");
        match permit.kind {
            PermitKind::Probe => self.record_probe(permit.generation, call, hint),
            PermitKind::Closed | PermitKind::MetricsOnly => {
                let second = now.map_or(0, |now| seconds_since(self.epoch, now));
                self.record_closed(permit, call, second, hint);
            }
            PermitKind::Untracked => {}
        }
    }

    #[cold]
    fn outcome_hook(&self, permit: Permit, outcome: CallOutcome, duration: Option<Duration>) {
        self.observers.hooks.outcome.call(OutcomeEvent {
            name: self.name(),
            key: self.key(),
            outcome,
            state: permit.kind.state(),
            duration,
        });
    }

    #[inline]
    fn record_closed(
        &self,
        permit: Permit,
        call: CallOutcome,
        second: u64,
        hint: Option<Duration>,
    ) {
        let word = self.word.load(Ordering::Acquire);
        let late = word != pack(permit.generation, permit.kind.state());
        // The slot is written first, so that a run found by a failure that ends at the same
        // time reads what this call became.
        let in_ring = permit.seq.is_some_and(|seq| {
            let slot = match call {
                _ if late || call == CallOutcome::Ignored => Slot::Skipped,
                _ if call.is_failure() => Slot::Failure,
                _ => Slot::Success,
            };
            self.ring.complete(seq, slot)
        });
        if call == CallOutcome::Ignored {
            return;
        }
        if late {
            tracing::trace!(name = %self.name(), "late result not counted");
            return;
        }
        let changed = self.window.record(
            second,
            Sample {
                failure: call.is_failure(),
                slow: call.is_slow(),
            },
        );
        let consecutive = if call.is_failure() {
            let run = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
            if run == 1
                && let Some(RunRule::Adaptive(rule)) = self.rules().consecutive_failures
            {
                self.start_run(rule, second);
            }
            run
        } else {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            if self.band.load(Ordering::Relaxed) != 0 {
                self.end_band(permit.seq);
            }
            if !changed {
                // Same counts, no run of failures: the rates and the decision stand.
                return;
            }
            0
        };
        let counts = self.window.counts(second);
        if let Some(gauges) = &self.observers.metrics.gauges {
            gauges.failure_rate.set(counts.failure_rate());
            gauges.slow_call_rate.set(counts.slow_call_rate());
        }
        let rules = self.rules();
        self.window.settle(second, rules.rates_below(&counts));
        let seq = permit.seq.filter(|_| in_ring && call.is_failure());
        if permit.kind != PermitKind::Closed {
            return;
        }
        match self.judge(&rules, &counts, seq, consecutive) {
            RunVerdict::Trip => {
                self.transition(word, CircuitState::Open, hint, self.now_nanos());
            }
            RunVerdict::Shed => self.feed_band(permit.seq),
            // A band that outlived its run's end: each failure still owes a shed.
            RunVerdict::Pass if call.is_failure() && self.band.load(Ordering::Relaxed) != 0 => {
                self.feed_band(permit.seq)
            }
            RunVerdict::Pass => {}
        }
    }

    /// A run of failures began, in completion order, with the call just recorded: sets the run
    /// that trips from the failure rate before it, for when the admission ring has lost the
    /// run.
    #[cold]
    #[inline(never)]
    fn start_run(&self, rule: AdaptiveRun, second: u64) {
        let counts = self.window.counts(second);
        let recent = self.window.failures_before_latest(run::RECENT);
        let p0 = run::baseline(1, counts.failures, counts.calls, recent);
        self.shed_limit.store(rule.limit(p0), Ordering::Relaxed);
        self.run_limit.store(rule.trip_limit(p0), Ordering::Relaxed);
    }

    /// What the run of failures that call `seq` (in admission order) belongs to calls for;
    /// where the ring has lost that run, or there is no call, what the run of `consecutive`
    /// failures in completion order calls for.
    #[cold]
    #[inline(never)]
    fn run_verdict(
        &self,
        rule: RunRule,
        counts: &WindowCounts,
        seq: Option<u64>,
        consecutive: u32,
    ) -> RunVerdict {
        let recent = self.window.ordered_len().map(|n| run::RECENT.min(n - 1));
        let Some(found) = seq.and_then(|seq| self.ring.run_around(seq, recent.unwrap_or(0))) else {
            let (shed, trip) = match rule {
                RunRule::Fixed(n) => (n, n),
                RunRule::Adaptive(_) => (
                    self.shed_limit.load(Ordering::Relaxed),
                    self.run_limit.load(Ordering::Relaxed),
                ),
            };
            return match consecutive {
                run if run >= trip => RunVerdict::Trip,
                run if run >= shed => RunVerdict::Shed,
                _ => RunVerdict::Pass,
            };
        };
        if found.failures == 0 {
            return RunVerdict::Pass;
        }
        match rule {
            RunRule::Fixed(n) if found.failures >= n => RunVerdict::Trip,
            RunRule::Fixed(_) => RunVerdict::Pass,
            RunRule::Adaptive(rule) => rule.verdict(
                found.failures,
                run::baseline(
                    u64::from(found.failures),
                    counts.failures,
                    counts.calls,
                    recent.map(|_| found.recent),
                ),
            ),
        }
    }

    /// What the window and the run of failures call for: a rate over its threshold or a run
    /// at its trip opens the breaker, a run in its shed band sheds.
    #[inline]
    fn judge(
        &self,
        rules: &Rules,
        counts: &WindowCounts,
        seq: Option<u64>,
        consecutive: u32,
    ) -> RunVerdict {
        let run = match rules.consecutive_failures {
            Some(rule) if seq.is_some() || consecutive > 0 => {
                self.run_verdict(rule, counts, seq, consecutive)
            }
            _ => RunVerdict::Pass,
        };
        if run == RunVerdict::Trip
            || (counts.calls >= rules.minimum_calls && !rules.rates_below(counts))
        {
            return RunVerdict::Trip;
        }
        run
    }

    fn record_probe(&self, generation: u64, call: CallOutcome, hint: Option<Duration>) {
        let expected = pack(generation, CircuitState::HalfOpen);
        let (word, deadline) = self.ends(self.word.load(Ordering::Acquire));
        let now = self.now_nanos();
        if word == expected && now >= deadline {
            // Decided too late: the phase is over whether or not the move was made yet, and
            // the result counts for nothing, whoever runs first at the deadline.
            self.settle_probe(generation, None);
            self.transition(
                expected,
                CircuitState::Open,
                None,
                self.due_at(deadline, now),
            );
            return;
        }
        let rules = self.rules();
        let bad = call.is_failure() || (call.is_slow() && rules.slow_call_rate.is_some());
        let counted = call != CallOutcome::Ignored;
        let Some(probes) = self.settle_probe(generation, counted.then_some(bad)) else {
            return;
        };
        if !counted {
            return;
        }
        self.count_probe(generation, call);
        let needed = rules.probes_to_close;
        if probe_field(probes, PROBE_OK) >= needed {
            self.transition(expected, CircuitState::Closed, None, now);
        } else if probe_field(probes, PROBE_BAD) > rules.probes - needed {
            self.transition(expected, CircuitState::Open, hint, now);
        }
    }

    /// Adds a decided probe of `generation` to the counts reported in half-open.
    fn count_probe(&self, generation: u64, call: CallOutcome) {
        let tag = probe_tag(generation);
        let add =
            u64::from(call.is_failure()) * PROBE_FAILED + u64::from(call.is_slow()) * PROBE_SLOW;
        let updated =
            self.probe_counts
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |counts| {
                    (counts >> PROBE_TAG_SHIFT == tag).then_some(counts + add)
                });
        if let (Ok(_), Some(gauges)) = (updated, &self.observers.metrics.gauges) {
            let counts = self.probe_counts(generation);
            gauges.failure_rate.set(counts.failure_rate());
            gauges.slow_call_rate.set(counts.slow_call_rate());
        }
    }

    /// Frees the probe slot of a probe admitted in `generation` and, if that half-open phase is
    /// still on, counts `bad` (when given); the new probe word, or `None` for a probe of an
    /// earlier phase (whose slot is freed all the same: it was in flight until now).
    fn settle_probe(&self, generation: u64, bad: Option<bool>) -> Option<u64> {
        let tag = probe_tag(generation);
        let mut current = self.probes.load(Ordering::Acquire);
        loop {
            if probe_field(current, PROBE_IN_FLIGHT) == 0 {
                debug_assert!(false, "a probe settled twice");
                return None;
            }
            let same_phase = current >> PROBE_TAG_SHIFT == tag;
            let counted = match bad {
                Some(true) if same_phase => PROBE_BAD,
                Some(false) if same_phase => PROBE_OK,
                _ => 0,
            };
            let next = current - PROBE_IN_FLIGHT + counted;
            match self.probes.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return same_phase.then_some(next),
                Err(actual) => current = actual,
            }
        }
    }

    /// A call admitted with `permit` ended without a result (its future was dropped): frees its
    /// probe slot, records nothing.
    pub(crate) fn cancel(&self, permit: Permit) {
        if permit.kind == PermitKind::Probe {
            self.settle_probe(permit.generation, None);
        }
        if let Some(seq) = permit.seq {
            self.ring.complete(seq, Slot::Skipped);
        }
    }

    // ===== transitions =====

    fn lock(&self) -> MutexGuard<'_, Recovery> {
        self.transitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When a move that time made due, at `due`, and found at `now` takes effect: at `due`
    /// with automatic transitions (as the timer would have made it), at `now` without (an idle
    /// breaker starts its half-open phase with the first call, not long before it).
    fn due_at(&self, due: u64, now: u64) -> u64 {
        if self.rules().automatic_transitions {
            due
        } else {
            now
        }
    }

    /// Moves from the state word `expected` to `to` as of `at` (nanoseconds since `epoch`);
    /// false if another transition came first.
    fn transition(&self, expected: u64, to: CircuitState, hint: Option<Duration>, at: u64) -> bool {
        let mut recovery = self.lock();
        if self.word.load(Ordering::Acquire) != expected {
            return false;
        }
        let from = self.enter(&mut recovery, expected, to, hint, at);
        drop(recovery);
        self.announce(from, to);
        true
    }

    /// Moves to `to` whatever the state; with `recover`, also forgets past openings (and starts
    /// a fresh window even when already in `to`).
    pub(crate) fn force(&self, to: CircuitState, recover: bool) {
        let mut recovery = self.lock();
        let current = self.word.load(Ordering::Acquire);
        let from = state_of(current);
        if from == to && !recover {
            return;
        }
        if recover {
            recovery.openings = 0;
            recovery.previous_open = Duration::ZERO;
        }
        let now = self.now_nanos();
        self.enter(&mut recovery, current, to, None, now);
        drop(recovery);
        if from != to {
            self.announce(from, to);
        }
    }

    fn enter(
        &self,
        recovery: &mut Recovery,
        current: u64,
        to: CircuitState,
        hint: Option<Duration>,
        at: u64,
    ) -> CircuitState {
        let from = state_of(current);
        let generation = generation_of(current) + 1;
        // A run's shed ends with the state it began in.
        self.band.store(0, Ordering::Release);
        match to {
            CircuitState::Open => {
                let open = self.open_duration(recovery, generation, hint);
                self.open_until
                    .store(at.saturating_add(nanos(open)), Ordering::Release);
            }
            CircuitState::HalfOpen => {
                // Probes of earlier phases still in flight keep their slots: never more than
                // the configured number of probes reach the downstream at once.
                let tag = probe_tag(generation) << PROBE_TAG_SHIFT;
                let _ = self
                    .probes
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                        Some(tag | (word & PROBE_IN_FLIGHT_MASK))
                    });
                self.probe_counts.store(tag, Ordering::Release);
                let deadline = at.saturating_add(nanos(self.rules().half_open_max_wait));
                self.probe_deadline.store(deadline, Ordering::Release);
            }
            CircuitState::Closed | CircuitState::MetricsOnly => {
                self.window.reset();
                self.ring.restart();
                self.consecutive.store(0, Ordering::Relaxed);
                if from == CircuitState::HalfOpen && to == CircuitState::Closed {
                    recovery.openings = 0;
                    recovery.previous_open = Duration::ZERO;
                }
            }
            CircuitState::Disabled | CircuitState::ForcedOpen => {}
        }
        self.word.store(pack(generation, to), Ordering::Release);
        let metrics = &self.observers.metrics;
        if from != to {
            metrics.transitions[from.index()][to.index()].increment(1);
            if let Some(gauges) = &metrics.gauges {
                gauges.state[from.index()].set(0.0);
                gauges.state[to.index()].set(1.0);
            }
        }
        if let (
            Some(gauges),
            CircuitState::Closed | CircuitState::MetricsOnly | CircuitState::HalfOpen,
        ) = (&metrics.gauges, to)
        {
            gauges.failure_rate.set(0.0);
            gauges.slow_call_rate.set(0.0);
        }
        if matches!(to, CircuitState::Open | CircuitState::HalfOpen) {
            self.follow_time();
        }
        if let Some(tracker) = self
            .tracker
            .as_ref()
            .filter(|_| from.rejects() != to.rejects())
        {
            tracker.queue();
        }
        self.state_tx.send_replace(to);
        from
    }

    // ===== automatic transitions =====

    /// Starts the timer task, unless one runs, automatic transitions are off or there is no
    /// runtime to run it (calls and handles still see the moves). Under the transition lock.
    fn follow_time(&self) {
        if !self.rules().automatic_transitions || self.timed.load(Ordering::Acquire) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.timed.store(true, Ordering::Release);
            let timer = Timer {
                breaker: self.this.clone(),
                armed: true,
            };
            runtime.spawn(follow_time(timer, self.state_tx.subscribe()));
        }
    }

    /// When time next moves the breaker; `None` (and the timer task ends) when it does not.
    fn next_move(&self) -> Option<Instant> {
        let _recovery = self.lock();
        let (word, ends) = self.ends(self.word.load(Ordering::Acquire));
        if !matches!(state_of(word), CircuitState::Open | CircuitState::HalfOpen) {
            self.timed.store(false, Ordering::Release);
            return None;
        }
        let due = self.epoch.checked_add(Duration::from_nanos(ends));
        Some(due.unwrap_or(self.epoch + FOREVER))
    }

    /// Makes the move time has made due, if any, as of when it was due.
    fn catch_up(&self) {
        let (word, ends) = self.ends(self.word.load(Ordering::Acquire));
        if self.now_nanos() < ends {
            return;
        }
        match state_of(word) {
            CircuitState::Open => self.transition(word, CircuitState::HalfOpen, None, ends),
            CircuitState::HalfOpen => self.transition(word, CircuitState::Open, None, ends),
            _ => false,
        };
    }

    fn open_duration(
        &self,
        recovery: &mut Recovery,
        generation: u64,
        hint: Option<Duration>,
    ) -> Duration {
        recovery.openings = recovery.openings.saturating_add(1);
        let rules = self.rules();
        if let Some(hint) = hint {
            // A Retry-After of 0 would switch the breaker off, a huge one hold it open for a
            // day whatever the configuration says.
            return hint.clamp(*rules.hinted_open.start(), *rules.hinted_open.end());
        }
        // Seeded per opening: reproducible from the seed, and no RNG state to guard.
        let seed = rules.seed ^ generation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let open = match rules.open_duration {
            OpenDuration::Fixed(open) => open,
            OpenDuration::Backoff(backoff) => {
                let previous = if recovery.previous_open.is_zero() {
                    backoff.base()
                } else {
                    recovery.previous_open
                };
                let open = open_backoff(&backoff, recovery.openings, previous, &mut rng);
                recovery.previous_open = open;
                open
            }
        };
        if rules.open_jitter > 0.0 {
            // Breakers that opened together would all probe at one instant.
            let stretch = 1.0 + rng.random_range(0.0..=rules.open_jitter);
            return open.mul_f64(stretch).min(FOREVER);
        }
        open
    }

    fn announce(&self, from: CircuitState, to: CircuitState) {
        tracing::info!(name = %self.name(), key = self.key(), %from, %to, "circuit breaker state changed");
        self.observers.hooks.state_change.call(StateChangedEvent {
            name: self.name(),
            key: self.key(),
            from,
            to,
        });
    }
}

/// The open duration of opening `n`, jittered but never shorter than the backoff's base.
///
/// Full jitter over `[0, curve]` would open a breaker with a 1 s base for under 100 ms one
/// time in ten: all but off. So the jitter only spreads the part of the curve above the base:
/// full jitter is uniform in `[base, curve]`, equal jitter in `[max(base, curve / 2), curve]`.
fn open_backoff(backoff: &Backoff, n: u32, previous: Duration, rng: &mut impl Rng) -> Duration {
    let base = backoff.base();
    let curve = backoff.curve(n);
    let low = match backoff.jitter_kind() {
        Jitter::None => return curve,
        Jitter::Full => base,
        Jitter::Equal => (curve / 2).max(base),
        Jitter::Decorrelated => return backoff.delay(n, previous, rng).max(base),
    };
    let (low, high) = (nanos(low), nanos(curve));
    if low >= high {
        return curve;
    }
    Duration::from_nanos(rng.random_range(low..=high))
}

/// Marks a breaker as followed by a timer task for as long as the task lives; dropped with the
/// task unfinished (its runtime shut down, even before it first ran), it lets the next opening
/// start a new one.
struct Timer {
    breaker: Weak<Breaker>,
    armed: bool,
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let (true, Some(breaker)) = (self.armed, self.breaker.upgrade()) {
            breaker.timed.store(false, Ordering::Release);
        }
    }
}

/// Makes the moves time decides while the timer's breaker is open or half-open.
async fn follow_time(mut timer: Timer, mut changes: watch::Receiver<CircuitState>) {
    loop {
        let due = {
            let Some(breaker) = timer.breaker.upgrade() else {
                return;
            };
            changes.borrow_and_update();
            match breaker.next_move() {
                Some(due) => due,
                None => {
                    // `next_move` cleared the mark under the transition lock.
                    timer.armed = false;
                    return;
                }
            }
        };
        match tokio::time::timeout_at(due, changes.changed()).await {
            Ok(Ok(())) => {}
            // The breaker is gone.
            Ok(Err(_)) => return,
            Err(_) => {
                if let Some(breaker) = timer.breaker.upgrade() {
                    breaker.catch_up();
                }
            }
        }
    }
}

/// A per-process random seed, from the standard library's randomly keyed hasher.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use seawall_core::testing::TestRecorder;

    fn config(slow: bool) -> CircuitBreakerConfig {
        let builder = CircuitBreakerConfig::builder().count_window(10);
        let builder = match slow {
            true => builder
                .slow_call_duration(Duration::from_secs(1))
                .slow_call_rate_threshold(0.5),
            false => builder,
        };
        builder.build().unwrap()
    }

    fn breaker(config: &CircuitBreakerConfig) -> Arc<Breaker> {
        let observers = Arc::new(Observers::new("b".into(), true));
        Breaker::new(config, observers, None, None)
    }

    proptest::proptest! {
        /// The squared test agrees with `failures ≥ t·n + z·√(n·t(1 − t))`, or every call
        /// failed, away from ties that rounding may decide either way.
        #[test]
        fn a_rate_trips_above_its_threshold_by_z_standard_deviations(
            calls in 1u64..20_000,
            share in 0.0f64..=1.0,
            threshold in 0.01f64..=1.0,
            sigmas in 0.0f64..=10.0,
        ) {
            let failures = ((calls as f64 * share).round() as u64).min(calls);
            let bar = threshold * calls as f64
                + sigmas * (calls as f64 * threshold * (1.0 - threshold)).sqrt();
            proptest::prop_assume!((failures as f64 - bar).abs() > 1e-6 || failures == calls);
            let rule = RateRule::new(threshold, sigmas);
            let rate = failures as f64 / calls as f64;
            let model = failures as f64 >= bar || (failures == calls && rate >= threshold);
            proptest::prop_assert_eq!(rule.trips(rate, calls), model);
        }
    }

    #[test]
    fn a_rate_rule_without_margin_is_the_bare_threshold() {
        let rule = RateRule::new(0.5, 0.0);
        assert!(!rule.trips(0.49, 100));
        assert!(rule.trips(0.5, 100));
        let margin = RateRule::new(0.5, 3.0);
        assert!(!margin.trips(0.64, 100));
        assert!(margin.trips(0.65, 100));
        assert!(margin.trips(1.0, 1), "every call failed");
        assert!(!margin.trips(0.0, 0));
    }

    #[test]
    fn a_call_nobody_times_reads_no_clock() {
        assert!(!breaker(&config(false)).times_calls());
    }

    #[test]
    fn a_slow_call_rule_times_every_call_and_a_reload_can_stop_it() {
        let b = breaker(&config(true));
        assert!(b.times_calls());
        b.reload(&config(false)).unwrap();
        assert!(!b.times_calls());
        b.reload(&config(true)).unwrap();
        assert!(b.times_calls());
    }

    #[test]
    fn an_outcome_hook_times_calls() {
        let b = breaker(&config(false));
        b.observers().hooks.outcome.set(|_| {});
        assert!(b.times_calls());
    }

    #[test]
    fn a_recorder_times_calls_whether_installed_before_the_build_or_after() {
        let recorder = TestRecorder::new();
        let before = recorder.install_for(|| breaker(&config(false)));
        assert!(
            before.times_calls(),
            "the histogram handle is the recorder's"
        );
        let after = breaker(&config(false));
        assert!(!after.times_calls());
        recorder.install_for(|| {
            let permit = after.admit().unwrap();
            after.record(permit, Outcome::Success, None, None);
        });
        assert!(
            after.times_calls(),
            "the call bound the handles to the recorder"
        );
    }
}
