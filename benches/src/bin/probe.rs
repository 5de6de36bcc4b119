//! Runs `calls` calls through one contender and exits: the driver `benches/callgrind.sh` counts
//! instructions of, since instruction counts stay put on a noisy machine where timings move.
//!
//! `probe <contender> <calls>`; `probe list` prints the contenders. `PROBE_RECORDER=before`
//! installs a metrics recorder before the contender is built, `PROBE_RECORDER=late` after it
//! is built and before its first call; without it no recorder is installed.

use std::hint::black_box;
use std::time::Duration;

use std::future::ready;

use seawall_bench::overhead::{bare, call_now, yielding};
use seawall_core::BoxError;
use seawall_outlier::{Endpoint, NoProbe, OutlierLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

const TIMEOUT: Duration = Duration::from_secs(1);

fn run<S>(mut svc: S, calls: u64)
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    if std::env::var("PROBE_RECORDER").as_deref() == Ok("late") {
        seawall_bench::recorder::install();
    }
    for i in 0..calls {
        black_box(call_now(&mut svc, black_box(i)));
    }
}

/// The error of the failing endpoint: a unit, so that boxing it allocates nothing.
#[derive(Debug)]
struct Failed;

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Failed {}

/// `svc` as one endpoint of an outlier set (no detector ejects it) where another endpoint
/// answered a success after the set's first failure: a failure of `svc` is then marked as its
/// own.
fn outlier_endpoint<S>(svc: S) -> Endpoint<S, usize, seawall_core::classify::AnyError, NoProbe>
where
    S: Service<u64>,
{
    let layer = OutlierLayer::<usize>::builder()
        .no_consecutive_failures()
        .no_success_rate()
        .build()
        .expect("a valid outlier set");
    // The set's first failure is never marked (it may be the onset of an outage of all).
    let mut first = layer
        .endpoint(2, service_fn(|_: u64| ready(Err::<u64, _>(Failed))))
        .map_result(|result| Ok::<_, BoxError>(u64::from(result.is_ok())));
    call_now(&mut first, 0);
    let mut other = layer.endpoint(1, bare());
    call_now(&mut other, 0);
    // The set keeps a weak reference to each endpoint; the other one must stay in it.
    std::mem::forget(other);
    layer.endpoint(0, svc)
}

/// `S` whose load is read once before each call, as p2c reads each of its two candidates'.
struct Loaded<S>(S);

impl<S: Service<u64> + tower::load::Load> Service<u64> for Loaded<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: u64) -> S::Future {
        black_box(self.0.load());
        self.0.call(req)
    }
}

