//! Client-side adaptive throttling for tower services: when the downstream refuses more of
//! its load than it accepts, refuse some calls locally before they cost it anything.
//!
//! A downstream that is over capacity still pays for every call it refuses: it reads the
//! request, looks at its queue and writes the answer. When every client keeps sending (and
//! retrying) at full rate, refusals alone can use up the capacity that should go to work. The
//! SRE book ("Handling Overload", client-side throttling) has each client keep two counts over
//! a recent window — **requests** it attempted and **accepts** the downstream took — and
//! reject a new call locally with probability
//!
//! ```text
//! p = max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! While the downstream accepts more than one request in K nothing is rejected. Past that the
//! client sends about K times what is accepted, so the downstream sees a bounded excess rather
//! than every client's full rate. A local rejection counts as a request without an accept, so
//! the throttle keeps letting a trickle through (about `1/window` calls a second at worst) and
//! notices when the downstream recovers. `K` is
//! [`multiplier`](ThrottleConfigBuilder::multiplier) (default 2); lower is more aggressive.
//!
//! **What counts.** The layer's classifier decides: a success is an accept, an
//! [`Overload`](seawall_core::classify::Outcome::Overload) (a `429` or `503` with `HttpStatus`,
//! `RESOURCE_EXHAUSTED` with `GrpcCodes`) a request without an accept, a failure an accept
//! unless [`accept_failures`](ThrottleConfigBuilder::accept_failures) is off (a downstream
//! that answers with errors is the circuit breaker's business), and an ignored result or a
//! cancelled call nothing. A [`Rejected`](seawall_core::Rejected) that seawall made further
//! in (an open circuit, a full bulkhead) never reached the downstream and counts for nothing.
//! The throttle's own rejections are of kind `Throttled`: `503` through seawall-core's HTTP
//! adapter and `UNAVAILABLE` through its gRPC adapter, and never a downstream failure to a
//! breaker, a bulkhead or retry further out.
//!
//! **The window.** Requests and accepts decay exponentially with time constant
//! [`window`](ThrottleConfigBuilder::window) (τ, default 500 ms): a call τ old weighs
//! `1/e`. With `r` requests a second and an accepted share `a` of them, the window holds
//! `R = r·τ` requests and `A = a·r·τ` accepts, so in steady state
//! `p = max(0, (1 − K·a) · r·τ / (r·τ + 1))`: nothing below `a = 1/K`, `1 − K·a` above it
//! once `r·τ ≫ 1`. When the downstream's capacity is `C < r/K`, the throttle settles where it
//! sends `K·C`.
//!
//! - *Noise.* The formula engages only once `R − K·A` exceeds `2·√((K − 1)·R)`, two standard
//!   deviations of what a downstream accepting exactly `1/K` gives by chance (accepts are then
//!   binomial). A small window would otherwise reject on noise: 1000 clients at 1.5 requests a
//!   second, each window stretched to 10 requests (*Low rates* below), against a downstream
//!   accepting 73 % of them, `R − 2A > 0` holds about 3 % of the time, `R − 2A > 2√R` about
//!   5·10⁻⁵ of it. At `r·τ = 500` requests the bound is 9 % of the window.
//! - *Reaction.* When accepts stop, `A` decays as `e^{−t/τ}` while `R` holds, so the first
//!   local rejection comes after about `τ·ln(K / (1 − 2√((K − 1)/R)))` (0.39 s with the
//!   defaults at 1000 requests a second, `τ·ln K` = 0.35 s as the window grows), at any rate
//!   of at least `min_requests / τ`.
//! - *Recovery.* After a long full refusal `p ≈ r·τ / (r·τ + 1)`. Once the downstream accepts
//!   again, the trickle's accepts grow the window's accepts about `e`-fold per `τ`, and
//!   rejections stop when `A` reaches `R/K`: about `τ·ln(r·τ/K)` (3.9 s at 10 000 requests a
//!   second, 2.8 s at 1000, 1.6 s at 100, with the defaults). After an overload that still
//!   accepted a rate `C`, about `τ·ln(r/(K·C))`, mostly nothing, for one client.
//! - *After an overload.* The formula rejects only while a call let through was refused (not
//!   accepted) within the window (`max_window`, `τ` by default): once the downstream refuses
//!   nothing for that long, nothing is rejected, whatever the counts still hold. A fleet needs
//!   it. Each client's accepts are `(1 − p)·q` of its requests, where `q`, the share of calls
//!   sent that the downstream accepts, is the same for every client; the formula then reads
//!   `p = 1 − K·q·(1 − p)`, which pulls a client to `p = 1` while the fleet sends more than
//!   `K` times what is accepted (`q < 1/K`) and to 0 below. The fleet as a whole settles at
//!   `q = 1/K`, but each client drifts to full rejection or none, and the ones at full
//!   rejection take `τ·ln(r·τ/K)` to recover from the trickle once the overload ends: in the
//!   lab's `quota` at 3–30 clients, 0.77–0.94 of the goodput after it (0.97–0.99 with the
//!   rule). During a full refusal the trickle (about `1/τ` calls a second) keeps the rule
//!   on; a gap in it longer than the window lets calls through until the next refusal comes
//!   back, one round trip. Checked on the calls the formula would reject, with the clock
//!   read they already take.
//! - *Low rates.* By default the window ages by time alone, so a client sending `r` requests
//!   a second holds about `r·τ` of them, and one holding under 4 (under 8 requests a second
//!   with the defaults) never throttles: `R − 2A ≤ R < 2√R`, the noise bound. That is a
//!   choice. A client learns of its downstream only through its own calls, and recovery takes
//!   as many of them as reaction does: a window stretched to a client's last
//!   [`min_requests`](ThrottleConfigBuilder::min_requests) requests (a
//!   [`max_window`](ThrottleConfigBuilder::max_window) longer than `τ`: each request then ages
//!   it by `1/min_requests`, time at least as `max_window` would) reacts to full refusal
//!   after about 17 of them (`A = 10.5·e^{−n/10}` must fall below `(10.5 − 2√10.5)/2`) and
//!   keeps rejecting for about as many once the downstream accepts again: seconds at two
//!   requests a second, half a minute at 0.2. In the lab's `quota` scenario (100 and 1000
//!   clients, 10 and 1 requests a second each during a threefold overload, 2 and 0.2 after)
//!   windows stretched to 30 s went on rejecting 24–66 % of the calls in each of the 10 s
//!   after the overload, when the downstream took them all (goodput after it 0.57 and 0.42 of
//!   the attainable; 0.995 and 1.000 with the default). A rare caller's load on a
//!   refusing downstream stays bounded by its retry budget and the `Retry-After` it is
//!   given; set `max_window` where its own refusals matter more than its recovery.
//!
//! A call costs two loads and one `fetch_add` on one shared word, and a clock read where time
//! can matter: on every call while the window holds under 256 requests, on one call in 16
//! above that (the counts then decay within about a tick, a sixteenth of τ or less), and on
//! every call while requests exceed K × accepts. The first such call of each tick decays the
//! counts with one compare-and-swap. No lock, no allocation; the random draw is taken only
//! when `p > 0`, from a seeded ChaCha8 stream ([`seed`](ThrottleConfigBuilder::seed)). The
//! counts are kept to 1/4096 of a request, so an excess of requests within that rounding
//! (`(K + 1) / 4096`) counts as none.
//!
//! **Where it goes in a stack.** On a client, inside retry (so that retries are throttled too,
//! and a `Throttled` rejection is not retried) and outside the circuit breaker (whose
//! rejections then count for nothing here, and whose probes come through the throttle).
//!
//! ```
//! use http::Response;
//! use seawall_core::classify::HttpStatus;
//! use seawall_core::{BoxError, RejectionKind, rejected};
//! use seawall_throttle::ThrottleLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let (layer, handle) = ThrottleLayer::builder()
//!     .name("inventory")
//!     .multiplier(2.0)
//!     .seed(7)
//!     .build()?
//!     .pair();
//! // A downstream that refuses everything with 429.
//! let svc = layer.classify(HttpStatus::default()).layer(service_fn(|_: ()| async {
//!     Ok::<_, BoxError>(Response::builder().status(429).body(()).unwrap())
//! }));
//!
//! let mut throttled = 0;
//! for _ in 0..100 {
//!     match svc.clone().oneshot(()).await {
//!         Ok(res) => assert_eq!(res.status(), 429),
//!         Err(err) => {
//!             assert_eq!(rejected(&*err).map(|r| r.kind()), Some(RejectionKind::Throttled));
//!             throttled += 1;
//!         }
//!     }
//! }
//! assert!(throttled > 50, "most calls never reach the refusing downstream");
//! assert!(handle.rejection_probability() > 0.9);
//! # Ok(())
//! # }
//! ```
//!
//! Metrics, each labelled `name`: `seawall_throttle_calls_total{result}` (`success`,
//! `failure`, `overload`, `ignored` for calls let through, `rejected` for local rejections)
//! and `seawall_throttle_rejection_probability`, set at most once per tick and whenever the
//! throttle starts or stops rejecting.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod event;
pub mod future;
mod handle;
mod layer;
mod service;
mod state;
mod window;

pub use self::config::{ThrottleConfig, ThrottleConfigBuilder};
pub use self::event::{CallResult, RejectedEvent, ThrottlingChangedEvent};
pub use self::future::CallReport;
pub use self::handle::ThrottleHandle;
pub use self::layer::ThrottleLayer;
pub use self::service::Throttle;
pub use self::window::ThrottleCounts;
