use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use http::HeaderName;
use seawall_core::Name;
use seawall_core::config::{self, ConfigError, MAX_DURATION, POSITIVE_DURATIONS, Raw};
use seawall_core::latency::LatencyEstimate;
use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const DEFAULT_NAME: &str = "timeout";
const MAX_MULTIPLIER: f64 = 100.0;
const MAX_MIN_SAMPLES: u64 = 1_000_000;

/// A validated timeout configuration.
///
/// Deserializes from, for example, `{ "name": "payments", "timeout": "250ms" }`, or, for an
/// [adaptive](AdaptiveTimeout) timeout, `{ "timeout": { "ceiling": "1s" } }`, and checks the
/// values as it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TimeoutSpec", into = "TimeoutSpec")]
pub struct TimeoutConfig {
    pub(crate) name: Name,
    pub(crate) timeout: TimeoutMode,
}

impl TimeoutConfig {
    /// A builder for a configuration.
    pub fn builder() -> TimeoutConfigBuilder {
        TimeoutConfigBuilder::new()
    }

    /// The same configuration for a layer instance called `name` (as a ready-made stack names
    /// its layers after itself). An empty name is a `ConfigError`.
    pub fn named(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name: String = name.into();
        self.name = Name::new(name)?;
        Ok(self)
    }

    /// The name of the layer instance, the `name` label of its metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The longest a call may take: the fixed timeout, or an adaptive timeout's ceiling.
    pub fn timeout(&self) -> Duration {
        match &self.timeout {
            TimeoutMode::Fixed(timeout) => *timeout,
            TimeoutMode::Adaptive(adaptive) => adaptive.ceiling.unwrap_or(MAX_DURATION),
        }
    }

    /// Fixed, or adaptive and how.
    pub fn mode(&self) -> &TimeoutMode {
        &self.timeout
    }
}

/// How long a call may take: always the same, or learned from recent latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeoutMode {
    /// Always the same timeout. Written as a duration: `"250ms"`.
    Fixed(Duration),
    /// A multiple of a high percentile of recent latency, between a floor and a ceiling.
    /// Written as a table: `{ ceiling = "1s", multiplier = 3 }`.
    Adaptive(AdaptiveTimeout),
}

impl From<Duration> for TimeoutMode {
    fn from(timeout: Duration) -> Self {
        Self::Fixed(timeout)
    }
}

impl From<AdaptiveTimeout> for TimeoutMode {
    fn from(adaptive: AdaptiveTimeout) -> Self {
        Self::Adaptive(adaptive)
    }
}

/// An attempt timeout learned from the latency of recent calls; checked when it is read or
/// built.
///
/// The timeout is `multiplier` × the `quantile` of the latencies of the calls of the last
/// `window`, kept between `floor` and `ceiling`; until the window holds `min_samples` calls,
/// it is the ceiling. Each call cut off doubles the timeout of the calls that follow until one
/// answers within it. A cut call counts as the percentile its timeout came from (that timeout
/// without its doublings, over `multiplier`): it says only that the call would have taken at
/// least that long, so cuts may hold the percentile but never raise it. When a downstream
/// becomes uniformly slower, the doubled calls answer and their latencies raise the
/// percentile; when a share of calls hangs (calls better cut and retried), nothing answers
/// above the timeout and it stays. A black hole is still cut at the ceiling at the latest.
///
/// Under a retry and a caller's deadline (a client stack's attempt timeout), the ceiling is
/// where an attempt is cut so that another fits, and the last attempt gets what is left of the
/// deadline. So does every attempt while the ceiling is no bound the downstream was seen to
/// keep: before `min_samples` calls were seen (a client at a few calls a second), and once
/// cuts have doubled the timeout past the ceiling, until a call answers within it again. A
/// downstream that became uniformly slower than the ceiling is waited for, not cut on every
/// attempt (every call would fail), while a black hole is cut at the deadline.
///
/// The defaults, and why (the "Tail at Scale" sizing of Dean and Barroso, and the AWS
/// Builders' Library's rule to time out at the downstream's p99.9 so that at most 0.1 % of
/// healthy calls time out):
/// - `quantile` 0.99: the highest percentile that 100 samples still estimate; the rule's
///   p99.9 would need 1000 for every estimate, which a client at a few calls a second never
///   has;
/// - `multiplier` 3: covers the p99.9 of any tail up to three times its p99 (a log-normal
///   tail with σ up to 1.4; a 10 ms median with an 80 ms p99 has p99.9 ≈ 2 × p99), and climbs
///   a uniform slowdown by ×3 per step;
/// - `floor` 100 ms: a cut earlier than a tenth of a one-second budget saves the caller
///   little, while it turns every queueing spike of the downstream into retries, more load on
///   a downstream that is already queueing: the retry-driven metastable failure (Bronson et
///   al., HotOS 2021). In the lab, a 10 ms floor cut a near-capacity downstream's queueing at
///   3 × its healthy 12 ms and left it overloaded after its trigger ended;
/// - `window` 30 s: a passing tail (2 % of calls slow for 10 s is 0.7 % of the window) does
///   not move the 99th percentile, while a downstream slowed for good fills 1 % of the window
///   in 0.3 s at 1000 calls a second;
/// - `min_samples` 100: the fewest from which a 99th percentile means anything;
/// - `ceiling`: required for a [`TimeoutLayer`](crate::TimeoutLayer) of its own; a client
///   stack defaults it to half its total timeout, so that one attempt cut at the ceiling
///   leaves time for another.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AdaptiveSpec", into = "AdaptiveSpec")]
pub struct AdaptiveTimeout {
    pub(crate) multiplier: f64,
    pub(crate) quantile: f64,
    pub(crate) floor: Duration,
    pub(crate) ceiling: Option<Duration>,
    pub(crate) window: Duration,
    pub(crate) min_samples: u64,
}

