//! Success-path overhead of each seawall layer against a bare service and its peers, with
//! allocations per call. Run: `cargo bench -p seawall-bench --bench overhead`.

use criterion::{Criterion, criterion_group, criterion_main};
use seawall_bench::alloc::CountingAllocator;

mod chaos;
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
    targets = timeout::bench, chaos::bench
}
criterion_main!(overhead);
