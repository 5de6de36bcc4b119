//! Benchmarks of seawall's layers against a bare service and their peers, and the
//! failure-behaviour lab.
//!
//! `cargo bench -p seawall-bench --no-default-features --bench overhead` measures each layer's
//! success-path overhead and prints the heap allocations per call beside it; results live in
//! `benches/RESULTS.md`. (The default feature `lab` turns on tokio's `test-util`, which slows
//! every reading of tokio's clock; the benches leave it off.)
//!
//! `cargo run --release -p seawall-bench --bin lab` runs the failure-behaviour [`lab`]: whole
//! stacks against a simulated failing downstream on a paused clock.

pub mod alloc;
pub mod contenders;
#[cfg(feature = "lab")]
pub mod lab;
pub mod overhead;
pub mod paired;
pub mod recorder;
