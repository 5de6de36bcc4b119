//! Fleet-wide limits on the paused clock, against the in-memory store that models a shared
//! one: replicas sharing a quota, leases and their overshoot bound, the cached "no", failure
//! policies, the guard's timeout and breaker, keyed buckets, configuration.

use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, header::RETRY_AFTER};
use proptest::prelude::*;
use seawall_core::http::ErrorResponseLayer;
use seawall_core::testing::{TestRecorder, paused_runtime};
use seawall_core::{BoxError, RejectionKind, rejected};
use seawall_rate_limit::store::{MemoryStore, OnStoreFailure, StoreState};
use seawall_rate_limit::{
    Fleet, FleetConfig, FleetConfigBuilder, Header, Quota, RateLimitConfig, RateLimitLayer, key_fn,
};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

type Echo = tower::util::ServiceFn<fn(u32) -> std::future::Ready<Result<u32, BoxError>>>;

fn echo() -> Echo {
    service_fn(|n| std::future::ready(Ok(n)))
}

fn fleet(policy: OnStoreFailure) -> FleetConfigBuilder {
    FleetConfig::builder()
        .on_failure(policy)
        .expected_replicas(2)
}

fn layer(
    store: &MemoryStore,
    quota: Quota,
    fleet: FleetConfigBuilder,
) -> RateLimitLayer<Fleet<MemoryStore>> {
    RateLimitLayer::builder()
        .name("api")
        .quota(quota)
        .fleet(fleet.build().unwrap())
        .build()
        .unwrap()
        .with_store(store.clone())
        .unwrap()
}

/// What became of a call: `Ok` or the rejection's kind and hint.
async fn call<S>(svc: &mut S) -> Result<(), (RejectionKind, Option<Duration>)>
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    match svc.ready().await.unwrap().call(7).await {
        Ok(_) => Ok(()),
        Err(err) => {
            let r = rejected(&*err).expect("a rejection");
            Err((r.kind(), r.retry_after()))
        }
    }
}

async fn admitted<S>(svc: &mut S, n: usize) -> usize
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let mut ok = 0;
    for _ in 0..n {
        ok += usize::from(call(svc).await.is_ok());
    }
    ok
}

