//! Keyed rate limits: independent buckets, bounded key memory, eviction of the oldest keys and
//! sweeps of idle ones.

mod invariants;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use seawall_core::testing::{TestRecorder, paused_runtime};
use seawall_core::{BoxError, RejectionKind, rejected};
use seawall_rate_limit::{KeyFn, Keyed, Quota, RateLimit, RateLimitLayer, key_fn};
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt, service_fn};

type ByRequest = KeyFn<fn(&u64) -> u64, u64, u64>;

fn by_request() -> ByRequest {
    key_fn(|n: &u64| *n)
}

fn config(quota: Quota) -> seawall_rate_limit::RateLimitConfigBuilder<RateLimitLayer> {
    RateLimitLayer::builder().name("tenants").quota(quota)
}

fn keyed(quota: Quota, max_keys: usize) -> RateLimitLayer<Keyed<ByRequest>> {
    config(quota)
        .max_keys(max_keys)
        .build()
        .unwrap()
        .keyed(by_request())
}

type Echo = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, BoxError>>>;

fn echo() -> Echo {
    service_fn(|n| std::future::ready(Ok(n)))
}

/// For spawned tasks: rustc cannot yet prove `Send` for a spawned future over a service whose
/// own error is `BoxError` (tower's own layers share this), so these use `Infallible`.
type InfallibleEcho =
    tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, std::convert::Infallible>>>;

fn infallible_echo() -> InfallibleEcho {
    service_fn(|n| std::future::ready(Ok(n)))
}

/// Whether a call with key `key` was admitted.
async fn admitted<S>(svc: &mut S, key: u64) -> bool
where
    S: Service<u64, Response = u64, Error = BoxError>,
{
    match svc.ready().await.unwrap().call(key).await {
        Ok(n) => {
            assert_eq!(n, key);
            true
        }
        Err(err) => {
            let rejection = rejected(&*err).expect("a rate limit rejection");
            assert_eq!(rejection.kind(), RejectionKind::RateLimited);
            assert_eq!(rejection.name(), "tenants");
            false
        }
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn keys_have_independent_buckets() {
    let mut svc = keyed(Quota::per_second(10).with_burst(2), 100).layer(echo());
    assert!(admitted(&mut svc, 1).await);
    assert!(admitted(&mut svc, 1).await);
    assert!(!admitted(&mut svc, 1).await, "key 1 spent its burst");
    assert!(admitted(&mut svc, 2).await, "key 2 has its own");
    assert!(admitted(&mut svc, 2).await);
    assert!(!admitted(&mut svc, 2).await);
    advance(ms(100)).await;
    assert!(admitted(&mut svc, 1).await);
    assert!(!admitted(&mut svc, 1).await);
    assert!(admitted(&mut svc, 2).await);
}

#[tokio::test(start_paused = true)]
async fn each_key_gets_the_rate_plus_the_burst_over_ten_virtual_seconds() {
    let mut svc = keyed(Quota::per_second(100).with_burst(10), 100).layer(echo());
    let mut permitted = [0u32; 3];
    for tick in 0..=10_000 {
        // Key 0 calls three times a millisecond, key 1 once, key 2 once every 20 ms.
        for (key, calls) in [(0, 3), (1, 1), (2, u32::from(tick % 20 == 0))] {
            for _ in 0..calls {
                if admitted(&mut svc, key).await {
                    permitted[key as usize] += 1;
                }
            }
        }
        if tick < 10_000 {
            advance(ms(1)).await;
        }
    }
    assert!((1009..=1011).contains(&permitted[0]), "{permitted:?}");
    assert!((1009..=1011).contains(&permitted[1]), "{permitted:?}");
    assert_eq!(
        permitted[2], 501,
        "key 2 stays under its quota and is never limited"
    );
}

#[tokio::test(start_paused = true)]
async fn key_memory_stays_bounded_under_many_distinct_keys() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| keyed(Quota::per_second(100).with_burst(10), 1000));
    let mut svc = layer.layer(echo());
    let mut max_tracked = 0;
    // 100 000 distinct keys over ten virtual seconds, ten new ones every millisecond.
    for tick in 0..10_000u64 {
        for i in 0..10 {
            admitted(&mut svc, tick * 10 + i).await;
        }
        max_tracked = max_tracked.max(layer.tracked_keys());
        advance(ms(1)).await;
    }
    assert!(max_tracked <= 1000, "{max_tracked} keys tracked");
    assert!(
        max_tracked > 0 && layer.tracked_keys() > 0,
        "keys are tracked at all"
    );
    // Idle keys go at the next sweep; a new key after the sweep interval triggers one.
    advance(Duration::from_secs(2)).await;
    assert!(admitted(&mut svc, u64::MAX).await);
    assert_eq!(layer.tracked_keys(), 1);
    let calls = |result| {
        recorder.counter(
            "seawall_rate_limit_calls_total",
            &[("name", "tenants"), ("result", result)],
        )
    };
    assert_eq!(calls("permitted") + calls("rejected"), 100_001);
}

