use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use seawall_core::Name;
use seawall_core::config::{self, ConfigError, Raw};
use seawall_core::latency::LatencyEstimate;
use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const DEFAULT_NAME: &str = "hedge";
const DEFAULT_MAX_ATTEMPTS: u32 = 2;
const MAX_ATTEMPTS: u32 = 10;
const MAX_DELAY: Duration = Duration::from_secs(3600);
const MAX_MIN_SAMPLES: u64 = 1_000_000;
const MAX_BUDGET_WINDOW: Duration = Duration::from_secs(60);
const MAX_MARGIN: f64 = 10.0;

/// A validated hedge configuration.
///
/// Deserializes from, for example, `{ "name": "search", "delay": "20ms" }` or
/// `{ "delay": { "quantile": 0.95, "margin": 0.5, "min_samples": 100, "window": "10s" },
/// "max_attempts": 2, "budget": { "ratio": 0.1, "window": "10s" } }`, and checks the values as
/// it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "HedgeSpec", into = "HedgeSpec")]
pub struct HedgeConfig {
    pub(crate) name: Name,
    pub(crate) delay: Delay,
    pub(crate) max_attempts: u32,
    pub(crate) budget: BudgetConfig,
}

impl HedgeConfig {
    /// A builder for a configuration.
    pub fn builder() -> HedgeConfigBuilder {
        HedgeConfigBuilder::new()
    }

    /// The same configuration for a layer instance called `name`. An empty name is a
    /// `ConfigError`.
    pub fn named(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name: String = name.into();
        self.name = Name::new(name)?;
        Ok(self)
    }

    /// The name of the layer instance, the `name` label of its metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When a hedge is sent.
    pub fn delay(&self) -> &Delay {
        &self.delay
    }

    /// The most attempts per call, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The hedge budget.
    pub fn budget(&self) -> &BudgetConfig {
        &self.budget
    }
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeSpec::default()
            .try_into()
            .expect("the defaults are valid")
    }
}

/// How long a call waits for its first attempt before a hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delay {
    /// Always the same delay. Written as a duration: `"20ms"`.
    Fixed(Duration),
    /// A percentile of the latency of recent calls. Written as a table:
    /// `{ quantile = 0.95, margin = 0.5, min_samples = 100, window = "10s" }`.
    Percentile(PercentileDelay),
}

impl Default for Delay {
    fn default() -> Self {
        Self::Percentile(PercentileDelay::default())
    }
}

impl From<Duration> for Delay {
    fn from(delay: Duration) -> Self {
        Self::Fixed(delay)
    }
}

impl From<PercentileDelay> for Delay {
    fn from(delay: PercentileDelay) -> Self {
        Self::Percentile(delay)
    }
}

/// A hedge delay taken from the latency of recent calls; checked when the layer is built.
///
/// A call is hedged once it has waited longer than the `quantile` of the latencies of the
/// calls in the last `window`, plus `margin` times that quantile's distance from the median,
/// once the window holds `min_samples` calls.
///
/// A client at a few calls a second never holds 100 calls in 10 s. Below `min_samples`, once
/// the window holds enough calls that the largest of them is at or above the quantile with
/// 95 % confidence whatever the distribution (all `n` fall below it with probability `qⁿ`:
/// 59 calls for the 95th percentile, 29 for the 90th), the delay is taken from that largest
/// latency instead; with fewer, calls are not hedged. (The quantile's own rank from 20 calls
/// is the second largest, below the 95th percentile three times in four.) While the delay
/// comes from the largest latency, a first attempt that a hedge beat counts as that latency:
/// it holds the delay, and only answers raise it (one sample above it would be the new
/// largest, and the slow calls' hedges would raise the delay they were sent at).
///
/// The margin keeps the delay clear of calls that are only queued. Where latency has no tail
/// of its own (a downstream with a bounded service time), the 95th percentile is the top of
/// the healthy range, and a queue of a few milliseconds at the downstream pushes many calls of
/// every client past it at once: their hedges lose to their first attempts and lengthen the
/// queue they met, and the slow samples they leave raise the percentile for a whole window
/// (the lab's `tail-hedge` at 10 to 50 clients: each client's ten hedges at once, 250 for 25
/// clients, p99.9 up to 800 ms). Half the distance from the median (the default) puts the delay
/// that far above the healthy range; for a latency with a long tail, where the percentile is
/// far from the median already, it adds half again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PercentileSpec", into = "PercentileSpec")]
pub struct PercentileDelay {
    pub(crate) quantile: f64,
    pub(crate) min_samples: u64,
    pub(crate) window: Duration,
    pub(crate) margin: f64,
}

