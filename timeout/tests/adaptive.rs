//! The adaptive timeout on the paused clock: it learns the downstream's latency, climbs when
//! every call becomes slower, still cuts a black hole, keeps to its floor and ceiling, and lets
//! a last attempt use the caller's remaining deadline.

use std::future::pending;
use std::time::Duration;

use proptest::prelude::*;
use seawall_core::testing::paused_runtime;
use seawall_core::{Attempt, BoxError, Deadline, RejectionKind, rejected};
use seawall_timeout::{AdaptiveTimeout, TimeoutConfig, TimeoutHandle, TimeoutLayer};
use tokio::time::{Instant, advance, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A downstream whose call takes as long as the request says; `None` never answers.
fn downstream()
-> impl Service<Option<Duration>, Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(|latency: Option<Duration>| async move {
        match latency {
            Some(latency) => sleep(latency).await,
            None => pending().await,
        }
        Ok::<_, BoxError>(())
    })
}

/// Below the default floor (100 ms), to see the timeout follow a fast downstream.
fn adaptive() -> AdaptiveTimeout {
    AdaptiveTimeout::new().floor(ms(1)).ceiling(ms(1000))
}

fn layer(adaptive: AdaptiveTimeout) -> (TimeoutLayer, TimeoutHandle) {
    TimeoutLayer::builder()
        .name("dep")
        .adaptive(adaptive)
        .build()
        .unwrap()
        .pair()
}

/// Makes `n` calls of `latency` at once and waits for them all; returns how many succeeded.
async fn calls<S>(svc: &S, n: usize, latency: Duration) -> usize
where
    S: Service<Option<Duration>, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(svc.clone().oneshot(Some(latency)));
    }
    let mut ok = 0;
    while let Some(result) = set.join_next().await {
        ok += usize::from(result.unwrap().is_ok());
    }
    ok
}

/// How long one call of `latency` ran, and how it ended.
async fn one_call<S>(svc: &S, latency: Option<Duration>) -> (Duration, Result<(), RejectionKind>)
where
    S: Service<Option<Duration>, Response = (), Error = BoxError> + Clone,
{
    let start = Instant::now();
    let result = svc.clone().oneshot(latency).await;
    let kind = result.map_err(|e| rejected(&*e).expect("a rejection").kind());
    (start.elapsed(), kind)
}

/// Lets the cached percentile refresh.
async fn settle() {
    advance(ms(200)).await;
}

/// Equal but for the timer wheel's rounding up to the millisecond.
fn to_the_tick(actual: Duration, expected: Duration) -> bool {
    actual >= expected && actual - expected < ms(1)
}

fn within(actual: Duration, expected: Duration) -> bool {
    actual.abs_diff(expected) <= expected / 32 + Duration::from_micros(1)
}

#[tokio::test(start_paused = true)]
async fn until_enough_calls_were_seen_the_ceiling_applies() {
    let (layer, handle) = layer(adaptive().min_samples(100));
    let svc = layer.layer(downstream());
    assert_eq!(handle.timeout(), ms(1000));
    assert_eq!(calls(&svc, 99, ms(10)).await, 99);
    settle().await;
    assert_eq!(handle.percentile(), None, "99 calls are not enough");
    let (took, ended) = one_call(&svc, None).await;
    assert_eq!((took, ended), (ms(1000), Err(RejectionKind::TimedOut)));
}

