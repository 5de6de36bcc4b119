use std::time::Duration;

use criterion::Criterion;
use seawall_bench::overhead::{Comparison, bare};
use seawall_rate_limit::{KeyFn, Keyed, Quota, RateLimitLayer, key_fn};
use tower::Layer;

/// A quota no bench runs out of: a billion calls a second, ten million at once.
const RATE: u32 = 1_000_000_000;
const BURST: u32 = 10_000_000;

fn seawall() -> RateLimitLayer {
    RateLimitLayer::builder()
        .quota(Quota::per_second(RATE).with_burst(BURST))
        .build()
        .expect("a valid quota")
}

type ByTenant = KeyFn<fn(&u64) -> u64, u64, u64>;

fn seawall_keyed() -> RateLimitLayer<Keyed<ByTenant>> {
    seawall().keyed(key_fn(|n: &u64| n % 16))
}

fn tower() -> tower::limit::RateLimitLayer {
    tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1))
}

fn resilience() -> tower_resilience::ratelimiter::RateLimiterLayer {
    tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(RATE as usize)
        .refresh_period(Duration::from_secs(1))
        .build()
        .expect("a valid rate limiter")
}

/// A permitted call, direct (one bucket) and keyed (sixteen buckets in a map).
pub(crate) fn bench(c: &mut Criterion) {
    let rt = crate::runtime();
    let _guard = rt.enter();

    let mut cmp = Comparison::new(c, "rate-limit");
    cmp.contender("bare", bare());
    cmp.contender("seawall", seawall().layer(bare()));
    cmp.contender("tower", tower().layer(bare()));
    cmp.contender("tower-resilience", resilience().layer(bare()));
    cmp.finish();

    let mut cmp = Comparison::new(c, "rate-limit-keyed");
    cmp.contender("bare", bare());
    cmp.contender("seawall", seawall_keyed().layer(bare()));
    cmp.finish();
}
