//! The server stack on an axum app served over a real socket on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing;
use http::StatusCode;
use seawall::ServiceBuilderExt;
use seawall::stack::{ServerStackConfig, ServerStackLayer};
use seawall_core::testing::serve::{get, serve, text};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;

/// Rate limit per second, bulkhead slots; no queue, 100 ms timeout.
fn stack(per_second: u32, slots: usize) -> ServerStackLayer {
    let config: ServerStackConfig = serde_json::from_value(serde_json::json!({
        "name": "api",
        "rate_limit": { "quota": { "per_second": per_second, "burst": per_second } },
        "bulkhead": { "max_concurrent": slots, "max_queue": 0 },
        "timeout": "100ms",
    }))
    .unwrap();
    ServerStackLayer::new(config)
}

/// `/api/*` behind the stack, `/health` outside it. `/api/hold` waits for a permit of `gate`.
fn app(stack: ServerStackLayer, gate: Arc<Semaphore>) -> Router {
    let api = Router::new()
        .route("/fast", routing::get(|| async { "fast" }))
        .route(
            "/slow",
            routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "slow"
            }),
        )
        .route(
            "/hold",
            routing::get(move || {
                let gate = gate.clone();
                async move {
                    let _permit = gate.acquire().await.unwrap();
                    "held"
                }
            }),
        )
        .layer(ServiceBuilder::new().with_http_errors().layer(stack));
    Router::new()
        .nest("/api", api)
        .route("/health", routing::get(|| async { "up" }))
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

async fn get_path(addr: SocketAddr, path: &str) -> Answer {
    let res = get(addr, path).await;
    Answer {
        status: res.status(),
        retry_after: res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: text(&res).to_owned(),
    }
}

#[tokio::test(start_paused = true)]
async fn past_the_quota_is_429_with_retry_after_and_other_routes_are_unaffected() {
    let addr = serve(app(stack(5, 100), Arc::new(Semaphore::new(0)))).await;
    for _ in 0..5 {
        assert_eq!(get_path(addr, "/api/fast").await.status, StatusCode::OK);
    }
    let limited = get_path(addr, "/api/fast").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.retry_after.as_deref(), Some("1"));
    assert!(
        limited.body.starts_with("rate limited, retry after"),
        "{}",
        limited.body
    );
    assert_eq!(
        get_path(addr, "/health").await.body,
        "up",
        "outside the stack"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_is_503_and_frees_up_when_calls_end() {
    let gate = Arc::new(Semaphore::new(0));
    let addr = serve(app(stack(1000, 2), gate.clone())).await;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get_path(addr, "/api/hold").await.status }))
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;

    let full = get_path(addr, "/api/fast").await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.body, "bulkhead full");
    assert_eq!(get_path(addr, "/health").await.status, StatusCode::OK);

    gate.add_permits(2);
    for call in held {
        // Held calls outlive the 100 ms timeout: the bulkhead frees their slots either way.
        let status = call.await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::GATEWAY_TIMEOUT,
            "{status}"
        );
    }
    assert_eq!(get_path(addr, "/api/fast").await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_is_504_and_fast_ones_keep_working() {
    let addr = serve(app(stack(1000, 10), Arc::new(Semaphore::new(0)))).await;
    let slow = get_path(addr, "/api/slow").await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.body, "timed out");
    assert_eq!(get_path(addr, "/api/fast").await.body, "fast");
}

#[test]
fn a_config_with_an_unknown_field_is_refused() {
    let err = serde_json::from_value::<ServerStackConfig>(serde_json::json!({
        "name": "api",
        "bulkhead": { "max_concurrent": 1 },
        "timeout": "1s",
        "timout": "2s",
    }))
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `timout`"), "{err}");
}
