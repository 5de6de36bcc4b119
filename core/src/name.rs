//! A layer instance's name, checked once where it is configured.
//!
//! A name becomes the `name` label of every metric the layer exports and a field of its
//! tracing events and rejections, so it must be safe in both: non-empty, at most
//! [`Name::MAX_LEN`] bytes (a label per layer instance, not per call, and short enough to read),
//! and only ASCII letters, digits and `_ - . : /`, which Prometheus label values, log lines in
//! any format and a `Rejected`'s `Display` take without quoting or escaping. Builders take a
//! plain `&str` and give a [`ConfigError`] naming the field at `build()`.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{self, ConfigError, Raw};

/// A checked layer instance name: non-empty, at most [`Name::MAX_LEN`] bytes, only ASCII
/// letters, digits and `_ - . : /`, so that it is safe as a metric label value and in a log line.
///
/// ```
/// use seawall_core::Name;
///
/// assert_eq!(Name::new("orders.db").unwrap().as_str(), "orders.db");
/// assert!(Name::new("").is_err());
/// assert!(Name::new("orders db").is_err());
/// assert!(Name::new("a\nb").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

impl Name {
    /// The longest name, in bytes.
    pub const MAX_LEN: usize = config::MAX_NAME_LEN;

    /// `name`, if it is a valid name; a [`ConfigError`] for the field `name` otherwise.
    pub fn new(name: impl Into<Arc<str>>) -> Result<Self, ConfigError> {
        let name = name.into();
        Self::check(&name)?;
        Ok(Self(name))
    }

    /// The name as a configuration wrote it: a [`ConfigError`] for the field `name` when it is
    /// not a string or not a valid name.
    pub fn from_raw(name: impl Into<Raw<String>>) -> Result<Self, ConfigError> {
        Self::new(name.into().expected("name", "a non-empty name")?)
    }

    /// Checks that `name` is a valid name.
    pub fn check(name: &str) -> Result<(), ConfigError> {
        config::check_name(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as the shared string metric handles and events hold.
    pub fn into_arc(self) -> Arc<str> {
        self.0
    }
}

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl TryFrom<&str> for Name {
    type Error = ConfigError;

    fn try_from(name: &str) -> Result<Self, ConfigError> {
        Self::new(name)
    }
}

impl TryFrom<String> for Name {
    type Error = ConfigError;

    fn try_from(name: String) -> Result<Self, ConfigError> {
        Self::new(name)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.0.to_string()
    }
}

impl From<Name> for Raw<String> {
    fn from(name: Name) -> Self {
        String::from(name).into()
    }
}

impl From<Name> for Arc<str> {
    fn from(name: Name) -> Self {
        name.0
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::new(name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_safe_as_labels_and_in_logs_pass() {
        for name in [
            "db",
            "orders.db",
            "client.attempt",
            "tenant_7",
            "a-b:c/d",
            "A9",
        ] {
            assert_eq!(Name::new(name).unwrap().as_str(), name);
        }
        assert!(Name::new("x".repeat(Name::MAX_LEN)).is_ok());
    }

    #[test]
    fn empty_long_and_unsafe_names_are_config_errors_on_the_name_field() {
        let err = Name::new("").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid `name`: "", expected a non-empty name"#
        );
        for name in [
            "orders db",
            "a\nb",
            "a\"b",
            "a{b}",
            "caf\u{e9}",
            "a=b",
            "a,b",
        ] {
            let err = Name::new(name).unwrap_err();
            assert_eq!(err.field(), "name", "{name:?}");
            assert!(err.to_string().contains("at most 128 ASCII"), "{err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        let long = "x".repeat(Name::MAX_LEN + 1);
        let err = Name::new(long).unwrap_err();
        assert!(err.value().ends_with("… (129 bytes)"), "{err}");
    }

    #[test]
    fn a_name_as_written_is_checked_on_the_name_field() {
        assert_eq!(Name::from_raw("db".to_owned()).unwrap().as_str(), "db");
        let not_a_string = serde_json::from_str::<Raw<String>>("7").unwrap();
        assert_eq!(
            Name::from_raw(not_a_string).unwrap_err().to_string(),
            "invalid `name`: 7, expected a non-empty name"
        );
        let err = Name::from_raw("a b".to_owned()).unwrap_err();
        assert_eq!(err.field(), "name");
    }

    #[test]
    fn a_name_reads_back_from_serde_checked() {
        let name: Name = serde_json::from_str(r#""db""#).unwrap();
        assert_eq!(name.as_str(), "db");
        assert!(serde_json::from_str::<Name>(r#""a b""#).is_err());
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""db""#);
    }
}
