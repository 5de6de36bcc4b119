//! Zero heap allocations per call on every seawall layer's success path, counted, not timed.

use std::time::Duration;

use seawall_bench::alloc::CountingAllocator;
use seawall_bench::overhead::{allocations_per_call, bare};
use tower::Layer;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn the_counter_sees_allocations() {
    let (_, n) = seawall_bench::alloc::counting(|| std::hint::black_box(Box::new(1u64)));
    assert_eq!(n, 1);
}

#[test]
fn timeout_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall_timeout::TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

#[test]
fn an_adaptive_timeout_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall_timeout::TimeoutLayer::builder()
        .adaptive(seawall_timeout::AdaptiveTimeout::new().ceiling(Duration::from_secs(1)))
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
    assert_eq!(
        allocations_per_call(&mut layer.layer(seawall_bench::overhead::yielding()), 1000),
        0.0
    );
}

#[test]
fn fallback_allocates_nothing_per_call() {
    let layer = seawall_fallback::FallbackLayer::builder()
        .value(0u64)
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

#[test]
fn health_layer_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let tracker = seawall_health::HealthTracker::new("bench");
    let component = seawall_health::ComponentConfig::new("api").unwrap();
    let layer = seawall_health::HealthLayer::new(
        &tracker,
        seawall_health::RateConfig::builder(component)
            .build()
            .unwrap(),
    );
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

#[test]
fn retry_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    // The defaults, budget included: the request copy of a `u64` is free.
    let layer = seawall_retry::RetryLayer::builder().build().unwrap();
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

/// Fails every other call with an error of zero size (which boxes without allocating).
#[derive(Clone, Default)]
struct FailsEveryOther(bool);

#[derive(Debug)]
struct Flake;

impl std::fmt::Display for Flake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("flake")
    }
}

impl std::error::Error for Flake {}

impl tower::Service<u64> for FailsEveryOther {
    type Response = u64;
    type Error = Flake;
    type Future = std::future::Ready<Result<u64, Flake>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Flake>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        self.0 = !self.0;
        std::future::ready(if self.0 { Err(Flake) } else { Ok(req) })
    }
}

#[test]
fn a_retry_allocates_nothing_either() {
    let rt = runtime();
    let _guard = rt.enter();
    let backoff = seawall_core::backoff::Backoff::constant(Duration::ZERO)
        .build()
        .unwrap();
    let layer = seawall_retry::RetryLayer::builder()
        .backoff(backoff)
        .no_budget()
        .build()
        .unwrap();
    // Each call fails once and succeeds on its retry.
    let mut svc = layer.layer(FailsEveryOther::default());
    assert_eq!(allocations_per_call(&mut svc, 1000), 0.0);
}

#[test]
fn hedge_allocates_nothing_per_call_that_it_does_not_hedge() {
    use seawall_bench::overhead::yielding;
    use seawall_hedge::HedgeLayer;

    let rt = runtime();
    let _guard = rt.enter();
    // The defaults: a percentile delay, whose estimate every call feeds, and the budget.
    let percentile = HedgeLayer::builder().build().unwrap();
    assert_eq!(
        allocations_per_call(&mut percentile.layer(bare()), 1000),
        0.0
    );
    assert_eq!(
        allocations_per_call(&mut percentile.layer(yielding()), 1000),
        0.0
    );
    // A fixed delay no call reaches: the timer is armed for each call that waits.
    let fixed = HedgeLayer::builder()
        .delay(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut fixed.layer(bare()), 1000), 0.0);
    assert_eq!(
        allocations_per_call(&mut fixed.layer(yielding()), 1000),
        0.0
    );
}

#[test]
fn an_outlier_endpoint_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall_outlier::OutlierLayer::builder().build().unwrap();
    let mut endpoint = layer.endpoint(0usize, bare());
    assert_eq!(allocations_per_call(&mut endpoint, 1000), 0.0);
}

