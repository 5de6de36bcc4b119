//! One breaker per key, in a bounded map.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall_circuit_breaker::{CircuitBreakerConfig, CircuitState, KeyedCircuitBreakerLayer};
use seawall_core::key::{KeyFn, key_fn};
use seawall_core::testing::{TestRecorder, paused_runtime};
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

type HostKey = KeyFn<fn(&Req) -> &'static str, Req, &'static str>;

fn layer(max_keys: usize, idle: Duration) -> KeyedCircuitBreakerLayer<&'static str, HostKey> {
    KeyedCircuitBreakerLayer::new(
        config(max_keys, idle),
        key_fn((|r: &Req| r.host) as fn(&Req) -> _),
    )
}

/// Sends `req` through `layer`; whether the breaker rejected it.
async fn send(layer: &KeyedCircuitBreakerLayer<&'static str, HostKey>, req: Req) -> bool {
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

    let layer = self::layer(3, Duration::from_secs(60));
    for host in ["a", "b", "c"] {
        send(&layer, req(host, false)).await;
    }
    advance(Duration::from_secs(61)).await;
    send(&layer, req("b", false)).await;
    send(&layer, req("d", false)).await;
    send(&layer, req("e", false)).await;
    let mut keys = layer.keys();
    keys.sort();
    assert_eq!(keys, ["b", "d", "e"], "a and c were idle, b was not");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_evicted_only_when_every_breaker_is_open() {
    let layer = layer(3, Duration::from_secs(60));
    send(&layer, req("bad", true)).await;
    send(&layer, req("bad", true)).await;
    assert!(send(&layer, req("bad", false)).await, "bad is open");
    advance(Duration::from_secs(1)).await;
    send(&layer, req("b", false)).await;
    send(&layer, req("c", false)).await;
    // A client rotating keys: every new key evicts a closed one, never the open one, although
    // it is the least recently used.
    for host in ["d", "e", "f", "g"] {
        advance(Duration::from_secs(1)).await;
        send(&layer, req(host, false)).await;
        assert_eq!(layer.len(), 3);
        let bad = layer.handle(&"bad").expect("the open breaker stays");
        assert!(bad.state().rejects());
    }
    // Only when every breaker is open does one of them make room.
    for host in ["f", "g"] {
        send(&layer, req(host, true)).await;
        send(&layer, req(host, true)).await;
    }
    send(&layer, req("h", false)).await;
    assert!(
        layer.handle(&"bad").is_none(),
        "the least recently used open one"
    );
    assert_eq!(layer.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_a_call_holds_is_not_evicted_under_it() {
    use tower::Service;

    let layer = layer(2, Duration::from_secs(60));
    send(&layer, req("a", true)).await;
    advance(Duration::from_secs(1)).await;
    let mut svc = layer.layer(service_fn(|req: Req| async move {
        if req.fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    // a's second failure in a row, admitted now and ending only after a new key needed room.
    let in_flight = svc.call(req("a", true));
    advance(Duration::from_secs(1)).await;
    send(&layer, req("b", false)).await;
    send(&layer, req("c", false)).await;
    in_flight.await.unwrap_err();
    let a = layer
        .handle(&"a")
        .expect("a, least recently used but in use, stays");
    assert!(a.state().rejects(), "its trip was not lost");
    assert!(layer.handle(&"b").is_none());
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
    let layer = KeyedCircuitBreakerLayer::new(
        config,
        key_fn(|req: &http::Request<()>| req.uri().host().unwrap_or_default().to_owned()),
    );
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

/// A breaker keyed by the client's address (the rate limit's `ClientIp`) trips for the failing
/// client only.
#[cfg(not(loom))]
#[tokio::test(start_paused = true)]
async fn a_breaker_keyed_by_client_ip_trips_per_client() {
    use std::net::{IpAddr, SocketAddr};

    use axum::extract::ConnectInfo;
    use seawall_core::key::ClientIp;

    let from = |peer: &str, path: &str| {
        let mut req = http::Request::get(path).body(()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        req
    };
    let layer =
        KeyedCircuitBreakerLayer::new(config(10, Duration::from_secs(60)), ClientIp::peer());
    let svc = layer.layer(service_fn(fails_on_fail_path));
    for req in [
        from("10.0.0.1:1000", "/fail"),
        from("10.0.0.1:1001", "/fail"),
        from("10.0.0.2:1000", "/ok"),
    ] {
        let _ = svc.clone().oneshot(req).await;
    }
    let bad: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
    let good: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
    assert_eq!(layer.handle(&bad).unwrap().state(), CircuitState::Open);
    assert_eq!(layer.handle(&good).unwrap().state(), CircuitState::Closed);
    let err = svc
        .clone()
        .oneshot(from("10.0.0.1:1002", "/ok"))
        .await
        .unwrap_err();
    assert_eq!(rejected(&*err).unwrap().kind(), RejectionKind::CircuitOpen);
    svc.oneshot(from("10.0.0.2:1001", "/ok")).await.unwrap();
}

/// A breaker keyed by a header (the rate limit's `Header`) trips for the failing tenant only.
#[cfg(not(loom))]
#[tokio::test(start_paused = true)]
async fn a_breaker_keyed_by_a_header_trips_per_value() {
    use http::HeaderName;
    use seawall_core::key::{Fingerprint, Header};

    let tenant = |name: &'static str, path: &str| {
        http::Request::get(path)
            .header("x-tenant", name)
            .body(())
            .unwrap()
    };
    let layer = KeyedCircuitBreakerLayer::builder(Header::new(HeaderName::from_static("x-tenant")))
        .name("tenants")
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(10))
        .max_keys(10)
        .build()
        .unwrap();
    assert_eq!(layer.name(), "tenants");
    let svc = layer.layer(service_fn(fails_on_fail_path));
    for req in [
        tenant("a", "/fail"),
        tenant("a", "/fail"),
        tenant("b", "/ok"),
    ] {
        let _ = svc.clone().oneshot(req).await;
    }
    let a = Some(Fingerprint::stable(b"a"));
    let b = Some(Fingerprint::stable(b"b"));
    assert_eq!(layer.handle(&a).unwrap().state(), CircuitState::Open);
    assert_eq!(layer.handle(&b).unwrap().state(), CircuitState::Closed);
    let err = svc.clone().oneshot(tenant("a", "/ok")).await.unwrap_err();
    assert_eq!(rejected(&*err).unwrap().kind(), RejectionKind::CircuitOpen);
    svc.oneshot(tenant("b", "/ok")).await.unwrap();
}

#[cfg(not(loom))]
async fn fails_on_fail_path(req: http::Request<()>) -> Result<(), BoxError> {
    if req.uri().path() == "/fail" {
        Err("down".into())
    } else {
        Ok(())
    }
}

mod model {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use tokio::time::Instant;

    use super::*;

    const IDLE: Duration = Duration::from_secs(60);
    const HOSTS: [&str; 10] = ["h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"];

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Call { host: usize, fail: bool },
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..HOSTS.len(), proptest::bool::weighted(0.4))
                .prop_map(|(host, fail)| Op::Call { host, fail }),
            1 => prop_oneof![Just(1u64), Just(30), Just(61)].prop_map(Op::Advance),
        ]
    }

    /// Which keys the map may evict for a new key: the breakers that let calls through if any
    /// does (else all), and of those the idle ones if any (else all), used least recently.
    fn acceptable(
        layer: &KeyedCircuitBreakerLayer<&'static str, super::HostKey>,
        last_used: &BTreeMap<&'static str, Duration>,
        now: Duration,
    ) -> BTreeSet<&'static str> {
        let keys = layer.keys();
        let rejects = |k: &&'static str| layer.handle(k).unwrap().state().rejects();
        let pool: Vec<_> = if keys.iter().all(rejects) {
            keys
        } else {
            keys.into_iter().filter(|k| !rejects(k)).collect()
        };
        let rank = |k: &&'static str| (now - last_used[k] < IDLE, last_used[k]);
        let best = pool.iter().map(rank).min().unwrap();
        pool.into_iter().filter(|k| rank(k) == best).collect()
    }

    async fn check(max_keys: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let layer = layer(max_keys, IDLE);
        let epoch = Instant::now();
        let mut last_used = BTreeMap::new();
        for (i, op) in ops.into_iter().enumerate() {
            let Op::Call { host, fail } = op else {
                if let Op::Advance(secs) = op {
                    advance(Duration::from_secs(secs)).await;
                }
                continue;
            };
            let host = HOSTS[host];
            let now = epoch.elapsed();
            let before: BTreeSet<_> = layer.keys().into_iter().collect();
            let evicts = !before.contains(host) && before.len() == max_keys;
            let allowed = evicts.then(|| acceptable(&layer, &last_used, now));
            send(&layer, req(host, fail)).await;
            last_used.insert(host, now);
            let after: BTreeSet<_> = layer.keys().into_iter().collect();
            prop_assert!(after.len() <= max_keys, "op {}: {} keys", i, after.len());
            prop_assert!(after.contains(host));
            let gone: BTreeSet<_> = before.difference(&after).copied().collect();
            match allowed {
                Some(allowed) => {
                    prop_assert_eq!(gone.len(), 1, "op {}", i);
                    let victim = gone.first().unwrap();
                    prop_assert!(
                        allowed.contains(victim),
                        "op {}: evicted {} instead of one of {:?}",
                        i,
                        victim,
                        allowed
                    );
                }
                None => prop_assert!(gone.is_empty(), "op {}: evicted {:?}", i, gone),
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn eviction_spares_open_breakers_and_prefers_idle_ones(
            max_keys in 1usize..=6,
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let rt = paused_runtime();
            rt.block_on(check(max_keys, ops))?;
        }
    }
}
