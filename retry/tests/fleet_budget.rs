//! A retry budget shared by a fleet: on the paused clock against the in-memory store, and
//! against a real Redis (`SEAWALL_REDIS_URL`, or a `redis-server` of the test's own; skipped
//! loudly without one outside CI).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use seawall_core::BoxError;
use seawall_core::store::OnStoreFailure;
use seawall_core::testing::redis::{RedisServer, redis_url};
use seawall_core::testing::{TestRecorder, paused_runtime};
use seawall_retry::{
    Budget, BudgetConfig, BudgetStore, FleetBudget, FleetBudgetConfig, MemoryBudgetStore,
    RedisBudgetStore, RetryBudget, RetryLayer,
};
use tokio::time::{Instant, advance};
use tower::{Layer, ServiceExt, service_fn};

fn config(policy: OnStoreFailure, ratio: f64, floor: u32) -> FleetBudgetConfig {
    FleetBudgetConfig::builder()
        .name("payments")
        .budget(BudgetConfig::new(ratio, floor, Duration::from_secs(10)).unwrap())
        .max_lease(5)
        .on_failure(policy)
        .expected_replicas(3)
        .build()
        .unwrap()
}

/// Each of `budgets` sees 100 requests a second and wants a retry for each (a downstream that
/// fails everything), for `seconds`; returns (requests, retries allowed).
async fn drive<B: Budget>(budgets: &[B], seconds: u64) -> (u64, u64) {
    let (mut requests, mut retries) = (0, 0);
    for _ in 0..seconds * 100 {
        for budget in budgets {
            budget.deposit(Instant::now());
            requests += 1;
            retries += u64::from(budget.withdraw(Instant::now()));
        }
        advance(Duration::from_millis(10)).await;
    }
    (requests, retries)
}

