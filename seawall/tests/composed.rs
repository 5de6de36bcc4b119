//! Layers working together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seawall::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use seawall::fallback::FallbackLayer;
use seawall::{BoxError, RejectionKind, ServiceBuilderExt};
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_answered_by_the_fallback_without_calling_the_downstream() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let downstream = service_fn(move |_: u64| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Err::<&str, BoxError>("downstream down".into()) }
    });
    let (breaker, handle) = CircuitBreakerLayer::builder()
        .name("inventory")
        .count_window(10)
        .minimum_calls(5)
        .failure_rate_threshold(0.5)
        .open_duration(Duration::from_secs(30))
        .build()
        .unwrap()
        .pair();
    let fallback = FallbackLayer::builder()
        .name("inventory")
        .on_rejections([RejectionKind::CircuitOpen])
        .value("cached stock")
        .unwrap();
    let svc = ServiceBuilder::new()
        .with_fallback(fallback)
        .with_circuit_breaker(breaker)
        .service(downstream);

    for n in 0..5 {
        let err = svc.clone().oneshot(n).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "downstream down",
            "failures pass through until the breaker opens"
        );
    }
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    for n in 0..100 {
        assert_eq!(svc.clone().oneshot(n).await.unwrap(), "cached stock");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "no call reached the downstream while open"
    );
}

#[tokio::test(start_paused = true)]
async fn a_downstream_shedding_load_is_throttled_and_never_opens_the_breaker() {
    use seawall::classify::HttpStatus;
    use seawall::throttle::ThrottleLayer;

    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let downstream = service_fn(move |_: u64| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>(http::Response::builder().status(503).body(()).unwrap()) }
    });
    let (breaker, breaker_handle) = CircuitBreakerLayer::builder()
        .name("inventory")
        .consecutive_failures(5)
        .build()
        .unwrap()
        .pair();
    let (throttle, throttle_handle) = ThrottleLayer::builder()
        .name("inventory")
        .seed(1)
        .build()
        .unwrap()
        .pair();
    let svc = ServiceBuilder::new()
        .with_throttle(throttle.classify(HttpStatus::default()))
        .with_circuit_breaker(breaker.classify(HttpStatus::default()))
        .service(downstream);

    let mut throttled = 0;
    for n in 0..1000 {
        if let Err(err) = svc.clone().oneshot(n).await {
            let kind = seawall::rejected(&*err).map(|r| r.kind());
            assert_eq!(kind, Some(RejectionKind::Throttled));
            throttled += 1;
        }
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(breaker_handle.state(), CircuitState::Closed);
    assert!(throttle_handle.is_throttling());
    assert_eq!(calls.load(Ordering::SeqCst), 1000 - throttled);
    assert!(throttled > 900, "{throttled} of 1000 throttled");
}
