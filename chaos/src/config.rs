use std::marker::PhantomData;
use std::time::Duration;

use seawall_core::Name;
use seawall_core::config::{self, ConfigError, DURATIONS, MAX_DURATION, Raw};
use serde::{Deserialize, Deserializer, Serialize};

use crate::capacity::Capacity;
use crate::latency::Latency;

const DEFAULT_NAME: &str = "chaos";

/// What to inject into a call, each as a probability in `[0, 1]`.
///
/// A call gets at most one of an error, a hang or a chosen response (so their sum is at most
/// 1); a call that gets none of them may still be slowed down by `slow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FaultsSpec", into = "FaultsSpec")]
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
    pub slow_latency: Option<Latency>,
}

/// Faults as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FaultsSpec {
    error: Raw<f64>,
    hang: Raw<f64>,
    response: Raw<f64>,
    slow: Raw<f64>,
    #[serde(
        deserialize_with = "slow_latency_within",
        skip_serializing_if = "Option::is_none"
    )]
    slow_latency: Option<Latency>,
}

fn slow_latency_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Latency>, D::Error> {
    config::within("slow_latency", d)
}

impl Default for FaultsSpec {
    fn default() -> Self {
        Faults::none().into()
    }
}

impl TryFrom<FaultsSpec> for Faults {
    type Error = ConfigError;

    fn try_from(spec: FaultsSpec) -> Result<Self, ConfigError> {
        Ok(Self {
            error: spec.error.value("error", "[0, 1]")?,
            hang: spec.hang.value("hang", "[0, 1]")?,
            response: spec.response.value("response", "[0, 1]")?,
            slow: spec.slow.value("slow", "[0, 1]")?,
            slow_latency: spec.slow_latency,
        })
    }
}

impl From<Faults> for FaultsSpec {
    fn from(f: Faults) -> Self {
        Self {
            error: f.error.into(),
            hang: f.hang.into(),
            response: f.response.into(),
            slow: f.slow.into(),
            slow_latency: f.slow_latency,
        }
    }
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
                return Err(ConfigError::expected(
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
#[serde(try_from = "PhaseSpec", into = "PhaseSpec")]
pub struct Phase {
    /// When the phase opens.
    pub start: Duration,
    /// When it closes (exclusive).
    pub end: Duration,
    /// What is injected while it is open.
    pub faults: Faults,
}

fn faults_within<'de, D: Deserializer<'de>>(d: D) -> Result<Faults, D::Error> {
    config::within("faults", d)
}

/// A phase as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseSpec {
    start: Raw<Duration>,
    end: Raw<Duration>,
    #[serde(deserialize_with = "faults_within")]
    faults: Faults,
}

impl TryFrom<PhaseSpec> for Phase {
    type Error = ConfigError;

    fn try_from(spec: PhaseSpec) -> Result<Self, ConfigError> {
        Ok(Self {
            start: spec.start.value("start", DURATIONS)?,
            end: spec.end.value("end", DURATIONS)?,
            faults: spec.faults,
        })
    }
}

impl From<Phase> for PhaseSpec {
    fn from(w: Phase) -> Self {
        Self {
            start: w.start.into(),
            end: w.end.into(),
            faults: w.faults,
        }
    }
}

/// A downstream that keeps going down and coming back: `cycles` times `down` of `faults`
/// followed by `up` of the usual ones, from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FlappingSpec", into = "FlappingSpec")]
pub struct Flapping {
    /// When the first down phase begins.
    pub start: Duration,
    /// How long each down phase lasts.
    pub down: Duration,
    /// How long each up phase lasts.
    pub up: Duration,
    /// How many down-and-up cycles.
    pub cycles: u32,
    /// What is injected while down.
    pub faults: Faults,
}

/// Flapping as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlappingSpec {
    start: Raw<Duration>,
    down: Raw<Duration>,
    up: Raw<Duration>,
    cycles: Raw<u32>,
    #[serde(deserialize_with = "faults_within")]
    faults: Faults,
}

impl TryFrom<FlappingSpec> for Flapping {
    type Error = ConfigError;

