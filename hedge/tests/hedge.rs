//! Hedging on tokio's paused clock, against a scripted downstream.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use seawall_core::BoxError;
use seawall_core::testing::TestRecorder;
use seawall_hedge::{BudgetConfig, HedgeLayer, PercentileDelay};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What the next attempt does.
#[derive(Debug, Clone, Copy)]
enum Step {
    Answer(Duration),
    Fail(Duration),
}

#[derive(Debug, Default)]
struct Log {
    script: VecDeque<Step>,
    /// When each attempt started, in order.
    started: Vec<Instant>,
    finished: u32,
    dropped: u32,
}

/// A downstream whose attempts take the times a script says (1 ms once the script is done),
/// and that logs when each starts and whether it finished or was dropped.
#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<Log>>);

impl Scripted {
    fn script(&self, steps: impl IntoIterator<Item = Step>) {
        self.0.lock().unwrap().script.extend(steps);
    }

    fn log<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        f(&self.0.lock().unwrap())
    }
}

/// Marks an attempt dropped unless it finished.
struct Attempt {
    log: Arc<Mutex<Log>>,
    done: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut log = self.log.lock().unwrap();
        if self.done {
            log.finished += 1;
        } else {
            log.dropped += 1;
        }
    }
}

#[derive(Debug)]
struct Failed(u32);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attempt {} failed", self.0)
    }
}

impl std::error::Error for Failed {}

impl Service<u32> for Scripted {
    /// The request and the number of the attempt that answered (1 for the first ever made).
    type Response = (u32, u32);
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(u32, u32), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        let (step, number) = {
            let mut log = self.0.lock().unwrap();
            log.started.push(Instant::now());
            let step = log.script.pop_front().unwrap_or(Step::Answer(ms(1)));
            (step, log.started.len() as u32)
        };
        let attempt = Attempt {
            log: self.0.clone(),
            done: false,
        };
        Box::pin(async move {
            let mut attempt = attempt;
            let (delay, ok) = match step {
                Step::Answer(d) => (d, true),
                Step::Fail(d) => (d, false),
            };
            tokio::time::sleep(delay).await;
            attempt.done = true;
            if ok {
                Ok((req, number))
            } else {
                Err(Failed(number).into())
            }
        })
    }
}

fn fixed(delay: Duration) -> HedgeLayer {
    HedgeLayer::builder()
        .name("search")
        .delay(delay)
        .build()
        .unwrap()
}

