use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use seawall_core::Name;
use seawall_core::config::{self, ConfigError, MAX_DURATION, Raw};
use serde::de::{self, Deserializer, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const DEFAULT_NAME: &str = "outlier";
const MAX_COUNT: u32 = 1_000_000;
const INTERVALS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// A validated outlier detection configuration.
///
/// Deserializes from, for example, `{ "name": "backends", "consecutive_failures": 5,
/// "success_rate": { "stdev_factor": 1.9 }, "base_ejection_time": "30s",
/// "max_ejected_share": 0.5 }`, and checks the values as it does; `"off"` turns a detector
/// off (`consecutive_failures = "off"`, `success_rate = "off"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "OutlierSpec", into = "OutlierSpec")]
pub struct OutlierConfig {
    pub(crate) name: Name,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) success_rate: Option<SuccessRateConfig>,
    pub(crate) interval: Duration,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejected_share: f64,
    pub(crate) endpoint_labels: bool,
}

impl OutlierConfig {
    /// A builder for a configuration.
    pub fn builder() -> OutlierConfigBuilder {
        OutlierConfigBuilder::new()
    }

    /// The name of the endpoint set, the `name` label of its metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Failures in a row that eject an endpoint, when that detector is on.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }

    /// The success-rate detector's settings, when it is on.
    pub fn success_rate(&self) -> Option<&SuccessRateConfig> {
        self.success_rate.as_ref()
    }

    /// How often success rates are compared, and the step by which an ejection multiplier
    /// decays.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long a first ejection lasts.
    pub fn base_ejection_time(&self) -> Duration {
        self.base_ejection_time
    }

    /// The longest an ejection lasts, however often the endpoint was ejected.
    pub fn max_ejection_time(&self) -> Duration {
        self.max_ejection_time
    }

    /// The largest share of the endpoints ejected at once.
    pub fn max_ejected_share(&self) -> f64 {
        self.max_ejected_share
    }

    /// Whether each endpoint gets a metric of its own, labelled with its key.
    pub fn endpoint_labels(&self) -> bool {
        self.endpoint_labels
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierSpec::default()
            .try_into()
            .expect("the defaults are valid")
    }
}

/// Settings of the success-rate detector (Envoy's): at each interval, the endpoints with at
/// least `request_volume` calls in it are compared, when there are at least `minimum_hosts` of
/// them; one whose success rate is below the mean by more than `stdev_factor` standard
/// deviations is ejected. Checked when the layer is built.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SuccessRateSpec", into = "SuccessRateSpec")]
pub struct SuccessRateConfig {
    pub(crate) stdev_factor: f64,
    pub(crate) minimum_hosts: u32,
    pub(crate) request_volume: u32,
}

impl Default for SuccessRateConfig {
    fn default() -> Self {
        Self {
            stdev_factor: 1.9,
            minimum_hosts: 5,
            request_volume: 100,
        }
    }
}

impl SuccessRateConfig {
    /// Envoy's defaults: 1.9 standard deviations, 5 endpoints with 100 calls each.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many standard deviations below the mean an endpoint's success rate must fall to
    /// be ejected, in `(0, 100]`.
    #[must_use]
    pub fn stdev_factor(mut self, factor: f64) -> Self {
        self.stdev_factor = factor;
        self
    }

    /// How many endpoints with enough calls an interval needs for a comparison, in
    /// `[1, 1000000]`.
    #[must_use]
    pub fn minimum_hosts(mut self, hosts: u32) -> Self {
        self.minimum_hosts = hosts;
        self
    }

    /// How many calls in an interval an endpoint needs to be compared, in `[1, 1000000]`.
    #[must_use]
    pub fn request_volume(mut self, calls: u32) -> Self {
        self.request_volume = calls;
        self
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !(self.stdev_factor > 0.0 && self.stdev_factor <= 100.0) {
            return Err(ConfigError::new(
                "stdev_factor",
                self.stdev_factor,
                "(0, 100]",
            ));
        }
        config::count_in("minimum_hosts", self.minimum_hosts, 1..=MAX_COUNT)?;
        config::count_in("request_volume", self.request_volume, 1..=MAX_COUNT)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SuccessRateSpec {
    stdev_factor: Raw<f64>,
    minimum_hosts: Raw<u32>,
    request_volume: Raw<u32>,
}

impl Default for SuccessRateSpec {
    fn default() -> Self {
        SuccessRateConfig::default().into()
    }
}

impl From<SuccessRateConfig> for SuccessRateSpec {
    fn from(c: SuccessRateConfig) -> Self {
        Self {
            stdev_factor: c.stdev_factor.into(),
            minimum_hosts: c.minimum_hosts.into(),
            request_volume: c.request_volume.into(),
        }
    }
}

impl TryFrom<SuccessRateSpec> for SuccessRateConfig {
    type Error = ConfigError;

    fn try_from(spec: SuccessRateSpec) -> Result<Self, ConfigError> {
        let config = Self {
            stdev_factor: spec.stdev_factor.value("stdev_factor", "(0, 100]")?,
            minimum_hosts: spec.minimum_hosts.value("minimum_hosts", "[1, 1000000]")?,
            request_volume: spec
                .request_volume
                .value("request_volume", "[1, 1000000]")?,
        };
        config.check()?;
        Ok(config)
    }
}

/// Builds an [`OutlierConfig`], or straight a layer when made by `OutlierLayer::builder`.
pub struct OutlierConfigBuilder<T = OutlierConfig> {
    spec: OutlierSpec,
    _output: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for OutlierConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutlierConfigBuilder")
            .field("spec", &self.spec)
            .finish()
    }
}

impl<T: From<OutlierConfig>> OutlierConfigBuilder<T> {
    pub(crate) fn new() -> Self {
        Self {
            spec: OutlierSpec::default(),
            _output: PhantomData,
        }
    }

