//! Configuration errors and the checks every layer's builder shares.
//!
//! Every configuration error names the field by its full path and says what the field
//! allows: `invalid `retry.max_attempts`: -1 is outside the allowed range [1, 100]`. Three
//! pieces make that hold when a configuration is read with serde, through
//! `toml::from_str` or `serde_json::from_str` directly:
//!
//! - The fields of a configuration as written are [`Raw`] values: a number, duration, flag or
//!   name that is not of the field's type (`-1` for a count, `"-5s"` for a duration) is kept as
//!   written, and the check that follows reports it with the field's range instead of serde's
//!   message, which names neither.
//! - A configuration nested in another is read through [`within`], which names the path to
//!   it while it is read; a [`ConfigError`] made meanwhile carries that path
//!   (`retry.budget.ratio`).
//! - A configuration checks what spans fields (`attempt_timeout` at most `total_timeout`) with
//!   the same errors.
//!
//! Why not `serde_path_to_error`: it reports the path only to a caller who deserializes through
//! it, not to one who calls `toml::from_str` on a seawall type, and its message is still
//! serde's ("expected u32"), without the field's range.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

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
    /// Where the field's name within its own configuration starts, after the path to that
    /// configuration.
    local: usize,
    value: String,
    allowed: Cow<'static, str>,
    range: bool,
}

impl ConfigError {
    /// An error for `field`, which was given `value` but allows the range `allowed`.
    ///
    /// Made while a nested configuration is read through [`within`], the field is prefixed
    /// with the path to it.
    pub fn new(
        field: impl Into<Cow<'static, str>>,
        value: impl fmt::Display,
        allowed: impl Into<Cow<'static, str>>,
    ) -> Self {
        let field: Cow<'static, str> = field.into();
        let path = PATH.with_borrow(|path| path.join("."));
        let (field, local) = match path.is_empty() {
            true => (field, 0),
            false => (format!("{path}.{field}").into(), path.len() + 1),
        };
        Self {
            field,
            local,
            value: value.to_string(),
            allowed: allowed.into(),
            range: true,
        }
    }

