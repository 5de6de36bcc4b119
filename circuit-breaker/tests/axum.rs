//! One breaker layer on an axum router served over several connections trips once for all of
//! them: the state is the layer's, not one per connection or per route.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use seawall_circuit_breaker::{CircuitBreakerLayer, CircuitState};
use seawall_core::classify::HttpStatus;
use seawall_core::http::ErrorResponseLayer;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

async fn connect(addr: std::net::SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn get_status(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
) -> (StatusCode, Option<u64>) {
    sender.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let retry_after = res
        .headers()
        .get(http::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (res.status(), retry_after)
}

#[tokio::test]
async fn one_breaker_trips_for_every_connection_and_route() {
    let (breaker, handle) = CircuitBreakerLayer::builder()
        .name("api")
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(30))
        .open_jitter(0.0)
        .build()
        .unwrap()
        .pair();
    let app = Router::new()
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/ok", get(|| async { "ok" }))
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(breaker.classify(HttpStatus::server_errors())),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(connect(addr).await);
    }
    assert_eq!(
        get_status(&mut connections[0], "/ok").await.0,
        StatusCode::OK
    );
    for conn in &mut connections[..3] {
        let (status, _) = get_status(conn, "/fail").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(handle.state(), CircuitState::Open);

    for conn in &mut connections {
        let (status, retry_after) = get_status(conn, "/ok").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = retry_after.expect("an open circuit says when to come back");
        assert!((1..=30).contains(&retry_after), "{retry_after}");
    }
    let mut fresh = connect(addr).await;
    assert_eq!(
        get_status(&mut fresh, "/ok").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    server.abort();
}

/// A gRPC call over a fresh connection: the response head, its body still streaming.
async fn grpc_call(
    addr: std::net::SocketAddr,
    path: &'static str,
) -> Result<http::Response<hyper::body::Incoming>, seawall_core::BoxError> {
    let mut sender = connect(addr).await;
    sender.ready().await?;
    let req = Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/grpc")
        .body(Empty::new())?;
    Ok(sender.send_request(req).await?)
}

#[tokio::test]
async fn a_server_streaming_probe_frees_its_slot_when_its_head_arrives() {
    use axum::body::Body;
    use axum::routing::post;
    use futures::StreamExt;
    use seawall_core::classify::GrpcCodes;
    use tower::{Layer, ServiceExt, service_fn};

    let watch = || async {
        // One message, then the stream stays open for as long as the client keeps it.
        let first = futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from_static(
            b"\0\0\0\0\0",
        ))]);
        http::Response::builder()
            .header("content-type", "application/grpc")
            .body(Body::from_stream(first.chain(futures::stream::pending())))
            .unwrap()
    };
    let unavailable = || async {
        http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .body(Body::empty())
            .unwrap()
    };
    let app = Router::new()
        .route("/svc/Watch", post(watch))
        .route("/svc/Down", post(unavailable));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let open = Duration::from_millis(20);
    let (breaker, handle) = CircuitBreakerLayer::builder()
        .name("watch")
        .consecutive_failures(1)
        .open_duration(open)
        .half_open_probes(1)
        .build()
        .unwrap()
        .pair();
    let client = breaker
        .classify(GrpcCodes::new())
        .layer(service_fn(move |path| grpc_call(addr, path)));

    client.clone().oneshot("/svc/Down").await.unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::sleep(open * 2).await;

    let mut stream = client
        .clone()
        .oneshot("/svc/Watch")
        .await
        .unwrap()
        .into_body();
    let first = http_body_util::BodyExt::frame(&mut stream)
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_data());
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "the probe's stream is still open, and it is decided"
    );
    let next = client.clone().oneshot("/svc/Watch").await;
    assert!(next.is_ok(), "the stream holds no half-open slot");
    drop((stream, next));
    server.abort();
}
