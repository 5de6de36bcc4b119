//! Retry for tower services, built so that a stack never multiplies load on a failing
//! downstream.
//!
//! A call that failed for a passing reason (a dropped connection, a restarting instance, a
//! brief overload) often works the second time. Retrying it hides the blip from the caller.
//! Retrying blindly does the opposite when the downstream is truly down: every caller sends
//! two or three times the traffic that broke it. So every retry here waits on a backoff with
//! jitter, and draws from a [`RetryBudget`] (on by default: 9 % of recent requests, with no
//! per-client floor, so that it holds for a fleet of any size) so that retries stay a small
//! share of traffic however long the outage lasts. A retry the budget refuses ends the call
//! with a [`Rejected`](seawall_core::Rejected) of kind `BudgetExhausted` whose `source()` is
//! the last error (a response is returned as it came), so that a retry layer further out does
//! not retry what this one refused.
//!
//! What is retried is a [`RetryPolicy`]'s call. [`DefaultPolicy`] never repeats what may not
//! be sent twice: for an `http::Request` it is `HttpPolicy`, and for other request types it
//! retries any error of a request whose type is [`Idempotent`]. `HttpPolicy` (feature `http`) only idempotent methods, on 5xx, 429 and
//! errors, honouring `Retry-After`; `GrpcPolicy` (feature `grpc`) only the methods you mark
//! idempotent, on `UNAVAILABLE` (and transport failures that provably never reached the
//! server), honouring `grpc-retry-pushback-ms`. An open circuit from an inner breaker is never retried (the
//! breaker decides when to probe again); a [`Rejected`](seawall_core::Rejected) from an inner
//! bulkhead or rate limiter is retried only when it names a `retry_after`, and never before
//! it; and a wait longer than `max_delay` ends the retries at once instead of holding the
//! caller.
//!
//! An overload refusal ([`Verdict::Overloaded`]: a `429` or `503`, `RESOURCE_EXHAUSTED`, a
//! gRPC pushback) is retried after a wait drawn uniformly from zero to half the time the call
//! has left (when `max_elapsed` bounds the call, as a stack's total timeout does), or after its
//! backoff or `Retry-After` when longer. A downstream that refuses refuses a burst of calls at
//! once; retried within the backoff's first 100 ms, the burst's retries come back as a smaller
//! copy of it, into the same overload whenever that lasts longer, while spread over the time
//! the callers will still wait they reach the downstream in the moments the burst left idle.
//! With a 1 s deadline the retry of a fast refusal waits 0–500 ms, and still has half a second.
//!
//! A downstream's `Retry-After` (or gRPC pushback) holds back the retries of every request of
//! the layer to the same authority (the URI's `host:port`, for HTTP and gRPC) until it
//! expires, not only of the request that got it: the server asked all its callers to wait, and
//! the requests in flight beside that one would otherwise retry into the same refusal. The
//! other hosts a shared client calls did not ask, and their retries go on. First attempts still
//! go out (they are the traffic the downstream limits). The holds live in a fixed table of 16
//! authorities, a new one taking the slot that expires first, so that hosts chosen by whoever
//! writes the URIs cannot grow it (a host pushed out of the table still holds the request that
//! got its hint); requests that name no authority (other request types, relative URIs, the
//! policies [`RetryOn`] and [`PolicyFn`]) share one layer-wide hold. An inner layer's
//! `retry_after` (a breaker's, a keyed rate limit's) holds back only its own request.
//!
//! Where it goes in a client stack: inside a total timeout (which bounds the whole call,
//! retries included; dropping the call stops retrying at once) and outside the circuit
//! breaker and a per-attempt timeout, so each attempt is judged and bounded on its own. For
//! HTTP requests, put `ReplayBodyLayer` (feature `http`) above it so that bodies can be sent
//! again.
//!
//! ```
//! use std::time::Duration;
//! use seawall_core::BoxError;
//! use seawall_core::backoff::Backoff;
//! use seawall_retry::{BudgetConfig, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let flaky = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::builder()
//!             .name("inventory")
//!             .max_attempts(3)
//!             .backoff(Backoff::exponential(Duration::from_millis(10)).cap(Duration::from_secs(1)).build()?)
//!             // One client, not one of a fleet: a floor of a retry a second lets its first
//!             // call be retried (the default budget has none, see `budget`).
//!             .budget(BudgetConfig::new(0.09, 1, Duration::from_secs(10))?)
//!             .build()?,
//!     )
//!     .service(service_fn(move |sku: u32| {
//!         let failures = flaky.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!         async move {
//!             if failures == 0 { Err::<u32, BoxError>("connection reset".into()) } else { Ok(sku * 10) }
//!         }
//!     }));
//! assert_eq!(svc.oneshot(7).await?, 70); // the first attempt failed, the retry worked
//! # Ok(())
//! # }
//! ```
//!
//! A fleet of replicas can share one budget, so that "retries stay under 10 % of the
//! traffic" holds for the fleet: see [`fleet`] (with the `redis` feature, in Redis).
//!
//! Metrics: `seawall_retry_calls_total{name, kind}` with `kind` one of
//! `success_without_retry`, `success_with_retry`, `failed_without_retry`, `failed_with_retry`;
//! `seawall_retry_attempts_total{name}` (every attempt sent, the first included, so attempts
//! over calls is the load amplification); `seawall_retry_budget_exhausted_total{name}`. Each
//! retry is logged at `debug` with its attempt number and delay, and told to the
//! [`on_retry`](RetryLayer::on_retry) hook.
//!
//! # Differences from `tower::retry`
//!
//! - **It does not clone the service per call.** tower's [`Retry`][tower-retry] clones itself,
//!   policy and inner service, into every response future, so every call clones the stack below it.
//!   Here a call clones one `Arc`, and the inner service is cloned only when a retry is actually
//!   sent.
//! - **Backoff, jitter and a budget are built in and on by default.** tower leaves them to the
//!   `Policy` you write (its `TpsBudget` and `ExponentialBackoff` are parts to wire in). Here every
//!   retry waits on a jittered backoff and draws from a [`RetryBudget`] (20 % of recent requests
//!   plus 10 a second) unless it is switched off; `Retry-After` and gRPC pushback set the next
//!   delay, and a wait past `max_delay` ends the retries instead of holding the caller.
//! - **Idempotent only, by default.** tower's `Policy` has no default: whatever it clones is
//!   retried. [`DefaultPolicy`] never repeats what may not be sent twice (HTTP: idempotent methods;
//!   gRPC: methods marked idempotent; other types: [`Idempotent`]), and never retries an open
//!   circuit, the caller's own deadline, or a rejection that does not say when to come back
//!   ([`rejection_verdict`]).
//! - The error is [`BoxError`](seawall_core::BoxError), with the inner error still downcastable, so
//!   stacks compose without nested error types; tower's keeps `S::Error`.
//!
//! [tower-retry]: https://docs.rs/tower/0.5/tower/retry/struct.Retry.html

