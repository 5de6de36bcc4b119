//! Configuration errors and the checks every layer's builder shares.

use std::borrow::Cow;
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

/// Serde support for durations written as `"250ms"`, `"2s"` or `"1m 30s"`.
///
/// Use it on a config field with `#[serde(with = "seawall_core::config::duration")]`.
pub use humantime_serde as duration;

/// A configuration value outside what the layer accepts.
///
/// It names the field, the value given and the range allowed:
///
/// ```
/// use seawall_core::config::ConfigError;
///
/// let err = ConfigError::new("timeout", "0ns", "(0s, 1day]");
/// assert_eq!(err.to_string(), "invalid `timeout`: 0ns is outside the allowed range (0s, 1day]");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: Cow<'static, str>,
    value: String,
    allowed: Cow<'static, str>,
}

impl ConfigError {
    /// An error for `field`, which was given `value` but allows `allowed`.
    pub fn new(
        field: impl Into<Cow<'static, str>>,
        value: impl fmt::Display,
        allowed: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    /// The field that holds the bad value.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The value given, as text.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the field allows.
    pub fn allowed(&self) -> &str {
        &self.allowed
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid `{}`: {} is outside the allowed range {}",
            self.field, self.value, self.allowed
        )
    }
}

impl std::error::Error for ConfigError {}

/// Checks that a layer instance's name (the `name` label of its metrics) is not empty.
pub fn check_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new("name", "\"\"", "a non-empty name"));
    }
    Ok(())
}

/// A checked layer instance name.
pub fn layer_name(name: impl Into<String>) -> Result<Arc<str>, ConfigError> {
    let name = name.into();
    check_name(&name)?;
    Ok(name.into())
}

/// Checks that `value` is above zero and at most `max`.
pub fn positive_duration(
    field: &'static str,
    value: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if value.is_zero() || value > max {
        return Err(ConfigError::new(
            field,
            format_args!("{value:?}"),
            format!("(0s, {max:?}]"),
        ));
    }
    Ok(value)
}

/// Checks that `value` lies within `range`.
pub fn duration_in(
    field: &'static str,
    value: Duration,
    range: RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    if !range.contains(&value) {
        return Err(ConfigError::new(
            field,
            format_args!("{value:?}"),
            format!("[{:?}, {:?}]", range.start(), range.end()),
        ));
    }
    Ok(value)
}

/// Checks that a ratio lies in `(0, 1]`.
pub fn ratio(field: &'static str, value: f64) -> Result<f64, ConfigError> {
    if !(value > 0.0 && value <= 1.0) {
        return Err(ConfigError::new(field, value, "(0, 1]"));
    }
    Ok(value)
}

/// Checks that a ratio lies in `[0, 1]`.
pub fn ratio_or_zero(field: &'static str, value: f64) -> Result<f64, ConfigError> {
    if !(0.0..=1.0).contains(&value) {
        return Err(ConfigError::new(field, value, "[0, 1]"));
    }
    Ok(value)
}

/// Checks that a count lies within `range`.
pub fn count_in<T>(
    field: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: PartialOrd + fmt::Display,
{
    if !range.contains(&value) {
        let allowed = format!("[{}, {}]", range.start(), range.end());
        return Err(ConfigError::new(field, value, allowed));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_duration_rejects_zero_and_too_long() {
        let max = Duration::from_secs(10);
        assert!(positive_duration("t", Duration::ZERO, max).is_err());
        assert!(positive_duration("t", Duration::from_secs(11), max).is_err());
        assert_eq!(positive_duration("t", max, max), Ok(max));
        let err = positive_duration("timeout", Duration::ZERO, max).unwrap_err();
        assert_eq!(err.field(), "timeout");
        assert_eq!(err.value(), "0ns");
        assert_eq!(err.allowed(), "(0s, 10s]");
    }

    #[test]
    fn ratios_check_their_bounds() {
        assert!(ratio("r", 0.0).is_err());
        assert!(ratio("r", f64::NAN).is_err());
        assert!(ratio("r", 1.5).is_err());
        assert_eq!(ratio("r", 1.0), Ok(1.0));
        assert_eq!(ratio_or_zero("r", 0.0), Ok(0.0));
        assert!(ratio_or_zero("r", -0.1).is_err());
    }

    #[test]
    fn names_must_not_be_empty() {
        assert_eq!(check_name("").unwrap_err().field(), "name");
        assert_eq!(layer_name("db").unwrap().as_ref(), "db");
    }

    #[test]
    fn counts_check_their_range() {
        assert!(count_in("n", 0u32, 1..=10).is_err());
        assert_eq!(count_in("n", 3u32, 1..=10), Ok(3));
        assert_eq!(
            count_in("n", 11u32, 1..=10).unwrap_err().to_string(),
            "invalid `n`: 11 is outside the allowed range [1, 10]"
        );
    }

    #[test]
    fn duration_in_names_both_ends() {
        let err = duration_in(
            "d",
            Duration::from_secs(5),
            Duration::ZERO..=Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(err.allowed(), "[0ns, 1s]");
    }
}
