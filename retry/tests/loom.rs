//! A loom model of the retry budget: deposits and withdrawals racing as a new second takes
//! over a bucket that still holds an expired second's counts, run over the crate's real code
//! (through its public API) under every interleaving of three threads, within a preemption
//! bound.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p seawall-retry --test loom`. Under
//! `--cfg loom` the budget's buckets are loom's atomics (`seawall_core::sync`). Time is tokio's
//! paused clock, moved between the model's steps, so every interleaving reads the same second.
#![cfg(loom)]

mod invariants;

use std::sync::Arc;
use std::time::Duration;

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;
use seawall_retry::{BudgetConfig, RetryBudget};

use invariants::*;

/// Runs `f` under every interleaving loom explores, on a paused clock.
fn model(preemptions: usize, f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(move || {
        // A runtime per execution: what it holds (a breaker's timer task, a queued call's
        // timer) goes with the execution's loom objects. loom runs the execution's threads on
        // this thread, so they all read this runtime's clock.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _clock = runtime.enter();
        f();
    });
}

/// Moves the paused clock on.
fn advance(by: Duration) {
    tokio::runtime::Handle::current().block_on(tokio::time::advance(by));
}

#[test]
fn withdrawals_racing_across_a_bucket_rotation_never_overdraw() {
    model(2, || {
        // Half a retry per request, no floor, over two one-second buckets.
        let config = BudgetConfig::new(0.5, 0, Duration::from_secs(2)).unwrap();
        let budget = RetryBudget::new(config);
        // Second 0: four requests and two retries, all expired by second 2, whose bucket they
        // still fill when the threads below race to take it over.
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.withdraw() && budget.withdraw());
        advance(Duration::from_secs(1));
        // Second 1: two requests, one retry's worth, still in the window at second 2.
        budget.deposit();
        budget.deposit();
        advance(Duration::from_secs(1));

        let granted = Arc::new(AtomicU64::new(0));
        let withdrawing: Vec<_> = (0..2)
            .map(|_| {
                let (budget, granted) = (budget.clone(), granted.clone());
                thread::spawn(move || {
                    if budget.withdraw() {
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let depositing = {
            let budget = budget.clone();
            thread::spawn(move || budget.deposit())
        };
        for t in withdrawing {
            t.join().unwrap();
        }
        depositing.join().unwrap();
        // The window holds second 1's two requests and second 2's one.
        let granted = granted.load(Ordering::SeqCst);
        never_overdrawn(granted, 3, &budget.config());
        never_overdrawn(granted + budget.available(), 3, &budget.config());
    });
}
