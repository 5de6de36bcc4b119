//! A timeout on an axum router, served over a real socket on 127.0.0.1.

use std::time::Duration;

use axum::Router;
use axum::routing;
use http::StatusCode;
use seawall_core::http::ErrorResponseLayer;
use seawall_core::testing::serve::{get, serve, text};
use seawall_timeout::TimeoutLayer;
use tower::ServiceBuilder;

async fn get_path(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
    let res = get(addr, path).await;
    (res.status(), text(&res).to_owned())
}

fn app() -> Router {
    let timeout = TimeoutLayer::builder()
        .name("api")
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    Router::new()
        .route("/fast", routing::get(|| async { "fast" }))
        .route(
            "/slow",
            routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "slow"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(timeout),
        )
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_answers_504_and_the_server_keeps_serving() {
    let addr = serve(app()).await;

    assert_eq!(
        get_path(addr, "/fast").await,
        (StatusCode::OK, "fast".into())
    );
    let (status, body) = get_path(addr, "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "timed out");
    for _ in 0..3 {
        assert_eq!(
            get_path(addr, "/fast").await,
            (StatusCode::OK, "fast".into())
        );
    }
}
