//! gRPC retries: marked methods only, chosen codes, pushback, a tonic client over the retry
//! stack, and transport failures over real HTTP/2 connections on 127.0.0.1.
#![cfg(feature = "grpc")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use http::{HeaderValue, Request, Response};
use seawall_core::BoxError;
use seawall_core::backoff::{Backoff, Jitter};
use seawall_core::grpc::RETRY_PUSHBACK_MS;
use seawall_retry::{GrpcPolicy, ReplayBody, ReplayBodyLayer, RetryLayer};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The idempotent method the tests call, and the path tonic-health's client calls.
const GET: &str = "/shop.Catalog/GetProduct";
const CHECK: &str = "/grpc.health.v1.Health/Check";

/// `GrpcPolicy::new()` with `GET` marked idempotent.
fn marked() -> GrpcPolicy {
    GrpcPolicy::new().with_method(GET)
}

fn layer(policy: GrpcPolicy) -> RetryLayer<GrpcPolicy> {
    RetryLayer::builder()
        .name("grpc")
        .max_attempts(3)
        .backoff(
            Backoff::constant(ms(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .max_delay(Duration::from_secs(5))
        .no_budget()
        .build()
        .unwrap()
        .policy(policy)
}

fn trailers_only(code: Code, pushback: Option<&'static str>) -> Response<Body> {
    let mut res = Status::new(code, "down").into_http::<Body>();
    if let Some(p) = pushback {
        res.headers_mut()
            .insert(RETRY_PUSHBACK_MS, HeaderValue::from_static(p));
    }
    res
}

/// Answers attempt `n` with `respond(n)` and records when each attempt came.
fn scripted(
    times: &Arc<std::sync::Mutex<Vec<Instant>>>,
    respond: impl Fn(usize) -> Response<Body> + Send + Sync + 'static,
) -> impl Service<
    Request<ReplayBody<Body>>,
    Response = Response<Body>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    let times = times.clone();
    let respond = Arc::new(respond);
    service_fn(move |_req: Request<ReplayBody<Body>>| {
        let n = {
            let mut times = times.lock().unwrap();
            times.push(Instant::now());
            times.len() - 1
        };
        std::future::ready(Ok::<_, BoxError>(respond(n)))
    })
}

/// Calls `GET` once through a retry layer with `policy`; when each attempt came.
async fn attempts(
    policy: GrpcPolicy,
    respond: impl Fn(usize) -> Response<Body> + Send + Sync + 'static,
) -> Vec<Duration> {
    let times = Arc::new(std::sync::Mutex::new(Vec::new()));
    let svc = layer(policy).layer(scripted(&times, respond));
    let req = Request::post(GET)
        .body(ReplayBody::buffered(Bytes::new()))
        .unwrap();
    let _ = svc.oneshot(req).await.unwrap();
    let times = times.lock().unwrap();
    times.iter().map(|t| t.duration_since(times[0])).collect()
}

#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_and_other_codes_are_not() {
    let unavailable = attempts(marked(), |_| trailers_only(Code::Unavailable, None)).await;
    assert_eq!(unavailable, [ms(0), ms(10), ms(20)]);
    let internal = attempts(marked(), |_| trailers_only(Code::Internal, None)).await;
    assert_eq!(internal.len(), 1);
    let chosen = attempts(GrpcPolicy::codes([Code::Internal]).with_method(GET), |_| {
        trailers_only(Code::Internal, None)
    })
    .await;
    assert_eq!(chosen.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_method_not_marked_idempotent_is_sent_once() {
    let unmarked = attempts(GrpcPolicy::new(), |_| {
        trailers_only(Code::Unavailable, None)
    })
    .await;
    assert_eq!(unmarked.len(), 1);
    let other = GrpcPolicy::new().with_method("/shop.Orders/PlaceOrder");
    let once = attempts(other, |_| trailers_only(Code::Unavailable, None)).await;
    assert_eq!(once.len(), 1);
    let by_service = GrpcPolicy::new().with_methods(|path| path.starts_with("/shop.Catalog/"));
    let thrice = attempts(by_service, |_| trailers_only(Code::Unavailable, None)).await;
    assert_eq!(thrice.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn pushback_sets_the_next_delay() {
    let times = attempts(marked(), |n| {
        if n == 0 {
            trailers_only(Code::Unavailable, Some("300"))
        } else {
            trailers_only(Code::Ok, None)
        }
    })
    .await;
    assert_eq!(times, [ms(0), ms(300)]);
}

#[tokio::test(start_paused = true)]
async fn a_negative_pushback_stops_retrying() {
    let times = attempts(marked(), |_| trailers_only(Code::Unavailable, Some("-1"))).await;
    assert_eq!(times.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_pushback_beyond_max_delay_stops_retrying() {
    let times = attempts(marked(), |_| {
        trailers_only(Code::Unavailable, Some("60000"))
    })
    .await;
    assert_eq!(times.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_tonic_client_request_is_replayed_to_a_tonic_server() {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("orders", tonic_health::ServingStatus::Serving)
        .await;
    let failures = Arc::new(AtomicUsize::new(0));
    let seen = failures.clone();
    // Takes `tonic::body::Body` only, as a tonic `Channel` does.
    let flaky = service_fn(
        move |req: Request<Body>| -> BoxFuture<'static, Result<Response<Body>, BoxError>> {
            if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                return std::future::ready(Ok(trailers_only(Code::Unavailable, None))).boxed();
            }
            let mut health = health.clone();
            async move { health.call(req).await.map_err(Into::into) }.boxed()
        },
    );
    let stack = ServiceBuilder::new()
        .layer(ReplayBodyLayer::default())
        .layer(layer(GrpcPolicy::new().with_method(CHECK)))
        .map_request(|req: Request<ReplayBody<Body>>| req.map(Body::new))
        .service(flaky);
    let mut client = HealthClient::new(stack);
    let res = client
        .check(HealthCheckRequest {
            service: "orders".into(),
        })
        .await
        .unwrap();
    assert_eq!(res.into_inner().status(), ServingStatus::Serving);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        3,
        "two UNAVAILABLE, then the real answer"
    );
}

// ===== transport failures over real connections =====

/// An HTTP/2 server on 127.0.0.1 that resets every stream it receives with `reason`, counting
/// the streams.
async fn resetting_server(reason: h2::Reason) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = streams.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    respond.send_reset(reason);
                }
            });
        }
    });
    (addr, streams)
}

