//! One breaker per key, in a bounded map.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall_circuit_breaker::{CircuitBreakerConfig, CircuitState, KeyedCircuitBreakerLayer};
use seawall_core::testing::TestRecorder;
use seawall_core::{BoxError, RejectionKind, rejected};
use tokio::time::advance;
use tower::{Layer, ServiceExt, service_fn};

/// A request to `host`, failing when `fail`.
#[derive(Debug, Clone, Copy)]
struct Req {
    host: &'static str,
    fail: bool,
}

fn config(max_keys: usize, idle: Duration) -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .name("hosts")
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(10))
        .max_keys(max_keys)
        .key_idle_timeout(idle)
        .build()
        .unwrap()
}

fn layer(
    max_keys: usize,
    idle: Duration,
) -> KeyedCircuitBreakerLayer<&'static str, fn(&Req) -> &'static str> {
    KeyedCircuitBreakerLayer::new(config(max_keys, idle), (|r: &Req| r.host) as fn(&Req) -> _)
}

/// Sends `req` through `layer`; whether the breaker rejected it.
async fn send<F>(layer: &KeyedCircuitBreakerLayer<&'static str, F>, req: Req) -> bool
where
    F: Fn(&Req) -> &'static str,
{
    let svc = layer.layer(service_fn(|req: Req| async move {
        if req.fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    match svc.oneshot(req).await {
        Err(err) => rejected(&*err).is_some_and(|r| r.kind() == RejectionKind::CircuitOpen),
        Ok(()) => false,
    }
}

const fn req(host: &'static str, fail: bool) -> Req {
    Req { host, fail }
}

#[tokio::test(start_paused = true)]
async fn each_key_trips_on_its_own() {
    let layer = layer(100, Duration::from_secs(600));
    send(&layer, req("a", true)).await;
    send(&layer, req("b", true)).await;
    send(&layer, req("a", true)).await;
    assert!(send(&layer, req("a", false)).await, "a is open");
    assert!(!send(&layer, req("b", false)).await, "b is not");
    let a = layer.handle(&"a").unwrap();
    assert_eq!(a.state(), CircuitState::Open);
    assert_eq!(a.key(), Some("\"a\""));
    assert_eq!(a.name(), "hosts");
    assert_eq!(layer.handle(&"b").unwrap().state(), CircuitState::Closed);
    assert!(layer.handle(&"c").is_none());
    let mut keys = layer.keys();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);

    a.force_closed();
    assert!(
        !send(&layer, req("a", false)).await,
        "each key has its handle"
    );
}

#[tokio::test(start_paused = true)]
async fn the_map_evicts_idle_keys_first_then_the_least_recently_used() {
    let layer = layer(2, Duration::from_secs(60));
    send(&layer, req("a", false)).await;
    advance(Duration::from_secs(1)).await;
    send(&layer, req("b", false)).await;
    advance(Duration::from_secs(1)).await;
    send(&layer, req("c", false)).await;
    assert_eq!(layer.len(), 2);
    assert!(layer.handle(&"a").is_none(), "a was used least recently");

    advance(Duration::from_secs(61)).await;
    send(&layer, req("d", false)).await;
    assert_eq!(layer.keys(), ["d"], "b and c were idle");
}

#[tokio::test(start_paused = true)]
async fn an_evicted_key_starts_over_closed() {
    let layer = layer(1, Duration::from_secs(60));
    send(&layer, req("a", true)).await;
    send(&layer, req("a", true)).await;
    assert!(send(&layer, req("a", false)).await);
    send(&layer, req("b", false)).await;
    assert!(!send(&layer, req("a", false)).await);
}

#[tokio::test(start_paused = true)]
async fn all_keys_count_into_the_layer_metrics_and_hooks() {
    let recorder = TestRecorder::new();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    let layer = recorder
        .install_for(|| layer(10, Duration::from_secs(60)))
        .on_state_change(move |e| {
            seen.lock()
                .unwrap()
                .push((e.key.map(str::to_owned), e.from, e.to))
        });
    for host in ["a", "b"] {
        send(&layer, req(host, true)).await;
        send(&layer, req(host, true)).await;
        send(&layer, req(host, false)).await;
    }
    let calls = |outcome| {
        recorder.counter(
            "seawall_circuit_breaker_calls_total",
            &[("name", "hosts"), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("failure"), 4);
    assert_eq!(calls("rejected"), 2);
    assert_eq!(
        recorder.counter(
            "seawall_circuit_breaker_transitions_total",
            &[("from", "closed"), ("to", "open")]
        ),
        2
    );
    assert_eq!(
        *changes.lock().unwrap(),
        [
            (
                Some("\"a\"".into()),
                CircuitState::Closed,
                CircuitState::Open
            ),
            (
                Some("\"b\"".into()),
                CircuitState::Closed,
                CircuitState::Open
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_taken_from_http_requests() {
    let config = config(10, Duration::from_secs(60));
    let layer = KeyedCircuitBreakerLayer::new(config, |req: &http::Request<()>| {
        req.uri().host().unwrap_or_default().to_owned()
    });
    let svc = layer.layer(service_fn(|req: http::Request<()>| async move {
        if req.uri().path() == "/fail" {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    for uri in ["http://x/fail", "http://x/fail", "http://y/ok"] {
        let _ = svc
            .clone()
            .oneshot(http::Request::get(uri).body(()).unwrap())
            .await;
    }
    assert_eq!(
        layer.handle(&"x".to_owned()).unwrap().state(),
        CircuitState::Open
    );
    assert_eq!(
        layer.handle(&"y".to_owned()).unwrap().state(),
        CircuitState::Closed
    );
}
