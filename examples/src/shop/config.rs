//! One TOML file per service, overridden from the environment, validated with field paths.
//!
//! `SHOP__ORDERS__RETRY__MAX_ATTEMPTS=2` sets `retry.max_attempts` of `orders.toml`: the
//! variable names the service, then the path, `__` between the parts. Values are read as they
//! are written in the file would be (numbers, flags, durations such as `250ms`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use seawall::bulkhead::BulkheadConfig;
use seawall::circuit_breaker::CircuitBreakerConfig;
use seawall::config::{self, ConfigError, Raw};
use seawall::stack::{ClientStackConfig, ServerStackConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// The prefix of the variables that override the files.
pub const ENV_PREFIX: &str = "SHOP";

/// A products, orders or users service's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Inbound.
    #[serde(deserialize_with = "server_within")]
    pub server: ServerStackConfig,
    /// The database and what guards it.
    #[serde(deserialize_with = "database_within")]
    pub database: DatabaseConfig,
    /// Retries of serialization failures and deadlocks (orders).
    #[serde(default, deserialize_with = "retry_within")]
    pub retry: TxRetryConfig,
    /// The client stack to the search service (products).
    #[serde(default, deserialize_with = "search_within")]
    pub search: Option<ClientStackConfig>,
}

/// The gateway's settings: its own server stack and a client stack per service it calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Inbound.
    #[serde(deserialize_with = "server_within")]
    pub server: ServerStackConfig,
    /// To the products service.
    #[serde(deserialize_with = "products_within")]
    pub products: ClientStackConfig,
    /// To the orders service.
    #[serde(deserialize_with = "orders_within")]
    pub orders: ClientStackConfig,
    /// To the users service.
    #[serde(deserialize_with = "users_within")]
    pub users: ClientStackConfig,
    /// To the recommendations service.
    #[serde(deserialize_with = "recommendations_within")]
    pub recommendations: ClientStackConfig,
}

/// A service's database: the pool, the bulkhead sized to it, the breaker, the query timeout.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Connections in the pool, and slots in the bulkhead in front of it.
    pub pool_size: usize,
    /// The bulkhead's settings (its limit is `pool_size`).
    pub bulkhead: BulkheadConfig,
    /// How long one unit of work (a query, a transaction with its retries) may take.
    pub query_timeout: Duration,
    /// Fails fast while the database is down.
    pub circuit_breaker: CircuitBreakerConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseSpec {
    pool_size: Raw<usize>,
    #[serde(default = "default_queue")]
    queue_limit: Raw<usize>,
    #[serde(default = "default_wait")]
    max_wait: Raw<Duration>,
    query_timeout: Raw<Duration>,
    #[serde(deserialize_with = "breaker_within")]
    circuit_breaker: CircuitBreakerConfig,
}

fn default_queue() -> Raw<usize> {
    64.into()
}

fn default_wait() -> Raw<Duration> {
    Duration::from_millis(100).into()
}

impl<'de> Deserialize<'de> for DatabaseConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = DatabaseSpec::deserialize(d)?;
        Self::try_from(spec).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<DatabaseSpec> for DatabaseConfig {
    type Error = ConfigError;

    fn try_from(spec: DatabaseSpec) -> Result<Self, ConfigError> {
        let pool_size = config::count_in("pool_size", spec.pool_size, 1..=256)?;
        let queue_limit = config::count_in("queue_limit", spec.queue_limit, 0..=10_000)?;
        let max_wait = config::duration_in(
            "max_wait",
            spec.max_wait,
            Duration::ZERO..=Duration::from_secs(60),
        )?;
        let query_timeout = config::positive_duration(
            "query_timeout",
            spec.query_timeout,
            Duration::from_secs(60),
        )?;
        let bulkhead = BulkheadConfig::builder()
            .name("db")
            .max_concurrent(pool_size)
            .queue_limit(queue_limit)
            .max_wait(max_wait)
            .build()?;
        Ok(Self {
            pool_size,
            bulkhead,
            query_timeout,
            circuit_breaker: spec.circuit_breaker.named("db")?,
        })
    }
}

/// How a transaction that lost a serialization race or a deadlock is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxRetryConfig {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// The wait before the second try; each later one waits twice as long.
    pub backoff: Duration,
}