/// Sends one health check to `addr` over a tonic `Channel` behind a retry layer with
/// `policy`; the status the client got and the retries made.
async fn check_over_channel(addr: SocketAddr, policy: GrpcPolicy) -> (Status, usize) {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let retries = Arc::new(AtomicUsize::new(0));
    let counted = retries.clone();
    let retry = layer(policy).on_retry(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let stack = ServiceBuilder::new()
        .layer(ReplayBodyLayer::default())
        .layer(retry)
        .map_request(|req: Request<ReplayBody<Body>>| req.map(Body::new))
        .service(channel);
    let status = HealthClient::new(stack)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    (status, retries.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_refused_stream_never_reached_the_server_and_is_retried() {
    let (addr, streams) = resetting_server(h2::Reason::REFUSED_STREAM).await;
    let (status, retries) = check_over_channel(addr, GrpcPolicy::new().with_method(CHECK)).await;
    assert_eq!(retries, 2, "{status:?}");
    assert_eq!(streams.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_stream_reset_after_it_was_sent_is_not_retried() {
    let (addr, streams) = resetting_server(h2::Reason::CANCEL).await;
    let (status, retries) = check_over_channel(addr, GrpcPolicy::new().with_method(CHECK)).await;
    assert_eq!(retries, 0, "{status:?}");
    assert_eq!(streams.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_stream_of_a_method_not_marked_is_not_retried() {
    let (addr, streams) = resetting_server(h2::Reason::REFUSED_STREAM).await;
    let (status, retries) = check_over_channel(addr, GrpcPolicy::new()).await;
    assert_eq!(retries, 0, "{status:?}");
    assert_eq!(streams.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let (status, retries) = check_over_channel(addr, GrpcPolicy::new().with_method(CHECK)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(retries, 2, "{status:?}");
}
