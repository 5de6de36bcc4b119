//! The layers the probe, contention and HTTP benches compare, built the way the overhead
//! benches build them, so that every measurement is of the same configuration.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use seawall::stack::{ClientStackConfig, ClientStackLayer};
use seawall_rate_limit::{KeyFn, Keyed, Quota, RateLimitLayer, key_fn};
use tower::retry::budget::{Budget, TpsBudget};

/// The bulkhead's limit: high enough that an uncontended call never waits.
pub const BULKHEAD_LIMIT: usize = 1000;

/// A rate far above any offered load, so that every call is admitted.
pub const RATE: u32 = 1_000_000_000;

/// seawall's timeout of `timeout`.
pub fn seawall_timeout(timeout: Duration) -> seawall_timeout::TimeoutLayer {
    seawall_timeout::TimeoutLayer::builder()
        .timeout(timeout)
        .build()
        .expect("a valid timeout")
}

/// seawall's retry with its defaults, budget included.
pub fn seawall_retry() -> seawall_retry::RetryLayer {
    seawall_retry::RetryLayer::builder()
        .build()
        .expect("a valid retry configuration")
}

/// tower's retry with a [`TpsBudget`]: deposits on success, withdraws to retry.
#[derive(Clone, Debug)]
pub struct BudgetedPolicy {
    budget: Arc<TpsBudget>,
}

impl<E> tower::retry::Policy<u64, u64, E> for BudgetedPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut u64, result: &mut Result<u64, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) => self.budget.withdraw().then(|| ready(())),
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// tower's retry with [`BudgetedPolicy`].
pub fn tower_retry() -> tower::retry::RetryLayer<BudgetedPolicy> {
    tower::retry::RetryLayer::new(BudgetedPolicy {
        budget: Arc::new(TpsBudget::default()),
    })
}

/// seawall's breaker over the last 100 calls.
pub fn seawall_breaker_count() -> seawall_circuit_breaker::CircuitBreakerLayer {
    seawall_circuit_breaker::CircuitBreakerLayer::builder()
        .count_window(100)
        .build()
        .expect("a valid breaker")
}

/// seawall's breaker over the last 10 s.
pub fn seawall_breaker_time() -> seawall_circuit_breaker::CircuitBreakerLayer {
    seawall_circuit_breaker::CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(10))
        .build()
        .expect("a valid breaker")
}

/// seawall's bulkhead of [`BULKHEAD_LIMIT`] calls.
pub fn seawall_bulkhead() -> seawall_bulkhead::BulkheadLayer {
    seawall_bulkhead::BulkheadLayer::builder()
        .max_concurrent(BULKHEAD_LIMIT)
        .build()
        .expect("a valid bulkhead")
}

/// seawall's bulkhead with the client stack's default adaptive limit (Vegas, at most
/// [`BULKHEAD_LIMIT`] calls): every call is a sample of the limit.
pub fn seawall_bulkhead_vegas() -> seawall_bulkhead::BulkheadLayer {
    seawall_bulkhead::BulkheadLayer::builder()
        .adaptive(seawall_bulkhead::VegasConfig::new().max(BULKHEAD_LIMIT))
        .build()
        .expect("a valid bulkhead")
}

/// tower's `ConcurrencyLimit` of [`BULKHEAD_LIMIT`] calls.
pub fn tower_bulkhead() -> tower::limit::ConcurrencyLimitLayer {
    tower::limit::ConcurrencyLimitLayer::new(BULKHEAD_LIMIT)
}

/// seawall's rate limit of [`RATE`] calls a second.
pub fn seawall_rate_limit() -> RateLimitLayer {
    RateLimitLayer::builder()
        .quota(Quota::per_second(RATE).with_burst(10_000_000))
        .build()
        .expect("a valid quota")
}

/// The key of [`seawall_rate_limit_keyed`]: one of 16 tenants.
pub type ByTenant = KeyFn<fn(&u64) -> u64, u64, u64>;

/// seawall's rate limit per tenant, 16 tenants.
pub fn seawall_rate_limit_keyed() -> RateLimitLayer<Keyed<ByTenant>> {
    seawall_rate_limit().keyed(key_fn(|n: &u64| n % 16))
}

/// tower's rate limit, never reached.
pub fn tower_rate_limit() -> tower::limit::RateLimitLayer {
    tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1))
}

/// `ClientStackConfig::default()`, or the same with a fixed bulkhead of 1000 (the default
/// before its adaptive limit).
pub fn seawall_default_stack(fixed: bool) -> ClientStackLayer {
    if !fixed {
        return ClientStackLayer::new(ClientStackConfig::default());
    }
    let config: ClientStackConfig = serde_json::from_value(serde_json::json!({
        "name": "client",
        "total_timeout": "1s",
        "bulkhead": { "max_concurrent": 1000 }
    }))
    .expect("a valid stack");
    ClientStackLayer::new(config)
}

/// seawall's recommended client stack, as the overhead bench configures it.
pub fn seawall_stack() -> ClientStackLayer {
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
