//! Hedged requests for tower services: when a call has not answered after a delay, send it
//! again and take whichever answer comes first.
//!
//! A few calls in a hundred are slow for reasons that have nothing to do with the request: a
//! garbage collection, a cold cache, a busy neighbour, one slow replica. Waiting for them sets
//! the tail latency of everything that calls them. A hedge sends a copy of a call that has
//! waited longer than most calls take; the first success answers, and the other attempts are
//! dropped (cancelled). With the delay at the 95th percentile of recent latency, at most about
//! 5 % of calls are hedged and the tail shrinks to about the delay plus one ordinary call ("The
//! Tail at Scale", Dean and Barroso).
//!
//! - **Delay**: fixed ([`delay`](HedgeConfigBuilder::delay)), or a percentile of the latency
//!   of recent calls ([`PercentileDelay`], the default: p95 plus half its distance from the
//!   median, over 10 s, once 100 calls were seen, so that calls only queued for a moment are
//!   not hedged; from 59 calls, the largest of them, which bounds p95 with 95 % confidence),
//!   from seawall-core's lock-free [`LatencyEstimate`](seawall_core::latency), read with one
//!   atomic load per call. A first attempt that a hedge beat counts in the estimate with the
//!   time it had taken then, so the percentile does not drift down (below 100 calls, as the
//!   largest latency, so that it holds the delay rather than raising it).
//! - **Up to N attempts** ([`max_attempts`](HedgeConfigBuilder::max_attempts), default 2):
//!   hedge `k` goes out after `k` delays while no attempt has succeeded.
//! - **First success wins**: the other attempts are dropped, which layers below read as a
//!   cancellation (a circuit breaker records nothing for them). An error waits for the
//!   attempts still in flight and is the answer only when none of them succeeds; an error
//!   before the delay is the answer at once (hedging is for slow calls, retrying failed ones
//!   is retry's job).
//! - **A hedge budget** (on always; [`BudgetConfig`], default 10 % of the requests of the
//!   last 10 s): a downstream that turns uniformly slow would otherwise see every call twice.
//!   It has no floor, so the bound holds for a fleet of any size; it is paced at its ratio
//!   of the current request rate, so an allowance banked in quiet seconds never goes out in
//!   one burst; while it is spent, calls are not hedged.
//! - **Only what is safe to send twice**: a [`HedgePolicy`] copies the request when the call
//!   is made (the first attempt takes the request). Nothing that may not be sent twice is
//!   hedged by default: [`DefaultPolicy`] hedges a `Clone` request whose type is
//!   [`Idempotent`] (an `http::Request` only with `GET`, `HEAD`, `OPTIONS`, `PUT` or
//!   `DELETE`, so a `POST` is sent once; the plain types; a type of yours that implements
//!   it), `HttpPolicy` (feature `http`) the same methods with replayable bodies (put
//!   seawall-core's `ReplayBodyLayer` above the hedge for bodies of any type).
//!
//! Where it goes in a client stack: inside the total timeout (which bounds the call and every
//! hedge) and retry, outside the circuit breaker, the per-attempt timeout and a bulkhead, so
//! each hedge is an attempt of its own to them. `poll_ready` readies the first attempt's
//! service; each hedge readies a clone of its own.
//!
//! A [`HedgeHandle`] reads the delay, the latency and the budget, and
//! [reloads](HedgeHandle::reload) a fixed delay, the most attempts and the budget ratio live,
//! for every service of the layer, with no lock on the calls' path (atomics they already read).
//!
//! The path that does not hedge allocates nothing. A call answered at its first poll does not
//! read the clock (it counts as taking no time); one that waits reads it when it first waits,
//! for its hedge timer, and again when it answers, for the estimate: a call's latency and its
//! hedge delay count from its first poll. Copying the request is the policy's cost (free for
//! a `Copy` or `Arc` request; an `http::Request` copies its head).
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use seawall_core::BoxError;
//! use seawall_hedge::HedgeLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let (layer, handle) = HedgeLayer::builder()
//!     .name("search")
//!     .delay(Duration::from_millis(50))
//!     .build()?
//!     .pair();
//! let attempts = Arc::new(AtomicU32::new(0));
//! let svc = layer.layer(service_fn(move |query: u32| {
//!     let n = attempts.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         // The 21st attempt hangs for a second; every other takes 10 ms.
//!         let ms = if n == 20 { 1000 } else { 10 };
//!         tokio::time::sleep(Duration::from_millis(ms)).await;
//!         Ok::<_, BoxError>(query)
//!     }
//! }));
//! for query in 0..20 {
//!     svc.clone().oneshot(query).await?; // 20 calls earn the budget 2 hedges
//! }
//! let start = tokio::time::Instant::now();
//! assert_eq!(svc.oneshot(20).await?, 20);
//! assert!(start.elapsed() < Duration::from_millis(100)); // hedged at 50 ms, answered at 60
//! assert_eq!(handle.budget_available(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! Metrics, each labelled `name`: `seawall_hedge_calls_total` (calls through the layer),
//! `seawall_hedge_sent_total` (hedges sent: one plus sent over calls is the load
//! amplification), `seawall_hedge_won_total` (calls a hedge answered first) and
//! `seawall_hedge_budget_exhausted_total` (hedges not sent because the budget was spent).
//! Hooks: [`on_hedge`](HedgeLayer::on_hedge), [`on_hedge_won`](HedgeLayer::on_hedge_won),
//! [`on_budget_exhausted`](HedgeLayer::on_budget_exhausted).
//!
//! # Differences from `tower::hedge`
//!
//! - **A hedge budget.** tower's [`Hedge`][tower-hedge] hedges every call slower than its
//!   percentile, so a downstream that turns uniformly slow sees every call twice, when it can least
//!   take it. Here hedges draw from a budget and stop while it is spent.
//! - **No lock per call.** tower's keeps its latency histogram behind a `Mutex` locked on every
//!   call (to decide, to read the delay, to record). Here the estimate is lock-free and the delay
//!   one atomic load.
//! - **The first success wins.** tower's answers with whichever attempt ends first, an error
//!   included. Here an error waits for the attempts still in flight.
//! - **A fixed delay or a percentile, up to N attempts.** tower's sends at most one hedge, after a
//!   percentile counted in whole milliseconds; here the delay may be fixed, and
//!   [`max_attempts`](HedgeConfigBuilder::max_attempts) bounds the attempts.
//! - **Only what is safe to send twice.** tower's hedge sends again whatever its `Policy` clones,
//!   and has no default policy: a `Clone` `POST` is hedged as readily as a `GET`. Here the
//!   default hedges only [`Idempotent`] requests, an `http::Request` only with an idempotent
//!   method.
//!
//! [tower-hedge]: https://docs.rs/tower/0.5/tower/hedge/struct.Hedge.html

mod budget;
mod config;
mod event;
pub mod future;
mod handle;
mod layer;
mod policy;
mod service;
mod state;

pub use self::config::{BudgetConfig, Delay, HedgeConfig, HedgeConfigBuilder, PercentileDelay};
pub use self::event::{BudgetExhaustedEvent, HedgeEvent, HedgeWonEvent};
pub use self::handle::HedgeHandle;
pub use self::layer::HedgeLayer;
#[cfg(feature = "http")]
pub use self::policy::HttpPolicy;
pub use self::policy::{DefaultPolicy, HedgePolicy, Idempotent, PolicyFn};
pub use self::service::Hedge;
