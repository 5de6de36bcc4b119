//! A bulkhead under a served axum router: every connection shares the one bulkhead.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing;
use http::StatusCode;
use seawall_bulkhead::BulkheadLayer;
use seawall_core::http::ErrorResponseLayer;
use seawall_core::testing::serve::{get, serve};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;

/// One GET over a connection of its own.
async fn get_on_new_connection(addr: SocketAddr) -> StatusCode {
    get(addr, "/").await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_a_served_router_share_one_bulkhead() {
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let (bulkhead, handle) = BulkheadLayer::builder()
        .name("api")
        .max_concurrent(1)
        .build()
        .unwrap()
        .pair();
    let app = Router::new()
        .route(
            "/",
            routing::get(move || {
                let gate = held.clone();
                async move {
                    gate.acquire().await.unwrap().forget();
                    "done"
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(bulkhead),
        );
    let addr = serve(app).await;

    let first = tokio::spawn(get_on_new_connection(addr));
    for _ in 0..100_000 {
        if handle.in_flight() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(handle.in_flight(), 1, "the first request holds the slot");
    assert_eq!(
        get_on_new_connection(addr).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a second connection meets the same, full bulkhead"
    );
    gate.add_permits(1);
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(handle.in_flight(), 0);
}
