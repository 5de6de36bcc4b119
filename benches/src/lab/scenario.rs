//! Scenarios as data: a TOML file says what the downstream is, what goes wrong with it and
//! when, what load it gets, and what the seawall stack must show.
//!
//! A user describes their own downstream without writing Rust, so a mistake in the file must
//! be easy to fix: every unknown key and impossible value is reported with the file, the line
//! and the field. The built-in suite ships as such files (`benches/scenarios/*.toml`).
//!
//! Every key, with its default when it has one:
//!
//! ```toml
//! id = "my-db"                       # letters, digits, `-` and `_`
//! description = "what it shows"      # default ""
//! duration = "60s"                   # how long arrivals go on
//!
//! [workload]
//! rate = 1000                        # requests per second, open-loop
//! arrivals = "uniform"               # or "poisson" (seeded)
//! keys = 1                           # keys (shards) requests spread over, round-robin
//! deadline = "1s"                    # the client's deadline, for goodput
//! phases = [{ start = "20s", end = "50s", rate = 1500 }]   # default none
//!
//! [downstream]
//! latency = { kind = "uniform", min = "8ms", max = "12ms" } # the default; or
//!                                    # { kind = "fixed", value = "10ms" },
//!                                    # { kind = "long_tail", median = "10ms", p99 = "80ms" }
//! workers = 11                       # default: no capacity model, no queueing
//! queue_limit = 1000                 # default: unbounded
//! degrade_above = 22                 # default: never degrades
//! degraded = 0.8                     # share of speed kept while degraded
//!
//! [[faults]]                         # as many as needed, all on the same keys
//! kind = "error"                     # "error", "hang" or "slow"
//! rate = 1.0                         # share of calls hit, default 1
//! start = "20s"
//! end = "30s"                        # or flapping = { down = "5s", up = "5s", cycles = 6 }
//! latency = { kind = "fixed", value = "2s" }   # `slow` faults only
//! keys = [0]                         # default: every key
//!
//! [thresholds]                       # see `Thresholds`; each one present is a verdict
//! amplification_fault_max = 1.1
//! detect_max = "1s"
//! ```

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use seawall_chaos::{ChaosConfig, Faults, Latency};
use seawall_core::config::{self, ConfigError};
use serde::Deserialize;
use toml::Spanned;

const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The built-in suite, in the order it runs.
pub const BUILT_IN: [(&str, &str); 9] = [
    ("control.toml", include_str!("../../scenarios/control.toml")),
    ("outage.toml", include_str!("../../scenarios/outage.toml")),
    (
        "black-hole.toml",
        include_str!("../../scenarios/black-hole.toml"),
    ),
    (
        "brownout.toml",
        include_str!("../../scenarios/brownout.toml"),
    ),
    ("partial.toml", include_str!("../../scenarios/partial.toml")),
    (
        "tail-spike.toml",
        include_str!("../../scenarios/tail-spike.toml"),
    ),
    (
        "slow-drip.toml",
        include_str!("../../scenarios/slow-drip.toml"),
    ),
    (
        "overload.toml",
        include_str!("../../scenarios/overload.toml"),
    ),
    (
        "flapping.toml",
        include_str!("../../scenarios/flapping.toml"),
    ),
];

/// One scenario: a downstream, its faults, the load, and the thresholds the seawall stack must
/// meet.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its short name (`outage`).
    pub id: String,
    /// One line on what it shows.
    pub description: String,
    /// The file it came from.
    pub file: String,
    /// A hash of the file's text, so a report says exactly which scenario it measured.
    pub hash: String,
    /// How long arrivals go on.
    pub duration: Duration,
    /// The client's load.
    pub workload: Workload,
    /// The healthy downstream.
    pub downstream: Downstream,
    /// What goes wrong, and when.
    pub faults: Vec<Fault>,
    /// What the seawall stack must show.
    pub thresholds: Thresholds,
}