impl Default for AdaptiveTimeout {
    fn default() -> Self {
        Self {
            multiplier: 3.0,
            quantile: 0.99,
            floor: Duration::from_millis(100),
            ceiling: None,
            window: Duration::from_secs(30),
            min_samples: 100,
        }
    }
}

impl AdaptiveTimeout {
    /// The defaults; see the type's docs for each and why.
    pub fn new() -> Self {
        Self::default()
    }

    /// The multiple of the percentile a call is given, in `[1, 100]` (default 3).
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The percentile of recent latency, in `(0, 1)` (default 0.99).
    #[must_use]
    pub fn quantile(mut self, quantile: f64) -> Self {
        self.quantile = quantile;
        self
    }

    /// The shortest timeout, in `(0s, ceiling]` (default 100 ms).
    #[must_use]
    pub fn floor(mut self, floor: Duration) -> Self {
        self.floor = floor;
        self
    }

    /// The longest timeout, and the timeout until enough calls were seen, in
    /// `[floor, 1 day]`.
    #[must_use]
    pub fn ceiling(mut self, ceiling: Duration) -> Self {
        self.ceiling = Some(ceiling);
        self
    }

    /// How far back latencies count, in `[10ms, 1h]` (default 30 s).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many calls the window must hold before the timeout follows them, in
    /// `[1, 1000000]` (default 100).
    #[must_use]
    pub fn min_samples(mut self, min_samples: u64) -> Self {
        self.min_samples = min_samples;
        self
    }

    /// The multiple of the percentile.
    pub fn get_multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The percentile.
    pub fn get_quantile(&self) -> f64 {
        self.quantile
    }

    /// The shortest timeout.
    pub fn get_floor(&self) -> Duration {
        self.floor
    }

    /// The longest timeout, if set.
    pub fn get_ceiling(&self) -> Option<Duration> {
        self.ceiling
    }

    /// How far back latencies count.
    pub fn get_window(&self) -> Duration {
        self.window
    }

    /// How many calls the window must hold.
    pub fn get_min_samples(&self) -> u64 {
        self.min_samples
    }

    /// Checks the values; errors name their field within the table.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(1.0..=MAX_MULTIPLIER).contains(&self.multiplier) {
            return Err(ConfigError::new("multiplier", self.multiplier, "[1, 100]"));
        }
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err(ConfigError::new("quantile", self.quantile, "(0, 1)"));
        }
        let ceiling = self.ceiling.unwrap_or(MAX_DURATION);
        config::positive_duration("floor", self.floor, ceiling)?;
        if let Some(ceiling) = self.ceiling {
            config::duration_in("ceiling", ceiling, self.floor..=MAX_DURATION)?;
        }
        config::duration_in("window", self.window, LatencyEstimate::WINDOWS)?;
        config::count_in("min_samples", self.min_samples, 1..=MAX_MIN_SAMPLES)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AdaptiveSpec {
    multiplier: Raw<f64>,
    quantile: Raw<f64>,
    floor: Raw<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ceiling: Option<Raw<Duration>>,
    window: Raw<Duration>,
    min_samples: Raw<u64>,
}

