//! The health tracker on the paused clock: probes, followers, the rate layer, the endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use seawall_core::BoxError;
use seawall_core::testing::TestRecorder;
use seawall_health::{
    ComponentConfig, HealthLayer, HealthState, HealthTracker, Hysteresis, ProbeConfig, RateConfig,
};
use tokio::sync::watch;
use tokio::time::{advance, sleep};
use tower::{Layer, ServiceExt, service_fn};

use HealthState::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn component(name: &str) -> ComponentConfig {
    ComponentConfig::new(name).unwrap()
}

/// Lets spawned probe and follower tasks run after the clock moved.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// A probe whose check succeeds while `up` is set.
fn probe_db(tracker: &HealthTracker, up: &Arc<AtomicBool>) {
    let up = up.clone();
    let config = ProbeConfig::builder(component("db"))
        .interval(secs(5))
        .timeout(secs(1))
        .build()
        .unwrap();
    tracker.probe(config, move || {
        let up = up.load(Ordering::SeqCst);
        async move {
            if up {
                Ok(())
            } else {
                Err("connection refused")
            }
        }
    });
}

#[tokio::test(start_paused = true)]
async fn a_probe_degrades_then_makes_unhealthy_then_recovers() {
    let tracker = HealthTracker::new("shop");
    let up = Arc::new(AtomicBool::new(true));
    probe_db(&tracker, &up);
    settle().await;
    assert_eq!(tracker.state(), Healthy);

    up.store(false, Ordering::SeqCst);
    let mut states = Vec::new();
    for _ in 0..4 {
        advance(secs(5)).await;
        settle().await;
        states.push(tracker.state());
    }
    assert_eq!(
        states,
        [Healthy, Degraded, Degraded, Unhealthy],
        "default hysteresis: 2 then 4 failures"
    );
    assert_eq!(
        tracker.report().components[0].detail.as_deref(),
        Some("connection refused")
    );

    up.store(true, Ordering::SeqCst);
    let mut states = Vec::new();
    for _ in 0..3 {
        advance(secs(5)).await;
        settle().await;
        states.push(tracker.state());
    }
    assert_eq!(
        states,
        [Unhealthy, Unhealthy, Healthy],
        "3 good checks to recover"
    );
    assert_eq!(tracker.report().components[0].detail, None);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_probe_counts_as_a_failure_after_its_timeout() {
    let tracker = HealthTracker::new("shop");
    let config = ProbeConfig::builder(component("db").hysteresis(Hysteresis::none()))
        .interval(secs(5))
        .timeout(secs(1))
        .build()
        .unwrap();
    tracker.probe(config, std::future::pending::<Result<(), &str>>);
    settle().await;
    assert_eq!(tracker.state(), Healthy);
    sleep(secs(1)).await;
    settle().await;
    assert_eq!(tracker.state(), Unhealthy);
    assert_eq!(
        tracker.report().components[0].detail.as_deref(),
        Some("no answer within 1s")
    );
}

#[tokio::test(start_paused = true)]
async fn probes_stop_when_the_tracker_is_dropped() {
    let checks = Arc::new(AtomicUsize::new(0));
    let count = checks.clone();
    let tracker = HealthTracker::new("shop");
    tracker.probe(
        ProbeConfig::builder(component("db"))
            .interval(secs(1))
            .timeout(secs(1))
            .build()
            .unwrap(),
        move || {
            count.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), &str>(()) }
        },
    );
    sleep(Duration::from_millis(2500)).await;
    assert_eq!(checks.load(Ordering::SeqCst), 3);
    drop(tracker);
    sleep(secs(10)).await;
    assert_eq!(
        checks.load(Ordering::SeqCst),
        4,
        "the tick already due runs, then the probe stops"
    );
}

#[tokio::test(start_paused = true)]
async fn the_service_is_as_bad_as_its_worst_critical_component() {
    let tracker = HealthTracker::new("shop");
    let db = tracker.component(component("db"));
    let cache = tracker.component(component("cache").non_critical());
    cache.set(Unhealthy, Some("evicted".into()));
    assert_eq!(
        tracker.state(),
        Degraded,
        "a non-critical component degrades at worst"
    );
    db.set(Unhealthy, None);
    assert_eq!(tracker.state(), Unhealthy);
    db.set(Healthy, None);
    cache.set(Healthy, None);
    assert_eq!(tracker.state(), Healthy);
}

#[tokio::test(start_paused = true)]
async fn failed_is_for_good_and_not_live() {
    let tracker = HealthTracker::new("shop");
    let db = tracker.component(component("db"));
    db.fail("schema migration half applied");
    assert_eq!(tracker.state(), Failed);
    db.set(Healthy, None);
    db.observe(Healthy, None);
    assert_eq!(tracker.state(), Failed);
    assert!(!Failed.is_live() && !Failed.is_ready());
    assert!(Degraded.is_live() && Degraded.is_ready());
    assert!(Unhealthy.is_live() && !Unhealthy.is_ready());
}

