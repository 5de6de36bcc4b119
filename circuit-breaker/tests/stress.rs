//! Many tasks on many threads against one breaker: the probe limit holds and every call is
//! accounted for exactly.

mod invariants;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use seawall_circuit_breaker::{CircuitBreakerLayer, CircuitState};
use seawall_core::key::key_fn;
use seawall_core::testing::TestRecorder;
use seawall_core::{BoxError, RejectionKind, rejected};
use tower::{Layer, Service, ServiceExt, service_fn};

const TASKS: u64 = 32;
const CALLS_PER_TASK: u64 = 300;
const PROBES: u32 = 4;

#[derive(Default)]
struct Downstream {
    calls: AtomicU64,
    failures: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// Counts a call out when it ends or is dropped.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Downstream {
    async fn call(&self, fail: bool) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _leaving = InFlight(&self.in_flight);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        if fail {
            self.failures.fetch_add(1, Ordering::SeqCst);
            Err("down".into())
        } else {
            Ok(())
        }
    }
}

async fn hammer<S>(svc: S, fail: impl Fn(u64, u64) -> bool + Send + Sync + 'static) -> u64
where
    S: Service<bool, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let fail = Arc::new(fail);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let svc = svc.clone();
            let fail = fail.clone();
            tokio::spawn(async move {
                let mut rejected_here = 0;
                for i in 0..CALLS_PER_TASK {
                    if let Err(err) = svc.clone().oneshot(fail(task, i)).await
                        && rejected(&*err).is_some_and(|r| r.kind() == RejectionKind::CircuitOpen)
                    {
                        rejected_here += 1;
                    }
                }
                rejected_here
            })
        })
        .collect();
    let mut rejections = 0;
    for task in tasks {
        rejections += task.await.unwrap();
    }
    rejections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hammered_half_open_breaker_never_lets_more_than_n_probes_through() {
    let recorder = TestRecorder::new();
    // Every probe fails and the open duration is a nanosecond: the breaker spins between open
    // and half-open, and every call it admits is a probe.
    let (layer, handle) = recorder.install_for(|| {
        CircuitBreakerLayer::builder()
            .name("stress")
            .consecutive_failures(1)
            .open_duration(Duration::from_nanos(1))
            .half_open_probes(PROBES)
            .build()
            .unwrap()
            .pair()
    });
    let downstream = Arc::new(Downstream::default());
    let d = downstream.clone();
    let svc = layer.layer(service_fn(move |fail: bool| {
        let d = d.clone();
        async move { d.call(fail).await }
    }));
    let _ = svc.clone().oneshot(true).await;
    assert_ne!(handle.state(), CircuitState::Closed);

    let rejections = hammer(svc, |_, _| true).await;

    invariants::probes_within_limit(downstream.max_in_flight.load(Ordering::SeqCst), PROBES);
    let admitted = downstream.calls.load(Ordering::SeqCst);
    invariants::every_call_accounted(TASKS * CALLS_PER_TASK + 1, admitted, rejections);
    let calls = |outcome| {
        recorder.counter(
            "seawall_circuit_breaker_calls_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(calls("failure"), admitted);
    assert_eq!(calls("rejected"), rejections);
    assert_eq!(calls("success"), 0);
    assert!(admitted > 1, "probes got through between openings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_outcomes_add_up_exactly_in_the_window() {
    let (layer, handle) = CircuitBreakerLayer::builder()
        .name("stress")
        .count_window(100_000)
        .build()
        .unwrap()
        .pair();
    handle.metrics_only();
    let downstream = Arc::new(Downstream::default());
    let d = downstream.clone();
    let svc = layer.layer(service_fn(move |fail: bool| {
        let d = d.clone();
        async move { d.call(fail).await }
    }));

    let rejections = hammer(svc, |task, i| (task * 7 + i) % 3 == 0).await;

    assert_eq!(rejections, 0);
    let counts = handle.counts();
    assert_eq!(counts.calls, TASKS * CALLS_PER_TASK);
    assert_eq!(counts.failures, downstream.failures.load(Ordering::SeqCst));
    assert_eq!(handle.state(), CircuitState::MetricsOnly);
}

/// Calls `svc` and gives up on each call after a few yields, so that about half the calls are
/// dropped mid-flight.
async fn give_up_on_some<S>(svc: S, task: u64)
where
    S: Service<bool, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    for i in 0..CALLS_PER_TASK {
        let call = Box::pin(svc.clone().oneshot(true));
        let give_up = Box::pin(async move {
            for _ in 0..(task + i) % 5 {
                tokio::task::yield_now().await;
            }
        });
        let _ = futures::future::select(call, give_up).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_cancelled_under_concurrency_leak_no_slot() {
    let (layer, handle) = CircuitBreakerLayer::builder()
        .name("stress")
        .consecutive_failures(1)
        .open_duration(Duration::from_nanos(1))
        .half_open_probes(PROBES)
        .build()
        .unwrap()
        .pair();
    let downstream = Arc::new(Downstream::default());
    let d = downstream.clone();
    let svc = layer.layer(service_fn(move |fail: bool| {
        let d = d.clone();
        async move { d.call(fail).await }
    }));
    let _ = svc.clone().oneshot(true).await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let svc = svc.clone();
            tokio::spawn(give_up_on_some(svc, task))
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    invariants::probes_within_limit(downstream.max_in_flight.load(Ordering::SeqCst), PROBES);
    assert_eq!(downstream.in_flight.load(Ordering::SeqCst), 0);
    let mut successes = Vec::new();
    for _ in 0..PROBES {
        successes.push(svc.clone().oneshot(false).await);
    }
    invariants::no_probe_slot_held(&successes, handle.state());
}

/// Hammers a breaker that flips between open and half-open (every probe fails) until it has
/// opened `cycles` times; the longest `retry_after` any rejection carried.
async fn longest_retry_after(
    layer: CircuitBreakerLayer,
    cycles: u64,
    longest_open: Duration,
) -> Duration {
    let openings = Arc::new(AtomicU64::new(0));
    let counted = openings.clone();
    let layer = layer.on_state_change(move |e| {
        if e.to == CircuitState::Open {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let svc = layer.layer(service_fn(|()| async {
        tokio::task::yield_now().await;
        Err::<(), BoxError>("down".into())
    }));
    let longest = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let task = note_retry_afters(
                svc.clone(),
                openings.clone(),
                cycles,
                longest.clone(),
                longest_open,
            );
            tokio::spawn(task)
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        openings.load(Ordering::Relaxed) >= cycles,
        "the breaker stopped cycling after {} openings",
        openings.load(Ordering::Relaxed)
    );
    Duration::from_nanos(longest.load(Ordering::Relaxed))
}

/// Calls `svc` until `openings` reaches `cycles`, keeping the longest `retry_after` seen.
async fn note_retry_afters<S>(
    svc: S,
    openings: Arc<AtomicU64>,
    cycles: u64,
    longest: Arc<AtomicU64>,
    longest_open: Duration,
) where
    S: Service<(), Response = (), Error = BoxError> + Clone,
{
    // Bounded, so that a breaker that stops cycling fails the test rather than hangs.
    for _ in 0..1_000_000 {
        if openings.load(Ordering::Relaxed) >= cycles {
            break;
        }
        let err = svc.clone().oneshot(()).await.unwrap_err();
        if rejected(&*err).is_some()
            && let Some(after) = invariants::rejection_waits_at_most(&err, longest_open)
        {
            let nanos = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
            longest.fetch_max(nanos, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_rejection_asks_to_wait_longer_than_the_open_duration() {
    const OPEN: Duration = Duration::from_micros(200);
    let layer = CircuitBreakerLayer::builder()
        .name("stress")
        .consecutive_failures(1)
        .open_duration(OPEN)
        .open_jitter(0.0)
        .half_open_probes(PROBES)
        .build()
        .unwrap();
    let longest = longest_retry_after(layer, 300, OPEN).await;
    assert!(longest <= OPEN, "a rejection asked to wait {longest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_rejection_asks_to_wait_longer_than_the_open_backoff_allows() {
    use seawall_core::backoff::Backoff;

    const CAP: Duration = Duration::from_micros(400);
    let backoff = Backoff::exponential(Duration::from_micros(100))
        .cap(CAP)
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::builder()
        .name("stress")
        .consecutive_failures(1)
        .open_backoff(backoff)
        .open_jitter(0.0)
        .half_open_probes(PROBES)
        .half_open_max_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let longest = longest_retry_after(layer, 300, CAP).await;
    assert!(longest <= CAP, "a rejection asked to wait {longest:?}");
}

/// Calls `svc` with `count` fresh keys from `first` on, checking the map's bound as it goes.
async fn rotate_keys<S, F>(
    svc: S,
    layer: seawall_circuit_breaker::KeyedCircuitBreakerLayer<u64, F>,
    first: u64,
    count: u64,
    max_keys: usize,
) where
    S: Service<(u64, bool), Response = (), Error = BoxError> + Clone,
{
    for key in first..first + count {
        svc.clone().oneshot((key, false)).await.unwrap();
        if key % 64 == 0 {
            assert!(layer.len() <= max_keys, "{} keys", layer.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_keys_never_evict_an_open_breaker() {
    use seawall_circuit_breaker::{CircuitBreakerConfig, KeyedCircuitBreakerLayer};

    const MAX_KEYS: usize = 300;
    const BAD: u64 = 5;
    const FLAPPING: std::ops::Range<u64> = 100..120;
    let config = CircuitBreakerConfig::builder()
        .name("stress")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(3600))
        .max_keys(MAX_KEYS)
        .build()
        .unwrap();
    let layer = KeyedCircuitBreakerLayer::new(config, key_fn(|req: &(u64, bool)| req.0));
    let svc = layer.layer(service_fn(|(_, fail): (u64, bool)| async move {
        if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    for host in (0..BAD).chain(FLAPPING) {
        let _ = svc.clone().oneshot((host, true)).await;
    }

    // Breakers that start and stop rejecting while the map evicts around them.
    let flapper = {
        let layer = layer.clone();
        tokio::spawn(async move {
            for round in 0..2_000u64 {
                for host in FLAPPING {
                    if let Some(handle) = layer.handle(&host) {
                        if (round + host) % 2 == 0 {
                            handle.force_closed();
                        } else {
                            handle.force_open();
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let rotators: Vec<_> = (0..TASKS)
        .map(|task| {
            let first = 1_000 + task * 2_000;
            tokio::spawn(rotate_keys(
                svc.clone(),
                layer.clone(),
                first,
                2_000,
                MAX_KEYS,
            ))
        })
        .collect();
    for task in rotators {
        task.await.unwrap();
    }
    flapper.await.unwrap();
    for host in 0..BAD {
        let handle = layer
            .handle(&host)
            .expect("an open breaker is never evicted");
        assert_eq!(handle.state(), CircuitState::Open);
    }
    assert!(layer.len() <= MAX_KEYS);

    // Whatever the flapping left behind is filed right: the ones open now outlive a new
    // rotation of keys too.
    let open: Vec<u64> = FLAPPING
        .filter(|host| layer.handle(host).is_some_and(|h| h.state().rejects()))
        .collect();
    rotate_keys(
        svc.clone(),
        layer.clone(),
        1_000_000,
        2 * MAX_KEYS as u64,
        MAX_KEYS,
    )
    .await;
    for host in open.iter().chain(&(0..BAD).collect::<Vec<_>>()) {
        assert!(
            layer.handle(host).is_some(),
            "{host} was open and was evicted"
        );
    }
}

/// The calls of a test numbered in admission order, and those not yet returned.
#[derive(Default)]
struct Admissions {
    last: u64,
    open: std::collections::BTreeSet<u64>,
}

impl Admissions {
    /// Half the breaker's admission ring.
    const SPAN: u64 = 512;

    /// The next call's number, unless the oldest call not yet returned is `SPAN` behind.
    fn admit(&mut self) -> Option<u64> {
        if self
            .open
            .first()
            .is_some_and(|&oldest| self.last + 1 - oldest >= Self::SPAN)
        {
            return None;
        }
        self.last += 1;
        self.open.insert(self.last);
        Some(self.last)
    }

    fn returned(&mut self, n: u64) {
        self.open.remove(&n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_never_five_in_a_row_in_admission_order_never_open_whatever_order_they_end_in() {
    let (layer, handle) = CircuitBreakerLayer::builder()
        .name("stress")
        .no_failure_rate()
        .consecutive_failures(5)
        .build()
        .unwrap()
        .pair();
    // Failures come back at once, successes after many yields: in completion order, runs of
    // failures far longer than five.
    let svc = layer.layer(service_fn(|fail: bool| async move {
        for _ in 0..if fail { 0 } else { 50 } {
            tokio::task::yield_now().await;
        }
        if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    // Numbered as the breaker admits them: every fourth call succeeds. The breaker finds a run
    // in admission order while its ring (1024 calls) still holds the run's calls; a failure
    // whose thread is descheduled between its admission and its look along the ring for longer
    // than 1024 admissions of the other threads is judged in completion order instead (`run.rs`),
    // where these runs are long. So a call is admitted only while every call before it that has
    // not returned is within half a ring: what is tested is the rule where the ring holds.
    let admission = Arc::new(std::sync::Mutex::new(Admissions::default()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let mut svc = svc.clone();
            let admission = admission.clone();
            tokio::spawn(async move {
                for _ in 0..CALLS_PER_TASK {
                    svc.ready().await.unwrap();
                    let (n, call) = loop {
                        let admitted = {
                            let mut admissions = admission.lock().unwrap();
                            admissions
                                .admit()
                                .map(|n| (n, svc.call(!n.is_multiple_of(4))))
                        };
                        match admitted {
                            Some(admitted) => break admitted,
                            None => tokio::task::yield_now().await,
                        }
                    };
                    let result = call.await;
                    admission.lock().unwrap().returned(n);
                    assert!(!result.is_err_and(|e| rejected(&*e).is_some()));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_whose_failures_end_at_once_on_many_threads_opens_the_breaker() {
    const RUN: usize = 5;
    let (layer, handle) = CircuitBreakerLayer::builder()
        .name("stress")
        .no_failure_rate()
        .consecutive_failures(RUN as u32)
        .build()
        .unwrap()
        .pair();
    for round in 0..300 {
        handle.reset();
        let barrier = Arc::new(tokio::sync::Barrier::new(RUN));
        let mut calls = Vec::new();
        for _ in 0..RUN {
            let barrier = barrier.clone();
            let svc = layer.layer(service_fn(move |()| {
                let barrier = barrier.clone();
                async move {
                    barrier.wait().await;
                    Err::<(), BoxError>("down".into())
                }
            }));
            let call = svc.oneshot(());
            calls.push(tokio::spawn(call));
        }
        for call in calls {
            let _ = call.await.unwrap();
        }
        assert_eq!(handle.state(), CircuitState::Open, "round {round}");
    }
}
