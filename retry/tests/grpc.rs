//! gRPC retries: chosen codes, pushback, and a tonic client over the retry stack.
#![cfg(feature = "grpc")]

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
use tokio::time::Instant;
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
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

async fn attempts(
    policy: GrpcPolicy,
    respond: impl Fn(usize) -> Response<Body> + Send + Sync + 'static,
) -> Vec<Duration> {
    let times = Arc::new(std::sync::Mutex::new(Vec::new()));
    let svc = layer(policy).layer(scripted(&times, respond));
    let _ = svc
        .oneshot(Request::new(ReplayBody::buffered(Bytes::new())))
        .await
        .unwrap();
    let times = times.lock().unwrap();
    times.iter().map(|t| t.duration_since(times[0])).collect()
}

#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_and_other_codes_are_not() {
    let unavailable = attempts(GrpcPolicy::new(), |_| {
        trailers_only(Code::Unavailable, None)
    })
    .await;
    assert_eq!(unavailable, [ms(0), ms(10), ms(20)]);
    let internal = attempts(GrpcPolicy::new(), |_| trailers_only(Code::Internal, None)).await;
    assert_eq!(internal.len(), 1);
    let chosen = attempts(GrpcPolicy::codes([Code::Internal]), |_| {
        trailers_only(Code::Internal, None)
    })
    .await;
    assert_eq!(chosen.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn pushback_sets_the_next_delay() {
    let times = attempts(GrpcPolicy::new(), |n| {
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
    let times = attempts(GrpcPolicy::new(), |_| {
        trailers_only(Code::Unavailable, Some("-1"))
    })
    .await;
    assert_eq!(times.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_pushback_beyond_max_delay_stops_retrying() {
    let times = attempts(GrpcPolicy::new(), |_| {
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
        .layer(layer(GrpcPolicy::new()))
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
