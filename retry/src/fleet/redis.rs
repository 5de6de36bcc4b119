//! The Redis budget store: per-second counts in one hash, updated by one Lua script.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use redis::aio::ConnectionManager;
use seawall_core::config::ConfigError;
use seawall_core::store::{RedisScript, StoreError, StoreErrorKind};

use super::config::FleetBudgetConfig;
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
    script: RedisScript,
}

impl RedisBudgetStore {
    /// A store on an existing connection manager (one can serve every store of a process).
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            script: RedisScript::new(conn, BUDGET),
        }
    }

    /// A store on the Redis at the configuration's `redis_url`, connected lazily; must be
    /// called within a tokio runtime. A `ConfigError` for `redis_url` when there is none or it
    /// is not a valid URL.
    pub fn open(config: &FleetBudgetConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            script: RedisScript::open(config.store(), BUDGET)?,
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
            .field("url", &self.script.url())
            .field("script_sha", &self.script.sha())
            .finish()
    }
}

impl BudgetStore for RedisBudgetStore {
    type Future = Pin<Box<dyn Future<Output = Result<u32, StoreError>> + Send>>;

    fn sync(&self, key: &[u8], budget: &BudgetConfig, deposits: u64, want: u32) -> Self::Future {
        let ttl = budget.ttl().as_secs().max(1);
        let floor = u64::from(budget.min_per_second()) * ttl;
        let reply = self
            .script
            .invoke(key, (deposits, want, budget.ratio(), floor, ttl));
        // The `redis` crate's calls borrow the connection: one allocation per sync.
        Box::pin(async move {
            let reply = reply.await?;
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
