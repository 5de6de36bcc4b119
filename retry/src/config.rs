use std::marker::PhantomData;
use std::time::Duration;

use seawall_core::Name;
use seawall_core::backoff::{Backoff, Jitter};
use seawall_core::config::{self, ConfigError, MAX_DURATION, Raw};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const DEFAULT_NAME: &str = "retry";
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const MAX_ATTEMPTS: u32 = 100;
const MAX_TTL: Duration = Duration::from_secs(60);
const MAX_MIN_PER_SECOND: u32 = 1_000_000;
// See `BudgetConfig::default`: 0.09 × (1 + 1 s / 10 s) is just under the SRE book's 10 %.
const DEFAULT_RATIO: f64 = 0.09;
const DEFAULT_TTL: Duration = Duration::from_secs(10);
const DEFAULT_QUIET_TTL: Duration = Duration::from_secs(1);
const MIN_QUIET_TTL: Duration = Duration::from_millis(10);

fn default_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(100))
        .cap(Duration::from_secs(5))
        .jitter(Jitter::Full)
        .build()
        .expect("the default backoff is valid")
}

/// A validated retry configuration.
///
/// Deserializes from, for example,
/// `{ "name": "payments", "max_attempts": 3, "backoff": { "kind": "exponential", "base": "100ms",
/// "cap": "2s" }, "budget": { "ratio": 0.2, "min_per_second": 10, "ttl": "10s" } }`;
/// `budget = "off"` (in TOML, or `"budget": "off"` or `null` in JSON) turns the budget off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RetrySpec", into = "RetrySpec")]
pub struct RetryConfig {
    pub(crate) name: Name,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_delay: Duration,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) budget: Option<BudgetConfig>,
    pub(crate) seed: Option<u64>,
}

impl RetryConfig {
    /// A builder for a configuration.
    pub fn builder() -> RetryConfigBuilder {
        RetryConfigBuilder::new()
    }

    /// The same configuration for a layer instance called `name` (as a ready-made stack names
    /// its layers after itself). An empty name is a `ConfigError`.
    pub fn named(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        let name: String = name.into();
        self.name = Name::new(name)?;
        Ok(self)
    }

    /// The same configuration, never planning a wait or a retry that would end more than
    /// `limit` after the first attempt started: `max_delay` and `max_elapsed` are lowered to
    /// `limit` where they are longer. A ready-made stack passes its total timeout, so that
    /// retry gives up at once rather than sleep past it (on a rate limiter's `retry_after`,
    /// say).
    pub fn within(mut self, limit: Duration) -> Self {
        self.max_delay = self.max_delay.min(limit);
        self.max_elapsed = Some(self.max_elapsed.map_or(limit, |max| max.min(limit)));
        self
    }

    /// The name of the layer instance, the `name` label of its metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most attempts per call, the first one included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delays between attempts.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The longest wait before one retry: a longer backoff delay is cut to it, and a server or
    /// rejection asking for longer ends the retries at once.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The longest a call may take, retries and waits included, before no more retries start.
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// The layer's own retry budget, if any.
    pub fn budget(&self) -> Option<&BudgetConfig> {
        self.budget.as_ref()
    }

    /// The jitter seed, when runs must repeat exactly.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig::try_from(RetrySpec::default()).expect("the default configuration is valid")
    }
}

/// Builds a [`RetryConfig`], or straight a layer when made by `RetryLayer::builder`.
#[derive(Debug)]
pub struct RetryConfigBuilder<T = RetryConfig> {
    spec: RetrySpec,
    _output: PhantomData<fn() -> T>,
}