#[tokio::test(start_paused = true)]
async fn a_fleet_keeps_retries_to_its_ratio_where_each_replica_keeps_its_own_floor() {
    let store = MemoryBudgetStore::new();
    let fleet: Vec<_> = (0..3)
        .map(|_| FleetBudget::new(config(OnStoreFailure::FailClosed, 0.1, 10), store.clone()))
        .collect();
    let (requests, retries) = drive(&fleet, 10).await;
    // The fleet's ratio and one floor (10/s over 10 s), plus the leases held (3 × 5).
    let bound = requests / 10 + 100 + 15;
    assert!(
        retries <= bound,
        "{retries} retries for {requests} requests, bound {bound}"
    );
    assert!(retries >= requests / 10, "the budget is used: {retries}");

    let own: Vec<_> = (0..3)
        .map(|_| RetryBudget::new(BudgetConfig::new(0.1, 10, Duration::from_secs(10)).unwrap()))
        .collect();
    let (requests, retries) = drive(&own, 10).await;
    assert!(
        retries > requests / 10 + 200,
        "three replicas of their own: three floors ({retries} for {requests})"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_wait_for_the_next_sync_and_deposits_are_batched() {
    let store = MemoryBudgetStore::new();
    let budget = FleetBudget::new(config(OnStoreFailure::FailClosed, 0.5, 0), store.clone());
    for _ in 0..10 {
        budget.deposit(Instant::now());
    }
    assert!(
        !budget.withdraw(Instant::now()),
        "no lease before the first sync"
    );
    tokio::task::yield_now().await;
    advance(Duration::from_millis(1)).await;
    assert!(
        budget.withdraw(Instant::now()),
        "the refused retry asked for a sync at once"
    );
    let trips = store.round_trips();
    for _ in 0..50 {
        budget.deposit(Instant::now());
    }
    assert_eq!(
        store.round_trips(),
        trips,
        "deposits wait for the next sync"
    );
    advance(Duration::from_millis(110)).await;
    tokio::task::yield_now().await;
    assert_eq!(store.round_trips(), trips + 1, "one sync flushed them all");
}

#[tokio::test(start_paused = true)]
async fn without_the_store_the_policy_decides_once_the_lease_is_spent() {
    let recorder = TestRecorder::new();
    for (policy, expected) in [
        (OnStoreFailure::FailOpen, 30),
        (OnStoreFailure::FailClosed, 0),
        // Its own budget: ratio 0.1 of its 30 requests, and the floor of 3 / 3 replicas a
        // second over the 1 s its credit lasts while no retry was wanted before.
        (OnStoreFailure::Local, 4),
    ] {
        let store = MemoryBudgetStore::new();
        store.set_down(true);
        let budget =
            recorder.install_for(|| FleetBudget::new(config(policy, 0.1, 3), store.clone()));
        budget.sync().await;
        assert!(budget.store_unavailable());
        let mut allowed = 0;
        for _ in 0..30 {
            budget.deposit(Instant::now());
            allowed += u32::from(budget.withdraw(Instant::now()));
        }
        assert_eq!(allowed, expected, "{policy}");
    }
    assert!(
        recorder.counter(
            "seawall_retry_budget_store_fallbacks_total",
            &[("name", "payments"), ("policy", "local")]
        ) > 0
    );
    assert!(
        recorder.counter(
            "seawall_retry_budget_store_errors_total",
            &[("name", "payments"), ("error", "connection")]
        ) > 0
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_layer_draws_from_a_shared_budget() {
    let store = MemoryBudgetStore::new();
    let budget = FleetBudget::new(config(OnStoreFailure::FailClosed, 0.0, 0), store.clone());
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = attempts.clone();
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .build()
        .unwrap()
        .with_shared_budget(budget);
    assert!(layer.budget().is_none(), "not the layer's own");
    let svc = layer.layer(service_fn(move |_: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err::<u32, BoxError>("boom".into()))
    }));
    for _ in 0..10 {
        assert!(svc.clone().oneshot(1).await.is_err());
        advance(Duration::from_millis(200)).await;
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        10,
        "an empty fleet budget: no retries"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// N replicas with leases of at most L, within one window of the budget's ttl: the
    /// retries allowed never exceed ratio × requests + floor × ttl + N × L, the bound
    /// `FleetBudget` documents, whatever the traffic and however it is spread.
    #[test]
    fn a_fleet_retries_at_most_its_budget_plus_the_leases_held(
        replicas in 1usize..4,
        max_lease in 1u32..8,
        ratio in 0.0f64..0.5,
        floor in 0u32..3,
        ticks in prop::collection::vec((0u64..30, 0usize..4, 0u32..4, 0u32..4), 20..200),
    ) {
        let runtime = paused_runtime();
        let ttl = Duration::from_secs(10);
        let (requests, retries, elapsed) = runtime.block_on(async {
            let store = MemoryBudgetStore::new();
            let config = FleetBudgetConfig::builder()
                .budget(BudgetConfig::new(ratio, floor, ttl).unwrap())
                .max_lease(max_lease)
                .sync_interval(Duration::from_millis(20))
                .on_failure(OnStoreFailure::FailClosed)
                .build()
                .unwrap();
            let fleet: Vec<_> = (0..replicas)
                .map(|_| FleetBudget::new(config.clone(), store.clone()))
                .collect();
            let start = Instant::now();
            let (mut requests, mut retries) = (0u64, 0u64);
            for &(gap, r, calls, wanted) in &ticks {
                advance(Duration::from_millis(gap)).await;
                let budget = &fleet[r % replicas];
                for _ in 0..calls {
                    budget.deposit(Instant::now());
                    requests += 1;
                }
                for _ in 0..wanted {
                    retries += u64::from(budget.withdraw(Instant::now()));
                }
            }
            (requests, retries, start.elapsed())
        });
        // At most 200 ticks of 30 ms: all within one window.
        prop_assert!(elapsed < ttl);
        let bound = (ratio * requests as f64).floor() as u64
            + u64::from(floor) * 10
            + replicas as u64 * u64::from(max_lease);
        prop_assert!(retries <= bound, "{retries} retries for {requests} requests, bound {bound}");
    }
}

#[test]
fn configuration_errors_name_the_full_path() {
    seawall_core::testing::config::assert_errors::<FleetBudgetConfig>(&[
        (
            "name = \"p\"",
            "invalid `on_failure`: nothing, expected one of `fail_open`, `fail_closed`, `local`",
        ),
        (
            "on_failure = \"local\"",
            "invalid `expected_replicas`: nothing, expected how many replicas",
        ),
        (
            "on_failure = \"fail_open\"\nbudget = { ratio = 2, min_per_second = 1, ttl = \"10s\" }",
            "invalid `budget.ratio`: 2 is outside the allowed range [0, 1]",
        ),
        (
            "on_failure = \"fail_open\"\nsync_interval = \"1ms\"",
            "invalid `sync_interval`: 1ms is outside the allowed range [10ms, 10s]",
        ),
        (
            "on_failure = \"fail_open\"\nredis_url = \"localhost:6379\"",
            "invalid `redis_url`: \"localhost:6379\", expected a `redis://host:port`",
        ),
        (
            "on_failure = \"fail_open\"\nmax_lease = 0",
            "invalid `max_lease`: 0 is outside the allowed range [1, 1000000]",
        ),
    ]);
    let config: FleetBudgetConfig = toml::from_str(
        "name = \"payments\"\nbudget = { ratio = 0.1, min_per_second = 5, ttl = \"10s\" }\nredis_url = \"redis://u:pw@127.0.0.1:6379\"\non_failure = \"fail_closed\"\n",
    )
    .unwrap();
    assert_eq!(config.budget().ratio(), 0.1);
    assert!(!format!("{config:?}").contains("pw@"));
}

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn redis_config(url: &str, name: &str, policy: OnStoreFailure) -> FleetBudgetConfig {
    FleetBudgetConfig::builder()
        .name(name)
        .budget(BudgetConfig::new(0.1, 0, Duration::from_secs(10)).unwrap())
        .redis_url(url)
        .key_prefix("seawall-test:retry_budget")
        .max_lease(5)
        .sync_interval(Duration::from_millis(50))
        .on_failure(policy)
        .expected_replicas(3)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_keep_retries_under_ten_percent_of_the_fleets_traffic_in_redis() {
    let Some((url, _server)) = redis_url().await else {
        return;
    };
    let name = unique("fleet");
    let budgets: Vec<_> = (0..3)
        .map(|_| FleetBudget::redis(redis_config(&url, &name, OnStoreFailure::FailClosed)).unwrap())
        .collect();
    let (mut requests, mut retries) = (0u64, 0u64);
    let until = Instant::now() + Duration::from_secs(3);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while Instant::now() < until {
        tick.tick().await;
        for budget in &budgets {
            budget.deposit(Instant::now());
            requests += 1;
            retries += u64::from(budget.withdraw(Instant::now()));
        }
    }
    let bound = requests / 10 + 3 * 5;
    eprintln!("{retries} retries for {requests} requests (bound {bound})");
    assert!(
        retries <= bound,
        "{retries} retries for {requests} requests"
    );
    assert!(
        retries * 20 >= requests,
        "the budget is used: {retries} for {requests}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_the_policy_decides_and_counting_resumes_after_a_restart() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    let name = unique("down");
    let config = FleetBudgetConfig::builder()
        .name(&name)
        .budget(BudgetConfig::new(0.5, 0, Duration::from_secs(10)).unwrap())
        .redis_url(server.url())
        .sync_interval(Duration::from_millis(20))
        .open_for(Duration::from_millis(100))
        .on_failure(OnStoreFailure::FailClosed)
        .build()
        .unwrap();
    let budget = FleetBudget::redis(config).unwrap();
    for _ in 0..20 {
        budget.deposit(Instant::now());
    }
    budget.sync().await;
    assert!(budget.withdraw(Instant::now()), "the first lease");
    server.kill();
    let until = Instant::now() + Duration::from_secs(3);
    while !budget.store_unavailable() && Instant::now() < until {
        budget.deposit(Instant::now());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(budget.store_unavailable());
    while budget.leased() > 0 {
        assert!(budget.withdraw(Instant::now()), "the lease is still spent");
    }
    assert!(!budget.withdraw(Instant::now()), "fail closed: no retries");
    server.restart().await;
    let until = Instant::now() + Duration::from_secs(5);
    let mut allowed = false;
    while !allowed && Instant::now() < until {
        budget.deposit(Instant::now());
        allowed = budget.withdraw(Instant::now());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(allowed, "retries come back with the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_reloads_after_a_flush_and_a_garbage_field_is_a_script_error() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let config = redis_config(&server.url(), "scripts", OnStoreFailure::FailOpen);
    let store = RedisBudgetStore::open(&config).unwrap();
    let budget = BudgetConfig::new(0.5, 0, Duration::from_secs(10)).unwrap();
    assert_eq!(store.sync(b"b", &budget, 10, 3).await, Ok(3));
    assert!(server.command("SCRIPT FLUSH").starts_with("+OK"));
    assert_eq!(store.sync(b"b", &budget, 0, 5).await, Ok(2), "10 × 0.5 − 3");
    assert!(server.command("HSET b junk 1").starts_with(':'));
    let err = store.sync(b"b", &budget, 0, 1).await.unwrap_err();
    assert_eq!(err.kind(), seawall_core::store::StoreErrorKind::Script);
    assert!(err.message().contains("no count"), "{err}");
}

/// The bound's last term, in Redis: a lease taken near the end of one window is charged to
/// that window, and the replica may still spend it in the next one, which the store counts
/// afresh; so a window may see up to N × `max_lease` retries over its own ratio and floor, and
/// no more. With one replica, a ratio of 0.5, no floor, a ttl of 1 s and a lease of at most
/// 5: the lease taken in the first second is spent two seconds later in a window with no
/// request at all, and nothing past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_carried_into_the_next_window_is_the_most_it_overshoots() {
    let Some((url, _server)) = redis_url().await else {
        return;
    };
    let config = FleetBudgetConfig::builder()
        .name(unique("carried"))
        .budget(BudgetConfig::new(0.5, 0, Duration::from_secs(1)).unwrap())
        .redis_url(&url)
        .key_prefix("seawall-test:retry_budget")
        .max_lease(5)
        // Syncs only when asked for one: the test decides when leases are taken and dropped.
        .sync_interval(Duration::from_secs(10))
        .on_failure(OnStoreFailure::FailClosed)
        .build()
        .unwrap();
    let budget = FleetBudget::redis(config).unwrap();
    // The store counts in seconds of its clock, this machine's: starting early in one, the
    // requests and the lease below fall in the same second, and the lease is granted from
    // requests the window still holds.
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis()
        > 50
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..200 {
        budget.deposit(Instant::now());
    }
    // Retries wanted now and then: each refused one wakes the sync task, which sizes the
    // lease to twice the retries wanted since its last sync, at most 5.
    for _ in 0..10 {
        let _ = budget.withdraw(Instant::now());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last withdrawal may have spent the lease the task took after the one before it; a
    // sync now holds at least one, whatever the task's timing on a busy machine.
    budget.sync().await;
    let held = budget.leased();
    assert!(
        (1..=5).contains(&held),
        "a lease, charged to this second: {held}"
    );

    // The store's window has moved past every request and retry counted so far.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut carried = 0;
    while budget.withdraw(Instant::now()) {
        carried += 1;
        assert!(carried <= 5, "more than max_lease");
    }
    assert_eq!(
        carried, held,
        "a window with no request spends the lease carried into it, at most N × max_lease"
    );
    budget.sync().await;
    assert_eq!(budget.leased(), 0, "the new window grants nothing");
    assert!(!budget.withdraw(Instant::now()));
}

/// A manual `sync` racing the sync task (or another manual one) must not size its lease from
/// the same lease count the other one read: each would take `max_lease` less what is held,
/// and together they would hold more than `max_lease`, the overshoot bound's one term per
/// replica. Several syncs are started at once from tasks on a multi-thread runtime, round
/// after round, each round after retries were wanted (so the lease sized to its maximum), and
/// the lease held never passes `max_lease`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_syncs_never_lease_more_than_max_lease() {
    let Some((url, _server)) = redis_url().await else {
        return;
    };
    let config = FleetBudgetConfig::builder()
        .name(unique("concurrent"))
        // Credit to spare: the store grants whatever is asked.
        .budget(BudgetConfig::new(1.0, 1000, Duration::from_secs(10)).unwrap())
        .redis_url(&url)
        .key_prefix("seawall-test:retry_budget")
        .max_lease(5)
        .sync_interval(Duration::from_millis(10))
        .on_failure(OnStoreFailure::FailClosed)
        .build()
        .unwrap();
    let budget = FleetBudget::redis(config).unwrap();
    budget.deposit(Instant::now());
    let mut most = 0;
    for _ in 0..50 {
        while budget.withdraw(Instant::now()) {}
        for _ in 0..10 {
            let _ = budget.withdraw(Instant::now());
        }
        let syncs: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move {
                    tokio::join!(budget.sync(), budget.sync());
                })
            })
            .collect();
        for sync in syncs {
            sync.await.unwrap();
        }
        most = most.max(budget.leased());
        assert!(
            budget.leased() <= 5,
            "{} leased, max_lease 5",
            budget.leased()
        );
    }
    assert!(most >= 1, "leases were taken");
}
