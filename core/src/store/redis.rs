//! A Lua script in Redis, loaded once and called by its SHA1: what every fleet-wide layer's
//! Redis store is made of, each with its own script.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, Script, ToRedisArgs};

use super::config::{StoreConfig, URL, redacted};
use super::guard::{StoreError, StoreErrorKind};
use crate::config::ConfigError;

/// One Lua script on one Redis, called atomically on the server by its SHA1 (`EVALSHA`); a
/// server that lost it (restarted, or `SCRIPT FLUSH`) answers `NOSCRIPT` and it is loaded
/// again at once.
///
/// It goes through the `redis` crate's [`ConnectionManager`], one multiplexed connection that
/// reconnects by itself after Redis restarts; cloning it clones that handle, so one manager
/// can serve every store of a process.
#[derive(Clone)]
pub struct RedisScript {
    conn: ConnectionManager,
    script: Arc<Script>,
    url: Option<Arc<str>>,
}

impl RedisScript {
    /// `source` on an existing connection manager.
    pub fn new(conn: ConnectionManager, source: &str) -> Self {
        Self {
            conn,
            script: Arc::new(Script::new(source)),
            url: None,
        }
    }

    /// `source` on the Redis at the configuration's `redis_url`, connected lazily: a Redis
    /// that is down now is the failure policy's to handle when calls come. The manager's own
    /// response and connection timeouts are the configuration's `timeout`. Must be called
    /// within a tokio runtime.
    ///
    /// A `ConfigError` for `redis_url` when there is none or it is not a valid URL.
    pub fn open(config: &StoreConfig, source: &str) -> Result<Self, ConfigError> {
        let url = config
            .redis_url()
            .ok_or_else(|| ConfigError::expected("redis_url", "nothing", URL))?;
        let invalid = |e: RedisError| {
            ConfigError::expected(
                "redis_url",
                format_args!("{:?} ({:?})", redacted(url), e.kind()),
                URL,
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
            ..Self::new(conn, source)
        })
    }

    /// The Redis it talks to, its password hidden; `None` on a connection manager given to
    /// [`new`](Self::new).
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The SHA1 the script is called by.
    pub fn sha(&self) -> &str {
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
            .map_err(StoreError::from)
    }

    /// Runs the script on `key` with `args` (a tuple writes each of its items as one
    /// argument), and answers its reply as it came.
    pub fn invoke<A>(
        &self,
        key: &[u8],
        args: A,
    ) -> impl Future<Output = Result<redis::Value, StoreError>> + Send + 'static
    where
        A: ToRedisArgs + Send + 'static,
    {
        let mut conn = self.conn.clone();
        let script = self.script.clone();
        let key = key.to_vec();
        async move {
            script
                .key(key)
                .arg(args)
                .invoke_async(&mut conn)
                .await
                .map_err(StoreError::from)
        }
    }
}

impl fmt::Debug for RedisScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisScript")
            .field("url", &self.url)
            .field("script_sha", &self.sha())
            .finish()
    }
}

/// Sorts a Redis error into what the guard counts: the server's own errors (a failing
/// script, a wrong type) apart from unreachable servers and answers that make no sense.
impl From<RedisError> for StoreError {
    fn from(err: RedisError) -> Self {
        let kind = match err.kind() {
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreErrorKind::Response,
            ErrorKind::Server(_) | ErrorKind::Extension => StoreErrorKind::Script,
            _ if err.is_timeout() => StoreErrorKind::Timeout,
            _ => StoreErrorKind::Connection,
        };
        StoreError::new(kind, err)
    }
}