/// How requests arrive: open-loop, at their intended times whatever happened to earlier ones.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "WorkloadSpec")]
pub struct Workload {
    /// Requests per second.
    pub rate: f64,
    /// Evenly spaced or Poisson.
    pub arrivals: Arrivals,
    /// How many keys (shards) requests spread over, round-robin.
    pub keys: u32,
    /// How long the client waits for an answer to count it as goodput.
    pub deadline: Duration,
    /// Periods with another rate.
    pub phases: Vec<Phase>,
}

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// Request i at `i / rate`.
    #[default]
    Uniform,
    /// Exponential gaps with mean `1 / rate`, from the seeded arrivals stream.
    Poisson,
}

/// A period with its own arrival rate.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// When it begins.
    #[serde(with = "config::duration")]
    pub start: Duration,
    /// When it ends.
    #[serde(with = "config::duration")]
    pub end: Duration,
    /// Requests per second meanwhile.
    pub rate: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadSpec {
    rate: f64,
    #[serde(default)]
    arrivals: Arrivals,
    #[serde(default = "one")]
    keys: u32,
    #[serde(default = "one_second", with = "config::duration")]
    deadline: Duration,
    #[serde(default)]
    phases: Vec<Phase>,
}

fn one() -> u32 {
    1
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl TryFrom<WorkloadSpec> for Workload {
    type Error = ConfigError;

    fn try_from(spec: WorkloadSpec) -> Result<Self, ConfigError> {
        rate("workload.rate", spec.rate)?;
        config::count_in("workload.keys", spec.keys, 1..=64)?;
        config::positive_duration("workload.deadline", spec.deadline, MAX_DURATION)?;
        for phase in &spec.phases {
            rate("workload.phases.rate", phase.rate)?;
            if phase.start >= phase.end {
                return Err(ConfigError::new(
                    "workload.phases.end",
                    format_args!("{:?}", phase.end),
                    format!("after start ({:?})", phase.start),
                ));
            }
        }
        Ok(Self {
            rate: spec.rate,
            arrivals: spec.arrivals,
            keys: spec.keys,
            deadline: spec.deadline,
            phases: spec.phases,
        })
    }
}

fn rate(field: &'static str, rate: f64) -> Result<f64, ConfigError> {
    if !(rate > 0.0 && rate <= 100_000.0) {
        return Err(ConfigError::new(
            field,
            rate,
            "(0, 100000] requests per second",
        ));
    }
    Ok(rate)
}

impl Workload {
    /// The arrival rate at `t`.
    pub fn rate_at(&self, t: Duration) -> f64 {
        self.phases
            .iter()
            .find(|p| p.start <= t && t < p.end)
            .map_or(self.rate, |p| p.rate)
    }
}

/// The healthy downstream: its latency and, optionally, its capacity.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "DownstreamSpec")]
pub struct Downstream {
    /// The service time of a call.
    pub latency: Latency,
    /// Workers serving calls at once; no queueing when absent.
    pub workers: Option<u32>,
    /// How many calls may wait for a worker.
    pub queue_limit: Option<u32>,
    /// The queue depth past which the downstream slows down.
    pub degrade_above: Option<u32>,
    /// The fraction of its speed it keeps when degraded.
    pub degraded: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownstreamSpec {
    #[serde(default = "default_latency")]
    latency: Latency,
    workers: Option<u32>,
    queue_limit: Option<u32>,
    degrade_above: Option<u32>,
    #[serde(default = "default_degraded")]
    degraded: f64,
}

fn default_latency() -> Latency {
    Latency::Uniform {
        min: Duration::from_millis(8),
        max: Duration::from_millis(12),
    }
}

fn default_degraded() -> f64 {
    0.8
}

impl Default for Downstream {
    fn default() -> Self {
        Self {
            latency: default_latency(),
            workers: None,
            queue_limit: None,
            degrade_above: None,
            degraded: default_degraded(),
        }
    }
}

impl TryFrom<DownstreamSpec> for Downstream {
    type Error = ConfigError;

    fn try_from(spec: DownstreamSpec) -> Result<Self, ConfigError> {
        let downstream = Self {
            latency: spec.latency,
            workers: spec.workers,
            queue_limit: spec.queue_limit,
            degrade_above: spec.degrade_above,
            degraded: spec.degraded,
        };
        // The chaos layer's own checks, with the field named as the file names it.
        downstream
            .chaos_config()
            .build()
            .map_err(|e| prefixed("downstream.", &e))?;
        Ok(downstream)
    }
}

fn prefixed(prefix: &str, err: &ConfigError) -> ConfigError {
    let field = err.field().trim_start_matches("capacity.");
    ConfigError::new(
        format!("{prefix}{field}"),
        err.value(),
        err.allowed().to_owned(),
    )
}

impl Downstream {
    /// The chaos configuration of the healthy downstream.
    pub fn chaos_config(&self) -> seawall_chaos::ChaosConfigBuilder {
        let mut builder = ChaosConfig::builder()
            .name("downstream")
            .enabled(true)
            .latency(self.latency);
        if let Some(workers) = self.workers {
            let mut capacity = seawall_chaos::Capacity::workers(workers);
            capacity.queue_limit = self.queue_limit;
            capacity.degrade_above = self.degrade_above;
            capacity.degraded = self.degraded;
            builder = builder.capacity(capacity);
        }
        builder
    }

    /// Calls per second the workers can serve, when the downstream has a capacity.
    pub fn capacity_rps(&self) -> Option<f64> {
        let mean = self.latency.mean().as_secs_f64();
        self.workers
            .filter(|_| mean > 0.0)
            .map(|w| f64::from(w) / mean)
    }
}

/// What a fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Fails at once.
    Error,
    /// Never returns.
    Hang,
    /// Takes `latency` longer.
    Slow,
}

/// One fault: what, how often, when, and for which keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "FaultSpec")]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// The share of calls it hits, in `(0, 1]`.
    pub rate: f64,
    /// When it begins.
    pub start: Duration,
    /// When it ends (for flapping, when the last down phase ends).
    pub end: Duration,
    /// Down and up phases, when the fault flaps.
    pub flapping: Option<Flap>,
    /// The keys it hits; every key when absent.
    pub keys: Option<Vec<u32>>,
    /// What it injects.
    pub faults: Faults,
}

