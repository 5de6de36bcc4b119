//! The retry budget's concurrency invariant, written once: the loom model (`tests/loom.rs`,
//! every interleaving of a few threads across a bucket rotation) and the concurrent test of
//! `tests/budget.rs` (many tasks on a multi-thread runtime) both check it.
#![allow(dead_code, unreachable_pub)]

use seawall_retry::BudgetConfig;

/// Within one `ttl`, the retries granted fall short of `ratio` of the requests deposited plus
/// the floor over the `ttl`, plus one, however withdrawals raced: a retry may be lent on a part
/// of one (the budget's docs), and what is lent is less than one retry, so two withdrawals
/// racing for the same part must not both borrow it.
pub fn never_overdrawn(granted: u64, deposits: u64, config: &BudgetConfig) {
    let ttl = config.ttl().as_secs().max(1);
    let bound =
        config.ratio() * deposits as f64 + (u64::from(config.min_per_second()) * ttl) as f64;
    assert!(
        (granted as f64) < bound + 1.0,
        "{granted} retries granted, the budget allowed {bound} and less than one lent"
    );
}
