//! Guarding the calls a layer makes to a store its fleet shares, such as the Redis that holds
//! a fleet-wide rate limit or retry budget.
//!
//! A quota shared by N replicas lives outside them, so every layer that reads it makes a
//! network call, and that call can fail or hang. A request must never wait on it longer than
//! a short timeout, and a store that keeps failing must not be asked at every request: the
//! layer would add its timeout to every call and pile more load on a store that is already
//! struggling. [`StoreGuard`] gives each such layer both, built from the same rules as the
//! rest of seawall:
//!
//! - every call is bounded by [`timeout`](StoreGuardConfig::timeout) on tokio's clock
//!   ([`Guarded`]), so no request waits longer than that on a dead store;
//! - a breaker opens after [`failures`](StoreGuardConfig::failures) failed calls in a row and
//!   stays open for [`open_for`](StoreGuardConfig::open_for); then one call probes the store,
//!   and its success closes the breaker. This is the consecutive-failures breaker of linkerd
//!   and of seawall's circuit breaker, in one atomic word: the rate limit and retry crates may
//!   not depend on the circuit breaker crate, and a store needs none of its windows, half-open
//!   ratios or hooks.
//!
//! While the store cannot answer (a failed call, or an open breaker), the layer does what its
//! [`OnStoreFailure`] policy says, chosen explicitly for each layer: admit, refuse, or fall
//! back to a local share of the quota.
//!
//! What every fleet-wide layer configures the same way (the store's URL, its key prefix, the
//! failure policy and the guard) is a [`StoreConfig`], checked once here; with the `redis`
//! feature, `RedisScript` is the connection and the script each layer's Redis store runs.
//! Each layer keeps only its own script and its arithmetic.
//!
//! Metrics (names chosen by the layer, see [`StoreMetricNames`]): store errors by `error`
//! (`timeout`, `connection`, `script`, `response`), fallbacks by `policy`, round trips and
//! their duration.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use seawall_core::metrics::MetricScope;
//! use seawall_core::store::{StoreError, StoreErrorKind, StoreGuard, StoreGuardConfig, StoreMetricNames};
//!
//! const NAMES: StoreMetricNames = StoreMetricNames {
//!     errors: "seawall_rate_limit_store_errors_total",
//!     round_trips: "seawall_rate_limit_store_round_trips_total",
//!     round_trip_seconds: "seawall_rate_limit_store_round_trip_seconds",
//!     fallbacks: "seawall_rate_limit_store_fallbacks_total",
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let config = StoreGuardConfig::new(Duration::from_millis(50), 2, Duration::from_secs(1))?;
//! let guard = Arc::new(StoreGuard::new(config, &MetricScope::new("api"), &NAMES));
//! for _ in 0..2 {
//!     guard.admit().expect("closed");
//!     let failed = guard.guard(async { Err::<(), _>(StoreError::new(StoreErrorKind::Connection, "refused")) });
//!     assert!(failed.await.is_err());
//! }
//! assert!(guard.admit().is_err(), "two failures in a row open the breaker");
//! # Ok(())
//! # }
//! ```

mod config;
mod guard;
#[cfg(feature = "redis")]
mod redis;

pub use self::config::{RawStoreConfig, StoreConfig, redacted};
pub use self::guard::{
    Guarded, OnStoreFailure, StoreError, StoreErrorKind, StoreGuard, StoreGuardConfig,
    StoreMetricNames,
};
#[cfg(feature = "redis")]
pub use self::redis::RedisScript;