impl<T: From<RetryConfig>> RetryConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            spec: RetrySpec::default(),
            _output: PhantomData,
        }
    }

    /// The name of the layer instance (default `"retry"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into().into();
        self
    }

    /// The most attempts per call, the first one included, in `[1, 100]` (default 3).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.spec.max_attempts = max_attempts.into();
        self
    }

    /// The delays between attempts (default: exponential from 100 ms, capped at 5 s, full
    /// jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.spec.backoff = backoff;
        self
    }

    /// The longest wait before one retry, in `(0s, 1 day]` (default: the backoff's cap). A
    /// longer backoff delay is cut to it; a `Retry-After`, gRPC pushback or rejection hint
    /// asking for longer ends the retries at once rather than holding the caller.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.spec.max_delay = Some(max_delay.into());
        self
    }

    /// The longest a call may take, in `(0s, 1 day]`: no retry starts whose wait would end
    /// then or later (default: no limit).
    pub fn max_elapsed(mut self, max_elapsed: Duration) -> Self {
        self.spec.max_elapsed = Some(max_elapsed.into());
        self
    }

    /// The layer's own retry budget (default [`BudgetConfig::default`]: 9 % of requests, no
    /// floor, credit kept 1 s while failures are rare and up to 10 s while they are frequent).
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.spec.budget = Some(budget);
        self
    }

    /// No retry budget: only max attempts and max elapsed limit retries.
    pub fn no_budget(mut self) -> Self {
        self.spec.budget = None;
        self
    }

    /// Seeds the jitter so that a run repeats exactly (default: a random seed per layer).
    pub fn seed(mut self, seed: u64) -> Self {
        self.spec.seed = Some(seed.into());
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<T, ConfigError> {
        RetryConfig::try_from(self.spec).map(T::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySpec {
    #[serde(default = "default_name")]
    name: Raw<String>,
    #[serde(default = "default_max_attempts")]
    max_attempts: Raw<u32>,
    #[serde(default = "default_backoff", deserialize_with = "backoff_within")]
    backoff: Backoff,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_delay: Option<Raw<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_elapsed: Option<Raw<Duration>>,
    #[serde(
        default = "default_budget",
        deserialize_with = "budget_or_off",
        serialize_with = "write_budget"
    )]
    budget: Option<BudgetConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<Raw<u64>>,
}

fn backoff_within<'de, D: Deserializer<'de>>(d: D) -> Result<Backoff, D::Error> {
    config::within("backoff", d)
}

/// Reads a budget table, or `"off"` (or `null`) for no budget.
fn budget_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BudgetConfig>, D::Error> {
    struct BudgetOrOff;

    impl<'de> Visitor<'de> for BudgetOrOff {
        type Value = Option<BudgetConfig>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(BUDGET)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v {
                "off" => Ok(None),
                other => Err(E::custom(ConfigError::expected(
                    "budget",
                    format_args!("{other:?}"),
                    BUDGET,
                ))),
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            config::within("budget", de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    d.deserialize_any(BudgetOrOff)
}

const BUDGET: &str = r#""off" or a budget such as { ratio = 0.09, ttl = "10s" }"#;

fn write_budget<S: Serializer>(budget: &Option<BudgetConfig>, s: S) -> Result<S::Ok, S::Error> {
    match budget {
        Some(budget) => budget.serialize(s),
        None => s.serialize_str("off"),
    }
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            name: default_name(),
            max_attempts: default_max_attempts(),
            backoff: default_backoff(),
            max_delay: None,
            max_elapsed: None,
            budget: default_budget(),
            seed: None,
        }
    }
}

fn default_name() -> Raw<String> {
    String::from(DEFAULT_NAME).into()
}

fn default_max_attempts() -> Raw<u32> {
    DEFAULT_MAX_ATTEMPTS.into()
}

fn default_budget() -> Option<BudgetConfig> {
    Some(BudgetConfig::default())
}

impl TryFrom<RetrySpec> for RetryConfig {
    type Error = ConfigError;

    fn try_from(spec: RetrySpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        let max_attempts = config::count_in("max_attempts", spec.max_attempts, 1..=MAX_ATTEMPTS)?;
        let max_delay = match spec.max_delay {
            Some(d) => config::positive_duration("max_delay", d, MAX_DURATION)?,
            None => spec.backoff.max_delay(),
        };
        let max_elapsed = spec
            .max_elapsed
            .map(|d| config::positive_duration("max_elapsed", d, MAX_DURATION))
            .transpose()?;
        let seed = spec
            .seed
            .map(|seed| seed.value("seed", "[0, 18446744073709551615]"))
            .transpose()?;
        Ok(Self {
            name,
            max_attempts,
            backoff: spec.backoff,
            max_delay,
            max_elapsed,
            budget: spec.budget,
            seed,
        })
    }
}

impl From<RetryConfig> for RetrySpec {
    fn from(config: RetryConfig) -> Self {
        Self {
            name: config.name.into(),
            max_attempts: config.max_attempts.into(),
            backoff: config.backoff,
            max_delay: Some(config.max_delay.into()),
            max_elapsed: config.max_elapsed.map(Raw::from),
            budget: config.budget,
            seed: config.seed.map(Raw::from),
        }
    }
}

/// A validated retry budget: retries allowed as a share of recent requests (see the
/// [`budget`](crate::budget) module for how it holds for a fleet).
///
/// Retries may make up `ratio` of the requests of the last `quiet_ttl`, or, while failures are
/// frequent, of the requests since they became so (up to `ttl`), plus `min_per_second` per
/// second of that window. Deserializes from `{ "ratio": 0.09, "ttl": "10s", "quiet_ttl": "1s",
/// "min_per_second": 0 }`, every field optional.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BudgetSpec", into = "BudgetSpec")]
pub struct BudgetConfig {
    pub(crate) ratio: f64,
    pub(crate) min_per_second: u32,
    pub(crate) ttl: Duration,
    pub(crate) quiet_ttl: Duration,
}

impl BudgetConfig {
    /// A budget of `ratio` retries per request in `[0, 1]`, at least `min_per_second` retries
    /// per second in `[0, 1000000]`, credit kept at most `ttl` in `[1s, 60s]` (whole seconds),
    /// and `quiet_ttl` the default (1 s, or `ttl` if shorter).
    pub fn new(ratio: f64, min_per_second: u32, ttl: Duration) -> Result<Self, ConfigError> {
        Self::try_from(BudgetSpec {
            ratio: ratio.into(),
            min_per_second: min_per_second.into(),
            ttl: ttl.into(),
            quiet_ttl: None,
        })
    }

    /// The same budget with credit kept `quiet_ttl` while failures are rare, in
    /// `[10ms, ttl]`.
    pub fn with_quiet_ttl(self, quiet_ttl: Duration) -> Result<Self, ConfigError> {
        Self::try_from(BudgetSpec {
            quiet_ttl: Some(quiet_ttl.into()),
            ..BudgetSpec::from(self)
        })
    }

    /// Retries allowed per request.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Retries allowed per second whatever the traffic.
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// The longest a request's credit counts: while failures are frequent.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How long a request's credit counts while failures are rare.
    pub fn quiet_ttl(&self) -> Duration {
        self.quiet_ttl
    }
}

impl Default for BudgetConfig {
    /// 9 % of requests, no floor, credit kept 1 s while failures are rare and up to 10 s while
    /// they are frequent: the fleet's retries stay within the SRE book's 10 % over any fault
    /// of 10 s or more, `0.09 × (1 + 1 s / 10 s) = 9.9 %`, however many clients share it.
    fn default() -> Self {
        Self {
            ratio: DEFAULT_RATIO,
            min_per_second: 0,
            ttl: DEFAULT_TTL,
            quiet_ttl: DEFAULT_QUIET_TTL,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetSpec {
    #[serde(default = "default_ratio")]
    ratio: Raw<f64>,
    #[serde(default = "default_min_per_second")]
    min_per_second: Raw<u32>,
    #[serde(default = "default_ttl")]
    ttl: Raw<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quiet_ttl: Option<Raw<Duration>>,
}

fn default_ratio() -> Raw<f64> {
    DEFAULT_RATIO.into()
}

fn default_min_per_second() -> Raw<u32> {
    0.into()
}

fn default_ttl() -> Raw<Duration> {
    DEFAULT_TTL.into()
}

impl TryFrom<BudgetSpec> for BudgetConfig {
    type Error = ConfigError;

    fn try_from(spec: BudgetSpec) -> Result<Self, ConfigError> {
        let ratio = config::ratio_or_zero("ratio", spec.ratio)?;
        let min_per_second = config::count_in(
            "min_per_second",
            spec.min_per_second,
            0..=MAX_MIN_PER_SECOND,
        )?;
        let ttl = config::duration_in("ttl", spec.ttl, Duration::from_secs(1)..=MAX_TTL)?;
        if ttl.subsec_nanos() != 0 {
            return Err(ConfigError::new(
                "ttl",
                format_args!("{ttl:?}"),
                "whole seconds in [1s, 60s]",
            ));
        }
        let quiet_ttl = match spec.quiet_ttl {
            Some(quiet) => config::duration_in("quiet_ttl", quiet, MIN_QUIET_TTL..=ttl)?,
            None => DEFAULT_QUIET_TTL.min(ttl),
        };
        Ok(Self {
            ratio,
            min_per_second,
            ttl,
            quiet_ttl,
        })
    }
}

impl From<BudgetConfig> for BudgetSpec {
    fn from(config: BudgetConfig) -> Self {
        Self {
            ratio: config.ratio.into(),
            min_per_second: config.min_per_second.into(),
            ttl: config.ttl.into(),
            quiet_ttl: Some(config.quiet_ttl.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_three_attempts_and_a_budget() {
        let config = RetryConfig::default();
        assert_eq!(config.name(), "retry");
        assert_eq!(config.max_attempts(), 3);
        assert_eq!(config.budget(), Some(&BudgetConfig::default()));
        assert_eq!(config.max_delay(), config.backoff().max_delay());
    }

    #[test]
    fn bad_values_name_their_field() {
        let zero = RetryConfig::builder().max_attempts(0).build().unwrap_err();
        assert_eq!(zero.field(), "max_attempts");
        assert_eq!(zero.allowed(), "[1, 100]");
        let elapsed = RetryConfig::builder()
            .max_elapsed(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(elapsed.field(), "max_elapsed");
        let name = RetryConfig::builder().name("").build().unwrap_err();
        assert_eq!(name.field(), "name");
        for ratio in [-0.1, 1.5, f64::NAN] {
            let err = BudgetConfig::new(ratio, 10, Duration::from_secs(10)).unwrap_err();
            assert_eq!(err.field(), "ratio");
        }
        let ttl = BudgetConfig::new(0.2, 10, Duration::from_millis(1500)).unwrap_err();
        assert_eq!(ttl.field(), "ttl");
        let ttl = BudgetConfig::new(0.2, 10, Duration::from_secs(61)).unwrap_err();
        assert_eq!(ttl.allowed(), "[1s, 60s]");
    }

    #[test]
    fn deserializes_validates_and_round_trips() {
        let config: RetryConfig = serde_json::from_str(
            r#"{"name": "payments", "max_attempts": 4,
                "backoff": {"kind": "constant", "base": "50ms", "jitter": "none"},
                "max_elapsed": "2s", "budget": {"ratio": 0.1, "min_per_second": 5, "ttl": "5s"}}"#,
        )
        .unwrap();
        assert_eq!(config.max_attempts(), 4);
        assert_eq!(config.max_elapsed(), Some(Duration::from_secs(2)));
        assert_eq!(config.budget().unwrap().ratio(), 0.1);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<RetryConfig>(&json).unwrap(), config);

        let off: RetryConfig = serde_json::from_str(r#"{"budget": null}"#).unwrap();
        assert_eq!(off.budget(), None);
        let bad = serde_json::from_str::<RetryConfig>(r#"{"max_attempts": 0}"#).unwrap_err();
        assert!(bad.to_string().contains("max_attempts"), "{bad}");
        let typo = serde_json::from_str::<RetryConfig>(r#"{"max_atempts": 2}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field"), "{typo}");
        let ratio = serde_json::from_str::<RetryConfig>(
            r#"{"budget": {"ratio": 2.0, "min_per_second": 1, "ttl": "1s"}}"#,
        )
        .unwrap_err();
        assert!(ratio.to_string().contains("budget.ratio"), "{ratio}");
        let cap = serde_json::from_str::<RetryConfig>(
            r#"{"backoff": {"kind": "exponential", "base": "1s", "cap": "100ms"}}"#,
        )
        .unwrap_err();
        assert!(cap.to_string().contains("backoff.cap"), "{cap}");
    }

    #[test]
    fn errors_name_the_field_and_its_range_in_toml_and_json() {
        use seawall_core::testing::config::assert_errors;

        assert_errors::<RetryConfig>(&[
            (
                "max_attempts = -1",
                "invalid `max_attempts`: -1 is outside the allowed range [1, 100]",
            ),
            (
                r#"max_attempts = "three""#,
                r#"invalid `max_attempts`: "three" is outside the allowed range [1, 100]"#,
            ),
            (
                "max_attempts = 0",
                "invalid `max_attempts`: 0 is outside the allowed range [1, 100]",
            ),
            (
                r#"max_delay = "-5s""#,
                r#"invalid `max_delay`: "-5s" is outside the allowed range (0s, 86400s]"#,
            ),
            (
                r#"max_elapsed = "0s""#,
                "invalid `max_elapsed`: 0ns is outside the allowed range (0s, 86400s]",
            ),
            (
                "seed = -1",
                "invalid `seed`: -1 is outside the allowed range [0, 18446744073709551615]",
            ),
            (
                r#"name = """#,
                r#"invalid `name`: "", expected a non-empty name"#,
            ),
            (
                r#"backoff = { kind = "exponential", base = "-5s" }"#,
                r#"invalid `backoff.base`: "-5s" is outside the allowed range (0s, 3600s]"#,
            ),
            (
                r#"backoff = { kind = "exponential", base = "1s", factor = 0.5 }"#,
                "invalid `backoff.factor`: 0.5 is outside the allowed range [1, 100]",
            ),
            (
                r#"budget = { ratio = -0.1, min_per_second = 1, ttl = "1s" }"#,
                "invalid `budget.ratio`: -0.1 is outside the allowed range [0, 1]",
            ),
            (
                r#"budget = { ratio = 0.1, min_per_second = -1, ttl = "1s" }"#,
                "invalid `budget.min_per_second`: -1 is outside the allowed range [0, 1000000]",
            ),
            (
                r#"budget = { ratio = 0.1, min_per_second = 1, ttl = "-5s" }"#,
                r#"invalid `budget.ttl`: "-5s" is outside the allowed range [1s, 60s]"#,
            ),
            (
                r#"budget = "sometimes""#,
                r#"invalid `budget`: "sometimes", expected "off" or a budget"#,
            ),
        ]);
        assert_errors::<BudgetConfig>(&[(
            r#"ratio = 2.0
               min_per_second = 1
               ttl = "1s""#,
            "invalid `ratio`: 2 is outside the allowed range [0, 1]",
        )]);
    }

    #[test]
    fn the_budget_is_switched_off_in_toml_and_json() {
        let toml: RetryConfig = toml::from_str(r#"budget = "off""#).unwrap();
        assert_eq!(toml.budget(), None);
        for json in [r#"{"budget": "off"}"#, r#"{"budget": null}"#] {
            let config: RetryConfig = serde_json::from_str(json).unwrap();
            assert_eq!(config.budget(), None, "{json}");
        }
        let written = serde_json::to_string(&toml).unwrap();
        assert!(written.contains(r#""budget":"off""#), "{written}");
        assert_eq!(serde_json::from_str::<RetryConfig>(&written).unwrap(), toml);
        let on: RetryConfig = toml::from_str("").unwrap();
        assert_eq!(on.budget(), Some(&BudgetConfig::default()));
    }

    #[test]
    fn within_lowers_max_delay_and_max_elapsed_only() {
        let config = RetryConfig::builder()
            .max_elapsed(Duration::from_secs(1))
            .build()
            .unwrap()
            .within(Duration::from_secs(2));
        assert_eq!(config.max_elapsed(), Some(Duration::from_secs(1)));
        assert_eq!(config.max_delay(), Duration::from_secs(2));
        let short = RetryConfig::builder()
            .build()
            .unwrap()
            .within(Duration::from_millis(300));
        assert_eq!(short.max_elapsed(), Some(Duration::from_millis(300)));
        assert!(short.max_delay() <= Duration::from_millis(300));
    }
}