/// Sends `n` quick calls, so that the budget has `n / 10` hedges.
async fn warm<S>(svc: &S, n: u32)
where
    S: Service<u32, Response = (u32, u32), Error = BoxError> + Clone,
{
    for i in 0..n {
        svc.clone().oneshot(i).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_attempt_is_hedged_after_the_delay_and_the_fast_hedge_wins() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| fixed(ms(50)));
    let downstream = Scripted::default();
    let svc = layer.layer(downstream.clone());
    warm(&svc, 10).await;

    downstream.script([Step::Answer(ms(1000)), Step::Answer(ms(10))]);
    let (answer, attempt) = svc.oneshot(7).await.unwrap();
    assert_eq!(
        (answer, attempt),
        (7, 12),
        "the hedge (attempt 12) answered"
    );
    downstream.log(|log| {
        let first = log.started[10];
        assert_eq!(log.started[11] - first, ms(50), "hedged after the delay");
        assert_eq!(log.dropped, 1, "the slow first attempt was dropped");
        assert_eq!(log.finished, 11);
    });
    let labels = [("name", "search")];
    assert_eq!(recorder.counter("seawall_hedge_calls_total", &labels), 11);
    assert_eq!(recorder.counter("seawall_hedge_sent_total", &labels), 1);
    assert_eq!(recorder.counter("seawall_hedge_won_total", &labels), 1);
    let (_, help) = recorder.description("seawall_hedge_sent_total").unwrap();
    assert!(help.contains("Hedges sent"), "{help}");
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_that_answers_before_the_delay_is_never_hedged() {
    let downstream = Scripted::default();
    let svc = fixed(ms(50)).layer(downstream.clone());
    warm(&svc, 10).await;
    downstream.script([Step::Answer(ms(49))]);
    assert_eq!(svc.oneshot(1).await.unwrap(), (1, 11));
    downstream.log(|log| {
        assert_eq!(log.started.len(), 11);
        assert_eq!(log.dropped, 0);
    });
}

#[tokio::test(start_paused = true)]
async fn when_the_first_attempt_answers_first_the_hedge_is_dropped() {
    let downstream = Scripted::default();
    let svc = fixed(ms(50)).layer(downstream.clone());
    warm(&svc, 10).await;
    downstream.script([Step::Answer(ms(60)), Step::Answer(ms(100))]);
    assert_eq!(svc.oneshot(1).await.unwrap(), (1, 11));
    downstream.log(|log| {
        assert_eq!(log.started.len(), 12, "the hedge was sent");
        assert_eq!(
            log.dropped, 1,
            "and dropped when the first attempt answered"
        );
    });
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_stops_hedging() {
    let recorder = TestRecorder::new();
    let exhausted = Arc::new(AtomicU32::new(0));
    let layer = recorder.install_for(|| {
        let exhausted = exhausted.clone();
        fixed(ms(50)).on_budget_exhausted(move |e| {
            assert_eq!((e.name, e.attempt), ("search", 2));
            exhausted.fetch_add(1, Ordering::SeqCst);
        })
    });
    let (layer, handle) = layer.pair();
    let downstream = Scripted::default();
    let svc = layer.layer(downstream.clone());
    warm(&svc, 10).await;
    assert_eq!(handle.budget_available(), 1);

    // Two slow calls: 12 requests earn 1.2 hedges, so only the first is hedged.
    downstream.script([
        Step::Answer(ms(1000)),
        Step::Answer(ms(10)),
        Step::Answer(ms(1000)),
    ]);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), (1, 12));
    assert_eq!(
        svc.oneshot(2).await.unwrap(),
        (2, 13),
        "the first attempt, unhedged"
    );
    assert_eq!(downstream.log(|log| log.started.len()), 13);
    assert_eq!(exhausted.load(Ordering::SeqCst), 1);
    let labels = [("name", "search")];
    assert_eq!(recorder.counter("seawall_hedge_sent_total", &labels), 1);
    assert_eq!(
        recorder.counter("seawall_hedge_budget_exhausted_total", &labels),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_client_cannot_hedge_before_it_has_earned_a_hedge() {
    let downstream = Scripted::default();
    let svc = fixed(ms(50)).layer(downstream.clone());
    downstream.script([Step::Answer(ms(1000))]);
    assert_eq!(svc.oneshot(1).await.unwrap(), (1, 1));
    assert_eq!(downstream.log(|log| log.started.len()), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_drops_every_attempt() {
    let (layer, handle) = fixed(ms(50)).pair();
    let downstream = Scripted::default();
    let svc = layer.layer(downstream.clone());
    warm(&svc, 10).await;
    downstream.script([Step::Answer(ms(1000)), Step::Answer(ms(1000))]);
    let call = svc.oneshot(1);
    // Both attempts are in flight after 60 ms, then the caller gives up.
    assert!(tokio::time::timeout(ms(60), call).await.is_err());
    downstream.log(|log| {
        assert_eq!(log.started.len(), 12);
        assert_eq!(log.dropped, 2);
    });
    assert_eq!(
        handle.budget_available(),
        0,
        "the hedge was spent all the same"
    );
}

#[tokio::test(start_paused = true)]
async fn up_to_max_attempts_hedges_go_out_one_delay_apart() {
    let layer = HedgeLayer::builder()
        .delay(ms(20))
        .max_attempts(3)
        .build()
        .unwrap();
    let downstream = Scripted::default();
    let svc = layer.layer(downstream.clone());
    warm(&svc, 20).await;
    downstream.script([
        Step::Answer(ms(1000)),
        Step::Answer(ms(1000)),
        Step::Answer(ms(5)),
    ]);
    assert_eq!(svc.oneshot(9).await.unwrap(), (9, 23));
    downstream.log(|log| {
        let first = log.started[20];
        assert_eq!(log.started[21] - first, ms(20));
        assert_eq!(log.started[22] - first, ms(40));
        assert_eq!(log.started.len(), 23, "no fourth attempt");
        assert_eq!(log.dropped, 2);
    });
}

#[tokio::test(start_paused = true)]
async fn an_error_before_the_delay_is_the_answer_at_once() {
    let downstream = Scripted::default();
    let svc = fixed(ms(50)).layer(downstream.clone());
    warm(&svc, 10).await;
    downstream.script([Step::Fail(ms(10))]);
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "attempt 11 failed");
    assert_eq!(
        downstream.log(|log| log.started.len()),
        11,
        "no hedge for an error"
    );
}

#[tokio::test(start_paused = true)]
async fn an_error_waits_for_the_attempts_still_in_flight() {
    let downstream = Scripted::default();
    let svc = fixed(ms(50)).layer(downstream.clone());
    warm(&svc, 30).await;
    // The first attempt fails after the hedge went out: the hedge answers.
    downstream.script([Step::Fail(ms(60)), Step::Answer(ms(30))]);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), (1, 32));
    // The hedge fails first: the first attempt answers.
    downstream.script([Step::Answer(ms(100)), Step::Fail(ms(10))]);
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), (2, 33));
    // Both fail: the first error (the hedge's, at 60 ms) is the answer.
    downstream.script([Step::Fail(ms(100)), Step::Fail(ms(10))]);
    let err = svc.oneshot(3).await.unwrap_err();
    assert_eq!(err.to_string(), "attempt 36 failed");
    assert_eq!(downstream.log(|log| log.started.len()), 36);
}

