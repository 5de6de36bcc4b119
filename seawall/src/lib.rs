//! Resilience middleware for tower, axum and tonic, in one dependency.
//!
//! seawall keeps a service standing when what it depends on fails. Each pattern is its own
//! crate, re-exported here behind a feature of the same name:
//!
//! | module | feature | what it does |
//! |---|---|---|
//! | `timeout` | `timeout` | per-call timeouts, deadline propagation through `grpc-timeout` |
//! | `retry` | `retry` | retry with backoff, jitter, a retry budget, Retry-After and gRPC pushback |
//! | `circuit_breaker` | `circuit-breaker` | circuit breaking on failure rate, slow calls or consecutive failures, plain and keyed |
//! | `bulkhead` | `bulkhead` | concurrency limits with a bounded queue: fixed, adaptive (AIMD, Vegas, Gradient2), partitioned |
//! | `rate_limit` | `rate-limit` | GCRA rate limiting on governor, direct or keyed (client IP, header, route) |
//! | `fallback` | `fallback` | alternative answers on failures and rejections |
//! | `hedge` | `hedge` | hedged requests after a fixed delay or a latency percentile, within a hedge budget |
//! | `outlier` | `outlier` | outlier ejection across a set of endpoints (consecutive failures, success rate), p2c-compatible, a capped share ejected |
//! | `chaos` | `chaos` | fault injection from a seeded RNG, for tests and chaos experiments |
//! | `health` | `health` | the health tracker, `/health/live` and `/health/ready`, gRPC health |
//! | `throttle` | `throttle` | client-side adaptive throttling: reject locally as the downstream refuses load (SRE book) |
//! | `http`, `grpc` | `http`, `grpc` | answering rejections with HTTP responses or gRPC statuses |
//! | (in `rate_limit`, `retry`) | `redis` | quotas and retry budgets shared by a fleet of replicas through Redis |
//!
//! Every layer's error is [`BoxError`]; what a layer decides itself is a [`Rejected`], found
//! anywhere in an error's source chain with [`rejected`]. [`ServiceBuilderExt`] adds the
//! layers to a `tower::ServiceBuilder`, and `stack` has them ready-made in the order that
//! works: a client stack for calls to a dependency and a server stack for a service's own
//! callers, each one layer built from one serde config (with the default features).
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use seawall::ServiceBuilderExt;
//! use seawall::timeout::TimeoutLayer;
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), seawall::config::ConfigError> {
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .with_http_errors()
//!         .with_timeout(TimeoutLayer::builder().timeout(Duration::from_secs(2)).build()?),
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # Calling a stack from a spawned task
//!
//! Every layer's service and response future is `Send` when what it holds is, so
//! `tokio::spawn(async move { svc.oneshot(req).await })` works over a downstream that names its
//! error in a `Service` impl, an `async fn`, an `impl Service` or a client such as tonic's
//! `Channel`, and a call made in one task can be awaited in another. One shape does not
//! compile, with tower's own layers as with these: `oneshot` inside a spawned `async` block
//! over a service whose *type* spells `BoxError`, such as a closure returning
//! `Result<_, BoxError>` or a `BoxCloneSyncService<_, _, BoxError>`. rustc checks the block
//! with the `'static` of that `BoxError` replaced by "any lifetime", and then no layer's
//! conversion of the inner error into a `BoxError` applies ("implementation of `From` is not
//! general enough"). Spawn the call's future itself, which rustc checks as it is:
//!
//! ```
//! use seawall::BoxError;
//! use seawall::retry::RetryLayer;
//! use tower::util::BoxCloneSyncService;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let client: BoxCloneSyncService<u64, u64, BoxError> =
//!     BoxCloneSyncService::new(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }));
//! let svc = RetryLayer::builder().build()?.layer(client);
//! // Not `tokio::spawn(async move { svc.oneshot(7).await })`:
//! let answer = tokio::spawn(svc.oneshot(7)).await??;
//! assert_eq!(answer, 7);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
#[cfg(all(
    feature = "timeout",
    feature = "retry",
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "rate-limit",
    feature = "throttle",
    feature = "hedge"
))]
pub mod stack;

pub use self::builder::ServiceBuilderExt;
pub use seawall_core::{
    BoxError, Name, Rejected, RejectionKind, backoff, classify, config, key, metrics, rejected,
};

#[cfg(feature = "bulkhead")]
#[doc(inline)]
pub use seawall_bulkhead as bulkhead;
#[cfg(feature = "chaos")]
#[doc(inline)]
pub use seawall_chaos as chaos;
#[cfg(feature = "circuit-breaker")]
#[doc(inline)]
pub use seawall_circuit_breaker as circuit_breaker;
#[cfg(feature = "grpc")]
#[doc(inline)]
pub use seawall_core::grpc;
#[cfg(feature = "http")]
#[doc(inline)]
pub use seawall_core::http;
#[cfg(feature = "fallback")]
#[doc(inline)]
pub use seawall_fallback as fallback;
#[cfg(feature = "health")]
#[doc(inline)]
pub use seawall_health as health;
#[cfg(feature = "hedge")]
#[doc(inline)]
pub use seawall_hedge as hedge;
#[cfg(feature = "outlier")]
pub use seawall_outlier as outlier;
#[cfg(feature = "rate-limit")]
#[doc(inline)]
pub use seawall_rate_limit as rate_limit;
#[cfg(feature = "retry")]
#[doc(inline)]
pub use seawall_retry as retry;
#[cfg(feature = "throttle")]
#[doc(inline)]
pub use seawall_throttle as throttle;
#[cfg(feature = "timeout")]
#[doc(inline)]
pub use seawall_timeout as timeout;

// The README files' Rust examples, run as doctests so that what they show keeps compiling and
// working. Only under `cfg(doctest)`: the files lie outside this crate's package.
#[cfg(doctest)]
mod readmes {
    #[doc = include_str!("../../README.md")]
    struct Workspace;
    #[doc = include_str!("../README.md")]
    struct Facade;
    #[doc = include_str!("../../core/README.md")]
    struct Core;
    #[doc = include_str!("../../timeout/README.md")]
    struct Timeout;
    #[doc = include_str!("../../retry/README.md")]
    struct Retry;
    #[doc = include_str!("../../circuit-breaker/README.md")]
    struct CircuitBreaker;
    #[doc = include_str!("../../bulkhead/README.md")]
    struct Bulkhead;
    #[doc = include_str!("../../rate-limit/README.md")]
    struct RateLimit;
    #[doc = include_str!("../../fallback/README.md")]
    struct Fallback;
    #[doc = include_str!("../../health/README.md")]
    struct Health;
    #[doc = include_str!("../../chaos/README.md")]
    struct Chaos;
    #[doc = include_str!("../../throttle/README.md")]
    struct Throttle;
}
