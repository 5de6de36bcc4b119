//! Where a fleet's shared store is and how a layer talks to it: the part of a fleet-wide
//! layer's configuration that is the same for a rate limit and a retry budget.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::guard::{OnStoreFailure, StoreGuardConfig};
use crate::config::{self, ConfigError, Raw};

const MAX_KEY_PREFIX: usize = 256;
const MAX_REPLICAS: u32 = 100_000;
const URL_SCHEMES: [&str; 3] = ["redis://", "redis+unix://", "unix://"];
/// What a configuration error says `redis_url` expects.
pub(crate) const URL: &str = "a `redis://host:port` or `unix:///path` URL";
const PREFIX: &str = "a non-empty prefix of at most 256 bytes without spaces";

/// Where a fleet's shared store is (`redis_url`), what its keys start with (`key_prefix`),
/// what a layer does while it cannot answer (`on_failure`, with `expected_replicas` for
/// `local`), and the timeout and breaker around its calls.
///
/// A layer's configuration reads these fields beside its own ones (as [`RawStoreConfig`])
/// and checks them with [`from_raw`](Self::from_raw), so that every fleet-wide layer names,
/// bounds and explains them the same way. The URL's password never appears in `Debug`
/// output, errors or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    redis_url: Option<String>,
    key_prefix: Arc<str>,
    on_failure: OnStoreFailure,
    expected_replicas: Option<u32>,
    guard: StoreGuardConfig,
}

/// The fields of a [`StoreConfig`] as written in a configuration file, before they are
/// checked.
#[derive(Debug, Clone)]
pub struct RawStoreConfig {
    /// The store's URL, if any.
    pub redis_url: Option<Raw<String>>,
    /// What the store's keys start with.
    pub key_prefix: Raw<String>,
    /// The failure policy; required.
    pub on_failure: Option<Raw<OnStoreFailure>>,
    /// How many replicas share the store; required for `local`.
    pub expected_replicas: Option<Raw<u32>>,
    /// The longest a call to the store may take.
    pub timeout: Raw<Duration>,
    /// Failed calls in a row that open the breaker.
    pub failures: Raw<u32>,
    /// How long the breaker stays open.
    pub open_for: Raw<Duration>,
}

impl RawStoreConfig {
    /// No URL, keys under `key_prefix`, no failure policy yet, and the guard's defaults.
    pub fn new(key_prefix: &str) -> Self {
        let guard = StoreGuardConfig::default();
        Self {
            redis_url: None,
            key_prefix: key_prefix.to_owned().into(),
            on_failure: None,
            expected_replicas: None,
            timeout: guard.timeout().into(),
            failures: guard.failures().into(),
            open_for: guard.open_for().into(),
        }
    }
}

