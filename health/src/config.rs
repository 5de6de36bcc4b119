use std::time::Duration;

use seawall_core::Name;
use seawall_core::config::{self, ConfigError, Raw};
use serde::{Deserialize, Deserializer, Serialize};

/// How many observations in a row move a component, so that a single blip does not flap it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HysteresisSpec", into = "HysteresisSpec")]
pub struct Hysteresis {
    pub(crate) degrade_after: u32,
    pub(crate) unhealthy_after: u32,
    pub(crate) recover_after: u32,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Self {
            degrade_after: 2,
            unhealthy_after: 4,
            recover_after: 3,
        }
    }
}

impl Hysteresis {
    /// A builder starting from the defaults, whose `build` checks the counts.
    pub fn builder() -> HysteresisBuilder {
        HysteresisBuilder(HysteresisSpec::default())
    }

    /// No hysteresis: every observation counts at once.
    pub fn none() -> Self {
        Self {
            degrade_after: 1,
            unhealthy_after: 1,
            recover_after: 1,
        }
    }
}

/// Builds a [`Hysteresis`].
#[derive(Debug, Clone)]
pub struct HysteresisBuilder(HysteresisSpec);

impl HysteresisBuilder {
    /// Bad observations in a row before a component is at least degraded (default 2).
    pub fn degrade_after(mut self, n: u32) -> Self {
        self.0.degrade_after = n.into();
        self
    }

    /// Bad observations in a row before it takes the severity they agree on (default 4; at
    /// least `degrade_after`).
    pub fn unhealthy_after(mut self, n: u32) -> Self {
        self.0.unhealthy_after = n.into();
        self
    }

    /// Good observations in a row before it is healthy again (default 3).
    pub fn recover_after(mut self, n: u32) -> Self {
        self.0.recover_after = n.into();
        self
    }