#[tokio::test(start_paused = true)]
async fn replicas_sharing_a_store_hold_one_quota_where_local_limits_admit_n_times_it() {
    let quota = Quota::per_second(10);
    let store = MemoryStore::new();
    let mut shared: Vec<_> = (0..3)
        .map(|_| layer(&store, quota, fleet(OnStoreFailure::FailClosed)).layer(echo()))
        .collect();
    let mut local: Vec<_> = (0..3)
        .map(|_| {
            RateLimitLayer::builder()
                .name("api")
                .quota(quota)
                .build()
                .unwrap()
                .layer(echo())
        })
        .collect();
    let (mut fleet_total, mut local_total) = (0, 0);
    for _ in 0..2 {
        for svc in &mut shared {
            fleet_total += admitted(svc, 20).await;
        }
        for svc in &mut local {
            local_total += admitted(svc, 20).await;
        }
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(fleet_total, 20, "burst 10, then 10 more a second later");
    assert_eq!(local_total, 60, "each replica admits the whole quota");
}

#[tokio::test(start_paused = true)]
async fn a_lease_is_spent_without_round_trips() {
    let store = MemoryStore::new();
    let layer = layer(
        &store,
        Quota::per_second(100).with_burst(20),
        fleet(OnStoreFailure::FailClosed).lease(5),
    );
    let mut svc = layer.layer(echo());
    assert_eq!(admitted(&mut svc, 5).await, 5);
    assert_eq!(store.round_trips(), 1, "one round trip leased 5 cells");
    assert_eq!(layer.fleet().leased(), 0);
    assert_eq!(admitted(&mut svc, 1).await, 1);
    assert_eq!(store.round_trips(), 2);
    assert_eq!(layer.fleet().leased(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_cached_until_the_next_cell_is_free() {
    let store = MemoryStore::new();
    let mut svc = layer(
        &store,
        Quota::per_second(10).with_burst(1),
        fleet(OnStoreFailure::FailClosed),
    )
    .layer(echo());
    assert_eq!(call(&mut svc).await, Ok(()));
    let (kind, after) = call(&mut svc).await.unwrap_err();
    assert_eq!(kind, RejectionKind::RateLimited);
    assert_eq!(after, Some(Duration::from_millis(100)));
    let trips = store.round_trips();
    advance(Duration::from_millis(60)).await;
    let (_, after) = call(&mut svc).await.unwrap_err();
    assert_eq!(after, Some(Duration::from_millis(40)), "answered locally");
    assert_eq!(
        store.round_trips(),
        trips,
        "no round trip while the store said no"
    );
    advance(Duration::from_millis(40)).await;
    assert_eq!(call(&mut svc).await, Ok(()));
    assert_eq!(store.round_trips(), trips + 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_may_wait_for_the_store_to_have_a_cell_again() {
    let store = MemoryStore::new();
    let layer = RateLimitLayer::builder()
        .name("api")
        .quota(Quota::per_second(10).with_burst(1))
        .max_wait(Duration::from_millis(150))
        .fleet(fleet(OnStoreFailure::FailClosed).build().unwrap())
        .build()
        .unwrap()
        .with_store(store.clone())
        .unwrap();
    let mut svc = layer.layer(echo());
    assert_eq!(call(&mut svc).await, Ok(()));
    let started = Instant::now();
    assert_eq!(call(&mut svc).await, Ok(()));
    assert_eq!(started.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn failure_policies_admit_refuse_or_share_the_quota_locally() {
    let quota = Quota::per_second(10);
    let recorder = TestRecorder::new();
    let fallbacks = |policy| {
        recorder.counter(
            "seawall_rate_limit_store_fallbacks_total",
            &[("name", "api"), ("policy", policy)],
        )
    };
    for (policy, expected) in [
        (OnStoreFailure::FailOpen, 20),
        (OnStoreFailure::FailClosed, 0),
        (OnStoreFailure::Local, 5),
    ] {
        let store = MemoryStore::new();
        store.set_state(StoreState::Down);
        let layer = recorder.install_for(|| layer(&store, quota, fleet(policy)));
        let mut svc = layer.layer(echo());
        let mut ok = 0;
        for _ in 0..20 {
            match call(&mut svc).await {
                Ok(()) => ok += 1,
                Err((kind, after)) => {
                    let expected = match policy {
                        OnStoreFailure::FailClosed => RejectionKind::StoreUnavailable,
                        _ => RejectionKind::RateLimited,
                    };
                    assert_eq!(kind, expected, "{policy}");
                    assert!(after.is_some());
                }
            }
        }
        assert_eq!(
            ok, expected,
            "{policy}: quota 10 over 2 replicas is 5 locally"
        );
        assert_eq!(fallbacks(policy.as_str()), 20, "{policy}");
    }
    assert!(
        recorder.counter(
            "seawall_rate_limit_store_errors_total",
            &[("name", "api"), ("error", "connection")]
        ) >= 3
    );
}

#[tokio::test(start_paused = true)]
async fn the_breaker_stops_round_trips_to_a_dead_store_and_counting_resumes_after() {
    let store = MemoryStore::new();
    let quota = Quota::per_second(1000).with_burst(1000);
    let layer = layer(&store, quota, fleet(OnStoreFailure::FailOpen).failures(3));
    let mut svc = layer.layer(echo());
    store.set_state(StoreState::Down);
    assert_eq!(admitted(&mut svc, 100).await, 100, "fail open");
    assert_eq!(store.round_trips(), 3, "three failures open the breaker");
    assert!(layer.fleet().store_unavailable());
    advance(Duration::from_secs(1)).await;
    store.set_state(StoreState::Up);
    assert_eq!(admitted(&mut svc, 1).await, 1);
    assert_eq!(store.round_trips(), 4, "one probe after open_for");
    assert!(!layer.fleet().store_unavailable());
    assert_eq!(admitted(&mut svc, 10).await, 10);
    assert_eq!(store.round_trips(), 14, "counted in the store again");
}

#[tokio::test(start_paused = true)]
async fn no_call_waits_on_a_hanging_store_longer_than_the_timeout() {
    let store = MemoryStore::new();
    store.set_state(StoreState::Hanging);
    let layer = layer(
        &store,
        Quota::per_second(10),
        fleet(OnStoreFailure::FailClosed).timeout(Duration::from_millis(30)),
    );
    let mut svc = layer.layer(echo());
    for _ in 0..3 {
        let started = Instant::now();
        let (kind, _) = call(&mut svc).await.unwrap_err();
        assert_eq!(kind, RejectionKind::StoreUnavailable);
        assert_eq!(started.elapsed(), Duration::from_millis(30));
    }
    let started = Instant::now();
    let (_, after) = call(&mut svc).await.unwrap_err();
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the breaker is open: no wait at all"
    );
    assert_eq!(after, Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_round_trip_records_nothing_and_frees_the_lease_claim() {
    let recorder = TestRecorder::new();
    let store = MemoryStore::with_latency(Duration::from_millis(5));
    let layer = recorder.install_for(|| {
        layer(
            &store,
            Quota::per_second(100),
            fleet(OnStoreFailure::FailClosed).lease(10),
        )
    });
    let mut svc = layer.layer(echo());
    let pending = svc.ready().await.unwrap().call(1);
    drop(pending);
    let calls = |result| {
        recorder.counter(
            "seawall_rate_limit_calls_total",
            &[("name", "api"), ("result", result)],
        )
    };
    assert_eq!(calls("permitted") + calls("rejected"), 0);
    advance(Duration::from_millis(50)).await;
    assert_eq!(call(&mut svc).await, Ok(()));
    assert_eq!(
        layer.fleet().leased(),
        9,
        "a new lease once the lost one timed out"
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_buckets_are_shared_per_key_across_replicas() {
    let store = MemoryStore::new();
    let keyed = || {
        layer(
            &store,
            Quota::per_minute(2),
            fleet(OnStoreFailure::FailClosed),
        )
        .keyed(key_fn(|n: &u32| n % 2))
        .layer(echo())
    };
    let (mut a, mut b) = (keyed(), keyed());
    let mut outcomes = Vec::new();
    for n in [0, 0, 1] {
        outcomes.push(a.ready().await.unwrap().call(n).await.is_ok());
    }
    for n in [0, 1, 1] {
        outcomes.push(b.ready().await.unwrap().call(n).await.is_ok());
    }
    assert_eq!(outcomes, [true, true, true, false, true, false]);
}

#[tokio::test(start_paused = true)]
async fn over_http_a_fleet_limit_answers_429_and_a_closed_store_503() {
    let store = MemoryStore::new();
    let app = |store: &MemoryStore| {
        let limit = RateLimitLayer::builder()
            .name("api")
            .quota(Quota::per_minute(1))
            .fleet(fleet(OnStoreFailure::FailClosed).build().unwrap())
            .build()
            .unwrap()
            .with_store(store.clone())
            .unwrap()
            .keyed(Header::new(http::HeaderName::from_static("x-api-key")));
        axum::Router::new()
            .route("/", axum::routing::get(|| async { "hello" }))
            .layer(
                ServiceBuilder::new()
                    .layer(ErrorResponseLayer::new())
                    .layer(limit),
            )
    };
    let (one, two) = (app(&store), app(&store));
    let get = |app: &axum::Router| {
        let req = Request::get("/")
            .header("x-api-key", "k1")
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(req)
    };
    assert_eq!(get(&one).await.unwrap().status(), StatusCode::OK);
    let res = get(&two).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the other replica's key"
    );
    assert_eq!(res.headers()[RETRY_AFTER], "60");
    store.set_state(StoreState::Down);
    advance(Duration::from_secs(60)).await;
    let res = get(&two).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key(RETRY_AFTER));
}

#[test]
fn fleet_configuration_errors_name_the_full_path() {
    seawall_core::testing::config::assert_errors::<RateLimitConfig>(&[
        (
            "quota = { per_second = 10 }\nfleet = { lease = 2 }",
            "invalid `fleet.on_failure`: nothing, expected one of `fail_open`, `fail_closed`, `local`",
        ),
        (
            "quota = { per_second = 10 }\nfleet = { on_failure = \"fail_opne\" }",
            "invalid `fleet.on_failure`: \"fail_opne\", expected one of",
        ),
        (
            "quota = { per_second = 10 }\nfleet = { on_failure = \"local\" }",
            "invalid `fleet.expected_replicas`: nothing, expected how many replicas",
        ),
        (
            "quota = { per_second = 10, burst = 5 }\nfleet = { on_failure = \"fail_open\", lease = 6 }",
            "invalid `fleet.lease`: 6 is outside the allowed range [1, 5]",
        ),
        (
            "quota = { per_second = 10 }\nfleet = { on_failure = \"fail_open\", lease = -1 }",
            "invalid `fleet.lease`: -1 is outside the allowed range [1, 100000]",
        ),
        (
            "quota = { per_second = 10 }\nfleet = { on_failure = \"fail_open\", timeout = \"0s\" }",
            "invalid `fleet.timeout`: 0ns is outside the allowed range (0s, 10s]",
        ),
        (
            "quota = { per_second = 10 }\nfleet = { on_failure = \"fail_open\", failures = 0 }",
            "invalid `fleet.failures`: 0 is outside the allowed range [1, 1000]",
        ),
        (
            "quota = { per_second = 10 }\nfleet = { on_failure = \"fail_open\", redis_url = \"http://x\" }",
            "invalid `fleet.redis_url`: \"http://x\", expected a `redis://host:port`",
        ),
        (
            "quota = { per_second = 10 }\nfleet = { on_failure = \"fail_open\", key_prefix = \"a b\" }",
            "invalid `fleet.key_prefix`",
        ),
        (
            "quota = { per_second = 10 }\nfleet = { on_failure = \"fail_open\", leese = 2 }",
            "unknown field `leese`",
        ),
    ]);
    let config: RateLimitConfig = toml::from_str(
        "name = \"api\"\nquota = { per_second = 100 }\n[fleet]\nredis_url = \"redis://127.0.0.1:6379\"\nlease = 10\non_failure = \"local\"\nexpected_replicas = 4\ntimeout = \"20ms\"\n",
    )
    .unwrap();
    let fleet = config.fleet().unwrap();
    assert_eq!(fleet.lease(), 10);
    assert_eq!(fleet.on_failure(), OnStoreFailure::Local);
    assert_eq!(fleet.guard().timeout(), Duration::from_millis(20));
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(
        serde_json::from_str::<RateLimitConfig>(&json).unwrap(),
        config
    );
}

#[test]
fn a_layer_without_a_fleet_section_refuses_a_store() {
    let err = RateLimitLayer::builder()
        .quota(Quota::per_second(1))
        .build()
        .unwrap()
        .with_store(MemoryStore::new())
        .unwrap_err();
    assert_eq!(err.field(), "fleet");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// N replicas with lease L: the calls admitted in any window of t seconds never exceed
    /// burst + rate × t + N × (L − 1) + 1, the bound `Fleet` documents.
    #[test]
    fn leases_overshoot_the_quota_by_at_most_the_cells_held(
        replicas in 1usize..4,
        lease in 1u32..6,
        rate in 5u32..50,
        burst_extra in 0u32..10,
        gaps in prop::collection::vec((0u64..40, 0usize..4), 50..300),
    ) {
        let burst = lease + burst_extra;
        let quota = Quota::per_second(rate).with_burst(burst);
        let runtime = paused_runtime();
        let admitted_at: Vec<u64> = runtime.block_on(async {
            let store = MemoryStore::new();
            let mut svcs: Vec<_> = (0..replicas)
                .map(|_| layer(&store, quota, fleet(OnStoreFailure::FailClosed).lease(lease)).layer(echo()))
                .collect();
            let start = Instant::now();
            let mut at = 0;
            let mut times = Vec::new();
            for &(gap, r) in &gaps {
                at += gap;
                tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                let svc = &mut svcs[r % replicas];
                if call(svc).await.is_ok() {
                    times.push(at);
                }
            }
            times
        });
        let slack = u64::from(burst) + (replicas as u64) * u64::from(lease - 1) + 1;
        for (i, &from) in admitted_at.iter().enumerate() {
            for (j, &to) in admitted_at.iter().enumerate().skip(i) {
                let window_ms = to - from;
                let allowed = slack + u64::from(rate) * window_ms / 1000;
                prop_assert!(
                    (j - i + 1) as u64 <= allowed,
                    "{} calls in {window_ms} ms, allowed {allowed}", j - i + 1
                );
            }
        }
    }
}

/// The same configuration as `layer` makes, with `quota`.
fn reloaded(quota: Quota, fleet: FleetConfigBuilder) -> RateLimitConfig {
    RateLimitConfig::builder()
        .name("api")
        .quota(quota)
        .fleet(fleet.build().unwrap())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_fleet_quota_applies_to_the_next_calls_and_keeps_the_stored_state() {
    let store = MemoryStore::new();
    let (layer, handle) = layer(
        &store,
        Quota::per_minute(4),
        fleet(OnStoreFailure::FailClosed),
    )
    .pair();
    let mut svc = layer.layer(echo());
    assert_eq!(admitted(&mut svc, 2).await, 2, "half of 4 a minute");

    handle
        .reload(reloaded(
            Quota::per_minute(8),
            fleet(OnStoreFailure::FailClosed),
        ))
        .unwrap();
    assert_eq!(handle.quota(), Quota::per_minute(8));
    assert_eq!(
        admitted(&mut svc, 10).await,
        4,
        "half the window of 8 a minute is left, where 4 a minute left 2"
    );
    let (_, after) = call(&mut svc).await.unwrap_err();
    assert_eq!(
        after,
        Some(Duration::from_millis(7_500)),
        "a cell every 7.5 s"
    );

    advance(Duration::from_secs(30)).await;
    handle.set_quota(Quota::per_minute(2)).unwrap();
    assert_eq!(
        admitted(&mut svc, 10).await,
        1,
        "half the window back is 1 of 2 a minute, where 8 a minute gave 4"
    );
    let (_, after) = call(&mut svc).await.unwrap_err();
    assert_eq!(after, Some(Duration::from_secs(30)), "then one every 30 s");
}

#[tokio::test(start_paused = true)]
async fn cells_leased_under_the_old_quota_are_spent_after_a_reload() {
    let store = MemoryStore::new();
    let policy = || fleet(OnStoreFailure::FailClosed).lease(5);
    let (layer, handle) = layer(&store, Quota::per_second(100).with_burst(20), policy()).pair();
    let mut svc = layer.layer(echo());
    assert_eq!(admitted(&mut svc, 1).await, 1);
    assert_eq!(layer.fleet().leased(), 4);
    handle
        .reload(reloaded(Quota::per_second(10).with_burst(5), policy()))
        .unwrap();
    let trips = store.round_trips();
    assert_eq!(admitted(&mut svc, 4).await, 4);
    assert_eq!(
        store.round_trips(),
        trips,
        "the leased cells are spent, not asked for again"
    );
    assert_eq!(layer.fleet().leased(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_local_share_follows_a_reloaded_quota_while_the_store_is_down() {
    let store = MemoryStore::new();
    store.set_state(StoreState::Down);
    let local = || fleet(OnStoreFailure::Local);
    let (layer, handle) = layer(&store, Quota::per_second(10), local()).pair();
    let mut svc = layer.layer(echo());
    assert_eq!(admitted(&mut svc, 20).await, 5, "10 over 2 replicas");
    handle
        .reload(reloaded(Quota::per_second(30), local()))
        .unwrap();
    assert_eq!(
        admitted(&mut svc, 40).await,
        15,
        "30 over 2 replicas, a fresh local bucket"
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_fleet_limit_reloads_every_key() {
    let store = MemoryStore::new();
    let (layer, handle) = layer(
        &store,
        Quota::per_second(2),
        fleet(OnStoreFailure::FailClosed),
    )
    .keyed(key_fn(|n: &u32| *n))
    .pair();
    let mut svc = layer.layer(echo());
    assert_eq!(admitted(&mut svc, 5).await, 2);
    handle
        .set_quota(Quota::per_second(2).with_burst(4))
        .unwrap();
    assert_eq!(admitted(&mut svc, 5).await, 2, "two more cells of burst");
}

#[tokio::test(start_paused = true)]
async fn a_fleet_reload_refuses_what_only_a_restart_changes_and_keeps_the_old_quota() {
    let store = MemoryStore::new();
    let (_layer, handle) = layer(
        &store,
        Quota::per_second(10),
        fleet(OnStoreFailure::FailClosed).redis_url("redis://app:s3cret@cache:6379"),
    )
    .pair();
    let base = || fleet(OnStoreFailure::FailClosed).redis_url("redis://app:s3cret@cache:6379");
    let cases = [
        (
            base().redis_url("redis://app:other@cache2:6379"),
            "fleet.redis_url",
        ),
        (base().key_prefix("other"), "fleet.key_prefix"),
        (base().lease(2), "fleet.lease"),
        (
            fleet(OnStoreFailure::FailOpen).redis_url("redis://app:s3cret@cache:6379"),
            "fleet.on_failure",
        ),
        (base().expected_replicas(3), "fleet.expected_replicas"),
        (base().timeout(Duration::from_millis(80)), "fleet.timeout"),
        (base().failures(7), "fleet.failures"),
        (base().open_for(Duration::from_secs(5)), "fleet.open_for"),
    ];
    for (next, field) in cases {
        let err = handle
            .reload(reloaded(Quota::per_second(20), next))
            .unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains("a restart changes it"), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(!err.to_string().contains("other@"), "{err}");
    }
    let without = RateLimitConfig::builder()
        .name("api")
        .quota(Quota::per_second(20))
        .build()
        .unwrap();
    assert_eq!(handle.reload(without).unwrap_err().field(), "fleet");

    let err = handle.set_quota(Quota::per_second(0)).unwrap_err();
    assert_eq!(err.field(), "quota.per_second");
    assert_eq!(handle.quota(), Quota::per_second(10), "the old quota stays");
}

#[tokio::test(start_paused = true)]
async fn a_reload_forgets_the_refusal_cached_under_the_old_quota() {
    let store = MemoryStore::new();
    let (layer, handle) = layer(
        &store,
        Quota::per_minute(4).with_burst(2),
        fleet(OnStoreFailure::FailClosed),
    )
    .pair();
    let mut svc = layer.layer(echo());
    assert_eq!(
        admitted(&mut svc, 3).await,
        2,
        "the third is refused and cached"
    );
    handle.set_quota(Quota::per_minute(8)).unwrap();
    assert_eq!(
        admitted(&mut svc, 10).await,
        4,
        "half the window of 8 a minute, at once"
    );
}
