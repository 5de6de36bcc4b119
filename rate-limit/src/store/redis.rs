//! The Redis store: GCRA in one Lua script, run atomically on the server.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, Script};
use seawall_core::config::ConfigError;

use super::{Grant, QuotaStore, StoreError, StoreErrorKind};
use crate::config::Quota;
use crate::fleet::config::{FleetConfig, redacted};

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
    conn: ConnectionManager,
    script: Arc<Script>,
    url: Option<Arc<str>>,
}

impl RedisStore {
    /// A store on an existing connection manager.
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            script: Arc::new(Script::new(GCRA)),
            url: None,
        }
    }

    /// A store on the Redis at the fleet configuration's `redis_url`, connected lazily: a
    /// Redis that is down now is the failure policy's to handle when calls come. The
    /// manager's own response and connection timeouts are the fleet's `timeout`.
    ///
    /// A `ConfigError` for `fleet.redis_url` when there is none or it is not a valid URL.
    pub fn open(fleet: &FleetConfig) -> Result<Self, ConfigError> {
        const EXPECTED: &str = "a `redis://host:port` or `unix:///path` URL";
        let url = fleet
            .redis_url()
            .ok_or_else(|| ConfigError::expected("fleet.redis_url", "nothing", EXPECTED))?;
        let invalid = |e: RedisError| {
            ConfigError::expected(
                "fleet.redis_url",
                format_args!("{:?} ({:?})", redacted(url), e.kind()),
                EXPECTED,
            )
        };
        let client = Client::open(url).map_err(invalid)?;
        let timeout = fleet.guard().timeout();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?;
        Ok(Self {
            url: Some(redacted(url).into()),
            ..Self::new(conn)
        })
    }

    /// The SHA1 the script is called by.
    pub fn script_sha(&self) -> &str {
        self.script.get_hash()
    }

    /// Loads the script now, so that the first calls find it.
    pub async fn load(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.script
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map(drop)
            .map_err(store_error)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("script_sha", &self.script_sha())
            .finish()
    }
}

/// Sorts a Redis error into what the guard counts: the server's own errors (a failing
/// script, a wrong type) apart from unreachable servers and answers that make no sense.
fn store_error(err: RedisError) -> StoreError {
    let kind = match err.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreErrorKind::Response,
        ErrorKind::Server(_) | ErrorKind::Extension => StoreErrorKind::Script,
        _ if err.is_timeout() => StoreErrorKind::Timeout,
        _ => StoreErrorKind::Connection,
    };
    StoreError::new(kind, err)
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
        let mut conn = self.conn.clone();
        let script = self.script.clone();
        let key = key.to_vec();
        let interval = u64::try_from(quota.replenish_interval().as_nanos()).unwrap_or(u64::MAX);
        let burst = quota.burst();
        // The `redis` crate's calls borrow the connection, so the round trip is boxed: one
        // allocation per round trip, next to the network's cost and the command's own buffers.
        Box::pin(async move {
            let reply: redis::Value = script
                .key(key)
                .arg(interval)
                .arg(burst)
                .arg(cells)
                .invoke_async(&mut conn)
                .await
                .map_err(store_error)?;
            grant(reply, cells)
        })
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