    /// The hysteresis, or the first count out of range.
    pub fn build(self) -> Result<Hysteresis, ConfigError> {
        Hysteresis::try_from(self.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HysteresisSpec {
    degrade_after: Raw<u32>,
    unhealthy_after: Raw<u32>,
    recover_after: Raw<u32>,
}

impl Default for HysteresisSpec {
    fn default() -> Self {
        Hysteresis::default().into()
    }
}

impl TryFrom<HysteresisSpec> for Hysteresis {
    type Error = ConfigError;

    fn try_from(spec: HysteresisSpec) -> Result<Self, ConfigError> {
        let degrade_after = config::count_in("degrade_after", spec.degrade_after, 1..=1000)?;
        let unhealthy_after = config::count_in(
            "unhealthy_after",
            spec.unhealthy_after,
            degrade_after..=1000,
        )?;
        let recover_after = config::count_in("recover_after", spec.recover_after, 1..=1000)?;
        Ok(Self {
            degrade_after,
            unhealthy_after,
            recover_after,
        })
    }
}

impl From<Hysteresis> for HysteresisSpec {
    fn from(h: Hysteresis) -> Self {
        Self {
            degrade_after: h.degrade_after.into(),
            unhealthy_after: h.unhealthy_after.into(),
            recover_after: h.recover_after.into(),
        }
    }
}

/// What every component has: a name, whether it is critical, and its hysteresis.
///
/// A critical component that is unhealthy makes the service unhealthy; a non-critical one can
/// make it degraded at worst.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ComponentSpec", into = "ComponentSpec")]
pub struct ComponentConfig {
    pub(crate) name: Name,
    pub(crate) critical: bool,
    pub(crate) hysteresis: Hysteresis,
}

impl ComponentConfig {
    /// A critical component called `name`, with the default hysteresis.
    pub fn new(name: impl Into<String>) -> Result<Self, ConfigError> {
        Self::try_from(ComponentSpec {
            name: name.into().into(),
            critical: yes(),
            hysteresis: Hysteresis::default(),
        })
    }

    /// Makes the component non-critical: it can degrade the service, never make it unhealthy.
    #[must_use]
    pub fn non_critical(mut self) -> Self {
        self.critical = false;
        self
    }

    /// Sets the hysteresis.
    #[must_use]
    pub fn hysteresis(mut self, hysteresis: Hysteresis) -> Self {
        self.hysteresis = hysteresis;
        self
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is critical.
    pub fn is_critical(&self) -> bool {
        self.critical
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentSpec {
    name: Raw<String>,
    #[serde(default = "yes")]
    critical: Raw<bool>,
    #[serde(default, deserialize_with = "hysteresis_within")]
    hysteresis: Hysteresis,
}

fn yes() -> Raw<bool> {
    true.into()
}

fn hysteresis_within<'de, D: Deserializer<'de>>(d: D) -> Result<Hysteresis, D::Error> {
    config::within("hysteresis", d)
}

fn component_within<'de, D: Deserializer<'de>>(d: D) -> Result<ComponentConfig, D::Error> {
    config::within("component", d)
}

impl TryFrom<ComponentSpec> for ComponentConfig {
    type Error = ConfigError;

    fn try_from(spec: ComponentSpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        Ok(Self {
            name,
            critical: spec.critical.expected("critical", "true or false")?,
            hysteresis: spec.hysteresis,
        })
    }
}

impl From<ComponentConfig> for ComponentSpec {
    fn from(c: ComponentConfig) -> Self {
        Self {
            name: c.name.into(),
            critical: c.critical.into(),
            hysteresis: c.hysteresis,
        }
    }
}

/// An active probe: a check run every `interval`, failing if it takes longer than `timeout`.
///
/// Deserializes from, for example,
/// `{ "component": { "name": "db" }, "interval": "5s", "timeout": "1s" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ProbeSpec", into = "ProbeSpec")]
pub struct ProbeConfig {
    pub(crate) component: ComponentConfig,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

impl ProbeConfig {
    /// A builder for a probe of `component`; its `interval` and `timeout` have no default.
    pub fn builder(component: ComponentConfig) -> ProbeConfigBuilder {
        ProbeConfigBuilder {
            component,
            interval: None,
            timeout: None,
        }
    }

    /// The component the probe reports into.
    pub fn component(&self) -> &ComponentConfig {
        &self.component
    }
}

/// Builds a [`ProbeConfig`].
#[derive(Debug, Clone)]
pub struct ProbeConfigBuilder {
    component: ComponentConfig,
    interval: Option<Duration>,
    timeout: Option<Duration>,
}

impl ProbeConfigBuilder {
    /// How often the check runs (at most an hour).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// How long each check may take (at most `interval`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The probe's configuration, or the first setting missing or out of range.
    pub fn build(self) -> Result<ProbeConfig, ConfigError> {
        let unset = |field| ConfigError::new(field, "unset", "a positive duration");
        ProbeConfig::try_from(ProbeSpec {
            component: self.component,
            interval: self.interval.ok_or_else(|| unset("interval"))?.into(),
            timeout: self.timeout.ok_or_else(|| unset("timeout"))?.into(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeSpec {
    #[serde(deserialize_with = "component_within")]
    component: ComponentConfig,
    interval: Raw<Duration>,
    timeout: Raw<Duration>,
}

impl TryFrom<ProbeSpec> for ProbeConfig {
    type Error = ConfigError;

    fn try_from(spec: ProbeSpec) -> Result<Self, ConfigError> {
        let interval =
            config::positive_duration("interval", spec.interval, Duration::from_secs(3600))?;
        let timeout = config::positive_duration("timeout", spec.timeout, interval)?;
        Ok(Self {
            component: spec.component,
            interval,
            timeout,
        })
    }
}

impl From<ProbeConfig> for ProbeSpec {
    fn from(c: ProbeConfig) -> Self {
        Self {
            component: c.component,
            interval: c.interval.into(),
            timeout: c.timeout.into(),
        }
    }
}

/// Error rate and latency of the calls through a [`HealthLayer`](crate::HealthLayer), judged
/// once a second over a window.
///
/// A call is bad when it fails or, with `slow_call_duration`, takes longer than that. With at least
/// `minimum_calls` in the window, a bad ratio at or above `degraded_rate` is a degraded
/// observation, at or above `unhealthy_rate` an unhealthy one; anything else (fewer calls
/// included) is a good one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RateSpec", into = "RateSpec")]
pub struct RateConfig {
    pub(crate) component: ComponentConfig,
    pub(crate) window_secs: u32,
    pub(crate) minimum_calls: u32,
    pub(crate) degraded_rate: f64,
    pub(crate) unhealthy_rate: f64,
    pub(crate) slow_call_duration: Option<Duration>,
}

impl RateConfig {
    /// A builder for `component`, starting from the defaults: a 10 s window, 20 calls at
    /// least, degraded at 10 % bad calls, unhealthy at 50 %, no latency threshold.
    pub fn builder(component: ComponentConfig) -> RateConfigBuilder {
        RateConfigBuilder(Self::new(component).into())
    }

    fn new(component: ComponentConfig) -> Self {
        Self {
            component,
            window_secs: 10,
            minimum_calls: 20,
            degraded_rate: 0.1,
            unhealthy_rate: 0.5,
            slow_call_duration: None,
        }
    }

    fn window(mut self, window: Duration) -> Result<Self, ConfigError> {
        let secs = config::duration_in(
            "window",
            window,
            Duration::from_secs(1)..=Duration::from_secs(60),
        )?;
        self.window_secs = secs.as_secs() as u32;
        Ok(self)
    }

    fn minimum_calls(mut self, minimum_calls: u32) -> Result<Self, ConfigError> {
        self.minimum_calls = config::count_in("minimum_calls", minimum_calls, 1..=1_000_000)?;
        Ok(self)
    }

    fn rates(mut self, degraded: f64, unhealthy: f64) -> Result<Self, ConfigError> {
        self.degraded_rate = config::ratio("degraded_rate", degraded)?;
        if !(degraded..=1.0).contains(&unhealthy) {
            return Err(ConfigError::new(
                "unhealthy_rate",
                unhealthy,
                format!("[{degraded}, 1]"),
            ));
        }
        self.unhealthy_rate = unhealthy;
        Ok(self)
    }
}

/// Builds a [`RateConfig`]; `build` checks every setting.
#[derive(Debug, Clone)]
pub struct RateConfigBuilder(RateSpec);

impl RateConfigBuilder {
    /// The window, in whole seconds within `[1, 60]` (default 10 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.0.window = window.into();
        self
    }

    /// The fewest calls in the window for the rates to count (default 20).
    pub fn minimum_calls(mut self, minimum_calls: u32) -> Self {
        self.0.minimum_calls = minimum_calls.into();
        self
    }

    /// The bad-call ratios for a degraded and an unhealthy observation (default 0.1 and 0.5).
    pub fn rates(mut self, degraded: f64, unhealthy: f64) -> Self {
        self.0.degraded_rate = degraded.into();
        self.0.unhealthy_rate = unhealthy.into();
        self
    }

    /// Counts calls longer than `threshold` as bad (at most an hour).
    pub fn slow_call_duration(mut self, threshold: Duration) -> Self {
        self.0.slow_call_duration = Some(threshold.into());
        self
    }

    /// The configuration, or the first setting out of range.
    pub fn build(self) -> Result<RateConfig, ConfigError> {
        RateConfig::try_from(self.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateSpec {
    #[serde(deserialize_with = "component_within")]
    component: ComponentConfig,
    #[serde(default = "ten_seconds")]
    window: Raw<Duration>,
    #[serde(default = "twenty")]
    minimum_calls: Raw<u32>,
    #[serde(default = "tenth")]
    degraded_rate: Raw<f64>,
    #[serde(default = "half")]
    unhealthy_rate: Raw<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slow_call_duration: Option<Raw<Duration>>,
}

fn ten_seconds() -> Raw<Duration> {
    Duration::from_secs(10).into()
}
fn twenty() -> Raw<u32> {
    20.into()
}
fn tenth() -> Raw<f64> {
    0.1.into()
}
fn half() -> Raw<f64> {
    0.5.into()
}

impl TryFrom<RateSpec> for RateConfig {
    type Error = ConfigError;

    fn try_from(spec: RateSpec) -> Result<Self, ConfigError> {
        let window = config::duration_in(
            "window",
            spec.window,
            Duration::from_secs(1)..=Duration::from_secs(60),
        )?;
        let minimum_calls = config::count_in("minimum_calls", spec.minimum_calls, 1..=1_000_000)?;
        let degraded = spec.degraded_rate.value("degraded_rate", "(0, 1]")?;
        let unhealthy = spec
            .unhealthy_rate
            .value("unhealthy_rate", "[degraded_rate, 1]")?;
        let config = Self::new(spec.component)
            .window(window)?
            .minimum_calls(minimum_calls)?
            .rates(degraded, unhealthy)?;
        match spec.slow_call_duration {
            Some(threshold) => Ok(Self {
                slow_call_duration: Some(config::positive_duration(
                    "slow_call_duration",
                    threshold,
                    Duration::from_secs(3600),
                )?),
                ..config
            }),
            None => Ok(config),
        }
    }
}

impl From<RateConfig> for RateSpec {
    fn from(c: RateConfig) -> Self {
        Self {
            component: c.component,
            window: Duration::from_secs(u64::from(c.window_secs)).into(),
            minimum_calls: c.minimum_calls.into(),
            degraded_rate: c.degraded_rate.into(),
            unhealthy_rate: c.unhealthy_rate.into(),
            slow_call_duration: c.slow_call_duration.map(Raw::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_orders_its_thresholds() {
        let counts = |d, u, r| {
            Hysteresis::builder()
                .degrade_after(d)
                .unhealthy_after(u)
                .recover_after(r)
                .build()
        };
        assert!(counts(3, 2, 1).is_err());
        assert_eq!(counts(0, 2, 1).unwrap_err().field(), "degrade_after");
        assert!(counts(1, 1, 1).is_ok());
    }

    #[test]
    fn probe_timeout_fits_in_its_interval() {
        let db = ComponentConfig::new("db").unwrap();
        let probe = |interval, timeout| {
            ProbeConfig::builder(db.clone())
                .interval(Duration::from_secs(interval))
                .timeout(Duration::from_secs(timeout))
                .build()
        };
        assert_eq!(probe(1, 2).unwrap_err().field(), "timeout");
        assert!(probe(5, 1).is_ok());
    }

    #[test]
    fn a_probe_needs_its_interval_and_timeout() {
        let db = || ComponentConfig::new("db").unwrap();
        let only_timeout = ProbeConfig::builder(db()).timeout(Duration::from_secs(1));
        assert_eq!(only_timeout.build().unwrap_err().field(), "interval");
        let only_interval = ProbeConfig::builder(db()).interval(Duration::from_secs(1));
        assert_eq!(only_interval.build().unwrap_err().field(), "timeout");
    }

    #[test]
    fn the_rate_builder_checks_what_the_setters_took() {
        let api = || ComponentConfig::new("api").unwrap();
        assert!(RateConfig::builder(api()).build().is_ok());
        let err = RateConfig::builder(api())
            .rates(0.5, 0.2)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "unhealthy_rate");
        let err = RateConfig::builder(api())
            .window(Duration::from_secs(61))
            .build();
        assert_eq!(err.unwrap_err().field(), "window");
    }

    #[test]
    fn errors_name_the_field_and_its_range_in_toml_and_json() {
        use seawall_core::testing::config::assert_errors;

        assert_errors::<RateConfig>(&[
            (
                r#"component = { name = "" }"#,
                r#"invalid `component.name`: "", expected a non-empty name"#,
            ),
            (
                r#"component = { name = "api", critical = "no" }"#,
                r#"invalid `component.critical`: "no", expected true or false"#,
            ),
            (
                r#"component = { name = "api", hysteresis = { degrade_after = -1 } }"#,
                "invalid `component.hysteresis.degrade_after`: -1 is outside the allowed range [1, 1000]",
            ),
            (
                r#"component = { name = "api", hysteresis = { degrade_after = 3, unhealthy_after = 2 } }"#,
                "invalid `component.hysteresis.unhealthy_after`: 2 is outside the allowed range [3, 1000]",
            ),
            (
                r#"component = { name = "api" }
                   window = "-5s""#,
                r#"invalid `window`: "-5s" is outside the allowed range [1s, 60s]"#,
            ),
            (
                r#"component = { name = "api" }
                   minimum_calls = -1"#,
                "invalid `minimum_calls`: -1 is outside the allowed range [1, 1000000]",
            ),
            (
                r#"component = { name = "api" }
                   degraded_rate = -0.1"#,
                "invalid `degraded_rate`: -0.1 is outside the allowed range (0, 1]",
            ),
            (
                r#"component = { name = "api" }
                   unhealthy_rate = "most""#,
                r#"invalid `unhealthy_rate`: "most" is outside the allowed range [degraded_rate, 1]"#,
            ),
            (
                r#"component = { name = "api" }
                   slow_call_duration = "-5s""#,
                r#"invalid `slow_call_duration`: "-5s" is outside the allowed range (0s, 3600s]"#,
            ),
        ]);
        assert_errors::<ProbeConfig>(&[
            (
                r#"component = { name = "db" }
                   interval = "-5s"
                   timeout = "1s""#,
                r#"invalid `interval`: "-5s" is outside the allowed range (0s, 3600s]"#,
            ),
            (
                r#"component = { name = "db" }
                   interval = "5s"
                   timeout = "10s""#,
                "invalid `timeout`: 10s is outside the allowed range (0s, 5s]",
            ),
        ]);
    }

    #[test]
    fn rates_read_from_configuration_with_defaults() {
        let rate: RateConfig = serde_json::from_str(
            r#"{"component": {"name": "api", "critical": false}, "window": "30s", "slow_call_duration": "250ms"}"#,
        )
        .unwrap();
        assert_eq!(rate.window_secs, 30);
        assert_eq!(rate.minimum_calls, 20);
        assert_eq!(rate.slow_call_duration, Some(Duration::from_millis(250)));
        assert!(!rate.component.is_critical());
        let bad = serde_json::from_str::<RateConfig>(
            r#"{"component": {"name": "api"}, "degraded_rate": 0.6, "unhealthy_rate": 0.5}"#,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("unhealthy_rate"), "{bad}");
    }
}
