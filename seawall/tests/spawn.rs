//! Every layer and both stacks can be called from a spawned task the way tokio users write
//! it: `tokio::spawn(async move { svc.oneshot(req).await })`, or a call made here and awaited
//! in a spawned task.
//!
//! These are compile tests first: each fails to build when a layer's service or future stops
//! being `Send` in that form. rustc checks a spawned `async` block with every lifetime in the
//! types it holds replaced by "any lifetime", the `'static` of a `BoxError` spelled in a type's
//! generic arguments included. A future type with a bound such as `S: Service<Req>` makes rustc
//! prove that `Service` impl again under those lifetimes, and for an inner layer whose error
//! converts into `BoxError` it fails ("implementation of `From` is not general enough"), so no
//! future here carries such a bound. The remaining case rustc cannot take, in tower's own
//! layers as in these, is `oneshot` over a service whose *type* spells `BoxError` (a closure
//! returning it, a `BoxCloneService<_, _, BoxError>`); the last test shows the workaround the
//! `seawall` crate docs give.

// The `async` blocks that only await a future are what these tests are about.
#![allow(clippy::redundant_async_block)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use seawall::bulkhead::BulkheadLayer;
use seawall::chaos::ChaosLayer;
use seawall::circuit_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer};
use seawall::classify::HttpStatus;
use seawall::fallback::FallbackLayer;
use seawall::health::{ComponentConfig, HealthLayer, HealthTracker, RateConfig};
use seawall::hedge::HedgeLayer;
use seawall::rate_limit::{Quota, RateLimitLayer, key_fn};
use seawall::retry::{HttpPolicy, ReplayBody, ReplayBodyLayer, RetryLayer};
use seawall::stack::{ClientStackConfig, ClientStackLayer, ServerStackConfig, ServerStackLayer};
use seawall::timeout::{DeadlineConfig, InboundDeadlineLayer, TimeoutLayer};
use seawall::{BoxError, RejectionKind};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A downstream whose error is `BoxError`, named by its `Service` impl.
#[derive(Debug, Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, n: u64) -> Self::Future {
        ready(Ok(n))
    }
}

/// An HTTP downstream whose error is `BoxError`, written as an `async fn`.
async fn http_echo(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, BoxError> {
    Ok(Response::new(req.into_body()))
}

/// An axum-style handler: never fails.
async fn handler(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::from("ok")))
}

/// Spawns one call of `svc` as every tokio user writes it, and waits for its result.
macro_rules! spawn_call {
    ($svc:expr, $req:expr) => {{
        let svc = $svc;
        let req = $req;
        tokio::spawn(async move { svc.oneshot(req).await })
            .await
            .expect("the task ran")
    }};
}

/// Makes one call of `svc` here and awaits it in a spawned task.
macro_rules! spawn_future {
    ($svc:expr, $req:expr) => {{
        let mut svc = $svc;
        let future = svc.ready().await.expect("ready").call($req);
        tokio::spawn(async move { future.await })
            .await
            .expect("the task ran")
    }};
}

/// A downstream as a closure: its `BoxError` is spelled in its type, under a timeout, whose
/// bounds relate that error to `BoxError`.
macro_rules! closure_under_a_timeout {
    () => {
        TimeoutLayer::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap()
            .layer(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }))
    };
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/").body(Full::from("")).unwrap()
}

