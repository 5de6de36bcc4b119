use criterion::Criterion;
use seawall_bench::overhead::{Comparison, bare, yielding};
use tower::Layer;

fn seawall() -> seawall_throttle::ThrottleLayer {
    seawall_throttle::ThrottleLayer::builder()
        .build()
        .expect("a valid throttle")
}

/// Every call accepted, so nothing is rejected: what a healthy downstream pays for its
/// throttle. Neither tower nor tower-resilience has client-side throttling.
pub(crate) fn bench(c: &mut Criterion) {
    let rt = crate::runtime();
    let _guard = rt.enter();

    let mut cmp = Comparison::new(c, "throttle");
    cmp.contender("bare", bare());
    cmp.contender("seawall", seawall().layer(bare()));
    cmp.finish();

    let mut cmp = Comparison::new(c, "throttle-pending");
    cmp.contender("bare", yielding());
    cmp.contender("seawall", seawall().layer(yielding()));
    cmp.finish();
}
