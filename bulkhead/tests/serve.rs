//! A bulkhead under a served axum router: every connection shares the one bulkhead, and
//! response bodies as hyper treats them report their outcomes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::{self, MethodRouter};
use bytes::Bytes;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use seawall_bulkhead::{AimdConfig, BodyEnd, BulkheadHandle, BulkheadLayer};
use seawall_core::classify::HttpStatus;
use seawall_core::http::ErrorResponseLayer;
use seawall_core::testing::serve::{get, serve};
use seawall_core::testing::{Gate, trace_init};
use tokio::net::TcpStream;
use tower::ServiceBuilder;

/// One GET over a connection of its own.
async fn get_on_new_connection(addr: SocketAddr) -> StatusCode {
    get(addr, "/").await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_a_served_router_share_one_bulkhead() {
    trace_init();
    let gate = Gate::new();
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
                    gate.pass().await;
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
    gate.arrived(1).await;
    assert_eq!(handle.in_flight(), 1, "the first request holds the slot");
    assert_eq!(
        get_on_new_connection(addr).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a second connection meets the same, full bulkhead"
    );
    gate.open(1);
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(handle.in_flight(), 0);
}

/// Sends `GET path` one request at a time, each over a connection of its own, until the limit
/// is no longer `from`; gives up after `max` requests. Returns the limit.
async fn until_the_limit_moves(
    addr: SocketAddr,
    path: &str,
    handle: &BulkheadHandle,
    from: usize,
    max: usize,
) -> usize {
    for _ in 0..max {
        let response = get(addr, path).await;
        assert!(!response.body().is_empty(), "the body arrives whole");
        if handle.limit() != from {
            break;
        }
    }
    assert_eq!(handle.in_flight(), 0, "every body gave its slot back");
    handle.limit()
}

/// An AIMD bulkhead that holds slots until response bodies end, moving its limit every 100 ms.
fn adaptive(initial: usize) -> (BulkheadLayer<BodyEnd<HttpStatus>>, BulkheadHandle) {
    let (layer, handle) = BulkheadLayer::builder()
        .name("api")
        .adaptive(AimdConfig::new().initial(initial).min(1).max(100))
        .sample_window(Duration::from_millis(100))
        .build()
        .unwrap()
        .pair();
    (
        layer
            .classify(HttpStatus::server_errors())
            .release_on_body_end(),
        handle,
    )
}

fn served(route: MethodRouter, bulkhead: BulkheadLayer<BodyEnd<HttpStatus>>) -> Router {
    Router::new().route("/", route).layer(
        ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(bulkhead),
    )
}

/// What axum's `Json` answers with: the serialized value as one `Bytes` chunk.
fn json(value: serde_json::Value) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/json")],
        Bytes::from(serde_json::to_vec(&value).unwrap()),
    )
}

// Each handler sleeps 1 ms so that every call is slow enough to count as a sample (calls under
// 100 µs say nothing about a downstream) and so that a few hundred requests span several
// sample windows.
const WORK: Duration = Duration::from_millis(1);

