//! The fleet-wide rate limit against a real Redis on loopback: round trips per 1000 calls and
//! the latency each call adds, asking the store per call (`lease = 1`) and with leases.
//!
//! Needs `SEAWALL_REDIS_URL` (skipped without it):
//!
//! ```sh
//! SEAWALL_REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo bench -p seawall-bench --no-default-features --features redis --bench redis
//! ```
//!
//! Each call is `ready` and `call` on a service that answers at once, awaited on a
//! current-thread runtime, timed with the wall clock. The quota is far above the offered rate,
//! so every call is admitted and the numbers are the store's cost, not the limit's.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seawall_rate_limit::store::{OnStoreFailure, QuotaStore, RedisStore};
use seawall_rate_limit::{FleetConfig, Quota, RateLimitConfig, RateLimitLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

const CALLS: usize = 20_000;
const WARM_UP: usize = 1_000;

/// The Redis store, counting its round trips.
#[derive(Clone)]
struct Counting {
    store: RedisStore,
    trips: Arc<AtomicU64>,
}

impl QuotaStore for Counting {
    type Future = <RedisStore as QuotaStore>::Future;

    fn take(&self, key: &[u8], quota: &Quota, cells: u32) -> Self::Future {
        self.trips.fetch_add(1, Ordering::Relaxed);
        self.store.take(key, quota, cells)
    }
}

fn config(name: &str, url: Option<&str>, lease: u32) -> RateLimitConfig {
    let builder = RateLimitConfig::builder()
        .name(name)
        .quota(Quota::per_second(10_000_000).with_burst(1_000));
    match url {
        None => builder.build().unwrap(),
        Some(url) => builder
            .fleet(
                FleetConfig::builder()
                    .redis_url(url)
                    .key_prefix("seawall-bench")
                    .lease(lease)
                    .on_failure(OnStoreFailure::FailClosed)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    }
}

struct Run {
    label: String,
    trips_per_1000: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

async fn time<S>(label: String, mut svc: S, trips: Option<&AtomicU64>) -> Run
where
    S: Service<u32, Response = u32>,
    S::Error: std::fmt::Debug,
{
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..WARM_UP + CALLS {
        if i == WARM_UP
            && let Some(trips) = trips
        {
            trips.store(0, Ordering::Relaxed);
        }
        let started = Instant::now();
        svc.ready().await.unwrap().call(1).await.unwrap();
        if i >= WARM_UP {
            samples.push(started.elapsed());
        }
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    Run {
        label,
        trips_per_1000: trips.map_or(0.0, |t| {
            t.load(Ordering::Relaxed) as f64 * 1000.0 / CALLS as f64
        }),
        p50: at(0.5),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn main() {
    let Ok(url) = std::env::var("SEAWALL_REDIS_URL") else {
        eprintln!("SKIPPED: the redis bench needs SEAWALL_REDIS_URL (a Redis on loopback)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let echo = || service_fn(|n: u32| std::future::ready(Ok::<_, Infallible>(n)));
    let runs = runtime.block_on(async {
        let mut runs = Vec::new();
        let local = RateLimitLayer::new(config("local", None, 1));
        runs.push(time("in-process limiter".into(), local.layer(echo()), None).await);
        for lease in [1, 10, 100] {
            let name = format!("bench-{nanos}-{lease}");
            let config = config(&name, Some(&url), lease);
            let store = Counting {
                store: RedisStore::open(config.fleet().unwrap()).unwrap(),
                trips: Arc::new(AtomicU64::new(0)),
            };
            let trips = store.trips.clone();
            let layer = RateLimitLayer::new(config).with_store(store).unwrap();
            let label = format!("Redis, lease {lease}");
            runs.push(time(label, layer.layer(echo()), Some(&trips)).await);
        }
        runs
    });
    let base = runs[0].p99;
    println!("| limiter | round trips / 1000 calls | p50 | p99 | p99 added | max |");
    println!("|---|---|---|---|---|---|");
    for run in &runs {
        println!(
            "| {} | {:.0} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
            run.label,
            run.trips_per_1000,
            run.p50.as_secs_f64() * 1e6,
            run.p99.as_secs_f64() * 1e6,
            run.p99.saturating_sub(base).as_secs_f64() * 1e6,
            run.max.as_secs_f64() * 1e6,
        );
    }
}
