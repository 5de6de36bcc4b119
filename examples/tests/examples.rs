//! The examples work as their docs say, over real sockets on 127.0.0.1, on the real clock: a
//! paused clock may jump ahead while the runtime waits on a socket.

use std::net::SocketAddr;

use axum::Router;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusBuilder;
use seawall::chaos::{ChaosConfig, Faults};
use seawall::circuit_breaker::CircuitState;
use seawall::health::HealthTracker;
use seawall_core::testing::trace_init;
use seawall_examples::gateway::{GatewayConfig, gateway};
use seawall_examples::inventory::inventory;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Option<String>, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let res = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = res.status();
    let fallback = res
        .headers()
        .get("x-fallback")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, fallback, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_gateway_falls_back_and_degrades_while_the_inventory_is_down() {
    trace_init();
    let down = ChaosConfig::builder()
        .name("inventory")
        .faults(Faults {
            error: 1.0,
            ..Faults::default()
        })
        .build()
        .unwrap();
    let (inventory, chaos) = inventory(down);
    let inventory = serve(inventory).await;

    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let gw = metrics::with_local_recorder(&recorder, || {
        gateway(
            GatewayConfig::default(),
            &format!("http://{inventory}"),
            metrics,
        )
    });
    let breaker = gw.breaker.clone();
    let health = gw.health.clone();
    let addr = serve(gw.router).await;

    assert_eq!(
        get(addr, "/products/3").await,
        (StatusCode::OK, None, r#"{"id":3,"stock":21}"#.to_owned())
    );

    chaos.enable();
    let mut answers = Vec::new();
    for id in 0..40 {
        answers.push(get(addr, &format!("/products/{id}")).await);
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let last = answers.last().unwrap();
    assert_eq!(
        (last.0, last.1.as_deref(), last.2.as_str()),
        (StatusCode::OK, Some("inventory"), "stock unknown")
    );
    assert!(
        answers
            .iter()
            .any(|(status, ..)| *status == StatusCode::BAD_GATEWAY),
        "before the breaker opens, failures reach the caller as 502"
    );

    let (ready, _, body) = get(addr, "/health/ready").await;
    assert_eq!(
        ready,
        StatusCode::OK,
        "a dependency with a fallback only degrades the gateway"
    );
    assert!(body.contains(r#""status":"degraded""#), "{body}");
    assert_eq!(health.state(), seawall::health::HealthState::Degraded);

    let (_, _, metrics) = get(addr, "/metrics").await;
    assert!(
        metrics.contains(r#"seawall_circuit_breaker_state{name="inventory",state="open"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"seawall_fallback_total{name="inventory",cause="circuit_open"}"#));
}

/// The gRPC example's server settings with its burst of 20 refilled once a minute instead of
/// 20 times a second, so that the real clock cannot refill it during the test.
fn slow_refill() -> seawall::stack::ServerStackConfig {
    toml::from_str(
        r#"
        name = "health"
        timeout = "1s"
        rate_limit = { quota = { per_minute = 1, burst = 20 } }
        bulkhead = { max_concurrent = 16 }
        "#,
    )
    .unwrap()
}

#[tokio::test]
async fn the_grpc_example_answers_and_sheds_past_its_rate() {
    trace_init();
    let _ = seawall_examples::grpc::server_config(); // the example's own settings are valid
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tracker = HealthTracker::new("grpc-example");
    tokio::spawn(seawall_examples::grpc::serve(
        listener,
        slow_refill(),
        tracker,
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (mut client, _breaker) = seawall_examples::grpc::client(channel);
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    let mut codes = Vec::new();
    for _ in 0..25 {
        codes.push(match client.check(request()).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        });
    }
    assert_eq!(
        codes.iter().filter(|c| **c == Code::Ok).count(),
        20,
        "the burst of 20"
    );
    assert_eq!(codes[20..], [Code::ResourceExhausted; 5]);
}

/// The dashboard and the alert rules name only metrics that seawall exports.
#[test]
fn observability_files_use_only_seawall_metrics() {
    const EXPORTED: [&str; 23] = [
        "seawall_circuit_breaker_calls_total",
        "seawall_circuit_breaker_state",
        "seawall_circuit_breaker_transitions_total",
        "seawall_circuit_breaker_failure_rate",
        "seawall_circuit_breaker_slow_call_rate",
        "seawall_retry_calls_total",
        "seawall_retry_attempts_total",
        "seawall_retry_budget_exhausted_total",
        "seawall_bulkhead_in_flight",
        "seawall_bulkhead_queued",
        "seawall_bulkhead_limit",
        "seawall_bulkhead_rejected_total",
        "seawall_bulkhead_wait_seconds",
        "seawall_rate_limit_calls_total",
        "seawall_timeout_calls_total",
        "seawall_fallback_total",
        "seawall_fallback_calls_total",
        "seawall_health_state",
        "seawall_chaos_injected_total",
        // Histograms, as their buckets (configured as the gateway does).
        "seawall_bulkhead_wait_seconds_bucket",
        "seawall_circuit_breaker_call_duration_seconds_bucket",
        "seawall_retry_call_duration_seconds_bucket",
        "seawall_timeout_remaining_seconds_bucket",
    ];
    for file in ["observability/dashboard.json", "observability/alerts.yml"] {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + file)
                .unwrap();
        let mut rest = text.as_str();
        let mut seen = 0;
        while let Some(at) = rest.find("seawall_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            // `seawall_.*` in a regex matches them all.
            if !name.ends_with('.') {
                assert!(
                    EXPORTED.contains(&name.as_str()),
                    "{file} names {name}, which seawall does not export"
                );
                seen += 1;
            }
            rest = &rest[at + name.len()..];
        }
        assert!(seen > 5, "{file} names seawall's metrics");
    }
}

fn shared_quota(url: &str, prefix: &str) -> GatewayConfig {
    let settings = include_str!("../src/gateway.toml").replace(
        "rate_limit = { quota = { per_second = 200, burst = 50 } }",
        &format!(
            "rate_limit = {{ quota = {{ per_second = 1, burst = 5 }}, fleet = {{ redis_url = \"{url}\", key_prefix = \"{prefix}\", lease = 1, on_failure = \"fail_closed\" }} }}"
        ),
    );
    toml::from_str(&settings).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_quota_through_redis() {
    let Some((url, _server)) = seawall_core::testing::redis::redis_url().await else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("seawall-test:gateway:{}-{nanos}", std::process::id());
    let (inventory, _chaos) = inventory(ChaosConfig::builder().name("inventory").build().unwrap());
    let inventory = serve(inventory).await;
    let started = std::time::Instant::now();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let metrics = PrometheusBuilder::new().build_recorder().handle();
        let gw = gateway(
            shared_quota(&url, &prefix),
            &format!("http://{inventory}"),
            metrics,
        );
        replicas.push(serve(gw.router).await);
    }
    let mut admitted = 0;
    for i in 0..12 {
        let (status, ..) = get(replicas[i % 2], &format!("/products/{i}")).await;
        match status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    // A burst of 5 and 1 a second for the fleet; each gateway alone would admit 5 + 1/s.
    let bound = 5 + started.elapsed().as_secs() + 1;
    assert!(
        (5..=bound).contains(&admitted),
        "{admitted} admitted, bound {bound}"
    );
}

#[test]
fn a_shared_quota_without_a_redis_url_is_a_config_error() {
    let settings = include_str!("../src/gateway.toml").replace(
        "rate_limit = { quota = { per_second = 200, burst = 50 } }",
        "rate_limit = { quota = { per_second = 200, burst = 50 }, fleet = { on_failure = \"fail_open\" } }",
    );
    let err = toml::from_str::<GatewayConfig>(&settings)
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.rate_limit.fleet.redis_url"), "{err}");
}