/// A flapping fault's rhythm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flap {
    /// How long each down phase lasts.
    #[serde(with = "config::duration")]
    pub down: Duration,
    /// How long each up phase lasts.
    #[serde(with = "config::duration")]
    pub up: Duration,
    /// How many cycles.
    pub cycles: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    kind: FaultKind,
    #[serde(default = "full_rate")]
    rate: f64,
    #[serde(with = "config::duration")]
    start: Duration,
    #[serde(default, with = "config::duration")]
    end: Option<Duration>,
    latency: Option<Latency>,
    flapping: Option<Flap>,
    keys: Option<Vec<u32>>,
}

fn full_rate() -> f64 {
    1.0
}

impl TryFrom<FaultSpec> for Fault {
    type Error = ConfigError;

    fn try_from(spec: FaultSpec) -> Result<Self, ConfigError> {
        config::ratio("faults.rate", spec.rate)?;
        let faults = match (spec.kind, spec.latency) {
            (FaultKind::Slow, Some(latency)) => Faults::slow(spec.rate, latency),
            (FaultKind::Slow, None) => {
                return Err(ConfigError::new(
                    "faults.latency",
                    "nothing",
                    "a latency for a `slow` fault",
                ));
            }
            (_, Some(_)) => {
                return Err(ConfigError::new(
                    "faults.latency",
                    "a latency",
                    "nothing: only `slow` faults take a latency",
                ));
            }
            (FaultKind::Error, None) => Faults::errors(spec.rate),
            (FaultKind::Hang, None) => Faults::hangs(spec.rate),
        };
        let end = match (spec.end, spec.flapping) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "faults.end",
                    "both `end` and `flapping`",
                    "one of them: flapping ends after its cycles",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "faults.end",
                    "nothing",
                    "an end, or `flapping`",
                ));
            }
            (Some(end), None) => {
                if end <= spec.start {
                    return Err(ConfigError::new(
                        "faults.end",
                        format_args!("{end:?}"),
                        format!("after start ({:?})", spec.start),
                    ));
                }
                end
            }
            (None, Some(flap)) => {
                config::positive_duration("faults.flapping.down", flap.down, MAX_DURATION)?;
                config::positive_duration("faults.flapping.up", flap.up, MAX_DURATION)?;
                config::count_in("faults.flapping.cycles", flap.cycles, 1..=10_000)?;
                spec.start + (flap.down + flap.up) * (flap.cycles - 1) + flap.down
            }
        };
        if let Some(keys) = &spec.keys
            && keys.is_empty()
        {
            return Err(ConfigError::new("faults.keys", "[]", "at least one key"));
        }
        // The chaos layer's own checks of what this fault injects.
        ChaosConfig::builder()
            .faults(faults)
            .build()
            .map_err(|e| prefixed("faults.", &e))?;
        Ok(Self {
            kind: spec.kind,
            rate: spec.rate,
            start: spec.start,
            end,
            flapping: spec.flapping,
            keys: spec.keys,
            faults,
        })
    }
}

