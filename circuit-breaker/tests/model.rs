//! The breaker against a plain reference model: random configurations, random sequences of
//! outcomes, call durations and clock advances, with and without automatic transitions, and
//! reloads of new rules along the way; every decision, state and count must agree.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use seawall_circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, CircuitState, WindowCounts,
};
use seawall_core::BoxError;
use seawall_core::backoff::{Backoff, Jitter};
use seawall_core::classify::{ClassifyFn, Outcome};
use seawall_core::testing::paused_runtime;
use tokio::time::{Instant, advance, sleep};
use tower::{Layer, ServiceExt, service_fn};

const SLOW: Duration = Duration::from_millis(100);
const OPEN: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum WindowKind {
    Count(u32),
    Time(u64),
}

/// The failure rate the breaker rides through: the run that opens is as rare at it as the
/// run that sheds is at the baseline.
const RIDE: f64 = 0.3;

/// The consecutive-failures rule.
#[derive(Debug, Clone, Copy)]
enum Run {
    Fixed(u32),
    /// At least `min`, and as many as make the run rarer than one in `one_in` at the failure
    /// rate before it.
    Adaptive {
        min: u32,
        one_in: u64,
    },
}

impl Run {
    /// The runs that shed and that trip after the window's `before` samples (oldest first)
    /// and the `recent` calls before the run (for a count window), as the crate documents it:
    /// the baseline is the higher of the window's failure rate shrunk by ten successes (over
    /// `n + 10` calls) and raised by two standard errors (`√(p(1 - p)/(n + 10))`), and the
    /// recent calls' failures over ten; the run that sheds is the shortest `k >= min` with
    /// `max(baseline, one_in^(-1/min))^k <= 1 / one_in`, the run that trips the same at the
    /// higher of that and `ride`, the failure rate the breaker rides through. A fixed run
    /// trips and never sheds.
    fn limits(self, before: &[Sample], recent: &[Sample], ride: f64) -> (u32, u32) {
        let (min, one_in) = match self {
            Self::Fixed(n) => return (n, n),
            Self::Adaptive { min, one_in } => (min, one_in as f64),
        };
        let failures = |s: &[Sample]| s.iter().filter(|s| s.failure).count() as f64;
        let n = before.len() as f64 + 10.0;
        let window = failures(before) / n;
        let window = window + 2.0 * (window * (1.0 - window) / n).sqrt();
        let recent = failures(recent) / 10.0;
        let p = window.max(recent).max(one_in.powf(-1.0 / f64::from(min)));
        let shortest = |p: f64| {
            let mut k = min;
            while k < 10_000 && p.powi(k as i32) > 1.0 / one_in * (1.0 + 1e-9) {
                k += 1;
            }
            if p >= 1.0 { u32::MAX } else { k }
        };
        (shortest(p), shortest(p.max(ride)))
    }
}

/// What the latest run of failures calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Shed,
    Trip,
}

#[derive(Debug, Clone)]
struct Config {
    window: WindowKind,
    minimum_calls: u32,
    failure_rate: Option<f64>,
    slow_call_rate: Option<f64>,
    /// Standard deviations of noise a rate must clear above its threshold.
    margin: f64,
    consecutive: Option<Run>,
    probes: u32,
    ratio: f64,
    automatic: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Call {
        outcome: Outcome,
        millis: u64,
    },
    Advance(u64),
    /// New rules for the same window and automatic transitions.
    Reload(Config),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    failure: bool,
    slow: bool,
}

/// The breaker as a specification would describe it, one call at a time.
struct Model {
    config: Config,
    state: CircuitState,
    /// Bumped on every move, so that a result of an earlier state is not counted.
    phase: u64,
    /// Every call recorded in the closed phase, in order (calls are one at a time, so
    /// admission and completion order agree); the window is the live part of it.
    window: VecDeque<(u64, Sample)>,
    open_until: Duration,
    probe_deadline: Duration,
    probes_ok: u32,
    probes_bad: u32,
    probe_counts: WindowCounts,
    /// Whether the latest run sheds, and the first attempts it owes a shed (one for each of
    /// its failures in the band); a success or a move ends it.
    band: bool,
    owed: u32,
}

impl Model {
    fn new(config: Config) -> Self {
        Self {
            config,
            state: CircuitState::Closed,
            phase: 0,
            window: VecDeque::new(),
            open_until: Duration::ZERO,
            probe_deadline: Duration::ZERO,
            probes_ok: 0,
            probes_bad: 0,
            probe_counts: WindowCounts::default(),
            band: false,
            owed: 0,
        }
    }