impl Default for PercentileDelay {
    fn default() -> Self {
        Self {
            quantile: 0.95,
            min_samples: 100,
            window: Duration::from_secs(10),
            margin: 0.5,
        }
    }
}

impl PercentileDelay {
    /// The defaults: the 95th percentile (as "The Tail at Scale" suggests: at most about 5 %
    /// more load) plus half its distance from the median, over the last 10 s, once 100 calls
    /// were seen (from 59, the largest of them in place of the percentile).
    pub fn new() -> Self {
        Self::default()
    }

    /// The quantile of recent latency after which a call is hedged, in `(0, 1)`.
    #[must_use]
    pub fn quantile(mut self, quantile: f64) -> Self {
        self.quantile = quantile;
        self
    }

    /// How many calls the window must hold before the delay follows the quantile, in
    /// `[1, 1000000]`; below it, the largest latency of a window that bounds the quantile (see
    /// the type's docs).
    #[must_use]
    pub fn min_samples(mut self, min_samples: u64) -> Self {
        self.min_samples = min_samples;
        self
    }

    /// How far back latencies count, in `[10ms, 1h]`.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many times the quantile's distance from the median is added to it, in `[0, 10]`;
    /// `0` hedges at the quantile itself.
    #[must_use]
    pub fn margin(mut self, margin: f64) -> Self {
        self.margin = margin;
        self
    }

