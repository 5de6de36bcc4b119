//! A circuit breaker for tower services: stop calling a downstream that is failing, give it
//! time to recover, and let a few probe calls find out when it has.
//!
//! Without a breaker, every caller of a failing dependency waits for its timeout, holds a
//! connection and a task while it waits, and adds load to a service that is already down. A
//! breaker watches the outcomes of recent calls; when too many fail (or are too slow), it
//! *opens* and rejects calls at once with a [`Rejected`](seawall_core::Rejected) of kind
//! `CircuitOpen` and a `retry_after`. After the open duration it turns *half-open* and lets a
//! few probes through: if enough succeed it *closes* again, otherwise it opens again, for
//! longer if a backoff is configured.
//!
//! What it offers:
//! - count windows (the last N calls, always sliding) and time windows (the last N seconds,
//!   one bucket per second, O(1) per call and fixed memory), lock-free on every call: atomics
//!   only, no lock and no allocation on the path of a call;
//! - trip rules in any combination: failure rate, slow-call rate (calls longer than a
//!   duration), failures in a row (in the order the calls were admitted, so that the calls
//!   in flight when an outage begins do not end its run by succeeding late), with a minimum
//!   number of calls for the rates, and a rate trips only when it clears its threshold by more than
//!   the window's sampling noise ([`noise_margin`](CircuitBreakerConfigBuilder::noise_margin): a
//!   100-call window at a true 40 % reads 50 % about once in 300 calls). By default the failure
//!   rate (50 % of 100 calls, plus three standard deviations: 65 failures) and a run of failures
//!   that adapts to the failure rate before it ([`ConsecutiveFailures::Adaptive`]): 5 in a row from
//!   a healthy downstream, so a client that calls once a second starts rejecting after five
//!   failed calls rather than a hundred, but about 16 in a 30 % brownout, which a breaker must not
//!   turn into an outage; from 5 it stays closed and *sheds* (rejects the next first attempt
//!   after each failure, and every retry) and it opens at 14, as five failures from a clean
//!   history may be a brownout's onset as well as an outage;
//! - open durations fixed or growing with a jittered [`Backoff`](seawall_core::backoff::Backoff)
//!   (by default 1 s, 2 s, then 3 s while probes fail: a downstream that came back is used
//!   again within 5 s, and an outage gets a probe a second at most), each stretched at random
//!   by up to `open_jitter` (default 0.25) so that breakers that opened together probe apart, or taken from the result that tripped it ([`RetryAfter`], such as a
//!   `Retry-After` header) within a configured range (by default at least 1 s and at most the backoff's cap, or 10 ×
//!   the open duration);
//! - half-open probes bounded under any concurrency, let through one at a time at first and one
//!   more at once with each success (slow start, on by default: a downstream still draining a
//!   backlog gets one probe per client per round trip, not a second of each client's traffic,
//!   so that a fleet whose breakers opened together does not refill the backlog as their open
//!   durations end), closing on a success ratio, scored when
//!   their response head arrives (a server-streaming probe does not hold its slot for as long
//!   as the stream lives), with a maximum wait (60 s by default); dropped calls free their
//!   probe slot; late results of an earlier state are not counted;
//! - outcomes from any [`Classify`](seawall_core::classify::Classify): any error (default), HTTP
//!   5xx, gRPC codes at the end of a stream; overload (429, 503, `RESOURCE_EXHAUSTED`) counts
//!   for nothing unless [`overload_is_failure`](CircuitBreakerConfigBuilder::overload_is_failure),
//!   and so does a failure that an outlier set under a balancer marked as one endpoint's own
//!   ([`EndpointFault`](seawall_core::classify::EndpointFault),
//!   [`EndpointFaultError`](seawall_core::classify::EndpointFaultError)) unless
//!   [`endpoint_fault_is_failure`](CircuitBreakerConfigBuilder::endpoint_fault_is_failure): the
//!   set marks one only while another endpoint succeeds, so a breaker above the balancer does
//!   not cut off the endpoints that serve, and sees an outage of all of them;
//! - a [`CircuitBreakerHandle`] to read rates and counts, force a state, subscribe to
//!   transitions, and [reload](CircuitBreakerHandle::reload) new rules while calls flow (the
//!   state, the window and the calls in flight stay); hooks on state changes, rejections and
//!   outcomes. What it reads reflects the
//!   time elapsed without traffic, and a timer (automatic transitions, on by default; a tokio
//!   task only while the breaker is open or half-open) moves an idle breaker from open to
//!   half-open and back, so gauges and health followers see it too;
//! - a [`KeyedCircuitBreakerLayer`] with one breaker per host, route or tenant.
//!
//! Where it goes in a stack: on a client, outside the per-attempt timeout (so a hung call
//! counts as a failure) and inside retry (so a retry does not hammer an open breaker, and sees
//! its `retry_after`). On a server, under the [`ErrorResponseLayer`] that answers an open
//! circuit with `503` and `Retry-After`.
//!
//! [`ErrorResponseLayer`]: https://docs.rs/seawall-core/latest/seawall_core/http/struct.ErrorResponseLayer.html
//!
//! ```
//! use std::time::Duration;
//! use seawall_circuit_breaker::{CircuitBreakerLayer, CircuitState};
//! use seawall_core::{BoxError, RejectionKind, rejected};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let (layer, handle) = CircuitBreakerLayer::builder()
//!     .name("inventory")
//!     .count_window(10)
//!     .minimum_calls(5)
//!     .failure_rate_threshold(0.5)
//!     .open_duration(Duration::from_secs(10))
//!     .build()?
//!     .pair();
//! let svc = layer.layer(service_fn(|fail: bool| async move {
//!     if fail { Err::<(), BoxError>("down".into()) } else { Ok(()) }
//! }));
//!
//! for _ in 0..5 {
//!     let _ = svc.clone().oneshot(true).await;
//! }
//! assert_eq!(handle.state(), CircuitState::Open);
//! let err = svc.oneshot(false).await.unwrap_err();
//! assert_eq!(rejected(&*err).map(|r| r.kind()), Some(RejectionKind::CircuitOpen));
//! # Ok(())
//! # }
//! ```
//!
//! Metrics, every one labelled `name`:
//! `seawall_circuit_breaker_calls_total{outcome}` (`success`, `failure`, `slow_success`,
//! `slow_failure`, `ignored`, `rejected`, and `shed` for a call shed while closed),
//! `seawall_circuit_breaker_state{state}` (1 for the
//! current state, 0 for the others), `seawall_circuit_breaker_transitions_total{from, to}`,
//! `seawall_circuit_breaker_failure_rate` and `seawall_circuit_breaker_slow_call_rate`.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod config;
pub mod future;
mod handle;
mod keyed;
mod layer;
mod retry_after;
mod run;
mod service;
mod state;
mod window;

pub use self::config::{
    CircuitBreakerConfig, CircuitBreakerConfigBuilder, ConsecutiveFailures, FromConfig,
    OpenDuration, Window,
};
pub use self::handle::CircuitBreakerHandle;
pub use self::keyed::{ByAuthority, HasAuthority, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
pub use self::layer::CircuitBreakerLayer;
pub use self::retry_after::{NoRetryAfter, RetryAfter, RetryAfterFn, RetryAfterHeader};
pub use self::service::CircuitBreaker;
pub use self::state::{
    CallOutcome, CircuitState, OutcomeEvent, RejectReason, RejectedEvent, StateChangedEvent,
};
pub use self::window::WindowCounts;
