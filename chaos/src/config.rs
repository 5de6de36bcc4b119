use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use seawall_core::config::{self, ConfigError};
use serde::{Deserialize, Serialize};

const DEFAULT_NAME: &str = "chaos";
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// How long an injected delay lasts, drawn afresh for every call.
///
/// Deserializes from `{ kind = "fixed", value = "10ms" }`, `{ kind = "uniform", min = "8ms",
/// max = "12ms" }` or `{ kind = "long_tail", median = "10ms", p99 = "80ms" }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    /// Always the same delay.
    Fixed {
        /// The delay.
        #[serde(with = "config::duration")]
        value: Duration,
    },
    /// Any delay in `[min, max]`, all equally likely.
    Uniform {
        /// The shortest delay.
        #[serde(with = "config::duration")]
        min: Duration,
        /// The longest delay.
        #[serde(with = "config::duration")]
        max: Duration,
    },
    /// A log-normal delay with the given median and 99th percentile: most calls near the
    /// median, a long tail of slow ones, as real services show.
    LongTail {
        /// Half of the calls are faster than this.
        #[serde(with = "config::duration")]
        median: Duration,
        /// 99% of the calls are faster than this.
        #[serde(with = "config::duration")]
        p99: Duration,
    },
}

impl Latency {
    /// The mean delay, used to size a capacity model.
    pub fn mean(&self) -> Duration {
        match *self {
            Self::Fixed { value } => value,
            Self::Uniform { min, max } => (min + max) / 2,
            Self::LongTail { median, p99 } => {
                let sigma = sigma(median, p99);
                median.mul_f64((sigma * sigma / 2.0).exp())
            }
        }
    }

    fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        match *self {
            Self::Fixed { value } => {
                config::duration_in(field, value, Duration::ZERO..=MAX_DURATION)?;
            }
            Self::Uniform { min, max } => {
                config::duration_in(field, max, Duration::ZERO..=MAX_DURATION)?;
                if min > max {
                    return Err(ConfigError::new(
                        field,
                        format_args!("min {min:?} > max {max:?}"),
                        "min <= max",
                    ));
                }
            }
            Self::LongTail { median, p99 } => {
                config::positive_duration(field, median, MAX_DURATION)?;
                config::duration_in(field, p99, median..=MAX_DURATION)?;
            }
        }
        Ok(())
    }
}

/// The spread of a log-normal distribution with this median and 99th percentile.
pub(crate) fn sigma(median: Duration, p99: Duration) -> f64 {
    // z of the 99th percentile of the standard normal distribution.
    const Z99: f64 = 2.326_347_874_040_841;
    (p99.as_secs_f64() / median.as_secs_f64()).ln() / Z99
}

/// What to inject into a call, each as a probability in `[0, 1]`.
///
/// A call gets at most one of an error, a hang or a chosen response (so their sum is at most
/// 1); a call that gets none of them may still be slowed down by `slow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability that the call fails at once with `Rejected { kind: Injected }`.
    pub error: f64,
    /// Probability that the call never returns.
    pub hang: f64,
    /// Probability that the call is answered by the layer's responder instead of the inner
    /// service.
    pub response: f64,
    /// Probability that the call is delayed by `slow_latency` on top of any other latency.
    pub slow: f64,
    /// The extra delay of a slow call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_latency: Option<Latency>,
}

impl Faults {
    /// Nothing injected.
    pub const fn none() -> Self {
        Self {
            error: 0.0,
            hang: 0.0,
            response: 0.0,
            slow: 0.0,
            slow_latency: None,
        }
    }

    /// Errors with probability `rate`.
    pub const fn errors(rate: f64) -> Self {
        Self {
            error: rate,
            ..Self::none()
        }
    }

    /// Hangs with probability `rate`.
    pub const fn hangs(rate: f64) -> Self {
        Self {
            hang: rate,
            ..Self::none()
        }
    }

    /// Chosen responses with probability `rate`.
    pub const fn responses(rate: f64) -> Self {
        Self {
            response: rate,
            ..Self::none()
        }
    }

    /// Slow calls, delayed by `latency`, with probability `rate`.
    pub const fn slow(rate: f64, latency: Latency) -> Self {
        Self {
            slow: rate,
            slow_latency: Some(latency),
            ..Self::none()
        }
    }

