//! A stand-in inventory service for the gateway to call: an axum app whose failures are
//! injected by seawall-chaos, so the gateway's stack has something to protect it from.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use seawall::ServiceBuilderExt;
use seawall::chaos::{ChaosConfig, ChaosHandle, ChaosLayer, Faults, Latency};
use tower::ServiceBuilder;

/// Chaos for the demo: 5 ms ± 2 ms answers, 10 % errors, and every minute a 20 s outage
/// starting at 30 s.
pub fn flaky() -> ChaosConfig {
    let outage = Faults {
        error: 1.0,
        ..Faults::default()
    };
    let mut builder = ChaosConfig::builder()
        .name("inventory")
        .enabled(true)
        .seed(7)
        .latency(Latency::Uniform {
            min: Duration::from_millis(3),
            max: Duration::from_millis(7),
        })
        .faults(Faults {
            error: 0.1,
            ..Faults::default()
        });
    for minute in 0..60 {
        let start = Duration::from_secs(minute * 60 + 30);
        builder = builder.phase(start, start + Duration::from_secs(20), outage);
    }
    builder.build().expect("a valid chaos configuration")
}

/// The inventory app under `chaos`, and the handle that turns the chaos on and off.
pub fn inventory(chaos: ChaosConfig) -> (Router, ChaosHandle) {
    let layer = ChaosLayer::new(chaos);
    let handle = layer.handle();
    let router = Router::new()
        .route(
            "/stock/{id}",
            get(|Path(id): Path<u32>| async move {
                format!("{{\"id\":{id},\"stock\":{}}}", id * 7 % 100)
            }),
        )
        .layer(ServiceBuilder::new().with_http_errors().layer(layer));
    (router, handle)
}