#[tokio::test(start_paused = true)]
async fn learns_the_downstream_latency_and_cuts_a_black_hole_at_a_multiple_of_it() {
    let (layer, handle) = layer(adaptive());
    let svc = layer.layer(downstream());
    assert_eq!(calls(&svc, 200, ms(20)).await, 200);
    settle().await;
    let p99 = handle.percentile().expect("200 calls are enough");
    assert!(within(p99, ms(20)), "{p99:?}");
    assert!(within(handle.timeout(), ms(60)), "{:?}", handle.timeout());
    // A black hole is cut at 3 × p99, far before the ceiling.
    let (took, ended) = one_call(&svc, None).await;
    assert!(within(took, ms(60)), "{took:?}");
    assert_eq!(ended, Err(RejectionKind::TimedOut));
    // A call a little slower than the tail still passes.
    assert_eq!(one_call(&svc, Some(ms(50))).await.1, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn climbs_when_the_downstream_becomes_uniformly_slower() {
    let (layer, handle) = layer(adaptive());
    let svc = layer.layer(downstream());
    calls(&svc, 200, ms(10)).await;
    settle().await;
    assert!(within(handle.timeout(), ms(30)));
    // Every call now takes 200 ms: the first ones are cut, each cut doubles the timeout of
    // the calls after it, and the doubled calls that answer raise the percentile.
    let mut rounds = 0;
    while calls(&svc, 10, ms(200)).await < 10 {
        rounds += 1;
        assert!(
            rounds < 20,
            "still cutting after {rounds} rounds: {:?}",
            handle.timeout()
        );
        settle().await;
    }
    assert!(rounds >= 1, "the first slow calls were cut");
    assert!(handle.timeout() >= ms(200), "{:?}", handle.timeout());
    assert!(
        handle.timeout() < ms(1000),
        "it climbs in steps, not to the ceiling"
    );
}

#[tokio::test(start_paused = true)]
async fn each_cut_doubles_the_next_timeout_until_a_call_answers_within_the_learned_one() {
    let (layer, handle) = layer(adaptive());
    let svc = layer.layer(downstream());
    calls(&svc, 200, ms(10)).await;
    settle().await;
    let learned = handle.timeout();
    assert!(within(learned, ms(30)), "{learned:?}");
    let (took, _) = one_call(&svc, None).await;
    assert!(to_the_tick(took, learned), "{took:?}");
    assert_eq!(handle.timeout(), learned * 2, "backed off once");
    let (took, _) = one_call(&svc, None).await;
    assert!(to_the_tick(took, learned * 2), "{took:?}");
    assert_eq!(handle.timeout(), learned * 4);
    assert_eq!(one_call(&svc, Some(ms(10))).await.1, Ok(()));
    assert_eq!(
        handle.timeout(),
        learned,
        "an answer in time ends the backoff"
    );
}

/// As [`downstream`], but a zero latency refuses at once, as a full bulkhead below does.
fn refusing()
-> impl Service<Option<Duration>, Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(|latency: Option<Duration>| async move {
        match latency {
            Some(latency) if latency.is_zero() => return Err::<(), BoxError>("full".into()),
            Some(latency) => sleep(latency).await,
            None => pending().await,
        }
        Ok(())
    })
}

#[tokio::test(start_paused = true)]
async fn a_refusal_that_took_no_time_does_not_end_the_backoff() {
    let (layer, handle) = layer(adaptive());
    let svc = layer.layer(refusing());
    calls(&svc, 200, ms(10)).await;
    settle().await;
    let learned = handle.timeout();
    let (_, ended) = one_call(&svc, None).await;
    assert_eq!(ended, Err(RejectionKind::TimedOut));
    assert_eq!(handle.timeout(), learned * 2, "backed off once");
    // A layer below that refuses at once (a full adaptive limit) says nothing of the
    // downstream's latency: each refusal used to end the backoff, and every call of a wave to
    // a downstream that became slower was cut at the old timeout.
    assert!(svc.clone().oneshot(Some(Duration::ZERO)).await.is_err());
    assert_eq!(handle.timeout(), learned * 2, "still backed off");
}

#[tokio::test(start_paused = true)]
async fn a_call_in_flight_is_given_the_timeout_a_cut_raised() {
    let (layer, handle) = layer(adaptive());
    let svc = layer.layer(downstream());
    calls(&svc, 200, ms(10)).await;
    settle().await;
    let learned = handle.timeout();
    let hanging = tokio::spawn(svc.clone().oneshot(None));
    tokio::task::yield_now().await;
    advance(ms(1)).await;
    // Started with the learned timeout, answers after it: the cut of the call before it
    // doubled the timeout in the meantime, and it gets that.
    let slow = learned + ms(10);
    let (took, ended) = one_call(&svc, Some(slow)).await;
    assert!(hanging.await.unwrap().is_err());
    assert_eq!(ended, Ok(()));
    assert!(to_the_tick(took, slow), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn keeps_to_its_floor_and_its_ceiling() {
    let (layer, handle) = layer(adaptive().floor(ms(5)).ceiling(ms(300)));
    let svc = layer.layer(downstream());
    calls(&svc, 200, Duration::from_micros(100)).await;
    settle().await;
    assert_eq!(handle.timeout(), ms(5), "3 × 0.1 ms is under the floor");
    let (took, _) = one_call(&svc, None).await;
    assert_eq!(took, ms(5));

    let (layer, handle) = self::layer(adaptive().ceiling(ms(300)));
    let svc = layer.layer(downstream());
    calls(&svc, 200, ms(250)).await;
    settle().await;
    assert_eq!(handle.timeout(), ms(300), "3 × 250 ms is over the ceiling");
    let (took, _) = one_call(&svc, None).await;
    assert_eq!(took, ms(300));
}

#[tokio::test(start_paused = true)]
async fn the_last_attempt_may_use_what_is_left_of_the_callers_deadline() {
    let (layer, handle) = layer(adaptive());
    let svc = layer.layer(downstream());
    calls(&svc, 200, ms(10)).await;
    settle().await;
    assert!(within(handle.timeout(), ms(30)));
    let deadline = Deadline(Instant::now() + ms(800));
    let call = |last: bool, latency: Option<Duration>| {
        let mut svc = svc.clone();
        let start = Instant::now();
        // As a total timeout above a retry makes them current while it calls the attempt.
        let future = deadline.scope(|| Attempt { number: 2, last }.scope(|| svc.call(latency)));
        async move {
            let result = future.await;
            let kind = result.map_err(|e| rejected(&*e).unwrap().kind());
            (start.elapsed(), kind)
        }
    };
    // Another attempt may follow: cut at 3 × p99, so that it has time.
    let (took, ended) = call(false, Some(ms(200))).await;
    assert!(within(took, ms(30)), "{took:?}");
    assert_eq!(ended, Err(RejectionKind::TimedOut));
    // None may: the slow answer is worth the wait.
    let (took, ended) = call(true, Some(ms(200))).await;
    assert_eq!((took, ended), (ms(200), Ok(())));
    // A black hole is still cut at the deadline, and counted as the downstream's failure:
    // it had far longer than its usual timeout.
    let (took, ended) = call(true, None).await;
    assert_eq!(Instant::now(), deadline.0);
    assert!(took <= ms(600), "{took:?}");
    assert_eq!(ended, Err(RejectionKind::TimedOut));
}

/// Calls `latency` as a retry's first attempt (another may follow) under a deadline `left`
/// from now: how long it ran, and how it ended.
async fn attempt_within<S>(
    svc: &S,
    left: Duration,
    latency: Option<Duration>,
) -> (Duration, Result<(), RejectionKind>)
where
    S: Service<Option<Duration>, Response = (), Error = BoxError> + Clone,
{
    let mut svc = svc.clone();
    let start = Instant::now();
    let deadline = Deadline(start + left);
    let future = deadline.scope(|| {
        Attempt {
            number: 1,
            last: false,
        }
        .scope(|| svc.call(latency))
    });
    let kind = future
        .await
        .map_err(|e| rejected(&*e).expect("a rejection").kind());
    (start.elapsed(), kind)
}

#[tokio::test(start_paused = true)]
async fn once_cuts_double_the_timeout_past_the_ceiling_an_attempt_waits_for_the_deadline() {
    let (layer, handle) = layer(adaptive().ceiling(ms(300)));
    let svc = layer.layer(downstream());
    calls(&svc, 200, ms(10)).await;
    settle().await;
    let learned = handle.timeout();
    assert!(within(learned, ms(30)), "{learned:?}");
    // The downstream now takes 600 ms, past the 300 ms ceiling: cut at 30, 60, 120, 240 ms.
    for doublings in 0..4 {
        let (took, ended) = attempt_within(&svc, ms(800), Some(ms(600))).await;
        assert_eq!(ended, Err(RejectionKind::TimedOut));
        assert!(to_the_tick(took, learned * (1 << doublings)), "{took:?}");
    }
    // Doubled to 480 ms, past the ceiling: no call answered within it, so an attempt that
    // another may follow gets what the deadline leaves and the slow answer comes.
    assert_eq!(
        handle.timeout(),
        ms(300),
        "the timeout itself keeps to the ceiling"
    );
    let (took, ended) = attempt_within(&svc, ms(800), Some(ms(600))).await;
    assert_eq!((took, ended), (ms(600), Ok(())));
    // Without a retry's attempt or a caller's deadline the ceiling still binds.
    assert_eq!(
        one_call(&svc, None).await,
        (ms(300), Err(RejectionKind::TimedOut))
    );
    // A black hole is cut at the deadline, counted as the downstream's failure.
    let (took, ended) = attempt_within(&svc, ms(800), None).await;
    assert_eq!((took, ended), (ms(800), Err(RejectionKind::TimedOut)));
    // An answer within the ceiling ends it: back to a cut at the learned timeout.
    assert_eq!(attempt_within(&svc, ms(800), Some(ms(10))).await.1, Ok(()));
    let (took, ended) = attempt_within(&svc, ms(800), Some(ms(600))).await;
    assert_eq!(ended, Err(RejectionKind::TimedOut));
    assert!(to_the_tick(took, learned), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn before_enough_calls_an_attempt_under_a_deadline_may_wait_for_it() {
    let (layer, handle) = layer(adaptive().ceiling(ms(300)));
    let svc = layer.layer(downstream());
    // No latency learned (a client at a few calls a second never has enough): a cut at the
    // ceiling would be a guess, and would fail every call of a downstream slower than it.
    assert_eq!(
        attempt_within(&svc, ms(800), Some(ms(600))).await,
        (ms(600), Ok(()))
    );
    assert_eq!(
        attempt_within(&svc, ms(800), None).await,
        (ms(800), Err(RejectionKind::TimedOut))
    );
    // Without a retry's attempt or a caller's deadline, the ceiling.
    assert_eq!(handle.timeout(), ms(300));
    assert_eq!(
        one_call(&svc, Some(ms(600))).await,
        (ms(300), Err(RejectionKind::TimedOut))
    );
}

#[tokio::test(start_paused = true)]
async fn a_last_attempt_without_a_deadline_keeps_its_usual_timeout() {
    let (layer, _handle) = layer(adaptive());
    let svc = layer.layer(downstream());
    calls(&svc, 200, ms(10)).await;
    settle().await;
    let mut one = svc.clone();
    let future = Attempt {
        number: 3,
        last: true,
    }
    .scope(|| one.call(None));
    let start = Instant::now();
    assert!(future.await.is_err());
    assert!(within(start.elapsed(), ms(30)), "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_scoped_timeout_hands_its_deadline_to_the_layers_below_and_fires_at_it() {
    let layer = TimeoutLayer::builder()
        .name("total")
        .timeout(ms(500))
        .build()
        .unwrap()
        .scoped();
    let start = Instant::now();
    let mut seen = None;
    let svc = layer.layer(service_fn(|()| {
        // Read in `call`, as an attempt timeout below a retry reads it.
        seen = Deadline::current();
        pending::<Result<(), BoxError>>()
    }));
    let result = svc.oneshot(()).await;
    assert_eq!(seen, Some(Deadline(start + ms(500))));
    assert_eq!(
        Instant::now(),
        start + ms(500),
        "the timer fires at the deadline handed down"
    );
    assert_eq!(
        rejected(&*result.unwrap_err()).unwrap().kind(),
        RejectionKind::TimedOut
    );
}

#[tokio::test(start_paused = true)]
async fn a_scoped_timeout_honours_a_shorter_current_deadline() {
    let layer = TimeoutLayer::builder()
        .name("total")
        .timeout(ms(500))
        .build()
        .unwrap()
        .scoped();
    let mut svc = layer.layer(downstream());
    let caller = Deadline(Instant::now() + ms(100));
    let start = Instant::now();
    let result = caller.scope(|| svc.call(None)).await;
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!(
        rejected(&*result.unwrap_err()).unwrap().kind(),
        RejectionKind::DeadlineExceeded
    );
}

// ===== reload =====

fn fixed(timeout: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .name("dep")
        .timeout(timeout)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_reload_applies_to_new_calls_and_leaves_calls_in_flight_alone() {
    let (layer, handle) = TimeoutLayer::new(fixed(ms(250))).pair();
    let svc = layer.layer(downstream());
    let in_flight = tokio::spawn({
        let svc = svc.clone();
        async move { one_call(&svc, None).await }
    });
    tokio::task::yield_now().await;
    handle.reload(fixed(ms(100))).unwrap();
    assert_eq!(handle.config(), fixed(ms(100)));
    let (took, _) = one_call(&svc, None).await;
    assert_eq!(took, ms(100), "a new call gets the new timeout");
    let (took, _) = in_flight.await.unwrap();
    assert_eq!(
        took,
        ms(250),
        "the call in flight keeps the one it was given"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_moves_an_adaptive_timeouts_bounds_and_keeps_what_it_learned() {
    let (layer, handle) = layer(adaptive());
    let svc = layer.layer(downstream());
    calls(&svc, 200, ms(100)).await;
    settle().await;
    assert!(within(handle.timeout(), ms(300)));
    let lower = TimeoutConfig::builder()
        .name("dep")
        .adaptive(adaptive().ceiling(ms(200)))
        .build()
        .unwrap();
    handle.reload(lower).unwrap();
    assert_eq!(handle.timeout(), ms(200), "the new ceiling");
    let raised = TimeoutConfig::builder()
        .name("dep")
        .adaptive(adaptive().floor(ms(500)).multiplier(2.0))
        .build()
        .unwrap();
    handle.reload(raised).unwrap();
    assert_eq!(handle.timeout(), ms(500), "the new floor");
    assert!(
        within(handle.percentile().unwrap(), ms(100)),
        "what it learned is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_would_change_the_estimate_or_the_mode_is_refused_and_the_old_kept() {
    let (_layer, handle) = layer(adaptive());
    let before = handle.config();
    let cases = [
        (
            TimeoutConfig::builder()
                .name("dep")
                .adaptive(adaptive().quantile(0.9))
                .build()
                .unwrap(),
            "timeout.quantile",
        ),
        (
            TimeoutConfig::builder()
                .name("dep")
                .adaptive(adaptive().window(ms(5000)))
                .build()
                .unwrap(),
            "timeout.window",
        ),
        (fixed(ms(100)), "timeout"),
        (
            TimeoutConfig::builder()
                .name("other")
                .adaptive(adaptive())
                .build()
                .unwrap(),
            "name",
        ),
    ];
    for (config, field) in cases {
        let err = handle.check_reload(&config).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert_eq!(handle.reload(config).unwrap_err().field(), field);
        assert_eq!(handle.config(), before);
    }
}

#[test]
fn an_invalid_adaptive_timeout_names_its_field() {
    let err = |a: AdaptiveTimeout| {
        TimeoutConfig::builder()
            .adaptive(a)
            .build()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(adaptive().floor(ms(2000))),
        "invalid `timeout.floor`: 2s is outside the allowed range (0s, 1s]"
    );
    assert_eq!(
        err(adaptive().multiplier(0.5)),
        "invalid `timeout.multiplier`: 0.5 is outside the allowed range [1, 100]"
    );
    assert_eq!(
        err(AdaptiveTimeout::new()),
        "invalid `timeout.ceiling`: nothing, expected a duration in [floor, 86400s]"
    );
    seawall_core::testing::config::assert_errors::<TimeoutConfig>(&[
        (
            r#"timeout = { ceiling = "1s", quantile = 1.5 }"#,
            "invalid `timeout.quantile`: 1.5 is outside the allowed range (0, 1)",
        ),
        (
            r#"timeout = { ceiling = "1s", floor = "-1s" }"#,
            r#"invalid `timeout.floor`: "-1s" is outside the allowed range (0s, ceiling]"#,
        ),
        (
            r#"timeout = { ceiling = "1s", windwo = "1s" }"#,
            "unknown field `windwo`",
        ),
    ]);
}

#[test]
fn an_adaptive_timeout_round_trips_through_serde() {
    let config = TimeoutConfig::builder()
        .name("db")
        .adaptive(adaptive().floor(ms(5)))
        .build()
        .unwrap();
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(
        json,
        r#"{"name":"db","timeout":{"multiplier":3.0,"quantile":0.99,"floor":"5ms","ceiling":"1s","window":"30s","min_samples":100}}"#
    );
    assert_eq!(
        serde_json::from_str::<TimeoutConfig>(&json).unwrap(),
        config
    );
}

// ===== the clamp against a model =====

/// The model: `multiplier` × the sample of rank ⌈0.99·n⌉, between the floor and the ceiling.
fn model(samples: &[Duration], multiplier: f64, floor: Duration, ceiling: Duration) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((0.99 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].mul_f64(multiplier).clamp(floor, ceiling)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_timeout_is_the_clamped_multiple_of_the_percentile(
        latencies in proptest::collection::vec(1u64..400_000, 100..300),
        multiplier in 1.0f64..10.0,
        floor in 1u64..50,
        above_floor in 0u64..2000,
    ) {
        let floor = ms(floor);
        let ceiling = floor + ms(above_floor);
        // Every call answers: cuts have their own model below.
        let samples: Vec<Duration> = latencies
            .iter()
            .map(|&us| Duration::from_micros(us).min(ceiling - Duration::from_micros(1)))
            .collect();
        let runtime = paused_runtime();
        let timeout = runtime.block_on(async {
            let (layer, handle) = layer(
                adaptive().multiplier(multiplier).floor(floor).ceiling(ceiling),
            );
            let svc = layer.layer(downstream());
            // All at once, each within the ceiling.
            let mut set = tokio::task::JoinSet::new();
            for &latency in &samples {
                set.spawn(svc.clone().oneshot(Some(latency)));
            }
            while set.join_next().await.is_some() {}
            settle().await;
            handle.timeout()
        });
        let expected = model(&samples, multiplier, floor, ceiling);
        // The estimate's buckets are within 1/32 of the sample they hold.
        let slack = expected / 32 + Duration::from_micros(1);
        prop_assert!(timeout >= floor && timeout <= ceiling, "{timeout:?}");
        prop_assert!(timeout.abs_diff(expected) <= slack.mul_f64(multiplier.max(1.0)),
            "{timeout:?} vs {expected:?}");
    }
}

/// Open-loop calls at 1000 a second for `seconds`, the `n`th taking `latency(n)` (`None`:
/// never answers); returns the timeout at the end of each second.
async fn open_loop<S>(
    svc: &S,
    seconds: u64,
    latency: impl Fn(u64) -> Option<Duration>,
    handle: &TimeoutHandle,
) -> Vec<Duration>
where
    S: Service<Option<Duration>, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut trajectory = Vec::new();
    for n in 0..seconds * 1000 {
        tokio::spawn(svc.clone().oneshot(latency(n)));
        sleep(ms(1)).await;
        if n % 1000 == 999 {
            trajectory.push(handle.timeout());
        }
    }
    trajectory
}

#[tokio::test(start_paused = true)]
async fn a_passing_tail_of_hanging_calls_is_cut_at_the_timeout_it_had() {
    // The lab's tail-spike, shortened as `--quick` runs it: 5 s healthy, then 2 % of calls
    // hang for 10 s. The cuts say only that those calls take at least the timeout; counted as
    // having taken it, they became the 99th percentile once over 1 % of the window, and
    // 3 × that raised the timeout, whose cuts raised it again.
    let (layer, handle) = layer(AdaptiveTimeout::new().ceiling(ms(500)));
    let svc = layer.layer(downstream());
    let healthy = open_loop(&svc, 5, |_| Some(ms(10)), &handle).await;
    assert!(healthy[1..].iter().all(|t| *t == ms(100)), "{healthy:?}");
    let tail = open_loop(&svc, 10, |n| (n % 50 != 0).then_some(ms(10)), &handle).await;
    // Held where it was, but for the estimate's bucket width.
    assert!(
        tail.iter().all(|t| within(*t, ms(100))),
        "the timeout followed the tail: {tail:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_share_that_answers_when_given_longer_is_followed() {
    // A fifth of the calls take 60 ms, twice the learned 30 ms: more than a retry budget
    // carries. The calls a cut's doubling gives 60 ms answer, over 1 % of the window, and the
    // timeout follows them.
    let (layer, handle) = layer(adaptive());
    let svc = layer.layer(downstream());
    let healthy = open_loop(&svc, 2, |_| Some(ms(10)), &handle).await;
    assert!(within(healthy[1], ms(30)), "{healthy:?}");
    let slow = open_loop(
        &svc,
        3,
        |n| Some(ms(if n % 5 == 0 { 60 } else { 10 })),
        &handle,
    )
    .await;
    assert!(slow[2] >= ms(180), "{slow:?}");
}

/// What the estimate holds of a latency: the midpoint of its bucket (16 per power of two,
/// over microseconds; exact below 16 µs).
fn bucketed(latency: Duration) -> Duration {
    let micros = latency.as_micros() as u64;
    if micros < 16 {
        return Duration::from_nanos(micros * 1000 + 500);
    }
    let exponent = 63 - micros.leading_zeros();
    let width = 1u64 << (exponent - 4);
    let lower = micros & !(width - 1);
    Duration::from_nanos(lower * 1000 + width * 500)
}

/// The rule, on the estimate's buckets: an answer counts as its latency; a cut as the
/// timeout it was given without its doublings, over the multiplier; the timeout is the
/// multiple of the percentile between floor and ceiling, doubled once per cut since an
/// answer within it.
struct CensoredModel {
    samples: Vec<Duration>,
    doublings: u32,
}

const MODEL_Q: f64 = 0.9;
const MODEL_MIN: usize = 5;
const MODEL_K: u32 = 2;

impl CensoredModel {
    fn base(&self, floor: Duration, ceiling: Duration) -> Option<Duration> {
        if self.samples.len() < MODEL_MIN {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort();
        let n = sorted.len();
        let rank = ((MODEL_Q * n as f64).ceil() as usize).clamp(1, n);
        Some((sorted[rank - 1] * MODEL_K).max(floor).min(ceiling))
    }

    fn timeout(&self, floor: Duration, ceiling: Duration) -> Duration {
        self.base(floor, ceiling)
            .map_or(ceiling, |base| (base * (1 << self.doublings)).min(ceiling))
    }

    fn answered(&mut self, latency: Duration, floor: Duration, ceiling: Duration) {
        if latency <= self.base(floor, ceiling).unwrap_or(ceiling) {
            self.doublings = 0;
        }
        self.samples.push(bucketed(latency));
    }

    fn cut(&mut self, floor: Duration, ceiling: Duration) {
        let given = self.base(floor, ceiling).unwrap_or(ceiling);
        self.samples.push(bucketed(given / MODEL_K));
        self.doublings += 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn cuts_hold_the_timeout_and_only_answers_raise_it(
        // `None`: a call that never answers; otherwise a latency in whole milliseconds (the
        // paused clock's tick), cut if not under the timeout.
        calls in proptest::collection::vec(proptest::option::weighted(0.8, 2u64..60), 1..150),
    ) {
        let floor = Duration::from_micros(20_500);
        let ceiling = Duration::from_micros(300_500);
        let runtime = paused_runtime();
        runtime.block_on(async {
            let (layer, handle) = layer(
                AdaptiveTimeout::new()
                    .multiplier(f64::from(MODEL_K))
                    .quantile(MODEL_Q)
                    .min_samples(MODEL_MIN as u64)
                    .floor(floor)
                    .ceiling(ceiling)
                    // Refreshed once per 12 s, so between calls and never during one; the
                    // calls take at most 150 × 12 s, within three quarters of the window.
                    .window(Duration::from_secs(3600)),
            );
            let svc = layer.layer(downstream());
            let mut model = CensoredModel { samples: Vec::new(), doublings: 0 };
            for call in calls {
                advance(Duration::from_secs(12)).await;
                let timeout = model.timeout(floor, ceiling);
                // Floating-point products of durations may be off by a nanosecond.
                let actual = handle.timeout();
                prop_assert!(actual.abs_diff(timeout) <= Duration::from_micros(1),
                    "{:?} against {:?}, learned {:?}", actual, timeout, model.samples);
                let answers = call.map(ms).filter(|l| *l < timeout);
                let (took, ended) = one_call(&svc, answers).await;
                match answers {
                    Some(latency) => {
                        prop_assert_eq!((took, ended), (latency, Ok(())));
                        model.answered(latency, floor, ceiling);
                    }
                    None => {
                        prop_assert_eq!(ended, Err(RejectionKind::TimedOut));
                        prop_assert!(to_the_tick(took, actual), "{:?}", took);
                        model.cut(floor, ceiling);
                    }
                }
            }
            Ok(())
        })?;
    }
}