    fn needed(&self) -> u32 {
        ((self.config.ratio * f64::from(self.config.probes)).ceil() as u32)
            .clamp(1, self.config.probes)
    }

    fn live(&self, now: Duration) -> impl Iterator<Item = &Sample> {
        let second = now.as_secs();
        let window = self.config.window;
        let len = self.window.len();
        self.window
            .iter()
            .enumerate()
            .filter(move |(i, (s, _))| match window {
                WindowKind::Count(n) => len - i <= n as usize,
                WindowKind::Time(span) => s + span > second,
            })
            .map(|(_, (_, sample))| sample)
    }

    fn counts(&self, now: Duration) -> WindowCounts {
        let mut c = WindowCounts::default();
        for s in self.live(now) {
            c.calls += 1;
            c.failures += u64::from(s.failure);
            c.slow += u64::from(s.slow);
        }
        c
    }

    fn open(&mut self, at: Duration) {
        self.end_band();
        self.state = CircuitState::Open;
        self.phase += 1;
        self.open_until = at + OPEN;
    }

    /// The failures among the (up to) ten calls recorded before the latest, over ten, for a
    /// count window (its last `n - 1` at most); none for a time window.
    fn recent_failures(&self) -> f64 {
        let WindowKind::Count(n) = self.config.window else {
            return 0.0;
        };
        let failures = self
            .window
            .iter()
            .rev()
            .skip(1)
            .take(10.min(n as usize - 1))
            .filter(|(_, s)| s.failure)
            .count();
        failures as f64 / 10.0
    }

    /// The failure rate of the calls before a success at or under which it ends a band: the
    /// adaptive rule's, and any once a reload left no adaptive rule to keep the band going.
    fn ride(&self) -> f64 {
        match self.config.consecutive {
            Some(Run::Adaptive { .. }) => RIDE,
            _ => 1.0,
        }
    }

    fn end_band(&mut self) {
        self.band = false;
        self.owed = 0;
    }

    fn half_open(&mut self, at: Duration) {
        self.end_band();
        self.state = CircuitState::HalfOpen;
        self.phase += 1;
        self.probe_deadline = at + WAIT;
        self.probes_ok = 0;
        self.probes_bad = 0;
        self.probe_counts = WindowCounts::default();
    }

    fn close(&mut self) {
        self.end_band();
        self.state = CircuitState::Closed;
        self.phase += 1;
        self.window.clear();
    }

    /// When a move that fell due at `due` is found at `now`, it takes effect: when it was due
    /// with automatic transitions, when it is found without.
    fn at(&self, due: Duration, now: Duration) -> Duration {
        if self.config.automatic { due } else { now }
    }

    /// With automatic transitions, every move time has made due by `now`, each when it was due.
    fn follow_time(&mut self, now: Duration) {
        while self.config.automatic {
            match self.state {
                CircuitState::Open if now >= self.open_until => self.half_open(self.open_until),
                CircuitState::HalfOpen if now >= self.probe_deadline => {
                    self.open(self.probe_deadline)
                }
                _ => break,
            }
        }
    }

    /// The state as read at `now`: a move time has made due reads as made.
    fn observed(&self, now: Duration) -> CircuitState {
        match self.state {
            CircuitState::Open if now >= self.open_until => CircuitState::HalfOpen,
            CircuitState::HalfOpen if now >= self.probe_deadline => CircuitState::Open,
            state => state,
        }
    }

    /// The counts read at `now`: the probes' in half-open.
    fn observed_counts(&self, now: Duration) -> Option<WindowCounts> {
        match (self.state, self.observed(now)) {
            (CircuitState::Closed, _) => Some(self.counts(now)),
            (CircuitState::HalfOpen, _) => Some(self.probe_counts),
            (CircuitState::Open, CircuitState::HalfOpen) => Some(WindowCounts::default()),
            _ => None,
        }
    }

    /// The phase a call starting at `now` is admitted in, or `None` if it is rejected.
    fn admit(&mut self, now: Duration) -> Option<u64> {
        self.follow_time(now);
        if self.state == CircuitState::Open {
            if now < self.open_until {
                return None;
            }
            self.half_open(self.at(self.open_until, now));
        }
        if self.state == CircuitState::HalfOpen && now >= self.probe_deadline {
            self.open(self.at(self.probe_deadline, now));
            return None;
        }
        if self.state == CircuitState::Closed && self.band && self.owed > 0 {
            // Shed: each call here is a first attempt.
            self.owed -= 1;
            return None;
        }
        Some(self.phase)
    }

