//! Circuit breaker behaviour on the paused clock: trip rules, open durations, half-open,
//! cancellation, late results, classification, the handle and the hooks.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall_circuit_breaker::{
    CallOutcome, CircuitBreakerConfigBuilder, CircuitBreakerHandle, CircuitBreakerLayer,
    CircuitState, RetryAfterFn, WindowCounts,
};
use seawall_core::backoff::{Backoff, Jitter};
use seawall_core::classify::{ClassifyFn, Outcome};
use seawall_core::testing::paused_runtime;
use seawall_core::{BoxError, Rejected, RejectionKind, rejected};
use tokio::time::{advance, sleep};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt, service_fn};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn builder() -> CircuitBreakerConfigBuilder<CircuitBreakerLayer> {
    CircuitBreakerLayer::builder()
        .name("dep")
        .open_duration(secs(10))
        // Exact open durations, so tests can step the clock to them, and one failed probe
        // opens again.
        .open_jitter(0.0)
        .half_open_success_ratio(1.0)
        // The thresholds alone, so that a handful of calls decides a rate; the noise margin
        // has tests of its own.
        .noise_margin(0.0)
}

/// What the downstream does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Ok,
    Fail,
    /// Succeeds after this many milliseconds.
    SlowOk(u64),
    /// Fails after this many milliseconds.
    SlowFail(u64),
}

use Call::{Fail, Ok as Pass};

fn downstream() -> impl Service<
    Call,
    Response = &'static str,
    Error = BoxError,
    Future = impl Future<Output = Result<&'static str, BoxError>> + Send,
> + Clone {
    service_fn(|call: Call| async move {
        match call {
            Call::Ok => Ok("ok"),
            Call::Fail => Err("boom".into()),
            Call::SlowOk(n) => {
                sleep(ms(n)).await;
                Ok("slow")
            }
            Call::SlowFail(n) => {
                sleep(ms(n)).await;
                Err("slow boom".into())
            }
        }
    })
}

/// Runs `calls` one after the other through `layer`; for each, whether it was rejected.
async fn run(layer: &CircuitBreakerLayer, calls: &[Call]) -> Vec<bool> {
    let mut rejections = Vec::new();
    for &call in calls {
        let result = layer.layer(downstream()).oneshot(call).await;
        rejections.push(result.is_err_and(|e| is_open(&e)));
    }
    rejections
}

fn is_open(err: &BoxError) -> bool {
    rejected(&**err).is_some_and(|r| r.kind() == RejectionKind::CircuitOpen)
}

fn rejection(err: &BoxError) -> &Rejected {
    rejected(&**err).expect("a rejection")
}

// ===== trip rules =====

#[tokio::test(start_paused = true)]
async fn opens_after_failure_rate_exceeds_threshold() {
    let (layer, handle) = builder()
        .count_window(10)
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Pass, Pass, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(
        handle.counts(),
        WindowCounts {
            calls: 3,
            failures: 1,
            slow: 0
        }
    );
    run(&layer, &[Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(run(&layer, &[Pass]).await, [true]);
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_minimum_calls() {
    let (layer, handle) = builder()
        .count_window(10)
        .minimum_calls(5)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail, Fail, Fail, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.failure_rate(), 1.0);
    run(&layer, &[Pass]).await;
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "the call that reaches the minimum also decides"
    );
}

#[tokio::test(start_paused = true)]
async fn count_window_slides_so_1000_successes_then_20_failures_open_a_window_of_10() {
    let (layer, handle) = builder()
        .count_window(10)
        .minimum_calls(10)
        .failure_rate_threshold(0.5)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Pass; 1000]).await;
    let rejections = run(&layer, &[Fail; 20]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    let admitted = rejections.iter().filter(|r| !**r).count();
    assert_eq!(
        admitted, 5,
        "the fifth failure makes 5 of the last 10 calls failures"
    );
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_failures_older_than_its_span() {
    let (layer, handle) = builder()
        .time_window(secs(5))
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail, Fail, Fail]).await;
    advance(secs(5)).await;
    assert_eq!(
        handle.counts().calls,
        0,
        "the failures fell out of the window"
    );
    run(&layer, &[Pass, Pass, Pass, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.failure_rate(), 0.25);
    advance(secs(1)).await;
    run(&layer, &[Fail, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open, "3 of 6 failed");
}

#[tokio::test(start_paused = true)]
async fn time_window_success_trips_once_a_new_second_drops_the_successes_before_it() {
    let (layer, handle) = builder()
        .time_window(secs(2))
        .minimum_calls(3)
        .failure_rate_threshold(0.5)
        .no_consecutive_failures()
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Pass, Pass, Pass, Pass]).await;
    advance(secs(1)).await;
    // 2 of 6 failed: below the threshold, so the successes of this second decide nothing.
    run(&layer, &[Fail, Fail, Pass]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    advance(secs(1)).await;
    // The first second's successes fell out: with this success, 2 of 4 failed.
    run(&layer, &[Pass]).await;
    assert_eq!(handle.state(), CircuitState::Open, "{:?}", handle.counts());
}

#[tokio::test(start_paused = true)]
async fn time_window_success_that_reaches_the_minimum_calls_trips() {
    let (layer, handle) = builder()
        .time_window(secs(10))
        .minimum_calls(3)
        .failure_rate_threshold(0.5)
        .no_consecutive_failures()
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Closed, "fewer than 3 calls");
    run(&layer, &[Pass]).await;
    assert_eq!(handle.state(), CircuitState::Open, "2 of 3 failed");
}