// hyper stops polling a body once `is_end_stream()` turns true after its last frame and drops
// it: `String` and `Json` bodies end that way, never by being polled to `None`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_and_json_bodies_feed_the_adaptive_limit_when_served() {
    let text = routing::get(|| async {
        tokio::time::sleep(WORK).await;
        "hello".to_owned()
    });
    let object = routing::get(|| async {
        tokio::time::sleep(WORK).await;
        json(serde_json::json!({ "hello": "world" }))
    });
    for route in [text, object] {
        // With one call in flight at a time, AIMD grows a limit of 2 (half of it is in use).
        let (bulkhead, handle) = adaptive(2);
        let addr = serve(served(route, bulkhead)).await;
        let limit = until_the_limit_moves(addr, "/", &handle, 2, 2_000).await;
        assert!(limit > 2, "successes reached the limit: {limit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_server_error_counts_as_a_drop() {
    let failing = routing::get(|| async {
        tokio::time::sleep(WORK).await;
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "database down".to_owned(),
        )
    });
    // One call in flight of 10 never grows the limit: only a drop can move it.
    let (bulkhead, handle) = adaptive(10);
    let addr = serve(served(failing, bulkhead)).await;
    assert_eq!(
        until_the_limit_moves(addr, "/", &handle, 10, 2_000).await,
        9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_gives_its_slot_back_when_served() {
    trace_init();
    // Left open: it only tells the test when the endless body's call has taken its slot.
    let called = Gate::new();
    called.open(1);
    let (bulkhead, handle) = BulkheadLayer::builder()
        .name("api")
        .max_concurrent(1)
        .max_reader_idle(Duration::from_millis(200))
        .build()
        .unwrap()
        .pair();
    let entered = called.clone();
    let endless = routing::get(move || {
        let entered = entered.clone();
        async move {
            entered.pass().await;
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            Body::from_stream(futures::stream::repeat_with(move || {
                Ok::<_, Infallible>(chunk.clone())
            }))
        }
    });
    let app = Router::new()
        .route("/endless", endless)
        .route("/", routing::get(|| async { "hello" }))
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(bulkhead.release_on_body_end()),
        );
    let addr = serve(app).await;

    // Asks for an endless body and never reads it: once the socket buffers are full, hyper
    // stops polling the body, which then never ends.
    let stalled = TcpStream::connect(addr).await.unwrap();
    stalled.writable().await.unwrap();
    let request = b"GET /endless HTTP/1.1\r\nhost: localhost\r\n\r\n";
    assert_eq!(stalled.try_write(request).unwrap(), request.len());
    called.arrived(1).await;
    assert_eq!(handle.in_flight(), 1, "the endless body holds the slot");

    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..500 {
        status = get(addr, "/").await.status();
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, StatusCode::OK, "the unread body's slot went back");
    drop(stalled);
}

/// Core's `Header` extractor partitions the bulkhead: a tenant that holds its partition's one
/// slot meets a full bulkhead, while tenants hashed to the other partition get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulkhead_partitioned_by_a_header_keeps_a_noisy_tenant_to_its_share() {
    use seawall_core::key::Header;
    use seawall_core::testing::serve::get_with;

    trace_init();
    let gate = Gate::new();
    let held = gate.clone();
    let (bulkhead, handle) = BulkheadLayer::builder()
        .name("tenants")
        .max_concurrent(2)
        .partition("even", 0.5)
        .partition("odd", 0.5)
        .borrowing(false)
        .build()
        .unwrap()
        .partition_by_key(Header::new(http::HeaderName::from_static("x-tenant")))
        .pair();
    let app = Router::new()
        .route(
            "/",
            routing::get(move |headers: http::HeaderMap| {
                let gate = held.clone();
                async move {
                    if headers.contains_key("x-hold") {
                        gate.pass().await;
                    }
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

    let noisy = tokio::spawn(async move {
        get_with(addr, "/", &[("x-tenant", "noisy"), ("x-hold", "1")])
            .await
            .status()
    });
    gate.arrived(1).await;
    assert_eq!(handle.in_flight(), 1);
    assert_eq!(
        get_with(addr, "/", &[("x-tenant", "noisy")]).await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the noisy tenant's partition is full"
    );
    let mut others = Vec::new();
    for n in 0..16 {
        let tenant = format!("tenant-{n}");
        others.push(get_with(addr, "/", &[("x-tenant", &tenant)]).await.status());
    }
    assert!(
        others.contains(&StatusCode::OK),
        "tenants of the other partition get through: {others:?}"
    );
    assert!(
        others.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "tenants hashed beside the noisy one share its partition: {others:?}"
    );
    gate.open(1);
    assert_eq!(noisy.await.unwrap(), StatusCode::OK);
    assert_eq!(handle.in_flight(), 0);
}

/// Tells a test when the response body it belongs to is dropped.
struct DroppedWith(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for DroppedWith {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_body_gives_the_slot_back_when_hyper_drops_the_body() {
    trace_init();
    let (tx, dropped) = tokio::sync::oneshot::channel();
    let guard = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
    let (bulkhead, handle) = BulkheadLayer::builder()
        .name("api")
        .max_concurrent(1)
        // Longer than any test: only the drop of the body may give the slot back.
        .max_reader_idle(Duration::from_secs(3600))
        .build()
        .unwrap()
        .pair();
    let endless = routing::get(move || {
        let on_drop = DroppedWith(guard.lock().unwrap().take());
        async move {
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            Body::from_stream(futures::stream::repeat_with(move || {
                let _ = &on_drop;
                Ok::<_, Infallible>(chunk.clone())
            }))
        }
    });
    let app = Router::new().route("/", endless).layer(
        ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(bulkhead.release_on_body_end()),
    );
    let addr = serve(app).await;

    let client = TcpStream::connect(addr).await.unwrap();
    client.writable().await.unwrap();
    let request = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n";
    assert_eq!(client.try_write(request).unwrap(), request.len());
    // The head and the first frames arrive: the body is streaming and holds the slot.
    client.readable().await.unwrap();
    let mut head = [0u8; 1024];
    let read = client.try_read(&mut head).unwrap();
    assert!(head[..read].starts_with(b"HTTP/1.1 200"));
    assert_eq!(handle.in_flight(), 1);
    // Gone with unread bytes: the next write of hyper fails and it drops the body.
    drop(client);
    dropped.await.unwrap();
    assert_eq!(handle.in_flight(), 0, "the body's drop gave its slot back");
}
