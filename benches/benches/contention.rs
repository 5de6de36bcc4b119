//! Per-call cost when threads share one layer: the breaker's window, the bulkhead's count, the
//! rate limiter's bucket and the whole client stack under contention, against one thread and
//! against tower's counterparts in the same run.
//!
//! Each thread calls its own clone of the service (clones share the layer's state, as the
//! clones of a service in a server's connections do) `iters` times, after all threads are set
//! up; the time is the slowest thread's, so the figure is the cost of one call on one thread.
//! Without contention it would not move with the thread count.
//!
//! Run: `cargo bench -p seawall-bench --no-default-features --bench contention`.

use std::fmt::Debug;
use std::future::Future;
use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use seawall_bench::contenders as c;
use seawall_bench::overhead::bare;
use tower::{Layer, Service};

/// 2 on the project's machine; more where there are more cores.
fn thread_counts() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut counts = vec![1, 2];
    if cores >= 4 {
        counts.push(cores);
    }
    counts
}

/// Calls refused by a layer under contention, across the whole run: a rate limiter far below
/// its quota should refuse none.
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// One call, as `call_now` makes it, counting an error instead of failing on it.
fn call<S: Service<u64>>(svc: &mut S, req: u64) -> Option<S::Response> {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("service not ready at once"),
    }
    let mut fut = std::pin::pin!(svc.call(req));
    for _ in 0..4 {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(res)) => return Some(res),
            Poll::Ready(Err(_)) => {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Poll::Pending => {}
        }
    }
    panic!("call still pending after four polls")
}

/// The slowest of `threads` threads making `iters` calls each through clones of `svc`.
fn run<S>(svc: &S, threads: usize, iters: u64) -> Duration
where
    S: Service<u64> + Clone + Send,
    S::Error: Debug,
{
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
                let barrier = &barrier;
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .expect("a runtime");
                    let _guard = rt.enter();
                    for i in 0..100 {
                        call(&mut svc, i);
                    }
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        black_box(call(&mut svc, black_box(i)));
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench thread"))
            .max()
            .unwrap_or_default()
    })
}

fn compare<S>(c: &mut Criterion, group: &str, contenders: Vec<(&str, S)>)
where
    S: Service<u64> + Clone + Send,
    S::Error: Debug,
{
    let mut g = c.benchmark_group(group);
    for (name, svc) in &contenders {
        for threads in thread_counts() {
            g.bench_function(format!("{name}/{threads}-threads"), |b| {
                b.iter_custom(|iters| run(svc, threads, iters))
            });
        }
    }
    g.finish();
    let refused = REFUSED.swap(0, Ordering::Relaxed);
    if refused > 0 {
        println!("{group}: {refused} calls refused");
    }
}

fn bench(c: &mut Criterion) {
    // Layers are built inside a runtime: some start timer tasks or read tokio's clock.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _guard = rt.enter();

    compare(c, "contention-bare", vec![("bare", bare())]);
    compare(
        c,
        "contention-circuit-breaker",
        vec![
            ("seawall-count", c::seawall_breaker_count().layer(bare())),
            ("seawall-time-10s", c::seawall_breaker_time().layer(bare())),
        ],
    );
    compare(
        c,
        "contention-bulkhead",
        vec![("seawall", c::seawall_bulkhead().layer(bare()))],
    );
    compare(
        c,
        "contention-bulkhead",
        vec![("seawall-vegas", c::seawall_bulkhead_vegas().layer(bare()))],
    );
    compare(
        c,
        "contention-bulkhead",
        vec![("tower", c::tower_bulkhead().layer(bare()))],
    );
    compare(
        c,
        "contention-rate-limit",
        vec![("seawall", c::seawall_rate_limit().layer(bare()))],
    );
    // tower's RateLimit keeps its state per clone: no sharing, so no contention to compare.
    compare(
        c,
        "contention-retry",
        vec![("seawall", c::seawall_retry().layer(bare()))],
    );
    compare(
        c,
        "contention-retry",
        vec![("tower", c::tower_retry().layer(bare()))],
    );
    compare(
        c,
        "contention-stack",
        vec![("seawall", c::seawall_stack().layer(bare()))],
    );
}

criterion_group! {
    name = contention;
    config = Criterion::default().configure_from_args();
    targets = bench
}
criterion_main!(contention);
