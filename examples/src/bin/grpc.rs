//! The gRPC example: `cargo run -p seawall-examples --bin grpc`. It serves tonic-health on
//! 127.0.0.1:50051 behind the server stack, then checks it 40 times at once through the
//! layered client: the server's rate limit (20 a second) answers the rest `RESOURCE_EXHAUSTED`.

use seawall::health::HealthTracker;
use seawall_examples::grpc::{client, serve, server_config};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    seawall_examples::logging::init();
    let tracker = HealthTracker::new("grpc-example");
    let listener = TcpListener::bind("127.0.0.1:50051").await?;
    tokio::spawn(serve(listener, server_config(), tracker));

    let channel = Channel::from_static("http://127.0.0.1:50051")
        .connect()
        .await?;
    let (client, _breaker) = client(channel);
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..40 {
        let mut client = client.clone();
        calls.spawn(async move {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            (n, client.check(request).await)
        });
    }
    while let Some(Ok((n, result))) = calls.join_next().await {
        match result {
            Ok(response) => println!("check {n:2}: status {:?}", response.into_inner().status()),
            Err(status) => println!("check {n:2}: {:?}: {}", status.code(), status.message()),
        }
    }
    Ok(())
}