    /// Checks the values; errors name their field within the percentile.
    fn check(&self) -> Result<(), ConfigError> {
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err(ConfigError::new("quantile", self.quantile, "(0, 1)"));
        }
        config::count_in("min_samples", self.min_samples, 1..=MAX_MIN_SAMPLES)?;
        config::duration_in("window", self.window, LatencyEstimate::WINDOWS)?;
        if !(0.0..=MAX_MARGIN).contains(&self.margin) {
            return Err(ConfigError::new("margin", self.margin, "[0, 10]"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PercentileSpec {
    quantile: Raw<f64>,
    min_samples: Raw<u64>,
    window: Raw<Duration>,
    margin: Raw<f64>,
}

impl Default for PercentileSpec {
    fn default() -> Self {
        PercentileDelay::default().into()
    }
}

impl From<PercentileDelay> for PercentileSpec {
    fn from(d: PercentileDelay) -> Self {
        Self {
            quantile: d.quantile.into(),
            min_samples: d.min_samples.into(),
            window: d.window.into(),
            margin: d.margin.into(),
        }
    }
}

impl TryFrom<PercentileSpec> for PercentileDelay {
    type Error = ConfigError;

    fn try_from(spec: PercentileSpec) -> Result<Self, ConfigError> {
        let delay = Self {
            quantile: spec.quantile.value("quantile", "(0, 1)")?,
            min_samples: spec.min_samples.value("min_samples", "[1, 1000000]")?,
            window: spec.window.value("window", "[10ms, 3600s]")?,
            margin: spec.margin.value("margin", "[0, 10]")?,
        };
        delay.check()?;
        Ok(delay)
    }
}

/// A validated hedge budget: hedges allowed as a share of recent requests, with no floor.
///
/// Over the last `window`, hedges may make up at most `ratio` of the requests seen. There is
/// no allowance per second (unlike a retry budget's floor): a client earns hedges only by
/// sending requests, so a fleet of any size, each client at any rate, sends at most `ratio`
/// more load. A client that has sent fewer than `1 / ratio` requests in the window cannot
/// hedge yet. Within the window, hedges are paced at `ratio` of the current request rate, a
/// tenth of a second's worth (at least ten, or two after a hedge lost to its first attempt)
/// at once, so an allowance banked in quiet seconds never goes out in one burst. Deserializes
/// from `{ "ratio": 0.1, "window": "10s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BudgetSpec", into = "BudgetSpec")]
pub struct BudgetConfig {
    pub(crate) ratio: f64,
    pub(crate) window: Duration,
}

impl BudgetConfig {
    /// A budget of `ratio` hedges per request in `(0, 1]`, counted over the last `window` in
    /// `[1s, 60s]` (whole seconds).
    pub fn new(ratio: f64, window: Duration) -> Result<Self, ConfigError> {
        Self::try_from(BudgetSpec {
            ratio: ratio.into(),
            window: window.into(),
        })
    }

    /// Hedges allowed per request.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// How long a request or a hedge counts.
    pub fn window(&self) -> Duration {
        self.window
    }
}

impl Default for BudgetConfig {
    /// 10 % of the requests of the last 10 s.
    fn default() -> Self {
        Self {
            ratio: 0.1,
            window: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct BudgetSpec {
    ratio: Raw<f64>,
    window: Raw<Duration>,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        BudgetConfig::default().into()
    }
}

impl TryFrom<BudgetSpec> for BudgetConfig {
    type Error = ConfigError;

    fn try_from(spec: BudgetSpec) -> Result<Self, ConfigError> {
        let ratio = config::ratio("ratio", spec.ratio)?;
        let window = config::duration_in(
            "window",
            spec.window,
            Duration::from_secs(1)..=MAX_BUDGET_WINDOW,
        )?;
        if window.subsec_nanos() != 0 {
            return Err(ConfigError::new(
                "window",
                format_args!("{window:?}"),
                "whole seconds in [1s, 60s]",
            ));
        }
        Ok(Self { ratio, window })
    }
}

impl From<BudgetConfig> for BudgetSpec {
    fn from(config: BudgetConfig) -> Self {
        Self {
            ratio: config.ratio.into(),
            window: config.window.into(),
        }
    }
}

/// Builds a [`HedgeConfig`], or straight a layer when made by `HedgeLayer::builder`.
pub struct HedgeConfigBuilder<T = HedgeConfig> {
    spec: HedgeSpec,
    _output: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for HedgeConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeConfigBuilder")
            .field("spec", &self.spec)
            .finish()
    }
}

impl<T: From<HedgeConfig>> HedgeConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            spec: HedgeSpec::default(),
            _output: PhantomData,
        }
    }

    /// The name of the layer instance (default `"hedge"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into().into();
        self
    }

    /// Hedges a call that has waited `delay`, in `(0s, 1h]`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.spec.delay = DelaySpec::Fixed(delay.into());
        self
    }

    /// Hedges a call that has waited longer than a percentile of recent latency (the default:
    /// [`PercentileDelay::default`]).
    pub fn percentile(mut self, delay: PercentileDelay) -> Self {
        self.spec.delay = DelaySpec::Percentile(delay);
        self
    }

