//! The throttle over real connections: a gateway served with `axum::serve` on 127.0.0.1 calls,
//! through the throttle, a downstream that answers 429.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http::{Response, StatusCode};
use seawall_core::classify::HttpStatus;
use seawall_core::http::ErrorResponseLayer;
use seawall_core::testing::serve::{get as fetch, serve};
use seawall_throttle::ThrottleLayer;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

#[derive(Clone)]
struct Downstream {
    seen: Arc<AtomicUsize>,
}

async fn refuse(State(down): State<Downstream>) -> (StatusCode, [(&'static str, &'static str); 1]) {
    down.seen.fetch_add(1, Ordering::Relaxed);
    (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")])
}

#[tokio::test]
async fn a_gateway_throttles_calls_to_a_downstream_that_answers_429() {
    let seen = Arc::new(AtomicUsize::new(0));
    let downstream: SocketAddr = serve(
        Router::new()
            .route("/", get(refuse))
            .with_state(Downstream { seen: seen.clone() }),
    )
    .await;

    let (throttle, handle) = ThrottleLayer::builder()
        .name("downstream")
        .seed(1)
        .build()
        .unwrap()
        .pair();
    let client = throttle
        .classify(HttpStatus::default())
        .layer(service_fn(move |()| async move {
            Ok::<Response<Bytes>, std::convert::Infallible>(fetch(downstream, "/").await)
        }));
    // The gateway answers every call with what the downstream said, or the throttle's 503.
    let gateway = serve(Router::new().route(
        "/",
        get(|| async move {
            let stack = ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .service(client.clone());
            stack.oneshot(()).await.unwrap().status()
        }),
    ))
    .await;

    let mut statuses = Vec::new();
    for _ in 0..200 {
        statuses.push(fetch(gateway, "/").await.status());
    }
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(throttled + refused, 200, "{statuses:?}");
    assert!(throttled > 100, "{throttled} of 200 throttled");
    assert_eq!(
        seen.load(Ordering::Relaxed),
        refused,
        "throttled calls never left"
    );
    assert!(handle.rejection_probability() > 0.5);
}