    /// Whether these faults inject anything at all.
    pub fn is_none(&self) -> bool {
        self.error == 0.0 && self.hang == 0.0 && self.response == 0.0 && self.slow == 0.0
    }

    fn validate(&self) -> Result<(), ConfigError> {
        config::ratio_or_zero("error", self.error)?;
        config::ratio_or_zero("hang", self.hang)?;
        config::ratio_or_zero("response", self.response)?;
        config::ratio_or_zero("slow", self.slow)?;
        let sum = self.error + self.hang + self.response;
        if sum > 1.0 + 1e-9 {
            return Err(ConfigError::new("error + hang + response", sum, "[0, 1]"));
        }
        match &self.slow_latency {
            Some(latency) => latency.validate("slow_latency")?,
            None if self.slow > 0.0 => {
                return Err(ConfigError::new(
                    "slow_latency",
                    "nothing",
                    "a latency when `slow` > 0",
                ));
            }
            None => {}
        }
        Ok(())
    }
}

/// Faults that replace the layer's usual ones from `start` to `end`, counted from the layer's
/// epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// When the window opens.
    #[serde(with = "config::duration")]
    pub start: Duration,
    /// When it closes (exclusive).
    #[serde(with = "config::duration")]
    pub end: Duration,
    /// What is injected while it is open.
    pub faults: Faults,
}

/// A downstream that keeps going down and coming back: `cycles` times `down` of `faults`
/// followed by `up` of the usual ones, from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flapping {
    /// When the first down phase begins.
    #[serde(with = "config::duration")]
    pub start: Duration,
    /// How long each down phase lasts.
    #[serde(with = "config::duration")]
    pub down: Duration,
    /// How long each up phase lasts.
    #[serde(with = "config::duration")]
    pub up: Duration,
    /// How many down-and-up cycles.
    pub cycles: u32,
    /// What is injected while down.
    pub faults: Faults,
}

impl Flapping {
    /// The down phases as windows.
    pub fn windows(&self) -> impl Iterator<Item = Window> + '_ {
        let period = self.down + self.up;
        (0..self.cycles).map(move |i| {
            let start = self.start + period * i;
            Window {
                start,
                end: start + self.down,
                faults: self.faults,
            }
        })
    }
}

/// A downstream with `workers` workers and a FIFO queue in front of them.
///
/// Each call takes a worker for its latency (the layer's `latency`); when every worker is
/// busy it waits its turn. While more than `degrade_above` calls wait, each new call is served
/// at `degraded` of the normal speed (a server thrashing under load). Beyond `queue_limit`
/// waiting calls, a new call fails at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// How many calls are served at once.
    pub workers: u32,
    /// How many calls may wait; unbounded when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_limit: Option<u32>,
    /// The queue depth past which the service slows down; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrade_above: Option<u32>,
    /// The fraction of normal speed while degraded, in `(0, 1]`.
    #[serde(default = "default_degraded")]
    pub degraded: f64,
}

fn default_degraded() -> f64 {
    0.8
}

impl Capacity {
    /// `workers` workers, an unbounded queue, no degradation.
    pub const fn workers(workers: u32) -> Self {
        Self {
            workers,
            queue_limit: None,
            degrade_above: None,
            degraded: 0.8,
        }
    }

    /// At most `limit` calls wait.
    pub const fn queue_limit(mut self, limit: u32) -> Self {
        self.queue_limit = Some(limit);
        self
    }

    /// Serves at `degraded` of the normal speed while more than `depth` calls wait.
    pub const fn degrade_above(mut self, depth: u32, degraded: f64) -> Self {
        self.degrade_above = Some(depth);
        self.degraded = degraded;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        config::count_in("capacity.workers", self.workers, 1..=1_000_000)?;
        config::ratio("capacity.degraded", self.degraded)?;
        Ok(())
    }
}

