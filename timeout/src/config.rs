use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use seawall_core::config::{self, ConfigError, Raw};
use serde::{Deserialize, Serialize};

const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_NAME: &str = "timeout";

/// A validated timeout configuration.
///
/// Deserializes from, for example, `{ "name": "payments", "timeout": "250ms" }`, and checks
/// the values as it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TimeoutSpec", into = "TimeoutSpec")]
pub struct TimeoutConfig {
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Duration,
}

impl TimeoutConfig {
    /// A builder for a configuration.
    pub fn builder() -> TimeoutConfigBuilder {
        TimeoutConfigBuilder::new()
    }

    /// The same configuration for a layer instance called `name` (as a ready-made stack names
    /// its layers after itself). An empty name is a `ConfigError`.
    pub fn named(mut self, name: impl Into<String>) -> Result<Self, ConfigError> {
        self.name = seawall_core::config::layer_name(name)?;
        Ok(self)
    }

    /// The name of the layer instance, the `name` label of its metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long a call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
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

    /// How long a call may take, in `(0s, 1 day]`. Required.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout = Some(timeout.into());
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
    #[serde(default)]
    timeout: Option<Raw<Duration>>,
}

fn default_name() -> Raw<String> {
    String::from(DEFAULT_NAME).into()
}

impl TryFrom<TimeoutSpec> for TimeoutConfig {
    type Error = ConfigError;

    fn try_from(spec: TimeoutSpec) -> Result<Self, ConfigError> {
        let timeout = spec.timeout.ok_or_else(|| {
            ConfigError::expected("timeout", "nothing", "a duration in (0s, 86400s]")
        })?;
        let name = config::name(spec.name)?;
        Ok(Self {
            name: name.into(),
            timeout: config::positive_duration("timeout", timeout, MAX_TIMEOUT)?,
        })
    }
}

impl From<TimeoutConfig> for TimeoutSpec {
    fn from(config: TimeoutConfig) -> Self {
        Self {
            name: config.name.to_string().into(),
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