#[tokio::test(start_paused = true)]
async fn opens_on_slow_call_rate() {
    let (layer, handle) = builder()
        .count_window(4)
        .minimum_calls(4)
        .slow_call_duration(ms(100))
        .slow_call_rate_threshold(0.5)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Pass, Call::SlowOk(100), Call::SlowOk(101)]).await;
    assert_eq!(handle.counts().slow, 1, "exactly the duration is not slow");
    run(&layer, &[Pass]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    run(&layer, &[Call::SlowOk(500)]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(handle.failure_rate(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_whatever_the_rate() {
    let (layer, handle) = builder()
        .count_window(100)
        .minimum_calls(100)
        .consecutive_failures(3)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail, Fail, Pass, Fail, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.consecutive_failures(), 2);
    run(&layer, &[Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);
}

/// `n` calls failing independently with probability `p`, from a seeded stream.
fn brownout(n: usize, p: f64, seed: u64) -> Vec<Call> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| if rng.random_bool(p) { Fail } else { Pass })
        .collect()
}

/// Whether the next call is shed: rejected at once while the breaker stays closed.
async fn sheds_next(layer: &CircuitBreakerLayer, handle: &CircuitBreakerHandle) -> bool {
    let rejected = run(layer, &[Pass]).await[0];
    rejected && handle.state() == CircuitState::Closed
}

#[tokio::test(start_paused = true)]
async fn by_default_five_failures_in_a_row_shed_from_a_clean_history_and_fourteen_open() {
    let (layer, handle) = builder().build().unwrap().pair();
    run(&layer, &[Pass; 200]).await;
    let rejected = run(&layer, &[Fail; 5]).await;
    assert_eq!(rejected, [false; 5], "four failures shed nothing");
    assert!(
        sheds_next(&layer, &handle).await,
        "five calls, long before the window's 100"
    );
    // Each failure in the band owes the next call a shed: half of the calls go through, and
    // the breaker opens at the run as rare at the 30 % it rides through (14) as 5 is at a
    // clean history.
    let rejected = run(&layer, &[Fail; 18]).await;
    assert_eq!(
        rejected,
        [false, true].repeat(9),
        "one shed after each failure"
    );
    assert_eq!(handle.state(), CircuitState::Open, "14 failures in a row");
}

#[tokio::test(start_paused = true)]
async fn a_success_ends_the_shedding_once_the_last_calls_fail_no_more_than_ridden() {
    let (layer, handle) = builder().build().unwrap().pair();
    run(&layer, &[Pass; 100]).await;
    run(&layer, &[Fail; 5]).await;
    assert!(sheds_next(&layer, &handle).await);
    // A success after five failures in ten: the shedding goes on, a failure owes a shed.
    assert!(!run(&layer, &[Pass]).await[0]);
    assert!(!run(&layer, &[Fail]).await[0]);
    assert!(
        sheds_next(&layer, &handle).await,
        "the band outlived its run"
    );
    // Successes until at most 3 of the 10 calls before one failed: it ends the band.
    assert_eq!(run(&layer, &[Pass; 10]).await, [false; 10]);
    assert!(!run(&layer, &[Fail]).await[0]);
    assert!(
        !sheds_next(&layer, &handle).await,
        "one failure sheds nothing"
    );
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_retry_in_the_band_is_shed_and_a_first_attempt_only_when_owed() {
    use seawall_core::Attempt;
    let (layer, handle) = builder().build().unwrap().pair();
    run(&layer, &[Pass; 100]).await;
    run(&layer, &[Fail; 5]).await;
    let retry = Attempt {
        number: 2,
        last: false,
    };
    // The retry layer makes its attempt current around its call of the layers below.
    let mut svc = layer.layer(downstream());
    svc.ready().await.unwrap();
    let retried = retry.scope(|| svc.call(Pass)).await;
    assert!(retried.is_err_and(|e| is_open(&e)), "a retry is shed");
    assert!(
        sheds_next(&layer, &handle).await,
        "the first attempt owed a shed"
    );
    assert!(!run(&layer, &[Pass]).await[0], "none owed: it goes through");
    // Enough successes that the last ten calls fail no more than the 30 % ridden through.
    run(&layer, &[Pass; 10]).await;
    svc.ready().await.unwrap();
    let retried = retry.scope(|| svc.call(Pass)).await;
    assert!(retried.is_ok(), "the success ended the band");
}

#[tokio::test(start_paused = true)]
async fn a_thirty_percent_brownout_needs_a_run_the_brownout_hardly_ever_makes() {
    // Past the onset (a window of the brownout's calls), runs of 5 to 13 failures come
    // about 40 times in 20 000 calls and open a fixed-run breaker each time; the adaptive one
    // asks for 14.
    let calls = brownout(20_000, 0.3, 7);
    let fixed = builder()
        .no_failure_rate()
        .consecutive_failures(5)
        .build()
        .unwrap();
    let (layer, handle) = builder().no_failure_rate().build().unwrap().pair();
    let warm = brownout(100, 0.3, 8);
    run(&layer, &warm).await;
    run(&fixed, &warm).await;
    for chunk in calls.chunks(500) {
        run(&layer, chunk).await;
        assert_eq!(handle.state(), CircuitState::Closed);
    }
    let fixed_opens = run(&fixed, &calls).await.iter().filter(|&&r| r).count();
    assert!(fixed_opens > 0, "a fixed run of 5 trips in a brownout");
    // The same breaker still finds an outage, after a run long for its baseline (over ten
    // failures while the window reads 20 % or more), shedding or opening.
    run(&layer, &[Pass]).await;
    let rejected = run(&layer, &[Fail; 40]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    assert!(!rejected[..10].iter().any(|&r| r), "{rejected:?}");
}

#[tokio::test(start_paused = true)]
async fn the_run_that_sheds_follows_the_last_calls_before_the_window_catches_up() {
    let (layer, handle) = builder().no_failure_rate().build().unwrap().pair();
    run(&layer, &[Pass; 100]).await;
    // Two of the last ten calls failed: a baseline of 20 %, a run of 11.
    run(&layer, &[Fail, Pass, Pass, Fail, Pass]).await;
    let rejected = run(&layer, &[Fail; 11]).await;
    assert_eq!(rejected, [false; 11], "ten failures shed nothing");
    assert!(sheds_next(&layer, &handle).await, "eleven do");
}

#[tokio::test(start_paused = true)]
async fn a_run_is_judged_against_the_window_rate_raised_by_its_noise() {
    // 2 failures in every 9 calls: the window without the run reads 20 of 99 (shrunk by ten
    // successes), 0.20 and a run of 11; a window that reads so little may hold a true 30 %,
    // whose runs of 11 come ten times as often as one in 10⁷, so the rule takes the estimate
    // two standard errors up (0.28) and sheds from 13.
    let (layer, handle) = builder().no_failure_rate().build().unwrap().pair();
    let pattern = [Fail, Pass, Pass, Pass, Fail, Pass, Pass, Pass, Pass];
    let history: Vec<Call> = pattern.iter().copied().cycle().take(200).collect();
    run(&layer, &history).await;
    let rejected = run(&layer, &[Fail; 13]).await;
    assert_eq!(rejected, [false; 13], "twelve failures shed nothing");
    assert!(sheds_next(&layer, &handle).await, "thirteen do");
}

#[tokio::test(start_paused = true)]
async fn the_consecutive_rule_can_be_switched_off() {
    let (layer, handle) = builder().no_consecutive_failures().build().unwrap().pair();
    run(&layer, &[Fail; 99]).await;
    assert_eq!(handle.state(), CircuitState::Closed, "the rate rule only");
    run(&layer, &[Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);
}

/// A breaker with the default rules and noise margin (`builder()` sets the margin to 0).
fn defaults() -> CircuitBreakerConfigBuilder<CircuitBreakerLayer> {
    CircuitBreakerLayer::builder().name("dep").open_jitter(0.0)
}

#[tokio::test(start_paused = true)]
async fn a_forty_percent_brownout_does_not_trip_the_rate_rule_beyond_noise() {
    // 50 % of 100 calls is 2σ above a true 40 %, which a window decided at every call crosses
    // about once in 300 calls; 65 (the default 3σ margin) about once in 10 million.
    let calls = brownout(100_000, 0.4, 12);
    let on_threshold = builder().no_consecutive_failures().build().unwrap();
    let (layer, handle) = defaults().no_consecutive_failures().build().unwrap().pair();
    run(&layer, &[Pass; 100]).await;
    run(&on_threshold, &[Pass; 100]).await;
    for chunk in calls.chunks(1000) {
        run(&layer, chunk).await;
        assert_eq!(handle.state(), CircuitState::Closed);
    }
    let opens = run(&on_threshold, &calls)
        .await
        .iter()
        .filter(|&&r| r)
        .count();
    assert!(opens > 0, "the bare threshold trips on noise");
}

#[tokio::test(start_paused = true)]
async fn a_downstream_failing_every_call_trips_the_rate_rule_after_50_plus_3_sigma_failures() {
    // 50 + 3 × √(100 × 0.5 × 0.5) = 65 failures of the last 100 calls.
    let (layer, handle) = defaults().no_consecutive_failures().build().unwrap().pair();
    run(&layer, &[Pass; 100]).await;
    run(&layer, &[Fail; 64]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    run(&layer, &[Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_forty_percent_brownout_does_not_open_the_default_breaker() {
    // Thirty seconds at 1000 calls a second, after a healthy minute.
    let (layer, handle) = defaults().build().unwrap().pair();
    run(&layer, &[Pass; 1000]).await;
    for chunk in brownout(30_000, 0.4, 13).chunks(1000) {
        run(&layer, chunk).await;
        assert_eq!(handle.state(), CircuitState::Closed);
    }
}

#[tokio::test(start_paused = true)]
async fn a_window_of_only_failures_trips_whatever_its_size() {
    // 4 calls cannot clear 3σ over 50 % (2 + 3 × 1 = 5), but a window of nothing else trips.
    let (layer, handle) = defaults()
        .count_window(4)
        .no_consecutive_failures()
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail, Fail, Fail, Pass]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    run(&layer, &[Fail, Fail, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Closed, "3 of 4");
    run(&layer, &[Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn the_slow_call_rate_clears_the_same_margin() {
    let (layer, handle) = defaults()
        .slow_call_duration(ms(100))
        .slow_call_rate_threshold(0.5)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Pass; 36]).await;
    run(&layer, &[Call::SlowOk(200); 64]).await;
    assert_eq!(handle.counts().slow, 64);
    assert_eq!(handle.state(), CircuitState::Closed, "64 slow of 100");
    run(&layer, &[Call::SlowOk(200)]).await;
    assert_eq!(handle.state(), CircuitState::Open, "65 slow of 100");
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_count_for_nothing() {
    let classify = ClassifyFn::new(|r: Result<&&'static str, &BoxError>| match r {
        Ok(_) => Outcome::Success,
        Err(e) if e.to_string() == "slow boom" => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    });
    let (layer, handle) = builder().consecutive_failures(1).build().unwrap().pair();
    let svc = layer.classify(classify).layer(downstream());
    for _ in 0..5 {
        assert!(svc.clone().oneshot(Call::SlowFail(1)).await.is_err());
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.counts(), WindowCounts::default());
}

// ===== rejections =====

#[tokio::test(start_paused = true)]
async fn a_rejection_is_circuit_open_with_the_time_left() {
    let (layer, handle) = builder().consecutive_failures(1).build().unwrap().pair();
    run(&layer, &[Fail]).await;
    advance(secs(4)).await;
    let err = layer.layer(downstream()).oneshot(Pass).await.unwrap_err();
    let r = rejection(&err);
    assert_eq!(r.kind(), RejectionKind::CircuitOpen);
    assert_eq!(r.name(), "dep");
    assert_eq!(r.retry_after(), Some(secs(6)));
    assert_eq!(handle.open_remaining(), Some(secs(6)));
}

#[tokio::test(start_paused = true)]
async fn the_rejection_is_ready_at_once_and_the_inner_service_is_not_called() {
    let (mock, mut mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let (layer, handle) = builder().consecutive_failures(1).build().unwrap().pair();
    handle.force_open();
    let mut svc = layer.layer(mock);
    let mut call = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert!(is_open(&assert_ready!(call.poll()).unwrap_err()));
    let mut next = task::spawn(mock_handle.next_request());
    assert_pending!(next.poll(), "no request reached the inner service");
}

#[tokio::test(start_paused = true)]
async fn poll_ready_only_delegates_even_when_open() {
    let (mock, mut mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let (layer, handle) = builder().build().unwrap().pair();
    handle.force_open();
    let mut svc = layer.layer(mock);
    mock_handle.allow(0);
    let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_pending!(ready.poll(), "not ready because the inner service is not");
    mock_handle.allow(1);
    assert!(
        assert_ready!(ready.poll()).is_ok(),
        "ready although the breaker is open"
    );
}

#[tokio::test(start_paused = true)]
async fn the_inner_error_stays_downcastable() {
    #[derive(Debug)]
    struct Refused;
    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("refused")
        }
    }
    impl std::error::Error for Refused {}

    let layer = builder().build().unwrap();
    let svc = layer.layer(service_fn(|()| async { Err::<(), _>(Refused) }));
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(err.downcast_ref::<Refused>().is_some());
    assert!(rejected(&*err).is_none());
}

// ===== open durations =====

#[tokio::test(start_paused = true)]
async fn half_open_after_the_open_duration_then_closes_on_successful_probes() {
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(2)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail]).await;
    advance(ms(9_999)).await;
    assert_eq!(run(&layer, &[Pass]).await, [true]);
    advance(ms(1)).await;
    assert_eq!(run(&layer, &[Pass]).await, [false]);
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    run(&layer, &[Pass]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(
        handle.counts(),
        WindowCounts::default(),
        "probes do not fill the window"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_opens_the_breaker_again() {
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(3)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    run(&layer, &[Pass, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(handle.open_remaining(), Some(secs(10)));
}

#[tokio::test(start_paused = true)]
async fn by_default_half_of_the_probes_close_and_six_failures_of_ten_open_again() {
    let default_ratio = || {
        CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .open_duration(secs(10))
            .open_jitter(0.0)
            .build()
            .unwrap()
            .pair()
    };
    // A brownout's probe round: three failures of ten close the breaker again.
    let (layer, handle) = default_ratio();
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    run(&layer, &[Fail, Pass, Fail, Pass, Fail, Pass, Pass, Pass]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    // An outage's: the sixth failure opens it, before the tenth probe.
    let (layer, handle) = default_ratio();
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    run(&layer, &[Fail; 5]).await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    run(&layer, &[Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_on_a_success_ratio() {
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(4)
        .half_open_success_ratio(0.5)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    run(&layer, &[Fail, Pass, Fail]).await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    run(&layer, &[Pass]).await;
    assert_eq!(handle.state(), CircuitState::Closed);

    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    run(&layer, &[Fail, Fail]).await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    run(&layer, &[Fail]).await;
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "3 failures of 4 leave no way to 2 successes"
    );
}

#[tokio::test(start_paused = true)]
async fn open_backoff_grows_on_each_reopening_and_starts_over_after_recovery() {
    let backoff = Backoff::exponential(secs(1))
        .cap(secs(5))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(1)
        .open_backoff(backoff)
        .build()
        .unwrap()
        .pair();
    let mut opens = Vec::new();
    run(&layer, &[Fail]).await;
    for _ in 0..4 {
        let open = handle.open_remaining().unwrap();
        opens.push(open);
        advance(open).await;
        run(&layer, &[Fail]).await;
    }
    assert_eq!(opens, [secs(1), secs(2), secs(4), secs(5)]);
    advance(secs(5)).await;
    run(&layer, &[Pass]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    run(&layer, &[Fail]).await;
    assert_eq!(handle.open_remaining(), Some(secs(1)));
}

#[tokio::test(start_paused = true)]
async fn by_default_a_breaker_opens_1s_2s_then_3s_each_stretched_by_up_to_a_quarter() {
    let mut spread = std::collections::BTreeSet::new();
    for seed in 0..10 {
        let (layer, handle) = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .seed(seed)
            .build()
            .unwrap()
            .pair();
        run(&layer, &[Fail]).await;
        for base in [1000, 2000, 3000, 3000] {
            let open = handle.open_remaining().unwrap();
            assert!(
                open >= ms(base) && open <= ms(base + base / 4),
                "{open:?} for {base} ms"
            );
            spread.insert(open);
            advance(open).await;
            run(&layer, &[Fail]).await;
        }
    }
    assert!(
        spread.len() > 20,
        "breakers that opened together probe apart"
    );
}

#[tokio::test(start_paused = true)]
async fn open_jitter_stretches_each_opening_within_its_range_and_spreads_breakers() {
    let mut opens = Vec::new();
    for seed in 0..20 {
        let (layer, handle) = builder()
            .consecutive_failures(1)
            .open_duration(secs(5))
            .open_jitter(0.2)
            .seed(seed)
            .build()
            .unwrap()
            .pair();
        run(&layer, &[Fail]).await;
        let open = handle.open_remaining().unwrap();
        assert!(open >= secs(5) && open <= secs(6), "{open:?}");
        opens.push(open);
    }
    opens.sort();
    opens.dedup();
    assert!(opens.len() > 15, "breakers opened together probe apart");
}

#[tokio::test(start_paused = true)]
async fn jittered_backoff_repeats_with_the_same_seed() {
    async fn opens(seed: u64) -> Vec<Duration> {
        let backoff = Backoff::exponential(secs(1)).cap(secs(60)).build().unwrap();
        let (layer, handle) = builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .open_backoff(backoff)
            .seed(seed)
            .build()
            .unwrap()
            .pair();
        run(&layer, &[Fail]).await;
        let mut opens = Vec::new();
        for attempt in 0..5 {
            let open = handle.open_remaining().unwrap();
            assert!(open <= secs(1 << attempt), "{open:?} above the curve");
            opens.push(open);
            advance(open).await;
            run(&layer, &[Fail]).await;
        }
        opens
    }
    assert_eq!(opens(7).await, opens(7).await);
}

#[tokio::test(start_paused = true)]
async fn the_result_that_trips_can_set_the_open_duration() {
    let read = RetryAfterFn::new(|r: Result<&&'static str, &BoxError>| {
        r.err()
            .filter(|e| e.to_string() == "boom")
            .map(|_| secs(42))
    });
    let (layer, handle) = builder().consecutive_failures(1).build().unwrap().pair();
    let svc = layer.open_duration_from(read).layer(downstream());
    let _ = svc.clone().oneshot(Fail).await;
    assert_eq!(handle.open_remaining(), Some(secs(42)));
    let err = svc.oneshot(Pass).await.unwrap_err();
    assert_eq!(rejection(&err).retry_after(), Some(secs(42)));
}

#[tokio::test(start_paused = true)]
async fn an_open_duration_from_the_result_is_clamped_to_the_configured_range() {
    use seawall_circuit_breaker::RetryAfterHeader;
    use seawall_core::classify::HttpStatus;

    async fn open_for(layer: CircuitBreakerLayer, retry_after: &'static str) -> Duration {
        let handle = layer.handle();
        // A 503 is overload, which opens no breaker by default: this one counts it as a failure.
        let svc = layer
            .classify(
                HttpStatus::server_errors().with_failure(http::StatusCode::SERVICE_UNAVAILABLE),
            )
            .open_duration_from(RetryAfterHeader)
            .layer(service_fn(move |()| async move {
                let res = http::Response::builder()
                    .status(503)
                    .header("retry-after", retry_after)
                    .body(())
                    .unwrap();
                Ok::<_, BoxError>(res)
            }));
        svc.oneshot(()).await.unwrap();
        handle.open_remaining().expect("open")
    }
    let fixed = || builder().consecutive_failures(1).build().unwrap();
    assert_eq!(open_for(fixed(), "0").await, secs(1), "at least 1 s");
    assert_eq!(
        open_for(fixed(), "86400").await,
        secs(100),
        "10 × the open duration"
    );
    assert_eq!(open_for(fixed(), "42").await, secs(42));

    let backoff = Backoff::exponential(secs(1)).cap(secs(60)).build().unwrap();
    let with_backoff = builder()
        .consecutive_failures(1)
        .open_backoff(backoff)
        .build()
        .unwrap();
    assert_eq!(open_for(with_backoff, "86400").await, secs(60), "the cap");
    let configured = builder()
        .consecutive_failures(1)
        .hinted_open_min(secs(5))
        .hinted_open_max(secs(7))
        .build()
        .unwrap();
    assert_eq!(open_for(configured, "1").await, secs(5));
}

#[tokio::test(start_paused = true)]
async fn half_open_gives_up_on_probes_after_max_wait() {
    let (mock, mut mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(1)
        .half_open_max_wait(secs(3))
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    let mut svc = layer.layer(mock);
    let mut probe = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert_pending!(probe.poll());
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    advance(ms(2_999)).await;
    let early = svc.ready().await.unwrap().call(Pass).await;
    assert!(is_open(&early.unwrap_err()));
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    advance(ms(1)).await;
    let late = svc.ready().await.unwrap().call(Pass).await;
    assert_eq!(rejection(&late.unwrap_err()).retry_after(), Some(secs(10)));
    assert_eq!(handle.state(), CircuitState::Open);

    // The hung probe finally answers: it belongs to a finished half-open phase.
    let (_, send) = mock_handle.next_request().await.unwrap();
    send.send_response("ok");
    assert!(assert_ready!(probe.poll()).is_ok());
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_past_the_max_wait_finds_the_breaker_open_even_with_free_probe_slots() {
    let (mock, _mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(4)
        .half_open_max_wait(secs(1))
        // The call makes the move, not the timer.
        .automatic_transitions(false)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    let mut svc = layer.layer(mock);
    let mut hung = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert_pending!(hung.poll());
    assert_eq!(handle.state(), CircuitState::HalfOpen);

    advance(secs(2)).await;
    let mut late = task::spawn(svc.ready().await.unwrap().call(Pass));
    let late = assert_ready!(late.poll(), "past the max wait, not a new probe");
    assert_eq!(rejection(&late.unwrap_err()).retry_after(), Some(secs(10)));
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_opens_the_breaker_again_after_the_default_max_wait() {
    let (mock, _mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(1)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    let mut svc = layer.layer(mock);
    let mut hung = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert_pending!(hung.poll());
    advance(secs(60)).await;
    let mut next = task::spawn(svc.ready().await.unwrap().call(Pass));
    let next = assert_ready!(next.poll(), "rejected at once, not queued behind the probe");
    assert!(is_open(&next.unwrap_err()));
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "half-open gave up after 60 s"
    );
}

// ===== half-open probes and cancellation =====

/// Without slow start, every probe goes through at once, up to `half_open_probes`.
#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_n_probes() {
    let (mock, mut mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(2)
        .half_open_slow_start(false)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    let mut svc = layer.layer(mock);
    let mut probes = Vec::new();
    for _ in 0..2 {
        probes.push(task::spawn(svc.ready().await.unwrap().call(Pass)));
    }
    for probe in &mut probes {
        assert_pending!(probe.poll());
    }
    let third = svc.ready().await.unwrap().call(Pass).await;
    assert!(is_open(&third.unwrap_err()));

    let (_, send) = mock_handle.next_request().await.unwrap();
    send.send_response("ok");
    assert!(assert_ready!(probes[0].poll()).is_ok());
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    let fourth = svc.ready().await.unwrap().call(Pass).await;
    assert!(
        is_open(&fourth.unwrap_err()),
        "a decided probe still holds its place"
    );

    let (_, send) = mock_handle.next_request().await.unwrap();
    send.send_response("ok");
    assert!(assert_ready!(probes[1].poll()).is_ok());
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_starts_with_one_probe_and_lets_one_more_through_per_success() {
    let (mock, mut mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(10)
        .half_open_success_ratio(0.5)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    let mut svc = layer.layer(mock);
    let mut first = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert_pending!(first.poll());
    let mut second = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert!(
        is_open(&assert_ready!(second.poll()).unwrap_err()),
        "one probe in flight before any success"
    );

    let (_, send) = mock_handle.next_request().await.unwrap();
    send.send_response("ok");
    assert!(assert_ready!(first.poll()).is_ok());
    let mut two = Vec::new();
    for _ in 0..2 {
        two.push(task::spawn(svc.ready().await.unwrap().call(Pass)));
    }
    for probe in &mut two {
        assert_pending!(probe.poll());
    }
    let mut third = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert!(
        is_open(&assert_ready!(third.poll()).unwrap_err()),
        "two in flight after one success"
    );

    // A failure frees its place without widening the window.
    let (_, send) = mock_handle.next_request().await.unwrap();
    send.send_error("down");
    assert!(assert_ready!(two[0].poll()).is_err());
    let mut refill = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert_pending!(refill.poll());
    let mut over = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert!(is_open(&assert_ready!(over.poll()).unwrap_err()));
    assert_eq!(handle.state(), CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot_and_records_nothing() {
    let (mock, mut mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let recorder = seawall_core::testing::TestRecorder::new();
    let (layer, handle) = recorder.install_for(|| {
        builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .build()
            .unwrap()
            .pair()
    });
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    let mut svc = layer.layer(mock);
    let mut probe = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert_pending!(probe.poll());
    assert!(is_open(
        &svc.ready().await.unwrap().call(Pass).await.unwrap_err()
    ));
    drop(probe);
    let _ = mock_handle.next_request().await;

    let calls = |outcome| {
        recorder.counter(
            "seawall_circuit_breaker_calls_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(calls("success") + calls("failure") + calls("ignored"), 1);
    assert_eq!(handle.state(), CircuitState::HalfOpen);

    let mut probe = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert_pending!(probe.poll(), "the slot is free again");
    let (_, send) = mock_handle.next_request().await.unwrap();
    send.send_response("ok");
    assert!(assert_ready!(probe.poll()).is_ok());
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_records_nothing() {
    let (mock, _mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let (layer, handle) = builder().consecutive_failures(1).build().unwrap().pair();
    let mut svc = layer.layer(mock);
    for _ in 0..10 {
        let mut call = task::spawn(svc.ready().await.unwrap().call(Fail));
        assert_pending!(call.poll());
    }
    assert_eq!(handle.counts(), WindowCounts::default());
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_late_result_from_an_earlier_state_is_not_counted() {
    let (mock, mut mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(1)
        .build()
        .unwrap()
        .pair();
    let mut svc = layer.layer(mock);
    let mut slow = task::spawn(svc.ready().await.unwrap().call(Pass));
    assert_pending!(slow.poll());
    let (_, slow_send) = mock_handle.next_request().await.unwrap();

    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    run(&layer, &[Pass]).await;
    assert_eq!(handle.state(), CircuitState::Closed);

    slow_send.send_error("late boom");
    assert!(assert_ready!(slow.poll()).is_err());
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "the failure began two states ago"
    );
    assert_eq!(handle.counts(), WindowCounts::default());
}

// ===== classification =====

#[tokio::test(start_paused = true)]
async fn http_5xx_responses_trip_and_retry_after_sets_the_open_duration() {
    use seawall_circuit_breaker::RetryAfterHeader;
    use seawall_core::classify::HttpStatus;

    let (layer, handle) = builder().consecutive_failures(2).build().unwrap().pair();
    let layer = layer
        .classify(HttpStatus::server_errors())
        .open_duration_from(RetryAfterHeader);
    let svc = layer.layer(service_fn(|status: u16| async move {
        let res = http::Response::builder()
            .status(status)
            .header("retry-after", "42")
            .body(())
            .unwrap();
        Ok::<_, BoxError>(res)
    }));
    assert_eq!(svc.clone().oneshot(404).await.unwrap().status(), 404);
    svc.clone().oneshot(502).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Closed);
    svc.clone().oneshot(500).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(handle.open_remaining(), Some(secs(42)));
}

/// Answers every call with the status it asks for.
fn statuses() -> impl Service<
    u16,
    Response = http::Response<()>,
    Error = BoxError,
    Future = impl Future<Output = Result<http::Response<()>, BoxError>> + Send,
> + Clone {
    service_fn(|status: u16| async move {
        let res = http::Response::builder()
            .status(status)
            .header("retry-after", "1")
            .body(())
            .unwrap();
        Ok::<_, BoxError>(res)
    })
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_429_and_503_does_not_open_the_breaker_by_default() {
    use seawall_core::classify::HttpStatus;

    let (layer, handle) = builder()
        .count_window(10)
        .minimum_calls(5)
        .consecutive_failures(3)
        .build()
        .unwrap()
        .pair();
    let svc = layer.classify(HttpStatus::default()).layer(statuses());
    for status in [429, 503].repeat(50) {
        svc.clone().oneshot(status).await.unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.counts().calls, 0, "overload counts for nothing");
    svc.clone().oneshot(200).await.unwrap();
    assert_eq!(handle.counts().calls, 1);
}

#[tokio::test(start_paused = true)]
async fn overload_opens_the_breaker_when_it_counts_as_failure() {
    use seawall_core::classify::HttpStatus;

    let (layer, handle) = builder()
        .consecutive_failures(3)
        .overload_is_failure(true)
        .build()
        .unwrap()
        .pair();
    let svc = layer.classify(HttpStatus::default()).layer(statuses());
    for status in [429, 503] {
        svc.clone().oneshot(status).await.unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    svc.clone().oneshot(503).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
}

mod grpc {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use seawall_core::classify::GrpcCodes;

    type Frames = StreamBody<
        futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>,
    >;

    fn streaming(code: &'static str) -> http::Response<Frames> {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static(code));
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"msg"))),
            Ok(Frame::trailers(trailers)),
        ];
        http::Response::builder()
            .header("content-type", "application/grpc")
            .body(StreamBody::new(futures::stream::iter(frames)))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_outcomes_count_at_the_end_of_the_stream() {
        let (layer, handle) = builder().consecutive_failures(1).build().unwrap().pair();
        let svc =
            layer
                .classify(GrpcCodes::new())
                .layer(service_fn(|code: &'static str| async move {
                    Ok::<_, BoxError>(streaming(code))
                }));

        let ok = svc.clone().oneshot("0").await.unwrap();
        ok.into_body().collect().await.unwrap();
        let unavailable = svc.clone().oneshot("14").await.unwrap();
        assert_eq!(
            handle.state(),
            CircuitState::Closed,
            "not decided before the trailers"
        );
        drop(svc.clone().oneshot("14").await.unwrap());
        assert_eq!(
            handle.state(),
            CircuitState::Closed,
            "a body dropped before its end counts for nothing"
        );
        unavailable.into_body().collect().await.unwrap();
        assert_eq!(handle.state(), CircuitState::Open);
    }

    type Endless = StreamBody<
        futures::stream::Chain<
            futures::stream::Iter<
                std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
            >,
            futures::stream::Pending<Result<Frame<Bytes>, std::convert::Infallible>>,
        >,
    >;

    /// A server-streaming response: one message, then nothing, for as long as it lives.
    fn endless() -> http::Response<Endless> {
        use futures::StreamExt;
        let first = futures::stream::iter(vec![Ok(Frame::data(Bytes::from_static(b"msg")))]);
        http::Response::builder()
            .header("content-type", "application/grpc")
            .body(StreamBody::new(first.chain(futures::stream::pending())))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_streaming_probe_is_scored_on_its_response_head() {
        let (layer, handle) = builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .build()
            .unwrap()
            .pair();
        let svc = layer.classify(GrpcCodes::new()).layer(service_fn(
            |code: Option<&'static str>| async move {
                Ok::<_, BoxError>(match code {
                    Some(code) => streaming(code).map(http_body_util::Either::Left),
                    None => endless().map(http_body_util::Either::Right),
                })
            },
        ));
        let failed = svc.clone().oneshot(Some("14")).await.unwrap();
        failed.into_body().collect().await.unwrap();
        assert_eq!(handle.state(), CircuitState::Open);
        advance(secs(10)).await;

        let mut watch = svc.clone().oneshot(None).await.unwrap().into_body();
        assert!(watch.frame().await.unwrap().unwrap().is_data());
        assert_eq!(
            handle.state(),
            CircuitState::Closed,
            "the stream is open, its probe is decided"
        );
        let next = svc.clone().oneshot(None).await;
        assert!(next.is_ok(), "the stream holds no half-open slot");
        drop(watch);
    }

    fn pushed_back(code: &'static str) -> http::Response<Frames> {
        let mut res = http::Response::new(StreamBody::new(futures::stream::iter(vec![])));
        res.headers_mut()
            .insert("grpc-status", HeaderValue::from_static(code));
        res.headers_mut()
            .insert("grpc-retry-pushback-ms", HeaderValue::from_static("100"));
        res
    }

    #[tokio::test(start_paused = true)]
    async fn resource_exhausted_and_pushed_back_unavailable_do_not_open_by_default() {
        for (overload_is_failure, expected) in
            [(false, CircuitState::Closed), (true, CircuitState::Open)]
        {
            let (layer, handle) = builder()
                .consecutive_failures(2)
                .overload_is_failure(overload_is_failure)
                .build()
                .unwrap()
                .pair();
            let svc = layer.classify(GrpcCodes::new()).layer(service_fn(
                |(code, pushback): (&'static str, bool)| async move {
                    Ok::<_, BoxError>(if pushback {
                        pushed_back(code)
                    } else {
                        streaming(code)
                    })
                },
            ));
            for _ in 0..20 {
                if let Ok(res) = svc.clone().oneshot(("8", false)).await {
                    res.into_body().collect().await.unwrap();
                }
                drop(svc.clone().oneshot(("14", true)).await);
            }
            assert_eq!(handle.state(), expected, "{overload_is_failure}");
        }
    }
}

// ===== handle, hooks, metrics =====

#[tokio::test(start_paused = true)]
async fn the_handle_forces_states() {
    let (layer, handle) = builder().consecutive_failures(2).build().unwrap().pair();
    handle.force_open();
    assert_eq!(handle.state(), CircuitState::ForcedOpen);
    advance(secs(3600)).await;
    let err = layer.layer(downstream()).oneshot(Pass).await.unwrap_err();
    assert_eq!(rejection(&err).retry_after(), None);

    handle.disable();
    assert_eq!(run(&layer, &[Fail, Fail, Fail]).await, [false; 3]);
    assert_eq!(
        handle.counts(),
        WindowCounts::default(),
        "disabled records nothing"
    );
    assert_eq!(handle.state(), CircuitState::Disabled);

    handle.metrics_only();
    run(&layer, &[Fail, Fail, Fail]).await;
    assert_eq!(handle.state(), CircuitState::MetricsOnly, "never trips");
    assert_eq!(handle.counts().failures, 3, "but records");
    assert_eq!(handle.consecutive_failures(), 3);

    handle.force_closed();
    assert_eq!(handle.counts(), WindowCounts::default());
    run(&layer, &[Fail, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);

    handle.reset();
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(run(&layer, &[Pass]).await, [false]);
}

#[tokio::test(start_paused = true)]
async fn subscribers_see_every_transition() {
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(1)
        .build()
        .unwrap()
        .pair();
    let mut states = handle.subscribe();
    assert_eq!(*states.borrow_and_update(), CircuitState::Closed);
    run(&layer, &[Fail]).await;
    assert!(states.has_changed().unwrap());
    assert_eq!(*states.borrow_and_update(), CircuitState::Open);
    advance(secs(10)).await;
    run(&layer, &[Pass]).await;
    assert_eq!(*states.borrow_and_update(), CircuitState::Closed);
    let waiter = tokio::spawn(async move {
        states.changed().await.unwrap();
        *states.borrow()
    });
    tokio::task::yield_now().await;
    handle.force_open();
    assert_eq!(waiter.await.unwrap(), CircuitState::ForcedOpen);
}

#[tokio::test(start_paused = true)]
async fn an_idle_breaker_reads_as_time_has_left_it() {
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_max_wait(secs(3))
        // No timer: the handle alone must see the time elapsed.
        .automatic_transitions(false)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    advance(secs(10)).await;
    assert_eq!(
        handle.state(),
        CircuitState::HalfOpen,
        "a call now would be a probe"
    );
    assert_eq!(handle.open_remaining(), None);
    assert_eq!(handle.counts(), WindowCounts::default(), "no probe yet");

    let (mock, _mock_handle) = tower_test::mock::pair::<Call, &'static str>();
    let mut probe = task::spawn(layer.layer(mock).oneshot(Pass));
    assert_pending!(probe.poll());
    advance(secs(3)).await;
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "the probe did not decide in time"
    );
}

#[tokio::test(start_paused = true)]
async fn in_half_open_the_counts_are_the_probes() {
    let (layer, handle) = builder()
        .count_window(10)
        .minimum_calls(4)
        .slow_call_duration(ms(100))
        .half_open_probes(3)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Pass, Pass, Fail, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(
        handle.counts().calls,
        4,
        "open shows the window that tripped"
    );
    advance(secs(10)).await;
    run(&layer, &[Pass, Call::SlowOk(150)]).await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    assert_eq!(
        handle.counts(),
        WindowCounts {
            calls: 2,
            failures: 0,
            slow: 1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn gauges_and_subscribers_follow_time_without_traffic() {
    use seawall_core::testing::TestRecorder;

    let recorder = TestRecorder::new();
    let (layer, handle) = recorder.install_for(|| {
        builder()
            .consecutive_failures(1)
            .half_open_max_wait(secs(5))
            .build()
            .unwrap()
            .pair()
    });
    let state = |state| {
        recorder.gauge(
            "seawall_circuit_breaker_state",
            &[("name", "dep"), ("state", state)],
        )
    };
    let mut states = handle.subscribe();
    run(&layer, &[Fail]).await;
    assert_eq!(*states.borrow_and_update(), CircuitState::Open);

    // No call from here on: the timer makes every move.
    let hour = secs(3600);
    let moved = tokio::time::timeout(hour, states.changed()).await;
    assert!(moved.is_ok(), "no move without a call");
    assert_eq!(*states.borrow_and_update(), CircuitState::HalfOpen);
    assert_eq!(state("half_open"), Some(1.0));
    assert_eq!(state("open"), Some(0.0));
    let moved = tokio::time::timeout(hour, states.changed()).await;
    assert!(moved.is_ok(), "no move without a call");
    assert_eq!(
        *states.borrow_and_update(),
        CircuitState::Open,
        "no probe decided within the max wait"
    );
    assert_eq!(state("open"), Some(1.0));
    assert_eq!(handle.open_remaining(), Some(secs(10)));
}

#[tokio::test(start_paused = true)]
async fn the_timer_ends_with_the_breaker() {
    let (layer, handle) = builder().consecutive_failures(1).build().unwrap().pair();
    let mut states = handle.subscribe();
    run(&layer, &[Fail]).await;
    let runtime = tokio::runtime::Handle::current().metrics();
    assert_eq!(
        runtime.num_alive_tasks(),
        1,
        "a timer follows the open breaker"
    );
    drop((layer, handle));
    states.borrow_and_update();
    let changed = tokio::time::timeout(secs(3600), states.changed()).await;
    assert!(
        changed.is_ok_and(|changed| changed.is_err()),
        "the breaker is dropped: the timer held it only weakly"
    );
    tokio::task::yield_now().await;
    assert_eq!(runtime.num_alive_tasks(), 0, "and the timer is gone");
}

#[tokio::test(start_paused = true)]
async fn the_timer_stops_once_the_breaker_closes() {
    let (layer, handle) = builder()
        .consecutive_failures(1)
        .half_open_probes(1)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Fail]).await;
    advance(secs(10)).await;
    run(&layer, &[Pass]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    tokio::task::yield_now().await;
    let runtime = tokio::runtime::Handle::current().metrics();
    assert_eq!(runtime.num_alive_tasks(), 0);
    run(&layer, &[Fail]).await;
    assert_eq!(runtime.num_alive_tasks(), 1, "a new opening, a new timer");
}

#[test]
fn a_timer_dropped_with_its_runtime_lets_the_next_opening_start_one() {
    let runtime = paused_runtime;
    let (layer, handle) = builder().consecutive_failures(1).build().unwrap().pair();
    let first = runtime();
    first.block_on(run(&layer, &[Fail]));
    assert_eq!(first.metrics().num_alive_tasks(), 1);
    drop(first);

    handle.reset();
    let second = runtime();
    second.block_on(async {
        run(&layer, &[Fail]).await;
        let runtime = tokio::runtime::Handle::current().metrics();
        assert_eq!(
            runtime.num_alive_tasks(),
            1,
            "a timer follows the new opening"
        );
        let mut states = handle.subscribe();
        states.borrow_and_update();
        let moved = tokio::time::timeout(secs(3600), states.changed()).await;
        assert!(moved.is_ok());
        assert_eq!(*states.borrow(), CircuitState::HalfOpen);
    });
}

#[tokio::test(start_paused = true)]
async fn hooks_hear_of_transitions_rejections_and_outcomes() {
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let rejections = Arc::new(AtomicUsize::new(0));
    let (t, o, r) = (transitions.clone(), outcomes.clone(), rejections.clone());
    let layer = builder()
        .consecutive_failures(2)
        .slow_call_duration(ms(50))
        .build()
        .unwrap()
        .on_state_change(move |e| {
            assert_eq!(e.name, "dep");
            t.lock().unwrap().push((e.from, e.to));
        })
        .on_outcome(move |e| o.lock().unwrap().push((e.outcome, e.duration)))
        .on_rejected(move |e| {
            assert_eq!(e.state, CircuitState::Open);
            assert_eq!(e.retry_after, Some(secs(10)));
            r.fetch_add(1, Ordering::SeqCst);
        });
    run(&layer, &[Pass, Call::SlowFail(60), Fail, Pass, Pass]).await;
    assert_eq!(
        *transitions.lock().unwrap(),
        [(CircuitState::Closed, CircuitState::Open)]
    );
    assert_eq!(
        *outcomes.lock().unwrap(),
        [
            (CallOutcome::Success, Some(ms(0))),
            (CallOutcome::SlowFailure, Some(ms(60))),
            (CallOutcome::Failure, Some(ms(0))),
        ]
    );
    assert_eq!(rejections.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_outcomes_states_and_transitions() {
    use seawall_core::testing::TestRecorder;

    let recorder = TestRecorder::new();
    let (layer, handle) = recorder.install_for(|| {
        builder()
            .count_window(4)
            .minimum_calls(4)
            .slow_call_duration(ms(100))
            .build()
            .unwrap()
            .pair()
    });
    let calls = |outcome| {
        recorder.counter(
            "seawall_circuit_breaker_calls_total",
            &[("name", "dep"), ("outcome", outcome)],
        )
    };
    let state = |state| {
        recorder.gauge(
            "seawall_circuit_breaker_state",
            &[("name", "dep"), ("state", state)],
        )
    };
    let states_at_one = || {
        CircuitStateNames::ALL
            .iter()
            .filter(|s| state(s) == Some(1.0))
            .copied()
            .collect::<Vec<_>>()
    };
    assert_eq!(states_at_one(), ["closed"]);

    run(&layer, &[Pass, Call::SlowOk(200), Call::SlowFail(200)]).await;
    assert_eq!(
        recorder.gauge("seawall_circuit_breaker_slow_call_rate", &[("name", "dep")]),
        Some(2.0 / 3.0)
    );
    run(&layer, &[Fail, Pass]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(
        recorder.gauge("seawall_circuit_breaker_failure_rate", &[("name", "dep")]),
        Some(0.5)
    );
    assert_eq!(calls("success"), 1);
    assert_eq!(calls("slow_success"), 1);
    assert_eq!(calls("slow_failure"), 1);
    assert_eq!(calls("failure"), 1);
    assert_eq!(calls("rejected"), 1);
    assert_eq!(states_at_one(), ["open"]);

    advance(secs(10)).await;
    run(&layer, &[Pass; 10]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(states_at_one(), ["closed"], "exactly one state reads 1");
    let transitions = |from, to| {
        recorder.counter(
            "seawall_circuit_breaker_transitions_total",
            &[("name", "dep"), ("from", from), ("to", to)],
        )
    };
    assert_eq!(transitions("closed", "open"), 1);
    assert_eq!(transitions("open", "half_open"), 1);
    assert_eq!(transitions("half_open", "closed"), 1);
    handle.force_open();
    assert_eq!(states_at_one(), ["forced_open"]);
}

struct CircuitStateNames;
impl CircuitStateNames {
    const ALL: [&'static str; 6] = [
        "closed",
        "open",
        "half_open",
        "disabled",
        "metrics_only",
        "forced_open",
    ];
}

#[tokio::test(start_paused = true)]
async fn every_service_and_clone_of_a_layer_shares_one_breaker() {
    let (layer, handle) = builder().consecutive_failures(3).build().unwrap().pair();
    let copy = layer.clone();
    let _ = layer.layer(downstream()).oneshot(Fail).await;
    let _ = copy.layer(downstream()).oneshot(Fail).await;
    let _ = layer.clone().layer(downstream()).oneshot(Fail).await;
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(copy.handle().state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_fails_when_slow_calls_trip() {
    let (layer, handle) = builder()
        .count_window(2)
        .minimum_calls(2)
        .slow_call_duration(ms(100))
        .slow_call_rate_threshold(1.0)
        .half_open_probes(1)
        .build()
        .unwrap()
        .pair();
    run(&layer, &[Call::SlowOk(200), Call::SlowOk(200)]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    advance(secs(10)).await;
    run(&layer, &[Call::SlowOk(200)]).await;
    assert_eq!(handle.state(), CircuitState::Open, "the slow probe failed");
    advance(secs(10)).await;
    run(&layer, &[Pass]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_layer_from_a_configuration_file() {
    let config: seawall_circuit_breaker::CircuitBreakerConfig = serde_json::from_str(
        r#"{"name": "dep", "window": {"time": "10s"}, "minimum_calls": 2,
            "failure_rate_threshold": 0.5, "noise_margin": 0, "open_duration": "3s",
            "open_jitter": 0}"#,
    )
    .unwrap();
    let (layer, handle) = CircuitBreakerLayer::from(config).pair();
    run(&layer, &[Pass, Fail]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(handle.open_remaining(), Some(secs(3)));
}

#[tokio::test(start_paused = true)]
async fn rejections_further_in_count_for_nothing_but_timeouts_count() {
    let layer = builder().consecutive_failures(3).build().unwrap();
    let handle = layer.handle();
    let full = layer.layer(tower::service_fn(|_: Call| async {
        Err::<&str, BoxError>(Rejected::new(RejectionKind::BulkheadFull, "pool").into())
    }));
    for _ in 0..10 {
        let err = full.clone().oneshot(Pass).await.unwrap_err();
        assert_eq!(
            rejection(&err).kind(),
            RejectionKind::BulkheadFull,
            "passed through as it was"
        );
    }
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "a full bulkhead says nothing of the downstream"
    );

    let slow = layer.layer(tower::service_fn(|_: Call| async {
        Err::<&str, BoxError>(Rejected::new(RejectionKind::TimedOut, "attempt").into())
    }));
    for _ in 0..3 {
        let _ = slow.clone().oneshot(Pass).await;
    }
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "timeouts are the downstream's"
    );
}

#[tokio::test(start_paused = true)]
async fn a_recorder_installed_later_counts_the_calls_made_after_it() {
    use seawall_core::testing::TestRecorder;

    let layer = builder().build().unwrap();
    run(&layer, &[Pass, Fail]).await;
    let recorder = TestRecorder::new();
    let mut call = task::spawn(layer.layer(downstream()).oneshot(Pass));
    assert!(recorder.install_for(|| assert_ready!(call.poll())).is_ok());
    let calls = |outcome| {
        recorder.counter(
            "seawall_circuit_breaker_calls_total",
            &[("name", "dep"), ("outcome", outcome)],
        )
    };
    assert_eq!(
        (calls("success"), calls("failure")),
        (1, 0),
        "the calls before the recorder are dropped"
    );
}
