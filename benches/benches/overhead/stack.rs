use std::convert::Infallible;
use std::time::Duration;

use criterion::Criterion;
use seawall::stack::{ClientStackConfig, ClientStackLayer};
use seawall_bench::overhead::{Comparison, bare, yielding};
use tower::Layer;

fn seawall_stack() -> ClientStackLayer {
    let config: ClientStackConfig = serde_json::from_value(serde_json::json!({
        "name": "bench",
        "total_timeout": "10s",
        "attempt_timeout": "1s",
        "retry": { "max_attempts": 3 },
        "circuit_breaker": { "window": { "count": 100 } },
        "bulkhead": { "max_concurrent": 1000 }
    }))
    .expect("a valid stack");
    ClientStackLayer::new(config)
}

/// The same four layers from tower-resilience: retry, circuit breaker, time limiter, bulkhead.
fn resilience<S>(inner: S) -> impl tower::Service<u64, Response = u64, Error = impl std::fmt::Debug>
where
    S: tower::Service<u64, Response = u64, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let bulkhead = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(1000)
        .reject_when_full()
        .build()
        .expect("a valid bulkhead")
        .layer(inner);
    let limited = tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(Duration::from_secs(1))
        .cancel_running_future(true)
        .build()
        .layer(bulkhead);
    let breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_size(100)
        .build()
        .expect("a valid breaker")
        .layer(limited);
    tower_resilience::retry::RetryLayer::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build()
        .layer(breaker)
}

/// The recommended client stack on its success path, against the same stack from
/// tower-resilience.
pub(crate) fn bench(c: &mut Criterion) {
    let rt = crate::runtime();
    let _guard = rt.enter();
    let mut cmp = Comparison::new(c, "stack");
    cmp.contender("bare", bare());
    cmp.contender("seawall", seawall_stack().layer(bare()));
    cmp.contender("tower-resilience", resilience(bare()));
    cmp.finish();

    let mut cmp = Comparison::new(c, "stack-pending");
    cmp.contender("bare", yielding());
    cmp.contender("seawall", seawall_stack().layer(yielding()));
    cmp.contender("tower-resilience", resilience(yielding()));
    cmp.finish();
}
