use std::time::Duration;

use criterion::Criterion;
use seawall_bench::overhead::{Comparison, bare, yielding};
use tower::Layer;

/// Longer than any call here takes: the path that does not hedge.
const DELAY: Duration = Duration::from_millis(100);

fn seawall_fixed() -> seawall_hedge::HedgeLayer {
    seawall_hedge::HedgeLayer::builder()
        .delay(DELAY)
        .build()
        .expect("a valid hedge")
}

fn seawall_percentile() -> seawall_hedge::HedgeLayer {
    // The defaults: the 95th percentile of the last 10 s, the 10 % budget.
    seawall_hedge::HedgeLayer::builder()
        .build()
        .expect("a valid hedge")
}

/// Any `u64` may be hedged.
#[derive(Clone)]
struct Always;

impl tower::hedge::Policy<u64> for Always {
    fn clone_request(&self, req: &u64) -> Option<u64> {
        Some(*req)
    }

    fn can_retry(&self, _: &u64) -> bool {
        true
    }
}

/// tower's hedge at its 90th percentile over 10 s, after `min_data_points` calls.
fn tower<S>(inner: S, min_data_points: u64) -> tower::hedge::Hedge<S, Always>
where
    S: tower::Service<u64> + Clone,
    S::Error: Into<tower::BoxError>,
{
    tower::hedge::Hedge::new(inner, Always, min_data_points, 0.9, Duration::from_secs(10))
}

fn resilience() -> tower_resilience::hedge::HedgeLayer {
    tower_resilience::hedge::HedgeLayer::builder()
        .delay(DELAY)
        .max_hedged_attempts(2)
        .build()
}

/// The path that does not hedge: a call that answers on its first poll, then one that waits
/// once (with delays no call reaches, so that no contender hedges).
pub(crate) fn bench(c: &mut Criterion) {
    let rt = crate::runtime();
    let _guard = rt.enter();

    let mut cmp = Comparison::new(c, "hedge");
    cmp.contender("bare", bare());
    cmp.contender("seawall", seawall_fixed().layer(bare()));
    cmp.contender("seawall-percentile", seawall_percentile().layer(bare()));
    cmp.contender("tower", tower(bare(), 10));
    cmp.contender("tower-resilience", resilience().layer(bare()));
    cmp.finish();

    // tower's delay is a percentile of whole milliseconds, 0 here: it would hedge every
    // call that waits, so it is measured before it has the data points to hedge at all.
    // tower-resilience's hedge polls its attempts through a `FuturesUnordered`, which polls
    // again only an attempt that woke it; the yielding service returns `Pending` without a
    // wake, so that call never ends under this driver and it is left out.
    let mut cmp = Comparison::new(c, "hedge-pending");
    cmp.contender("bare", yielding());
    cmp.contender("seawall", seawall_fixed().layer(yielding()));
    cmp.contender("tower", tower(yielding(), u64::MAX));
    cmp.finish();
}
