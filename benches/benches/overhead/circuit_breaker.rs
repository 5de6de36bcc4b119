use std::time::Duration;

use criterion::Criterion;
use seawall_bench::overhead::{Comparison, bare};
use tower::Layer;
use tower_resilience::circuitbreaker::SlidingWindowType;

const WINDOW_CALLS: u32 = 100;
const WINDOW_SPAN: Duration = Duration::from_secs(10);

fn seawall_count() -> seawall_circuit_breaker::CircuitBreakerLayer {
    seawall_circuit_breaker::CircuitBreakerLayer::builder()
        .count_window(WINDOW_CALLS)
        .build()
        .expect("a valid breaker")
}

fn seawall_time() -> seawall_circuit_breaker::CircuitBreakerLayer {
    seawall_circuit_breaker::CircuitBreakerLayer::builder()
        .time_window(WINDOW_SPAN)
        .build()
        .expect("a valid breaker")
}

fn resilience(window: SlidingWindowType) -> tower_resilience::circuitbreaker::CircuitBreakerLayer {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_type(window)
        .sliding_window_size(WINDOW_CALLS as usize)
        .sliding_window_duration(WINDOW_SPAN)
        .build()
        .expect("a valid breaker")
}

/// The closed path, every call a success: what a healthy downstream pays for its breaker.
/// tower has no circuit breaker of its own.
pub(crate) fn bench(c: &mut Criterion) {
    let rt = crate::runtime();
    let _guard = rt.enter();

    let mut cmp = Comparison::new(c, "circuit-breaker");
    cmp.contender("bare", bare());
    cmp.contender("seawall-count", seawall_count().layer(bare()));
    cmp.contender("seawall-time-10s", seawall_time().layer(bare()));
    cmp.contender(
        "tower-resilience-count",
        resilience(SlidingWindowType::CountBased).layer(bare()),
    );
    cmp.contender(
        "tower-resilience-time-10s",
        resilience(SlidingWindowType::TimeBased).layer(bare()),
    );
    cmp.finish();
}