    /// An error for `field`, which was given `value` but expects what `expected` describes
    /// (`a non-empty name`), where no range says it.
    pub fn expected(
        field: impl Into<Cow<'static, str>>,
        value: impl fmt::Display,
        expected: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            range: false,
            ..Self::new(field, value, expected)
        }
    }

    /// An error for `field` of a configuration given to a live layer's `reload`, which was
    /// given `given` where the layer keeps `live` until a restart: a window, a name its
    /// metrics go by, a kind of limit.
    ///
    /// ```
    /// use seawall_core::config::ConfigError;
    ///
    /// let err = ConfigError::needs_restart("window", "20 calls", "10 calls");
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid `window`: 20 calls, expected 10 calls, as the live layer has it (a restart \
    ///      changes it)"
    /// );
    /// ```
    pub fn needs_restart(
        field: impl Into<Cow<'static, str>>,
        given: impl fmt::Display,
        live: impl fmt::Display,
    ) -> Self {
        Self::expected(
            field,
            given,
            format!("{live}, as the live layer has it (a restart changes it)"),
        )
    }

    /// `Ok` when a reload's configuration names the live layer; otherwise the error that a
    /// layer is renamed by a restart, never by a reload (its metrics and spans carry the name).
    pub fn same_name(given: &str, live: &str) -> Result<(), Self> {
        if given == live {
            return Ok(());
        }
        Err(Self::needs_restart(
            "name",
            format_args!("{given:?}"),
            format_args!("{live:?}"),
        ))
    }

    /// The same error for a field of the configuration at `prefix` (`retry`), as an outer
    /// configuration reports an error of one it holds. The prefix goes after the path of the
    /// configuration being read when the error was made, if any.
    #[must_use]
    pub fn within(mut self, prefix: &str) -> Self {
        let (path, local) = self.field.split_at(self.local);
        self.field = format!("{path}{prefix}.{local}").into();
        self
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
        match self.range {
            true => write!(
                f,
                "invalid `{}`: {} is outside the allowed range {}",
                self.field, self.value, self.allowed
            ),
            false => write!(
                f,
                "invalid `{}`: {}, expected {}",
                self.field, self.value, self.allowed
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The longest duration a setting takes (a day), where a longer one can only be a mistake in
/// units.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The allowed range of a duration above zero and at most [`MAX_DURATION`], as an error says it.
pub const POSITIVE_DURATIONS: &str = "(0s, 86400s]";

/// The allowed range of a duration of at most [`MAX_DURATION`], as an error says it.
pub const DURATIONS: &str = "[0ns, 86400s]";

/// The longest layer instance name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

const NAME_ALLOWED: &str = "a name of at most 128 ASCII letters, digits and `_ - . : /`";

/// Checks that a layer instance's name (the `name` label of its metrics) is a valid
/// [`Name`](crate::Name): not empty, at most [`MAX_NAME_LEN`] bytes, and only ASCII letters,
/// digits and `_ - . : /`, safe as a label value and in a log line.
pub fn check_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::expected("name", "\"\"", "a non-empty name"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b);
    if name.len() > MAX_NAME_LEN || !name.bytes().all(allowed) {
        return Err(ConfigError::expected("name", shown(name), NAME_ALLOWED));
    }
    Ok(())
}

/// A name as an error shows it: escaped, and cut short when long, so the error itself is safe
/// in a log line.
fn shown(name: &str) -> String {
    const SHOWN: usize = 40;
    match name.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &name[..cut], name.len()),
        None => format!("{name:?}"),
    }
}

/// Checks that `value` is above zero and at most `max`.
pub fn positive_duration(
    field: &'static str,
    value: impl Into<Raw<Duration>>,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let allowed = || format!("(0s, {max:?}]");
    let value = value.into().value(field, allowed())?;
    if value.is_zero() || value > max {
        return Err(ConfigError::new(
            field,
            format_args!("{value:?}"),
            allowed(),
        ));
    }
    Ok(value)
}

/// Checks that `value` lies within `range`.
pub fn duration_in(
    field: &'static str,
    value: impl Into<Raw<Duration>>,
    range: RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    let allowed = || format!("[{:?}, {:?}]", range.start(), range.end());
    let value = value.into().value(field, allowed())?;
    if !range.contains(&value) {
        return Err(ConfigError::new(
            field,
            format_args!("{value:?}"),
            allowed(),
        ));
    }
    Ok(value)
}

/// Checks that a ratio lies in `(0, 1]`.
pub fn ratio(field: &'static str, value: impl Into<Raw<f64>>) -> Result<f64, ConfigError> {
    let value = value.into().value(field, "(0, 1]")?;
    if !(value > 0.0 && value <= 1.0) {
        return Err(ConfigError::new(field, value, "(0, 1]"));
    }
    Ok(value)
}

/// Checks that a ratio lies in `[0, 1]`.
pub fn ratio_or_zero(field: &'static str, value: impl Into<Raw<f64>>) -> Result<f64, ConfigError> {
    let value = value.into().value(field, "[0, 1]")?;
    if !(0.0..=1.0).contains(&value) {
        return Err(ConfigError::new(field, value, "[0, 1]"));
    }
    Ok(value)
}

/// Checks that a count lies within `range`.
pub fn count_in<T>(
    field: &'static str,
    value: impl Into<Raw<T>>,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: PartialOrd + fmt::Display,
{
    let allowed = || format!("[{}, {}]", range.start(), range.end());
    let value = value.into().value(field, allowed())?;
    if !range.contains(&value) {
        return Err(ConfigError::new(field, value, allowed()));
    }
    Ok(value)
}

// ===== the path of the configuration being read =====

thread_local! {
    static PATH: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

/// Reads the configuration at field `field` of the one being read, so that its errors name
/// their full path (`retry.max_attempts`, not `max_attempts`).
///
/// For `#[serde(deserialize_with = "...")]` on a field that holds a configuration:
///
/// ```
/// use seawall_core::backoff::Backoff;
/// use seawall_core::config;
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Client {
///     #[serde(deserialize_with = "backoff")]
///     backoff: Backoff,
/// }
///
/// fn backoff<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Backoff, D::Error> {
///     config::within("backoff", d)
/// }
///
/// let err = serde_json::from_str::<Client>(r#"{"backoff": {"kind": "constant", "base": "-5s"}}"#);
/// assert!(err.unwrap_err().to_string().starts_with(
///     "invalid `backoff.base`: \"-5s\" is outside the allowed range [0ns, 3600s]"
/// ));
/// ```
pub fn within<'de, T, D>(field: &'static str, deserializer: D) -> Result<T, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            PATH.with_borrow_mut(|path| path.pop());
        }
    }
    PATH.with_borrow_mut(|path| path.push(field));
    let _pop = Pop;
    T::deserialize(deserializer)
}

