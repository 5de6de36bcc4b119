//! Benchmarks of seawall's layers against a bare service and their peers, and the
//! failure-behaviour lab.
//!
//! `cargo bench -p seawall-bench --bench overhead` measures each layer's success-path overhead
//! and prints the heap allocations per call beside it; results live in `benches/RESULTS.md`.
//!
//! `cargo run --release -p seawall-bench --bin lab` runs the failure-behaviour [`lab`]: whole
//! stacks against a simulated failing downstream on a paused clock.

pub mod alloc;
pub mod lab;
pub mod overhead;