    /// The name of the endpoint set (default `"outlier"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into().into();
        self
    }

    /// Ejects an endpoint after `failures` failures in a row, in `[1, 1000000]` (default 5, as
    /// Envoy).
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.spec.consecutive_failures = Some(failures.into());
        self
    }

    /// Turns the consecutive-failure detector off.
    pub fn no_consecutive_failures(mut self) -> Self {
        self.spec.consecutive_failures = None;
        self
    }

    /// The success-rate detector's settings (default [`SuccessRateConfig::default`]).
    pub fn success_rate(mut self, success_rate: SuccessRateConfig) -> Self {
        self.spec.success_rate = Some(success_rate);
        self
    }

    /// Turns the success-rate detector off.
    pub fn no_success_rate(mut self) -> Self {
        self.spec.success_rate = None;
        self
    }

    /// How often success rates are compared, and the step by which a repeatedly ejected
    /// endpoint's ejection time shrinks back while it stays in, in `[100ms, 1h]` (default
    /// 10 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.spec.interval = interval.into();
        self
    }

    /// How long a first ejection lasts, in `(0s, 1 day]` (default 30 s); the `n`-th ejection in
    /// a row lasts `n` times this.
    pub fn base_ejection_time(mut self, time: Duration) -> Self {
        self.spec.base_ejection_time = time.into();
        self
    }

    /// The longest an ejection lasts, at least the base ejection time (default 300 s).
    pub fn max_ejection_time(mut self, time: Duration) -> Self {
        self.spec.max_ejection_time = time.into();
        self
    }

    /// The largest share of the endpoints ejected at once, in `[0, 1]` (default 0.5); at
    /// least one endpoint always stays in.
    pub fn max_ejected_share(mut self, share: f64) -> Self {
        self.spec.max_ejected_share = share.into();
        self
    }

    /// Whether each endpoint gets a metric of its own, labelled with its key as `Debug` writes
    /// it (default `false`: a set of many endpoints would make many series).
    pub fn endpoint_labels(mut self, on: bool) -> Self {
        self.spec.endpoint_labels = on.into();
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<T, ConfigError> {
        OutlierConfig::try_from(self.spec).map(T::from)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutlierSpec {
    #[serde(default = "default_name")]
    name: Raw<String>,
    #[serde(
        default = "default_consecutive",
        deserialize_with = "count_or_off",
        serialize_with = "write_or_off"
    )]
    consecutive_failures: Option<Raw<u32>>,
    #[serde(
        default = "default_success_rate",
        deserialize_with = "success_rate_or_off",
        serialize_with = "write_or_off"
    )]
    success_rate: Option<SuccessRateConfig>,
    #[serde(default = "default_interval")]
    interval: Raw<Duration>,
    #[serde(default = "default_base")]
    base_ejection_time: Raw<Duration>,
    #[serde(default = "default_max")]
    max_ejection_time: Raw<Duration>,
    #[serde(default = "default_share")]
    max_ejected_share: Raw<f64>,
    #[serde(default = "no")]
    endpoint_labels: Raw<bool>,
}

impl Default for OutlierSpec {
    fn default() -> Self {
        Self {
            name: default_name(),
            consecutive_failures: default_consecutive(),
            success_rate: default_success_rate(),
            interval: default_interval(),
            base_ejection_time: default_base(),
            max_ejection_time: default_max(),
            max_ejected_share: default_share(),
            endpoint_labels: no(),
        }
    }
}

fn default_name() -> Raw<String> {
    String::from(DEFAULT_NAME).into()
}

fn default_consecutive() -> Option<Raw<u32>> {
    Some(5.into())
}

fn default_success_rate() -> Option<SuccessRateConfig> {
    Some(SuccessRateConfig::default())
}

fn default_interval() -> Raw<Duration> {
    Duration::from_secs(10).into()
}