/// A validated chaos configuration.
///
/// Deserializes from, for example (in TOML):
///
/// ```toml
/// enabled = true
/// seed = 7
/// latency = { kind = "uniform", min = "8ms", max = "12ms" }
/// faults = { error = 0.01 }
/// windows = [{ start = "20s", end = "30s", faults = { error = 1.0 } }]
/// capacity = { workers = 10, degrade_above = 20, degraded = 0.8 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ChaosSpec", into = "ChaosSpec")]
pub struct ChaosConfig {
    pub(crate) name: Arc<str>,
    pub(crate) enabled: bool,
    pub(crate) seed: u64,
    pub(crate) latency: Option<Latency>,
    pub(crate) faults: Faults,
    pub(crate) windows: Vec<Window>,
    pub(crate) flapping: Option<Flapping>,
    pub(crate) capacity: Option<Capacity>,
}

impl ChaosConfig {
    /// A builder for a configuration.
    pub fn builder() -> ChaosConfigBuilder {
        ChaosConfigBuilder::new()
    }

    /// The name of the layer instance, the `name` label of its metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether faults are injected from the start.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The seed of the layer's random numbers.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The latency every call gets.
    pub fn latency(&self) -> Option<Latency> {
        self.latency
    }

    /// The faults injected outside any window.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Every window, flapping included, in order of start.
    pub fn windows(&self) -> Vec<Window> {
        let mut windows = self.windows.clone();
        windows.extend(self.flapping.iter().flat_map(Flapping::windows));
        windows.sort_by_key(|w| w.start);
        windows
    }

    /// The capacity model, if any.
    pub fn capacity(&self) -> Option<Capacity> {
        self.capacity
    }
}

/// Builds a [`ChaosConfig`], or straight a layer when made by `ChaosLayer::builder`.
#[derive(Debug)]
pub struct ChaosConfigBuilder<T = ChaosConfig> {
    spec: ChaosSpec,
    _output: PhantomData<fn() -> T>,
}