impl Default for AdaptiveSpec {
    fn default() -> Self {
        AdaptiveTimeout::default().into()
    }
}

impl From<AdaptiveTimeout> for AdaptiveSpec {
    fn from(a: AdaptiveTimeout) -> Self {
        Self {
            multiplier: a.multiplier.into(),
            quantile: a.quantile.into(),
            floor: a.floor.into(),
            ceiling: a.ceiling.map(Into::into),
            window: a.window.into(),
            min_samples: a.min_samples.into(),
        }
    }
}

impl TryFrom<AdaptiveSpec> for AdaptiveTimeout {
    type Error = ConfigError;

    fn try_from(spec: AdaptiveSpec) -> Result<Self, ConfigError> {
        let adaptive = Self {
            multiplier: spec.multiplier.value("multiplier", "[1, 100]")?,
            quantile: spec.quantile.value("quantile", "(0, 1)")?,
            floor: spec.floor.value("floor", "(0s, ceiling]")?,
            ceiling: spec
                .ceiling
                .map(|c| c.value("ceiling", format!("[floor, {MAX_DURATION:?}]")))
                .transpose()?,
            window: spec.window.value("window", "[10ms, 3600s]")?,
            min_samples: spec.min_samples.value("min_samples", "[1, 1000000]")?,
        };
        adaptive.check()?;
        Ok(adaptive)
    }
}

/// A timeout as written: a duration, or an adaptive table.
#[derive(Debug, Clone)]
enum TimeoutModeSpec {
    Fixed(Raw<Duration>),
    Adaptive(AdaptiveTimeout),
}

impl From<TimeoutMode> for TimeoutModeSpec {
    fn from(mode: TimeoutMode) -> Self {
        match mode {
            TimeoutMode::Fixed(timeout) => Self::Fixed(timeout.into()),
            TimeoutMode::Adaptive(adaptive) => Self::Adaptive(adaptive),
        }
    }
}

