//! A tonic service behind seawall's server stack, and a tonic client over a layered channel.
//!
//! The server is tonic-health's `grpc.health.v1` (generated code shipped in the crate, so no
//! protoc is needed) behind the server stack; the gRPC adapter turns every rejection into the
//! status a gRPC client acts on: `RESOURCE_EXHAUSTED` past the rate limit, `UNAVAILABLE` when
//! the bulkhead is full, `DEADLINE_EXCEEDED` on a timeout, each with its message and, where
//! known, `grpc-retry-pushback-ms`. The health tracker feeds the same service, so the server
//! answers `NOT_SERVING` while it is unready.
//!
//! The client layers a channel with a timeout and a circuit breaker that judges gRPC codes at
//! the end of the stream, under the same adapter, so its own rejections reach the caller as
//! statuses too.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use seawall::ServiceBuilderExt;
use seawall::circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use seawall::classify::GrpcCodes;
use seawall::health::HealthTracker;
use seawall::stack::{ServerStackConfig, ServerStackLayer};
use seawall::timeout::TimeoutLayer;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

/// The client's layered channel.
pub type Layered = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The server stack's settings for the example: 20 calls a second, 16 at once, 1 s each.
pub fn server_config() -> ServerStackConfig {
    toml::from_str(
        r#"
        name = "health"
        timeout = "1s"
        rate_limit = { quota = { per_second = 20, burst = 20 } }
        bulkhead = { max_concurrent = 16 }
        "#,
    )
    .expect("valid settings")
}

/// Serves tonic-health on `listener` behind the server stack, reporting `tracker`'s readiness.
pub async fn serve(
    listener: TcpListener,
    config: ServerStackConfig,
    tracker: HealthTracker,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    seawall::health::grpc::serve_status(&tracker, reporter);
    Server::builder()
        .layer(
            ServiceBuilder::new()
                .with_grpc_errors()
                .layer(ServerStackLayer::new(config)),
        )
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

/// A health client for `channel` with a 500 ms timeout and a circuit breaker on gRPC codes, and
/// the breaker's handle.
pub fn client(channel: Channel) -> (HealthClient<Layered>, CircuitBreakerHandle) {
    let (breaker, handle) = CircuitBreakerLayer::builder()
        .name("health-client")
        .consecutive_failures(5)
        .build()
        .expect("a valid breaker")
        .classify(GrpcCodes::new())
        .pair();
    let timeout = TimeoutLayer::builder()
        .name("health-client")
        .timeout(Duration::from_millis(500))
        .build()
        .expect("a valid timeout");
    let layered = ServiceBuilder::new()
        .map_response(|res: Response<_>| res.map(Body::new))
        .with_grpc_errors()
        .with_timeout(timeout)
        .with_circuit_breaker(breaker)
        .service(channel);
    (HealthClient::new(BoxCloneSyncService::new(layered)), handle)
}
