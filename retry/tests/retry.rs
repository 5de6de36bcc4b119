//! Retry behaviour on the paused clock.

use std::future::{Ready, ready};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall_core::backoff::{Backoff, Jitter};
use seawall_core::testing::TestRecorder;
use seawall_core::{BoxError, Rejected, RejectionKind, rejected};
use seawall_retry::{BudgetConfig, RetryBudget, RetryConfigBuilder, RetryLayer};
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn no_jitter(base: Duration) -> Backoff {
    Backoff::constant(base)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn builder() -> RetryConfigBuilder<RetryLayer> {
    RetryLayer::builder().name("dep")
}

/// A downstream that answers attempt `n` (from 0) with `script(n)` and logs when each
/// attempt came.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Instant>>>);

impl Log {
    fn times(&self) -> Vec<Duration> {
        let log = self.0.lock().unwrap();
        log.iter().map(|t| t.duration_since(log[0])).collect()
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn downstream(
    log: &Log,
    script: impl Fn(usize) -> Result<u32, BoxError> + Send + Sync + 'static,
) -> impl Service<u32, Response = u32, Error = BoxError, Future = Ready<Result<u32, BoxError>>>
+ Clone
+ Send
+ 'static {
    let log = log.clone();
    let script = Arc::new(script);
    service_fn(move |_req: u32| {
        let n = {
            let mut log = log.0.lock().unwrap();
            log.push(Instant::now());
            log.len() - 1
        };
        ready(script(n))
    })
}

fn always_failing(
    log: &Log,
) -> impl Service<u32, Response = u32, Error = BoxError, Future = Ready<Result<u32, BoxError>>>
+ Clone
+ Send
+ 'static {
    downstream(log, |_| Err("unavailable".into()))
}

#[tokio::test(start_paused = true)]
async fn delays_follow_the_backoff() {
    let log = Log::default();
    let backoff = Backoff::exponential(ms(100))
        .cap(ms(1000))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let layer = builder()
        .max_attempts(5)
        .backoff(backoff)
        .no_budget()
        .build()
        .unwrap();
    let err = layer
        .layer(always_failing(&log))
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unavailable");
    assert_eq!(log.times(), [ms(0), ms(100), ms(300), ms(700), ms(1500)]);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_keeps_each_delay_within_the_curve() {
    let log = Log::default();
    let backoff = Backoff::exponential(ms(100))
        .cap(ms(1000))
        .jitter(Jitter::Full)
        .build()
        .unwrap();
    let layer = builder()
        .max_attempts(6)
        .backoff(backoff)
        .no_budget()
        .seed(7)
        .build()
        .unwrap();
    let _ = layer.layer(always_failing(&log)).oneshot(1).await;
    let times = log.times();
    assert_eq!(times.len(), 6);
    for (n, pair) in times.windows(2).enumerate() {
        let delay = pair[1] - pair[0];
        assert!(
            delay <= backoff.curve(n as u32 + 1),
            "retry {}: {delay:?}",
            n + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_succeeds_returns_its_response() {
    let log = Log::default();
    let svc = builder()
        .backoff(no_jitter(ms(10)))
        .no_budget()
        .build()
        .unwrap()
        .layer(downstream(&log, |n| {
            if n < 2 { Err("reset".into()) } else { Ok(42) }
        }));
    assert_eq!(svc.oneshot(1).await.unwrap(), 42);
    assert_eq!(log.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn stops_at_max_attempts() {
    for max in [1, 2, 5] {
        let log = Log::default();
        let layer = builder()
            .max_attempts(max)
            .backoff(no_jitter(ms(1)))
            .no_budget()
            .build()
            .unwrap();
        assert!(layer.layer(always_failing(&log)).oneshot(1).await.is_err());
        assert_eq!(log.count(), max as usize);
    }
}

#[tokio::test(start_paused = true)]
async fn stops_before_a_wait_would_pass_max_elapsed() {
    let log = Log::default();
    let layer = builder()
        .max_attempts(10)
        .backoff(no_jitter(ms(100)))
        .max_elapsed(ms(250))
        .no_budget()
        .build()
        .unwrap();
    let start = Instant::now();
    assert!(layer.layer(always_failing(&log)).oneshot(1).await.is_err());
    assert_eq!(log.times(), [ms(0), ms(100), ms(200)]);
    assert_eq!(start.elapsed(), ms(200), "gave up without waiting again");
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_at_the_instant_max_elapsed_ends() {
    // A wait that ends exactly at the limit leaves the retry no time: a stack's total timeout
    // fires at that instant and abandons an attempt the downstream still works on.
    let log = Log::default();
    let layer = builder()
        .max_attempts(10)
        .backoff(no_jitter(ms(100)))
        .max_elapsed(ms(200))
        .no_budget()
        .build()
        .unwrap();
    assert!(layer.layer(always_failing(&log)).oneshot(1).await.is_err());
    assert_eq!(log.times(), [ms(0), ms(100)]);
}

#[tokio::test(start_paused = true)]
async fn budget_exhaustion_stops_retries_and_is_counted() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| {
        builder()
            .max_attempts(3)
            .backoff(no_jitter(Duration::ZERO))
            .budget(BudgetConfig::new(0.0, 1, Duration::from_secs(1)).unwrap())
            .build()
            .unwrap()
    });
    let log = Log::default();
    let svc = layer.layer(always_failing(&log));
    assert!(svc.clone().oneshot(1).await.is_err());
    assert_eq!(log.count(), 2, "one retry from the floor, then none left");
    assert!(svc.clone().oneshot(2).await.is_err());
    assert_eq!(log.count(), 3, "no retry at all");
    let exhausted = recorder.counter("seawall_retry_budget_exhausted_total", &[("name", "dep")]);
    assert_eq!(exhausted, 2);

    advance(Duration::from_secs(1)).await;
    assert!(svc.oneshot(3).await.is_err());
    assert_eq!(log.count(), 5, "the floor refills a second later");
}

#[tokio::test(start_paused = true)]
async fn a_retry_refused_by_the_budget_ends_as_budget_exhausted_with_the_last_error() {
    let layer = builder()
        .max_attempts(3)
        .backoff(no_jitter(Duration::ZERO))
        .budget(BudgetConfig::new(0.0, 0, Duration::from_secs(1)).unwrap())
        .build()
        .unwrap();
    let log = Log::default();
    let err = layer
        .layer(always_failing(&log))
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(log.count(), 1, "an empty budget allows no retry");
    let rejection = rejected(&*err).expect("a rejection");
    assert_eq!(rejection.kind(), RejectionKind::BudgetExhausted);
    assert_eq!(rejection.name(), "dep");
    let last = std::error::Error::source(&*err).expect("the last error as its source");
    assert_eq!(last.to_string(), "unavailable");

    // Max attempts reached is no budget refusal: the last error comes back as it was.
    let spent = builder()
        .max_attempts(1)
        .no_budget()
        .build()
        .unwrap()
        .layer(always_failing(&log))
        .oneshot(1)
        .await
        .unwrap_err();
    assert!(rejected(&*spent).is_none(), "{spent}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_layer_further_out_does_not_retry_what_the_budget_refused() {
    let inner = builder()
        .name("inner")
        .max_attempts(3)
        .backoff(no_jitter(Duration::ZERO))
        .budget(BudgetConfig::new(0.0, 0, Duration::from_secs(1)).unwrap())
        .build()
        .unwrap();
    let outer = builder()
        .name("outer")
        .max_attempts(3)
        .backoff(no_jitter(Duration::ZERO))
        .no_budget()
        .build()
        .unwrap();
    let log = Log::default();
    let svc = outer.layer(inner.layer(always_failing(&log)));
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(log.count(), 1, "one attempt: no retry inside, none outside");
    assert_eq!(
        rejected(&*err).map(Rejected::kind),
        Some(RejectionKind::BudgetExhausted)
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_count_calls_by_kind_and_every_attempt() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| {
        builder()
            .max_attempts(2)
            .backoff(no_jitter(ms(1)))
            .no_budget()
            .build()
            .unwrap()
    });
    let ok = service_fn(|_: u32| ready(Ok::<_, BoxError>(1)));
    layer.layer(ok).oneshot(1).await.unwrap();
    let log = Log::default();
    let flaky = downstream(&log, |n| if n == 0 { Err("x".into()) } else { Ok(1) });
    layer.layer(flaky).oneshot(1).await.unwrap();
    let refused = service_fn(|_: u32| {
        ready(Err::<u32, BoxError>(
            Rejected::new(RejectionKind::BudgetExhausted, "inner").into(),
        ))
    });
    assert!(layer.layer(refused).oneshot(1).await.is_err());
    let log = Log::default();
    assert!(layer.layer(always_failing(&log)).oneshot(1).await.is_err());

    let calls = |kind| {
        recorder.counter(
            "seawall_retry_calls_total",
            &[("name", "dep"), ("kind", kind)],
        )
    };
    assert_eq!(calls("success_without_retry"), 1);
    assert_eq!(calls("success_with_retry"), 1);
    assert_eq!(calls("failed_without_retry"), 1);
    assert_eq!(calls("failed_with_retry"), 1);
    let attempts = recorder.counter("seawall_retry_attempts_total", &[("name", "dep")]);
    assert_eq!(attempts, 1 + 2 + 1 + 2);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_future_stops_retrying_at_once() {
    let log = Log::default();
    let mut svc = builder()
        .max_attempts(5)
        .backoff(no_jitter(ms(100)))
        .no_budget()
        .build()
        .unwrap()
        .layer(always_failing(&log));
    let mut call = task::spawn(svc.ready().await.unwrap().call(1));
    assert_pending!(call.poll());
    assert_eq!(log.count(), 1);
    drop(call);
    advance(Duration::from_secs(10)).await;
    assert_eq!(log.count(), 1, "no attempt after the caller gave up");
}

#[tokio::test(start_paused = true)]
async fn a_rejection_is_not_retried_before_its_retry_after() {
    let log = Log::default();
    let svc = builder()
        .backoff(no_jitter(ms(10)))
        .no_budget()
        .build()
        .unwrap()
        .layer(downstream(&log, |n| {
            if n == 0 {
                Err(Rejected::new(RejectionKind::RateLimited, "limiter")
                    .with_retry_after(Duration::from_secs(2))
                    .into())
            } else {
                Ok(1)
            }
        }));
    assert_eq!(svc.oneshot(1).await.unwrap(), 1);
    assert_eq!(log.times(), [ms(0), Duration::from_secs(2)]);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_never_retried() {
    let log = Log::default();
    let svc = builder()
        .backoff(no_jitter(ms(10)))
        .no_budget()
        .build()
        .unwrap()
        .layer(downstream(&log, |_| {
            Err(Rejected::new(RejectionKind::CircuitOpen, "breaker")
                .with_retry_after(ms(1))
                .into())
        }));
    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(
        rejected(&*err).map(Rejected::kind),
        Some(RejectionKind::CircuitOpen)
    );
    assert_eq!(log.count(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO, "the caller learns at once");
}

#[tokio::test(start_paused = true)]
async fn shed_load_without_a_retry_after_is_not_retried() {
    let log = Log::default();
    let svc = builder()
        .backoff(no_jitter(ms(10)))
        .no_budget()
        .build()
        .unwrap()
        .layer(downstream(&log, |_| {
            Err(Rejected::new(RejectionKind::BulkheadFull, "pool").into())
        }));
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(
        rejected(&*err).map(Rejected::kind),
        Some(RejectionKind::BulkheadFull)
    );
    assert_eq!(log.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_max_delay_gives_up_at_once() {
    let log = Log::default();
    let svc = builder()
        .backoff(no_jitter(ms(10)))
        .max_delay(Duration::from_secs(1))
        .no_budget()
        .build()
        .unwrap()
        .layer(downstream(&log, |_| {
            Err(Rejected::new(RejectionKind::BulkheadFull, "pool")
                .with_retry_after(Duration::from_secs(5))
                .into())
        }));
    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(
        rejected(&*err).map(Rejected::kind),
        Some(RejectionKind::BulkheadFull)
    );
    assert_eq!(log.count(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[derive(Debug, PartialEq)]
struct DownstreamError(u32);

impl std::fmt::Display for DownstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "downstream error {}", self.0)
    }
}

impl std::error::Error for DownstreamError {}

#[tokio::test(start_paused = true)]
async fn the_last_error_passes_through_downcastable() {
    let n = Arc::new(AtomicU32::new(0));
    let svc = builder()
        .backoff(no_jitter(ms(1)))
        .no_budget()
        .build()
        .unwrap()
        .layer(service_fn(move |_: u32| {
            let n = n.fetch_add(1, Ordering::SeqCst);
            ready(Err::<u32, _>(DownstreamError(n)))
        }));
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<DownstreamError>(),
        Some(&DownstreamError(2))
    );
}

#[tokio::test(start_paused = true)]
async fn the_inner_service_is_readied_before_every_attempt() {
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    let mut svc = builder()
        .backoff(no_jitter(ms(100)))
        .no_budget()
        .build()
        .unwrap()
        .layer(mock);
    handle.allow(1);
    let mut call = task::spawn(svc.ready().await.unwrap().call(7));
    assert_pending!(call.poll());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, 7);
    send.send_error("reset");
    assert_pending!(call.poll());
    advance(ms(100)).await;
    assert_pending!(call.poll(), "the inner service is not ready yet");
    handle.allow(1);
    assert_pending!(call.poll());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, 7, "the retry sends a copy of the request");
    send.send_response(70);
    assert_eq!(assert_ready!(call.poll()).unwrap(), 70);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_only_delegates() {
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    let mut svc = builder().build().unwrap().layer(mock);
    handle.allow(0);
    let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_pending!(ready.poll());
    handle.allow(1);
    assert!(assert_ready!(ready.poll()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_hook_hears_each_retry_with_attempt_and_delay() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let layer = builder()
        .max_attempts(3)
        .backoff(no_jitter(ms(40)))
        .no_budget()
        .build()
        .unwrap()
        .on_retry(move |event| {
            assert_eq!(event.name, "dep");
            sink.lock().unwrap().push((event.attempt, event.delay));
        });
    let log = Log::default();
    let _ = layer.layer(always_failing(&log)).oneshot(1).await;
    assert_eq!(*heard.lock().unwrap(), [(2, ms(40)), (3, ms(40))]);
}

async fn jittered_delays(seed: u64) -> Vec<Duration> {
    let log = Log::default();
    let backoff = Backoff::exponential(ms(100))
        .cap(Duration::from_secs(10))
        .jitter(Jitter::Decorrelated)
        .build()
        .unwrap();
    let layer = builder()
        .max_attempts(5)
        .backoff(backoff)
        .no_budget()
        .seed(seed)
        .build()
        .unwrap();
    for _ in 0..3 {
        let _ = layer.layer(always_failing(&log)).oneshot(1).await;
    }
    log.times()
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_delays() {
    let a = jittered_delays(42).await;
    assert_eq!(a, jittered_delays(42).await);
    assert_ne!(a, jittered_delays(43).await);
}

#[tokio::test(start_paused = true)]
async fn layers_given_one_budget_share_it() {
    let budget = RetryBudget::new(BudgetConfig::new(0.0, 1, Duration::from_secs(1)).unwrap());
    let layer = |name: &str| {
        RetryLayer::builder()
            .name(name)
            .backoff(no_jitter(Duration::ZERO))
            .build()
            .unwrap()
            .with_budget(budget.clone())
    };
    let (a, b) = (Log::default(), Log::default());
    let _ = layer("a").layer(always_failing(&a)).oneshot(1).await;
    let _ = layer("b").layer(always_failing(&b)).oneshot(1).await;
    assert_eq!((a.count(), b.count()), (2, 1), "the one retry went to `a`");
}

#[tokio::test(start_paused = true)]
async fn every_service_of_a_layer_draws_on_one_budget() {
    let layer = builder()
        .backoff(no_jitter(Duration::ZERO))
        .budget(BudgetConfig::new(0.0, 1, Duration::from_secs(1)).unwrap())
        .build()
        .unwrap();
    let log = Log::default();
    // As axum does per connection: one `layer()` call per service.
    let _ = layer.layer(always_failing(&log)).oneshot(1).await;
    let _ = layer.layer(always_failing(&log)).oneshot(1).await;
    assert_eq!(log.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_always_failing_downstream_gets_at_most_the_budgeted_extra_load() {
    let recorder = TestRecorder::new();
    let config = BudgetConfig::default();
    let layer = recorder.install_for(|| {
        builder()
            .max_attempts(3)
            .backoff(no_jitter(ms(1)))
            .budget(config)
            .build()
            .unwrap()
    });
    let log = Log::default();
    let svc = layer.layer(always_failing(&log));
    let start = Instant::now();
    let requests = 1000u32;
    for i in 0..requests {
        assert!(svc.clone().oneshot(i).await.is_err());
        advance(ms(10)).await;
    }
    let seconds = start.elapsed().as_secs();
    let downstream = log.count() as f64;
    // The ratio of the requests, and partial retries granted on draws evening out.
    let bound = f64::from(requests) * (1.0 + config.ratio())
        + f64::from(config.min_per_second()) * (seconds + config.ttl().as_secs()) as f64
        + 2.0 * (2.0 * f64::from(requests)).sqrt();
    assert!(
        downstream <= bound,
        "{downstream} downstream calls > {bound}"
    );
    assert!(downstream < f64::from(requests) * 1.5, "{downstream}");
    let attempts = recorder.counter("seawall_retry_attempts_total", &[("name", "dep")]);
    assert_eq!(attempts as f64, downstream);
    assert!(recorder.counter("seawall_retry_budget_exhausted_total", &[("name", "dep")]) > 0);
}

/// Calls one second apart to a downstream that fails the first attempt of every call, through
/// a layer with the default budget; how many of them were retried.
async fn retried_of_transient_failures(calls: u32, seed: u64) -> u32 {
    let layer = builder()
        .backoff(no_jitter(ms(1)))
        .seed(seed)
        .build()
        .unwrap();
    let mut retried = 0;
    for _ in 0..calls {
        let log = Log::default();
        let svc = layer.layer(downstream(&log, |n| {
            if n == 0 { Err("reset".into()) } else { Ok(1) }
        }));
        if svc.oneshot(1).await.is_ok() {
            retried += 1;
        }
        advance(Duration::from_secs(1)).await;
    }
    retried
}

#[tokio::test(start_paused = true)]
async fn a_busy_client_retries_a_transient_error_for_sure() {
    let layer = builder().backoff(no_jitter(ms(1))).seed(3).build().unwrap();
    let log = Log::default();
    let flaky = layer.layer(downstream(&log, |n| {
        if n == 500 { Err("reset".into()) } else { Ok(1) }
    }));
    // 1000 requests a second: 90 retries of credit.
    for _ in 0..1000 {
        assert!(flaky.clone().oneshot(1).await.is_ok());
        advance(ms(1)).await;
    }
    assert_eq!(log.count(), 1001, "the one failure was retried");
}

#[tokio::test(start_paused = true)]
async fn a_client_too_slow_to_earn_a_retry_retries_with_the_probability_of_its_credit() {
    // One request a second earns 0.09 of a retry, which lasts a second: no floor lets it
    // retry every failure, as a fleet of such clients would multiply its load by two.
    let retried = retried_of_transient_failures(1000, 1).await;
    assert!(
        (50..=140).contains(&retried),
        "about 9 % of 1000 failures (and their credit's rounding): {retried}"
    );
    let floored = RetryLayer::builder()
        .budget(BudgetConfig::new(0.09, 1, Duration::from_secs(10)).unwrap())
        .backoff(no_jitter(ms(1)))
        .build()
        .unwrap();
    let log = Log::default();
    let svc = floored.layer(downstream(&log, |n| {
        if n == 0 { Err("reset".into()) } else { Ok(1) }
    }));
    assert!(svc.oneshot(1).await.is_ok(), "a floor gives it certainty");
}

#[tokio::test(start_paused = true)]
async fn no_wait_is_longer_than_max_delay() {
    let log = Log::default();
    let backoff = Backoff::exponential(ms(100))
        .cap(Duration::from_secs(10))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let layer = builder()
        .max_attempts(5)
        .backoff(backoff)
        .max_delay(ms(250))
        .no_budget()
        .build()
        .unwrap();
    let _ = layer.layer(always_failing(&log)).oneshot(1).await;
    assert_eq!(log.times(), [ms(0), ms(100), ms(300), ms(550), ms(800)]);
}

#[tokio::test(start_paused = true)]
async fn a_recorder_installed_later_counts_the_calls_made_after_it() {
    let log = Log::default();
    let svc = builder()
        .build()
        .unwrap()
        .layer(downstream(&log, |_| Ok(1)));
    svc.clone().oneshot(1).await.unwrap();
    let recorder = TestRecorder::new();
    let mut call = task::spawn(svc.oneshot(2));
    recorder.install_for(|| assert_ready!(call.poll())).unwrap();
    let calls = recorder.counter(
        "seawall_retry_calls_total",
        &[("name", "dep"), ("kind", "success_without_retry")],
    );
    let attempts = recorder.counter("seawall_retry_attempts_total", &[("name", "dep")]);
    assert_eq!(
        (calls, attempts),
        (1, 1),
        "the call before the recorder is dropped"
    );
}
