use std::convert::Infallible;

use criterion::Criterion;
use seawall_bench::overhead::{Comparison, bare};
use tower::Layer;

/// A call that succeeds, so the fallback never fires: the cost every call pays.
pub(crate) fn bench(c: &mut Criterion) {
    let mut cmp = Comparison::new(c, "fallback");
    cmp.contender("bare", bare());
    let seawall = seawall_fallback::FallbackLayer::builder()
        .value(0u64)
        .build()
        .expect("a valid fallback");
    cmp.contender("seawall", seawall.layer(bare()));
    let resilience = tower_resilience::fallback::FallbackLayer::<u64, u64, Infallible>::value(0);
    cmp.contender("tower-resilience", resilience.layer(bare()));
    cmp.finish();
}