    /// New rules at `now`: what the calls recorded decide under them is decided at once.
    fn reload(&mut self, config: Config, now: Duration) {
        self.follow_time(now);
        self.config = config;
        match self.state {
            CircuitState::Closed => {
                let c = self.counts(now);
                if self.trips(c, now) {
                    self.open(now);
                }
            }
            CircuitState::HalfOpen if now < self.probe_deadline => {
                if self.probes_ok >= self.needed() {
                    self.close();
                } else if self.probes_bad > self.config.probes - self.needed() {
                    self.open(now);
                }
            }
            _ => {}
        }
    }

    /// What the latest run of failures calls for: the baseline leaves the run out.
    fn run_verdict(&self, now: Duration) -> Verdict {
        let Some(rule) = self.config.consecutive else {
            return Verdict::Pass;
        };
        let run = self
            .window
            .iter()
            .rev()
            .take_while(|(_, s)| s.failure)
            .count();
        if run == 0 {
            return Verdict::Pass;
        }
        let live: Vec<Sample> = self.live(now).copied().collect();
        let before = &live[..live.len().saturating_sub(run)];
        let all: Vec<Sample> = self.window.iter().map(|(_, s)| *s).collect();
        let earlier = &all[..all.len() - run];
        let recent = match self.config.window {
            WindowKind::Count(n) => {
                &earlier[earlier.len().saturating_sub(10.min(n as usize - 1))..]
            }
            WindowKind::Time(_) => &[],
        };
        let (shed, trip) = rule.limits(before, recent, RIDE);
        match run as u32 {
            run if run >= trip => Verdict::Trip,
            run if run >= shed => Verdict::Shed,
            _ => Verdict::Pass,
        }
    }

    /// Whether `part` of the window's calls trip a threshold `t`: every call, or a rate `r`
    /// with `r >= t` and `(r - t)² · n >= z² · t(1 - t)`, as the crate documents it.
    fn rate_trips(&self, part: u64, calls: u64, t: f64) -> bool {
        let z = self.config.margin;
        let r = part as f64 / calls as f64;
        calls > 0
            && r >= t
            && (part == calls || (r - t) * (r - t) * calls as f64 >= z * z * (t * (1.0 - t)))
    }

    fn trips(&self, c: WindowCounts, now: Duration) -> bool {
        self.run_verdict(now) == Verdict::Trip
            || (c.calls >= u64::from(self.config.minimum_calls)
                && (self
                    .config
                    .failure_rate
                    .is_some_and(|t| self.rate_trips(c.failures, c.calls, t))
                    || self
                        .config
                        .slow_call_rate
                        .is_some_and(|t| self.rate_trips(c.slow, c.calls, t))))
    }

    /// Records a call admitted in `phase` that ended at `now` after `took`.
    fn record(&mut self, phase: u64, outcome: Outcome, took: Duration, now: Duration) {
        self.follow_time(now);
        if phase != self.phase {
            return;
        }
        if self.state == CircuitState::HalfOpen && now >= self.probe_deadline {
            // Decided too late.
            self.open(self.at(self.probe_deadline, now));
            return;
        }
        if outcome == Outcome::Ignored {
            return;
        }
        let sample = Sample {
            failure: outcome == Outcome::Failure,
            slow: took > SLOW,
        };
        match self.state {
            CircuitState::Closed => {
                self.window.push_back((now.as_secs(), sample));
                if !sample.failure && self.band && self.recent_failures() <= self.ride() {
                    self.end_band();
                }
                if self.trips(self.counts(now), now) {
                    self.open(now);
                } else if sample.failure && (self.band || self.run_verdict(now) == Verdict::Shed) {
                    self.band = true;
                    self.owed += 1;
                }
            }
            CircuitState::HalfOpen => {
                let bad = sample.failure || (sample.slow && self.config.slow_call_rate.is_some());
                if bad {
                    self.probes_bad += 1;
                } else {
                    self.probes_ok += 1;
                }
                self.probe_counts.calls += 1;
                self.probe_counts.failures += u64::from(sample.failure);
                self.probe_counts.slow += u64::from(sample.slow);
                if self.probes_ok >= self.needed() {
                    self.close();
                } else if self.probes_bad > self.config.probes - self.needed() {
                    self.open(now);
                }
            }
            state => unreachable!("no call is admitted in {state:?}"),
        }
    }
}