// ===== values as written =====

/// A configuration value as written: a value of the field's type, or the text of what was
/// written instead (`-1` for a count, `"-5s"` for a duration), for the check that follows to
/// report with the field's allowed range.
///
/// Reads any scalar; a string holding a number or a flag counts as one, as configuration from
/// the environment gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct Raw<T>(Result<T, String>);

impl<T> From<T> for Raw<T> {
    fn from(value: T) -> Self {
        Self(Ok(value))
    }
}

impl<T> Raw<T> {
    /// The value, or an error for `field` saying what was written and the range `field`
    /// allows.
    pub fn value(
        self,
        field: &'static str,
        allowed: impl Into<Cow<'static, str>>,
    ) -> Result<T, ConfigError> {
        self.0
            .map_err(|written| ConfigError::new(field, written, allowed))
    }

    /// The value, or an error for `field` saying what was written and what `field` expects
    /// (`true or false`).
    pub fn expected(
        self,
        field: &'static str,
        expected: impl Into<Cow<'static, str>>,
    ) -> Result<T, ConfigError> {
        self.0
            .map_err(|written| ConfigError::expected(field, written, expected))
    }
}

/// A type a [`Raw`] value can hold: one written as a single scalar.
pub trait Scalar: Sized {
    /// The value `written` stands for, if it is one.
    fn from_written(written: &Written) -> Option<Self>;

    /// Writes the value as it reads.
    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
}

/// A scalar as written in a configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i128),
    /// A number with a fraction.
    Float(f64),
    /// A string.
    Str(String),
    /// Something that is no scalar: a table, a list, nothing.
    Other(&'static str),
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(n) => write!(f, "{n}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

impl Written {
    fn int(&self) -> Option<i128> {
        match self {
            Self::Int(n) => Some(*n),
            Self::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

macro_rules! integer_scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn from_written(written: &Written) -> Option<Self> {
                written.int().and_then(|n| Self::try_from(n).ok())
            }

            fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.serialize(serializer)
            }
        }
    )*};
}

integer_scalar!(u8, u16, u32, u64, usize, i32, i64);

impl Scalar for f64 {
    fn from_written(written: &Written) -> Option<Self> {
        match written {
            Written::Float(x) => Some(*x),
            Written::Int(n) => Some(*n as f64),
            Written::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.serialize(serializer)
    }
}

impl Scalar for bool {
    fn from_written(written: &Written) -> Option<Self> {
        match written {
            Written::Bool(b) => Some(*b),
            Written::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.serialize(serializer)
    }
}

impl Scalar for String {
    fn from_written(written: &Written) -> Option<Self> {
        match written {
            Written::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.serialize(serializer)
    }
}

impl Scalar for Duration {
    fn from_written(written: &Written) -> Option<Self> {
        match written {
            Written::Str(s) => humantime_serde::re::humantime::parse_duration(s).ok(),
            _ => None,
        }
    }

    fn write<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(self, serializer)
    }
}

impl<'de, T: Scalar> Deserialize<'de> for Raw<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = deserializer.deserialize_any(WrittenVisitor)?;
        Ok(Self(
            T::from_written(&written).ok_or_else(|| written.to_string()),
        ))
    }
}

impl<T: Scalar> Serialize for Raw<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Ok(value) => value.write(serializer),
            Err(written) => serializer.serialize_str(written),
        }
    }
}

