//! Outlier ejection for a set of endpoints: stop sending calls to the one replica of five that
//! fails while the others work, for a while, and never to so many that the rest are swamped.
//!
//! A load balancer spreads calls over replicas by load, not by health: a replica that answers
//! every call at once with an error looks lightly loaded, and `p2c` sends it *more*. Outlier
//! detection watches each endpoint's results and ejects the ones that fail where their peers
//! do not (as Envoy and Linkerd do), which a retry or a circuit breaker in front of the whole
//! set cannot: the breaker sees 20 % failures and stays closed, the retry lands on the bad
//! replica again a fifth of the time.
//!
//! - **Consecutive failures** ([`consecutive_failures`](OutlierConfigBuilder::consecutive_failures),
//!   default 5): an endpoint that fails that many calls in a row is ejected at once.
//! - **Success rate** ([`SuccessRateConfig`], Envoy's): at each interval (default 10 s), the
//!   endpoints with at least `request_volume` calls (100) are compared, when there are at
//!   least `minimum_hosts` (5) of them; one whose success rate lies more than `stdev_factor`
//!   (1.9) standard deviations below their mean is ejected. The comparison runs on the first
//!   failure after an interval is over, so the set needs no timer task.
//! - **Ejection time** grows with repeated ejections: the base time (30 s) times its ejections
//!   in a row, at most the max (300 s); each interval an endpoint stays in takes one off.
//! - **A capped share** ([`max_ejected_share`](OutlierConfigBuilder::max_ejected_share),
//!   default 0.5): never more than that share of the endpoints (rounded down) is ejected at
//!   once, and never the last one in, so a failure of the whole fleet is not mistaken for
//!   outliers and the survivors are not swamped. An ejection over the cap is skipped (and
//!   counted).
//! - **Return** after the ejection time, or, with [`probe`](OutlierLayer::probe), once the
//!   endpoint answers a probe request with a success.
//! - **Return early when a fault wider than the cap ends**: an endpoint the cap kept in
//!   (its ejection was skipped) that then answers a run of successes (as many as the
//!   consecutive-failures rule's run, 5 by default) calls back every endpoint the detectors
//!   ejected: they come back in at once (or send their probe). When more endpoints fail
//!   than the cap lets out, the fault is the set's, not the ejected endpoints' own, and it
//!   is over when the endpoints left in recover; otherwise the survivors would carry the
//!   whole load for the rest of the ejection time (3 of 5 endpoints for 30 s). One that is
//!   still failing is ejected again after its run of failures until the end its ejection
//!   had, no later, and is not called back again before then: a wrong guess (an endpoint
//!   kept in that fails only part of its calls can answer a run of successes by chance)
//!   costs that run of failures, never a longer ejection. A handle's ejection is never
//!   called back.
//! - Outcomes from any [`Classify`](seawall_core::classify::Classify), as the circuit breaker
//!   takes them ([`AnyError`](seawall_core::classify::AnyError) by default; `HttpStatus`,
//!   `GrpcCodes`); a `Rejected` from further in that is not the endpoint's failure (a full
//!   bulkhead, an open breaker) counts for nothing.
//! - **A failure marked as the endpoint's own** while another endpoint in the set, not
//!   ejected, has a success as its latest outcome (and one within the last interval): an
//!   `http::Response` gets [`EndpointFault`](seawall_core::classify::EndpointFault) in its
//!   extensions, an error is wrapped in
//!   [`EndpointFaultError`](seawall_core::classify::EndpointFaultError) (its source is the
//!   endpoint's error). A circuit breaker above the balancer judges the whole set from each
//!   call alone: with four of five endpoints failing, four calls in five fail and it opens,
//!   cutting off the endpoint that still serves. A marked failure counts for nothing in the
//!   breaker by default; retry still retries it, and another endpoint likely serves it. A
//!   failure ends its own endpoint's standing as succeeding, so once every endpoint fails the
//!   set stops marking after about one failure of each, and the breaker sees the outage. The
//!   first failure after an interval without one (or the set's first) ends every endpoint's
//!   standing, since it may be the onset of an outage of all of them: until another endpoint
//!   succeeds again nothing is marked, so a client calling a few times a second sees an
//!   outage as fast as without marks.
//!   A set of one endpoint never marks; neither does an outcome known only at the end of a
//!   response body (its head has gone on). A success costs one more relaxed load; a marked
//!   failure costs the boxed wrapper, or the extensions map of a response that had none.
//!
//! **How a balancer leaves an ejected endpoint alone.** Each endpoint is an [`Endpoint`]
//! service whose `poll_ready` is `Pending` while it is ejected, and wakes the task when the
//! ejection ends. `tower::balance::p2c::Balance` keeps its services in a ready set and a
//! pending set: it picks two at random among the ready ones, takes the less loaded, and asks
//! that one `poll_ready` again right before the call; a service that answers `Pending` goes
//! to the pending set and another is picked. So an ejected endpoint never gets a call while
//! another is ready — and one is always in, by the cap. (An error from `poll_ready` would
//! make `Balance` drop the endpoint for good, which is why ejection is `Pending`, not an
//! error; this is the one layer whose `poll_ready` is not its inner service's alone, because
//! telling the balancer is its job.) Use it as a `Discover` wrapper,
//! `OutlierLayer::layer(discover)`, or make endpoints by hand with
//! [`OutlierLayer::endpoint`]. An endpoint leaves the set when the balancer drops it.
//!
//! **What a balancer ranks an endpoint by.** Its [`Load`](tower::load::Load) is its own
//! ([`EndpointCost`], see [`load`]), not the inner service's: tower's Peak EWMA — the latency
//! of its calls, peak-sensitive, times its calls in flight plus one — times a penalty of up to
//! 4 for recent failures that fades within seconds. Ranked by calls in flight alone, an
//! endpoint that fails every call at once looks the least loaded and gets *more* than its
//! share; ranked so, it gets a call when the healthy endpoints' workers are full or their
//! queues grow, so that the endpoints the share cap keeps in while they fail take only the
//! healthy ones' excess. The failures of an endpoint that was healthy weigh nothing while the
//! consecutive-failures rule can still eject it (the cap has room): that run ends in its
//! ejection within a few calls, where passed by it would take seconds.
//!
//! Where it goes in a client stack: around each endpoint, under the balancer; retry and the
//! circuit breaker (for the whole dependency) above the balancer.
//!
//! An [`OutlierHandle`] lists the endpoints, ejects or returns one by hand, and
//! [reloads](OutlierHandle::reload) the detectors, ejection times and share cap live for
//! every endpoint of the set (read without a lock, by failures and ejections only).
//!
//! ```
//! use seawall_core::BoxError;
//! use seawall_outlier::OutlierLayer;
//! use tower::balance::p2c::Balance;
//! use tower::discover::ServiceList;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! # // On the real clock a healthy backend's first call can be slower than the failing one's.
//! # tokio::time::pause();
//! let (outlier, handle) = OutlierLayer::builder()
//!     .name("backends")
//!     .consecutive_failures(3)
//!     .build()?
//!     .pair();
//! // Five backends; the first fails every call.
//! let backends = (0..5).map(|i| {
//!     service_fn(move |_: ()| async move {
//!         if i == 0 { Err::<usize, BoxError>("down".into()) } else { Ok(i) }
//!     })
//! });
//! let mut balance = Balance::new(outlier.layer(ServiceList::new(backends)));
//! let mut failures = 0;
//! for _ in 0..100 {
//!     if balance.ready().await?.call(()).await.is_err() {
//!         failures += 1;
//!     }
//! }
//! // After its first failure the first backend costs four times what the others do, and p2c
//! // passes it by; had it been picked three times in a row, it would have been ejected.
//! assert_eq!(failures, 1);
//! assert_eq!(handle.ejected(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! Metrics, each labelled `name` (the set's): `seawall_outlier_endpoints` and
//! `seawall_outlier_ejected` (gauges), `seawall_outlier_ejections_total{reason}`
//! (`consecutive_failures`, `success_rate`, `probe_failed`, `forced`) and
//! `seawall_outlier_ejections_skipped_total` (ejections the cap refused). With
//! [`endpoint_labels`](OutlierConfigBuilder::endpoint_labels),
//! `seawall_outlier_endpoint_ejected{endpoint}` too: off by default, since a set of many
//! endpoints would make as many series. Ejections and returns are logged at `info`.

mod config;
mod discover;
mod event;
pub mod future;
mod handle;
mod layer;
pub mod load;
mod probe;
mod service;
mod state;

pub use self::config::{OutlierConfig, OutlierConfigBuilder, SuccessRateConfig};
pub use self::discover::OutlierDiscover;
pub use self::event::{EjectedEvent, EjectionReason, EndpointStatus, ReturnedEvent, SkippedEvent};
pub use self::handle::OutlierHandle;
pub use self::layer::OutlierLayer;
pub use self::load::EndpointCost;
pub use self::probe::{NoProbe, Probe, ProbeFn};
pub use self::service::Endpoint;
