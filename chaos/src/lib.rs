//! Fault injection for tower services: errors, chosen responses, latency, hangs, outage
//! phases, flapping and a capacity model, all from a seeded random number generator.
//!
//! What it is for: proving that a stack survives what production will do to it. Put a
//! [`ChaosLayer`] over a real client in an integration test, a staging deployment or a game
//! day, or over a stub to build a simulated downstream (seawall's failure-behaviour lab does
//! exactly that). Everything it decides comes from a `ChaCha8` generator seeded from the
//! configuration, so a run on tokio's paused clock repeats exactly; all time is tokio time, so
//! phases run in virtual time under a paused clock and in real time otherwise.
//!
//! What it injects, per call, in this order:
//! - at most one of an error (`Rejected` of kind `Injected`), a hang (the call never returns)
//!   or a chosen response (from [`ChaosLayer::respond_with`]), each with its probability;
//! - otherwise the configured [`Latency`] (fixed, uniform or long-tailed), served by a
//!   [`Capacity`] model when one is set: N workers, a FIFO queue, slower service past a queue
//!   depth, refusal past a queue limit;
//! - and, with its own probability, an extra slow-call delay.
//!
//! The probabilities change on a schedule: [`Phase`]s replace the usual [`Faults`] for a
//! while, [`Flapping`] repeats down and up phases. [`ChaosLayer::target`] restricts all of it
//! to the calls a predicate picks (one shard, one tenant, one route), and
//! [`ChaosLayer::target_keys`] to the calls of chosen keys as core's key extractors read them
//! (a `Route`, a `Header` value, a `ClientIp`).
//!
//! It is off unless enabled (in the configuration or through [`ChaosHandle::enable`]): a layer
//! left in a stack by mistake does nothing.
//!
//! Where it goes in a stack: innermost, right over the service it stands in for, so that every
//! resilience layer above it sees the faults as the real downstream's.
//!
//! ```
//! use std::time::Duration;
//! use seawall_chaos::{ChaosLayer, Faults, Latency};
//! use seawall_core::{RejectionKind, rejected};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), seawall_core::BoxError> {
//! let chaos = ChaosLayer::builder()
//!     .enabled(true)
//!     .seed(42)
//!     .latency(Latency::Uniform { min: Duration::from_millis(8), max: Duration::from_millis(12) })
//!     .outage(Duration::from_secs(20), Duration::from_secs(30))
//!     .build()?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(chaos)
//!     .service(service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) }));
//!
//! assert_eq!(svc.ready().await?.call(1).await?, 1); // after 8 to 12 ms
//! tokio::time::advance(Duration::from_secs(25)).await;
//! let err = svc.ready().await?.call(2).await.unwrap_err();
//! assert_eq!(rejected(&*err).map(|r| r.kind()), Some(RejectionKind::Injected));
//! # Ok(())
//! # }
//! ```
//!
//! Metrics: `seawall_chaos_injected_total{name, fault = "error" | "response" | "latency" |
//! "slow" | "hang" | "queue_full"}`.

mod capacity;
mod config;
mod event;
pub mod future;
mod injector;
mod latency;
mod layer;
mod service;
mod state;
mod target;

pub use self::capacity::Capacity;
pub use self::config::{ChaosConfig, ChaosConfigBuilder, Faults, Flapping, Phase};
pub use self::event::{Fault, InjectedEvent};
pub use self::latency::Latency;
pub use self::layer::{ChaosHandle, ChaosLayer};
pub use self::service::Chaos;
pub use self::target::{Everything, NoResponse, Respond, RespondFn, Target, TargetFn, TargetKeys};
