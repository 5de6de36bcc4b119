//! A timeout in a tonic server's stack and in a tonic client's stack, over a real socket on
//! 127.0.0.1, with tonic-health's generated service (no protoc needed). On the real clock: a
//! paused clock may jump ahead while the runtime waits on the socket.

use std::net::SocketAddr;
use std::time::Duration;

use seawall_core::grpc::ErrorStatusLayer;
use seawall_core::testing::{DelayLayer, trace_init};
use seawall_timeout::TimeoutLayer;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

/// A server slower than any timeout here.
const NEVER: Duration = Duration::from_secs(3600);

fn timeout(ms: u64) -> TimeoutLayer {
    TimeoutLayer::builder()
        .name("health")
        .timeout(Duration::from_millis(ms))
        .build()
        .unwrap()
}

async fn listener() -> (TcpIncoming, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (TcpIncoming::from(listener), addr)
}

async fn client(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

#[tokio::test]
async fn a_slow_server_answers_deadline_exceeded() {
    trace_init();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (incoming, addr) = listener().await;
    let server = Server::builder()
        .layer(
            ServiceBuilder::new()
                .layer(ErrorStatusLayer::new())
                .layer(timeout(100))
                .layer(DelayLayer(NEVER)),
        )
        .add_service(health)
        .serve_with_incoming(incoming);
    tokio::spawn(server);

    let mut health = HealthClient::new(client(addr).await);
    let status = health.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "timed out");
}

#[tokio::test]
async fn a_fast_server_answers_through_the_same_stack() {
    trace_init();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (incoming, addr) = listener().await;
    let server = Server::builder()
        .layer(
            ServiceBuilder::new()
                .layer(ErrorStatusLayer::new())
                // Long enough that a fast call never meets it on a busy machine.
                .layer(timeout(1000)),
        )
        .add_service(health)
        .serve_with_incoming(incoming);
    tokio::spawn(server);

    let mut health = HealthClient::new(client(addr).await);
    for _ in 0..3 {
        let res = health.check(check()).await.unwrap().into_inner();
        assert_eq!(res.status, 1, "SERVING");
    }
}

#[tokio::test]
async fn a_client_stack_gives_the_client_deadline_exceeded() {
    trace_init();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (incoming, addr) = listener().await;
    let server = Server::builder()
        .layer(DelayLayer(NEVER))
        .add_service(health)
        .serve_with_incoming(incoming);
    tokio::spawn(server);

    let channel = ServiceBuilder::new()
        .layer(ErrorStatusLayer::new())
        .layer(timeout(100))
        .service(client(addr).await);
    let status = HealthClient::new(channel).check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}

/// Why the adapter exists: tonic resets the stream on any error that is not a `Status`.
#[tokio::test]
async fn without_the_adapter_the_client_sees_an_h2_protocol_error() {
    trace_init();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (incoming, addr) = listener().await;
    let server = Server::builder()
        .layer(
            ServiceBuilder::new()
                .layer(timeout(100))
                .layer(DelayLayer(NEVER)),
        )
        .add_service(health)
        .serve_with_incoming(incoming);
    tokio::spawn(server);

    let mut health = HealthClient::new(client(addr).await);
    let status = health.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("h2 protocol error"), "{status:?}");
}