impl Fault {
    /// The periods it is active, flapping expanded.
    pub fn windows(&self) -> impl Iterator<Item = (Duration, Duration)> + '_ {
        let (cycles, down, period) = match self.flapping {
            None => (1, self.end - self.start, Duration::ZERO),
            Some(flap) => (flap.cycles, flap.down, flap.down + flap.up),
        };
        (0..cycles).map(move |i| {
            let start = self.start + period * i;
            (start, start + down)
        })
    }

    /// Whether it hits calls for `key`.
    pub fn hits_key(&self, key: u32) -> bool {
        self.keys.as_ref().is_none_or(|keys| keys.contains(&key))
    }
}

/// What the seawall stack must show; each one present becomes a pass/fail verdict.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Downstream attempts per client request, over the whole run.
    pub amplification_max: Option<f64>,
    /// Amplification of the requests sent during the fault.
    pub amplification_fault_max: Option<f64>,
    /// Amplification of the requests sent during the fault while the breaker was open.
    pub amplification_open_max: Option<f64>,
    /// Time from the fault's start to the first fast rejection or breaker opening.
    #[serde(with = "config::duration")]
    pub detect_max: Option<Duration>,
    /// Time from the fault's end to a success rate back at 99% of before, held 5 s.
    #[serde(with = "config::duration")]
    pub recover_max: Option<Duration>,
    /// p99 latency of the calls the stack rejected itself during the fault.
    #[serde(with = "config::duration")]
    pub fast_fail_p99_max: Option<Duration>,
    /// p99 latency of every call, from its intended send time.
    #[serde(with = "config::duration")]
    pub p99_max: Option<Duration>,
    /// p99.9 latency of every call, from its intended send time.
    #[serde(with = "config::duration")]
    pub p999_max: Option<Duration>,
    /// Time the breaker was open while the downstream was healthy.
    #[serde(with = "config::duration")]
    pub false_open_time_max: Option<Duration>,
    /// Share of the calls made while healthy during the fault span that the stack rejected.
    pub false_open_ratio_max: Option<f64>,
    /// Calls the stack rejected itself.
    pub rejections_max: Option<u64>,
    /// Calls rejected by a bulkhead or load shedder.
    pub bulkhead_rejections_max: Option<u64>,
    /// Most calls in flight at the downstream at once.
    pub inflight_max: Option<u64>,
    /// Times any breaker opened.
    pub breaker_opens_max: Option<u64>,
    /// Breaker transitions per flapping cycle.
    pub transitions_per_cycle_max: Option<f64>,
    /// Success rate, without fallback, of the requests sent during the fault.
    pub success_fault_min: Option<f64>,
    /// Success rate, without fallback, over the whole run.
    pub success_min: Option<f64>,
    /// Success rate of the keys no fault hits, during the fault.
    pub healthy_keys_success_min: Option<f64>,
    /// Whether only the breakers of the keys a fault hits may open (and they must).
    pub only_faulty_keys_open: Option<bool>,
    /// Share of calls made while healthy that timed out.
    pub false_timeout_max: Option<f64>,
    /// Goodput during the fault (or load phase) as a share of the downstream's capacity.
    pub goodput_min: Option<f64>,
    /// p99 of successful calls during the fault over their p99 before it.
    pub accepted_p99_ratio_max: Option<f64>,
}

