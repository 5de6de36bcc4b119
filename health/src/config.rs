use std::sync::Arc;
use std::time::Duration;

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
    /// Bad observations in a row before a component is at least degraded (default 2), before
    /// it takes the severity they agree on (default 4), and good ones before it is healthy
    /// again (default 3).
    pub fn new(
        degrade_after: u32,
        unhealthy_after: u32,
        recover_after: u32,
    ) -> Result<Self, ConfigError> {
        Self::try_from(HysteresisSpec {
            degrade_after: degrade_after.into(),
            unhealthy_after: unhealthy_after.into(),
            recover_after: recover_after.into(),
        })
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
    pub(crate) name: Arc<str>,
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
        let name = config::name(spec.name)?;
        Ok(Self {
            name: name.into(),
            critical: spec.critical.expected("critical", "true or false")?,
            hysteresis: spec.hysteresis,
        })
    }
}

impl From<ComponentConfig> for ComponentSpec {
    fn from(c: ComponentConfig) -> Self {
        Self {
            name: c.name.to_string().into(),
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
    /// A probe of `component` every `interval`, each check given `timeout`.
    pub fn new(
        component: ComponentConfig,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        Self::try_from(ProbeSpec {
            component,
            interval: interval.into(),
            timeout: timeout.into(),
        })
    }

    /// The component the probe reports into.
    pub fn component(&self) -> &ComponentConfig {
        &self.component
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
/// A call is bad when it fails or, with `slow_call`, takes longer than that. With at least
/// `min_calls` in the window, a bad ratio at or above `degraded_rate` is a degraded
/// observation, at or above `unhealthy_rate` an unhealthy one; anything else (fewer calls
/// included) is a good one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RateSpec", into = "RateSpec")]
pub struct RateConfig {
    pub(crate) component: ComponentConfig,
    pub(crate) window_secs: u32,
    pub(crate) min_calls: u32,
    pub(crate) degraded_rate: f64,
    pub(crate) unhealthy_rate: f64,
    pub(crate) slow_call: Option<Duration>,
}

impl RateConfig {
    /// Defaults for `component`: a 10 s window, 20 calls at least, degraded at 10 % bad
    /// calls, unhealthy at 50 %, no latency threshold.
    pub fn new(component: ComponentConfig) -> Self {
        Self {
            component,
            window_secs: 10,
            min_calls: 20,
            degraded_rate: 0.1,
            unhealthy_rate: 0.5,
            slow_call: None,
        }
    }

    /// The window, in whole seconds within `[1, 60]`.
    pub fn window(mut self, window: Duration) -> Result<Self, ConfigError> {
        let secs = config::duration_in(
            "window",
            window,
            Duration::from_secs(1)..=Duration::from_secs(60),
        )?;
        self.window_secs = secs.as_secs() as u32;
        Ok(self)
    }

    /// The fewest calls in the window for the rates to count.
    pub fn min_calls(mut self, min_calls: u32) -> Result<Self, ConfigError> {
        self.min_calls = config::count_in("min_calls", min_calls, 1..=1_000_000)?;
        Ok(self)
    }

    /// The bad-call ratios for a degraded and an unhealthy observation.
    pub fn rates(mut self, degraded: f64, unhealthy: f64) -> Result<Self, ConfigError> {
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

    /// Counts calls longer than `threshold` as bad.
    pub fn slow_call(mut self, threshold: Duration) -> Result<Self, ConfigError> {
        self.slow_call = Some(config::positive_duration(
            "slow_call",
            threshold,
            Duration::from_secs(3600),
        )?);
        Ok(self)
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
    min_calls: Raw<u32>,
    #[serde(default = "tenth")]
    degraded_rate: Raw<f64>,
    #[serde(default = "half")]
    unhealthy_rate: Raw<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slow_call: Option<Raw<Duration>>,
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
        let min_calls = config::count_in("min_calls", spec.min_calls, 1..=1_000_000)?;
        let degraded = spec.degraded_rate.value("degraded_rate", "(0, 1]")?;
        let unhealthy = spec
            .unhealthy_rate
            .value("unhealthy_rate", "[degraded_rate, 1]")?;
        let config = Self::new(spec.component)
            .window(window)?
            .min_calls(min_calls)?
            .rates(degraded, unhealthy)?;
        match spec.slow_call {
            Some(threshold) => Ok(Self {
                slow_call: Some(config::positive_duration(
                    "slow_call",
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
            min_calls: c.min_calls.into(),
            degraded_rate: c.degraded_rate.into(),
            unhealthy_rate: c.unhealthy_rate.into(),
            slow_call: c.slow_call.map(Raw::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_orders_its_thresholds() {
        assert!(Hysteresis::new(3, 2, 1).is_err());
        assert_eq!(
            Hysteresis::new(0, 2, 1).unwrap_err().field(),
            "degrade_after"
        );
        assert!(Hysteresis::new(1, 1, 1).is_ok());
    }

    #[test]
    fn probe_timeout_fits_in_its_interval() {
        let db = ComponentConfig::new("db").unwrap();
        let err = ProbeConfig::new(db.clone(), Duration::from_secs(1), Duration::from_secs(2))
            .unwrap_err();
        assert_eq!(err.field(), "timeout");
        assert!(ProbeConfig::new(db, Duration::from_secs(5), Duration::from_secs(1)).is_ok());
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
                   min_calls = -1"#,
                "invalid `min_calls`: -1 is outside the allowed range [1, 1000000]",
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
                   slow_call = "-5s""#,
                r#"invalid `slow_call`: "-5s" is outside the allowed range (0s, 3600s]"#,
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
            r#"{"component": {"name": "api", "critical": false}, "window": "30s", "slow_call": "250ms"}"#,
        )
        .unwrap();
        assert_eq!(rate.window_secs, 30);
        assert_eq!(rate.min_calls, 20);
        assert_eq!(rate.slow_call, Some(Duration::from_millis(250)));
        assert!(!rate.component.is_critical());
        let bad = serde_json::from_str::<RateConfig>(
            r#"{"component": {"name": "api"}, "degraded_rate": 0.6, "unhealthy_rate": 0.5}"#,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("unhealthy_rate"), "{bad}");
    }
}
