use std::fmt;
use std::time::Duration;

use seawall_core::Name;
use seawall_core::config::{self, ConfigError, Raw};
use seawall_core::store::{OnStoreFailure, RawStoreConfig, StoreConfig, StoreGuardConfig};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::BudgetConfig;

const DEFAULT_NAME: &str = "retry_budget";
const DEFAULT_KEY_PREFIX: &str = "seawall:retry_budget";
const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);
const SYNC_INTERVALS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(10);
const DEFAULT_MAX_LEASE: u32 = 100;
const MAX_LEASE: u32 = 1_000_000;
const SHARED: &str = "the budget, which `on_failure = \"local\"` divides its floor by";

/// A retry budget shared by a fleet: the budget itself, where it is kept, how replicas sync
/// with it, and what happens when the store cannot answer.
///
/// Deserializes from, for example,
///
/// ```toml
/// name = "payments"                 # replicas share the budget by name
/// budget = { ratio = 0.1, min_per_second = 10, ttl = "10s" }   # the fleet's
/// redis_url = "redis://127.0.0.1:6379"
/// key_prefix = "shop:retry_budget"
/// sync_interval = "100ms"           # deposits flushed, leases refilled
/// max_lease = 100                   # retries a replica holds at most
/// on_failure = "local"              # or "fail_open", "fail_closed"; no default
/// expected_replicas = 3             # for "local": each replica keeps min_per_second / 3
/// timeout = "50ms"
/// failures = 3
/// open_for = "1s"
/// ```
///
/// and checks the values as it does; errors name the full path (`budget.ratio`). The URL's
/// password never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FleetBudgetSpec", into = "FleetBudgetSpec")]
pub struct FleetBudgetConfig {
    pub(crate) name: Name,
    pub(crate) budget: BudgetConfig,
    pub(crate) store: StoreConfig,
    pub(crate) sync_interval: Duration,
    pub(crate) max_lease: u32,
}

impl FleetBudgetConfig {
    /// A builder; the failure policy is required.
    pub fn builder() -> FleetBudgetConfigBuilder {
        let store = RawStoreConfig::new(DEFAULT_KEY_PREFIX);
        FleetBudgetConfigBuilder {
            spec: FleetBudgetSpec {
                name: default_name(),
                budget: None,
                redis_url: store.redis_url,
                key_prefix: store.key_prefix,
                sync_interval: default_sync_interval(),
                max_lease: default_max_lease(),
                on_failure: store.on_failure,
                expected_replicas: store.expected_replicas,
                timeout: store.timeout,
                failures: store.failures,
                open_for: store.open_for,
            },
        }
    }

    /// The budget's name, which replicas share it by (and the `name` label of its metrics).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fleet's budget.
    pub fn budget(&self) -> &BudgetConfig {
        &self.budget
    }

    /// The Redis the budget lives in, if configured.
    pub fn redis_url(&self) -> Option<&str> {
        self.store.redis_url()
    }

    /// What the budget's key starts with.
    pub fn key_prefix(&self) -> &str {
        self.store.key_prefix()
    }

    /// How often a replica syncs with the store.
    pub fn sync_interval(&self) -> Duration {
        self.sync_interval
    }

    /// Retries a replica holds at most.
    pub fn max_lease(&self) -> u32 {
        self.max_lease
    }

    /// What retries past the lease get while the store cannot answer.
    pub fn on_failure(&self) -> OnStoreFailure {
        self.store.on_failure()
    }

    /// How many replicas share the budget, for the `local` policy.
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

impl fmt::Debug for FleetBudgetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBudgetConfig")
            .field("name", &self.name)
            .field("budget", &self.budget)
            .field("store", &self.store)
            .field("sync_interval", &self.sync_interval)
            .field("max_lease", &self.max_lease)
            .finish()
    }
}

/// Builds a [`FleetBudgetConfig`].
#[derive(Debug)]
pub struct FleetBudgetConfigBuilder {
    spec: FleetBudgetSpec,
}