impl Thresholds {
    fn validate(&self) -> Result<(), ConfigError> {
        let ratios = [
            ("thresholds.false_open_ratio_max", self.false_open_ratio_max),
            ("thresholds.success_fault_min", self.success_fault_min),
            ("thresholds.success_min", self.success_min),
            (
                "thresholds.healthy_keys_success_min",
                self.healthy_keys_success_min,
            ),
            ("thresholds.false_timeout_max", self.false_timeout_max),
            ("thresholds.goodput_min", self.goodput_min),
        ];
        for (field, value) in ratios {
            if let Some(value) = value {
                config::ratio_or_zero(field, value)?;
            }
        }
        let positive = [
            ("thresholds.amplification_max", self.amplification_max),
            (
                "thresholds.amplification_fault_max",
                self.amplification_fault_max,
            ),
            (
                "thresholds.amplification_open_max",
                self.amplification_open_max,
            ),
            (
                "thresholds.transitions_per_cycle_max",
                self.transitions_per_cycle_max,
            ),
            (
                "thresholds.accepted_p99_ratio_max",
                self.accepted_p99_ratio_max,
            ),
        ];
        for (field, value) in positive {
            if let Some(value) = value
                && !(value.is_finite() && value >= 0.0)
            {
                return Err(ConfigError::new(field, value, "[0, inf)"));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioSpec {
    id: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(with = "config::duration")]
    duration: Duration,
    workload: Spanned<Workload>,
    #[serde(default)]
    downstream: Option<Downstream>,
    #[serde(default)]
    faults: Vec<Spanned<Fault>>,
    #[serde(default)]
    thresholds: Option<Spanned<Thresholds>>,
}

/// A scenario file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ScenarioError {}

fn error_at(file: &str, text: &str, span: Option<Range<usize>>, message: &str) -> ScenarioError {
    let offset = span.map_or(0, |s| s.start).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let mut message = message.trim().to_owned();
    // serde's type errors do not say which key they are about; the line does.
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    if let Some((key, _)) = line_text.split_once('=') {
        let key = key.trim();
        if !key.is_empty() && !key.starts_with('[') && !message.contains(&format!("`{key}`")) {
            message = format!("field `{key}`: {message}");
        }
    }
    ScenarioError {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

impl Scenario {
    /// Reads a scenario from the TOML `text` of `file`.
    pub fn parse(file: &str, text: &str) -> Result<Self, ScenarioError> {
        let spec: ScenarioSpec =
            toml::from_str(text).map_err(|e| error_at(file, text, e.span(), e.message()))?;
        let fail = |span: Range<usize>, err: ConfigError| {
            error_at(file, text, Some(span), &err.to_string())
        };
        let id_span = spec.id.span();
        let id = spec.id.into_inner();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(fail(
                id_span,
                ConfigError::new("id", format_args!("{id:?}"), "letters, digits, `-` and `_`"),
            ));
        }
        if spec.duration.is_zero() || spec.duration > Duration::from_secs(3600) {
            let err =
                config::positive_duration("duration", spec.duration, Duration::from_secs(3600));
            return Err(error_at(
                file,
                text,
                find_key(text, "duration"),
                &err.unwrap_err().to_string(),
            ));
        }
        let workload_span = spec.workload.span();
        let workload = spec.workload.into_inner();
        for phase in &workload.phases {
            if phase.end > spec.duration {
                return Err(fail(
                    workload_span,
                    ConfigError::new(
                        "workload.phases.end",
                        format_args!("{:?}", phase.end),
                        format!("at most the duration ({:?})", spec.duration),
                    ),
                ));
            }
        }
        let mut faults = Vec::new();
        let mut targeted: Option<Vec<u32>> = None;
        for fault in spec.faults {
            let span = fault.span();
            let fault = fault.into_inner();
            if fault.end > spec.duration {
                return Err(fail(
                    span,
                    ConfigError::new(
                        "faults.end",
                        format_args!("{:?}", fault.end),
                        format!("at most the duration ({:?})", spec.duration),
                    ),
                ));
            }
            if let Some(keys) = &fault.keys {
                if let Some(&key) = keys.iter().find(|&&k| k >= workload.keys) {
                    return Err(fail(
                        span,
                        ConfigError::new(
                            "faults.keys",
                            key,
                            format!("keys below workload.keys ({})", workload.keys),
                        ),
                    ));
                }
                if targeted.as_ref().is_some_and(|t| t != keys) {
                    return Err(fail(
                        span,
                        ConfigError::new(
                            "faults.keys",
                            format_args!("{keys:?}"),
                            "the same keys as the other faults",
                        ),
                    ));
                }
                targeted = Some(keys.clone());
            } else if targeted.is_some() {
                return Err(fail(
                    span,
                    ConfigError::new(
                        "faults.keys",
                        "every key",
                        "the same keys as the other faults",
                    ),
                ));
            }
            faults.push(fault);
        }
        let thresholds = match spec.thresholds {
            Some(t) => {
                let span = t.span();
                let t = t.into_inner();
                t.validate().map_err(|e| fail(span, e))?;
                t
            }
            None => Thresholds::default(),
        };
        Ok(Self {
            id,
            description: spec.description,
            file: file.to_owned(),
            hash: fnv1a(text),
            duration: spec.duration,
            workload,
            downstream: spec.downstream.unwrap_or_default(),
            faults,
            thresholds,
        })
    }

    /// The built-in suite.
    pub fn built_in() -> Vec<Self> {
        BUILT_IN
            .iter()
            .map(|(file, text)| {
                Self::parse(&format!("benches/scenarios/{file}"), text)
                    .expect("the built-in scenarios are valid")
            })
            .collect()
    }

    /// Every fault window, flapping expanded, with the keys it hits.
    pub fn fault_windows(&self) -> Vec<(Duration, Duration, Option<&[u32]>)> {
        let mut windows: Vec<_> = self
            .faults
            .iter()
            .flat_map(|f| f.windows().map(move |(s, e)| (s, e, f.keys.as_deref())))
            .collect();
        windows.sort_by_key(|w| w.0);
        windows
    }

    /// From the first fault (or load phase) to the end of the last, if any.
    pub fn span(&self) -> Option<(Duration, Duration)> {
        let starts = self
            .faults
            .iter()
            .map(|f| (f.start, f.end))
            .chain(self.workload.phases.iter().map(|p| (p.start, p.end)));
        starts.fold(None, |acc, (s, e)| match acc {
            None => Some((s, e)),
            Some((s0, e0)) => Some((s0.min(s), e0.max(e))),
        })
    }

    /// Whether the downstream is healthy for `key` at `t`: no fault window or load phase
    /// covers it.
    pub fn healthy(&self, t: Duration, key: u32) -> bool {
        let faulty = self
            .faults
            .iter()
            .any(|f| f.hits_key(key) && f.windows().any(|(s, e)| s <= t && t < e));
        let loaded = self
            .workload
            .phases
            .iter()
            .any(|p| p.start <= t && t < p.end);
        !faulty && !loaded
    }

    /// Flapping cycles over every fault.
    pub fn cycles(&self) -> u32 {
        self.faults
            .iter()
            .map(|f| f.flapping.map_or(0, |fl| fl.cycles))
            .sum()
    }

    /// The keys some fault hits (every key when one fault hits them all).
    pub fn faulty_keys(&self) -> Vec<u32> {
        (0..self.workload.keys)
            .filter(|&k| self.faults.iter().any(|f| f.hits_key(k)))
            .collect()
    }

    /// The same scenario, shortened for CI: 5 s of health before the first event and 10 s
    /// after the last, the events themselves unchanged.
    pub fn quick(&self) -> Self {
        const LEAD: Duration = Duration::from_secs(5);
        const TAIL: Duration = Duration::from_secs(10);
        let mut quick = self.clone();
        let Some((start, end)) = self.span() else {
            quick.duration = self.duration.min(LEAD + TAIL);
            return quick;
        };
        let shift = start.saturating_sub(LEAD);
        for fault in &mut quick.faults {
            fault.start -= shift;
            fault.end -= shift;
        }
        for phase in &mut quick.workload.phases {
            phase.start -= shift;
            phase.end -= shift;
        }
        quick.duration = (self.duration - shift).min(end - shift + TAIL);
        quick
    }
}

fn find_key(text: &str, key: &str) -> Option<Range<usize>> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with(key) && line.contains('=') {
            return Some(offset..offset + line.len());
        }
        offset += line.len();
    }
    None
}

/// FNV-1a, 64 bits, in hex: a stable hash of a scenario's text.
pub fn fnv1a(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}
