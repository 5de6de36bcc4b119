//! Zero heap allocations per call on every seawall layer's success path, counted, not timed.

use std::time::Duration;

use seawall_bench::alloc::CountingAllocator;
use seawall_bench::overhead::{allocations_per_call, bare};
use tower::Layer;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn the_counter_sees_allocations() {
    let (_, n) = seawall_bench::alloc::counting(|| std::hint::black_box(Box::new(1u64)));
    assert_eq!(n, 1);
}

#[test]
fn timeout_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall_timeout::TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

#[test]
fn circuit_breaker_allocates_nothing_per_call() {
    use seawall_circuit_breaker::CircuitBreakerLayer;

    let rt = runtime();
    let _guard = rt.enter();
    let count = CircuitBreakerLayer::builder()
        .count_window(100)
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut count.layer(bare()), 1000), 0.0);
    let time = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(10))
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut time.layer(bare()), 1000), 0.0);
}

#[test]
fn keyed_circuit_breaker_allocates_nothing_per_call_for_a_known_key() {
    use seawall_circuit_breaker::{CircuitBreakerConfig, KeyedCircuitBreakerLayer};

    let rt = runtime();
    let _guard = rt.enter();
    let config = CircuitBreakerConfig::builder().build().unwrap();
    let keyed = KeyedCircuitBreakerLayer::new(config, |req: &u64| req % 4);
    assert_eq!(allocations_per_call(&mut keyed.layer(bare()), 1000), 0.0);
}