impl<T: From<ChaosConfig>> ChaosConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            spec: ChaosSpec::default(),
            _output: PhantomData,
        }
    }

    /// The name of the layer instance (default `"chaos"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into();
        self
    }

    /// Injects faults from the start (default off: a chaos layer does nothing until enabled,
    /// here or through its handle).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.spec.enabled = enabled;
        self
    }

    /// The seed of the layer's `ChaCha8` random numbers (default 0): the same seed and the
    /// same calls give the same faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.spec.seed = seed;
        self
    }

    /// Delays every call by `latency` (or, with a capacity model, serves it for that long).
    pub fn latency(mut self, latency: Latency) -> Self {
        self.spec.latency = Some(latency);
        self
    }

    /// The faults injected outside any window.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.spec.faults = faults;
        self
    }

    /// Injects `faults` instead of the usual ones from `start` to `end` after the epoch.
    pub fn window(mut self, start: Duration, end: Duration, faults: Faults) -> Self {
        self.spec.windows.push(Window { start, end, faults });
        self
    }

    /// Every call fails from `start` to `end` after the epoch.
    pub fn outage(self, start: Duration, end: Duration) -> Self {
        self.window(start, end, Faults::errors(1.0))
    }

    /// A downstream that goes down and comes back on a cycle.
    pub fn flapping(mut self, flapping: Flapping) -> Self {
        self.spec.flapping = Some(flapping);
        self
    }

    /// A capacity model: workers, a FIFO queue and degradation under load.
    pub fn capacity(mut self, capacity: Capacity) -> Self {
        self.spec.capacity = Some(capacity);
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<T, ConfigError> {
        ChaosConfig::try_from(self.spec).map(T::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ChaosSpec {
    name: String,
    enabled: bool,
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency: Option<Latency>,
    faults: Faults,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    windows: Vec<Window>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flapping: Option<Flapping>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity: Option<Capacity>,
}

impl Default for ChaosSpec {
    fn default() -> Self {
        Self {
            name: DEFAULT_NAME.into(),
            enabled: false,
            seed: 0,
            latency: None,
            faults: Faults::none(),
            windows: Vec::new(),
            flapping: None,
            capacity: None,
        }
    }
}

impl TryFrom<ChaosSpec> for ChaosConfig {
    type Error = ConfigError;

    fn try_from(spec: ChaosSpec) -> Result<Self, ConfigError> {
        seawall_core::config::check_name(&spec.name)?;
        if let Some(latency) = &spec.latency {
            latency.validate("latency")?;
        }
        spec.faults.validate()?;
        for window in &spec.windows {
            if window.start >= window.end {
                return Err(ConfigError::new(
                    "windows.end",
                    format_args!("{:?}", window.end),
                    format!("after start ({:?})", window.start),
                ));
            }
            window.faults.validate()?;
        }
        if let Some(flapping) = &spec.flapping {
            config::positive_duration("flapping.down", flapping.down, MAX_DURATION)?;
            config::duration_in("flapping.up", flapping.up, Duration::ZERO..=MAX_DURATION)?;
            config::count_in("flapping.cycles", flapping.cycles, 1..=1_000_000)?;
            flapping.faults.validate()?;
        }
        if let Some(capacity) = &spec.capacity {
            capacity.validate()?;
            if spec.latency.is_none() {
                return Err(ConfigError::new(
                    "latency",
                    "nothing",
                    "a latency (the service time) when `capacity` is set",
                ));
            }
        }
        Ok(Self {
            name: spec.name.into(),
            enabled: spec.enabled,
            seed: spec.seed,
            latency: spec.latency,
            faults: spec.faults,
            windows: spec.windows,
            flapping: spec.flapping,
            capacity: spec.capacity,
        })
    }
}

impl From<ChaosConfig> for ChaosSpec {
    fn from(config: ChaosConfig) -> Self {
        Self {
            name: config.name.to_string(),
            enabled: config.enabled,
            seed: config.seed,
            latency: config.latency,
            faults: config.faults,
            windows: config.windows,
            flapping: config.flapping,
            capacity: config.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn builder_checks_rates_and_latencies() {
        let err = ChaosConfig::builder()
            .faults(Faults::errors(1.5))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "error");
        let err = ChaosConfig::builder()
            .faults(Faults {
                error: 0.6,
                hang: 0.6,
                ..Faults::none()
            })
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "error + hang + response");
        let err = ChaosConfig::builder()
            .latency(Latency::Uniform {
                min: ms(12),
                max: ms(8),
            })
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "latency");
        let err = ChaosConfig::builder()
            .capacity(Capacity::workers(4))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "latency");
        let err = ChaosConfig::builder()
            .outage(ms(20), ms(10))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "windows.end");
    }

    #[test]
    fn flapping_expands_into_windows() {
        let config = ChaosConfig::builder()
            .flapping(Flapping {
                start: ms(100),
                down: ms(5),
                up: ms(10),
                cycles: 3,
                faults: Faults::errors(1.0),
            })
            .build()
            .unwrap();
        let starts: Vec<_> = config.windows().iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(
            starts,
            [(ms(100), ms(105)), (ms(115), ms(120)), (ms(130), ms(135))]
        );
    }

    #[test]
    fn deserializes_and_rejects_unknown_fields() {
        let config: ChaosConfig = serde_json::from_str(
            r#"{"enabled": true, "seed": 3,
                "latency": {"kind": "long_tail", "median": "10ms", "p99": "50ms"},
                "windows": [{"start": "1s", "end": "2s", "faults": {"error": 1.0}}]}"#,
        )
        .unwrap();
        assert!(config.enabled());
        assert_eq!(config.windows().len(), 1);
        let typo = serde_json::from_str::<ChaosConfig>(r#"{"faults": {"eror": 0.1}}"#);
        assert!(typo.unwrap_err().to_string().contains("unknown field"));
        let bad = serde_json::from_str::<ChaosConfig>(r#"{"faults": {"error": 2.0}}"#);
        assert!(bad.unwrap_err().to_string().contains("invalid `error`"));
    }

    #[test]
    fn round_trips_through_serde() {
        let config = ChaosConfig::builder()
            .name("db")
            .enabled(true)
            .latency(Latency::Fixed { value: ms(3) })
            .capacity(Capacity::workers(2).queue_limit(10))
            .build()
            .unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<ChaosConfig>(&json).unwrap(), config);
    }

    #[test]
    fn long_tail_mean_is_above_its_median() {
        let latency = Latency::LongTail {
            median: ms(10),
            p99: ms(100),
        };
        assert!(latency.mean() > ms(10));
        assert_eq!(
            Latency::Uniform {
                min: ms(8),
                max: ms(12)
            }
            .mean(),
            ms(10)
        );
    }
}