fn config() -> impl Strategy<Value = Config> {
    let window = prop_oneof![
        (1u32..=8).prop_map(WindowKind::Count),
        (1u64..=4).prop_map(WindowKind::Time)
    ];
    let rate = || proptest::option::of(prop_oneof![Just(0.25), Just(0.5), Just(1.0)]);
    let margin = prop_oneof![Just(0.0), Just(0.5), Just(1.0), Just(3.0)];
    (
        (window, margin),
        1u32..=8,
        rate(),
        rate(),
        proptest::option::of(prop_oneof![
            (1u32..=4).prop_map(Run::Fixed),
            (
                1u32..=4,
                prop_oneof![Just(10u64), Just(100), Just(10_000_000)]
            )
                .prop_map(|(min, one_in)| Run::Adaptive { min, one_in }),
        ]),
        1u32..=3,
        prop_oneof![Just(0.5), Just(1.0)],
        any::<bool>(),
    )
        .prop_map(
            |(
                (window, margin),
                minimum,
                failure_rate,
                slow_call_rate,
                consecutive,
                probes,
                ratio,
                automatic,
            )| {
                let minimum_calls = match window {
                    WindowKind::Count(n) => minimum.min(n),
                    WindowKind::Time(_) => minimum,
                };
                let failure_rate = if slow_call_rate.is_none() && consecutive.is_none() {
                    failure_rate.or(Some(0.5))
                } else {
                    failure_rate
                };
                Config {
                    window,
                    minimum_calls,
                    failure_rate,
                    slow_call_rate,
                    margin,
                    consecutive,
                    probes,
                    ratio,
                    automatic,
                }
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        4 => Just(Outcome::Success),
        3 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored)
    ];
    let millis = prop_oneof![Just(0u64), Just(50), Just(100), Just(150), Just(1200)];
    prop_oneof![
        4 => (outcome, millis).prop_map(|(outcome, millis)| Op::Call { outcome, millis }),
        // At most the open duration at a time, so a timer never has two moves to catch up on.
        1 => prop_oneof![Just(100u64), Just(500), Just(1000)].prop_map(Op::Advance)
    ]
}

/// Either of `op`, or new rules for `window` and `automatic`.
fn op_or_reload(window: WindowKind, automatic: bool) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => op(),
        1 => config().prop_map(move |c| {
            let minimum_calls = match window {
                WindowKind::Count(n) => c.minimum_calls.min(n),
                WindowKind::Time(_) => c.minimum_calls,
            };
            Op::Reload(Config {
                window,
                automatic,
                minimum_calls,
                ..c
            })
        })
    ]
}

fn layer(config: &Config) -> CircuitBreakerLayer {
    CircuitBreakerLayer::new(breaker_config(config))
}

fn breaker_config(config: &Config) -> CircuitBreakerConfig {
    let mut b = CircuitBreakerConfig::builder()
        .name("model")
        .minimum_calls(config.minimum_calls)
        .slow_call_duration(SLOW)
        .open_duration(OPEN)
        .open_jitter(0.0)
        .half_open_max_wait(WAIT)
        .automatic_transitions(config.automatic)
        .half_open_probes(config.probes)
        .half_open_success_ratio(config.ratio)
        .noise_margin(config.margin);
    b = match config.window {
        WindowKind::Count(n) => b.count_window(n),
        WindowKind::Time(s) => b.time_window(Duration::from_secs(s)),
    };
    b = match config.failure_rate {
        Some(t) => b.failure_rate_threshold(t),
        None => b.no_failure_rate(),
    };
    if let Some(t) = config.slow_call_rate {
        b = b.slow_call_rate_threshold(t);
    }
    b = match config.consecutive {
        Some(Run::Fixed(n)) => b.consecutive_failures(n),
        Some(Run::Adaptive { min, one_in }) => b.adaptive_consecutive_failures(min, one_in),
        None => b.no_consecutive_failures(),
    };
    b.build().expect("a valid configuration")
}

