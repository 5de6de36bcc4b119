use std::fmt;
use std::time::Duration;

use seawall_core::config::{self, ConfigError, Raw};
use seawall_core::store::{OnStoreFailure, RawStoreConfig, StoreConfig, StoreGuardConfig};
use serde::{Deserialize, Serialize};

const DEFAULT_KEY_PREFIX: &str = "seawall:rate_limit";
const MAX_LEASE: u32 = 100_000;
const SHARED: &str = "the quota, which `on_failure = \"local\"` divides it by";

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
/// and checks the values as it does (the store's part as every fleet-wide layer does, see
/// [`StoreConfig`]). The URL's password, if any, never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FleetSpec", into = "FleetSpec")]
pub struct FleetConfig {
    pub(crate) store: StoreConfig,
    pub(crate) lease: u32,
}

impl FleetConfig {
    /// A builder for a fleet configuration; the failure policy is required.
    pub fn builder() -> FleetConfigBuilder {
        let store = RawStoreConfig::new(DEFAULT_KEY_PREFIX);
        FleetConfigBuilder {
            spec: FleetSpec {
                redis_url: store.redis_url,
                key_prefix: store.key_prefix,
                lease: default_lease(),
                on_failure: store.on_failure,
                expected_replicas: store.expected_replicas,
                timeout: store.timeout,
                failures: store.failures,
                open_for: store.open_for,
            },
        }
    }

    /// The Redis the quota lives in, if configured.
    pub fn redis_url(&self) -> Option<&str> {
        self.store.redis_url()
    }

    /// What bucket names start with.
    pub fn key_prefix(&self) -> &str {
        self.store.key_prefix()
    }

    /// Cells a replica takes from the store at once.
    pub fn lease(&self) -> u32 {
        self.lease
    }

    /// What a call gets while the store cannot answer.
    pub fn on_failure(&self) -> OnStoreFailure {
        self.store.on_failure()
    }

    /// How many replicas share the quota, for the `local` failure policy.
    pub fn expected_replicas(&self) -> Option<u32> {
        self.store.expected_replicas()
    }

    /// The timeout and breaker around calls to the store.
    pub fn guard(&self) -> &StoreGuardConfig {
        self.store.guard()
    }

    /// The store's part: URL, key prefix, failure policy and guard.
    pub fn store(&self) -> &StoreConfig {
        &self.store
    }
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("store", &self.store)
            .field("lease", &self.lease)
            .finish()
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
        let raw = RawStoreConfig {
            redis_url: spec.redis_url,
            key_prefix: spec.key_prefix,
            on_failure: spec.on_failure,
            expected_replicas: spec.expected_replicas,
            timeout: spec.timeout,
            failures: spec.failures,
            open_for: spec.open_for,
        };
        Ok(Self {
            store: StoreConfig::from_raw(raw, SHARED)?,
            lease: config::count_in("lease", spec.lease, 1..=MAX_LEASE)?,
        })
    }
}

impl From<FleetConfig> for FleetSpec {
    fn from(config: FleetConfig) -> Self {
        let store = config.store.to_raw();
        Self {
            redis_url: store.redis_url,
            key_prefix: store.key_prefix,
            lease: config.lease.into(),
            on_failure: store.on_failure,
            expected_replicas: store.expected_replicas,
            timeout: store.timeout,
            failures: store.failures,
            open_for: store.open_for,
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