#[tokio::test(start_paused = true)]
async fn a_percentile_delay_waits_for_enough_samples_then_follows_latency() {
    let (layer, handle) = HedgeLayer::builder()
        .percentile(PercentileDelay::new().quantile(0.9).min_samples(20))
        .build()
        .unwrap()
        .pair();
    let downstream = Scripted::default();
    let svc = layer.layer(downstream.clone());
    assert_eq!(handle.delay(), None);
    // 19 calls of 10 ms: not enough to hedge on.
    downstream.script((0..19).map(|_| Step::Answer(ms(10))));
    warm(&svc, 19).await;
    downstream.script([Step::Answer(ms(500))]);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), (1, 20), "not hedged");
    // The window now holds 20 samples; the cached quantile refreshes within 250 ms.
    tokio::time::sleep(ms(250)).await;
    let delay = handle.delay().expect("enough samples");
    assert!(delay.abs_diff(ms(10)) <= ms(10) / 32, "{delay:?}");
    downstream.script([Step::Answer(ms(500)), Step::Answer(ms(10))]);
    assert_eq!(
        svc.oneshot(2).await.unwrap(),
        (2, 22),
        "hedged at the 90th percentile"
    );
    // The timer wheel ticks in whole milliseconds.
    let waited = downstream.log(|log| log.started[21] - log.started[20]);
    assert!(
        waited >= delay && waited < delay + ms(1),
        "{waited:?} for {delay:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_default_delay_clears_the_healthy_range_by_half_the_spread_above_the_median() {
    // 6 to 10 ms, a fifth each: the 95th percentile is the healthy maximum, 10 ms, and the
    // median 8 ms, so a call queued for a moment would pass a delay at the percentile.
    let delay_after = |delay: PercentileDelay| async move {
        let (layer, handle) = HedgeLayer::builder()
            .percentile(delay)
            .build()
            .unwrap()
            .pair();
        let downstream = Scripted::default();
        let svc = layer.layer(downstream.clone());
        downstream.script((0..100).map(|i| Step::Answer(ms(6 + i % 5))));
        warm(&svc, 100).await;
        tokio::time::sleep(ms(250)).await;
        handle.delay().expect("enough samples")
    };
    let near = |delay: Duration, want: Duration| delay.abs_diff(want) <= want / 16;
    let default = delay_after(PercentileDelay::new()).await;
    assert!(near(default, ms(11)), "10 ms + (10 - 8) / 2: {default:?}");
    let none = delay_after(PercentileDelay::new().margin(0.0)).await;
    assert!(near(none, ms(10)), "{none:?}");
}

