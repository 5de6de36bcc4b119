//! The client stack against a flaky dependency, on the paused clock, and against a real
//! HTTP server on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use seawall::circuit_breaker::CircuitState;
use seawall::fallback::FallbackLayer;
use seawall::stack::{BreakerKey, ClientStack, ClientStackConfig, ClientStackLayer};
use seawall::{BoxError, RejectionKind, ServiceBuilderExt, rejected};
use seawall_core::testing::TestRecorder;
use seawall_core::testing::serve::serve;
use tokio::net::TcpStream;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn config() -> ClientStackConfig {
    serde_json::from_value(serde_json::json!({
        "name": "inventory",
        "total_timeout": "2s",
        "attempt_timeout": "300ms",
        "retry": {
            "max_attempts": 3,
            "backoff": { "kind": "constant", "base": "10ms", "jitter": "none" },
            "budget": null,
            "seed": 7
        },
        "circuit_breaker": {
            "window": { "count": 10 },
            "minimum_calls": 10,
            "failure_rate_threshold": 0.5,
            "open_duration": "30s"
        },
        "bulkhead": { "max_concurrent": 8 }
    }))
    .unwrap()
}

/// A dependency whose calls fail while `failing` says so, counting every call it gets.
#[derive(Clone, Default)]
struct Dependency {
    calls: Arc<AtomicUsize>,
    failures_left: Arc<AtomicUsize>,
}

