//! One answer to "is this service all right?", from everything that knows.
//!
//! A [`HealthTracker`] holds components: probes run on an interval with a timeout (a database
//! ping), followers of a `watch` channel (a circuit breaker's state), the error rate and
//! latency of calls through a [`HealthLayer`], and handles that code reports into. Each
//! component moves through [`HealthState`]s — healthy, degraded, unhealthy, failed — with
//! hysteresis, so a single blip does not flap it, and recovers on its own from degraded and
//! unhealthy; failed means restart required. The service's state is the worst of its
//! components, a non-critical component counting as degraded at worst.
//!
//! # Where the [`HealthLayer`] goes
//!
//! Inside the error adapter and outside the server stack: `with_http_errors()` (or
//! `with_grpc_errors()`), then the health layer, then the rate limit, bulkhead and timeout.
//! There it sees the stack's decisions as errors and tells them apart: a timeout counts as a
//! bad call, while load the stack sheds itself — a `Rejected` whose kind is not
//! [`is_downstream_failure`](seawall_core::RejectionKind::is_downstream_failure), such as a
//! rate limit, a full bulkhead or an open breaker — counts for nothing. A client flooding past
//! the rate limit therefore cannot make the service unready and have the load balancer pull
//! it. Outside the adapter the layer would only see 429 and 503 answers, which a status
//! classifier counts as failures.
//!
//! The tracker serves `/health/live` and `/health/ready` (feature `http`), feeds tonic-health's
//! `grpc.health.v1` (feature `grpc`), exports `seawall_health_state{name, component, state}`
//! (`component = "overall"` for the service) and lets code [subscribe](HealthTracker::subscribe)
//! to changes.
//!
//! ```
//! use std::time::Duration;
//! use seawall_health::{ComponentConfig, HealthState, HealthTracker, Hysteresis, ProbeConfig};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let tracker = HealthTracker::new("shop");
//! let db = ComponentConfig::new("db")?.hysteresis(Hysteresis::none());
//! let probe = ProbeConfig::builder(db)
//!     .interval(Duration::from_secs(5))
//!     .timeout(Duration::from_secs(1))
//!     .build()?;
//! tracker.probe(probe, || async { Err::<(), _>("connection refused") });
//! tokio::time::sleep(Duration::from_millis(1)).await;
//! assert_eq!(tracker.state(), HealthState::Unhealthy);
//! assert_eq!(tracker.report().components[0].detail.as_deref(), Some("connection refused"));
//! # Ok(())
//! # }
//! ```

mod config;
pub mod future;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
mod hysteresis;
mod layer;
mod service;
mod state;
mod tracker;
mod window;

pub use self::config::{
    ComponentConfig, Hysteresis, HysteresisBuilder, ProbeConfig, ProbeConfigBuilder, RateConfig,
    RateConfigBuilder,
};
pub use self::future::CallReport;
pub use self::layer::HealthLayer;
pub use self::service::HealthService;
pub use self::state::HealthState;
pub use self::tracker::{ComponentHandle, ComponentReport, HealthReport, HealthTracker};
