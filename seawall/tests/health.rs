//! The health layer inside a server stack: load the stack sheds itself is not ill health.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use seawall::ServiceBuilderExt;
use seawall::classify::HttpStatus;
use seawall::health::{ComponentConfig, HealthLayer, HealthTracker, Hysteresis, RateConfig};
use seawall::stack::{ServerStackConfig, ServerStackLayer};
use tower::{ServiceBuilder, ServiceExt};

/// `/work` and `/fail` behind the adapter, the health layer and a server stack admitting 10
/// calls a second; `/health/*` beside them.
fn app(tracker: &HealthTracker) -> Router {
    let stack: ServerStackConfig = serde_json::from_value(serde_json::json!({
        "name": "api",
        "rate_limit": { "quota": { "per_second": 10, "burst": 10 } },
        "bulkhead": { "max_concurrent": 100 },
        "timeout": "1s",
    }))
    .unwrap();
    let component = ComponentConfig::new("api")
        .unwrap()
        .hysteresis(Hysteresis::none());
    let rate = RateConfig::builder(component)
        .window(Duration::from_secs(5))
        .minimum_calls(10)
        .build()
        .unwrap();
    let api = Router::new()
        .route("/work", get(|| async { "done" }))
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .layer(
            ServiceBuilder::new()
                .with_http_errors()
                .with_health(HealthLayer::new(tracker, rate).classify(HttpStatus::server_errors()))
                .layer(ServerStackLayer::new(stack)),
        );
    api.merge(seawall::health::http::router(tracker.clone()))
}

async fn status(app: &Router, path: &str) -> StatusCode {
    let req = Request::get(path).body(Body::empty()).unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

/// Sends `calls` requests to `path` in each of `seconds` seconds; returns how many were
/// refused with 429.
async fn flood(app: &Router, path: &str, seconds: u32, calls: u32) -> u32 {
    let mut limited = 0;
    for _ in 0..seconds {
        for _ in 0..calls {
            limited += u32::from(status(app, path).await == StatusCode::TOO_MANY_REQUESTS);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    limited
}

#[tokio::test(start_paused = true)]
async fn a_flood_past_the_rate_limit_keeps_the_service_ready() {
    let tracker = HealthTracker::new("api");
    let app = app(&tracker);
    let limited = flood(&app, "/work", 6, 200).await;
    assert!(
        limited >= 6 * 180,
        "the rate limit shed the flood: {limited}"
    );
    assert_eq!(status(&app, "/health/ready").await, StatusCode::OK);

    // The layer does count what the downstream does: failing calls make it unready.
    flood(&app, "/fail", 6, 10).await;
    assert_eq!(
        status(&app, "/health/ready").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