#[test]
fn circuit_breaker_allocates_nothing_per_call() {
    use seawall_circuit_breaker::CircuitBreakerLayer;

    let rt = runtime();
    let _guard = rt.enter();
    let count = CircuitBreakerLayer::builder()
        .count_window(100)
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut count.layer(bare()), 1000), 0.0);
    let time = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(10))
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut time.layer(bare()), 1000), 0.0);
}

#[test]
fn keyed_circuit_breaker_allocates_nothing_per_call_for_a_known_key() {
    use seawall_circuit_breaker::{CircuitBreakerConfig, KeyedCircuitBreakerLayer};
    use seawall_core::key::key_fn;

    let rt = runtime();
    let _guard = rt.enter();
    let config = CircuitBreakerConfig::builder().build().unwrap();
    let keyed = KeyedCircuitBreakerLayer::new(config, key_fn(|req: &u64| req % 4));
    assert_eq!(allocations_per_call(&mut keyed.layer(bare()), 1000), 0.0);
}

#[test]
fn throttle_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall_throttle::ThrottleLayer::builder().build().unwrap();
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

#[test]
fn rate_limit_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall_rate_limit::RateLimitLayer::builder()
        .quota(seawall_rate_limit::Quota::per_second(1_000_000_000).with_burst(10_000_000))
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

#[test]
fn keyed_rate_limit_allocates_nothing_per_call_once_its_keys_are_known() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall_rate_limit::RateLimitLayer::builder()
        .quota(seawall_rate_limit::Quota::per_second(1_000_000_000).with_burst(10_000_000))
        .build()
        .unwrap()
        .keyed(seawall_rate_limit::key_fn(|n: &u64| n % 16));
    // The warm-up inside `allocations_per_call` meets all sixteen keys.
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

#[test]
fn bulkhead_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall_bulkhead::BulkheadLayer::builder()
        .max_concurrent(1000)
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

#[test]
fn an_adaptive_bulkhead_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall_bulkhead::BulkheadLayer::builder()
        .adaptive(seawall_bulkhead::VegasConfig::new())
        .build()
        .unwrap();
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

#[test]
fn a_partitioned_bulkhead_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall_bulkhead::BulkheadLayer::builder()
        .max_concurrent(1000)
        .partition("live", 0.9)
        .partition("batch", 0.1)
        .build()
        .unwrap()
        .partition_by(|req: &u64| (*req % 2) as usize);
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
}

#[test]
fn the_client_stack_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let config: seawall::stack::ClientStackConfig = serde_json::from_value(serde_json::json!({
        "name": "stack",
        "total_timeout": "10s",
        "attempt_timeout": "1s",
        "bulkhead": { "max_concurrent": 1000 }
    }))
    .unwrap();
    let layer = seawall::stack::ClientStackLayer::new(config);
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
    assert_eq!(
        allocations_per_call(&mut layer.layer(seawall_bench::overhead::yielding()), 1000),
        0.0
    );
}

#[test]
fn the_default_client_stack_allocates_nothing_per_call() {
    let rt = runtime();
    let _guard = rt.enter();
    let layer = seawall::stack::ClientStackLayer::new(Default::default());
    assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
    assert_eq!(
        allocations_per_call(&mut layer.layer(seawall_bench::overhead::yielding()), 1000),
        0.0
    );
}

#[test]
fn chaos_allocates_nothing_per_call_when_off_or_passing() {
    let rt = runtime();
    let _guard = rt.enter();
    for enabled in [false, true] {
        let layer = seawall_chaos::ChaosLayer::builder()
            .enabled(enabled)
            .build()
            .unwrap();
        assert_eq!(allocations_per_call(&mut layer.layer(bare()), 1000), 0.0);
    }
}

/// A subscriber that takes every span and event and keeps nothing: the layers' spans and
/// events are built and dispatched, as they are under a real subscriber with its filter open.
struct Discard;