    /// The most attempts per call, the first included, in `[2, 10]` (default 2: one hedge).
    /// Hedge `k` goes out after `k` delays.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.spec.max_attempts = max_attempts.into();
        self
    }

    /// The hedge budget (default [`BudgetConfig::default`]: 10 % over 10 s).
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.spec.budget = budget;
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<T, ConfigError> {
        HedgeConfig::try_from(self.spec).map(T::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HedgeSpec {
    #[serde(default = "default_name")]
    name: Raw<String>,
    #[serde(default)]
    delay: DelaySpec,
    #[serde(default = "default_max_attempts")]
    max_attempts: Raw<u32>,
    #[serde(default, deserialize_with = "budget_within")]
    budget: BudgetConfig,
}

impl Default for HedgeSpec {
    fn default() -> Self {
        Self {
            name: default_name(),
            delay: DelaySpec::default(),
            max_attempts: default_max_attempts(),
            budget: BudgetConfig::default(),
        }
    }
}

fn default_name() -> Raw<String> {
    String::from(DEFAULT_NAME).into()
}

fn default_max_attempts() -> Raw<u32> {
    DEFAULT_MAX_ATTEMPTS.into()
}

fn budget_within<'de, D: Deserializer<'de>>(d: D) -> Result<BudgetConfig, D::Error> {
    config::within("budget", d)
}

/// A delay as written: a duration, or a percentile table.
#[derive(Debug, Clone)]
enum DelaySpec {
    Fixed(Raw<Duration>),
    Percentile(PercentileDelay),
}

impl Default for DelaySpec {
    fn default() -> Self {
        Self::Percentile(PercentileDelay::default())
    }
}

impl Serialize for DelaySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(delay) => delay.serialize(s),
            Self::Percentile(delay) => delay.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for DelaySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DelayVisitor;

        impl DelayVisitor {
            fn fixed<'de, V, E>(value: V) -> Result<DelaySpec, E>
            where
                V: IntoDeserializer<'de, E>,
                E: de::Error,
            {
                Raw::deserialize(value.into_deserializer()).map(DelaySpec::Fixed)
            }
        }

        impl<'de> Visitor<'de> for DelayVisitor {
            type Value = DelaySpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration such as "20ms", or { quantile = 0.95 }"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DelaySpec, E> {
                Self::fixed(v)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DelaySpec, E> {
                Self::fixed(v)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DelaySpec, E> {
                Self::fixed(v)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DelaySpec, E> {
                Self::fixed(v)
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<DelaySpec, E> {
                Self::fixed(v)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DelaySpec, A::Error> {
                config::within("delay", de::value::MapAccessDeserializer::new(map))
                    .map(DelaySpec::Percentile)
            }
        }

        d.deserialize_any(DelayVisitor)
    }
}

impl TryFrom<HedgeSpec> for HedgeConfig {
    type Error = ConfigError;

    fn try_from(spec: HedgeSpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        let delay = match spec.delay {
            DelaySpec::Fixed(delay) => {
                Delay::Fixed(config::positive_duration("delay", delay, MAX_DELAY)?)
            }
            DelaySpec::Percentile(delay) => {
                delay.check().map_err(|e| e.within("delay"))?;
                Delay::Percentile(delay)
            }
        };
        let max_attempts = config::count_in("max_attempts", spec.max_attempts, 2..=MAX_ATTEMPTS)?;
        Ok(Self {
            name,
            delay,
            max_attempts,
            budget: spec.budget,
        })
    }
}

impl From<HedgeConfig> for HedgeSpec {
    fn from(config: HedgeConfig) -> Self {
        Self {
            name: config.name.into(),
            delay: match config.delay {
                Delay::Fixed(delay) => DelaySpec::Fixed(delay.into()),
                Delay::Percentile(delay) => DelaySpec::Percentile(delay),
            },
            max_attempts: config.max_attempts.into(),
            budget: config.budget,
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
    fn defaults_are_one_hedge_at_the_95th_percentile_within_a_tenth() {
        let config = HedgeConfig::default();
        assert_eq!(config.name(), "hedge");
        assert_eq!(config.max_attempts(), 2);
        assert_eq!(config.delay(), &Delay::Percentile(PercentileDelay::new()));
        assert_eq!(config.budget().ratio(), 0.1);
        assert_eq!(config.budget().window(), Duration::from_secs(10));
    }

    #[test]
    fn the_builder_checks_every_value() {
        let field = |b: HedgeConfigBuilder| b.build().unwrap_err().field().to_owned();
        assert_eq!(field(HedgeConfig::builder().delay(Duration::ZERO)), "delay");
        assert_eq!(
            field(HedgeConfig::builder().max_attempts(1)),
            "max_attempts"
        );
        assert_eq!(
            field(HedgeConfig::builder().max_attempts(11)),
            "max_attempts"
        );
        assert_eq!(field(HedgeConfig::builder().name("")), "name");
        assert_eq!(
            field(HedgeConfig::builder().percentile(PercentileDelay::new().quantile(1.0))),
            "delay.quantile"
        );
        assert_eq!(
            field(HedgeConfig::builder().percentile(PercentileDelay::new().min_samples(0))),
            "delay.min_samples"
        );
        assert_eq!(
            field(HedgeConfig::builder().percentile(PercentileDelay::new().window(ms(1)))),
            "delay.window"
        );
        assert_eq!(
            field(HedgeConfig::builder().percentile(PercentileDelay::new().margin(-0.1))),
            "delay.margin"
        );
        assert_eq!(
            BudgetConfig::new(0.0, ms(10_000)).unwrap_err().field(),
            "ratio"
        );
        assert_eq!(
            BudgetConfig::new(0.1, ms(1500)).unwrap_err().field(),
            "window"
        );
    }

    #[test]
    fn deserializes_fixed_and_percentile_delays() {
        let fixed: HedgeConfig =
            serde_json::from_str(r#"{"name": "search", "delay": "20ms", "max_attempts": 3}"#)
                .unwrap();
        assert_eq!(fixed.delay(), &Delay::Fixed(ms(20)));
        assert_eq!(fixed.max_attempts(), 3);
        let percentile: HedgeConfig = toml::from_str(
            "delay = { quantile = 0.9, window = \"5s\" }\nbudget = { ratio = 0.05, window = \"20s\" }",
        )
        .unwrap();
        assert_eq!(
            percentile.delay(),
            &Delay::Percentile(PercentileDelay::new().quantile(0.9).window(ms(5000)))
        );
        assert_eq!(
            percentile.budget(),
            &BudgetConfig::new(0.05, ms(20_000)).unwrap()
        );
    }

    #[test]
    fn errors_name_the_field_and_its_range_in_toml_and_json() {
        seawall_core::testing::config::assert_errors::<HedgeConfig>(&[
            (
                "delay = \"-5ms\"",
                r#"invalid `delay`: "-5ms" is outside the allowed range (0s, 3600s]"#,
            ),
            (
                "delay = 5",
                "invalid `delay`: 5 is outside the allowed range (0s, 3600s]",
            ),
            (
                "delay = { quantile = 1.5 }",
                "invalid `delay.quantile`: 1.5 is outside the allowed range (0, 1)",
            ),
            (
                "delay = { quantile = \"high\" }",
                r#"invalid `delay.quantile`: "high" is outside the allowed range (0, 1)"#,
            ),
            (
                "delay = { min_samples = -1 }",
                "invalid `delay.min_samples`: -1 is outside the allowed range [1, 1000000]",
            ),
            (
                "delay = { margin = 11 }",
                "invalid `delay.margin`: 11 is outside the allowed range [0, 10]",
            ),
            (
                "delay = { window = \"1ms\" }",
                "invalid `delay.window`: 1ms is outside the allowed range [10ms, 3600s]",
            ),
            (
                "max_attempts = -1",
                "invalid `max_attempts`: -1 is outside the allowed range [2, 10]",
            ),
            (
                "budget = { ratio = -0.1 }",
                "invalid `budget.ratio`: -0.1 is outside the allowed range (0, 1]",
            ),
            (
                "budget = { window = \"1500ms\" }",
                "invalid `budget.window`: 1.5s is outside the allowed range whole seconds in [1s, 60s]",
            ),
            (
                "name = \"\"",
                r#"invalid `name`: "", expected a non-empty name"#,
            ),
        ]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        for json in [
            r#"{"dealy": "20ms"}"#,
            r#"{"delay": {"quantil": 0.9}}"#,
            r#"{"budget": {"ratoi": 0.1}}"#,
        ] {
            let err = serde_json::from_str::<HedgeConfig>(json).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{json}: {err}");
        }
    }

    #[test]
    fn round_trips_through_serde() {
        for config in [
            HedgeConfig::builder()
                .name("search")
                .delay(ms(15))
                .max_attempts(3)
                .budget(BudgetConfig::new(0.2, ms(5000)).unwrap())
                .build()
                .unwrap(),
            HedgeConfig::builder()
                .percentile(
                    PercentileDelay::new()
                        .quantile(0.99)
                        .min_samples(10)
                        .margin(0.0),
                )
                .build()
                .unwrap(),
        ] {
            let json = serde_json::to_string(&config).unwrap();
            assert_eq!(serde_json::from_str::<HedgeConfig>(&json).unwrap(), config);
        }
    }
}
