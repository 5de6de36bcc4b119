//! Fleet-wide limits against a real Redis, on the real clock: exactness across limiters in
//! one process and across three processes, Redis killed and restarted mid-run, the script
//! reloaded after a flush, garbage in the bucket and garbage on the wire.
//!
//! Redis comes from `SEAWALL_REDIS_URL` (CI starts one) or a `redis-server` each test starts
//! on a free port; without either, the tests skip with a loud message, except in CI where
//! they fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seawall_core::testing::TestRecorder;
use seawall_core::testing::redis::{RedisServer, redis_url};
use seawall_core::{BoxError, RejectionKind, rejected};
use seawall_rate_limit::store::{OnStoreFailure, QuotaStore, RedisStore, StoreErrorKind};
use seawall_rate_limit::{Fleet, FleetConfig, Quota, RateLimit, RateLimitConfig, RateLimitLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

type Echo = tower::util::ServiceFn<fn(u32) -> std::future::Ready<Result<u32, BoxError>>>;

fn echo() -> Echo {
    service_fn(|n| std::future::ready(Ok(n)))
}

/// A name no other test (or earlier run against the same Redis) uses.
fn unique(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fleet configuration whose store timeout a loaded machine does not reach: the tests using
/// it are about the quota, and a Redis round trip past the default 50 ms (CI sharing its cores)
/// would apply `policy` instead. The tests of the store's timeout set their own.
fn fleet(url: &str, lease: u32, policy: OnStoreFailure) -> FleetConfig {
    FleetConfig::builder()
        .redis_url(url)
        .key_prefix("seawall-test")
        .lease(lease)
        .on_failure(policy)
        .expected_replicas(3)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

fn replica(name: &str, quota: Quota, fleet: FleetConfig) -> RateLimitLayer<Fleet<RedisStore>> {
    RateLimitLayer::builder()
        .name(name)
        .quota(quota)
        .fleet(fleet)
        .build()
        .unwrap()
        .with_redis()
        .unwrap()
}

type Svc = RateLimit<Echo, Fleet<RedisStore>>;

async fn call(svc: &mut Svc) -> Result<(), RejectionKind> {
    match svc.ready().await.unwrap().call(1).await {
        Ok(_) => Ok(()),
        Err(err) => Err(rejected(&*err).expect("a rejection").kind()),
    }
}

/// Offers one call every 5 ms (200/s) from `start` for `run`, and returns how many were
/// admitted.
async fn offer(layer: RateLimitLayer<Fleet<RedisStore>>, start: Instant, run: Duration) -> u64 {
    let mut svc = layer.layer(echo());
    let mut admitted = 0;
    let mut tick = tokio::time::interval_at(start, Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Instant::now() >= start + run {
            return admitted;
        }
        if call(&mut svc).await.is_ok() {
            admitted += 1;
        }
    }
}

const RATE: u32 = 100;
const BURST: u32 = 10;
const REPLICAS: u64 = 3;
const RUN: Duration = Duration::from_secs(10);

/// The documented bound for 3 replicas with lease `lease` over 10 s: at most
/// burst + rate × t + N × (L − 1) + 1, and under steady demand at least the quota less the
/// cells leased but unspent at the end (and a few cells at the window's edges).
fn assert_exact(admitted: u64, lease: u32) {
    let held = REPLICAS * u64::from(lease - 1);
    let quota = u64::from(BURST) + u64::from(RATE) * RUN.as_secs();
    let (low, high) = (quota - held - 5, quota + held + 2);
    eprintln!("lease {lease}: admitted {admitted}, allowed [{low}, {high}]");
    assert!(
        (low..=high).contains(&admitted),
        "lease {lease}: {admitted} admitted, outside [{low}, {high}]"
    );
}

async fn three_replicas_in_one_process(lease: u32) {
    let Some((url, _server)) = redis_url().await else {
        return;
    };
    let name = unique("exact");
    let quota = Quota::per_second(RATE).with_burst(BURST);
    let start = Instant::now() + Duration::from_millis(200);
    let tasks: Vec<_> = (0..REPLICAS)
        .map(|_| {
            let layer = replica(&name, quota, fleet(&url, lease, OnStoreFailure::FailClosed));
            tokio::spawn(offer(layer, start, RUN))
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    assert_exact(admitted, lease);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_in_one_process_hold_the_quota_asking_per_call() {
    three_replicas_in_one_process(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_in_one_process_hold_the_quota_with_leases() {
    three_replicas_in_one_process(10).await;
}

const CHILD_URL: &str = "SEAWALL_TEST_REPLICA_URL";
const CHILD_NAME: &str = "SEAWALL_TEST_REPLICA_NAME";
const CHILD_START: &str = "SEAWALL_TEST_REPLICA_START_MS";

/// One replica of `three_replicas_in_three_processes_hold_the_quota`, run as a process of its
/// own; it does nothing when run by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of three_replicas_in_three_processes_hold_the_quota"]
async fn replica_process() {
    let (Ok(url), Ok(name), Ok(start)) = (
        std::env::var(CHILD_URL),
        std::env::var(CHILD_NAME),
        std::env::var(CHILD_START),
    ) else {
        return;
    };
    let start_ms: u128 = start.parse().unwrap();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let start = Instant::now() + Duration::from_millis(start_ms.saturating_sub(now_ms) as u64);
    let quota = Quota::per_second(RATE).with_burst(BURST);
    let layer = replica(&name, quota, fleet(&url, 10, OnStoreFailure::FailClosed));
    let admitted = offer(layer, start, RUN).await;
    println!("admitted={admitted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_in_three_processes_hold_the_quota() {
    let Some((url, _server)) = redis_url().await else {
        return;
    };
    let name = unique("processes");
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 2_000;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..REPLICAS)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .args(["replica_process", "--exact", "--ignored", "--nocapture"])
                .env(CHILD_URL, &url)
                .env(CHILD_NAME, &name)
                .env(CHILD_START, start.to_string())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("the test binary runs again")
        })
        .collect();
    let mut admitted = 0;
    for child in children {
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "a replica process failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("admitted="))
            .unwrap_or_else(|| panic!("no count from a replica process: {text}"));
        admitted += line.trim().parse::<u64>().unwrap();
    }
    assert_exact(admitted, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_fails_closed_without_hanging_and_counting_resumes() {
    let Some(mut server) = RedisServer::start().await else {
        return;
    };
    let recorder = TestRecorder::new();
    let timeout = Duration::from_millis(50);
    let config = FleetConfig::builder()
        .redis_url(server.url())
        .lease(1)
        .on_failure(OnStoreFailure::FailClosed)
        .timeout(timeout)
        .failures(3)
        .open_for(Duration::from_millis(200))
        .build()
        .unwrap();
    let name = unique("faults");
    let layer = recorder.install_for(|| replica(&name, Quota::per_minute(5).with_burst(5), config));
    let mut svc = layer.clone().layer(echo());
    for _ in 0..3 {
        assert_eq!(call(&mut svc).await, Ok(()));
    }

    server.kill();
    // Waits on the store are bounded by its timeout; a loaded machine gets a margin.
    let most = timeout + Duration::from_millis(250);
    let until = Instant::now() + Duration::from_secs(1);
    let mut calls = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let result = call(&mut svc).await;
        let waited = started.elapsed();
        assert!(waited <= most, "a call waited {waited:?} on a dead Redis");
        assert_eq!(result, Err(RejectionKind::StoreUnavailable), "fail closed");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(calls > 10);

    server.restart().await;
    // A fresh Redis has an empty bucket (and no script): once the breaker lets a probe
    // through, the quota counts again from the start.
    let until = Instant::now() + Duration::from_secs(5);
    let mut admitted = 0;
    while Instant::now() < until && admitted < 5 {
        match call(&mut svc).await {
            Ok(()) => admitted += 1,
            Err(kind) => assert_eq!(kind, RejectionKind::StoreUnavailable),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(admitted, 5, "the restarted Redis admits the quota again");
    assert_eq!(call(&mut svc).await, Err(RejectionKind::RateLimited));
    let errors = |error| {
        recorder.counter(
            "seawall_rate_limit_store_errors_total",
            &[("name", &name), ("error", error)],
        )
    };
    assert!(errors("connection") + errors("timeout") >= 3);
    assert!(
        recorder.counter(
            "seawall_rate_limit_store_fallbacks_total",
            &[("name", &name), ("policy", "fail_closed")]
        ) > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_costs_no_call_more_than_the_timeout() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let recorder = TestRecorder::new();
    let timeout = Duration::from_millis(50);
    let config = FleetConfig::builder()
        .redis_url(server.url())
        .on_failure(OnStoreFailure::FailOpen)
        .timeout(timeout)
        .build()
        .unwrap();
    let name = unique("slow");
    let layer = recorder.install_for(|| replica(&name, Quota::per_second(1000), config));
    let mut svc = layer.clone().layer(echo());
    assert_eq!(call(&mut svc).await, Ok(()));
    let port = server.port();
    // Redis runs one command at a time: while it sleeps, every call to it hangs.
    let sleeper = tokio::task::spawn_blocking(move || {
        seawall_core::testing::redis::command(port, "DEBUG SLEEP 1")
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(call(&mut svc).await, Ok(()), "fail open");
        assert!(started.elapsed() <= timeout + Duration::from_millis(250));
    }
    assert!(
        recorder.counter(
            "seawall_rate_limit_store_errors_total",
            &[("name", &name), ("error", "timeout")]
        ) >= 1
    );
    sleeper.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_is_called_by_sha_and_loaded_again_after_a_flush() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let config = fleet(&server.url(), 1, OnStoreFailure::FailClosed);
    let store = RedisStore::open(&config).unwrap();
    let quota = Quota::per_second(10).with_burst(2);
    assert_eq!(store.take(b"k", &quota, 5).await.unwrap().granted(), 2);
    let sha = store.script_sha().to_owned();
    assert!(
        server
            .command(&format!("SCRIPT EXISTS {sha}"))
            .contains(":1")
    );
    assert!(server.command("SCRIPT FLUSH").starts_with("+OK"));
    assert!(
        server
            .command(&format!("SCRIPT EXISTS {sha}"))
            .contains(":0")
    );
    let none = store.take(b"k", &quota, 1).await.unwrap();
    assert_eq!(none.granted(), 0);
    assert!(none.retry_after() <= Duration::from_millis(100));
    assert!(
        server
            .command(&format!("SCRIPT EXISTS {sha}"))
            .contains(":1")
    );
    let ttl = server.command("PTTL k");
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(
        (1..=201).contains(&ttl),
        "the key expires once full again: {ttl} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_holding_garbage_is_a_script_error_and_the_policy_applies() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let recorder = TestRecorder::new();
    let name = unique("garbage");
    let layer = recorder.install_for(|| {
        replica(
            &name,
            Quota::per_second(10),
            fleet(&server.url(), 1, OnStoreFailure::FailOpen),
        )
    });
    let key = String::from_utf8(layer.fleet().store_key().to_vec()).unwrap();
    assert!(
        server
            .command(&format!("SET {key} hello"))
            .starts_with("+OK")
    );
    let err = layer
        .fleet()
        .store()
        .take(key.as_bytes(), &Quota::per_second(10), 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Script);
    assert!(err.message().contains("holds no number"), "{err}");
    let mut svc = layer.clone().layer(echo());
    assert_eq!(call(&mut svc).await, Ok(()), "fail open");
    assert_eq!(
        recorder.counter(
            "seawall_rate_limit_store_errors_total",
            &[("name", &name), ("error", "script")]
        ),
        1
    );
    assert_eq!(
        recorder.counter(
            "seawall_rate_limit_store_fallbacks_total",
            &[("name", &name), ("policy", "fail_open")]
        ),
        1
    );
    assert!(
        server
            .command(&format!("LPUSH {key}-list x"))
            .starts_with(':')
    );
    let err = layer
        .fleet()
        .store()
        .take(format!("{key}-list").as_bytes(), &Quota::per_second(10), 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Script, "WRONGTYPE: {err}");
}

/// A server on 127.0.0.1 that answers every read with `reply`.
async fn fake_redis(reply: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    // One reply per command, pipelined ones included.
                    let commands = usize::from(buf[0] == b'*')
                        + buf[..n].windows(3).filter(|w| w == b"\r\n*").count();
                    let replies = reply.repeat(commands.max(1));
                    if n == 0 || socket.write_all(&replies).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("redis://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_garbage_is_an_error_in_logs_and_metrics_and_the_policy_applies() {
    for (reply, expected) in [
        (&b"+OK\r\n"[..], Some(StoreErrorKind::Response)),
        (&b"%%% not RESP %%%\r\n"[..], None),
    ] {
        let url = fake_redis(reply).await;
        let recorder = TestRecorder::new();
        let name = unique("wire");
        let layer = recorder.install_for(|| {
            replica(
                &name,
                Quota::per_second(10),
                fleet(&url, 1, OnStoreFailure::Local),
            )
        });
        let err = layer
            .fleet()
            .store()
            .take(b"k", &Quota::per_second(10), 1)
            .await
            .unwrap_err();
        if let Some(kind) = expected {
            assert_eq!(err.kind(), kind, "{err}");
        }
        assert!(!err.message().is_empty());
        let mut svc = layer.clone().layer(echo());
        let started = Instant::now();
        let mut admitted = 0;
        for _ in 0..10 {
            if call(&mut svc).await.is_ok() {
                admitted += 1;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(2), "nothing hangs");
        assert_eq!(
            admitted, 3,
            "local: a third of the quota (10/3, burst 10/3)"
        );
        let errors: u64 = ["timeout", "connection", "script", "response"]
            .iter()
            .map(|e| {
                recorder.counter(
                    "seawall_rate_limit_store_errors_total",
                    &[("name", &name), ("error", e)],
                )
            })
            .sum();
        assert!(errors >= 1, "store errors are counted");
    }
}

#[test]
fn a_bad_url_is_a_config_error_naming_the_field() {
    let config = FleetConfig::builder()
        .on_failure(OnStoreFailure::FailOpen)
        .build()
        .unwrap();
    let err = RedisStore::open(&config).unwrap_err();
    assert_eq!(err.field(), "fleet.redis_url");
}

/// A replica of `name` at `quota`, asking Redis per call, and its reload handle.
fn reloadable(url: &str, name: &str, quota: Quota) -> (Svc, seawall_rate_limit::RateLimitHandle) {
    let (layer, handle) = replica(name, quota, fleet(url, 1, OnStoreFailure::FailClosed)).pair();
    (layer.layer(echo()), handle)
}

/// The same configuration with `quota`, as a reloaded file would give it.
fn with_quota(handle: &seawall_rate_limit::RateLimitHandle, quota: Quota) -> RateLimitConfig {
    let config = handle.config();
    RateLimitConfig::builder()
        .name(config.name())
        .quota(quota)
        .fleet(config.fleet().unwrap().clone())
        .build()
        .unwrap()
}

async fn admitted(svc: &mut Svc, n: u32) -> u32 {
    let mut ok = 0;
    for _ in 0..n {
        ok += u32::from(call(svc).await.is_ok());
    }
    ok
}

/// How long the next call is told to wait.
async fn refused_for(svc: &mut Svc) -> Duration {
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    let rejection = rejected(&*err).expect("a rejection");
    assert_eq!(rejection.kind(), RejectionKind::RateLimited);
    rejection.retry_after().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_quota_reloaded_higher_admits_the_difference_within_the_window() {
    let Some((url, _server)) = redis_url().await else {
        return;
    };
    let (mut svc, handle) = reloadable(&url, &unique("reload-up"), Quota::per_minute(4));
    assert_eq!(
        admitted(&mut svc, 2).await,
        2,
        "half the window of 4 a minute"
    );
    handle
        .reload(with_quota(&handle, Quota::per_minute(8)))
        .unwrap();
    assert_eq!(handle.quota(), Quota::per_minute(8));
    // Redis keeps the bucket's TAT: half the window is spent, and half of 8 is left where 4
    // a minute left 2.
    assert_eq!(admitted(&mut svc, 10).await, 4);
    let wait = refused_for(&mut svc).await;
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(7_500),
        "a cell every 7.5 s now, not 15 s: {wait:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_quota_reloaded_lower_refuses() {
    let Some((url, _server)) = redis_url().await else {
        return;
    };
    let (mut svc, handle) = reloadable(&url, &unique("reload-down"), Quota::per_minute(8));
    assert_eq!(
        admitted(&mut svc, 4).await,
        4,
        "half the window of 8 a minute"
    );
    handle.set_quota(Quota::per_minute(4)).unwrap();
    assert_eq!(
        admitted(&mut svc, 10).await,
        2,
        "half of 4 is left, where 8 a minute left 4"
    );
    let wait = refused_for(&mut svc).await;
    assert!(
        wait > Duration::from_millis(7_500) && wait <= Duration::from_secs(15),
        "a cell every 15 s now: {wait:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_fleet_quota_is_refused_with_its_field_path_and_the_old_one_stays() {
    let Some((url, _server)) = redis_url().await else {
        return;
    };
    let name = unique("reload-bad");
    let (layer, handle) = replica(
        &name,
        Quota::per_minute(8),
        fleet(&url, 4, OnStoreFailure::FailClosed),
    )
    .pair();
    let err = handle.set_quota(Quota::per_minute(0)).unwrap_err();
    assert_eq!(err.field(), "quota.per_minute", "{err}");
    let err = handle
        .set_quota(Quota::per_minute(8).with_burst(2))
        .unwrap_err();
    assert_eq!(
        err.field(),
        "fleet.lease",
        "a lease of 4 needs a burst of 4: {err}"
    );
    let moved = RateLimitConfig::builder()
        .name(&name)
        .quota(Quota::per_minute(16))
        .fleet(fleet("redis://127.0.0.1:1", 4, OnStoreFailure::FailClosed))
        .build()
        .unwrap();
    let err = handle.reload(moved).unwrap_err();
    assert_eq!(err.field(), "fleet.redis_url", "{err}");
    assert!(err.to_string().contains("a restart changes it"), "{err}");
    assert_eq!(handle.quota(), Quota::per_minute(8));
    let mut svc = layer.layer(echo());
    assert_eq!(admitted(&mut svc, 10).await, 8, "still 8 a minute");
}
