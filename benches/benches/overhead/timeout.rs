use std::time::Duration;

use criterion::Criterion;
use seawall_bench::overhead::{Comparison, bare, yielding};
use tower::Layer;

const TIMEOUT: Duration = Duration::from_secs(1);

fn seawall() -> seawall_timeout::TimeoutLayer {
    seawall_timeout::TimeoutLayer::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("a valid timeout")
}

fn tower() -> tower::timeout::TimeoutLayer {
    tower::timeout::TimeoutLayer::new(TIMEOUT)
}

fn resilience()
-> tower_resilience::timelimiter::TimeLimiterLayer<tower_resilience::timelimiter::FixedTimeout> {
    tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(TIMEOUT)
        .cancel_running_future(true)
        .build()
}

/// A call that answers on its first poll, then one that waits once (and so needs a timer).
pub(crate) fn bench(c: &mut Criterion) {
    let rt = crate::runtime();
    let _guard = rt.enter();

    let mut cmp = Comparison::new(c, "timeout");
    cmp.contender("bare", bare());
    cmp.contender("seawall", seawall().layer(bare()));
    cmp.contender("tower", tower().layer(bare()));
    cmp.contender("tower-resilience", resilience().layer(bare()));
    cmp.finish();

    let mut cmp = Comparison::new(c, "timeout-pending");
    cmp.contender("bare", yielding());
    cmp.contender("seawall", seawall().layer(yielding()));
    cmp.contender("tower", tower().layer(yielding()));
    cmp.contender("tower-resilience", resilience().layer(yielding()));
    cmp.finish();
}