struct WrittenVisitor;

impl<'de> Visitor<'de> for WrittenVisitor {
    type Value = Written;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Written, E> {
        Ok(Written::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Written, E> {
        Ok(Written::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Written, E> {
        Ok(Written::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Written, E> {
        Ok(Written::Int(v.into()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Written, E> {
        Ok(i128::try_from(v).map_or(Written::Other("a number too large"), Written::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Written, E> {
        Ok(Written::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Written, E> {
        Ok(Written::Str(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Written, E> {
        Ok(Written::Other("nothing"))
    }

    fn visit_none<E: de::Error>(self) -> Result<Written, E> {
        Ok(Written::Other("nothing"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Written, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Written::Other("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Written, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Written::Other("a table"))
    }
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
    fn the_range_texts_say_max_duration() {
        assert_eq!(POSITIVE_DURATIONS, format!("(0s, {MAX_DURATION:?}]"));
        assert_eq!(
            DURATIONS,
            format!("[{:?}, {MAX_DURATION:?}]", Duration::ZERO)
        );
        let above = MAX_DURATION + Duration::from_nanos(1);
        let err = positive_duration("d", above, MAX_DURATION).unwrap_err();
        assert_eq!(err.allowed(), POSITIVE_DURATIONS);
        let err = duration_in("d", above, Duration::ZERO..=MAX_DURATION).unwrap_err();
        assert_eq!(err.allowed(), DURATIONS);
    }

    #[test]
    fn names_must_not_be_empty() {
        assert_eq!(check_name("").unwrap_err().field(), "name");
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
    fn errors_made_while_a_nested_configuration_is_read_carry_its_path() {
        #[derive(Debug, serde::Deserialize)]
        struct Inner {
            #[allow(dead_code)]
            count: Raw<u32>,
        }
        #[derive(Debug, serde::Deserialize)]
        struct Outer {
            #[serde(deserialize_with = "inner")]
            #[allow(dead_code)]
            inner: u32,
        }
        fn inner<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
            let raw: Inner = within("inner", d)?;
            count_in("count", raw.count, 1..=10).map_err(|e| de::Error::custom(e.within("limits")))
        }
        let err = serde_json::from_str::<Outer>(r#"{"inner": {"count": -1}}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid `limits.count`: -1 is outside the allowed range [1, 10]"),
            "{err}"
        );
        PATH.with_borrow_mut(|path| path.push("retry"));
        let made_within = ConfigError::new("min", 0, "[1, 10]").within("adaptive");
        PATH.with_borrow_mut(|path| path.pop());
        assert_eq!(made_within.field(), "retry.adaptive.min");
        assert_eq!(
            ConfigError::new("ratio", 2, "[0, 1]")
                .within("budget")
                .field(),
            "budget.ratio"
        );
    }

    #[test]
    fn raw_values_keep_what_was_written() {
        let read = |json: &str| serde_json::from_str::<Raw<u32>>(json).unwrap();
        assert_eq!(read("7"), Raw::from(7));
        assert_eq!(
            read("\"7\""),
            Raw::from(7),
            "as the environment gives numbers"
        );
        let err = |json: &str| {
            read(json)
                .value("n", "[1, 10]")
                .unwrap_err()
                .value()
                .to_owned()
        };
        assert_eq!(err("-1"), "-1");
        assert_eq!(err("2.5"), "2.5");
        assert_eq!(err("\"many\""), "\"many\"");
        assert_eq!(err("[1]"), "a list");
        assert_eq!(err("{\"a\": 1}"), "a table");
        let duration = serde_json::from_str::<Raw<Duration>>("\"-5s\"").unwrap();
        assert_eq!(
            duration.value("t", "(0s, 1s]").unwrap_err().to_string(),
            "invalid `t`: \"-5s\" is outside the allowed range (0s, 1s]"
        );
        let name = ConfigError::expected("name", "\"\"", "a non-empty name");
        assert_eq!(
            name.to_string(),
            "invalid `name`: \"\", expected a non-empty name"
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
