//! One way to do each thing, whatever the layer: every layer that has a name answers `name()`,
//! every layer with a handle answers `pair()`, and every `ServiceBuilderExt::with_*` takes a
//! configuration as readily as a layer.

use std::time::Duration;

use seawall::chaos::ChaosLayer;
use seawall::circuit_breaker::{CircuitBreakerLayer, KeyedCircuitBreakerLayer};
use seawall::fallback::FallbackLayer;
use seawall::health::{ComponentConfig, HealthLayer, HealthTracker, RateConfig};
use seawall::key::key_fn;
use seawall::rate_limit::{Quota, RateLimitLayer};
use seawall::timeout::TimeoutLayer;

#[tokio::test(start_paused = true)]
async fn every_named_layer_answers_its_name() {
    let breaker = CircuitBreakerLayer::builder().name("db").build().unwrap();
    assert_eq!(breaker.name(), "db");
    let config = seawall::circuit_breaker::CircuitBreakerConfig::builder()
        .name("hosts")
        .build()
        .unwrap();
    let keyed = KeyedCircuitBreakerLayer::new(config, key_fn(|n: &u64| n % 4));
    assert_eq!(keyed.name(), "hosts");
    let timeout = TimeoutLayer::builder()
        .name("call")
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(timeout.name(), "call");
    let limit = RateLimitLayer::builder()
        .name("api")
        .quota(Quota::per_second(10))
        .build()
        .unwrap();
    assert_eq!(limit.name(), "api");
    let fallback = FallbackLayer::builder()
        .name("cache")
        .value(0u64)
        .build()
        .unwrap();
    assert_eq!(fallback.name(), "cache");
    let tracker = HealthTracker::new("app");
    let health = HealthLayer::new(
        &tracker,
        RateConfig::builder(ComponentConfig::new("api").unwrap())
            .build()
            .unwrap(),
    );
    assert_eq!(health.name(), "api");
    let chaos = ChaosLayer::builder().name("faults").build().unwrap();
    assert_eq!(chaos.name(), "faults");
    let (chaos, handle) = chaos.pair();
    handle.disable();
    assert!(!handle.is_enabled());
    assert_eq!(chaos.name(), "faults");
}

/// Configurations, as loaded from a file, go straight into `with_*`; the stacks, chaos and the
/// keyed breaker have theirs too.
#[tokio::test(start_paused = true)]
async fn with_methods_take_configurations_straight_in() {
    use seawall::ServiceBuilderExt;
    use seawall::bulkhead::BulkheadConfig;
    use seawall::chaos::ChaosConfig;
    use seawall::circuit_breaker::CircuitBreakerConfig;
    use seawall::rate_limit::RateLimitConfig;
    use seawall::stack::{ClientStackConfig, ServerStackConfig};
    use seawall::timeout::TimeoutConfig;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    let svc = ServiceBuilder::new()
        .with_timeout(
            TimeoutConfig::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
        .with_circuit_breaker(CircuitBreakerConfig::builder().build().unwrap())
        .with_bulkhead(
            BulkheadConfig::builder()
                .max_concurrent(10)
                .build()
                .unwrap(),
        )
        .with_rate_limit(
            RateLimitConfig::builder()
                .quota(Quota::per_second(10))
                .build()
                .unwrap(),
        )
        .with_chaos(ChaosConfig::builder().enabled(false).build().unwrap())
        .with_keyed_circuit_breaker(KeyedCircuitBreakerLayer::new(
            CircuitBreakerConfig::builder().build().unwrap(),
            key_fn(|n: &u64| n % 4),
        ))
        .service(service_fn(
            |n: u64| async move { Ok::<_, seawall::BoxError>(n) },
        ));
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);

    let second = Duration::from_secs(1);
    let client = ClientStackConfig::builder()
        .name("client")
        .total_timeout(second)
        .attempt_timeout(second)
        .bulkhead(
            BulkheadConfig::builder()
                .max_concurrent(10)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let server = ServerStackConfig::builder()
        .name("server")
        .bulkhead(
            BulkheadConfig::builder()
                .max_concurrent(10)
                .build()
                .unwrap(),
        )
        .timeout(second)
        .build()
        .unwrap();
    let _stacks = ServiceBuilder::new()
        .with_server_stack(server)
        .with_client_stack(client)
        .service(service_fn(
            |n: u64| async move { Ok::<_, seawall::BoxError>(n) },
        ));
}

/// One hook rule: a hook lives in the layer's shared state, so setting it reaches the clones
/// and services made before (the timeout kept a copy per clone before `Hook`).
#[tokio::test(start_paused = true)]
async fn a_hook_reaches_the_services_of_clones_made_before_it_was_set() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::{Layer, ServiceExt, service_fn};

    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let earlier = layer.clone();
    let svc = earlier.layer(service_fn(|()| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok::<_, seawall::BoxError>(())
    }));
    let fired = Arc::new(AtomicUsize::new(0));
    let count = fired.clone();
    let _layer = layer.on_timeout(move |_| {
        count.fetch_add(1, Ordering::Relaxed);
    });
    assert!(svc.oneshot(()).await.is_err());
    assert_eq!(fired.load(Ordering::Relaxed), 1);
}
