//! `/health/live` and `/health/ready`, as Kubernetes and Traefik expect them.
//!
//! Liveness is `200` unless the service has failed (then `503`: restart me); readiness is
//! `200` while it is healthy or degraded, `503` when unhealthy or failed (take me out of the
//! load balancer).
//!
//! [`router`] answers with the status alone, `{"status":"degraded"}`: the endpoints are often
//! reachable by anyone who can reach the service, and the full report names every component
//! and carries probe error text ("connection refused 10.0.3.7:5432"). Serve the full
//! [`HealthReport`](crate::HealthReport) with [`router_with_details`] where only operators can
//! reach it (an admin port, behind authentication).
//!
//! ```
//! use axum::Router;
//! use seawall_health::HealthTracker;
//!
//! let tracker = HealthTracker::new("shop");
//! let public: Router = Router::new().merge(seawall_health::http::router(tracker.clone()));
//! let admin: Router = seawall_health::http::router_with_details(tracker);
//! # let _ = (public, admin);
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::state::HealthState;
use crate::tracker::HealthTracker;

/// A router serving `/health/live` and `/health/ready` from `tracker` with the status alone;
/// merge it into an app with `Router::merge`.
pub fn router<S>(tracker: HealthTracker) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes(tracker, Detail::StatusOnly)
}

/// As [`router`], but the answers carry every component's state and detail: for an operators'
/// port, not a public one.
pub fn router_with_details<S>(tracker: HealthTracker) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes(tracker, Detail::Full)
}

#[derive(Debug, Clone, Copy)]
enum Detail {
    StatusOnly,
    Full,
}

#[derive(Serialize)]
struct StatusOnly {
    status: HealthState,
}

fn routes<S>(tracker: HealthTracker, detail: Detail) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/health/live",
            get(move |State(tracker): State<HealthTracker>| async move {
                answer(&tracker, HealthState::is_live, detail)
            }),
        )
        .route(
            "/health/ready",
            get(move |State(tracker): State<HealthTracker>| async move {
                answer(&tracker, HealthState::is_ready, detail)
            }),
        )
        .with_state(tracker)
}

fn answer(tracker: &HealthTracker, passes: fn(HealthState) -> bool, detail: Detail) -> Response {
    let (state, body) = match detail {
        Detail::StatusOnly => {
            let status = tracker.state();
            (status, serde_json::to_string(&StatusOnly { status }))
        }
        Detail::Full => {
            let report = tracker.report();
            (report.status, serde_json::to_string(&report))
        }
    };
    let status = if passes(state) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = body.unwrap_or_else(|_| String::from("{}"));
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
