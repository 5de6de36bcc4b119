//! Alternative answers when a call fails or is rejected.
//!
//! A fallback turns "the recommendations service is down" into "the page shows best-sellers":
//! a degraded answer is often worth more than an error. It fires on what you choose — any
//! error, only rejections of some kinds (an open circuit, a full bulkhead, a timeout), or
//! whatever a [`Classify`](seawall_core::classify::Classify) calls a failure, 5xx answers
//! included, and overload refusals (429, 503) when asked with
//! [`or_overload`](FallbackLayerBuilder::or_overload) — and answers with a value, a closure
//! of the failure, an async closure, or another service (failover).
//!
//! It never turns a success into a fallback, and it does not catch panics. It keeps from each
//! request only what its answer needs: nothing for a value or a closure of the error, the part a
//! `keep` closure takes for [`with_request`](FallbackLayerBuilder::with_request), and a clone of
//! the request only for [`failover`](FallbackLayerBuilder::failover).
//!
//! Where it goes: outermost in a client stack, so it also answers for the total timeout and the
//! retries inside it.
//!
//! ```
//! use seawall_core::{BoxError, Rejected, RejectionKind};
//! use seawall_fallback::FallbackLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let recommendations = service_fn(|_user: u64| async {
//!     Err::<Vec<&str>, BoxError>(Rejected::new(RejectionKind::CircuitOpen, "recommendations").into())
//! });
//! let layer = FallbackLayer::builder()
//!     .name("recommendations")
//!     .on_rejections([RejectionKind::CircuitOpen, RejectionKind::TimedOut])
//!     .value(vec!["best-sellers"])
//!     .build()?;
//! assert_eq!(layer.layer(recommendations).oneshot(7).await?, ["best-sellers"]);
//! # Ok(())
//! # }
//! ```
//!
//! Metrics: `seawall_fallback_calls_total{name}` (every call through the layer) and
//! `seawall_fallback_total{name, cause}` (the calls answered by the fallback) with `cause` the
//! rejection kind (`circuit_open`, ...), `error`, `failure` or `overload`; their ratio is the
//! share of calls the fallback answers.

mod config;
mod event;
pub mod future;
mod layer;
mod service;
pub mod source;
mod state;
mod trigger;

pub use self::config::FallbackConfig;
pub use self::event::FallbackEvent;
pub use self::layer::{Answer, Checked, FallbackLayer, FallbackLayerBuilder, NoAnswer};
pub use self::service::Fallback;
pub use self::trigger::{Cause, Failed, OnFailure, Trigger, When};