impl tracing::Subscriber for Discard {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn tracing_costs_no_allocation_whether_disabled_or_discarded() {
    use seawall_circuit_breaker::CircuitBreakerLayer;

    let rt = runtime();
    let _guard = rt.enter();
    let backoff = seawall_core::backoff::Backoff::constant(Duration::ZERO)
        .build()
        .unwrap();
    let retry = seawall_retry::RetryLayer::builder()
        .backoff(backoff)
        .no_budget()
        .build()
        .unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .count_window(100)
        .failure_rate_threshold(1.0)
        .build()
        .unwrap();
    let timeout = seawall_timeout::TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let bulkhead = seawall_bulkhead::BulkheadLayer::builder()
        .max_concurrent(1000)
        .build()
        .unwrap();
    let mut stack = tower::ServiceBuilder::new()
        .layer(timeout)
        .layer(retry)
        .layer(breaker)
        .layer(bulkhead)
        .service(FailsEveryOther::default());
    let disabled = tracing::subscriber::NoSubscriber::default();
    let subscribers = [
        ("disabled", tracing::Dispatch::new(disabled)),
        ("discarding", tracing::Dispatch::new(Discard)),
    ];
    for (which, subscriber) in subscribers {
        // Each call fails once (an event) and succeeds on its retry (a span).
        let per_call = tracing::dispatcher::with_default(&subscriber, || {
            allocations_per_call(&mut stack, 1000)
        });
        assert_eq!(per_call, 0.0, "{which}");
    }
}

// ===== the server stack under axum =====

/// The fewest heap allocations of 100 requests served by `app` (see [`served_once`]) in five
/// runs. Real sockets split reads as they come, and hyper's buffers grow or not with them:
/// one run in about twelve counted one allocation more or less than the others.
fn allocations_served(app: axum::Router, headers: &str) -> u64 {
    (0..5)
        .map(|_| served_once(app.clone(), headers))
        .min()
        .expect("five runs")
}

/// Heap allocations of 100 requests served by `app` through `axum::serve` on 127.0.0.1 (after
/// ten to warm up), each with `headers`, answered by a handler that says "ok". The client
/// writes and reads raw bytes on the same thread, and allocates nothing doing so.
fn served_once(app: axum::Router, headers: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET / HTTP/1.1\r\nhost: api\r\n{headers}\r\n").into_bytes();
        let mut buffer = vec![0u8; 4096];
        let mut count = 0;
        for round in 0..110 {
            if round == 10 {
                count = seawall_bench::alloc::allocations();
            }
            conn.write_all(&request).await.unwrap();
            let mut len = 0;
            while !buffer[..len].ends_with(b"\r\n\r\nok") {
                len += conn.read(&mut buffer[len..]).await.unwrap();
            }
            assert!(buffer.starts_with(b"HTTP/1.1 200"));
        }
        seawall_bench::alloc::allocations() - count
    })
}

fn ok() -> axum::Router {
    axum::Router::new().route("/", axum::routing::get(|| async { "ok" }))
}

fn server_stack() -> axum::Router {
    use seawall::ServiceBuilderExt;
    let config: seawall::stack::ServerStackConfig = serde_json::from_value(serde_json::json!({
        "name": "api",
        "bulkhead": { "max_concurrent": 1000 },
        "timeout": "2s"
    }))
    .unwrap();
    ok().layer(
        tower::ServiceBuilder::new()
            .with_http_errors()
            .layer(seawall::stack::ServerStackLayer::new(config)),
    )
}

#[test]
fn a_callers_deadline_costs_the_server_stack_no_allocation() {
    let header = "grpc-timeout: 500m\r\n";
    let nothing = || ok().layer(tower::layer::util::Identity::new());
    // hyper's own cost of one more header, whatever the layers.
    let parsed = allocations_served(nothing(), header) - allocations_served(nothing(), "");
    let plain = allocations_served(server_stack(), "");
    let deadline = allocations_served(server_stack(), header);
    assert_eq!(deadline, plain + parsed, "per 100 requests");
}

