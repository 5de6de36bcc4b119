//! PostgreSQL behind a breaker, a bulkhead sized to the pool, and a timeout on each unit of
//! work.
//!
//! The driver is `tokio-postgres` with the `deadpool-postgres` pool: plain async, no TLS and no
//! compile-time database. Work is a closure given a pooled connection; it runs only once the
//! bulkhead admits it, so a full pool queues (briefly) in the bulkhead, where the wait is
//! bounded and measured, instead of inside the pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use http::StatusCode;
use seawall::bulkhead::{BulkheadHandle, BulkheadLayer};
use seawall::circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use seawall::health::{ComponentConfig, HealthTracker, ProbeConfig};
use seawall::{BoxError, Rejected, RejectionKind};
use serde_json::Value;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use super::config::{DatabaseConfig, ShopConfigError, TxRetryConfig};

/// What a unit of work answers: a status and a JSON body for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The status to answer with.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// An order answered again for a repeated Idempotency-Key.
    pub replayed: bool,
}

impl Reply {
    /// A reply of `status` with `body`.
    pub fn new(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            replayed: false,
        }
    }

    /// A client error: `status` with `{"error": message}`.
    pub fn error(status: StatusCode, message: &str) -> Self {
        Self::new(status, serde_json::json!({ "error": message }))
    }
}

/// A unit of work, run once the stack admits it.
struct Job(Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send + 'static>>);

/// A service's database.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    stack: BoxCloneSyncService<Job, Reply, BoxError>,
    breaker: CircuitBreakerHandle,
    bulkhead: BulkheadHandle,
    timeout_nanos: Arc<AtomicU64>,
    retry: Arc<ArcSwap<TxRetryConfig>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("breaker", &self.breaker)
            .field("bulkhead", &self.bulkhead)
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Db {
    /// A pool on `url` (`postgres://user@127.0.0.1:5432/shop`) guarded as `config` says.
    /// Connects lazily: a database that is down now is not an error here.
    pub fn new(url: &str, config: &DatabaseConfig, retry: TxRetryConfig) -> Result<Self, BoxError> {
        let mut pg: tokio_postgres::Config = url.parse()?;
        // A dead server must not hold a new connection for long.
        pg.connect_timeout(Duration::from_secs(1));
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(Duration::from_secs(1)))
            .create_timeout(Some(Duration::from_secs(1)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?;
        let (breaker, breaker_handle) =
            CircuitBreakerLayer::new(config.circuit_breaker.clone()).pair();
        let (bulkhead, bulkhead_handle) = BulkheadLayer::new(config.bulkhead.clone()).pair();
        let stack = ServiceBuilder::new()
            .layer(breaker)
            .layer(bulkhead)
            .service(service_fn(|job: Job| job.0));
        Ok(Self {
            pool,
            stack: BoxCloneSyncService::new(stack),
            breaker: breaker_handle,
            bulkhead: bulkhead_handle,
            timeout_nanos: Arc::new(AtomicU64::new(nanos(config.query_timeout))),
            retry: Arc::new(ArcSwap::from_pointee(retry)),
        })
    }

    /// The breaker in front of the database.
    pub fn breaker(&self) -> &CircuitBreakerHandle {
        &self.breaker
    }

    /// The bulkhead in front of the pool.
    pub fn bulkhead(&self) -> &BulkheadHandle {
        &self.bulkhead
    }

    /// The timeout of a unit of work now.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_nanos.load(Ordering::Relaxed))
    }

    /// The retry of transactions now.
    pub fn tx_retry(&self) -> TxRetryConfig {
        **self.retry.load()
    }

    /// Checks that `config` can replace the live one, changing nothing.
    pub fn check_reload(&self, config: &DatabaseConfig) -> Result<(), ShopConfigError> {
        let error = |e: seawall::config::ConfigError| ShopConfigError {
            source: "database".into(),
            message: e.within("database").to_string(),
        };
        self.breaker
            .check_reload(&config.circuit_breaker)
            .map_err(|e| error(e.within("circuit_breaker")))?;
        self.bulkhead
            .check_reload(&config.bulkhead)
            .map_err(error)?;
        Ok(())
    }

    /// Takes new thresholds while work flows: the breaker keeps its window and state, the
    /// bulkhead its calls in flight, the pool its connections (it grows or shrinks to the new
    /// size as they come back).
    pub fn reload(
        &self,
        config: &DatabaseConfig,
        retry: TxRetryConfig,
    ) -> Result<(), ShopConfigError> {
        self.check_reload(config)?;
        let error = |e: seawall::config::ConfigError| ShopConfigError {
            source: "database".into(),
            message: e.within("database").to_string(),
        };
        self.breaker
            .reload(config.circuit_breaker.clone())
            .map_err(|e| error(e.within("circuit_breaker")))?;
        self.bulkhead
            .reload(config.bulkhead.clone())
            .map_err(error)?;
        self.pool.resize(config.pool_size);
        self.timeout_nanos
            .store(nanos(config.query_timeout), Ordering::Relaxed);
        self.retry.store(Arc::new(retry));
        Ok(())
    }

    /// Creates the schema and the seed data if they are missing.
    pub async fn migrate(&self) -> Result<(), BoxError> {
        let client = self.pool.get().await?;
        client.batch_execute(include_str!("schema.sql")).await?;
        Ok(())
    }

    /// Probes the database with `SELECT 1` every second, as the critical component
    /// `database` of `health`.
    pub fn probe(&self, health: &HealthTracker) {
        let pool = self.pool.clone();
        let config = ProbeConfig::builder(ComponentConfig::new("database").expect("a valid name"))
            .interval(Duration::from_secs(1))
            .timeout(Duration::from_millis(500))
            .build()
            .expect("a valid probe");
        health.probe(config, move || {
            let pool = pool.clone();
            async move {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                client
                    .simple_query("SELECT 1")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            }
        });
    }

    /// Runs `work` on a pooled connection once the breaker and the bulkhead let it, within
    /// the query timeout. An error is a database failure (the breaker counts it); a client's
    /// mistake is an `Ok` reply with a 4xx status.
    pub async fn run<F, Fut>(&self, work: F) -> Result<Reply, BoxError>
    where
        F: FnOnce(Object, TxRetryConfig) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Reply, BoxError>> + Send + 'static,
    {
        let pool = self.pool.clone();
        let timeout = self.query_timeout();
        let retry = self.tx_retry();
        let job = Job(Box::pin(async move {
            let work = async move {
                let client = pool.get().await?;
                work(client, retry).await
            };
            match tokio::time::timeout(timeout, work).await {
                Ok(result) => result,
                Err(_) => Err(Rejected::new(RejectionKind::TimedOut, "db").into()),
            }
        }));
        self.stack.clone().oneshot(job).await
    }
}

/// Whether `err` is a serialization failure or a deadlock, which a new try may not meet.
pub fn is_retryable(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The wait before try `attempt + 1` of a transaction whose try `attempt` (from 1) failed
/// with `err`, or `None` if it is not tried again: only serialization failures, deadlocks
/// and unique violations (two tries racing with one Idempotency-Key: the next try finds the
/// winner's order) are, `retry.max_attempts` tries in all, the waits doubling.
pub fn retry_wait(
    retry: TxRetryConfig,
    attempt: u32,
    err: &tokio_postgres::Error,
) -> Option<Duration> {
    let again = is_retryable(err) || err.code() == Some(&SqlState::UNIQUE_VIOLATION);
    (again && attempt < retry.max_attempts)
        .then(|| retry.backoff.saturating_mul(1 << (attempt - 1).min(16)))
}