impl StoreConfig {
    /// Checks the fields; errors name them (`redis_url`, `key_prefix`, `on_failure`,
    /// `expected_replicas`, `timeout`, `failures`, `open_for`). `shared` says what the
    /// replicas share and what `local` divides, for the error when `expected_replicas` is
    /// missing (such as "the quota, which `on_failure = \"local\"` divides it by").
    pub fn from_raw(raw: RawStoreConfig, shared: &str) -> Result<Self, ConfigError> {
        let redis_url = match raw.redis_url {
            None => None,
            Some(url) => {
                let url = url.expected("redis_url", URL)?;
                if !URL_SCHEMES.iter().any(|s| url.starts_with(s)) || url.len() <= 8 {
                    return Err(ConfigError::expected(
                        "redis_url",
                        format_args!("{:?}", redacted(&url)),
                        URL,
                    ));
                }
                Some(url)
            }
        };
        let key_prefix = raw.key_prefix.expected("key_prefix", PREFIX)?;
        if key_prefix.is_empty()
            || key_prefix.len() > MAX_KEY_PREFIX
            || key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::expected(
                "key_prefix",
                format_args!("{key_prefix:?}"),
                PREFIX,
            ));
        }
        let on_failure = match raw.on_failure {
            Some(policy) => policy.expected("on_failure", OnStoreFailure::EXPECTED)?,
            None => {
                return Err(ConfigError::expected(
                    "on_failure",
                    "nothing",
                    OnStoreFailure::EXPECTED,
                ));
            }
        };
        let expected_replicas = raw
            .expected_replicas
            .map(|n| config::count_in("expected_replicas", n, 1..=MAX_REPLICAS))
            .transpose()?;
        if on_failure == OnStoreFailure::Local && expected_replicas.is_none() {
            return Err(ConfigError::expected(
                "expected_replicas",
                "nothing",
                format!("how many replicas share {shared}"),
            ));
        }
        Ok(Self {
            redis_url,
            key_prefix: key_prefix.into(),
            on_failure,
            expected_replicas,
            guard: StoreGuardConfig::from_raw(raw.timeout, raw.failures, raw.open_for)?,
        })
    }

    /// The fields as a configuration file writes them.
    pub fn to_raw(&self) -> RawStoreConfig {
        RawStoreConfig {
            redis_url: self.redis_url.clone().map(Raw::from),
            key_prefix: self.key_prefix.to_string().into(),
            on_failure: Some(self.on_failure.into()),
            expected_replicas: self.expected_replicas.map(Raw::from),
            timeout: self.guard.timeout().into(),
            failures: self.guard.failures().into(),
            open_for: self.guard.open_for().into(),
        }
    }

    /// The store's URL, if configured.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref()
    }

    /// What the store's keys start with.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// What a layer does while the store cannot answer.
    pub fn on_failure(&self) -> OnStoreFailure {
        self.on_failure
    }

    /// How many replicas share the store, for the `local` policy.
    pub fn expected_replicas(&self) -> Option<u32> {
        self.expected_replicas
    }

    /// The timeout and breaker around calls to the store.
    pub fn guard(&self) -> &StoreGuardConfig {
        &self.guard
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redacted))
            .field("key_prefix", &self.key_prefix)
            .field("on_failure", &self.on_failure)
            .field("expected_replicas", &self.expected_replicas)
            .field("guard", &self.guard)
            .finish()
    }
}

/// `url` with any password replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawStoreConfig {
        RawStoreConfig::new("seawall:test")
    }

    #[test]
    fn the_failure_policy_is_required_and_local_needs_the_replica_count() {
        let err = StoreConfig::from_raw(raw(), "the quota").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `on_failure`: nothing, expected one of `fail_open`, `fail_closed`, `local`"
        );
        let local = RawStoreConfig {
            on_failure: Some(OnStoreFailure::Local.into()),
            ..raw()
        };
        let err = StoreConfig::from_raw(local.clone(), "the quota").unwrap_err();
        assert_eq!(err.field(), "expected_replicas");
        assert!(err.to_string().contains("share the quota"), "{err}");
        let config = StoreConfig::from_raw(
            RawStoreConfig {
                expected_replicas: Some(3.into()),
                ..local
            },
            "the quota",
        )
        .unwrap();
        assert_eq!(config.key_prefix(), "seawall:test");
        assert_eq!(config.guard(), &StoreGuardConfig::default());
        let again = StoreConfig::from_raw(config.to_raw(), "the quota").unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn bad_urls_and_prefixes_name_their_field_and_hide_passwords() {
        let open = || RawStoreConfig {
            on_failure: Some(OnStoreFailure::FailOpen.into()),
            ..raw()
        };
        let err = StoreConfig::from_raw(
            RawStoreConfig {
                redis_url: Some(String::from("http://app:s3cret@cache").into()),
                ..open()
            },
            "",
        )
        .unwrap_err();
        assert_eq!(err.field(), "redis_url");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        for prefix in ["", "a b", &"x".repeat(257)] {
            let err = StoreConfig::from_raw(
                RawStoreConfig {
                    key_prefix: prefix.to_owned().into(),
                    ..open()
                },
                "",
            )
            .unwrap_err();
            assert_eq!(err.field(), "key_prefix");
        }
        let config = StoreConfig::from_raw(
            RawStoreConfig {
                redis_url: Some(String::from("redis://app:s3cret@cache:6379/2").into()),
                ..open()
            },
            "",
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("redis://app:***@cache:6379/2"), "{debug}");
    }
}
