use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use seawall_core::config::{self, ConfigError, Raw};
use seawall_core::store::{OnStoreFailure, StoreGuardConfig};
use serde::{Deserialize, Serialize};

const DEFAULT_KEY_PREFIX: &str = "seawall:rate_limit";
const MAX_KEY_PREFIX: usize = 256;
const MAX_LEASE: u32 = 100_000;
const MAX_REPLICAS: u32 = 100_000;
const URL_SCHEMES: [&str; 3] = ["redis://", "redis+unix://", "unix://"];

/// How a rate limit shares its quota with the other replicas of a fleet: where the store is,
/// how its buckets are named, how many cells a replica leases at once, and what happens when
/// the store cannot answer.
///
/// Deserializes from the `fleet` table of a rate limit's configuration, for example
///
/// ```toml
/// [rate_limit.fleet]
/// redis_url = "redis://127.0.0.1:6379"
/// key_prefix = "shop:rate_limit"   # buckets are "<key_prefix>:<name>[:<key>]"
/// lease = 10                       # cells taken at once; 1: every call asks the store
/// on_failure = "local"             # or "fail_open", "fail_closed"; no default
/// expected_replicas = 3            # for "local": each replica allows quota / 3
/// timeout = "50ms"                 # the longest a call waits on the store
/// failures = 3                     # failed calls in a row that open the breaker...
/// open_for = "1s"                  # ...for this long, then one call probes
/// ```
///
/// and checks the values as it does. The URL's password, if any, never appears in `Debug`
/// output or logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FleetSpec", into = "FleetSpec")]
pub struct FleetConfig {
    pub(crate) redis_url: Option<String>,
    pub(crate) key_prefix: Arc<str>,
    pub(crate) lease: u32,
    pub(crate) on_failure: OnStoreFailure,
    pub(crate) expected_replicas: Option<u32>,
    pub(crate) guard: StoreGuardConfig,
}

impl FleetConfig {
    /// A builder for a fleet configuration; the failure policy is required.
    pub fn builder() -> FleetConfigBuilder {
        FleetConfigBuilder {
            spec: FleetSpec {
                redis_url: None,
                key_prefix: default_key_prefix(),
                lease: default_lease(),
                on_failure: None,
                expected_replicas: None,
                timeout: default_timeout(),
                failures: default_failures(),
                open_for: default_open_for(),
            },
        }
    }

    /// The Redis the quota lives in, if configured.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref()
    }

    /// What bucket names start with.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Cells a replica takes from the store at once.
    pub fn lease(&self) -> u32 {
        self.lease
    }

    /// What a call gets while the store cannot answer.
    pub fn on_failure(&self) -> OnStoreFailure {
        self.on_failure
    }

    /// How many replicas share the quota, for the `local` failure policy.
    pub fn expected_replicas(&self) -> Option<u32> {
        self.expected_replicas
    }

    /// The timeout and breaker around calls to the store.
    pub fn guard(&self) -> &StoreGuardConfig {
        &self.guard
    }
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("redis_url", &self.redis_url.as_deref().map(redacted))
            .field("key_prefix", &self.key_prefix)
            .field("lease", &self.lease)
            .field("on_failure", &self.on_failure)
            .field("expected_replicas", &self.expected_replicas)
            .field("guard", &self.guard)
            .finish()
    }
}

