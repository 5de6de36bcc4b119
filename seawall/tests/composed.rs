//! Layers working together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seawall::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use seawall::fallback::FallbackLayer;
use seawall::{BoxError, RejectionKind, ServiceBuilderExt};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

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
        .build()
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

#[tokio::test(start_paused = true)]
async fn a_hedge_that_loses_is_no_failure_to_the_breaker_below() {
    use seawall::hedge::HedgeLayer;

    // Every twentieth attempt hangs; the hedge of such a call answers and the hung one is
    // dropped.
    let attempts = Arc::new(AtomicUsize::new(0));
    let sent = attempts.clone();
    let downstream = service_fn(move |n: u64| {
        let attempt = attempts.fetch_add(1, Ordering::SeqCst);
        async move {
            let wait = if attempt % 20 == 19 { 60_000 } else { 5 };
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok::<_, BoxError>(n)
        }
    });
    let (breaker, handle) = CircuitBreakerLayer::builder()
        .name("search")
        .count_window(100)
        .build()
        .unwrap()
        .pair();
    let hedge = HedgeLayer::builder()
        .name("search")
        .delay(Duration::from_millis(50))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .with_hedge(hedge)
        .with_circuit_breaker(breaker)
        .service(downstream);

    for n in 0..40 {
        assert_eq!(svc.clone().oneshot(n).await.unwrap(), n);
    }
    assert!(sent.load(Ordering::SeqCst) > 40, "hedges were sent");
    // One attempt of each call finished; every other was dropped and counts for nothing.
    let counts = handle.counts();
    assert_eq!((counts.calls, counts.failures), (40, 0));
}

#[tokio::test(start_paused = true)]
async fn outlier_ejection_goes_under_a_balancer_from_its_configuration() {
    use seawall::outlier::OutlierConfig;
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;

    // As loaded from a configuration file:
    let config: OutlierConfig = serde_json::from_value(
        serde_json::json!({ "name": "backends", "consecutive_failures": 3 }),
    )
    .unwrap();
    // Five backends; the first fails every call at once, the others answer in 10 ms. Never
    // having succeeded, the first has no latency to be penalized against: its fast failures
    // rank it first until its third in a row ejects it.
    let backends = (0..5).map(|i| {
        service_fn(move |_: ()| async move {
            if i == 0 {
                Err::<usize, BoxError>("down".into())
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(i)
            }
        })
    });
    let set = ServiceBuilder::new()
        .with_outlier(config)
        .service(ServiceList::new(backends));
    let mut balance = Balance::new(set);
    let mut failures = 0;
    for _ in 0..100 {
        if balance.ready().await.unwrap().call(()).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 3,
        "the third failure in a row ejected the first backend"
    );
}