#[tokio::test(start_paused = true)]
async fn a_full_map_evicts_the_key_whose_bucket_is_oldest() {
    let recorder = TestRecorder::new();
    // One permit a minute, two at once: nothing is idle again within this test.
    let layer = recorder.install_for(|| keyed(Quota::per_minute(1).with_burst(2), 3));
    let mut svc = layer.layer(echo());
    for key in 0..3 {
        assert!(admitted(&mut svc, key).await);
        advance(Duration::from_secs(1)).await;
    }
    assert!(admitted(&mut svc, 0).await, "key 0 spends its burst");
    // Key 3 finds the map full: key 1 has the oldest bucket and makes room.
    assert!(admitted(&mut svc, 3).await);
    assert!(admitted(&mut svc, 3).await);
    assert!(
        !admitted(&mut svc, 3).await,
        "key 3 has a bucket of its own"
    );
    assert_eq!(layer.tracked_keys(), 3);
    // Key 1 comes back to a fresh bucket, in the place of key 2.
    assert!(admitted(&mut svc, 1).await);
    assert!(admitted(&mut svc, 1).await);
    assert!(!admitted(&mut svc, 1).await);
    // The busiest key was kept, spent bucket and all.
    assert!(!admitted(&mut svc, 0).await);
    assert_eq!(layer.tracked_keys(), 3);
    assert_eq!(
        recorder.counter(
            "seawall_rate_limit_keys_evicted_total",
            &[("name", "tenants")]
        ),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_key_gets_its_own_quota_while_an_attacker_rotates_keys() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| keyed(Quota::per_minute(5), 1000));
    let mut svc = layer.layer(echo());
    // An attacker sends 5,000 calls a second, each with a key it has never used, for ten
    // seconds: every bucket it leaves behind stays spent for a minute.
    let mut forged = 1u64 << 40;
    let mut attack = async |svc: &mut RateLimit<Echo, Keyed<ByRequest>>, calls: u64| {
        for _ in 0..calls {
            admitted(svc, forged).await;
            forged += 1;
        }
    };
    for _ in 0..10_000 {
        attack(&mut svc, 5).await;
        advance(ms(1)).await;
    }
    assert!(layer.tracked_keys() <= 1000);
    // A legitimate client arrives amid the attack: it gets its full quota, and only its own.
    for call in 0..5 {
        assert!(admitted(&mut svc, 7).await, "call {call} of the quota");
        attack(&mut svc, 50).await;
        advance(ms(10)).await;
    }
    assert!(!admitted(&mut svc, 7).await, "its own quota, spent");
    assert!(layer.tracked_keys() <= 1000);
    assert!(
        recorder.counter(
            "seawall_rate_limit_keys_evicted_total",
            &[("name", "tenants")]
        ) > 40_000,
        "the attacker's keys evicted each other"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sweep_forgets_idle_keys_and_makes_room() {
    let layer = keyed(Quota::per_second(10).with_burst(1), 2);
    let mut svc = layer.layer(echo());
    assert!(admitted(&mut svc, 1).await);
    assert!(admitted(&mut svc, 2).await);
    layer.sweep();
    assert_eq!(layer.tracked_keys(), 2, "both keys are still busy");
    advance(ms(200)).await;
    layer.sweep();
    assert_eq!(layer.tracked_keys(), 0, "both buckets are full again");
    assert!(admitted(&mut svc, 3).await);
    assert!(admitted(&mut svc, 4).await);
    assert_eq!(layer.tracked_keys(), 2);
}

#[tokio::test(start_paused = true)]
async fn forgetting_keys_never_lifts_a_limit() {
    let layer = keyed(Quota::per_minute(1).with_burst(1), 10);
    let mut svc = layer.layer(echo());
    assert!(admitted(&mut svc, 7).await);
    for _ in 0..59 {
        advance(Duration::from_secs(1)).await;
        layer.sweep();
        assert!(!admitted(&mut svc, 7).await);
    }
    advance(Duration::from_secs(1)).await;
    assert!(admitted(&mut svc, 7).await);
}

#[tokio::test(start_paused = true)]
async fn sweeps_run_when_new_keys_arrive_at_most_once_per_interval() {
    let layer = config(Quota::per_second(1000).with_burst(1))
        .max_keys(100)
        .sweep_interval(Duration::from_secs(1))
        .build()
        .unwrap()
        .keyed(by_request());
    let mut svc = layer.layer(echo());
    assert!(admitted(&mut svc, 0).await, "the first new key sweeps");
    for key in 1..50 {
        assert!(admitted(&mut svc, key).await);
    }
    advance(ms(500)).await;
    assert!(admitted(&mut svc, 50).await);
    assert_eq!(layer.tracked_keys(), 51, "no sweep within the interval");
    advance(ms(500)).await;
    assert!(admitted(&mut svc, 0).await);
    assert_eq!(layer.tracked_keys(), 51, "known keys never sweep");
    assert!(admitted(&mut svc, 51).await);
    assert_eq!(
        layer.tracked_keys(),
        2,
        "a new key after the interval sweeps out all but the busy key 0 and itself"
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_waiter_checks_its_own_key_again() {
    let layer = config(Quota::per_second(10).with_burst(1))
        .max_wait(ms(250))
        .build()
        .unwrap()
        .keyed(by_request());
    let mut svc = layer.layer(echo());
    assert!(admitted(&mut svc, 1).await);
    let mut waiting = task::spawn(svc.ready().await.unwrap().call(1));
    assert_pending!(waiting.poll());
    assert!(admitted(&mut svc, 2).await, "another key is not held up");
    advance(ms(100)).await;
    assert_eq!(assert_ready!(waiting.poll()).unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn hooks_set_before_keying_are_kept() {
    let rejections = Arc::new(AtomicU64::new(0));
    let counted = rejections.clone();
    let layer = config(Quota::per_minute(1).with_burst(1))
        .build()
        .unwrap()
        .on_rejected(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .keyed(by_request());
    let mut svc: RateLimit<Echo, Keyed<ByRequest>> = layer.layer(echo());
    assert!(admitted(&mut svc, 1).await);
    assert!(!admitted(&mut svc, 1).await);
    assert_eq!(rejections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_never_get_more_than_each_burst() {
    // One permit a minute: within the test only the bursts can be spent.
    let layer = keyed(Quota::per_minute(1).with_burst(100), 8);
    let permitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let svc = layer.layer(infallible_echo());
        let permitted = permitted.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..2_000u64 {
                let key = (worker + i) % 8;
                if svc.clone().oneshot(key).await.is_ok() {
                    permitted.fetch_add(1, Ordering::Relaxed);
                }
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let permitted = permitted.load(Ordering::Relaxed);
    invariants::no_more_than_the_bursts(permitted, 8, 100);
    assert_eq!(permitted, 8 * 100, "eight keys, 100 each");
    invariants::key_count_bounded_and_true(layer.tracked_keys(), 8, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_key_rotation_keeps_the_map_bounded_and_its_count_true() {
    let layer = keyed(Quota::per_second(10).with_burst(1), 300);
    let most = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let svc = layer.layer(infallible_echo());
        let layer = layer.clone();
        let most = most.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..3_000u64 {
                // Fresh keys, and a few that come back.
                let key = if i % 4 == 0 { i % 16 } else { worker << 32 | i };
                let _ = svc.clone().oneshot(key).await;
                most.fetch_max(layer.tracked_keys() as u64, Ordering::Relaxed);
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(most.load(Ordering::Relaxed) <= 300, "{most:?} keys");
    // Every bucket is full again after a second: a sweep forgets them all, and the count of
    // keys, kept apart from the map, agrees.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    layer.sweep();
    assert_eq!(layer.tracked_keys(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_waiters_with_random_cancellation_stay_within_the_quota() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| {
        RateLimitLayer::builder()
            .name("tenants")
            .quota(Quota::per_second(1000).with_burst(10))
            .max_wait(ms(20))
            .build()
            .unwrap()
    });
    let start = tokio::time::Instant::now();
    let cancelled = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let svc = layer.layer(infallible_echo());
        let cancelled = cancelled.clone();
        tasks.push(tokio::spawn(async move {
            // A cheap deterministic spread of cancellations.
            let mut seed = worker.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for i in 0..250u64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let call = svc.clone().oneshot(i);
                if seed % 4 == 0 {
                    let budget = Duration::from_micros(seed % 5_000);
                    if tokio::time::timeout(budget, call).await.is_err() {
                        cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    let _ = call.await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed();
    let calls = |result| {
        recorder.counter(
            "seawall_rate_limit_calls_total",
            &[("name", "tenants"), ("result", result)],
        )
    };
    let admitted = calls("permitted") + calls("waited");
    let total = admitted + calls("rejected") + cancelled.load(Ordering::Relaxed);
    assert_eq!(
        total,
        8 * 250,
        "every call is counted once, cancelled ones not at all"
    );
    let allowed = 10 + (elapsed.as_secs_f64() * 1000.0).ceil() as u64 + 1;
    assert!(
        admitted <= allowed,
        "{admitted} admitted, at most {allowed}"
    );
}

/// A reference model of a keyed limit: GCRA per key, a cap on keys where a new key evicts the
/// key whose arrival time is earliest (with so few keys, every key is in the sample), and
/// sweeps of idle keys when new keys arrive, at most once per interval. Times in nanoseconds
/// since the layer was built.
struct KeyedModel {
    interval: u64,
    tau: u64,
    max_keys: usize,
    sweep_every: u64,
    keys: std::collections::HashMap<u64, u64>,
    next_sweep: u64,
}

impl KeyedModel {
    fn new(quota: Quota, max_keys: usize, sweep_every: Duration) -> Self {
        let interval = u64::try_from(quota.replenish_interval().as_nanos()).unwrap();
        Self {
            interval,
            tau: interval * u64::from(quota.burst() - 1),
            max_keys,
            sweep_every: u64::try_from(sweep_every.as_nanos()).unwrap(),
            keys: Default::default(),
            next_sweep: 0,
        }
    }

    /// GCRA on one bucket's arrival time; `None` is a fresh bucket.
    fn gcra(interval: u64, tau: u64, tat: &mut Option<u64>, now: u64) -> bool {
        let at = tat.unwrap_or(now);
        if now + tau < at {
            return false;
        }
        *tat = Some(at.max(now) + interval);
        true
    }

    fn claim_sweep(&mut self, now: u64) -> bool {
        if now >= self.next_sweep {
            self.next_sweep = now + self.sweep_every;
            true
        } else {
            false
        }
    }

    fn sweep(&mut self, now: u64) {
        let drop_below = now.saturating_sub(self.interval);
        self.keys.retain(|_, tat| *tat > drop_below);
    }

    /// Whether the call is admitted; `None` when the model cannot tell which of several keys
    /// with the same arrival time is evicted.
    fn call(&mut self, key: u64, now: u64) -> Option<bool> {
        let (interval, tau) = (self.interval, self.tau);
        if let Some(tat) = self.keys.get_mut(&key) {
            let mut state = Some(*tat);
            let admitted = Self::gcra(interval, tau, &mut state, now);
            *tat = state.unwrap();
            return Some(admitted);
        }
        let sweep_due = self.claim_sweep(now);
        if self.keys.len() >= self.max_keys {
            let oldest = *self.keys.values().min().unwrap();
            let mut at_oldest = self.keys.iter().filter(|(_, tat)| **tat == oldest);
            let (&evicted, _) = at_oldest.next().unwrap();
            if at_oldest.next().is_some() {
                return None;
            }
            self.keys.remove(&evicted);
        }
        let mut state = None;
        let admitted = Self::gcra(interval, tau, &mut state, now);
        self.keys.insert(key, state.unwrap());
        if sweep_due {
            self.sweep(now);
        }
        Some(admitted)
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn keyed_limits_match_a_reference_model(
        rate in 1u32..200,
        burst in 1u32..5,
        max_keys in 1usize..6,
        sweep_ms in 1u64..500,
        steps in proptest::collection::vec((1u64..200_000_000, 0u64..8), 1..200),
    ) {
        let rt = paused_runtime();
        rt.block_on(async {
            let quota = Quota::per_second(rate).with_burst(burst);
            let layer = config(quota)
                .max_keys(max_keys)
                .sweep_interval(ms(sweep_ms))
                .build()
                .unwrap()
                .keyed(by_request());
            let mut svc = layer.layer(echo());
            let mut model = KeyedModel::new(quota, max_keys, ms(sweep_ms));
            let mut now = 0;
            for (gap, key) in steps {
                advance(Duration::from_nanos(gap)).await;
                now += gap;
                let Some(expected) = model.call(key, now) else {
                    break;
                };
                proptest::prop_assert_eq!(admitted(&mut svc, key).await, expected);
                proptest::prop_assert_eq!(layer.tracked_keys(), model.keys.len());
            }
            Ok(())
        })?;
    }
}
