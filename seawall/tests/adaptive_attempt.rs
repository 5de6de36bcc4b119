//! The default client stack's adaptive attempt timeout, on the paused clock: a dependency that
//! became uniformly slower is not cut off, and the attempt timeout reads from a file as a
//! duration (fixed) or a table (adaptive), with field paths in its errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use seawall::BoxError;
use seawall::circuit_breaker::CircuitState;
use seawall::stack::{ClientStackConfig, ClientStackLayer};
use seawall::timeout::TimeoutMode;
use tokio::time::sleep;
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
