//! Success-path overhead of each seawall layer against a bare service and its peers, with
//! allocations per call. Run: `cargo bench -p seawall-bench --bench overhead`.

use criterion::{Criterion, criterion_group, criterion_main};
use seawall_bench::alloc::CountingAllocator;

mod bulkhead;
mod chaos;
mod circuit_breaker;
mod fallback;
mod hedge;
mod rate_limit;
mod retry;
mod stack;
mod throttle;
mod timeout;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

fn config() -> Criterion {
    Criterion::default().configure_from_args()
}

criterion_group! {
    name = overhead;
    config = config();
    targets = timeout::bench, retry::bench, circuit_breaker::bench, bulkhead::bench, rate_limit::bench, fallback::bench, throttle::bench, hedge::bench, stack::bench, chaos::bench
}
criterion_main!(overhead);
