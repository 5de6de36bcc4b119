use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::time::Duration;

use seawall_core::Name;
use seawall_core::config::{self, ConfigError, Raw};
use serde::{Deserialize, Deserializer, Serialize};

use crate::fleet::config::FleetConfig;

const DEFAULT_NAME: &str = "rate_limit";
const MAX_RATE: u32 = 1_000_000_000;
const MAX_BURST: u32 = 1_000_000_000;
/// The longest a bucket may take to fill, which keeps governor's nanosecond sums far from
/// overflow.
const MAX_FILL: Duration = Duration::from_secs(365 * 24 * 3600);
const MAX_WAIT: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_KEYS: usize = 10_000;
const MAX_KEYS: usize = 100_000_000;
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const SWEEP_INTERVALS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(3600);

/// The period a [`Quota`]'s rate is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// Calls per second.
    Second,
    /// Calls per minute.
    Minute,
}

impl Period {
    /// The length of the period.
    pub const fn duration(self) -> Duration {
        match self {
            Self::Second => Duration::from_secs(1),
            Self::Minute => Duration::from_secs(60),
        }
    }

    const fn field(self) -> &'static str {
        match self {
            Self::Second => "per_second",
            Self::Minute => "per_minute",
        }
    }
}

/// How many calls a rate limit admits: `rate` per period on average, and up to `burst` at once
/// after a quiet spell.
///
/// Permits come back one at a time, evenly spread (GCRA): at 100 per second with a burst of 10,
/// ten calls pass at once, then one every 10 ms. The burst defaults to the rate, so a full
/// period's quota may be spent at once. Deserializes from `{ "per_second": 100, "burst": 10 }`
/// or `{ "per_minute": 600 }`; the values are checked when the configuration is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "QuotaSpec", into = "QuotaSpec")]
pub struct Quota {
    period: Period,
    rate: u32,
    burst: u32,
}

impl Quota {
    /// `rate` calls per second, in `[1, 1_000_000_000]`.
    pub const fn per_second(rate: u32) -> Self {
        Self {
            period: Period::Second,
            rate,
            burst: rate,
        }
    }

    /// `rate` calls per minute, in `[1, 1_000_000_000]`.
    pub const fn per_minute(rate: u32) -> Self {
        Self {
            period: Period::Minute,
            rate,
            burst: rate,
        }
    }

    /// Up to `burst` calls at once (default: the rate), in `[1, 1_000_000_000]` and such that
    /// an empty bucket fills within a year.
    #[must_use]
    pub const fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// The period the rate is counted over.
    pub const fn period(&self) -> Period {
        self.period
    }

    /// Calls per period.
    pub const fn rate(&self) -> u32 {
        self.rate
    }

    /// Calls admitted at once after a quiet spell.
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// The time in which one permit comes back.
    pub fn replenish_interval(&self) -> Duration {
        self.period.duration() / self.rate.max(1)
    }

    /// Checks the rate and the burst; errors name fields within the quota (`per_second`).
    fn check(self) -> Result<Self, ConfigError> {
        config::count_in(self.period.field(), self.rate, 1..=MAX_RATE)?;
        let fill_in_a_year = MAX_FILL.as_nanos() / self.replenish_interval().as_nanos().max(1);
        let max_burst = u32::try_from(fill_in_a_year)
            .unwrap_or(u32::MAX)
            .min(MAX_BURST);
        config::count_in("burst", self.burst, 1..=max_burst)?;
        Ok(self)
    }

    /// As [`check`](Self::check), for a quota given to a builder: errors name `quota.<field>`.
    pub(crate) fn validate(self) -> Result<Self, ConfigError> {
        self.check().map_err(|e| e.within("quota"))
    }

    /// The governor quota; only called on a validated quota.
    pub(crate) fn to_governor(self) -> governor::Quota {
        let one = NonZeroU32::MIN;
        let rate = NonZeroU32::new(self.rate).unwrap_or(one);
        let burst = NonZeroU32::new(self.burst).unwrap_or(one);
        match self.period {
            Period::Second => governor::Quota::per_second(rate),
            Period::Minute => governor::Quota::per_minute(rate),
        }
        .allow_burst(burst)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.period {
            Period::Second => "s",
            Period::Minute => "min",
        };
        write!(f, "{}/{per}, burst {}", self.rate, self.burst)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_second: Option<Raw<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_minute: Option<Raw<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    burst: Option<Raw<u32>>,
}

impl TryFrom<QuotaSpec> for Quota {
    type Error = ConfigError;

