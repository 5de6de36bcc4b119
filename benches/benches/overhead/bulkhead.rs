use criterion::Criterion;
use seawall_bench::overhead::{Comparison, bare, yielding};
use tower::Layer;

/// High enough that a call never waits: the uncontended path.
const LIMIT: usize = 1000;

fn seawall() -> seawall_bulkhead::BulkheadLayer {
    seawall_bulkhead::BulkheadLayer::builder()
        .max_concurrent(LIMIT)
        .build()
        .expect("a valid bulkhead")
}

fn tower() -> tower::limit::ConcurrencyLimitLayer {
    tower::limit::ConcurrencyLimitLayer::new(LIMIT)
}

fn resilience() -> tower_resilience::bulkhead::BulkheadLayer {
    tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(LIMIT)
        .reject_when_full()
        .build()
        .expect("a valid bulkhead")
}

/// A call that answers on its first poll, then one that waits once; both uncontended.
pub(crate) fn bench(c: &mut Criterion) {
    let rt = crate::runtime();
    let _guard = rt.enter();

    let mut cmp = Comparison::new(c, "bulkhead");
    cmp.contender("bare", bare());
    cmp.contender("seawall", seawall().layer(bare()));
    cmp.contender(
        "seawall-vegas",
        seawall_bench::contenders::seawall_bulkhead_vegas().layer(bare()),
    );
    cmp.contender("tower", tower().layer(bare()));
    cmp.contender("tower-resilience", resilience().layer(bare()));
    cmp.finish();

    let mut cmp = Comparison::new(c, "bulkhead-pending");
    cmp.contender("bare", yielding());
    cmp.contender("seawall", seawall().layer(yielding()));
    cmp.contender("tower", tower().layer(yielding()));
    cmp.contender("tower-resilience", resilience().layer(yielding()));
    cmp.finish();
}
