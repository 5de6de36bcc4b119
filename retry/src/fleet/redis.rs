//! The Redis budget store: per-second counts in one hash, updated by one Lua script.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, Script};
use seawall_core::config::ConfigError;
use seawall_core::store::{StoreError, StoreErrorKind};

use super::config::{FleetBudgetConfig, redacted};
use super::{BudgetStore, FleetBudget};
use crate::config::BudgetConfig;

/// The script (`budget.lua`, beside this module), loaded once and called by its SHA1; loaded
/// again when the server answers `NOSCRIPT`.
const BUDGET: &str = include_str!("budget.lua");

/// Retry budgets in Redis, shared by every replica that points at the same server.
///
/// Each sync runs one Lua script that adds the replica's requests to the current second's
/// count, drops counts older than the budget's window, and takes the retries wanted from what
/// is left, atomically and on the server's clock. Cloning the store clones its
/// [`ConnectionManager`] handle.
#[derive(Clone)]
pub struct RedisBudgetStore {
    conn: ConnectionManager,
    script: Arc<Script>,
    url: Option<Arc<str>>,
}

impl RedisBudgetStore {
    /// A store on an existing connection manager (one can serve every store of a process).
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            script: Arc::new(Script::new(BUDGET)),
            url: None,
        }
    }

    /// A store on the Redis at the configuration's `redis_url`, connected lazily; must be
    /// called within a tokio runtime. A `ConfigError` for `redis_url` when there is none or it
    /// is not a valid URL.
    pub fn open(config: &FleetBudgetConfig) -> Result<Self, ConfigError> {
        const EXPECTED: &str = "a `redis://host:port` or `unix:///path` URL";
        let url = config
            .redis_url()
            .ok_or_else(|| ConfigError::expected("redis_url", "nothing", EXPECTED))?;
        let invalid = |e: RedisError| {
            ConfigError::expected(
                "redis_url",
                format_args!("{:?} ({:?})", redacted(url), e.kind()),
                EXPECTED,
            )
        };
        let client = Client::open(url).map_err(invalid)?;
        let timeout = config.guard().timeout();
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, manager).map_err(invalid)?;
        Ok(Self {
            url: Some(redacted(url).into()),
            ..Self::new(conn)
        })
    }
}

impl FleetBudget<RedisBudgetStore> {
    /// A fleet-wide budget in the Redis at the configuration's `redis_url`; see
    /// [`RedisBudgetStore::open`].
    pub fn redis(config: FleetBudgetConfig) -> Result<Self, ConfigError> {
        let store = RedisBudgetStore::open(&config)?;
        Ok(Self::new(config, store))
    }
}

impl fmt::Debug for RedisBudgetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("url", &self.url)
            .field("script_sha", &self.script.get_hash())
            .finish()
    }
}

fn store_error(err: RedisError) -> StoreError {
    let kind = match err.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreErrorKind::Response,
        ErrorKind::Server(_) | ErrorKind::Extension => StoreErrorKind::Script,
        _ if err.is_timeout() => StoreErrorKind::Timeout,
        _ => StoreErrorKind::Connection,
    };
    StoreError::new(kind, err)
}

impl BudgetStore for RedisBudgetStore {
    type Future = Pin<Box<dyn Future<Output = Result<u32, StoreError>> + Send>>;

    fn sync(&self, key: &[u8], budget: &BudgetConfig, deposits: u64, want: u32) -> Self::Future {
        let mut conn = self.conn.clone();
        let script = self.script.clone();
        let key = key.to_vec();
        let ttl = budget.ttl().as_secs().max(1);
        let floor = u64::from(budget.min_per_second()) * ttl;
        let ratio = budget.ratio();
        // The `redis` crate's calls borrow the connection: one allocation per sync.
        Box::pin(async move {
            let reply: redis::Value = script
                .key(key)
                .arg(deposits)
                .arg(want)
                .arg(ratio)
                .arg(floor)
                .arg(ttl)
                .invoke_async(&mut conn)
                .await
                .map_err(store_error)?;
            let bad = || {
                StoreError::new(
                    StoreErrorKind::Response,
                    format_args!("the budget script answered {reply:?}, not {{granted, left}}"),
                )
            };
            let (granted, _left): (i64, i64) =
                redis::from_redis_value(reply.clone()).map_err(|_| bad())?;
            u32::try_from(granted)
                .ok()
                .filter(|&g| g <= want)
                .ok_or_else(bad)
        })
    }
}