#[tokio::test]
async fn timeout() {
    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(spawn_call!(layer.layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(layer.clone().layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
    let propagating = layer.propagate(DeadlineConfig::outbound());
    spawn_call!(propagating.layer(service_fn(http_echo)), get()).unwrap();
}

#[tokio::test]
async fn inbound_deadline() {
    let layer = InboundDeadlineLayer::new(DeadlineConfig::inbound());
    spawn_call!(layer.clone().layer(service_fn(handler)), get()).unwrap();
    let closure = service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, BoxError>("ok") });
    spawn_future!(layer.layer(closure), get()).unwrap();
}

#[tokio::test]
async fn retry() {
    let layer = RetryLayer::builder().build().unwrap();
    assert_eq!(spawn_call!(layer.clone().layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(layer.clone().layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
    let http = layer.policy(HttpPolicy::new());
    spawn_call!(http.layer(service_fn(http_echo)), get()).unwrap();
    let replayed = ReplayBodyLayer::default().layer(
        TimeoutLayer::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap()
            .layer(service_fn(|_: Request<ReplayBody<Full<Bytes>>>| async {
                Ok::<_, BoxError>(())
            })),
    );
    spawn_future!(replayed, get()).unwrap();
}

#[tokio::test]
async fn circuit_breaker() {
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    assert_eq!(spawn_call!(layer.clone().layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(layer.clone().layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
    let http = layer.classify(HttpStatus::server_errors());
    spawn_call!(http.layer(service_fn(http_echo)), get()).unwrap();
    let keyed = KeyedCircuitBreakerLayer::new(
        seawall::circuit_breaker::CircuitBreakerConfig::builder()
            .build()
            .unwrap(),
        seawall::key::key_fn(|n: &u64| n % 4),
    );
    assert_eq!(spawn_call!(keyed.clone().layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(keyed.layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
}

#[tokio::test]
async fn bulkhead() {
    let layer = BulkheadLayer::builder().max_concurrent(4).build().unwrap();
    assert_eq!(spawn_call!(layer.clone().layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(layer.clone().layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
    let http = layer.classify(HttpStatus::server_errors());
    spawn_call!(http.layer(service_fn(http_echo)), get()).unwrap();
}

#[tokio::test]
async fn rate_limit() {
    let layer = RateLimitLayer::builder()
        .quota(Quota::per_second(100))
        .build()
        .unwrap();
    assert_eq!(spawn_call!(layer.clone().layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(layer.clone().layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
    let keyed = layer.keyed(key_fn(|n: &u64| n % 4));
    assert_eq!(spawn_call!(keyed.clone().layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(keyed.layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
}

#[tokio::test]
async fn fallback() {
    let value = FallbackLayer::builder()
        .on_rejections([RejectionKind::CircuitOpen])
        .value(0u64)
        .build()
        .unwrap();
    assert_eq!(spawn_call!(value.clone().layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(value.layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
    let failover = FallbackLayer::builder().failover(Echo).build().unwrap();
    assert_eq!(spawn_call!(failover.layer(Echo), 1).unwrap(), 1);
}

#[tokio::test]
async fn health() {
    let tracker = HealthTracker::new("app");
    let layer = HealthLayer::new(
        &tracker,
        RateConfig::builder(ComponentConfig::new("api").unwrap())
            .build()
            .unwrap(),
    );
    assert_eq!(spawn_call!(layer.clone().layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(layer.clone().layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
    spawn_call!(layer.layer(service_fn(handler)), get()).unwrap();
}

#[tokio::test]
async fn chaos() {
    let layer = ChaosLayer::builder().enabled(false).build().unwrap();
    assert_eq!(spawn_call!(layer.clone().layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(layer.layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
}

#[tokio::test]
async fn hedge() {
    let layer = HedgeLayer::builder()
        .delay(Duration::from_millis(50))
        .build()
        .unwrap();
    assert_eq!(spawn_call!(layer.layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(layer.layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
}

fn client_config() -> ClientStackConfig {
    serde_json::from_value(serde_json::json!({
        "name": "dep",
        "total_timeout": "2s",
        "attempt_timeout": "500ms",
        "bulkhead": { "max_concurrent": 8 }
    }))
    .unwrap()
}

#[tokio::test]
async fn client_stack() {
    let stack = ClientStackLayer::new(client_config());
    assert_eq!(spawn_call!(stack.clone().layer(Echo), 1).unwrap(), 1);
    assert_eq!(
        spawn_future!(stack.clone().layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
    spawn_call!(stack.layer(service_fn(http_echo)), get()).unwrap();
    let hedged = ClientStackLayer::new(
        client_config()
            .with_hedge(seawall::hedge::HedgeConfig::default())
            .unwrap(),
    );
    assert_eq!(
        spawn_future!(hedged.layer(closure_under_a_timeout!()), 1).unwrap(),
        1
    );
}

#[tokio::test]
async fn server_stack() {
    let config: ServerStackConfig = serde_json::from_value(serde_json::json!({
        "name": "api",
        "rate_limit": { "quota": { "per_second": 100, "burst": 10 } },
        "bulkhead": { "max_concurrent": 8 },
        "timeout": "1s"
    }))
    .unwrap();
    let stack = ServerStackLayer::new(config);
    spawn_call!(stack.clone().layer(service_fn(handler)), get()).unwrap();
    let closure = service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, BoxError>("ok") });
    spawn_future!(stack.layer(closure), get()).unwrap();
}

// ===== the shape rustc cannot take, and its workaround =====

/// A downstream as a boxed service: `BoxError` is spelled in its type.
fn boxed() -> BoxCloneSyncService<u64, u64, BoxError> {
    BoxCloneSyncService::new(service_fn(|n: u64| async move { Ok::<_, BoxError>(n) }))
}

#[tokio::test]
async fn a_call_over_a_boxed_service_is_spawned_as_a_future() {
    // `tokio::spawn(async move { svc.oneshot(n).await })` does not compile here, for tower's
    // own `Timeout` as for any layer: spawning the call's future itself does.
    let svc = ClientStackLayer::new(client_config()).layer(boxed());
    assert_eq!(tokio::spawn(svc.oneshot(1)).await.unwrap().unwrap(), 1);
    let svc = RetryLayer::builder().build().unwrap().layer(boxed());
    let call = svc.oneshot(2);
    assert_eq!(tokio::spawn(call).await.unwrap().unwrap(), 2);
}