    fn try_from(spec: QuotaSpec) -> Result<Self, ConfigError> {
        const RATES: &str = "[1, 1000000000]";
        let quota = match (spec.per_second, spec.per_minute) {
            (Some(rate), None) => Quota::per_second(rate.value("per_second", RATES)?),
            (None, Some(rate)) => Quota::per_minute(rate.value("per_minute", RATES)?),
            (second, minute) => {
                let given = match (second.is_some(), minute.is_some()) {
                    (true, true) => "both",
                    _ => "neither",
                };
                return Err(ConfigError::expected(
                    "per_second",
                    given,
                    "exactly one of `per_second` and `per_minute`",
                ));
            }
        };
        match spec.burst {
            Some(burst) => quota.with_burst(burst.value("burst", RATES)?),
            None => quota,
        }
        .check()
    }
}

impl From<Quota> for QuotaSpec {
    fn from(quota: Quota) -> Self {
        let (per_second, per_minute) = match quota.period {
            Period::Second => (Some(quota.rate), None),
            Period::Minute => (None, Some(quota.rate)),
        };
        Self {
            per_second: per_second.map(Raw::from),
            per_minute: per_minute.map(Raw::from),
            burst: Some(quota.burst.into()),
        }
    }
}

/// A validated rate limit configuration.
///
/// Deserializes from, for example,
/// `{ "name": "api", "quota": { "per_second": 100, "burst": 10 }, "max_wait": "250ms" }`,
/// and checks the values as it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RateLimitSpec", into = "RateLimitSpec")]
pub struct RateLimitConfig {
    pub(crate) name: Name,
    pub(crate) quota: Quota,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) max_keys: usize,
    pub(crate) sweep_interval: Duration,
    pub(crate) fleet: Option<FleetConfig>,
}