impl Dependency {
    fn service(
        &self,
    ) -> impl Service<u64, Response = u64, Error = BoxError, Future = impl Send + use<>>
    + Clone
    + Send
    + use<> {
        let this = self.clone();
        service_fn(move |n: u64| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let failing = this
                    .failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok();
                if failing {
                    Err::<u64, BoxError>("connection reset".into())
                } else {
                    Ok(n)
                }
            }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[test]
fn attempts_longer_than_the_total_are_refused() {
    let err = serde_json::from_value::<ClientStackConfig>(serde_json::json!({
        "name": "x", "total_timeout": "1s", "attempt_timeout": "2s", "bulkhead": { "max_concurrent": 1 }
    }))
    .unwrap_err();
    assert!(err.to_string().contains("attempt_timeout"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_away() {
    let dependency = Dependency::default();
    dependency.failures_left.store(2, Ordering::SeqCst);
    let svc = ClientStackLayer::new(config()).layer(dependency.service());
    assert_eq!(svc.oneshot(42).await.unwrap(), 42);
    assert_eq!(dependency.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_retry_handle_reloads_max_attempts_while_the_stack_serves() {
    let dependency = Dependency::default();
    // Only the window judges, so that the failures in a row stay retries, not an open breaker.
    let mut built = serde_json::to_value(config()).unwrap();
    built["circuit_breaker"]["consecutive_failures"] = "off".into();
    let built: ClientStackConfig = serde_json::from_value(built).unwrap();
    let layer = ClientStackLayer::new(built.clone());
    let retry = layer.retry();
    let svc = layer.layer(dependency.service());
    dependency.failures_left.store(3, Ordering::SeqCst);
    assert!(svc.clone().oneshot(1).await.is_err());
    assert_eq!(dependency.calls(), 3, "three attempts as built");

    // As the stack's config file would say it after an edit: the same but for `max_attempts`.
    let mut edited = serde_json::to_value(built).unwrap();
    edited["retry"]["max_attempts"] = 5.into();
    let edited: ClientStackConfig = serde_json::from_value(edited).unwrap();
    retry.reload(edited.retry().clone()).unwrap();
    assert_eq!(retry.config().max_attempts(), 5);
    dependency.failures_left.store(4, Ordering::SeqCst);
    assert_eq!(
        svc.oneshot(2).await.unwrap(),
        2,
        "the fifth attempt succeeds"
    );
    assert_eq!(
        dependency.calls(),
        3 + 5,
        "the same service takes the new attempts"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_dependency_opens_the_breaker_and_calls_stop_reaching_it() {
    let dependency = Dependency::default();
    dependency.failures_left.store(usize::MAX, Ordering::SeqCst);
    let layer = ClientStackLayer::new(config());
    let breaker = layer.circuit_breaker();
    let svc: ClientStack<_> = layer.layer(dependency.service());

    // From a clean history 5 failures in a row shed (every other call, and every retry) and
    // 14 open: 5 + 2 × 9 requests.
    let mut kinds = Vec::new();
    for n in 0..23 {
        let err = svc.clone().oneshot(n).await.unwrap_err();
        kinds.push(rejected(&*err).map(|r| r.kind()));
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let reached = dependency.calls();
    assert!(
        reached <= 14 + 5,
        "14 failures in a row and the first 5 requests' retries at most: {reached}"
    );
    assert_eq!(kinds.last(), Some(&Some(RejectionKind::CircuitOpen)));

    for n in 0..100 {
        let err = svc.clone().oneshot(n).await.unwrap_err();
        assert_eq!(
            rejected(&*err).map(|r| r.kind()),
            Some(RejectionKind::CircuitOpen)
        );
    }
    assert_eq!(
        dependency.calls(),
        reached,
        "an open breaker keeps every call away"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_is_cut_by_the_attempt_timeout_and_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let dependency = service_fn(move |n: u64| {
        let first = count.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(n)
        }
    });
    let start = tokio::time::Instant::now();
    let svc = ClientStackLayer::new(config()).layer(dependency);
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(310),
        "300 ms attempt timeout + 10 ms backoff"
    );
}

/// The layer that ended a call to a dependency that never answers, its kind, and how long the
/// call took, under `config` with `total_timeout` (the breaker judging by its window only, so
/// that the failures in a row stay retries).
async fn hung_call_ended_by(total_timeout: &str) -> (String, RejectionKind, Duration) {
    let mut built = serde_json::to_value(config()).unwrap();
    built["total_timeout"] = total_timeout.into();
    built["circuit_breaker"]["consecutive_failures"] = "off".into();
    let built: ClientStackConfig = serde_json::from_value(built).unwrap();
    let hung = service_fn(|_: u64| std::future::pending::<Result<u64, BoxError>>());
    let svc = ClientStackLayer::new(built).layer(hung);
    let start = tokio::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), svc.oneshot(1))
        .await
        .expect("a timeout of the stack fires")
        .unwrap_err();
    let rejection = rejected(&*err).expect("a rejection");
    (
        rejection.name().to_owned(),
        rejection.kind(),
        start.elapsed(),
    )
}

#[tokio::test(start_paused = true)]
async fn attempts_that_end_before_the_total_end_the_call_as_the_attempt_timeout() {
    // Three attempts of 300 ms with 10 ms between them: 920 ms, within the total's 2 s.
    assert_eq!(
        hung_call_ended_by("2s").await,
        (
            "inventory.attempt".into(),
            RejectionKind::TimedOut,
            Duration::from_millis(920)
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_would_outlive_the_total_is_ended_by_the_total_timeout() {
    // The second attempt starts at 310 ms and would end at 610, after the total's 500.
    assert_eq!(
        hung_call_ended_by("500ms").await,
        (
            "inventory.total".into(),
            RejectionKind::TimedOut,
            Duration::from_millis(500)
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_total_as_long_as_the_attempt_ends_the_call_as_the_attempt_timeout() {
    // Both fire at 300 ms; the attempt's answer comes first and no retry fits after it.
    assert_eq!(
        hung_call_ended_by("300ms").await,
        (
            "inventory.attempt".into(),
            RejectionKind::TimedOut,
            Duration::from_millis(300)
        )
    );
}

type Inventory = BoxCloneSyncService<u64, &'static str, BoxError>;

async fn stock(State(inventory): State<Inventory>) -> String {
    match inventory.oneshot(1).await {
        Ok(answer) => answer.to_owned(),
        Err(err) => format!("error: {err}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_gets_the_fallback_once_the_breaker_is_open_and_metrics_show_it() {
    let recorder = TestRecorder::new();
    let dependency = Dependency::default();
    dependency.failures_left.store(usize::MAX, Ordering::SeqCst);
    let (client, fallback) = recorder.install_for(|| {
        let fallback = FallbackLayer::builder()
            .name("inventory")
            .on_rejections([RejectionKind::CircuitOpen])
            .value("cached stock")
            .build()
            .unwrap();
        (ClientStackLayer::new(config()), fallback)
    });
    let breaker = client.circuit_breaker();
    let dependency_svc = dependency.service().map_response(|_| "live stock");
    let inventory: Inventory = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .with_fallback(fallback)
            .layer(client)
            .service(dependency_svc),
    );
    let app = Router::new()
        .route("/stock", routing::get(stock))
        .with_state(inventory);

    let mut answers = Vec::new();
    for _ in 0..20 {
        let res = app
            .clone()
            .oneshot(
                Request::get("/stock")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        answers.push(
            String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
                .unwrap(),
        );
    }
    assert!(answers[0].starts_with("error: "), "{}", answers[0]);
    assert_eq!(answers.last().unwrap(), "cached stock");
    assert_eq!(breaker.state(), CircuitState::Open);

    let name = [("name", "inventory")];
    assert!(
        recorder.counter("seawall_retry_attempts_total", &name) > 10,
        "retries happened"
    );
    assert_eq!(
        recorder.gauge(
            "seawall_circuit_breaker_state",
            &[("name", "inventory"), ("state", "open")]
        ),
        Some(1.0)
    );
    assert!(
        recorder.counter(
            "seawall_fallback_total",
            &[("name", "inventory"), ("cause", "circuit_open")]
        ) > 0
    );
    assert!(
        recorder.counter(
            "seawall_timeout_calls_total",
            &[("name", "inventory.total")]
        ) > 0
    );
}

#[test]
fn the_stack_config_loads_from_toml() {
    let config: ClientStackConfig = toml::from_str(
        r#"
        name = "payments"
        total_timeout = "2s"
        attempt_timeout = "400ms"

        [retry]
        max_attempts = 2
        backoff = { kind = "exponential", base = "50ms", cap = "400ms", jitter = "full" }
        budget = { ratio = 0.1, min_per_second = 5, ttl = "10s" }

        [circuit_breaker]
        window = { time = "10s" }
        failure_rate_threshold = 0.5

        [bulkhead]
        max_concurrent = 64
        queue_limit = 16
        max_wait = "20ms"
        "#,
    )
    .unwrap();
    assert_eq!(config.name(), "payments");
    let err = toml::from_str::<ClientStackConfig>(
        r#"
        name = "payments"
        total_timeout = "2s"
        attempt_timeout = "400ms"
        [bulkhead]
        max_concurent = 64
        "#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_concurent"), "{err}");
}

// ===== HTTP over a real socket =====

/// The obvious HTTP client: each request over a fresh HTTP/1 connection to `addr`.
fn http_client(
    addr: SocketAddr,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Incoming>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send {
    service_fn(move |req: Request<Full<Bytes>>| async move {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok::<_, BoxError>(sender.send_request(req).await?)
    })
}

/// A handler that acts on the request (counts it), then never answers.
fn acts_then_stalls(acted: &Arc<AtomicUsize>) -> axum::routing::MethodRouter {
    let acted = acted.clone();
    axum::routing::any(move || {
        let acted = acted.clone();
        async move {
            acted.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<&str>().await
        }
    })
}

#[tokio::test]
async fn a_post_whose_attempt_timed_out_after_the_server_acted_is_sent_once() {
    let (orders, reads) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let app = Router::new()
        .route("/orders", acts_then_stalls(&orders))
        .route("/stock", acts_then_stalls(&reads));
    let addr = serve(app).await;
    let config: ClientStackConfig = serde_json::from_value(serde_json::json!({
        "name": "orders",
        "total_timeout": "5s",
        "attempt_timeout": "200ms",
        "retry": {
            "max_attempts": 3,
            "backoff": { "kind": "constant", "base": "10ms", "jitter": "none" },
            "budget": null
        },
        "bulkhead": { "max_concurrent": 8 }
    }))
    .unwrap();
    // No retry policy chosen: the default must be safe for HTTP.
    let client = ClientStackLayer::new(config).layer(http_client(addr));
    let request = |method: &str, path: &str, body: &'static str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .body(Full::from(body))
            .unwrap()
    };

    let err = client
        .clone()
        .oneshot(request("POST", "/orders", r#"{"sku": 7}"#))
        .await
        .unwrap_err();
    assert_eq!(
        rejected(&*err).map(|r| r.kind()),
        Some(RejectionKind::TimedOut)
    );
    assert_eq!(
        orders.load(Ordering::SeqCst),
        1,
        "a POST is never sent twice"
    );
    let err = client
        .clone()
        .oneshot(request("PATCH", "/orders", r#"{"qty": 2}"#))
        .await
        .unwrap_err();
    assert_eq!(
        rejected(&*err).map(|r| r.kind()),
        Some(RejectionKind::TimedOut)
    );
    assert_eq!(orders.load(Ordering::SeqCst), 2, "nor a PATCH");

    // The same stack does retry an idempotent GET.
    client
        .oneshot(request("GET", "/stock", ""))
        .await
        .unwrap_err();
    assert_eq!(reads.load(Ordering::SeqCst), 3);
}

#[test]
fn the_default_stack_is_one_second_three_attempts_and_a_fleet_safe_budget() {
    let config = ClientStackConfig::default();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["name"], "client");
    assert_eq!(json["total_timeout"], "1s");
    assert_eq!(
        json["attempt_timeout"],
        serde_json::json!({
            "multiplier": 3.0, "quantile": 0.99, "floor": "100ms", "window": "30s",
            "min_samples": 100
        }),
        "adaptive, its ceiling half the total"
    );
    assert_eq!(config.attempt().timeout(), Duration::from_millis(500));
    assert_eq!(json["retry"]["max_attempts"], 3);
    assert_eq!(json["retry"]["budget"]["ratio"], 0.09);
    assert_eq!(
        json["retry"]["budget"]["min_per_second"], 0,
        "no floor that multiplies with the fleet"
    );
    assert_eq!(json["retry"]["budget"]["quiet_ttl"], "1s");
    assert_eq!(json["circuit_breaker"]["open_backoff"]["base"], "1s");
    assert_eq!(json["circuit_breaker"]["open_jitter"], 0.25);
    assert_eq!(
        json["retry"]["max_elapsed"], "1s",
        "retry stays within the total"
    );
    assert_eq!(json["bulkhead"]["max_concurrent"], serde_json::Value::Null);
    assert_eq!(
        json["bulkhead"]["adaptive"]["vegas"]["max"], 10_000,
        "an adaptive limit, at most 10,000 req/s for the whole total timeout"
    );
    assert_eq!(json["bulkhead"]["queue_limit"], 0);
    // What it writes, it reads back.
    let again: ClientStackConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&again).unwrap(), json);
}

// ===== what the default classifier and the throttle do for HTTP =====

/// A dependency that answers every call with `status`, counting the calls it gets.
fn answering(
    status: u16,
    calls: &Arc<AtomicUsize>,
) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future = impl Send + use<>>
+ Clone
+ Send
+ use<> {
    let calls = calls.clone();
    service_fn(move |_req: Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap()) }
    })
}

fn stock_request() -> Request<()> {
    Request::get("/stock").body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn http_500_answers_open_the_breaker_with_no_classifier_chosen() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ClientStackLayer::new(config());
    let breaker = layer.circuit_breaker();
    let svc = layer.layer(answering(500, &calls));
    for _ in 0..20 {
        let _ = svc.clone().oneshot(stock_request()).await;
    }
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "a 500 is a failure, not a success"
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_are_throttled_locally_and_never_open_the_breaker() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ClientStackLayer::new(config());
    let (breaker, throttle) = (layer.circuit_breaker(), layer.throttle());
    let svc = layer.layer(answering(503, &calls));
    // 200 calls a second, each sent whether or not the ones before have ended (the throttle's
    // window ages by time: a client calling one call at a time, each call retried over half
    // its deadline, sends too few requests a second for it to act on).
    let mut sent = Vec::new();
    for _ in 0..200 {
        sent.push(tokio::spawn(svc.clone().oneshot(stock_request())));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut throttled = 0;
    for call in sent {
        match call.await.unwrap() {
            Ok(res) => assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE),
            Err(err) => {
                assert_eq!(
                    rejected(&*err).map(|r| r.kind()),
                    Some(RejectionKind::Throttled)
                );
                throttled += 1;
            }
        }
    }
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "overload is not failure"
    );
    assert!(throttled > 50, "most calls stay local: {throttled}");
    assert!(throttle.rejection_probability() > 0.5);
    assert!(
        calls.load(Ordering::SeqCst) < 200 * 3 - throttled,
        "a throttled call is not retried"
    );
}

#[test]
fn the_throttle_is_configured_with_the_stack() {
    let config: ClientStackConfig = toml::from_str(
        r#"
        name = "payments"
        total_timeout = "2s"
        attempt_timeout = "400ms"
        bulkhead = { max_concurrent = 8 }
        throttle = { multiplier = 1.5, window = "1s", seed = 3 }
        "#,
    )
    .unwrap();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["throttle"]["multiplier"], 1.5);
    assert_eq!(
        json["throttle"]["name"], "payments",
        "named after the stack"
    );
    let layer = ClientStackLayer::new(config);
    assert_eq!(layer.throttle().name(), "payments");
    assert_eq!(layer.throttle().multiplier(), 1.5);
}

// ===== a breaker per authority =====

/// Two hosts behind one client: `bad` answers every call with 500, `good` with 200.
fn two_hosts() -> impl Service<
    Request<()>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Send + use<>,
> + Clone {
    service_fn(|req: Request<()>| async move {
        let status = match req.uri().host() {
            Some("bad") => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::OK,
        };
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        Ok::<_, BoxError>(response)
    })
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

/// Sends 50 calls to the failing host, then 20 to the healthy one; the status of each of the
/// healthy host's answers (or the rejection).
async fn healthy_after_bad(
    config: ClientStackConfig,
) -> (Vec<Option<StatusCode>>, ClientStackLayer) {
    let layer = ClientStackLayer::new(config);
    let svc = layer.layer(two_hosts());
    for _ in 0..50 {
        let _ = svc.clone().oneshot(get("http://bad/items")).await;
    }
    let mut good = Vec::new();
    for _ in 0..20 {
        let answer = svc.clone().oneshot(get("http://good/items")).await;
        good.push(answer.ok().map(|r| r.status()));
    }
    (good, layer)
}

#[tokio::test(start_paused = true)]
async fn a_breaker_per_authority_keeps_a_healthy_host_reachable() {
    let config = config().with_breaker_key(BreakerKey::Authority);
    let (good, layer) = healthy_after_bad(config).await;
    assert!(good.iter().all(|s| *s == Some(StatusCode::OK)), "{good:?}");
    let bad = http::uri::Authority::from_static("bad");
    let healthy = http::uri::Authority::from_static("good");
    let state = |a: &http::uri::Authority| layer.circuit_breaker_for(Some(a)).unwrap().state();
    assert_eq!(state(&bad), CircuitState::Open);
    assert_eq!(state(&healthy), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn one_breaker_opens_for_every_host() {
    // The default: what the keyed stack is for.
    let (good, layer) = healthy_after_bad(config()).await;
    assert!(good.iter().all(Option::is_none), "{good:?}");
    assert_eq!(layer.circuit_breaker().state(), CircuitState::Open);
}

#[test]
fn the_breaker_key_reads_and_writes_in_config_files() {
    let mut json = serde_json::to_value(config()).unwrap();
    assert!(
        json.get("circuit_breaker_key").is_none(),
        "one breaker is left out"
    );
    json["circuit_breaker_key"] = "authority".into();
    let keyed: ClientStackConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(keyed.breaker_key(), BreakerKey::Authority);
    assert_eq!(serde_json::to_value(&keyed).unwrap(), json);
    json["circuit_breaker_key"] = "path".into();
    let err = serde_json::from_value::<ClientStackConfig>(json).unwrap_err();
    assert!(err.to_string().contains("unknown variant"), "{err}");
}