/// A layer with the default percentile delay whose window holds `calls` calls of 6 to 10 ms
/// (a fifth each), the cached delay refreshed after them.
async fn with_calls(
    calls: u32,
) -> (
    impl Service<u32, Response = (u32, u32), Error = BoxError, Future: Send> + Clone,
    Scripted,
    seawall_hedge::HedgeHandle,
) {
    let (layer, handle) = HedgeLayer::builder()
        .percentile(PercentileDelay::new())
        .build()
        .unwrap()
        .pair();
    let downstream = Scripted::default();
    let svc = layer.layer(downstream.clone());
    downstream.script((0..u64::from(calls)).map(|i| Step::Answer(ms(6 + i % 5))));
    warm(&svc, calls).await;
    tokio::time::sleep(ms(250)).await;
    (svc, downstream, handle)
}

#[tokio::test(start_paused = true)]
async fn a_client_with_fewer_calls_than_min_samples_hedges_once_their_largest_bounds_the_percentile()
 {
    // 58 calls: the largest is below the 95th percentile with probability 0.95^58 > 5 %.
    let (svc, downstream, handle) = with_calls(58).await;
    assert_eq!(handle.delay(), None);
    downstream.script([Step::Answer(ms(500)), Step::Answer(ms(10))]);
    assert_eq!(svc.oneshot(1).await.unwrap(), (1, 59), "not hedged");

    // 59 of the 100 the percentile waits for (a client at 6 calls a second over 10 s): the
    // largest, 10 ms, plus half its distance from the median, 8 ms.
    let (svc, downstream, handle) = with_calls(59).await;
    let delay = handle
        .delay()
        .expect("enough calls to bound the 95th percentile");
    assert!(delay.abs_diff(ms(11)) <= ms(11) / 16, "{delay:?}");
    downstream.script([Step::Answer(ms(500)), Step::Answer(ms(10))]);
    assert_eq!(svc.oneshot(1).await.unwrap(), (1, 61), "the hedge answered");
}

