use criterion::Criterion;
use seawall_bench::overhead::{Comparison, bare};
use tower::Layer;

fn seawall(enabled: bool) -> seawall_chaos::ChaosLayer {
    seawall_chaos::ChaosLayer::builder()
        .enabled(enabled)
        .seed(1)
        .build()
        .expect("a valid chaos config")
}

fn resilience() -> tower_resilience::chaos::ChaosLayer {
    tower_resilience::chaos::ChaosLayer::builder()
        .latency_rate(0.0)
        .seed(1)
        .build()
}

/// A call the chaos layer lets through: off (the state it is left in outside tests) and on
/// with nothing drawn.
pub(crate) fn bench(c: &mut Criterion) {
    let rt = crate::runtime();
    let _guard = rt.enter();

    let mut cmp = Comparison::new(c, "chaos");
    cmp.contender("bare", bare());
    cmp.contender("seawall", seawall(false).layer(bare()));
    cmp.contender("seawall-enabled", seawall(true).layer(bare()));
    cmp.contender("tower-resilience", resilience().layer(bare()));
    cmp.finish();
}
