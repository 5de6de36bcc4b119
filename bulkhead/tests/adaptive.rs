//! Adaptive limits against a simulated downstream on the paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seawall_bulkhead::{
    AdaptiveLimit, AimdConfig, BulkheadHandle, BulkheadLayer, Gradient2Config, VegasConfig,
};
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt, service_fn};

const BASE: Duration = Duration::from_millis(10);

/// A downstream that answers in 10 ms up to `capacity` concurrent calls, and proportionally
/// slower past it (a server sharing its CPUs among more calls than it has).
#[derive(Clone)]
struct Downstream {
    capacity: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
}

impl Downstream {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: Arc::new(AtomicUsize::new(capacity)),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn latency(&self) -> Duration {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let capacity = self.capacity.load(Ordering::SeqCst);
        let l = BASE.mul_f64((n as f64 / capacity as f64).max(1.0));
        if l > Duration::from_millis(30) {
            println!("slow {n} {l:?}");
        }
        l
    }
}

/// Runs `clients` closed-loop clients (each retrying 5 ms after a rejection) through `layer`
/// for `secs` virtual seconds, and returns the limit sampled every 100 ms.
async fn drive(
    handle: &BulkheadHandle,
    layer: BulkheadLayer,
    downstream: &Downstream,
    clients: usize,
    secs: u64,
) -> Vec<usize> {
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let ds = downstream.clone();
        let svc = layer.layer(service_fn(move |()| {
            let ds = ds.clone();
            let latency = ds.latency();
            async move {
                sleep(latency).await;
                ds.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(())
            }
        }));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                if svc.clone().oneshot(()).await.is_err() {
                    sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    let mut limits = Vec::new();
    while Instant::now() < stop {
        sleep(Duration::from_millis(100)).await;
        limits.push(handle.limit());
    }
    for task in tasks {
        task.await.unwrap();
    }
    limits
}

/// Asserts that every limit sampled over the last five seconds is within 20 % of `target`.
fn assert_settled(limits: &[usize], target: usize, phase: &str) {
    let last = &limits[limits.len() - 50..];
    let (low, high) = (target * 8 / 10, target * 12 / 10);
    assert!(
        last.iter().all(|l| (low..=high).contains(l)),
        "{phase}: the limit should settle in [{low}, {high}], was {last:?}"
    );
}

/// Capacity 40, then 80, then 40 again, 15 virtual seconds each, with 100 closed-loop
/// clients (more than either capacity); the limit settles near the capacity each time.
async fn converges(limit: impl Into<AdaptiveLimit>) {
    let (layer, handle) = BulkheadLayer::builder()
        .adaptive(limit)
        .sample_window(Duration::from_millis(100))
        .build()
        .unwrap()
        .pair();
    let downstream = Downstream::new(40);
    let limits = drive(&handle, layer.clone(), &downstream, 100, 15).await;
    assert_settled(&limits, 40, "capacity 40");
    downstream.capacity.store(80, Ordering::SeqCst);
    let limits = drive(&handle, layer.clone(), &downstream, 100, 15).await;
    assert_settled(&limits, 80, "capacity raised to 80");
    downstream.capacity.store(40, Ordering::SeqCst);
    let limits = drive(&handle, layer, &downstream, 100, 15).await;
    assert_settled(&limits, 40, "capacity back to 40");
}

#[tokio::test(start_paused = true)]
async fn vegas_settles_near_the_capacity_and_follows_it() {
    converges(VegasConfig::new().initial(10).max(500)).await;
}

#[tokio::test(start_paused = true)]
async fn gradient2_settles_near_the_capacity_and_follows_it() {
    converges(Gradient2Config::new().initial(10).min(5).max(500)).await;
}

#[tokio::test(start_paused = true)]
async fn aimd_settles_near_the_capacity_and_follows_it() {
    // A client's view: a call 10 % slower than the downstream's base latency counts as a drop.
    converges(
        AimdConfig::new()
            .initial(10)
            .max(500)
            .timeout(Duration::from_millis(11)),
    )
    .await;
}