    fn try_from(spec: FlappingSpec) -> Result<Self, ConfigError> {
        Ok(Self {
            start: spec.start.value("start", DURATIONS)?,
            down: spec.down.value("down", config::POSITIVE_DURATIONS)?,
            up: spec.up.value("up", DURATIONS)?,
            cycles: spec.cycles.value("cycles", "[1, 1000000]")?,
            faults: spec.faults,
        })
    }
}

impl From<Flapping> for FlappingSpec {
    fn from(f: Flapping) -> Self {
        Self {
            start: f.start.into(),
            down: f.down.into(),
            up: f.up.into(),
            cycles: f.cycles.into(),
            faults: f.faults,
        }
    }
}

impl Flapping {
    /// The down phases, each a [`Phase`].
    pub fn phases(&self) -> impl Iterator<Item = Phase> + '_ {
        let period = self.down + self.up;
        (0..self.cycles).map(move |i| {
            let start = self.start + period * i;
            Phase {
                start,
                end: start + self.down,
                faults: self.faults,
            }
        })
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
/// phases = [{ start = "20s", end = "30s", faults = { error = 1.0 } }]
/// capacity = { workers = 10, degrade_above = 20, degraded = 0.8 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ChaosSpec", into = "ChaosSpec")]
pub struct ChaosConfig {
    pub(crate) name: Name,
    pub(crate) enabled: bool,
    pub(crate) seed: u64,
    pub(crate) latency: Option<Latency>,
    pub(crate) faults: Faults,
    pub(crate) phases: Vec<Phase>,
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

    /// The faults injected outside any phase.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Every phase, flapping included, in order of start.
    pub fn phases(&self) -> Vec<Phase> {
        let mut phases = self.phases.clone();
        phases.extend(self.flapping.iter().flat_map(Flapping::phases));
        phases.sort_by_key(|w| w.start);
        phases
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
        self.spec.name = name.into().into();
        self
    }

    /// Injects faults from the start (default off: a chaos layer does nothing until enabled,
    /// here or through its handle).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.spec.enabled = enabled.into();
        self
    }

    /// The seed of the layer's `ChaCha8` random numbers (default 0): the same seed and the
    /// same calls give the same faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.spec.seed = seed.into();
        self
    }

    /// Delays every call by `latency` (or, with a capacity model, serves it for that long).
    pub fn latency(mut self, latency: Latency) -> Self {
        self.spec.latency = Some(latency);
        self
    }

    /// The faults injected outside any phase.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.spec.faults = faults;
        self
    }

    /// Injects `faults` instead of the usual ones from `start` to `end` after the epoch.
    pub fn phase(mut self, start: Duration, end: Duration, faults: Faults) -> Self {
        self.spec.phases.push(Phase { start, end, faults });
        self
    }

    /// Every call fails from `start` to `end` after the epoch.
    pub fn outage(self, start: Duration, end: Duration) -> Self {
        self.phase(start, end, Faults::errors(1.0))
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
    name: Raw<String>,
    enabled: Raw<bool>,
    seed: Raw<u64>,
    #[serde(
        deserialize_with = "latency_within",
        skip_serializing_if = "Option::is_none"
    )]
    latency: Option<Latency>,
    #[serde(deserialize_with = "faults_within")]
    faults: Faults,
    #[serde(
        deserialize_with = "phases_within",
        skip_serializing_if = "Vec::is_empty"
    )]
    phases: Vec<Phase>,
    #[serde(
        deserialize_with = "flapping_within",
        skip_serializing_if = "Option::is_none"
    )]
    flapping: Option<Flapping>,
    #[serde(
        deserialize_with = "capacity_within",
        skip_serializing_if = "Option::is_none"
    )]
    capacity: Option<Capacity>,
}

fn latency_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Latency>, D::Error> {
    config::within("latency", d)
}

fn phases_within<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Phase>, D::Error> {
    config::within("phases", d)
}

fn flapping_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Flapping>, D::Error> {
    config::within("flapping", d)
}

fn capacity_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Capacity>, D::Error> {
    config::within("capacity", d)
}

impl Default for ChaosSpec {
    fn default() -> Self {
        Self {
            name: String::from(DEFAULT_NAME).into(),
            enabled: false.into(),
            seed: 0.into(),
            latency: None,
            faults: Faults::none(),
            phases: Vec::new(),
            flapping: None,
            capacity: None,
        }
    }
}

impl TryFrom<ChaosSpec> for ChaosConfig {
    type Error = ConfigError;

    fn try_from(spec: ChaosSpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        if let Some(latency) = &spec.latency {
            latency.validate("latency")?;
        }
        spec.faults.validate().map_err(|e| e.within("faults"))?;
        for (i, phase) in spec.phases.iter().enumerate() {
            let within = |e: ConfigError| e.within(&format!("phases[{i}]"));
            if phase.start >= phase.end {
                return Err(within(ConfigError::new(
                    "end",
                    format_args!("{:?}", phase.end),
                    format!("({:?}, {MAX_DURATION:?}]: after start", phase.start),
                )));
            }
            phase
                .faults
                .validate()
                .map_err(|e| within(e.within("faults")))?;
        }
        if let Some(flapping) = &spec.flapping {
            config::positive_duration("flapping.down", flapping.down, MAX_DURATION)?;
            config::duration_in("flapping.up", flapping.up, Duration::ZERO..=MAX_DURATION)?;
            config::count_in("flapping.cycles", flapping.cycles, 1..=1_000_000)?;
            flapping
                .faults
                .validate()
                .map_err(|e| e.within("flapping.faults"))?;
        }
        if let Some(capacity) = &spec.capacity {
            capacity.validate().map_err(|e| e.within("capacity"))?;
            if spec.latency.is_none() {
                return Err(ConfigError::expected(
                    "latency",
                    "nothing",
                    "a latency (the service time) when `capacity` is set",
                ));
            }
        }
        Ok(Self {
            name,
            enabled: spec.enabled.expected("enabled", "true or false")?,
            seed: spec.seed.value("seed", "[0, 18446744073709551615]")?,
            latency: spec.latency,
            faults: spec.faults,
            phases: spec.phases,
            flapping: spec.flapping,
            capacity: spec.capacity,
        })
    }
}

