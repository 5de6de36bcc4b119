//! A bulkhead under a served axum router: every connection shares the one bulkhead.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use seawall_bulkhead::BulkheadLayer;
use seawall_core::http::ErrorResponseLayer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;

/// One GET over a connection of its own.
async fn get_on_new_connection(addr: SocketAddr) -> StatusCode {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
    sender.send_request(req).await.unwrap().status()
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
            get(move || {
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

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
    server.abort();
}
