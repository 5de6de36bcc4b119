//! The Redis store: GCRA in one Lua script, run atomically on the server.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use redis::aio::ConnectionManager;
use seawall_core::config::ConfigError;
use seawall_core::store::RedisScript;

use super::{Grant, QuotaStore, StoreError, StoreErrorKind};
use crate::config::Quota;
use crate::fleet::config::FleetConfig;

/// The script, loaded into Redis once and called by its SHA1 (`EVALSHA`); a server that lost
/// it (restarted, or `SCRIPT FLUSH`) answers `NOSCRIPT` and it is loaded again at once.
const GCRA: &str = include_str!("gcra.lua");

/// Rate limit buckets in Redis, shared by every replica that points at the same server.
///
/// Each call runs one Lua script (`gcra.lua`, beside this module) that reads the bucket's
/// theoretical arrival time, takes the cells, writes it back and sets its expiry,
/// atomically and on the server's clock. It goes through the `redis` crate's
/// [`ConnectionManager`], one multiplexed connection that reconnects by itself after Redis
/// restarts; cloning the store clones that handle, so one store (or one manager, with
/// [`new`](Self::new)) serves every limit and the retry budget of a process.
///
/// Keep Redis near the replicas: each round trip adds its latency to the calls that make it
/// (leases make those few). Redis Cluster is not supported: a bucket is one key, but the
/// connection is to one server.
#[derive(Clone)]
pub struct RedisStore {
    script: RedisScript,
}

impl RedisStore {
    /// A store on an existing connection manager.
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            script: RedisScript::new(conn, GCRA),
        }
    }

    /// A store on the Redis at the fleet configuration's `redis_url`, connected lazily: a
    /// Redis that is down now is the failure policy's to handle when calls come. The
    /// manager's own response and connection timeouts are the fleet's `timeout`.
    ///
    /// A `ConfigError` for `fleet.redis_url` when there is none or it is not a valid URL.
    pub fn open(fleet: &FleetConfig) -> Result<Self, ConfigError> {
        let script = RedisScript::open(fleet.store(), GCRA).map_err(|e| e.within("fleet"))?;
        Ok(Self { script })
    }

    /// The SHA1 the script is called by.
    pub fn script_sha(&self) -> &str {
        self.script.sha()
    }

    /// Loads the script now, so that the first calls find it.
    pub async fn load(&self) -> Result<(), StoreError> {
        self.script.load().await
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.script.url())
            .field("script_sha", &self.script_sha())
            .finish()
    }
}

/// Reads the script's `{granted, wait_us}`.
fn grant(reply: redis::Value, want: u32) -> Result<Grant, StoreError> {
    let bad = |what: &dyn fmt::Display| {
        StoreError::new(
            StoreErrorKind::Response,
            format_args!("the GCRA script answered {what}, not {{granted, wait}}"),
        )
    };
    let (granted, wait): (i64, i64) =
        redis::from_redis_value(reply.clone()).map_err(|_| bad(&format_args!("{reply:?}")))?;
    match (u32::try_from(granted), u64::try_from(wait)) {
        (Ok(0), Ok(wait)) if wait > 0 => Ok(Grant::none(std::time::Duration::from_micros(wait))),
        (Ok(granted), Ok(0)) if (1..=want).contains(&granted) => Ok(Grant::cells(granted)),
        _ => Err(bad(&format_args!("{{{granted}, {wait}}} for {want} cells"))),
    }
}

impl QuotaStore for RedisStore {
    type Future = Pin<Box<dyn Future<Output = Result<Grant, StoreError>> + Send>>;

    fn take(&self, key: &[u8], quota: &Quota, cells: u32) -> Self::Future {
        let interval = u64::try_from(quota.replenish_interval().as_nanos()).unwrap_or(u64::MAX);
        let reply = self.script.invoke(key, (interval, quota.burst(), cells));
        // The `redis` crate's calls borrow the connection, so the round trip is boxed: one
        // allocation per round trip, next to the network's cost and the command's own buffers.
        Box::pin(async move { grant(reply.await?, cells) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_the_wrong_shape_are_response_errors() {
        use redis::Value::{Array, Int, Okay};
        assert_eq!(grant(Array(vec![Int(3), Int(0)]), 5), Ok(Grant::cells(3)));
        assert_eq!(
            grant(Array(vec![Int(0), Int(1500)]), 5),
            Ok(Grant::none(std::time::Duration::from_micros(1500)))
        );
        for reply in [
            Okay,
            Array(vec![Int(9), Int(0)]),
            Array(vec![Int(0), Int(0)]),
        ] {
            let err = grant(reply, 5).unwrap_err();
            assert_eq!(err.kind(), StoreErrorKind::Response, "{err}");
            assert!(err.message().contains("GCRA script answered"), "{err}");
        }
    }
}
