//! A live breaker takes new rules through its handle without losing its state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seawall_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
use seawall_core::BoxError;
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt, service_fn};

fn config(minimum_calls: u32, threshold: f64) -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .name("db")
        .count_window(10)
        .minimum_calls(minimum_calls)
        .failure_rate_threshold(threshold)
        .open_duration(Duration::from_secs(10))
        .half_open_probes(2)
        // The rate rule alone on its threshold, exact open times and every probe needed to
        // close: the tests count calls and step the clock to the end of each phase.
        .no_consecutive_failures()
        .noise_margin(0.0)
        .open_jitter(0.0)
        .half_open_success_ratio(1.0)
        .build()
        .unwrap()
}

fn flaky() -> impl Service<bool, Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("down".into())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_lowered_threshold_judges_the_calls_already_in_the_window() {
    let (layer, handle) = CircuitBreakerLayer::new(config(10, 0.5)).pair();
    let svc = layer.layer(flaky());
    for ok in [false, false, false, true, true, true, true, true] {
        let _ = svc.clone().oneshot(ok).await;
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.counts().calls, 8);

    handle.reload(config(8, 0.3)).unwrap();
    assert_eq!(
        handle.counts().calls,
        8,
        "the window keeps its calls across a reload"
    );
    assert_eq!(handle.config().failure_rate_threshold(), Some(0.3));
    assert_eq!(handle.config().minimum_calls(), 8);
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "3 failures in 8 calls is over the new 30 %"
    );
}

#[tokio::test(start_paused = true)]
async fn a_raised_threshold_keeps_the_window_and_trips_later() {
    let (layer, handle) = CircuitBreakerLayer::new(config(4, 0.5)).pair();
    let svc = layer.layer(flaky());
    for ok in [true, true, false] {
        let _ = svc.clone().oneshot(ok).await;
    }
    handle.reload(config(4, 0.8)).unwrap();
    let _ = svc.clone().oneshot(false).await;
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "2 failures in 4 calls trips at 50 %, not at 80 %"
    );
    assert_eq!(handle.counts().failures, 2);
    for _ in 0..5 {
        let _ = svc.clone().oneshot(false).await;
    }
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "7 failures in 9 calls"
    );
    let _ = svc.clone().oneshot(false).await;
    assert_eq!(handle.state(), CircuitState::Open, "8 failures in 10 calls");
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_stays_open_until_the_end_it_was_given() {
    let (layer, handle) = CircuitBreakerLayer::new(config(2, 0.5)).pair();
    let svc = layer.layer(flaky());
    for _ in 0..2 {
        let _ = svc.clone().oneshot(false).await;
    }
    assert_eq!(handle.state(), CircuitState::Open);
    advance(Duration::from_secs(4)).await;
    let shorter = CircuitBreakerConfig::builder()
        .name("db")
        .count_window(10)
        .minimum_calls(2)
        .open_duration(Duration::from_secs(1))
        .half_open_probes(1)
        .no_consecutive_failures()
        .open_jitter(0.0)
        .half_open_success_ratio(1.0)
        .build()
        .unwrap();
    handle.reload(shorter).unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(handle.open_remaining(), Some(Duration::from_secs(6)));
    advance(Duration::from_secs(6)).await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    let _ = svc.clone().oneshot(false).await;
    assert_eq!(
        handle.open_remaining(),
        Some(Duration::from_secs(1)),
        "the next opening lasts the new open duration"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_in_flight_across_a_reload_completes_and_counts() {
    let (layer, handle) = CircuitBreakerLayer::new(config(2, 0.5)).pair();
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let svc = layer.layer(service_fn(move |ok: bool| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if ok {
                Ok(())
            } else {
                Err::<(), BoxError>("down".into())
            }
        }
    }));
    let first = tokio::spawn(svc.clone().oneshot(true));
    let second = tokio::spawn(svc.clone().oneshot(false));
    tokio::task::yield_now().await;
    assert_eq!(started.load(Ordering::SeqCst), 2);
    handle.reload(config(2, 0.5)).unwrap();
    assert!(first.await.unwrap().is_ok(), "no call fails for a reload");
    assert!(second.await.unwrap().is_err());
    assert_eq!(handle.counts().calls, 2, "both recorded after the reload");
    assert_eq!(handle.state(), CircuitState::Open, "1 failure in 2 is 50 %");
}

#[tokio::test(start_paused = true)]
async fn probes_that_already_decide_under_fewer_probes_close_the_breaker() {
    let (layer, handle) = CircuitBreakerLayer::new(config(2, 0.5)).pair();
    let svc = layer.layer(flaky());
    for _ in 0..2 {
        let _ = svc.clone().oneshot(false).await;
    }
    advance(Duration::from_secs(10)).await;
    svc.clone().oneshot(true).await.unwrap();
    assert_eq!(handle.state(), CircuitState::HalfOpen, "one probe of two");
    let one_probe = CircuitBreakerConfig::builder()
        .name("db")
        .count_window(10)
        .minimum_calls(2)
        .open_duration(Duration::from_secs(10))
        .half_open_probes(1)
        .no_consecutive_failures()
        .open_jitter(0.0)
        .half_open_success_ratio(1.0)
        .build()
        .unwrap();
    handle.reload(one_probe).unwrap();
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_reload_to_another_window_or_name_is_refused_and_the_old_rules_stay() {
    let (layer, handle) = CircuitBreakerLayer::new(config(4, 0.5)).pair();
    let svc = layer.layer(flaky());
    let _ = svc.clone().oneshot(false).await;

    let other_window = CircuitBreakerConfig::builder()
        .name("db")
        .count_window(20)
        .build()
        .unwrap();
    let err = handle.reload(other_window).unwrap_err();
    assert_eq!(err.field(), "window");
    assert!(err.to_string().contains("Count(10)"), "{err}");
    let other_name = config(4, 0.5).named("cache").unwrap();
    assert_eq!(handle.reload(other_name).unwrap_err().field(), "name");
    assert_eq!(handle.config(), config(4, 0.5));
    assert_eq!(handle.counts().failures, 1);

    // A value out of range never becomes a configuration to reload.
    let err = serde_json::from_str::<CircuitBreakerConfig>(
        r#"{"name": "db", "window": {"count": 10}, "failure_rate_threshold": 1.5}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid `failure_rate_threshold`: 1.5 is outside the allowed range (0, 1]"),
        "{err}"
    );
    assert_eq!(handle.config().failure_rate_threshold(), Some(0.5));
}

/// Reloads racing calls on many threads: every call is admitted or rejected by one set of
/// rules or the other, none fails for the reload itself, and the window counts every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_racing_calls_lose_no_call() {
    let lenient = CircuitBreakerConfig::builder()
        .name("db")
        .count_window(1000)
        .minimum_calls(1000)
        .build()
        .unwrap();
    let (layer, handle) = CircuitBreakerLayer::new(lenient.clone()).pair();
    let svc = layer.layer(flaky());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                svc.clone().oneshot(true).await.unwrap();
            }
        }));
    }
    for i in 0..100 {
        let threshold = if i % 2 == 0 { 0.9 } else { 0.5 };
        let next = CircuitBreakerConfig::builder()
            .name("db")
            .count_window(1000)
            .minimum_calls(1000)
            .failure_rate_threshold(threshold)
            .build()
            .unwrap();
        handle.reload(next).unwrap();
        tokio::task::yield_now().await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(handle.counts().calls, 800);
    assert_eq!(handle.state(), CircuitState::Closed);
}