fn default_base() -> Raw<Duration> {
    Duration::from_secs(30).into()
}

fn default_max() -> Raw<Duration> {
    Duration::from_secs(300).into()
}

fn default_share() -> Raw<f64> {
    0.5.into()
}

fn no() -> Raw<bool> {
    false.into()
}

fn write_or_off<T: Serialize, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => value.serialize(s),
        None => s.serialize_str("off"),
    }
}

/// Reads a count, or `"off"` (or `null`) for none.
fn count_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Raw<u32>>, D::Error> {
    struct CountOrOff;

    impl<'de> Visitor<'de> for CountOrOff {
        type Value = Option<Raw<u32>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a count or "off""#)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v {
                "off" => Ok(None),
                other => Raw::deserialize(other.into_deserializer()).map(Some),
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Raw::deserialize(v.into_deserializer()).map(Some)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Raw::deserialize(v.into_deserializer()).map(Some)
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Raw::deserialize(v.into_deserializer()).map(Some)
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Raw::deserialize(v.into_deserializer()).map(Some)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    d.deserialize_any(CountOrOff)
}

const SUCCESS_RATE: &str = r#""off" or a table such as { stdev_factor = 1.9 }"#;

/// Reads a success-rate table, or `"off"` (or `null`) for none.
fn success_rate_or_off<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SuccessRateConfig>, D::Error> {
    struct SuccessRateOrOff;

    impl<'de> Visitor<'de> for SuccessRateOrOff {
        type Value = Option<SuccessRateConfig>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(SUCCESS_RATE)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v {
                "off" => Ok(None),
                other => Err(E::custom(ConfigError::expected(
                    "success_rate",
                    format_args!("{other:?}"),
                    SUCCESS_RATE,
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
            config::within("success_rate", de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    d.deserialize_any(SuccessRateOrOff)
}

impl TryFrom<OutlierSpec> for OutlierConfig {
    type Error = ConfigError;

    fn try_from(spec: OutlierSpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        let consecutive_failures = spec
            .consecutive_failures
            .map(|n| config::count_in("consecutive_failures", n, 1..=MAX_COUNT))
            .transpose()?;
        if let Some(success_rate) = &spec.success_rate {
            success_rate.check().map_err(|e| e.within("success_rate"))?;
        }
        let interval = config::duration_in("interval", spec.interval, INTERVALS)?;
        let base_ejection_time =
            config::positive_duration("base_ejection_time", spec.base_ejection_time, MAX_DURATION)?;
        let max_ejection_time = config::duration_in(
            "max_ejection_time",
            spec.max_ejection_time,
            base_ejection_time..=MAX_DURATION,
        )?;
        let max_ejected_share = config::ratio_or_zero("max_ejected_share", spec.max_ejected_share)?;
        let endpoint_labels = spec
            .endpoint_labels
            .expected("endpoint_labels", "true or false")?;
        Ok(Self {
            name,
            consecutive_failures,
            success_rate: spec.success_rate,
            interval,
            base_ejection_time,
            max_ejection_time,
            max_ejected_share,
            endpoint_labels,
        })
    }
}

impl From<OutlierConfig> for OutlierSpec {
    fn from(c: OutlierConfig) -> Self {
        Self {
            name: c.name.into(),
            consecutive_failures: c.consecutive_failures.map(Raw::from),
            success_rate: c.success_rate,
            interval: c.interval.into(),
            base_ejection_time: c.base_ejection_time.into(),
            max_ejection_time: c.max_ejection_time.into(),
            max_ejected_share: c.max_ejected_share.into(),
            endpoint_labels: c.endpoint_labels.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_envoys_with_half_the_endpoints_at_most() {
        let config = OutlierConfig::default();
        assert_eq!(config.name(), "outlier");
        assert_eq!(config.consecutive_failures(), Some(5));
        assert_eq!(config.success_rate(), Some(&SuccessRateConfig::new()));
        assert_eq!(config.interval(), Duration::from_secs(10));
        assert_eq!(config.base_ejection_time(), Duration::from_secs(30));
        assert_eq!(config.max_ejection_time(), Duration::from_secs(300));
        assert_eq!(config.max_ejected_share(), 0.5);
        assert!(!config.endpoint_labels());
    }

    #[test]
    fn the_builder_checks_every_value() {
        let field = |b: OutlierConfigBuilder| b.build().unwrap_err().field().to_owned();
        assert_eq!(
            field(OutlierConfig::builder().consecutive_failures(0)),
            "consecutive_failures"
        );
        assert_eq!(
            field(OutlierConfig::builder().interval(Duration::from_millis(1))),
            "interval"
        );
        assert_eq!(
            field(OutlierConfig::builder().base_ejection_time(Duration::ZERO)),
            "base_ejection_time"
        );
        assert_eq!(
            field(
                OutlierConfig::builder()
                    .base_ejection_time(Duration::from_secs(60))
                    .max_ejection_time(Duration::from_secs(30))
            ),
            "max_ejection_time"
        );
        assert_eq!(
            field(OutlierConfig::builder().max_ejected_share(1.5)),
            "max_ejected_share"
        );
        assert_eq!(
            field(
                OutlierConfig::builder().success_rate(SuccessRateConfig::new().stdev_factor(0.0))
            ),
            "success_rate.stdev_factor"
        );
        let off = OutlierConfig::builder()
            .no_consecutive_failures()
            .no_success_rate()
            .build()
            .unwrap();
        assert_eq!(
            (off.consecutive_failures(), off.success_rate()),
            (None, None)
        );
    }

    #[test]
    fn deserializes_detectors_on_and_off() {
        let config: OutlierConfig = toml::from_str(
            "name = \"backends\"\nconsecutive_failures = \"off\"\nsuccess_rate = { stdev_factor = 1.0, request_volume = 20 }\nmax_ejected_share = 0.3\nendpoint_labels = true",
        )
        .unwrap();
        assert_eq!(config.consecutive_failures(), None);
        assert_eq!(
            config.success_rate(),
            Some(
                &SuccessRateConfig::new()
                    .stdev_factor(1.0)
                    .request_volume(20)
            )
        );
        assert_eq!(config.max_ejected_share(), 0.3);
        assert!(config.endpoint_labels());
        let off: OutlierConfig =
            serde_json::from_str(r#"{"success_rate": "off", "consecutive_failures": 3}"#).unwrap();
        assert_eq!(
            (off.consecutive_failures(), off.success_rate()),
            (Some(3), None)
        );
    }

    #[test]
    fn errors_name_the_field_and_its_range_in_toml_and_json() {
        seawall_core::testing::config::assert_errors::<OutlierConfig>(&[
            (
                "consecutive_failures = -1",
                "invalid `consecutive_failures`: -1 is outside the allowed range [1, 1000000]",
            ),
            (
                "consecutive_failures = \"never\"",
                r#"invalid `consecutive_failures`: "never" is outside the allowed range [1, 1000000]"#,
            ),
            (
                "success_rate = { stdev_factor = -1 }",
                "invalid `success_rate.stdev_factor`: -1 is outside the allowed range (0, 100]",
            ),
            (
                "success_rate = { minimum_hosts = 0 }",
                "invalid `success_rate.minimum_hosts`: 0 is outside the allowed range [1, 1000000]",
            ),
            (
                "success_rate = \"sometimes\"",
                r#"invalid `success_rate`: "sometimes", expected "off" or a table"#,
            ),
            (
                "interval = \"-5s\"",
                r#"invalid `interval`: "-5s" is outside the allowed range [100ms, 3600s]"#,
            ),
            (
                "base_ejection_time = \"0s\"",
                "invalid `base_ejection_time`: 0ns is outside the allowed range (0s, 86400s]",
            ),
            (
                "base_ejection_time = \"90000s\"",
                "invalid `base_ejection_time`: 90000s is outside the allowed range (0s, 86400s]",
            ),
            (
                "base_ejection_time = \"60s\"\nmax_ejection_time = \"90000s\"",
                "invalid `max_ejection_time`: 90000s is outside the allowed range [60s, 86400s]",
            ),
            (
                "base_ejection_time = \"60s\"\nmax_ejection_time = \"30s\"",
                "invalid `max_ejection_time`: 30s is outside the allowed range [60s, 86400s]",
            ),
            (
                "max_ejected_share = -0.5",
                "invalid `max_ejected_share`: -0.5 is outside the allowed range [0, 1]",
            ),
            (
                "endpoint_labels = 3",
                "invalid `endpoint_labels`: 3, expected true or false",
            ),
            (
                "name = \"\"",
                r#"invalid `name`: "", expected a non-empty name"#,
            ),
        ]);
    }

    #[test]
    fn unknown_fields_are_refused_and_configs_round_trip() {
        for json in [
            r#"{"consecutive_failure": 3}"#,
            r#"{"success_rate": {"factor": 2}}"#,
        ] {
            let err = serde_json::from_str::<OutlierConfig>(json).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{json}: {err}");
        }
        for config in [
            OutlierConfig::default(),
            OutlierConfig::builder()
                .name("db")
                .no_consecutive_failures()
                .success_rate(SuccessRateConfig::new().minimum_hosts(3))
                .max_ejected_share(0.2)
                .build()
                .unwrap(),
            OutlierConfig::builder().no_success_rate().build().unwrap(),
        ] {
            let json = serde_json::to_string(&config).unwrap();
            assert_eq!(
                serde_json::from_str::<OutlierConfig>(&json).unwrap(),
                config,
                "{json}"
            );
        }
    }
}
