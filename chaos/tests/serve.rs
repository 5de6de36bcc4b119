//! The chaos layer under a served axum router, on the real clock: targeting by core's key
//! extractors reads real requests.

use std::net::SocketAddr;

use axum::Router;
use axum::routing;
use http::StatusCode;
use seawall_chaos::{ChaosLayer, Faults};
use seawall_core::http::ErrorResponseLayer;
use seawall_core::key::Route;
use seawall_core::testing::serve::{get, serve};
use seawall_core::testing::trace_init;
use tower::ServiceBuilder;

async fn status(addr: SocketAddr, path: &str) -> StatusCode {
    get(addr, path).await.status()
}

#[tokio::test]
async fn chaos_targeted_by_route_fails_only_that_route() {
    trace_init();
    let chaos = ChaosLayer::builder()
        .name("routes")
        .enabled(true)
        .faults(Faults::errors(1.0))
        .build()
        .unwrap()
        .target_keys(Route::new(), [Route::key("/orders/{id}")]);
    let app = Router::new()
        .route("/orders/{id}", routing::get(|| async { "order" }))
        .route("/users/{id}", routing::get(|| async { "user" }))
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(chaos),
        );
    let addr = serve(app).await;

    for id in 1..=3 {
        assert_eq!(
            status(addr, &format!("/orders/{id}")).await,
            StatusCode::INTERNAL_SERVER_ERROR,
            "every order, whatever its id, is the targeted route"
        );
        assert_eq!(status(addr, &format!("/users/{id}")).await, StatusCode::OK);
    }
}
