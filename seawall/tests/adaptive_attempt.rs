//! The default client stack's adaptive attempt timeout, on the paused clock: a dependency that
//! became uniformly slower is not cut off, and the attempt timeout reads from a file as a
//! duration (fixed) or a table (adaptive), with field paths in its errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use seawall::bulkhead::BulkheadConfig;
use seawall::circuit_breaker::CircuitState;
use seawall::stack::{ClientStackConfig, ClientStackLayer};
use seawall::timeout::TimeoutMode;
use seawall::{BoxError, RejectionKind, rejected};
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_became_uniformly_slower_is_not_cut_off() {
    let latency = Arc::new(AtomicU64::new(10));
    let dependency = service_fn({
        let latency = latency.clone();
        move |n: u64| {
            let latency = ms(latency.load(Ordering::Relaxed));
            async move {
                sleep(latency).await;
                Ok::<_, BoxError>(n)
            }
        }
    });
    let layer = ClientStackLayer::new(ClientStackConfig::default());
    let (breaker, attempt) = (layer.circuit_breaker(), layer.attempt_timeout());
    let client = layer.layer(dependency);
    for n in 0..200 {
        client.clone().oneshot(n).await.unwrap();
    }
    assert_eq!(attempt.timeout(), ms(100), "3 × 12 ms is under the floor");
    // Every call now takes 350 ms, past a fixed 300 ms attempt timeout, well within the 1 s
    // total: the first attempts are cut, the timeout backs off and learns, and no request
    // fails.
    latency.store(350, Ordering::Relaxed);
    for n in 0..100 {
        let answer = client.clone().oneshot(n).await;
        assert!(answer.is_ok(), "request {n}: {answer:?}");
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert!(attempt.timeout() > ms(350), "{:?}", attempt.timeout());
}

/// 1000 requests at 100 a second through a stack built from `config`, to a dependency whose
/// every call takes 800 ms from 3 s on (past the 500 ms ceiling, half the 1 s total, within
/// the total); the requests that failed, with their errors.
async fn step_to_800ms(config: ClientStackConfig) -> Vec<(u64, BoxError)> {
    let step = Instant::now() + ms(3000);
    let dependency = service_fn(move |n: u64| async move {
        let latency = if Instant::now() < step { 10 } else { 800 };
        sleep(ms(latency)).await;
        Ok::<_, BoxError>(n)
    });
    let client = ClientStackLayer::new(config).layer(dependency);
    let requests = (0..1000).map(|n| {
        let client = client.clone();
        async move {
            sleep(ms(10 * n)).await;
            (n, client.oneshot(n).await.err())
        }
    });
    join_all(requests)
        .await
        .into_iter()
        .filter_map(|(n, err)| Some((n, err?)))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_dependency_slower_than_the_attempt_ceiling_is_waited_for() {
    // A fixed bulkhead, to test the timeout alone (the default bulkhead's is the next test).
    let config = ClientStackConfig::builder()
        .bulkhead(
            BulkheadConfig::builder()
                .max_concurrent(1000)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let failed: Vec<u64> = step_to_800ms(config)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // Cut at 100, 200 and 400 ms, the timeout passes the ceiling: every attempt then waits
    // for what the total leaves, and those in flight with it; only the first requests after
    // the step, cut before it passed, have too little left. Cut at the ceiling each time,
    // every request after the step failed.
    assert!(failed.len() <= 3, "{} failed: {failed:?}", failed.len());
    assert!(failed.iter().all(|&n| n < 310), "{failed:?}");
}

#[tokio::test(start_paused = true)]
async fn the_default_bulkhead_turns_no_call_away_when_a_dependency_becomes_uniformly_slower() {
    // With the default stack's adaptive (Vegas) bulkhead. Nothing queues and nothing fails,
    // so Little's law (100/s × 0.8 s = 80 calls in flight) is what the limit must allow.
    let turned_away: Vec<u64> = step_to_800ms(ClientStackConfig::default())
        .await
        .into_iter()
        .filter(|(_, err)| {
            rejected(&**err).is_some_and(|r| r.kind() == RejectionKind::BulkheadFull)
        })
        .map(|(n, _)| n)
        .collect();
    assert!(
        turned_away.is_empty(),
        "{} turned away: {turned_away:?}",
        turned_away.len()
    );
}

#[tokio::test(start_paused = true)]
async fn the_default_bulkhead_carries_ten_thousand_requests_a_second_at_200ms() {
    // 10,000 requests a second from one client; from 1 s every call takes 200 ms, nothing
    // queues or fails: Little's law asks 2000 calls in flight, twice the old maximum of 1000.
    let step = Instant::now() + ms(1000);
    let dependency = service_fn(move |n: u64| async move {
        let latency = if Instant::now() < step { 10 } else { 200 };
        sleep(ms(latency)).await;
        Ok::<_, BoxError>(n)
    });
    let client = ClientStackLayer::new(ClientStackConfig::default()).layer(dependency);
    let requests = (0..30_000).map(|n| {
        let client = client.clone();
        async move {
            sleep(Duration::from_micros(100 * n)).await;
            (n, client.oneshot(n).await.err())
        }
    });
    // From 2 s, after the step's first window.
    let turned_away = join_all(requests)
        .await
        .into_iter()
        .filter(|(n, err)| {
            *n >= 20_000
                && err.as_ref().is_some_and(|err| {
                    rejected(&**err).is_some_and(|r| r.kind() == RejectionKind::BulkheadFull)
                })
        })
        .count();
    assert_eq!(turned_away, 0);
}

#[test]
fn the_attempt_timeout_reads_as_a_duration_or_a_table_with_field_paths() {
    let read = |attempt: &str| {
        toml::from_str::<ClientStackConfig>(&format!(
            "name = \"db\"\ntotal_timeout = \"2s\"\n{attempt}\n[bulkhead]\nmax_concurrent = 8\n"
        ))
    };
    let fixed = read(r#"attempt_timeout = "400ms""#).unwrap();
    assert_eq!(fixed.attempt_timeout(), &TimeoutMode::Fixed(ms(400)));
    let adaptive = read(r#"attempt_timeout = { multiplier = 4, floor = "50ms" }"#).unwrap();
    let TimeoutMode::Adaptive(a) = adaptive.attempt_timeout() else {
        panic!("adaptive")
    };
    assert_eq!((a.get_multiplier(), a.get_floor()), (4.0, ms(50)));
    assert_eq!(adaptive.attempt().timeout(), ms(1000), "half the total");
    let default = read("").unwrap();
    assert!(matches!(
        default.attempt_timeout(),
        TimeoutMode::Adaptive(_)
    ));
    for (attempt, error) in [
        (
            r#"attempt_timeout = "3s""#,
            "invalid `attempt_timeout`: 3s is outside the allowed range (0s, 2s]",
        ),
        (
            r#"attempt_timeout = { ceiling = "3s" }"#,
            "invalid `attempt_timeout.ceiling`: 3s is outside the allowed range [100ms, 2s]",
        ),
        (
            r#"attempt_timeout = { floor = "1500ms" }"#,
            "invalid `attempt_timeout.floor`: 1.5s is outside the allowed range (0s, 1s]",
        ),
        (
            r#"attempt_timeout = { multiplier = -1 }"#,
            "invalid `attempt_timeout.multiplier`: -1 is outside the allowed range [1, 100]",
        ),
    ] {
        let err = read(attempt).unwrap_err().to_string();
        assert!(err.contains(error), "{attempt}: {err}");
    }
}