impl Serialize for TimeoutModeSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(timeout) => timeout.serialize(s),
            Self::Adaptive(adaptive) => adaptive.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TimeoutModeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ModeVisitor;

        impl ModeVisitor {
            fn fixed<'de, V, E>(value: V) -> Result<TimeoutModeSpec, E>
            where
                V: IntoDeserializer<'de, E>,
                E: de::Error,
            {
                Raw::deserialize(value.into_deserializer()).map(TimeoutModeSpec::Fixed)
            }
        }

        impl<'de> Visitor<'de> for ModeVisitor {
            type Value = TimeoutModeSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration such as "250ms", or { ceiling = "1s" }"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeoutModeSpec, E> {
                Self::fixed(v)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeoutModeSpec, E> {
                Self::fixed(v)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeoutModeSpec, E> {
                Self::fixed(v)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TimeoutModeSpec, E> {
                Self::fixed(v)
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TimeoutModeSpec, E> {
                Self::fixed(v)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TimeoutModeSpec, A::Error> {
                AdaptiveTimeout::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(TimeoutModeSpec::Adaptive)
            }
        }

        d.deserialize_any(ModeVisitor)
    }
}

/// Builds a [`TimeoutConfig`], or straight a layer when made by `TimeoutLayer::builder`.
#[derive(Debug)]
pub struct TimeoutConfigBuilder<T = TimeoutConfig> {
    spec: TimeoutSpec,
    _output: PhantomData<fn() -> T>,
}

impl<T: From<TimeoutConfig>> TimeoutConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            spec: TimeoutSpec {
                name: default_name(),
                timeout: None,
            },
            _output: PhantomData,
        }
    }

    /// The name of the layer instance (default `"timeout"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into().into();
        self
    }

    /// How long a call may take, in `(0s, 1 day]`. This or [`adaptive`](Self::adaptive) is
    /// required.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout = Some(TimeoutModeSpec::Fixed(timeout.into()));
        self
    }

    /// A timeout learned from recent latency (its ceiling is required); see
    /// [`AdaptiveTimeout`].
    pub fn adaptive(mut self, adaptive: AdaptiveTimeout) -> Self {
        self.spec.timeout = Some(TimeoutModeSpec::Adaptive(adaptive));
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<T, ConfigError> {
        TimeoutConfig::try_from(self.spec).map(T::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutSpec {
    #[serde(default = "default_name")]
    name: Raw<String>,
    #[serde(default, deserialize_with = "timeout_within")]
    timeout: Option<TimeoutModeSpec>,
}

fn timeout_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TimeoutModeSpec>, D::Error> {
    config::within("timeout", d)
}

fn default_name() -> Raw<String> {
    String::from(DEFAULT_NAME).into()
}

impl TryFrom<TimeoutSpec> for TimeoutConfig {
    type Error = ConfigError;

    fn try_from(spec: TimeoutSpec) -> Result<Self, ConfigError> {
        let timeout = spec.timeout.ok_or_else(|| {
            ConfigError::expected(
                "timeout",
                "nothing",
                format!("a duration in {POSITIVE_DURATIONS}"),
            )
        })?;
        let name = Name::from_raw(spec.name)?;
        let timeout = match timeout {
            TimeoutModeSpec::Fixed(timeout) => {
                TimeoutMode::Fixed(config::positive_duration("timeout", timeout, MAX_DURATION)?)
            }
            TimeoutModeSpec::Adaptive(adaptive) => {
                adaptive.check().map_err(|e| e.within("timeout"))?;
                if adaptive.ceiling.is_none() {
                    return Err(ConfigError::expected(
                        "timeout.ceiling",
                        "nothing",
                        format!("a duration in [floor, {MAX_DURATION:?}]"),
                    ));
                }
                TimeoutMode::Adaptive(adaptive)
            }
        };
        Ok(Self { name, timeout })
    }
}

impl From<TimeoutConfig> for TimeoutSpec {
    fn from(config: TimeoutConfig) -> Self {
        Self {
            name: config.name.into(),
            timeout: Some(config.timeout.into()),
        }
    }
}

/// Where deadlines are read from and written to, for deadline propagation.
///
/// Deserializes from, for example,
/// `{ "header": "x-request-timeout", "write": true }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DeadlineSpec", into = "DeadlineSpec")]
pub struct DeadlineConfig {
    pub(crate) header: Option<HeaderName>,
    pub(crate) write: bool,
}

impl DeadlineConfig {
    /// Reads the caller's deadline from `grpc-timeout` (and from a `Deadline` already in the
    /// request's extensions), and shortens the timeout to it.
    pub fn inbound() -> Self {
        Self {
            header: None,
            write: false,
        }
    }

    /// As [`inbound`](Self::inbound), and writes the remaining budget as `grpc-timeout` on
    /// the request, for a client calling further downstream.
    pub fn outbound() -> Self {
        Self {
            header: None,
            write: true,
        }
    }

    /// Also reads (and, outbound, writes) `header`, holding a budget in whole milliseconds,
    /// such as `x-request-timeout`.
    pub fn with_header(mut self, header: HeaderName) -> Self {
        self.header = Some(header);
        self
    }

    /// The extra millisecond header, if any.
    pub fn header(&self) -> Option<&HeaderName> {
        self.header.as_ref()
    }

    /// Whether the remaining budget is written on the request.
    pub fn writes(&self) -> bool {
        self.write
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadlineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<Raw<String>>,
    #[serde(default = "no")]
    write: Raw<bool>,
}

fn no() -> Raw<bool> {
    false.into()
}

impl TryFrom<DeadlineSpec> for DeadlineConfig {
    type Error = ConfigError;

    fn try_from(spec: DeadlineSpec) -> Result<Self, ConfigError> {
        const HEADER: &str = "a valid HTTP header name";
        let header = spec
            .header
            .map(|h| {
                let h = h.expected("header", HEADER)?;
                HeaderName::try_from(h.as_str())
                    .map_err(|_| ConfigError::expected("header", format_args!("{h:?}"), HEADER))
            })
            .transpose()?;
        Ok(Self {
            header,
            write: spec.write.expected("write", "true or false")?,
        })
    }
}

impl From<DeadlineConfig> for DeadlineSpec {
    fn from(config: DeadlineConfig) -> Self {
        Self {
            header: config.header.map(|h| h.as_str().to_owned().into()),
            write: config.write.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_checks_the_timeout() {
        let zero = TimeoutConfig::builder()
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(zero.field(), "timeout");
        let huge = TimeoutConfig::builder()
            .timeout(Duration::from_secs(400_000))
            .build()
            .unwrap_err();
        assert_eq!(
            huge.to_string(),
            "invalid `timeout`: 400000s is outside the allowed range (0s, 86400s]"
        );
        let missing = TimeoutConfig::builder().build().unwrap_err();
        assert_eq!(missing.field(), "timeout");
        let empty = TimeoutConfig::builder()
            .name("")
            .timeout(Duration::from_secs(1))
            .build();
        assert_eq!(empty.unwrap_err().field(), "name");
    }

    #[test]
    fn deserializes_human_durations() {
        let config: TimeoutConfig =
            serde_json::from_str(r#"{"name": "payments", "timeout": "250ms"}"#).unwrap();
        assert_eq!(config.name(), "payments");
        assert_eq!(config.timeout(), Duration::from_millis(250));
        let default_name: TimeoutConfig = serde_json::from_str(r#"{"timeout": "1s"}"#).unwrap();
        assert_eq!(default_name.name(), "timeout");
    }

    #[test]
    fn deserializing_validates_and_rejects_unknown_fields() {
        let zero = serde_json::from_str::<TimeoutConfig>(r#"{"timeout": "0s"}"#).unwrap_err();
        assert!(zero.to_string().contains("invalid `timeout`"), "{zero}");
        let typo = serde_json::from_str::<TimeoutConfig>(r#"{"timeuot": "1s"}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field"), "{typo}");
    }

    #[test]
    fn errors_name_the_field_and_its_range_in_toml_and_json() {
        use seawall_core::testing::config::assert_errors;

        assert_errors::<TimeoutConfig>(&[
            (
                r#"timeout = "-5s""#,
                r#"invalid `timeout`: "-5s" is outside the allowed range (0s, 86400s]"#,
            ),
            (
                "timeout = -1",
                "invalid `timeout`: -1 is outside the allowed range (0s, 86400s]",
            ),
            (
                r#"timeout = "0s""#,
                "invalid `timeout`: 0ns is outside the allowed range (0s, 86400s]",
            ),
            (
                r#"name = "db""#,
                "invalid `timeout`: nothing, expected a duration in (0s, 86400s]",
            ),
            (
                r#"name = ""
                   timeout = "1s""#,
                r#"invalid `name`: "", expected a non-empty name"#,
            ),
            (
                r#"name = 7
                   timeout = "1s""#,
                "invalid `name`: 7, expected a non-empty name",
            ),
        ]);
        assert_errors::<DeadlineConfig>(&[
            (
                r#"header = "bad header""#,
                r#"invalid `header`: "bad header", expected a valid HTTP header name"#,
            ),
            (
                r#"write = "sometimes""#,
                r#"invalid `write`: "sometimes", expected true or false"#,
            ),
        ]);
    }

    #[test]
    fn round_trips_through_serde() {
        let config = TimeoutConfig::builder()
            .name("db")
            .timeout(Duration::from_millis(1500))
            .build()
            .unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(json, r#"{"name":"db","timeout":"1s 500ms"}"#);
        assert_eq!(
            serde_json::from_str::<TimeoutConfig>(&json).unwrap(),
            config
        );
    }

    #[test]
    fn deadline_config_checks_header_names() {
        let ok: DeadlineConfig =
            serde_json::from_str(r#"{"header": "x-request-timeout", "write": true}"#).unwrap();
        assert_eq!(
            ok,
            DeadlineConfig::outbound().with_header(HeaderName::from_static("x-request-timeout"))
        );
        let bad =
            serde_json::from_str::<DeadlineConfig>(r#"{"header": "bad header"}"#).unwrap_err();
        assert!(bad.to_string().contains("invalid `header`"), "{bad}");
    }
}
