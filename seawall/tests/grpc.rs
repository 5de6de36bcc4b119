//! The stacks on a tonic server and client over a real socket on 127.0.0.1, with tonic-health's
//! generated service (no protoc needed): rejections reach the client as gRPC statuses. On the
//! real clock: a paused clock may jump ahead while the runtime waits on the socket.

use std::net::SocketAddr;
use std::time::Duration;

use seawall::ServiceBuilderExt;
use seawall::circuit_breaker::CircuitBreakerLayer;
use seawall::stack::{ServerStackConfig, ServerStackLayer};
use seawall_core::testing::{DelayLayer, Gate, trace_init};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

/// A server slower than any timeout here.
const NEVER: Duration = Duration::from_secs(3600);

/// A rate limit of `quota` (as written in a config), `slots` bulkhead slots without a queue,
/// and a timeout of `timeout`.
fn server_stack(quota: serde_json::Value, slots: usize, timeout: &str) -> ServerStackLayer {
    let config: ServerStackConfig = serde_json::from_value(serde_json::json!({
        "name": "health",
        "rate_limit": { "quota": quota },
        "bulkhead": { "max_concurrent": slots, "queue_limit": 0 },
        "timeout": timeout,
    }))
    .unwrap();
    ServerStackLayer::new(config)
}

/// A quota no test here comes near.
fn plenty() -> serde_json::Value {
    serde_json::json!({ "per_second": 1000, "burst": 1000 })
}

/// Serves tonic-health behind the server stack, each call delayed by `delay` and held at
/// `gate`, if any.
async fn serve(stack: ServerStackLayer, delay: Duration, gate: Option<&Gate>) -> SocketAddr {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .layer(
            ServiceBuilder::new()
                .with_grpc_errors()
                .layer(stack)
                .layer(DelayLayer(delay))
                .option_layer(gate.map(Gate::layer)),
        )
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn check(client: &mut HealthClient<Channel>) -> Result<i32, Status> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    client
        .check(request)
        .await
        .map(|res| res.into_inner().status)
}

#[tokio::test]
async fn past_the_quota_the_client_sees_resource_exhausted() {
    trace_init();
    // One call, then one a minute: the real clock cannot refill it during the test.
    let quota = serde_json::json!({ "per_minute": 1, "burst": 1 });
    let addr = serve(server_stack(quota, 10, "1s"), Duration::ZERO, None).await;
    let mut client = HealthClient::new(channel(addr).await);
    assert_eq!(check(&mut client).await.unwrap(), 1, "SERVING");
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().starts_with("rate limited, retry after"),
        "{status:?}"
    );
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());
}

#[tokio::test]
async fn with_the_bulkhead_full_the_client_sees_unavailable() {
    trace_init();
    let gate = Gate::new();
    let addr = serve(
        server_stack(plenty(), 1, "60s"),
        Duration::ZERO,
        Some(&gate),
    )
    .await;
    let mut holder = HealthClient::new(channel(addr).await);
    let held = tokio::spawn(async move { check(&mut holder).await });
    gate.arrived(1).await;

    let mut client = HealthClient::new(channel(addr).await);
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "bulkhead full");
    gate.open(2);
    assert_eq!(
        held.await.unwrap().unwrap(),
        1,
        "the call holding the slot finishes"
    );
    assert_eq!(check(&mut client).await.unwrap(), 1);
}

#[tokio::test]
async fn a_slow_call_gives_the_client_deadline_exceeded() {
    trace_init();
    let addr = serve(server_stack(plenty(), 10, "100ms"), NEVER, None).await;
    let mut client = HealthClient::new(channel(addr).await);
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(status.message(), "timed out");
}

#[tokio::test]
async fn an_open_breaker_on_the_client_stack_gives_the_client_unavailable() {
    trace_init();
    let addr = serve(server_stack(plenty(), 10, "1s"), Duration::ZERO, None).await;
    let (breaker, handle) = CircuitBreakerLayer::builder()
        .name("health-client")
        .build()
        .unwrap()
        .pair();
    let stack = ServiceBuilder::new()
        .with_grpc_errors()
        .with_circuit_breaker(breaker)
        .service(channel(addr).await);
    let mut client = HealthClient::new(stack);
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    assert_eq!(
        client.check(request()).await.unwrap().into_inner().status,
        1
    );

    handle.force_open();
    let status = client.check(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().starts_with("circuit open"), "{status:?}");
}