impl FleetBudgetConfigBuilder {
    /// The budget's name (default `"retry_budget"`); replicas share a budget by name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into().into();
        self
    }

    /// The fleet's budget (default [`BudgetConfig::default`]); its floor is the fleet's.
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.spec.budget = Some(budget);
        self
    }

    /// The Redis the budget lives in (`redis://[user:password@]host:port[/db]`).
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.spec.redis_url = Some(url.into().into());
        self
    }

    /// What the budget's key starts with (default `seawall:retry_budget`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.spec.key_prefix = prefix.into().into();
        self
    }

    /// How often a replica syncs with the store, in `[10ms, 10s]` (default 100 ms).
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.spec.sync_interval = interval.into();
        self
    }

    /// Retries a replica holds at most, in `[1, 1_000_000]` (default 100): the fleet may
    /// retry up to N × this over its budget in a window.
    pub fn max_lease(mut self, max: u32) -> Self {
        self.spec.max_lease = max.into();
        self
    }

    /// What retries past the lease get while the store cannot answer. Required.
    pub fn on_failure(mut self, policy: OnStoreFailure) -> Self {
        self.spec.on_failure = Some(policy.into());
        self
    }

    /// How many replicas share the budget, in `[1, 100_000]`; required for `local`.
    pub fn expected_replicas(mut self, replicas: u32) -> Self {
        self.spec.expected_replicas = Some(replicas.into());
        self
    }

    /// The longest a sync waits on the store, in `(0s, 10s]` (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.spec.timeout = timeout.into();
        self
    }

    /// Failed syncs in a row that open the breaker, in `[1, 1000]` (default 3).
    pub fn failures(mut self, failures: u32) -> Self {
        self.spec.failures = failures.into();
        self
    }

    /// How long the breaker stays open, in `[1ms, 1h]` (default 1 s).
    pub fn open_for(mut self, open_for: Duration) -> Self {
        self.spec.open_for = open_for.into();
        self
    }

    /// Checks the values and builds.
    pub fn build(self) -> Result<FleetBudgetConfig, ConfigError> {
        FleetBudgetConfig::try_from(self.spec)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetBudgetSpec {
    #[serde(default = "default_name")]
    name: Raw<String>,
    #[serde(
        default,
        deserialize_with = "budget_within",
        skip_serializing_if = "Option::is_none"
    )]
    budget: Option<BudgetConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redis_url: Option<Raw<String>>,
    #[serde(default = "default_key_prefix")]
    key_prefix: Raw<String>,
    #[serde(default = "default_sync_interval")]
    sync_interval: Raw<Duration>,
    #[serde(default = "default_max_lease")]
    max_lease: Raw<u32>,
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

fn budget_within<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BudgetConfig>, D::Error> {
    config::within("budget", d).map(Some)
}

fn default_name() -> Raw<String> {
    String::from(DEFAULT_NAME).into()
}

fn default_key_prefix() -> Raw<String> {
    String::from(DEFAULT_KEY_PREFIX).into()
}

fn default_sync_interval() -> Raw<Duration> {
    DEFAULT_SYNC_INTERVAL.into()
}

fn default_max_lease() -> Raw<u32> {
    DEFAULT_MAX_LEASE.into()
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

impl TryFrom<FleetBudgetSpec> for FleetBudgetConfig {
    type Error = ConfigError;

    fn try_from(spec: FleetBudgetSpec) -> Result<Self, ConfigError> {
        let name = Name::from_raw(spec.name)?;
        let raw = RawStoreConfig {
            redis_url: spec.redis_url,
            key_prefix: spec.key_prefix,
            on_failure: spec.on_failure,
            expected_replicas: spec.expected_replicas,
            timeout: spec.timeout,
            failures: spec.failures,
            open_for: spec.open_for,
        };
        let store = StoreConfig::from_raw(raw, SHARED)?;
        Ok(Self {
            name,
            budget: spec.budget.unwrap_or_default(),
            store,
            sync_interval: config::duration_in(
                "sync_interval",
                spec.sync_interval,
                SYNC_INTERVALS,
            )?,
            max_lease: config::count_in("max_lease", spec.max_lease, 1..=MAX_LEASE)?,
        })
    }
}

impl From<FleetBudgetConfig> for FleetBudgetSpec {
    fn from(config: FleetBudgetConfig) -> Self {
        let store = config.store.to_raw();
        Self {
            name: config.name.into(),
            budget: Some(config.budget),
            redis_url: store.redis_url,
            key_prefix: store.key_prefix,
            sync_interval: config.sync_interval.into(),
            max_lease: config.max_lease.into(),
            on_failure: store.on_failure,
            expected_replicas: store.expected_replicas,
            timeout: store.timeout,
            failures: store.failures,
            open_for: store.open_for,
        }
    }
}