#[tokio::test(start_paused = true)]
async fn while_the_delay_is_the_largest_latency_beaten_first_attempts_hold_it() {
    let (svc, downstream, handle) = with_calls(70).await;
    let before = handle.delay().unwrap();
    // Slow calls (2 % of a fault's calls, at a client that sees a few a second): each is
    // hedged, and its hedge answers 10 ms later. Had each first attempt counted with the time
    // it had taken (about 21 ms), the first would be the window's largest latency and raise
    // the delay for the next, whose sample would raise it again.
    for i in 0..5 {
        downstream.script([Step::Answer(ms(2000)), Step::Answer(ms(10))]);
        let (_, attempt) = svc.clone().oneshot(i).await.unwrap();
        assert_eq!(attempt, 72 + 2 * i, "call {i} hedged");
        tokio::time::sleep(ms(250)).await;
        assert_eq!(handle.delay(), Some(before), "after {} slow calls", i + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_beaten_by_a_hedge_counts_with_the_time_it_had_taken() {
    let (layer, handle) = HedgeLayer::builder()
        .percentile(PercentileDelay::new().quantile(0.5).min_samples(10))
        .budget(BudgetConfig::new(1.0, Duration::from_secs(10)).unwrap())
        .build()
        .unwrap()
        .pair();
    let downstream = Scripted::default();
    let svc = layer.layer(downstream.clone());
    downstream.script((0..10).map(|_| Step::Answer(ms(10))));
    warm(&svc, 10).await;
    tokio::time::sleep(ms(250)).await;
    // Ten calls whose first attempts hang and whose hedges answer after 10 ms more.
    for i in 0..10 {
        downstream.script([Step::Answer(ms(5000)), Step::Answer(ms(10))]);
        svc.clone().oneshot(i).await.unwrap();
    }
    // Half the samples are the hung first attempts, as long as they had waited (20 ms).
    let top = handle.latency(1.0).unwrap();
    assert!(top.abs_diff(ms(20)) <= ms(20) / 32, "{top:?}");
}

#[tokio::test(start_paused = true)]
async fn requests_the_policy_will_not_copy_are_never_hedged() {
    let layer = fixed(ms(50)).policy(seawall_hedge::PolicyFn::new(|req: &u32| {
        req.is_multiple_of(2).then_some(*req)
    }));
    let downstream = Scripted::default();
    let svc = layer.layer(downstream.clone());
    warm(&svc, 20).await;
    downstream.script([Step::Answer(ms(1000))]);
    assert_eq!(
        svc.clone().oneshot(1).await.unwrap(),
        (1, 21),
        "odd: not hedged"
    );
    downstream.script([Step::Answer(ms(1000)), Step::Answer(ms(1))]);
    assert_eq!(svc.oneshot(2).await.unwrap(), (2, 23), "even: hedged");
}

#[tokio::test(start_paused = true)]
async fn every_service_of_one_layer_shares_one_budget() {
    let layer = fixed(ms(50));
    let downstream = Scripted::default();
    let a = layer.layer(downstream.clone());
    let b = layer.layer(downstream.clone());
    warm(&a, 10).await;
    downstream.script([Step::Answer(ms(1000)), Step::Answer(ms(1))]);
    assert_eq!(
        b.oneshot(1).await.unwrap(),
        (1, 12),
        "b hedges with a's budget"
    );
}

/// Ready only once `open` is set.
#[derive(Clone)]
struct Gate(Arc<std::sync::atomic::AtomicBool>);

impl Service<u32> for Gate {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.0.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn call(&mut self, req: u32) -> Self::Future {
        std::future::ready(Ok(req))
    }
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_the_inner_services() {
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut svc = tokio_test::task::spawn(fixed(ms(50)).layer(Gate(open.clone())));
    tokio_test::assert_pending!(svc.enter(|cx, mut svc| svc.poll_ready(cx)));
    open.store(true, Ordering::SeqCst);
    tokio_test::assert_ready_ok!(svc.enter(|cx, mut svc| svc.poll_ready(cx)));
}

#[tokio::test(start_paused = true)]
async fn calls_answered_at_their_first_poll_count_as_taking_no_time() {
    let (layer, handle) = HedgeLayer::builder()
        .percentile(PercentileDelay::new().min_samples(100))
        .build()
        .unwrap()
        .pair();
    let mut svc = layer.layer(tower::service_fn(
        |n: u32| async move { Ok::<_, BoxError>(n) },
    ));
    for n in 0..100 {
        assert_eq!(svc.ready().await.unwrap().call(n).await.unwrap(), n);
    }
    tokio::time::sleep(ms(250)).await;
    assert_eq!(
        handle.delay(),
        Some(Duration::from_nanos(500)),
        "the first bucket's midpoint"
    );
}

#[tokio::test(start_paused = true)]
async fn hooks_are_told_of_each_hedge_sent_and_of_the_hedge_that_won() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let won = Arc::new(Mutex::new(Vec::new()));
    let layer = {
        let (sent, won) = (sent.clone(), won.clone());
        fixed(ms(50))
            .on_hedge(move |e| {
                sent.lock()
                    .unwrap()
                    .push((e.name.to_owned(), e.attempt, e.waited))
            })
            .on_hedge_won(move |e| won.lock().unwrap().push((e.attempt, e.elapsed)))
    };
    let downstream = Scripted::default();
    let svc = layer.layer(downstream.clone());
    warm(&svc, 10).await;
    assert!(sent.lock().unwrap().is_empty() && won.lock().unwrap().is_empty());

    downstream.script([Step::Answer(ms(1000)), Step::Answer(ms(10))]);
    svc.oneshot(7).await.unwrap();
    assert_eq!(*sent.lock().unwrap(), [("search".to_owned(), 2, ms(50))]);
    assert_eq!(*won.lock().unwrap(), [(2, ms(60))]);
}

#[tokio::test(start_paused = true)]
async fn a_reload_applies_to_services_made_before_it() {
    let (layer, handle) = fixed(ms(50)).pair();
    let downstream = Scripted::default();
    let svc = layer.layer(downstream.clone());
    let before = svc.clone();
    warm(&svc, 20).await;
    assert_eq!(handle.budget_available(), 2);

    let reloaded = seawall_hedge::HedgeConfig::builder()
        .name("search")
        .delay(ms(20))
        .max_attempts(3)
        .budget(BudgetConfig::new(0.5, Duration::from_secs(10)).unwrap())
        .build()
        .unwrap();
    handle.reload(reloaded.clone()).unwrap();
    assert_eq!(handle.config(), reloaded);
    assert_eq!(
        handle.budget_available(),
        10,
        "half of the 20 calls counted"
    );

    downstream.script([
        Step::Answer(ms(1000)),
        Step::Answer(ms(1000)),
        Step::Answer(ms(5)),
    ]);
    assert_eq!(before.oneshot(9).await.unwrap(), (9, 23));
    downstream.log(|log| {
        let first = log.started[20];
        assert_eq!(log.started[21] - first, ms(20), "the new delay");
        assert_eq!(log.started[22] - first, ms(40), "a third attempt");
    });
}

#[tokio::test(start_paused = true)]
async fn a_reload_of_what_the_layer_was_built_with_is_refused_and_changes_nothing() {
    let (_layer, handle) = fixed(ms(50)).pair();
    let live = handle.config();
    let config = || seawall_hedge::HedgeConfig::builder().name("search");
    let cases = [
        (config().name("other").delay(ms(20)).build(), "name"),
        (config().build(), "delay"),
        (
            config()
                .delay(ms(20))
                .budget(BudgetConfig::new(0.1, Duration::from_secs(30)).unwrap())
                .build(),
            "budget.window",
        ),
    ];
    for (config, field) in cases {
        let config = config.unwrap();
        assert_eq!(handle.check_reload(&config).unwrap_err().field(), field);
        assert_eq!(handle.reload(config).unwrap_err().field(), field);
        assert_eq!(handle.config(), live);
        assert_eq!(handle.delay(), Some(ms(50)));
    }
}

#[tokio::test(start_paused = true)]
async fn a_recorder_installed_later_counts_the_calls_made_after_it() {
    let mut svc = fixed(ms(50)).layer(Scripted::default());
    svc.clone().oneshot(1).await.unwrap();
    let recorder = TestRecorder::new();
    svc.ready().await.unwrap();
    let call = recorder.install_for(|| svc.call(2));
    call.await.unwrap();
    let calls = recorder.counter("seawall_hedge_calls_total", &[("name", "search")]);
    assert_eq!(calls, 1, "the call before the recorder is dropped");
}

/// A downstream that answers in 5 ms, or in 50 ms until `slow_until`.
#[derive(Clone)]
struct Stalling {
    slow_until: Arc<Mutex<Instant>>,
    attempts: Arc<AtomicU32>,
}

impl Stalling {
    fn new() -> Self {
        Self {
            slow_until: Arc::new(Mutex::new(Instant::now())),
            attempts: Arc::default(),
        }
    }
}

/// A layer hedging after `delay`, and the count of hedges it sent.
fn counting_hedges(delay: Duration) -> (HedgeLayer, Arc<AtomicU32>) {
    let hedges = Arc::new(AtomicU32::new(0));
    let counted = hedges.clone();
    let layer = fixed(delay).on_hedge(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    (layer, hedges)
}

impl Service<u32> for Stalling {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let slow = Instant::now() < *self.slow_until.lock().unwrap();
        let latency = if slow { ms(50) } else { ms(5) };
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            Ok(req)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_allowance_banked_over_quiet_seconds_goes_out_at_the_ratio_s_pace() {
    // 1000 calls a second for 10 s, none slow: the budget (10 % over 10 s) banks 1000 hedges.
    // Then every call stalls for 100 ms: spent at once, the bank would hedge all 100 of them,
    // doubling the load of a downstream that stalled (in a queue, the hedges make the stall).
    let (layer, hedges) = counting_hedges(ms(10));
    let downstream = Stalling::new();
    let svc = layer.layer(downstream.clone());
    let start = Instant::now();
    let mut calls = Vec::new();
    for i in 0..10_200u32 {
        tokio::time::sleep_until(start + ms(u64::from(i))).await;
        if i == 10_000 {
            *downstream.slow_until.lock().unwrap() = Instant::now() + ms(100);
        }
        calls.push(tokio::spawn(svc.clone().oneshot(i)));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let hedges = hedges.load(Ordering::Relaxed);
    // 100 hedges a second, ten at once: in the 100 ms of hedging, at most 10 + 10 and one
    // for the interval begun.
    assert!(hedges <= 21, "{hedges} hedges in 100 ms");
    assert!(hedges >= 10, "{hedges}: the stalled calls are still hedged");
    assert_eq!(downstream.attempts.load(Ordering::Relaxed), 10_200 + hedges);
}

#[tokio::test(start_paused = true)]
async fn once_a_hedge_loses_to_its_first_attempt_two_go_at_once_not_ten() {
    // 20 calls a second for 10 s bank 20 hedges, paced at 2 a second, ten at once. Then every
    // call stalls for 300 ms, hedges too: a queue, not a slow call. The first hedge loses to
    // its first attempt, and from then on two at once: a fleet of such clients sending ten
    // each would send ten times its share together into the queue that stalled them.
    let (layer, hedges) = counting_hedges(ms(10));
    let downstream = Stalling::new();
    let svc = layer.layer(downstream.clone());
    let start = Instant::now();
    let mut calls = Vec::new();
    for i in 0..206u32 {
        tokio::time::sleep_until(start + ms(50 * u64::from(i))).await;
        if i == 200 {
            *downstream.slow_until.lock().unwrap() = Instant::now() + ms(300);
        }
        calls.push(tokio::spawn(svc.clone().oneshot(i)));
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // Six calls stalled; two hedges, where the burst of ten would have hedged all six.
    assert_eq!(hedges.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_that_wins_gives_back_the_burst_for_a_clump_of_slow_calls() {
    let (layer, hedges) = counting_hedges(ms(10));
    let downstream = Stalling::new();
    let svc = layer.layer(downstream.clone());
    let start = Instant::now();
    // 20 calls a second for 10 s: hedges paced at 2 a second.
    for i in 0..200u32 {
        tokio::time::sleep_until(start + ms(50 * u64::from(i))).await;
        tokio::spawn(svc.clone().oneshot(i));
    }
    let calls_slowed_for = |at: Duration, stall: Duration, calls: u32| {
        let (svc, downstream) = (svc.clone(), downstream.clone());
        async move {
            tokio::time::sleep_until(start + at).await;
            *downstream.slow_until.lock().unwrap() = Instant::now() + stall;
            let calls: Vec<_> = (0..calls)
                .map(|i| tokio::spawn(svc.clone().oneshot(i)))
                .collect();
            for call in calls {
                call.await.unwrap().unwrap();
            }
        }
    };
    // A stall that slows the hedge too: it loses.
    calls_slowed_for(ms(10_000), ms(100), 1).await;
    assert_eq!(hedges.load(Ordering::Relaxed), 1);
    // One slow call, its hedge fast: it wins.
    calls_slowed_for(ms(11_000), ms(1), 1).await;
    assert_eq!(hedges.load(Ordering::Relaxed), 2);
    // Three slow calls at once, within the pace's half second: all hedged, as before the loss.
    calls_slowed_for(ms(11_100), ms(1), 3).await;
    assert_eq!(hedges.load(Ordering::Relaxed), 5);
}