impl RateLimitConfig {
    /// A builder for a configuration.
    pub fn builder() -> RateLimitConfigBuilder {
        RateLimitConfigBuilder::new()
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

    /// How many calls are admitted.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// How long a call may wait for a permit; `None` rejects at once.
    pub fn max_wait(&self) -> Option<Duration> {
        self.max_wait
    }

    /// How many keys a keyed limit tracks at most.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// How often, at most, a keyed limit sweeps out idle keys.
    pub fn sweep_interval(&self) -> Duration {
        self.sweep_interval
    }

    /// How the quota is shared with the other replicas of a fleet, if it is.
    pub fn fleet(&self) -> Option<&FleetConfig> {
        self.fleet.as_ref()
    }

    /// The same configuration with `quota`, checked as a builder checks it.
    pub(crate) fn with_quota(mut self, quota: Quota) -> Result<Self, ConfigError> {
        let quota = quota.validate()?;
        if let Some(fleet) = &self.fleet
            && fleet.lease > quota.burst
        {
            return Err(ConfigError::new(
                "fleet.lease",
                fleet.lease,
                format!("[1, {}] (at most the quota's burst)", quota.burst),
            ));
        }
        self.quota = quota;
        Ok(self)
    }
}

/// Builds a [`RateLimitConfig`], or straight a layer when made by `RateLimitLayer::builder`.
#[derive(Debug)]
pub struct RateLimitConfigBuilder<T = RateLimitConfig> {
    spec: RateLimitSpec,
    _output: PhantomData<fn() -> T>,
}

impl<T: From<RateLimitConfig>> RateLimitConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            spec: RateLimitSpec {
                name: default_name(),
                quota: None,
                max_wait: None,
                max_keys: default_max_keys(),
                sweep_interval: default_sweep_interval(),
                fleet: None,
            },
            _output: PhantomData,
        }
    }

    /// The name of the layer instance (default `"rate_limit"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into().into();
        self
    }

    /// How many calls are admitted, such as `Quota::per_second(100).with_burst(10)`. Required.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.spec.quota = Some(quota);
        self
    }

    /// Waits up to `max_wait`, in `(0s, 1h]`, for a permit instead of rejecting at once; a call
    /// that would wait longer is rejected at once.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.spec.max_wait = Some(max_wait.into());
        self
    }

    /// How many keys a keyed limit tracks at most, in `[1, 100_000_000]` (default 10 000).
    ///
    /// A new key that finds the map full takes the place of the sampled key whose bucket is
    /// oldest; see [`Keyed`](crate::Keyed).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.spec.max_keys = max_keys.into();
        self
    }

    /// How often, at most, a keyed limit sweeps out idle keys when new keys arrive, in
    /// `[1ms, 1h]` (default 1 s).
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.spec.sweep_interval = interval.into();
        self
    }

    /// Shares the quota with the other replicas of a fleet through a store, as `fleet` says;
    /// the layer then needs the store, given by `with_store` (or `with_redis`, feature
    /// `redis`).
    pub fn fleet(mut self, fleet: FleetConfig) -> Self {
        self.spec.fleet = Some(fleet);
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<T, ConfigError> {
        RateLimitConfig::try_from(self.spec).map(T::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSpec {
    #[serde(default = "default_name")]
    name: Raw<String>,
    #[serde(default, deserialize_with = "quota_within")]
    quota: Option<Quota>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_wait: Option<Raw<Duration>>,
    #[serde(default = "default_max_keys")]
    max_keys: Raw<usize>,
    #[serde(default = "default_sweep_interval")]
    sweep_interval: Raw<Duration>,
    #[serde(
        default,
        deserialize_with = "fleet_within",
        skip_serializing_if = "Option::is_none"
    )]
    fleet: Option<FleetConfig>,
}

fn fleet_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FleetConfig>, D::Error> {
    config::within("fleet", d).map(Some)
}

fn quota_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Quota>, D::Error> {
    config::within("quota", d)
}

fn default_name() -> Raw<String> {
    String::from(DEFAULT_NAME).into()
}

fn default_max_keys() -> Raw<usize> {
    DEFAULT_MAX_KEYS.into()
}

fn default_sweep_interval() -> Raw<Duration> {
    DEFAULT_SWEEP_INTERVAL.into()
}

impl TryFrom<RateLimitSpec> for RateLimitConfig {
    type Error = ConfigError;

    fn try_from(spec: RateLimitSpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        let quota = spec.quota.ok_or_else(|| {
            ConfigError::expected(
                "quota",
                "nothing",
                "a quota such as { per_second = 100, burst = 10 }",
            )
        })?;
        let quota = quota.validate()?;
        if let Some(fleet) = &spec.fleet
            && fleet.lease > quota.burst
        {
            return Err(ConfigError::new(
                "fleet.lease",
                fleet.lease,
                format!("[1, {}] (at most the quota's burst)", quota.burst),
            ));
        }
        Ok(Self {
            name,
            quota,
            max_wait: spec
                .max_wait
                .map(|wait| config::positive_duration("max_wait", wait, MAX_WAIT))
                .transpose()?,
            max_keys: config::count_in("max_keys", spec.max_keys, 1..=MAX_KEYS)?,
            sweep_interval: config::duration_in(
                "sweep_interval",
                spec.sweep_interval,
                SWEEP_INTERVALS,
            )?,
            fleet: spec.fleet,
        })
    }
}

impl From<RateLimitConfig> for RateLimitSpec {
    fn from(config: RateLimitConfig) -> Self {
        Self {
            name: config.name.into(),
            quota: Some(config.quota),
            max_wait: config.max_wait.map(Raw::from),
            max_keys: config.max_keys.into(),
            sweep_interval: config.sweep_interval.into(),
            fleet: config.fleet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(quota: Quota) -> Result<RateLimitConfig, ConfigError> {
        RateLimitConfig::builder().quota(quota).build()
    }

    #[test]
    fn builder_checks_rate_and_burst() {
        assert_eq!(
            build(Quota::per_second(0)).unwrap_err().field(),
            "quota.per_second"
        );
        assert_eq!(
            build(Quota::per_minute(MAX_RATE + 1)).unwrap_err().field(),
            "quota.per_minute"
        );
        let burst = build(Quota::per_second(10).with_burst(0)).unwrap_err();
        assert_eq!(
            burst.to_string(),
            "invalid `quota.burst`: 0 is outside the allowed range [1, 315360000]"
        );
        let slow = build(Quota::per_minute(1).with_burst(600_000)).unwrap_err();
        assert_eq!(
            slow.allowed(),
            "[1, 525600]",
            "a burst must refill within a year"
        );
        assert!(
            build(Quota::per_second(MAX_RATE)).is_ok(),
            "the default burst is always valid"
        );
        assert!(build(Quota::per_minute(1).with_burst(525_600)).is_ok());
        let config = build(Quota::per_second(100)).unwrap();
        assert_eq!(
            config.quota().burst(),
            100,
            "the burst defaults to the rate"
        );
        assert_eq!(config.name(), "rate_limit");
        assert_eq!(config.max_wait(), None);
    }

    #[test]
    fn builder_checks_the_other_fields() {
        let base = || RateLimitConfig::builder().quota(Quota::per_second(1));
        let field = |r: Result<RateLimitConfig, ConfigError>| r.unwrap_err().field().to_owned();
        assert_eq!(field(RateLimitConfig::builder().build()), "quota");
        assert_eq!(field(base().name("").build()), "name");
        assert_eq!(field(base().max_wait(Duration::ZERO).build()), "max_wait");
        assert_eq!(
            field(base().max_wait(Duration::from_secs(3601)).build()),
            "max_wait"
        );
        assert_eq!(field(base().max_keys(0).build()), "max_keys");
        assert_eq!(
            field(base().sweep_interval(Duration::ZERO).build()),
            "sweep_interval"
        );
    }

    #[test]
    fn replenish_interval_spreads_the_rate_evenly() {
        assert_eq!(
            Quota::per_second(100).replenish_interval(),
            Duration::from_millis(10)
        );
        assert_eq!(
            Quota::per_minute(30).replenish_interval(),
            Duration::from_secs(2)
        );
        let gov = Quota::per_second(100).with_burst(10).to_governor();
        assert_eq!(gov.replenish_interval(), Duration::from_millis(10));
        assert_eq!(gov.burst_size().get(), 10);
    }

    #[test]
    fn deserializes_quotas_and_human_durations() {
        let config: RateLimitConfig = serde_json::from_str(
            r#"{"name": "api", "quota": {"per_second": 100, "burst": 10}, "max_wait": "250ms"}"#,
        )
        .unwrap();
        assert_eq!(config.name(), "api");
        assert_eq!(config.quota(), Quota::per_second(100).with_burst(10));
        assert_eq!(config.max_wait(), Some(Duration::from_millis(250)));
        assert_eq!(config.max_keys(), DEFAULT_MAX_KEYS);
        let minute: RateLimitConfig =
            serde_json::from_str(r#"{"quota": {"per_minute": 600}, "max_keys": 50}"#).unwrap();
        assert_eq!(minute.quota(), Quota::per_minute(600));
        assert_eq!(minute.max_keys(), 50);
    }

    #[test]
    fn deserializing_validates_and_rejects_unknown_fields() {
        let cases = [
            (
                r#"{"quota": {"per_second": 0}}"#,
                "invalid `quota.per_second`",
            ),
            (
                r#"{"quota": {"per_second": 1, "per_minute": 1}}"#,
                "invalid `quota.per_second`",
            ),
            (r#"{"quota": {}}"#, "invalid `quota.per_second`"),
            (r#"{"quota": {"per_hour": 1}}"#, "unknown field"),
            (
                r#"{"quota": {"per_second": 1}, "max_wait": "0s"}"#,
                "invalid `max_wait`",
            ),
            (
                r#"{"quota": {"per_second": 1}, "maxwait": "1s"}"#,
                "unknown field",
            ),
            (r#"{}"#, "invalid `quota`"),
        ];
        for (json, expected) in cases {
            let err = serde_json::from_str::<RateLimitConfig>(json).unwrap_err();
            assert!(err.to_string().contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn errors_name_the_field_and_its_range_in_toml_and_json() {
        seawall_core::testing::config::assert_errors::<RateLimitConfig>(&[
            (
                "quota = { per_second = -1 }",
                "invalid `quota.per_second`: -1 is outside the allowed range [1, 1000000000]",
            ),
            (
                "quota = { per_minute = 2.5 }",
                "invalid `quota.per_minute`: 2.5 is outside the allowed range [1, 1000000000]",
            ),
            (
                "quota = { per_second = 10, burst = -1 }",
                "invalid `quota.burst`: -1 is outside the allowed range [1, 1000000000]",
            ),
            (
                "quota = { per_second = 10, burst = 0 }",
                "invalid `quota.burst`: 0 is outside the allowed range [1, 315360000]",
            ),
            (
                "quota = { per_second = 10, per_minute = 10 }",
                "invalid `quota.per_second`: both, expected exactly one of",
            ),
            (
                "quota = { per_second = 1 }\nmax_wait = \"-5s\"",
                r#"invalid `max_wait`: "-5s" is outside the allowed range (0s, 3600s]"#,
            ),
            (
                "quota = { per_second = 1 }\nmax_keys = -1",
                "invalid `max_keys`: -1 is outside the allowed range [1, 100000000]",
            ),
            (
                "quota = { per_second = 1 }\nsweep_interval = \"-5s\"",
                r#"invalid `sweep_interval`: "-5s" is outside the allowed range [1ms, 3600s]"#,
            ),
            (
                "quota = { per_second = 1 }\nname = \"\"",
                r#"invalid `name`: "", expected a non-empty name"#,
            ),
            (
                "name = \"api\"",
                "invalid `quota`: nothing, expected a quota",
            ),
        ]);
        let standalone = serde_json::from_str::<Quota>(r#"{"per_second": 0}"#).unwrap_err();
        assert!(
            standalone.to_string().starts_with("invalid `per_second`"),
            "{standalone}"
        );
    }

    #[test]
    fn round_trips_through_serde() {
        let config = RateLimitConfig::builder()
            .name("api")
            .quota(Quota::per_minute(600).with_burst(20))
            .max_wait(Duration::from_millis(1500))
            .max_keys(100)
            .build()
            .unwrap();
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            json,
            r#"{"name":"api","quota":{"per_minute":600,"burst":20},"max_wait":"1s 500ms","max_keys":100,"sweep_interval":"1s"}"#
        );
        assert_eq!(
            serde_json::from_str::<RateLimitConfig>(&json).unwrap(),
            config
        );
    }
}
