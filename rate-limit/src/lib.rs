//! GCRA rate limiting for tower services, on `governor` and tokio time.
//!
//! A rate limit admits calls at the pace of a [`Quota`] (say 100 per second, up to 10 at once)
//! and turns the rest away at once with a [`Rejected`](seawall_core::Rejected) of kind
//! `RateLimited` whose `retry_after` says when a permit comes back, or lets them wait up to a
//! `max_wait` for one (never past the caller's [`Deadline`](seawall_core::Deadline)). It protects a service from more work than it was sized for, and shares a
//! service fairly between clients when keyed by client, API key or route; unlike a bulkhead, it
//! counts calls started per second, not calls in flight.
//!
//! Where it goes in a stack: on a server, outermost after the error adapter, so a call over the
//! limit costs nothing further down; under seawall-core's `http` adapter a rejection becomes
//! `429 Too Many Requests` with `Retry-After`. On a client, it keeps you within a downstream's
//! published limits; give it a `max_wait` there, so calls are smoothed rather than failed.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use seawall_core::http::ErrorResponseLayer;
//! use seawall_rate_limit::{Quota, RateLimitLayer};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(ErrorResponseLayer::new()) // over the limit: 429 with Retry-After
//!         .layer(
//!             RateLimitLayer::builder()
//!                 .name("api")
//!                 .quota(Quota::per_second(100).with_burst(10))
//!                 .build()?,
//!         ),
//! );
//! # Ok(())
//! # }
//! ```
//!
//! Keyed limits give each key its own quota: [`RateLimitLayer::keyed`] with an extractor, a
//! closure by [`key_fn`], or with the `http` feature `ClientIp` (from the connection or
//! `X-Forwarded-For`, with the trust spelled out), `Header` or `Route`. Key memory is
//! bounded; see [`Keyed`].
//!
//! ```
//! use seawall_rate_limit::{Quota, RateLimitLayer, key_fn};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), seawall_core::BoxError> {
//! // Two calls a minute per tenant, the tenant being the request's high bits.
//! let layer = RateLimitLayer::builder()
//!     .quota(Quota::per_minute(2))
//!     .build()?
//!     .keyed(key_fn(|id: &u64| id >> 32));
//! let svc = layer.layer(service_fn(|id: u64| async move { Ok::<_, seawall_core::BoxError>(id) }));
//! for _ in 0..2 {
//!     svc.clone().oneshot(1 << 32).await?;
//! }
//! let err = svc.clone().oneshot(1 << 32).await.unwrap_err();
//! assert!(seawall_core::rejected(&*err).unwrap().retry_after().is_some());
//! svc.oneshot(2 << 32).await?; // another tenant
//! # Ok(())
//! # }
//! ```
//!
//! With a `max_wait`, a call over the limit sleeps until its bucket has a permit, checks again,
//! and is rejected at once if that would take longer than the max. A waiting call reserves
//! nothing, so under contention whoever checks first once a permit is back takes it, and a
//! dropped waiting call costs the quota nothing. The inner service must be `Clone`: a waiting
//! call takes the service it was called on (ready, as tower requires) and leaves a clone.
//!
//! The limiter reads tokio's clock ([`clock::TokioClock`]), so tests on a paused clock see
//! permits come back as virtual time passes, and waiting calls sleep on a tokio timer; governor's
//! own `until_ready` is never used, as it sleeps on a wall-clock timer.
//!
//! Metrics: `seawall_rate_limit_calls_total{name, result = "permitted" | "waited" | "rejected"}`,
//! and for keyed limits `seawall_rate_limit_keys_evicted_total{name}` (keys evicted to make
//! room for new ones).
//!
//! # Differences from `tower::limit::RateLimit`
//!
//! - **GCRA, not a fixed window.** tower's [`RateLimit`][tower-rate] admits `num` calls per window
//!   of `per` and then nothing until the window ends, so a burst at the end of one window and the
//!   start of the next passes twice the rate. GCRA spaces permits evenly, with the burst it is
//!   given.
//! - **It rejects rather than waits, by default.** tower's stays `Pending` in `poll_ready` until
//!   its window ends: callers wait, and `Buffer`, `Balance` and axum see a service that is not
//!   ready. Here `poll_ready` only delegates; a call over the limit is rejected in `call` with
//!   `RateLimited` and a `retry_after` (a `429` with `Retry-After`), or, given a `max_wait`, waits
//!   that long at most and never past the caller's deadline.
//! - **Keyed, and shared by every service of a layer.** tower's state lives in each `RateLimit`
//!   (which is not `Clone`: axum needs it behind a `Buffer`), one count for all callers. Here the
//!   limiter is made when the layer is built and shared by every service it wraps, and it can keep
//!   a quota per client IP, header, route or any key, in bounded memory.
//!
//! [tower-rate]: https://docs.rs/tower/0.5/tower/limit/rate/struct.RateLimit.html
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
mod config;
mod event;
// The extractors live in `seawall_core::key`, where the keyed breaker finds them too; this
// name keeps the rate limit's paths.
pub use seawall_core::key as extract;
mod fleet;
pub mod future;
mod handle;
mod layer;
mod limiter;
mod service;
mod state;
pub mod store;

pub use self::config::{Period, Quota, RateLimitConfig, RateLimitConfigBuilder};
pub use self::event::{RejectedEvent, WaitedEvent};
#[cfg(feature = "http")]
pub use self::extract::{ClientIp, Header, Route};
pub use self::extract::{ExtractKey, Fingerprint, KeyExtractor, KeyFn, key_fn};
pub use self::fleet::config::{FleetConfig, FleetConfigBuilder};
pub use self::fleet::{Fleet, FleetBucket, FleetKeyed};
pub use self::handle::RateLimitHandle;
pub use self::layer::RateLimitLayer;
pub use self::limiter::{
    Check, Decision, Direct, DirectCache, Keyed, KeyedCache, Limiter, NoStore,
};
pub use self::service::RateLimit;
