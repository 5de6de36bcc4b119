//! The stacks on a tonic server and client over a real socket on 127.0.0.1, with tonic-health's
//! generated service (no protoc needed): rejections reach the client as gRPC statuses.

use std::net::SocketAddr;
use std::time::Duration;

use seawall::ServiceBuilderExt;
use seawall::circuit_breaker::CircuitBreakerLayer;
use seawall::stack::{ServerStackConfig, ServerStackLayer};
use seawall_core::testing::DelayLayer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

fn server_stack(per_second: u32, slots: usize, timeout: &str) -> ServerStackLayer {
    let config: ServerStackConfig = serde_json::from_value(serde_json::json!({
        "name": "health",
        "rate_limit": { "quota": { "per_second": per_second, "burst": per_second } },
        "bulkhead": { "max_concurrent": slots, "max_queue": 0 },
        "timeout": timeout,
    }))
    .unwrap();
    ServerStackLayer::new(config)
}

/// Serves tonic-health behind the server stack, each call delayed by `delay`.
async fn serve(stack: ServerStackLayer, delay: Duration) -> SocketAddr {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .layer(
            ServiceBuilder::new()
                .with_grpc_errors()
                .layer(stack)
                .layer(DelayLayer(delay)),
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

#[tokio::test(start_paused = true)]
async fn past_the_quota_the_client_sees_resource_exhausted() {
    let addr = serve(server_stack(1, 10, "1s"), Duration::ZERO).await;
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

#[tokio::test(start_paused = true)]
async fn with_the_bulkhead_full_the_client_sees_unavailable() {
    let addr = serve(server_stack(1000, 1, "5s"), Duration::from_secs(1)).await;
    let mut holder = HealthClient::new(channel(addr).await);
    let held = tokio::spawn(async move { check(&mut holder).await });
    tokio::time::sleep(Duration::from_millis(10)).await;

    let mut client = HealthClient::new(channel(addr).await);
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "bulkhead full");
    assert_eq!(
        held.await.unwrap().unwrap(),
        1,
        "the call holding the slot finishes"
    );
    assert_eq!(check(&mut client).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_gives_the_client_deadline_exceeded() {
    let addr = serve(server_stack(1000, 10, "100ms"), Duration::from_secs(10)).await;
    let mut client = HealthClient::new(channel(addr).await);
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(status.message(), "timed out");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_on_the_client_stack_gives_the_client_unavailable() {
    let addr = serve(server_stack(1000, 10, "1s"), Duration::ZERO).await;
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