impl From<ChaosConfig> for ChaosSpec {
    fn from(config: ChaosConfig) -> Self {
        Self {
            name: config.name.into(),
            enabled: config.enabled.into(),
            seed: config.seed.into(),
            latency: config.latency,
            faults: config.faults,
            phases: config.phases,
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
        assert_eq!(err.field(), "faults.error");
        let err = ChaosConfig::builder()
            .faults(Faults {
                error: 0.6,
                hang: 0.6,
                ..Faults::none()
            })
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "faults.error + hang + response");
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
        assert_eq!(err.field(), "phases[0].end");
    }

    #[test]
    fn flapping_expands_into_phases() {
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
        let starts: Vec<_> = config.phases().iter().map(|w| (w.start, w.end)).collect();
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
                "phases": [{"start": "1s", "end": "2s", "faults": {"error": 1.0}}]}"#,
        )
        .unwrap();
        assert!(config.enabled());
        assert_eq!(config.phases().len(), 1);
        let typo = serde_json::from_str::<ChaosConfig>(r#"{"faults": {"eror": 0.1}}"#);
        assert!(typo.unwrap_err().to_string().contains("unknown field"));
        let bad = serde_json::from_str::<ChaosConfig>(r#"{"faults": {"error": 2.0}}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("invalid `faults.error`")
        );
    }

    #[test]
    fn errors_name_the_field_and_its_range_in_toml_and_json() {
        seawall_core::testing::config::assert_errors::<ChaosConfig>(&[
            (
                "seed = -1",
                "invalid `seed`: -1 is outside the allowed range [0, 18446744073709551615]",
            ),
            (
                r#"enabled = "yes""#,
                r#"invalid `enabled`: "yes", expected true or false"#,
            ),
            (
                r#"name = """#,
                r#"invalid `name`: "", expected a non-empty name"#,
            ),
            (
                r#"latency = { kind = "fixed", value = "-5s" }"#,
                r#"invalid `latency.value`: "-5s" is outside the allowed range [0ns, 86400s]"#,
            ),
            (
                "faults = { error = -0.5 }",
                "invalid `faults.error`: -0.5 is outside the allowed range [0, 1]",
            ),
            (
                r#"faults = { hang = "often" }"#,
                r#"invalid `faults.hang`: "often" is outside the allowed range [0, 1]"#,
            ),
            (
                r#"faults = { slow = 0.5, slow_latency = { kind = "uniform", min = "1ms", max = "-5s" } }"#,
                r#"invalid `faults.slow_latency.max`: "-5s" is outside the allowed range [0ns, 86400s]"#,
            ),
            (
                r#"phases = [{ start = "-5s", end = "1s", faults = {} }]"#,
                r#"invalid `phases.start`: "-5s" is outside the allowed range [0ns, 86400s]"#,
            ),
            (
                r#"phases = [{ start = "1s", end = "2s", faults = {} }, { start = "3s", end = "2s", faults = {} }]"#,
                "invalid `phases[1].end`: 2s is outside the allowed range (3s, 86400s]: after start",
            ),
            (
                r#"phases = [{ start = "1s", end = "2s", faults = { error = 2 } }]"#,
                "invalid `phases[0].faults.error`: 2 is outside the allowed range [0, 1]",
            ),
            (
                r#"flapping = { start = "1s", down = "1s", up = "1s", cycles = -1, faults = {} }"#,
                "invalid `flapping.cycles`: -1 is outside the allowed range [1, 1000000]",
            ),
            (
                r#"flapping = { start = "1s", down = "0s", up = "1s", cycles = 1, faults = {} }"#,
                "invalid `flapping.down`: 0ns is outside the allowed range (0s, 86400s]",
            ),
            (
                "capacity = { workers = -1 }",
                "invalid `capacity.workers`: -1 is outside the allowed range [1, 1000000]",
            ),
            (
                r#"latency = { kind = "fixed", value = "1ms" }
                   capacity = { workers = 1, degraded = 0 }"#,
                "invalid `capacity.degraded`: 0 is outside the allowed range (0, 1]",
            ),
        ]);
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