pub mod budget;
mod config;
mod event;
pub mod fleet;
pub mod future;
mod handle;
mod layer;
pub mod policy;
mod service;
mod state;

pub use self::budget::RetryBudget;
pub use self::config::{BudgetConfig, RetryConfig, RetryConfigBuilder};
pub use self::event::RetryEvent;
#[cfg(feature = "redis")]
pub use self::fleet::RedisBudgetStore;
pub use self::fleet::{
    Budget, BudgetStore, FleetBudget, FleetBudgetConfig, FleetBudgetConfigBuilder,
    MemoryBudgetStore,
};
pub use self::handle::RetryHandle;
pub use self::layer::RetryLayer;
#[cfg(feature = "grpc")]
pub use self::policy::GrpcPolicy;
#[cfg(feature = "http")]
pub use self::policy::HttpPolicy;
pub use self::policy::{
    DefaultPolicy, Idempotent, PolicyFn, RetryOn, RetryPolicy, Verdict, rejection_verdict,
};
pub use self::service::Retry;
/// Replayable HTTP request bodies (from seawall-core, where the hedge layer uses them too).
#[cfg(feature = "http")]
pub use seawall_core::body;
#[cfg(feature = "http")]
pub use seawall_core::body::{ReplayBody, ReplayBodyLayer, ReplayBodyService, TryCloneBody};
