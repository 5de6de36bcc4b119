//! Adaptive limits against a simulated downstream on the paused clock.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall_bulkhead::{
    AdaptiveLimit, AimdConfig, BulkheadHandle, BulkheadLayer, Gradient2Config, VegasConfig,
};
use seawall_core::classify::{ClassifyFn, Outcome};
use seawall_core::testing::TestRecorder;
use seawall_core::{BoxError, Rejected, RejectionKind};
use tokio::time::{Instant, advance, sleep};
use tower::{Layer, ServiceExt, service_fn};

const BASE: Duration = Duration::from_millis(10);

/// A downstream that answers in 10 ms up to `capacity` concurrent calls, and proportionally
/// slower past it (a server sharing its CPUs among more calls than it has).
#[derive(Clone)]
struct Downstream {
    capacity: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
}

impl Downstream {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: Arc::new(AtomicUsize::new(capacity)),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn latency(&self) -> Duration {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let capacity = self.capacity.load(Ordering::SeqCst);
        BASE.mul_f64((n as f64 / capacity as f64).max(1.0))
    }
}

/// Runs `clients` closed-loop clients (each retrying 5 ms after a rejection) through `layer`
/// for `secs` virtual seconds, and returns the limit sampled every 100 ms.
async fn drive(
    handle: &BulkheadHandle,
    layer: BulkheadLayer,
    downstream: &Downstream,
    clients: usize,
    secs: u64,
) -> Vec<usize> {
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let ds = downstream.clone();
        let svc = layer.layer(service_fn(move |()| {
            let ds = ds.clone();
            let latency = ds.latency();
            async move {
                sleep(latency).await;
                ds.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(())
            }
        }));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                if svc.clone().oneshot(()).await.is_err() {
                    sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    let mut limits = Vec::new();
    while Instant::now() < stop {
        sleep(Duration::from_millis(100)).await;
        limits.push(handle.limit());
    }
    for task in tasks {
        task.await.unwrap();
    }
    limits
}

/// Asserts that every limit sampled over the last five seconds is within 20 % of `target`.
fn assert_settled(limits: &[usize], target: usize, phase: &str) {
    let last = &limits[limits.len() - 50..];
    let (low, high) = (target * 8 / 10, target * 12 / 10);
    assert!(
        last.iter().all(|l| (low..=high).contains(l)),
        "{phase}: the limit should settle in [{low}, {high}], was {last:?}"
    );
}

/// Capacity 40, then 80, then 40 again, 15 virtual seconds each, with 100 closed-loop
/// clients (more than either capacity); the limit settles near the capacity each time.
async fn converges(limit: impl Into<AdaptiveLimit>) {
    let (layer, handle) = BulkheadLayer::builder()
        .adaptive(limit)
        .sample_window(Duration::from_millis(100))
        .build()
        .unwrap()
        .pair();
    let downstream = Downstream::new(40);
    let limits = drive(&handle, layer.clone(), &downstream, 100, 15).await;
    assert_settled(&limits, 40, "capacity 40");
    downstream.capacity.store(80, Ordering::SeqCst);
    let limits = drive(&handle, layer.clone(), &downstream, 100, 15).await;
    assert_settled(&limits, 80, "capacity raised to 80");
    downstream.capacity.store(40, Ordering::SeqCst);
    let limits = drive(&handle, layer, &downstream, 100, 15).await;
    assert_settled(&limits, 40, "capacity back to 40");
}

#[tokio::test(start_paused = true)]
async fn vegas_settles_near_the_capacity_and_follows_it() {
    converges(VegasConfig::new().initial(10).max(500)).await;
}

#[tokio::test(start_paused = true)]
async fn gradient2_settles_near_the_capacity_and_follows_it() {
    converges(Gradient2Config::new().initial(10).min(5).max(500)).await;
}

#[tokio::test(start_paused = true)]
async fn aimd_settles_near_the_capacity_and_follows_it() {
    // A client's view: a call 10 % slower than the downstream's base latency counts as a drop.
    converges(
        AimdConfig::new()
            .initial(10)
            .max(500)
            .timeout(Duration::from_millis(11)),
    )
    .await;
}

// ===== what the adaptive limit learns from =====

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn aimd_layer(initial: usize) -> (BulkheadLayer, BulkheadHandle) {
    BulkheadLayer::builder()
        .name("dep")
        .adaptive(AimdConfig::new().initial(initial).min(2).max(100))
        .sample_window(ms(100))
        .build()
        .unwrap()
        .pair()
}

/// Makes one call to open the first window, twenty in it, then one after it closes.
async fn one_window<S, T>(svc: &S)
where
    S: tower::Service<(), Response = T, Error = BoxError> + Clone,
{
    for _ in 0..21 {
        let _ = svc.clone().oneshot(()).await;
    }
    advance(ms(101)).await;
    let _ = svc.clone().oneshot(()).await;
}

fn downstream_failing_with(
    err: fn() -> BoxError,
) -> impl tower::Service<(), Response = (), Error = BoxError, Future = impl Future + Send> + Clone {
    service_fn(move |()| async move {
        sleep(ms(1)).await;
        Err::<(), _>(err())
    })
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_a_drop() {
    let (layer, handle) = aimd_layer(20);
    let svc = layer.layer(downstream_failing_with(|| "boom".into()));
    one_window(&svc).await;
    assert_eq!(handle.limit(), 18);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_from_further_in_is_a_drop_whatever_the_classifier_says() {
    let (layer, handle) = aimd_layer(20);
    let layer = layer.classify(ClassifyFn::new(|_: Result<&(), &BoxError>| {
        Outcome::Ignored
    }));
    let svc = layer.layer(downstream_failing_with(|| {
        Rejected::new(RejectionKind::TimedOut, "inner").into()
    }));
    one_window(&svc).await;
    assert_eq!(handle.limit(), 18);
}

#[tokio::test(start_paused = true)]
async fn an_overload_refusal_is_a_drop() {
    use seawall_core::classify::HttpStatus;

    for status in [429, 503] {
        let (layer, handle) = aimd_layer(20);
        let svc = layer
            .classify(HttpStatus::default())
            .layer(service_fn(move |()| async move {
                sleep(ms(1)).await;
                Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
            }));
        one_window(&svc).await;
        assert_eq!(handle.limit(), 18, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn ignored_results_teach_nothing() {
    let (layer, handle) = aimd_layer(20);
    let layer = layer.classify(ClassifyFn::new(|_: Result<&(), &BoxError>| {
        Outcome::Ignored
    }));
    let svc = layer.layer(downstream_failing_with(|| "a client error".into()));
    one_window(&svc).await;
    one_window(&svc).await;
    assert_eq!(handle.limit(), 20);
}

#[tokio::test(start_paused = true)]
async fn successes_while_busy_raise_the_limit() {
    let (layer, handle) = aimd_layer(2);
    let svc = layer.layer(service_fn(|()| async {
        sleep(ms(1)).await;
        Ok::<_, BoxError>(())
    }));
    // One call at a time fills half of a limit of 2.
    one_window(&svc).await;
    assert_eq!(handle.limit(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_gauge_and_the_hook_follow_the_limit() {
    let recorder = TestRecorder::new();
    let (layer, handle) = recorder.install_for(|| aimd_layer(20));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let layer = layer.on_limit_change(move |event| {
        assert_eq!(event.name, "dep");
        log.lock().unwrap().push((event.from, event.to));
    });
    let gauge = || recorder.gauge("seawall_bulkhead_limit", &[("name", "dep")]);
    assert_eq!(gauge(), Some(20.0));
    let svc = layer.layer(downstream_failing_with(|| "boom".into()));
    one_window(&svc).await;
    assert_eq!(gauge(), Some(18.0));
    assert_eq!(*heard.lock().unwrap(), [(20, 18)]);
    assert_eq!(handle.limit(), 18);
}

#[tokio::test(start_paused = true)]
async fn the_handle_sets_an_adaptive_limit_within_its_bounds() {
    let (layer, handle) = aimd_layer(20);
    assert!(handle.is_adaptive());
    assert_eq!(handle.set_limit(1).unwrap_err().field(), "limit");
    assert_eq!(handle.set_limit(101).unwrap_err().field(), "limit");
    handle.set_limit(50).unwrap();
    assert_eq!(handle.limit(), 50);
    // The algorithm goes on from the value set.
    let svc = layer.layer(downstream_failing_with(|| "boom".into()));
    one_window(&svc).await;
    assert_eq!(handle.limit(), 45);
}

#[tokio::test(start_paused = true)]
async fn a_limit_set_by_the_handle_fires_the_hook() {
    for (adaptive, from) in [(true, 20), (false, 4)] {
        let (layer, handle) = if adaptive {
            aimd_layer(20)
        } else {
            BulkheadLayer::builder()
                .name("dep")
                .max_concurrent(4)
                .build()
                .unwrap()
                .pair()
        };
        let heard = Arc::new(Mutex::new(Vec::new()));
        let log = heard.clone();
        // Set after the handle was made: the handle still hears of it.
        let _layer = layer.on_limit_change(move |event| {
            assert_eq!(event.name, "dep");
            log.lock().unwrap().push((event.from, event.to));
        });
        handle.set_limit(50).unwrap();
        handle.set_limit(50).unwrap();
        handle.set_limit(30).unwrap();
        assert_eq!(
            *heard.lock().unwrap(),
            [(from, 50), (50, 30)],
            "one event per change, adaptive: {adaptive}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn one_limit_hook_reaches_every_clone_service_and_handle_and_a_new_one_replaces_it() {
    let (layer, handle) = aimd_layer(20);
    // Made before any hook is set.
    let svc = layer.layer(downstream_failing_with(|| "boom".into()));
    let later = handle.clone();
    let heard = |log: &Arc<Mutex<Vec<usize>>>| {
        let log = log.clone();
        move |event: seawall_bulkhead::LimitChangedEvent<'_>| log.lock().unwrap().push(event.to)
    };
    let first = Arc::new(Mutex::new(Vec::new()));
    let _ = layer.clone().on_limit_change(heard(&first));
    one_window(&svc).await;
    later.set_limit(50).unwrap();
    // Set on another clone, it replaces the first for all of them.
    let second = Arc::new(Mutex::new(Vec::new()));
    let _ = layer.clone().on_limit_change(heard(&second));
    handle.set_limit(40).unwrap();
    one_window(&svc).await;
    assert_eq!(*first.lock().unwrap(), [18, 50]);
    assert_eq!(*second.lock().unwrap(), [40, 36]);
}

#[tokio::test(start_paused = true)]
async fn a_hook_may_set_the_limit_itself() {
    // The hook runs outside the algorithm's lock: a hook that pins the limit does not deadlock.
    let (layer, handle) = aimd_layer(20);
    let pinned = handle.clone();
    let layer = layer.on_limit_change(move |event| {
        if event.to < 19 {
            pinned.set_limit(19).unwrap();
        }
    });
    let svc = layer.layer(downstream_failing_with(|| "boom".into()));
    one_window(&svc).await;
    assert_eq!(handle.limit(), 19);
}

// ===== the Little's-law floor =====

/// Sends `rate` calls a second for `secs` virtual seconds, open loop, each taking
/// `latency(elapsed)` behind `workers` workers (a FIFO queue past them); returns the share of
/// calls answered and the limit at the end.
async fn open_loop(
    limit: impl Into<AdaptiveLimit>,
    rate: u64,
    secs: u64,
    workers: usize,
    latency: fn(Duration) -> Duration,
) -> (f64, usize) {
    let (layer, handle) = BulkheadLayer::builder()
        .adaptive(limit)
        .build()
        .unwrap()
        .pair();
    let start = Instant::now();
    let workers = Arc::new(tokio::sync::Semaphore::new(workers));
    let svc = layer.layer(service_fn(move |()| {
        let workers = workers.clone();
        async move {
            let _worker = workers.acquire_owned().await.unwrap();
            sleep(latency(start.elapsed())).await;
            Ok::<_, std::convert::Infallible>(())
        }
    }));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    let gap = Duration::from_secs(1) / rate as u32;
    for i in 0..rate * secs {
        tokio::time::sleep_until(start + gap * i as u32).await;
        let svc = svc.clone();
        let answered = answered.clone();
        calls.push(tokio::spawn(async move {
            if svc.oneshot(()).await.is_ok() {
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let limit = handle.limit();
    for call in calls {
        call.await.unwrap();
    }
    let sent = (rate * secs) as f64;
    (answered.load(Ordering::SeqCst) as f64 / sent, limit)
}

/// 20 ms for 5 s, then up to 70 ms over 10 s, and 70 ms from there.
fn ramp(elapsed: Duration) -> Duration {
    let over = elapsed.saturating_sub(Duration::from_secs(5)).as_secs_f64() / 10.0;
    ms(20) + ms(50).mul_f64(over.min(1.0))
}

/// A downstream that got slower without being overloaded (1000 calls a second, 70 ms at most,
/// 200 workers): a latency-based limit alone cuts as the latency rises and turns away calls
/// the downstream would serve; the floor keeps what Little's law needs (70 calls).
async fn keeps_up_with_a_slower_downstream(limit: impl Into<AdaptiveLimit>) {
    let (success, limit) = open_loop(limit, 1000, 20, 200, ramp).await;
    assert!(success >= 0.99, "success {success}, limit {limit}");
    assert!(limit >= 70, "limit {limit}");
}

#[tokio::test(start_paused = true)]
async fn vegas_keeps_up_with_a_slower_downstream() {
    keeps_up_with_a_slower_downstream(VegasConfig::new().initial(40).max(1000)).await;
}

#[tokio::test(start_paused = true)]
async fn gradient2_keeps_up_with_a_slower_downstream() {
    keeps_up_with_a_slower_downstream(Gradient2Config::new().initial(40).max(1000)).await;
}

#[tokio::test(start_paused = true)]
async fn aimd_keeps_up_with_a_slower_downstream() {
    keeps_up_with_a_slower_downstream(AimdConfig::new().initial(40).max(1000)).await;
}

/// 1500 calls a second against 10 workers of 10 ms (1000 a second): calls pile up in the
/// downstream's queue, and the limit falls instead of following the latency up. (Gradient2
/// with its 600-window long average and 1 s windows holds here for longer, floor or not.)
///
/// The queue forms within the first window (500 calls a second more than served fill the 100
/// slots in 0.2 s), so the lowest window mean already holds it: 87.5 ms (standard error
/// 0.78 ms over 1001 calls), then 100 ms in every window. That rise, 12.5 ms, is 16 standard
/// errors: no noise, and Vegas reads it in full, ceil(100 × (1 − 87.5 / 100)) = 13 queued
/// calls against `6f = 12`, and cuts. Lowering every rise by the noise allowance (3 × 0.78 ms)
/// read 11 and held the limit at 100 with 90 calls queued.
#[tokio::test(start_paused = true)]
async fn a_queueing_downstream_still_lowers_the_limit() {
    for limit in [
        AdaptiveLimit::from(VegasConfig::new().initial(100).max(1000)),
        AdaptiveLimit::from(AimdConfig::new().initial(100).max(1000).timeout(ms(50))),
    ] {
        let (_, end) = open_loop(limit.clone(), 1500, 20, 10, |_| ms(10)).await;
        assert!(end < 100, "{limit:?}: {end}");
    }
}

/// 5000 calls a second at a flat 20 ms with workers to spare: Little's law needs 100 calls in
/// flight, and a limit starting at 20 turns most calls away while the latency stays flat. Slow
/// start doubles it each window (20, 40, 80, then the floor); the additive rules alone (6 a
/// window for Vegas, 1 for AIMD) would still be under 70 after 8 s.
#[tokio::test(start_paused = true)]
async fn a_limit_that_turns_calls_away_at_flat_latency_grows_within_a_few_windows() {
    for limit in [
        AdaptiveLimit::from(VegasConfig::new().initial(20).max(1000)),
        AdaptiveLimit::from(AimdConfig::new().initial(20).max(1000)),
    ] {
        let (_, end) = open_loop(limit.clone(), 5000, 8, 1000, |_| ms(20)).await;
        assert!(end >= 100, "{limit:?}: {end}");
    }
}

/// 1000 calls a second, one in ten hanging until the caller's 200 ms timeout cancels it: 29
/// calls in flight on average, 20 of them cancelled ones that never report a latency. The
/// floor counts the time they held their slots, so no call is turned away once the first
/// windows have passed.
#[tokio::test(start_paused = true)]
async fn calls_cancelled_by_a_timeout_further_out_count_in_the_floor() {
    let (layer, handle) = BulkheadLayer::builder()
        .adaptive(VegasConfig::new().initial(20).max(1000))
        .build()
        .unwrap()
        .pair();
    let svc = layer.layer(service_fn(|hang: bool| async move {
        sleep(if hang {
            Duration::from_secs(3600)
        } else {
            ms(10)
        })
        .await;
        Ok::<_, std::convert::Infallible>(())
    }));
    let start = Instant::now();
    let turned_away = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for i in 0..10_000u32 {
        tokio::time::sleep_until(start + ms(1) * i).await;
        let svc = svc.clone();
        let turned_away = turned_away.clone();
        calls.push(tokio::spawn(async move {
            let call = svc.oneshot(i % 10 == 0);
            if let Ok(Err(_)) = tokio::time::timeout(ms(200), call).await
                && i >= 3000
            {
                turned_away.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    let limit = handle.limit();
    assert_eq!(turned_away.load(Ordering::SeqCst), 0, "limit {limit}");
}

/// 10 000 calls a second of 10 ms; from 3 s one call in ten answers 100 ms late and none
/// fails: 200 calls in flight on average against the 162 the healthy windows asked for. The
/// mean latency doubles, which Vegas reads as 81 calls queued, but the fastest answers stay
/// at 10 ms: a tail, no queue. From the tail's second window on, no call is turned away.
#[tokio::test(start_paused = true)]
async fn a_tenth_of_calls_answering_late_at_ten_thousand_a_second_is_no_queue() {
    let (layer, handle) = BulkheadLayer::builder()
        .adaptive(VegasConfig::new().initial(20).max(10_000))
        .sample_window(Duration::from_secs(1))
        .build()
        .unwrap()
        .pair();
    let svc = layer.layer(service_fn(|late: bool| async move {
        sleep(if late { ms(110) } else { ms(10) }).await;
        Ok::<_, std::convert::Infallible>(())
    }));
    let start = Instant::now();
    let turned_away = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for i in 0..80_000u32 {
        tokio::time::sleep_until(start + Duration::from_micros(100) * i).await;
        let svc = svc.clone();
        let turned_away = turned_away.clone();
        calls.push(tokio::spawn(async move {
            if svc.oneshot(i >= 30_000 && i % 10 == 0).await.is_err() && i >= 50_000 {
                turned_away.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let limit = handle.limit();
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(turned_away.load(Ordering::SeqCst), 0, "limit {limit}");
    assert!(limit >= 200, "Little's law asks 200 on average: {limit}");
}

/// Sends `per_ms` calls a millisecond for `n` milliseconds through `svc` without waiting for
/// them; returns how many the bulkhead rejected.
async fn send_open_loop<S>(svc: S, per_ms: u64, n: u64) -> usize
where
    S: tower::Service<u64, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let rejected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..n * per_ms {
        let (svc, rejected) = (svc.clone(), rejected.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(err) = svc.oneshot(i).await
                && seawall_core::rejected(&*err).is_some()
            {
                rejected.fetch_add(1, Ordering::SeqCst);
            }
        }));
        if (i + 1).is_multiple_of(per_ms) {
            sleep(ms(1)).await;
        }
    }
    sleep(ms(100)).await;
    for task in tasks {
        task.abort();
    }
    rejected.load(Ordering::SeqCst)
}

fn vegas_layer() -> (BulkheadLayer, BulkheadHandle) {
    BulkheadLayer::builder()
        .name("dep")
        .adaptive(VegasConfig::new().initial(20).max(1000))
        .sample_window(ms(100))
        .build()
        .unwrap()
        .pair()
}

/// `per_ms` calls a millisecond at 10 ms for a second through a Vegas limit; from call `from`
/// on, one in `every` hangs, holding its slot. Returns the calls turned away and the calls in
/// flight at the end.
async fn with_calls_hanging(per_ms: u64, from: u64, every: u64) -> (usize, usize) {
    let (layer, handle) = vegas_layer();
    let svc = layer.layer(service_fn(move |i: u64| async move {
        let hangs = i >= from && i.is_multiple_of(every);
        sleep(if hangs {
            Duration::from_secs(3600)
        } else {
            ms(10)
        })
        .await;
        Ok::<_, BoxError>(())
    }));
    let rejected = send_open_loop(svc, per_ms, 1000).await;
    (rejected, handle.in_flight())
}

#[tokio::test(start_paused = true)]
async fn calls_hanging_in_their_slots_turn_no_other_call_away() {
    // A call a millisecond; after 300 ms one in 20 hangs: 35 by the end, far past the 23
    // that 10 calls in flight asked for.
    let (rejected, in_flight) = with_calls_hanging(1, 300, 20).await;
    assert_eq!(rejected, 0);
    assert!(in_flight >= 30, "{in_flight}");
}

#[tokio::test(start_paused = true)]
async fn a_downstream_slowing_every_call_still_turns_calls_away() {
    let (layer, handle) = vegas_layer();
    // Twice what 10 calls at once at 10 ms serve: each call past 10 slows every call.
    let downstream = Downstream::new(10);
    let svc = layer.layer(service_fn(move |_: u64| {
        let ds = downstream.clone();
        let latency = ds.latency();
        async move {
            sleep(latency).await;
            ds.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(())
        }
    }));
    assert!(send_open_loop(svc, 2, 1000).await > 0);
    assert!(handle.limit() < 40, "{}", handle.limit());
}

/// Two calls a millisecond at 10 ms; after 300 ms one in ten hangs, holding its slot: 140 by
/// the end against the 20 that 20 calls in flight asked for. The calls the others finish
/// beside could only let one in per call that finished (0.2 calls a millisecond short); calls
/// in flight past four times the slowest recent success, while the successes show no queue,
/// are held, not queued, and count against the maximum only.
#[tokio::test(start_paused = true)]
async fn a_tenth_of_calls_hanging_turns_no_other_call_away() {
    let (rejected, in_flight) = with_calls_hanging(2, 600, 10).await;
    assert_eq!(rejected, 0);
    assert!(in_flight >= 130, "{in_flight}");
}

/// Sends `req` through `svc` on a task of its own, counting it in `rejected` if turned away.
fn spawn_call<S>(svc: &S, req: u64, rejected: &Arc<AtomicUsize>) -> tokio::task::JoinHandle<()>
where
    S: tower::Service<u64, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let (svc, rejected) = (svc.clone(), rejected.clone());
    tokio::spawn(async move {
        if let Err(err) = svc.oneshot(req).await
            && seawall_core::rejected(&*err).is_some()
        {
            rejected.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// A call a millisecond at 10 ms (a floor of 22 for the 10 in flight); at 300 ms eight calls
/// hang, and 30 ms later ten calls come at once: 28 in flight. The hung calls are three times
/// the slowest success old, past the held age (twice it), so they count against the maximum
/// only and none of the ten is turned away.
#[tokio::test(start_paused = true)]
async fn calls_hung_three_round_trips_are_held() {
    const HANG: u64 = 1;
    let (layer, _) = vegas_layer();
    let svc = layer.layer(service_fn(|req: u64| async move {
        sleep(if req == HANG {
            Duration::from_secs(3600)
        } else {
            ms(10)
        })
        .await;
        Ok::<_, BoxError>(())
    }));
    let rejected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..340 {
        tasks.push(spawn_call(&svc, 0, &rejected));
        let extra = match t {
            300 => (HANG, 8),
            330 => (0, 10),
            _ => (0, 0),
        };
        for _ in 0..extra.1 {
            tasks.push(spawn_call(&svc, extra.0, &rejected));
        }
        sleep(ms(1)).await;
    }
    sleep(ms(20)).await;
    tasks.into_iter().for_each(|t| t.abort());
    assert_eq!(rejected.load(Ordering::SeqCst), 0);
}

/// Three calls a millisecond at 10 ms from the start: 30 in flight against the initial guess
/// of 20, before any window has measured anything. No queue shows, so none is turned away.
#[tokio::test(start_paused = true)]
async fn a_guessed_limit_turns_no_call_away_before_its_first_window() {
    let (layer, handle) = vegas_layer();
    let svc = layer.layer(service_fn(|_: u64| async move {
        sleep(ms(10)).await;
        Ok::<_, BoxError>(())
    }));
    assert_eq!(send_open_loop(svc, 3, 90).await, 0);
    assert!(handle.limit() >= 20, "{}", handle.limit());
}

/// The same hung calls beside a real queue (10 workers, twice the calls they serve): every
/// success slows, the slowest too, so the calls a queue holds are never old enough to be
/// excused, and the calls in the downstream at once stay near its knee.
#[tokio::test(start_paused = true)]
async fn hung_calls_excuse_no_queue() {
    let (layer, _) = vegas_layer();
    let downstream = Downstream::new(10);
    let peak = Arc::new(AtomicUsize::new(0));
    let seen = peak.clone();
    let svc = layer.layer(service_fn(move |i: u64| {
        let ds = downstream.clone();
        let latency = ds.latency();
        if i >= 600 {
            seen.fetch_max(ds.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        async move {
            if i >= 600 && i.is_multiple_of(10) {
                ds.in_flight.fetch_sub(1, Ordering::SeqCst);
                sleep(Duration::from_secs(3600)).await;
            }
            sleep(latency).await;
            ds.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, BoxError>(())
        }
    }));
    assert!(send_open_loop(svc, 2, 1000).await > 0);
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak < 40, "{peak} calls at once in the downstream");
}

/// A call a millisecond at 10 ms; from call 500 on every call takes 200 ms. From about four
/// times the fastest success after the step until the first slow answer (call 500, at 700 ms)
/// no call finishes: nothing answered shows no queue, so the calls past the held age count
/// against the maximum, as against a fixed limit, and none sent before it is turned away.
#[tokio::test(start_paused = true)]
async fn a_latency_step_turns_no_call_away_before_the_first_slow_answer() {
    const STEP: u64 = 500;
    let (layer, _) = vegas_layer();
    let svc = layer.layer(service_fn(|i: u64| async move {
        sleep(ms(if i >= STEP { 200 } else { 10 })).await;
        Ok::<_, BoxError>(())
    }));
    let rejected = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..STEP + 200 {
        tasks.push(spawn_call(&svc, i, &rejected));
        sleep(ms(1)).await;
    }
    sleep(ms(250)).await;
    tasks.into_iter().for_each(|t| t.abort());
    assert_eq!(rejected.load(Ordering::SeqCst), 0);
}

// ===== a few clients sharing one downstream =====

/// Eleven workers of 8–12 ms (1100 calls a second) behind a FIFO queue, serving a fifth
/// slower while more than 22 calls wait, as the lab's `overload` downstream: a queue past
/// twice the workers costs capacity. Returns the service and the calls waiting now.
fn degrading_downstream() -> (
    impl tower::Service<u64, Response = (), Error = BoxError, Future: Send> + Clone + Send + 'static,
    Arc<AtomicUsize>,
) {
    let workers = Arc::new(tokio::sync::Semaphore::new(11));
    let waiting = Arc::new(AtomicUsize::new(0));
    let queue = waiting.clone();
    let svc = service_fn(move |i: u64| {
        let (workers, waiting) = (workers.clone(), waiting.clone());
        async move {
            waiting.fetch_add(1, Ordering::SeqCst);
            let _worker = workers.acquire_owned().await.unwrap();
            let degraded = waiting.fetch_sub(1, Ordering::SeqCst) > 22;
            let latency = ms(8) + Duration::from_micros(i * 7919 % 4001);
            sleep(if degraded {
                latency.mul_f64(1.25)
            } else {
                latency
            })
            .await;
            Ok::<_, BoxError>(())
        }
    });
    (svc, queue)
}

/// Three clients, each with its own default Vegas limit, share that downstream: 1000 calls a
/// second for 5 s, then 1500 for 20 s, then 1000 again for 5 s. A cut of one client's limit
/// does not shorten the others' part of the queue, and its check read that (and the backlog
/// of the overload's onset) as a downstream that got slower: the limits were lifted, the
/// latency without a queue moved up to the queue's, and ~20 calls waited on average, the
/// downstream degraded to 857 calls a second. Now the queue stays under the workers' count
/// and the downstream serves near its capacity.
#[tokio::test(start_paused = true)]
async fn three_limits_sharing_one_queue_hold_it_short() {
    let (downstream, waiting) = degrading_downstream();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            BulkheadLayer::builder()
                .adaptive(VegasConfig::new().max(1000))
                .build()
                .unwrap()
                .layer(downstream.clone())
        })
        .collect();
    let start = Instant::now();
    let at = |secs: f64| start + Duration::from_secs_f64(secs);
    let served = Arc::new(AtomicUsize::new(0));
    let mut queue = Vec::new();
    let mut sent = 0u64;
    let mut next = Duration::ZERO;
    let mut tasks = Vec::new();
    while next < Duration::from_secs(30) {
        tokio::time::sleep_until(start + next).await;
        let secs = next.as_secs_f64();
        let rate = if (5.0..25.0).contains(&secs) {
            1500
        } else {
            1000
        };
        let svc = clients[(sent % 3) as usize].clone();
        let served = served.clone();
        let late = (10.0..25.0).contains(&secs);
        tasks.push(tokio::spawn(async move {
            if svc.oneshot(sent).await.is_ok() && late {
                served.fetch_add(1, Ordering::SeqCst);
            }
        }));
        if sent.is_multiple_of(10) && (secs >= 10.0) {
            queue.push(waiting.load(Ordering::SeqCst));
        }
        sent += 1;
        next += Duration::from_secs(1) / rate;
    }
    tokio::time::sleep_until(at(31.0)).await;
    for task in tasks {
        task.await.unwrap();
    }
    let mean = queue.iter().sum::<usize>() as f64 / queue.len() as f64;
    let rate = served.load(Ordering::SeqCst) as f64 / 15.0;
    assert!(mean <= 11.0, "{mean} calls waiting on average");
    assert!(rate >= 950.0, "{rate} calls served a second under overload");
}