/// `url` with any password replaced by `***`.
pub(crate) fn redacted(url: &str) -> String {
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

/// Builds a [`FleetConfig`].
#[derive(Debug)]
pub struct FleetConfigBuilder {
    spec: FleetSpec,
}

impl FleetConfigBuilder {
    /// The Redis the quota lives in (`redis://[user:password@]host:port[/db]` or
    /// `unix:///path`).
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.spec.redis_url = Some(url.into().into());
        self
    }

    /// What bucket names start with (default `seawall:rate_limit`), at most 256 bytes
    /// without spaces.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.spec.key_prefix = prefix.into().into();
        self
    }

    /// Cells a replica takes from the store at once, in `[1, 100_000]` and at most the
    /// quota's burst (default 1: every call asks the store). A fleet of N replicas with
    /// lease L may admit up to N × (L − 1) calls over the quota in a window; see
    /// [`Fleet`](crate::Fleet).
    pub fn lease(mut self, lease: u32) -> Self {
        self.spec.lease = lease.into();
        self
    }

    /// What a call gets while the store cannot answer. Required.
    pub fn on_failure(mut self, policy: OnStoreFailure) -> Self {
        self.spec.on_failure = Some(policy.into());
        self
    }

    /// How many replicas share the quota, in `[1, 100_000]`: with `on_failure = local` each
    /// replica allows the quota divided by this while the store is down. Required for
    /// `local`.
    pub fn expected_replicas(mut self, replicas: u32) -> Self {
        self.spec.expected_replicas = Some(replicas.into());
        self
    }

    /// The longest a call waits on the store, in `(0s, 10s]` (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout = timeout.into();
        self
    }

    /// Failed calls in a row that open the breaker around the store, in `[1, 1000]`
    /// (default 3).
    pub fn failures(mut self, failures: u32) -> Self {
        self.spec.failures = failures.into();
        self
    }

    /// How long the breaker stays open before one call probes the store, in `[1ms, 1h]`
    /// (default 1 s).
    pub fn open_for(mut self, open_for: Duration) -> Self {
        self.spec.open_for = open_for.into();
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<FleetConfig, ConfigError> {
        FleetConfig::try_from(self.spec)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redis_url: Option<Raw<String>>,
    #[serde(default = "default_key_prefix")]
    key_prefix: Raw<String>,
    #[serde(default = "default_lease")]
    lease: Raw<u32>,
    #[serde(default)]
    on_failure: Option<Raw<OnStoreFailure>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected_replicas: Option<Raw<u32>>,
    #[serde(default = "default_timeout")]
    timeout: Raw<Duration>,
    #[serde(default = "default_failures")]
    failures: Raw<u32>,
    #[serde(default = "default_open_for")]
    open_for: Raw<Duration>,
}

fn default_key_prefix() -> Raw<String> {
    String::from(DEFAULT_KEY_PREFIX).into()
}

fn default_lease() -> Raw<u32> {
    1.into()
}

fn default_timeout() -> Raw<Duration> {
    StoreGuardConfig::default().timeout().into()
}

fn default_failures() -> Raw<u32> {
    StoreGuardConfig::default().failures().into()
}

fn default_open_for() -> Raw<Duration> {
    StoreGuardConfig::default().open_for().into()
}

impl TryFrom<FleetSpec> for FleetConfig {
    type Error = ConfigError;

    fn try_from(spec: FleetSpec) -> Result<Self, ConfigError> {
        const URL: &str = "a `redis://host:port` or `unix:///path` URL";
        let redis_url = match spec.redis_url {
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
        const PREFIX: &str = "a non-empty prefix of at most 256 bytes without spaces";
        let key_prefix = spec.key_prefix.expected("key_prefix", PREFIX)?;
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
        let lease = config::count_in("lease", spec.lease, 1..=MAX_LEASE)?;
        let on_failure = match spec.on_failure {
            Some(policy) => policy.expected("on_failure", OnStoreFailure::EXPECTED)?,
            None => {
                return Err(ConfigError::expected(
                    "on_failure",
                    "nothing",
                    OnStoreFailure::EXPECTED,
                ));
            }
        };
        let expected_replicas = spec
            .expected_replicas
            .map(|n| config::count_in("expected_replicas", n, 1..=MAX_REPLICAS))
            .transpose()?;
        if on_failure == OnStoreFailure::Local && expected_replicas.is_none() {
            return Err(ConfigError::expected(
                "expected_replicas",
                "nothing",
                "how many replicas share the quota, which `on_failure = \"local\"` divides it by",
            ));
        }
        Ok(Self {
            redis_url,
            key_prefix: key_prefix.into(),
            lease,
            on_failure,
            expected_replicas,
            guard: StoreGuardConfig::from_raw(spec.timeout, spec.failures, spec.open_for)?,
        })
    }
}

impl From<FleetConfig> for FleetSpec {
    fn from(config: FleetConfig) -> Self {
        Self {
            redis_url: config.redis_url.map(Raw::from),
            key_prefix: config.key_prefix.to_string().into(),
            lease: config.lease.into(),
            on_failure: Some(config.on_failure.into()),
            expected_replicas: config.expected_replicas.map(Raw::from),
            timeout: config.guard.timeout().into(),
            failures: config.guard.failures().into(),
            open_for: config.guard.open_for().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_policy_is_required_and_local_needs_the_replica_count() {
        let err = FleetConfig::builder().build().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `on_failure`: nothing, expected one of `fail_open`, `fail_closed`, `local`"
        );
        let err = FleetConfig::builder()
            .on_failure(OnStoreFailure::Local)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "expected_replicas");
        let config = FleetConfig::builder()
            .on_failure(OnStoreFailure::Local)
            .expected_replicas(3)
            .build()
            .unwrap();
        assert_eq!(config.lease(), 1);
        assert_eq!(config.key_prefix(), "seawall:rate_limit");
        assert_eq!(config.guard(), &StoreGuardConfig::default());
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let config = FleetConfig::builder()
            .redis_url("redis://app:s3cret@cache:6379/2")
            .on_failure(OnStoreFailure::FailOpen)
            .build()
            .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("redis://app:***@cache:6379/2"), "{debug}");
        assert_eq!(config.redis_url(), Some("redis://app:s3cret@cache:6379/2"));
        let err = FleetConfig::builder()
            .redis_url("http://app:s3cret@cache")
            .on_failure(OnStoreFailure::FailOpen)
            .build()
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