#[test]
fn the_server_stack_allocates_only_the_deadline_stamp() {
    let nothing = allocations_served(ok().layer(tower::layer::util::Identity::new()), "");
    let stack = allocations_served(server_stack(), "");
    // http's `Extensions::insert` boxes the `Deadline` a handler reads (a behaviour the
    // timeout's tests pin). The adapter answers in axum's own `Body`, which axum does not box
    // again (an adapter body of its own was boxed once more a request: RESULTS.md, `http2`).
    assert_eq!(stack, nothing + 100, "per 100 requests");
}

/// Allocations per call through the layer `$layer` over `$inner`, with `$recorder` installed
/// on this thread for the calls, and for the build too unless `$late`.
macro_rules! with_recorder {
    ($recorder:expr, $late:expr, $layer:expr, $inner:expr) => {{
        let build = || $layer.layer($inner);
        let mut svc = if $late {
            build()
        } else {
            metrics::with_local_recorder($recorder, build)
        };
        metrics::with_local_recorder($recorder, || allocations_per_call(&mut svc, 1000))
    }};
}

#[test]
fn every_layer_allocates_nothing_per_call_with_a_recorder_installed_before_or_after_it_is_built() {
    use seawall_bench::contenders as c;
    use seawall_bench::overhead::yielding;
    use seawall_bench::recorder::AtomicRecorder;

    let rt = runtime();
    let _guard = rt.enter();
    let recorder = AtomicRecorder::default();
    let second = Duration::from_secs(1);
    let throttle = || seawall_throttle::ThrottleLayer::builder().build().unwrap();
    let hedge = || {
        seawall_hedge::HedgeLayer::builder()
            .delay(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    let fallback = || {
        seawall_fallback::FallbackLayer::builder()
            .value(0u64)
            .build()
            .unwrap()
    };
    for late in [false, true] {
        let r = &recorder;
        for (name, allocations) in [
            (
                "timeout",
                with_recorder!(r, late, c::seawall_timeout(second), bare()),
            ),
            (
                "timeout, pending",
                with_recorder!(r, late, c::seawall_timeout(second), yielding()),
            ),
            ("retry", with_recorder!(r, late, c::seawall_retry(), bare())),
            (
                "retry, pending",
                with_recorder!(r, late, c::seawall_retry(), yielding()),
            ),
            (
                "breaker",
                with_recorder!(r, late, c::seawall_breaker_count(), bare()),
            ),
            (
                "time breaker",
                with_recorder!(r, late, c::seawall_breaker_time(), bare()),
            ),
            (
                "bulkhead",
                with_recorder!(r, late, c::seawall_bulkhead(), bare()),
            ),
            (
                "bulkhead, pending",
                with_recorder!(r, late, c::seawall_bulkhead(), yielding()),
            ),
            (
                "vegas",
                with_recorder!(r, late, c::seawall_bulkhead_vegas(), bare()),
            ),
            (
                "rate limit",
                with_recorder!(r, late, c::seawall_rate_limit(), bare()),
            ),
            ("throttle", with_recorder!(r, late, throttle(), bare())),
            ("hedge", with_recorder!(r, late, hedge(), bare())),
            ("fallback", with_recorder!(r, late, fallback(), bare())),
            ("stack", with_recorder!(r, late, c::seawall_stack(), bare())),
            (
                "stack, pending",
                with_recorder!(r, late, c::seawall_stack(), yielding()),
            ),
            (
                "default stack",
                with_recorder!(r, late, c::seawall_default_stack(false), bare()),
            ),
            (
                "default stack, pending",
                with_recorder!(r, late, c::seawall_default_stack(false), yielding()),
            ),
        ] {
            assert_eq!(allocations, 0.0, "{name}, recorder installed late: {late}");
        }
    }
}