impl Default for TxRetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            backoff: Duration::from_millis(10),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxRetrySpec {
    max_attempts: Raw<u32>,
    backoff: Raw<Duration>,
}

impl<'de> Deserialize<'de> for TxRetryConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = TxRetrySpec::deserialize(d)?;
        let check = || -> Result<Self, ConfigError> {
            Ok(Self {
                max_attempts: config::count_in("max_attempts", spec.max_attempts, 1..=10)?,
                backoff: config::duration_in(
                    "backoff",
                    spec.backoff,
                    Duration::ZERO..=Duration::from_secs(5),
                )?,
            })
        };
        check().map_err(serde::de::Error::custom)
    }
}

macro_rules! within {
    ($($fn:ident: $ty:ty = $field:literal),* $(,)?) => {$(
        fn $fn<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            config::within($field, d)
        }
    )*};
}

within! {
    server_within: ServerStackConfig = "server",
    database_within: DatabaseConfig = "database",
    retry_within: TxRetryConfig = "retry",
    breaker_within: CircuitBreakerConfig = "circuit_breaker",
    products_within: ClientStackConfig = "products",
    orders_within: ClientStackConfig = "orders",
    users_within: ClientStackConfig = "users",
    recommendations_within: ClientStackConfig = "recommendations",
    search_within: Option<ClientStackConfig> = "search",
}

/// A configuration that could not be read or was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopConfigError {
    /// The file or service it concerns.
    pub source: String,
    /// What is wrong, naming the field (`database.circuit_breaker.failure_rate_threshold`).
    pub message: String,
}

impl std::fmt::Display for ShopConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl std::error::Error for ShopConfigError {}

/// The built-in file of `service` (`gateway`, `products`, `orders`, `users`).
pub fn builtin(service: &str) -> &'static str {
    match service {
        "gateway" => include_str!("gateway.toml"),
        "products" => include_str!("products.toml"),
        "orders" => include_str!("orders.toml"),
        "users" => include_str!("users.toml"),
        _ => "",
    }
}

/// Where the settings come from: a directory of `<service>.toml` files (the built-in ones
/// where a file is missing), and the environment.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The directory, if any.
    pub dir: Option<PathBuf>,
    /// Overrides, as `(variable, value)`; [`Source::from_env`] reads the process's.
    pub env: Vec<(String, String)>,
}

impl Source {
    /// The files in `dir` (if any), overridden by the process's `SHOP__*` variables.
    pub fn from_env(dir: Option<PathBuf>) -> Self {
        let prefix = format!("{ENV_PREFIX}__");
        Self {
            dir,
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with(&prefix))
                .collect(),
        }
    }

    /// The file `service` is read from, if it is read from one.
    pub fn path(&self, service: &str) -> Option<PathBuf> {
        let path = self.dir.as_ref()?.join(format!("{service}.toml"));
        path.exists().then_some(path)
    }

    /// Reads `service`'s settings.
    pub fn load<T: DeserializeOwned>(&self, service: &str) -> Result<T, ShopConfigError> {
        let error = |message: String| ShopConfigError {
            source: service.to_owned(),
            message,
        };
        let text = match self.path(service) {
            Some(path) => std::fs::read_to_string(&path)
                .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?,
            None => builtin(service).to_owned(),
        };
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| error(e.message().into()))?;
        let prefix = format!("{ENV_PREFIX}__{}__", service.to_uppercase());
        for (key, value) in &self.env {
            let Some(path) = key.strip_prefix(&prefix) else {
                continue;
            };
            let path: Vec<String> = path.split("__").map(str::to_lowercase).collect();
            set(&mut table, &path, value).map_err(|m| error(format!("{key}: {m}")))?;
        }
        T::deserialize(toml::Value::Table(table)).map_err(|e| error(e.message().into()))
    }
}

/// Sets the value at `path` in `table`, read as TOML if it reads as a scalar, else as text.
fn set(table: &mut toml::Table, path: &[String], value: &str) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("an empty path")?;
    let mut table = table;
    for part in parents {
        table = table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a table"))?;
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    table.insert(last.clone(), parsed);
    Ok(())
}

/// When a service's file last changed, to notice edits.
pub(crate) fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
