//! Bulkheads for tower services: a limit on concurrent calls, with a bounded wait queue,
//! adaptive limits and partitions.
//!
//! A downstream that slows down does not fail at first: it holds on to every call a little
//! longer, and the caller piles up connections, tasks and memory until something else gives
//! way. A bulkhead caps how many calls are in flight at once; the rest wait briefly in a
//! bounded queue or are rejected at once with a [`Rejected`](seawall_core::Rejected) of kind
//! `BulkheadFull` (a `503` through seawall-core's `http` adapter), which is cheap for
//! everyone and tells load balancers to go elsewhere.
//!
//! - **Fixed**: [`max_concurrent`](BulkheadConfigBuilder::max_concurrent), with
//!   [`queue_limit`](BulkheadConfigBuilder::queue_limit) and
//!   [`max_wait`](BulkheadConfigBuilder::max_wait). A queued call also leaves when its
//!   caller's [`Deadline`](seawall_core::Deadline) passes, as `DeadlineExceeded`.
//! - **Adaptive**: the limit finds what the downstream can take, between a min and a max;
//!   [`AimdConfig`] (loss-based, for clients), [`VegasConfig`] and [`Gradient2Config`]
//!   (latency-based, for servers) as Netflix's `concurrency-limits` defines them. Each
//!   finished call is a sample of its latency, the calls in flight when it started and
//!   whether it dropped (a failure by the classifier, or a `Rejected` from further in);
//!   the limit moves once per [sample window](BulkheadConfigBuilder::sample_window). A window
//!   without a sign of overload (no drop, calls finishing as fast as they come) never leaves
//!   the limit below what Little's law needs for the calls offered, arrival rate × mean
//!   latency with headroom, so a downstream that only got slower is not cut off as if it
//!   were queueing.
//! - **Partitioned**: a share of the limit per partition (say live 0.9, batch 0.1) and a key
//!   that puts each call in one ([`BulkheadLayer::partition_by`], or by any of core's key
//!   extractors, [`BulkheadLayer::partition_by_key`]), so one noisy tenant cannot
//!   take every slot. With borrowing (the default) a partition may use any idle slot, the
//!   total never exceeds the limit, and when a slot frees, calls of a partition below its
//!   share are served before anyone else's; a lent slot comes back when the borrower's call
//!   ends (calls are never pre-empted). Without borrowing a partition never holds more than
//!   its share. Each partition may also fill only its share of the queue.
//! - A [`BulkheadHandle`] reads in flight, queued and the limit, and changes the limit.
//!
//! Where it goes in a stack: on a server, inside rate limiting and outside the timeout (a
//! call's time in the queue is not the handler's); on a client, inside retry and the circuit
//! breaker, so a rejection is seen by both.
//!
//! The slot is taken when the call is made (never in `poll_ready`, so idle clones hold
//! nothing) and given back when the response future finishes or is dropped; with
//! `BulkheadLayer::release_on_body_end` (feature `http`) when the response body ends, or once
//! the body has waited [`max_reader_idle`](BulkheadConfigBuilder::max_reader_idle) (default
//! 30 s) for a client that stopped reading. The uncontended path is a compare-and-swap on an
//! atomic count: no lock, no allocation.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use seawall_bulkhead::BulkheadLayer;
//! use seawall_core::http::ErrorResponseLayer;
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let (bulkhead, handle) = BulkheadLayer::builder()
//!     .name("api")
//!     .max_concurrent(64)
//!     .queue_limit(128)
//!     .max_wait(Duration::from_millis(50))
//!     .build()?
//!     .pair();
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(ErrorResponseLayer::new()) // a full bulkhead becomes 503
//!         .layer(bulkhead),
//! );
//! assert_eq!(handle.limit(), 64);
//! # Ok(())
//! # }
//! ```
//!
//! An adaptive, partitioned bulkhead for a server whose batch jobs must not crowd out live
//! traffic:
//!
//! ```
//! use http::Request;
//! use seawall_bulkhead::{BulkheadLayer, Gradient2Config};
//!
//! # fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let layer = BulkheadLayer::builder()
//!     .name("orders")
//!     .adaptive(Gradient2Config::new().initial(50).min(10).max(500))
//!     .partition("live", 0.9)
//!     .partition("batch", 0.1)
//!     .build()?
//!     .partition_by(|req: &Request<()>| usize::from(req.headers().contains_key("x-batch")));
//! assert_eq!(layer.handle().limit(), 50);
//! # Ok(())
//! # }
//! ```
//!
//! Metrics, each labelled `name`: `seawall_bulkhead_in_flight`, `seawall_bulkhead_queued`,
//! `seawall_bulkhead_limit` (gauges), `seawall_bulkhead_rejected_total`,
//! `seawall_bulkhead_wait_seconds` (time in the queue of the calls that had to wait) and
//! `seawall_bulkhead_idle_released_total` (slots of response bodies given back because their
//! readers stopped reading).
//!
//! # Differences from `tower::limit::ConcurrencyLimit`
//!
//! - **It rejects in `call` instead of waiting in `poll_ready`.** tower's
//!   [`ConcurrencyLimit`][tower-concurrency] acquires a permit in `poll_ready` and stays `Pending`
//!   until one is free: a full limit is backpressure, `Buffer`, `Balance` and axum see a service
//!   that is not ready, and callers wait without bound. Here `poll_ready` only delegates, and a
//!   full bulkhead answers `call` at once with `BulkheadFull`, or queues the call in a queue
//!   bounded in length and in wait (and by the caller's deadline).
//! - **No permit is held between `poll_ready` and `call`.** `ConcurrencyLimit` keeps the permit it
//!   acquired inside the service until the next `call`, so a clone readied and then left idle holds
//!   a slot nobody uses (tower's `LoadShed` over it rejects instead of waiting, but still holds
//!   that permit). Here the slot is taken in `call` and held only by the response future, or the
//!   response body.
//! - **One limit per layer.** `ConcurrencyLimitLayer` makes a new semaphore for every service it
//!   wraps, and axum calls `layer()` again for every connection, so each connection gets a limit of
//!   its own (`GlobalConcurrencyLimitLayer` shares one). Here the state is made when the layer is
//!   built and shared by every service it wraps.
//! - Adaptive limits, partitions, slots held until the response body ends, a handle and metrics,
//!   which tower's layer does not have.
//!
//! [tower-concurrency]: https://docs.rs/tower/0.5/tower/limit/concurrency/struct.ConcurrencyLimit.html

mod ages;
#[cfg(feature = "http")]
mod body;
mod config;
mod event;
pub mod future;
mod handle;
mod idle;
mod layer;
mod limit;
mod partition;
mod semaphore;
mod service;
mod state;

#[cfg(feature = "http")]
#[allow(deprecated)]
pub use self::body::{BodyEnd, HoldBody};
pub use self::config::{BulkheadConfig, BulkheadConfigBuilder, Limit, PartitionConfig};
pub use self::event::{LimitChangedEvent, RejectReason, RejectedEvent};
pub use self::future::Completion;
pub use self::handle::BulkheadHandle;
pub use self::layer::BulkheadLayer;
pub use self::limit::{AdaptiveLimit, AimdConfig, Gradient2Config, VegasConfig};
pub use self::partition::{PartitionByKey, PartitionFn, PartitionKey, Unpartitioned};
pub use self::service::Bulkhead;