#[tokio::test(start_paused = true)]
async fn subscribers_see_every_change_of_the_service() {
    let tracker = HealthTracker::new("shop");
    let mut states = tracker.subscribe();
    let db = tracker.component(component("db"));
    db.set(Degraded, None);
    states.changed().await.unwrap();
    assert_eq!(*states.borrow_and_update(), Degraded);
    db.set(Healthy, None);
    states.changed().await.unwrap();
    assert_eq!(*states.borrow_and_update(), Healthy);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Breaker {
    Closed,
    HalfOpen,
    Open,
}

#[tokio::test(start_paused = true)]
async fn a_follower_maps_a_watched_state() {
    let tracker = HealthTracker::new("shop");
    let (tx, rx) = watch::channel(Breaker::Closed);
    tracker.follow(component("payments"), rx, |state: &Breaker| match state {
        Breaker::Closed => (Healthy, None),
        Breaker::HalfOpen => (Degraded, Some("probing".into())),
        Breaker::Open => (Unhealthy, Some("circuit open".into())),
    });
    settle().await;
    assert_eq!(tracker.state(), Healthy);
    tx.send(Breaker::Open).unwrap();
    settle().await;
    assert_eq!(tracker.state(), Unhealthy);
    tx.send(Breaker::HalfOpen).unwrap();
    settle().await;
    assert_eq!(tracker.state(), Degraded);
}

fn rate_layer(tracker: &HealthTracker) -> HealthLayer {
    let hysteresis = Hysteresis::builder()
        .degrade_after(1)
        .unhealthy_after(2)
        .recover_after(2)
        .build()
        .unwrap();
    let config = RateConfig::builder(component("api").hysteresis(hysteresis))
        .window(secs(5))
        .minimum_calls(10)
        .slow_call_duration(Duration::from_millis(500))
        .build()
        .unwrap();
    HealthLayer::new(tracker, config)
}

/// Sends `calls` calls a second for `seconds` seconds; every `fail_every`-th fails.
async fn traffic(layer: &HealthLayer, seconds: u64, calls: u64, fail_every: u64) {
    let svc = layer.layer(service_fn(|n: u64| async move {
        if fail_every > 0 && n.is_multiple_of(fail_every) {
            Err::<u64, BoxError>("boom".into())
        } else {
            Ok(n)
        }
    }));
    for _ in 0..seconds {
        for n in 0..calls {
            let _ = svc.clone().oneshot(n).await;
        }
        advance(secs(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_rate_layer_turns_errors_into_health() {
    let tracker = HealthTracker::new("shop");
    let layer = rate_layer(&tracker);
    traffic(&layer, 3, 20, 0).await;
    assert_eq!(tracker.state(), Healthy);
    traffic(&layer, 2, 20, 3).await;
    assert_eq!(
        tracker.state(),
        Degraded,
        "14% of the window's calls failed"
    );
    traffic(&layer, 8, 20, 1).await;
    assert_eq!(tracker.state(), Unhealthy, "every call failing");
    let detail = tracker.report().components[0].detail.clone().unwrap();
    assert!(detail.ends_with("calls bad in the last 5s"), "{detail}");
}

#[tokio::test(start_paused = true)]
async fn shed_load_counts_for_nothing_and_timeouts_count_as_bad() {
    use seawall_core::{Rejected, RejectionKind};

    let tracker = HealthTracker::new("shop");
    let layer = rate_layer(&tracker);
    let rejecting = |kind: RejectionKind| {
        layer.layer(service_fn(move |_: ()| async move {
            Err::<(), BoxError>(Rejected::new(kind, "api").into())
        }))
    };
    for kind in [
        RejectionKind::RateLimited,
        RejectionKind::BulkheadFull,
        RejectionKind::CircuitOpen,
    ] {
        for _ in 0..3 {
            for _ in 0..50 {
                let _ = rejecting(kind).oneshot(()).await;
            }
            advance(secs(1)).await;
        }
        assert_eq!(
            tracker.state(),
            Healthy,
            "{kind:?} is the stack's own doing"
        );
    }
    for _ in 0..3 {
        for _ in 0..50 {
            let _ = rejecting(RejectionKind::TimedOut).oneshot(()).await;
        }
        advance(secs(1)).await;
    }
    assert_eq!(tracker.state(), Unhealthy, "timeouts are the downstream's");
}

#[tokio::test(start_paused = true)]
async fn overload_answers_do_not_count_against_the_service() {
    use seawall_core::classify::HttpStatus;

    for (statuses, expected) in [([429, 503], Healthy), ([500, 502], Unhealthy)] {
        let tracker = HealthTracker::new("shop");
        let layer = rate_layer(&tracker).classify(HttpStatus::default());
        let svc = layer.layer(service_fn(|status: u16| async move {
            Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
        }));
        for _ in 0..8 {
            for status in statuses.repeat(10) {
                svc.clone().oneshot(status).await.unwrap();
            }
            advance(secs(1)).await;
        }
        assert_eq!(tracker.state(), expected, "{statuses:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_rate_layer_recovers_without_traffic() {
    let tracker = HealthTracker::new("shop");
    let layer = rate_layer(&tracker);
    traffic(&layer, 5, 20, 1).await;
    assert_eq!(tracker.state(), Unhealthy);
    // A readiness probe keeps asking while no traffic arrives: the window empties.
    let mut states = Vec::new();
    for _ in 0..8 {
        advance(secs(1)).await;
        states.push(tracker.state());
    }
    assert_eq!(states.last(), Some(&Healthy), "{states:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_count_as_bad() {
    let tracker = HealthTracker::new("shop");
    let layer = rate_layer(&tracker);
    let svc = layer.layer(service_fn(|_: ()| async {
        sleep(Duration::from_millis(600)).await;
        Ok::<_, BoxError>(())
    }));
    for _ in 0..3 {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..20 {
            calls.spawn(svc.clone().oneshot(()));
        }
        calls.join_all().await;
    }
    advance(secs(1)).await;
    assert_eq!(tracker.state(), Unhealthy, "every call slower than 500ms");
}

#[tokio::test(start_paused = true)]
async fn the_state_gauges_show_exactly_one_state() {
    let recorder = TestRecorder::new();
    let (tracker, db) = recorder.install_for(|| {
        let tracker = HealthTracker::new("shop");
        let db = tracker.component(component("db"));
        (tracker, db)
    });
    db.set(Unhealthy, None);
    let gauge = |component: &str, state: HealthState| {
        recorder
            .gauge(
                "seawall_health_state",
                &[
                    ("name", "shop"),
                    ("component", component),
                    ("state", state.as_str()),
                ],
            )
            .unwrap()
    };
    for state in HealthState::ALL {
        let expected = if state == Unhealthy { 1.0 } else { 0.0 };
        assert_eq!(gauge("db", state), expected, "db {state}");
        assert_eq!(gauge("overall", state), expected, "overall {state}");
    }
    drop(tracker);
}

async fn get(app: &Router, path: &str) -> (StatusCode, serde_json::Value) {
    let res = app
        .clone()
        .oneshot(Request::get(path).body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(start_paused = true)]
async fn endpoints_answer_with_the_status_alone_by_default() {
    let tracker = HealthTracker::new("shop");
    let db = tracker.component(component("db"));
    let app: Router = seawall_health::http::router(tracker.clone());
    db.set(Unhealthy, Some("connection refused 10.0.3.7:5432".into()));
    for path in ["/health/ready", "/health/live"] {
        let (_, body) = get(&app, path).await;
        assert_eq!(body, serde_json::json!({ "status": "unhealthy" }), "{path}");
    }
    assert_eq!(
        get(&app, "/health/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn endpoints_answer_as_kubernetes_expects() {
    let tracker = HealthTracker::new("shop");
    let db = tracker.component(component("db"));
    let app: Router = seawall_health::http::router_with_details(tracker.clone());

    let (status, body) = get(&app, "/health/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["components"][0]["name"], "db");

    db.set(Unhealthy, Some("connection refused".into()));
    let (ready, body) = get(&app, "/health/ready").await;
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["components"][0]["detail"], "connection refused");
    assert_eq!(
        get(&app, "/health/live").await.0,
        StatusCode::OK,
        "unhealthy is still live"
    );

    db.fail("corrupt state");
    assert_eq!(
        get(&app, "/health/live").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

// Over a real socket, so on the real clock: a paused clock may jump ahead while the runtime
// waits on the socket. The client watches the status rather than waiting a guessed time.
#[tokio::test]
async fn grpc_health_follows_readiness() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    seawall_core::testing::trace_init();
    let tracker = HealthTracker::new("shop");
    let db = tracker.component(component("db"));
    let (reporter, service) = tonic_health::server::health_reporter();
    seawall_health::grpc::serve_status(&tracker, reporter);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let check = || HealthCheckRequest {
        service: String::new(),
    };
    let mut statuses = client.watch(check()).await.unwrap().into_inner();

    let first = statuses.message().await.unwrap().unwrap();
    assert_eq!(first.status, 1, "SERVING");
    assert_eq!(
        client.check(check()).await.unwrap().into_inner().status,
        1,
        "SERVING"
    );
    db.set(Unhealthy, None);
    while statuses.message().await.unwrap().unwrap().status != 2 {}
    assert_eq!(
        client.check(check()).await.unwrap().into_inner().status,
        2,
        "NOT_SERVING"
    );
}
