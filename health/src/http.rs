//! `/health/live` and `/health/ready`, as Kubernetes and Traefik expect them.
//!
//! Both answer the [`HealthReport`](crate::HealthReport) as JSON. Liveness is `200` unless
//! the service has failed (then `503`: restart me); readiness is `200` while it is healthy or
//! degraded, `503` when unhealthy or failed (take me out of the load balancer).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::HealthState;
use crate::tracker::HealthTracker;

/// A router serving `/health/live` and `/health/ready` from `tracker`; merge it into an app
/// with `Router::merge`.
pub fn router<S>(tracker: HealthTracker) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(tracker)
}

async fn live(State(tracker): State<HealthTracker>) -> Response {
    answer(&tracker, HealthState::is_live)
}

async fn ready(State(tracker): State<HealthTracker>) -> Response {
    answer(&tracker, HealthState::is_ready)
}

fn answer(tracker: &HealthTracker, passes: fn(HealthState) -> bool) -> Response {
    let report = tracker.report();
    let status = if passes(report.status) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string(&report).unwrap_or_else(|_| String::from("{}"));
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
