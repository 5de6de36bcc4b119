//! A timeout on an axum router, served over a real socket on 127.0.0.1, on the real clock: a
//! paused clock may jump ahead while the runtime waits on the socket and time out a fast call.

use std::time::Duration;

use axum::Router;
use axum::routing;
use http::StatusCode;
use seawall_core::http::ErrorResponseLayer;
use seawall_core::testing::serve::{get, serve, text};
use seawall_core::testing::trace_init;
use seawall_timeout::TimeoutLayer;
use tower::ServiceBuilder;

async fn get_path(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
    let res = get(addr, path).await;
    (res.status(), text(&res).to_owned())
}

/// Long enough that a fast call never meets it on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(1);

fn app() -> Router {
    let timeout = TimeoutLayer::builder()
        .name("api")
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    Router::new()
        .route("/fast", routing::get(|| async { "fast" }))
        .route("/slow", routing::get(std::future::pending::<&'static str>))
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(timeout),
        )
}

#[tokio::test]
async fn a_slow_handler_answers_504_and_the_server_keeps_serving() {
    trace_init();
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