/// Every contender, as `path/contender`; the driver runs them in this order.
const CONTENDERS: &[&str] = &[
    "bare/bare",
    "bare-pending/bare",
    "timeout/seawall",
    "timeout/tower",
    "timeout-pending/seawall",
    "timeout-pending/tower",
    "retry/seawall",
    "retry/tower",
    "retry-pending/seawall",
    "retry-pending/tower",
    "circuit-breaker/seawall-count",
    "circuit-breaker/seawall-time-10s",
    "bulkhead/seawall",
    "bulkhead/tower",
    "bulkhead/seawall-vegas",
    "bulkhead-pending/seawall",
    "bulkhead-pending/tower",
    "rate-limit/seawall",
    "rate-limit/tower",
    "rate-limit-keyed/seawall",
    "fallback/seawall",
    "chaos/seawall",
    "throttle/seawall",
    "hedge/seawall",
    "outlier/seawall",
    "outlier-failing/seawall",
    "outlier-load/seawall",
    "load-pending/tower",
    "load-peak-ewma/tower",
    "stack/seawall",
    "stack-pending/seawall",
    "stack-default/seawall",
    "stack-default/seawall-fixed",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "list".to_owned());
    if name == "list" {
        for c in CONTENDERS {
            println!("{c}");
        }
        return;
    }
    let calls: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("usage: probe <contender> <calls>");
    if std::env::var("PROBE_RECORDER").as_deref() == Ok("before") {
        seawall_bench::recorder::install();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let _guard = rt.enter();
    use seawall_bench::contenders as c;
    match name.as_str() {
        "bare/bare" => run(bare(), calls),
        "bare-pending/bare" => run(yielding(), calls),
        "timeout/seawall" => run(c::seawall_timeout(TIMEOUT).layer(bare()), calls),
        "timeout/tower" => run(
            tower::timeout::TimeoutLayer::new(TIMEOUT).layer(bare()),
            calls,
        ),
        "timeout-pending/seawall" => run(c::seawall_timeout(TIMEOUT).layer(yielding()), calls),
        "timeout-pending/tower" => run(
            tower::timeout::TimeoutLayer::new(TIMEOUT).layer(yielding()),
            calls,
        ),
        "retry/seawall" => run(c::seawall_retry().layer(bare()), calls),
        "retry/tower" => run(c::tower_retry().layer(bare()), calls),
        "retry-pending/seawall" => run(c::seawall_retry().layer(yielding()), calls),
        "retry-pending/tower" => run(c::tower_retry().layer(yielding()), calls),
        "circuit-breaker/seawall-count" => run(c::seawall_breaker_count().layer(bare()), calls),
        "circuit-breaker/seawall-time-10s" => run(c::seawall_breaker_time().layer(bare()), calls),
        "bulkhead/seawall" => run(c::seawall_bulkhead().layer(bare()), calls),
        "bulkhead/tower" => run(c::tower_bulkhead().layer(bare()), calls),
        "bulkhead/seawall-vegas" => run(c::seawall_bulkhead_vegas().layer(bare()), calls),
        "bulkhead-pending/seawall" => run(c::seawall_bulkhead().layer(yielding()), calls),
        "bulkhead-pending/tower" => run(c::tower_bulkhead().layer(yielding()), calls),
        "rate-limit/seawall" => run(c::seawall_rate_limit().layer(bare()), calls),
        "rate-limit/tower" => run(c::tower_rate_limit().layer(bare()), calls),
        "rate-limit-keyed/seawall" => run(c::seawall_rate_limit_keyed().layer(bare()), calls),
        "fallback/seawall" => run(
            seawall_fallback::FallbackLayer::builder()
                .value(0u64)
                .build()
                .expect("a valid fallback")
                .layer(bare()),
            calls,
        ),
        "chaos/seawall" => run(
            seawall_chaos::ChaosLayer::builder()
                .enabled(false)
                .seed(1)
                .build()
                .expect("a valid chaos config")
                .layer(bare()),
            calls,
        ),
        "throttle/seawall" => run(
            seawall_throttle::ThrottleLayer::builder()
                .build()
                .expect("a valid throttle")
                .layer(bare()),
            calls,
        ),
        "hedge/seawall" => run(
            seawall_hedge::HedgeLayer::builder()
                .delay(Duration::from_millis(100))
                .build()
                .expect("a valid hedge")
                .layer(bare()),
            calls,
        ),
        "outlier/seawall" => run(outlier_endpoint(bare()), calls),
        "outlier-failing/seawall" => run(
            outlier_endpoint(service_fn(|_: u64| ready(Err::<u64, _>(Failed))))
                .map_result(|result| Ok::<_, BoxError>(u64::from(result.is_ok()))),
            calls,
        ),
        "outlier-load/seawall" => run(Loaded(outlier_endpoint(bare())), calls),
        "load-pending/tower" => run(
            Loaded(tower::load::PendingRequests::new(
                bare(),
                tower::load::CompleteOnResponse::default(),
            )),
            calls,
        ),
        "load-peak-ewma/tower" => run(
            Loaded(tower::load::PeakEwma::new(
                bare(),
                Duration::from_millis(10),
                1e9,
                tower::load::CompleteOnResponse::default(),
            )),
            calls,
        ),
        "stack/seawall" => run(c::seawall_stack().layer(bare()), calls),
        "stack-pending/seawall" => run(c::seawall_stack().layer(yielding()), calls),
        "stack-default/seawall" => run(c::seawall_default_stack(false).layer(bare()), calls),
        "stack-default/seawall-fixed" => run(c::seawall_default_stack(true).layer(bare()), calls),
        other => panic!("no contender {other:?}; `probe list` prints them"),
    }
}
