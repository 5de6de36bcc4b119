//! Attempt timeouts after slow answers (`excuse_queue_timeouts`), on the paused clock, for a
//! client that calls 1.5 times a second as each of 1000 clients of the lab's `overload` does:
//! a queue's cuts do not open the breaker, a black hole and a downstream that got slower and
//! then died still do.

use std::time::Duration;

use seawall_circuit_breaker::{CircuitBreakerLayer, CircuitState};
use seawall_core::{BoxError, Rejected, RejectionKind};
use tokio::time::{Instant, sleep, sleep_until};
use tower::{Layer, ServiceExt, service_fn};

/// 1.5 calls a second.
const GAP: Duration = Duration::from_millis(667);
/// An attempt cut at the caller's whole deadline, as the lab's clients with few samples are.
const CUT: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What the downstream does with a call.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// Answers after this long.
    Ok(Duration),
    /// Cut by the attempt timeout after [`CUT`].
    Cut,
}

fn breaker(excuse: bool) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("dep")
        .excuse_queue_timeouts(excuse)
        .open_jitter(0.0)
        .build()
        .unwrap()
}

/// Sends `calls` at 1.5 a second (or as soon as the last one ended); the breaker's state after
/// each call, and the failed calls it let through before it first opened.
async fn run(layer: &CircuitBreakerLayer, calls: &[Call]) -> (Vec<CircuitState>, usize) {
    let handle = layer.handle();
    let mut states = Vec::new();
    let mut failed_before_open = 0;
    let mut next = Instant::now();
    for &call in calls {
        sleep_until(next).await;
        next = Instant::now() + GAP;
        let svc = layer.layer(service_fn(move |call: Call| async move {
            match call {
                Call::Ok(took) => {
                    sleep(took).await;
                    Ok::<_, BoxError>(())
                }
                Call::Cut => {
                    sleep(CUT).await;
                    Err(Rejected::new(RejectionKind::TimedOut, "dep.attempt").into())
                }
            }
        }));
        let result = svc.oneshot(call).await;
        let opened = states.contains(&CircuitState::Open);
        if !opened && matches!(call, Call::Cut) && result.is_err() {
            failed_before_open += 1;
        }
        states.push(handle.state());
    }
    (states, failed_before_open)
}

fn healthy(n: usize) -> Vec<Call> {
    (0..n).map(|i| Call::Ok(ms(9 + (i % 5) as u64))).collect()
}

/// A queue past the attempt timeout that still answers some calls: as traced in the lab's
/// `overload` at 1000 clients, 70 ms and 536 ms answers as it builds, then cuts with a slow
/// answer between runs of them.
fn queue() -> Vec<Call> {
    let mut calls = healthy(20);
    calls.extend([Call::Ok(ms(70)), Call::Ok(ms(536))]);
    for i in 0..10 {
        calls.extend([Call::Cut; 5]);
        calls.push(Call::Ok(ms(600 + 30 * i)));
    }
    calls
}

#[tokio::test(start_paused = true)]
async fn a_queues_timeouts_do_not_open_it() {
    let (states, _) = run(&breaker(true), &queue()).await;
    assert!(
        states.iter().all(|s| *s == CircuitState::Closed),
        "{states:?}"
    );
    // Without the rule, the first five cuts in a row open it.
    let (states, failed) = run(&breaker(false), &queue()).await;
    assert_eq!(states[26], CircuitState::Open);
    assert_eq!(failed, 5);
}

#[tokio::test(start_paused = true)]
async fn a_black_hole_still_opens_it_within_five_calls() {
    let mut calls = healthy(20);
    calls.extend([Call::Cut; 10]);
    let (states, failed) = run(&breaker(true), &calls).await;
    assert_eq!(states[24], CircuitState::Open, "{states:?}");
    assert_eq!(failed, 5);
}

#[tokio::test(start_paused = true)]
async fn a_black_hole_after_a_slow_answer_opens_it_three_calls_later() {
    let mut calls = healthy(20);
    calls.push(Call::Ok(ms(200)));
    calls.extend([Call::Cut; 10]);
    let (states, failed) = run(&breaker(true), &calls).await;
    assert_eq!(states[28], CircuitState::Open, "{states:?}");
    assert_eq!(failed, 8);
}

#[tokio::test(start_paused = true)]
async fn a_downstream_slow_for_seconds_then_dead_opens_it_within_five_calls() {
    // 200 ms for 10 s: the base follows it within two buckets, so its death is no queue.
    let mut calls = healthy(20);
    calls.extend([Call::Ok(ms(200)); 15]);
    calls.extend([Call::Cut; 10]);
    let (states, failed) = run(&breaker(true), &calls).await;
    assert_eq!(states[39], CircuitState::Open, "{states:?}");
    assert_eq!(failed, 5);
}

#[tokio::test(start_paused = true)]
async fn a_queue_that_stops_answering_opens_it_three_calls_later() {
    // Slow answers and then none: excused three cuts, then counted as a black hole's.
    let mut calls = healthy(20);
    calls.extend([Call::Ok(ms(70)), Call::Ok(ms(536))]);
    calls.extend([Call::Cut; 10]);
    let (states, failed) = run(&breaker(true), &calls).await;
    assert_eq!(states[29], CircuitState::Open, "{states:?}");
    assert_eq!(failed, 8);
}

#[tokio::test(start_paused = true)]
async fn errors_after_a_slow_answer_count_at_once() {
    let layer = breaker(true);
    let handle = layer.handle();
    let mut calls = healthy(20);
    calls.push(Call::Ok(ms(536)));
    run(&layer, &calls).await;
    for _ in 0..5 {
        let svc = layer.layer(service_fn(|()| async {
            Err::<(), BoxError>("down".into())
        }));
        let _ = svc.oneshot(()).await;
    }
    assert_eq!(handle.state(), CircuitState::Open);
}
