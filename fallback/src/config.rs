use seawall_core::Name;
use seawall_core::config::{ConfigError, Raw};
use serde::{Deserialize, Serialize};

use crate::trigger::When;

const DEFAULT_NAME: &str = "fallback";

/// A validated fallback configuration: its name and when it fires. What answers is code, given
/// to the builder.
///
/// Deserializes from, for example,
/// `{ "name": "catalog", "on": { "rejections": ["circuit_open", "bulkhead_full"] } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FallbackSpec", into = "FallbackSpec")]
pub struct FallbackConfig {
    pub(crate) name: Name,
    pub(crate) on: When,
}

impl FallbackConfig {
    /// Checks and builds a configuration.
    pub fn new(name: impl Into<String>, on: When) -> Result<Self, ConfigError> {
        Self::try_from(FallbackSpec {
            name: name.into().into(),
            on,
        })
    }

    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the fallback fires.
    pub fn on(&self) -> &When {
        &self.on
    }
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self::try_from(FallbackSpec {
            name: default_name(),
            on: When::AnyError,
        })
        .expect("the defaults are valid")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FallbackSpec {
    #[serde(default = "default_name")]
    name: Raw<String>,
    #[serde(default = "any_error")]
    on: When,
}

fn default_name() -> Raw<String> {
    String::from(DEFAULT_NAME).into()
}

fn any_error() -> When {
    When::AnyError
}

impl TryFrom<FallbackSpec> for FallbackConfig {
    type Error = ConfigError;

    fn try_from(spec: FallbackSpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        if matches!(&spec.on, When::Rejections(kinds) if kinds.is_empty()) {
            return Err(ConfigError::expected(
                "on.rejections",
                "[]",
                "at least one rejection kind",
            ));
        }
        Ok(Self { name, on: spec.on })
    }
}

impl From<FallbackConfig> for FallbackSpec {
    fn from(config: FallbackConfig) -> Self {
        Self {
            name: config.name.into(),
            on: config.on,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seawall_core::RejectionKind;

    #[test]
    fn reads_name_and_trigger() {
        let config: FallbackConfig =
            serde_json::from_str(r#"{"name": "catalog", "on": {"rejections": ["circuit_open"]}}"#)
                .unwrap();
        assert_eq!(config.name(), "catalog");
        assert_eq!(
            config.on(),
            &When::Rejections(vec![RejectionKind::CircuitOpen])
        );
        let defaults: FallbackConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(defaults, FallbackConfig::default());
    }

    #[test]
    fn errors_name_the_field_in_toml_and_json() {
        seawall_core::testing::config::assert_errors::<FallbackConfig>(&[
            (
                r#"name = """#,
                r#"invalid `name`: "", expected a non-empty name"#,
            ),
            ("name = -1", "invalid `name`: -1, expected a non-empty name"),
            (
                "on = { rejections = [] }",
                "invalid `on.rejections`: [], expected at least one rejection kind",
            ),
        ]);
    }

    #[test]
    fn rejects_an_empty_kind_list_and_unknown_fields() {
        let empty =
            serde_json::from_str::<FallbackConfig>(r#"{"on": {"rejections": []}}"#).unwrap_err();
        assert!(empty.to_string().contains("on.rejections"), "{empty}");
        let typo = serde_json::from_str::<FallbackConfig>(r#"{"when": "any_error"}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field"), "{typo}");
        assert_eq!(
            FallbackConfig::new("", When::AnyError).unwrap_err().field(),
            "name"
        );
    }
}