async fn check(config: Config, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (layer, handle) = layer(&config).pair();
    let epoch = Instant::now();
    let classify = ClassifyFn::new(|r: Result<&Outcome, &BoxError>| match r {
        Ok(outcome) => *outcome,
        Err(_) => Outcome::Failure,
    });
    let layer = layer.classify(classify);
    let mut model = Model::new(config);
    for (i, op) in ops.into_iter().enumerate() {
        match op.clone() {
            Op::Advance(millis) => advance(Duration::from_millis(millis)).await,
            Op::Reload(config) => {
                handle
                    .reload(breaker_config(&config))
                    .expect("the same window");
                model.reload(config, epoch.elapsed());
            }
            Op::Call { outcome, millis } => {
                let svc = layer.layer(service_fn(move |()| async move {
                    sleep(Duration::from_millis(millis)).await;
                    Ok::<_, BoxError>(outcome)
                }));
                let start = epoch.elapsed();
                let admitted = model.admit(start);
                let result = svc.oneshot(()).await;
                prop_assert_eq!(result.is_ok(), admitted.is_some(), "op {}: {:?}", i, op);
                if let Some(phase) = admitted {
                    let end = epoch.elapsed();
                    model.record(phase, outcome, end - start, end);
                }
            }
        }
        let now = epoch.elapsed();
        model.follow_time(now);
        prop_assert_eq!(handle.state(), model.observed(now), "op {}: {:?}", i, op);
        if let Some(counts) = model.observed_counts(now) {
            prop_assert_eq!(handle.counts(), counts, "op {}", i);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn breaker_agrees_with_the_reference_model(
        config in config(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let rt = paused_runtime();
        rt.block_on(check(config, ops))?;
    }

    #[test]
    fn breaker_agrees_with_the_reference_model_across_reloads(
        (config, ops) in config().prop_flat_map(|config| {
            let ops = proptest::collection::vec(
                op_or_reload(config.window, config.automatic),
                1..80,
            );
            (Just(config), ops)
        }),
    ) {
        let rt = paused_runtime();
        rt.block_on(check(config, ops))?;
    }
}

fn backoff() -> impl Strategy<Value = Backoff> {
    let kind = 0..3u8;
    let jitter = prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated)
    ];
    (kind, 1u64..5_000, 1u64..=20, jitter).prop_map(|(kind, base, cap_times, jitter)| {
        let base = Duration::from_millis(base);
        let builder = match kind {
            0 => Backoff::constant(base),
            1 => Backoff::linear(base),
            _ => Backoff::exponential(base),
        };
        builder
            .cap(base * cap_times as u32)
            .jitter(jitter)
            .build()
            .expect("a valid backoff")
    })
}

/// Opens a breaker again and again (recovering when `recover` says so) and checks every open
/// duration against the backoff: at least its base, at most its curve for that opening (its
/// cap for decorrelated jitter, which follows the previous delay rather than the curve).
async fn check_open_backoff(
    backoff: Backoff,
    seed: u64,
    recover: Vec<bool>,
) -> Result<(), TestCaseError> {
    let (layer, handle) = CircuitBreakerLayer::builder()
        .name("backoff")
        .consecutive_failures(1)
        .half_open_probes(1)
        .open_backoff(backoff)
        .open_jitter(0.0)
        .seed(seed)
        .build()
        .expect("a valid configuration")
        .pair();
    let svc = layer.layer(service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("down".into())
        }
    }));
    let _ = svc.clone().oneshot(false).await;
    let mut opening = 1;
    for (i, recover) in recover.into_iter().enumerate() {
        let open = handle.open_remaining().expect("open");
        let high = match backoff.jitter_kind() {
            Jitter::Decorrelated => backoff.max_delay(),
            _ => backoff.curve(opening),
        };
        prop_assert!(
            open >= backoff.base() && open <= high,
            "opening {} (step {}): {:?} outside [{:?}, {:?}]",
            opening,
            i,
            open,
            backoff.base(),
            high
        );
        advance(open).await;
        let _ = svc.clone().oneshot(recover).await;
        if recover {
            prop_assert_eq!(handle.state(), CircuitState::Closed);
            let _ = svc.clone().oneshot(false).await;
            opening = 1;
        } else {
            opening += 1;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn open_backoff_stays_between_its_base_and_its_curve(
        backoff in backoff(),
        seed in any::<u64>(),
        recover in proptest::collection::vec(proptest::bool::weighted(0.2), 1..12),
    ) {
        let rt = paused_runtime();
        rt.block_on(check_open_backoff(backoff, seed, recover))?;
    }
}
