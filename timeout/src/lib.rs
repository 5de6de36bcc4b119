//! Per-call timeouts for tower services, with deadline propagation.
//!
//! A call that outlives its timeout is ended with a [`Rejected`](seawall_core::Rejected) of
//! kind `TimedOut`, and the inner call is dropped (cancelled). Without a timeout, a downstream
//! that stops answering holds every caller's connection, task and memory until something else
//! gives way.
//!
//! Where it goes in a stack: on a server, inside rate limiting and the bulkhead, so rejected
//! calls cost nothing; on a client, twice — a total timeout outside retry, so retries never
//! outlast what the caller will wait, and a per-attempt timeout inside it, so one slow attempt
//! does not use up the whole budget.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use seawall_core::http::ErrorResponseLayer;
//! use seawall_timeout::TimeoutLayer;
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(ErrorResponseLayer::new()) // a timeout becomes 504, no HandleErrorLayer
//!         .layer(TimeoutLayer::builder().name("api").timeout(Duration::from_secs(2)).build()?),
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # Adaptive timeouts
//!
//! A fixed attempt timeout is a guess about a downstream's latency: too short and a downstream
//! that became uniformly slower (a bigger query, a colder cache) is cut off, every attempt a
//! failure, slow turned into an outage; too long and a black hole holds every caller for the
//! whole of it. An [`AdaptiveTimeout`] follows the downstream instead: 3 × the 99th percentile
//! of the last 30 s of calls, between a floor and a ceiling. Each cut doubles the timeout of
//! the calls that follow until one answers in time, so the timeout climbs to a slower
//! downstream within a few cuts while a black hole is still cut, at the ceiling at the latest.
//! A cut says only that the call would have taken at least its time, so it counts as the
//! percentile that time came from: cuts hold the timeout where it is and never raise it; only
//! calls that answer do (the doubling's among them). A downstream that got slower answers
//! the doubled calls and the timeout follows; a tail of calls that hang or take seconds (2 %
//! of calls, say) answers nothing, and is cut at the timeout it had and retried, rather than
//! tripling the timeout each time its cuts fill 1 % of the window. Under a retry layer, an
//! attempt that no retry can follow ([`seawall_core::Attempt`]) may use what is left of the
//! caller's [`Deadline`] (made current by a [`scoped`](TimeoutLayer::scoped) or propagating
//! timeout above): cutting it early would only turn a slow answer into a failure. So may every
//! attempt before enough calls were seen, and once cuts have doubled the timeout past its
//! ceiling with no call answered within the ceiling since: a downstream uniformly slower than
//! the ceiling (600 ms calls, a 1 s deadline, a 500 ms ceiling) is waited for instead of cut
//! on every attempt.
//!
//! ```
//! use std::time::Duration;
//! use seawall_timeout::{AdaptiveTimeout, TimeoutLayer};
//!
//! # fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let (attempt, handle) = TimeoutLayer::builder()
//!     .name("inventory.attempt")
//!     .adaptive(AdaptiveTimeout::new().ceiling(Duration::from_millis(500)))
//!     .build()?
//!     .pair();
//! // Until 100 calls were seen, the ceiling.
//! assert_eq!(handle.timeout(), Duration::from_millis(500));
//! # let _ = attempt;
//! # Ok(())
//! # }
//! ```
//!
//! Deadline propagation ([`TimeoutLayer::propagate`]) shortens the timeout to the caller's
//! own deadline, read from `grpc-timeout` (and optionally a header in milliseconds), and on a
//! client writes the budget left as `grpc-timeout`; see [`deadline`]. A call ended by the
//! caller's deadline rather than the configured timeout fails as `DeadlineExceeded`, which is
//! not the downstream's failure: breakers ignore it and retry never repeats it. A call whose
//! caller's time is up on arrival is rejected without calling the inner service.
//! [`InboundDeadlineLayer`] stamps the caller's deadline as a request arrives, outermost in a
//! server stack, so that time spent in queues counts against it.
//!
//! Metrics: `seawall_timeout_calls_total{name, result = "completed" | "timed_out" |
//! "deadline_exceeded"}`.
//!
//! A [`TimeoutHandle`] reads a live timeout and reloads it (a new duration, or an adaptive
//! timeout's bounds) without a restart; calls in flight keep the timeout they were given.
//!
//! # Differences from `tower::timeout`
//!
//! - **The timer starts at the first `Pending`.** tower's [`Timeout`][tower-timeout] creates a
//!   `Sleep` in `call`, for every call. Here a call that answers on its first poll (a cache hit, a
//!   rejection from an inner layer) never touches the timer wheel; the timer is armed when the
//!   inner call first waits. A timeout with a deadline ([`scoped`](TimeoutLayer::scoped) or
//!   propagating) over another timeout arms no timer of its own while the one below fires
//!   first, so a client stack's total and attempt timeouts cost one timer while an attempt
//!   waits, and which of them ends the call is unchanged.
//! - **Deadline propagation.** tower's timeout is one fixed duration. This one shortens itself to
//!   the caller's deadline (`grpc-timeout`, a millisecond header or a [`Deadline`] extension),
//!   makes that deadline current for the layers and handler below, and writes the budget left on
//!   outbound requests. Under propagation its timer fires at the deadline the inner call was
//!   handed, so the two agree.
//! - **The caller's deadline is its own kind.** tower ends every call the same way, with `Elapsed`.
//!   Here a call ended by the configured timeout is `TimedOut` (the downstream was slow: breakers
//!   count it, retry may repeat it), one ended by the caller's deadline is `DeadlineExceeded`
//!   (nobody waits for the answer any more: no breaker counts it and no retry repeats it), and a
//!   call whose caller's time is up on arrival is never made.
//! - **An answer, not a reset.** The error is a [`Rejected`](seawall_core::Rejected), which
//!   seawall-core's adapters answer with `504` or `DEADLINE_EXCEEDED`; a tonic server resets the
//!   stream on tower's `Elapsed`, and the client sees `Internal: h2 protocol error`.
//!
//! [tower-timeout]: https://docs.rs/tower/0.5/tower/timeout/struct.Timeout.html

mod config;
mod cover;
pub mod deadline;
mod event;
pub mod future;
mod handle;
mod inbound;
mod layer;
mod service;
mod state;

pub use self::config::{
    AdaptiveTimeout, DeadlineConfig, TimeoutConfig, TimeoutConfigBuilder, TimeoutMode,
};
pub use self::deadline::{
    Budget, Deadline, Deadlines, HeaderDeadlines, NoDeadlines, ScopedDeadlines,
};
pub use self::event::TimedOutEvent;
pub use self::handle::TimeoutHandle;
pub use self::inbound::{InboundDeadline, InboundDeadlineLayer, InboundFuture};
pub use self::layer::TimeoutLayer;
pub use self::service::Timeout;
