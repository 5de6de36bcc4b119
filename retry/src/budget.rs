//! The retry budget: retries as a share of recent requests.
//!
//! Max attempts alone multiply load exactly when a downstream can least take it: with three
//! attempts, a failing downstream gets three times the traffic that broke it. A budget caps
//! retries at a share of the requests seen over the last `ttl` (20 % by default), plus a small
//! floor per second so that a quiet client can still retry. When the downstream recovers the
//! budget refills; while it fails, the extra load stays at the ratio, however many attempts
//! each call may make. This is Finagle's `RetryBudget` and tower's `TpsBudget`.
//!
//! Requests and retries are counted in per-second buckets of atomics, one word per bucket
//! tagged with its second, so depositing and withdrawing take no lock and memory stays fixed.
//! A withdrawal is counted first and checked after, and undone when over the budget, so
//! concurrent withdrawals can never overdraw it.
//!
//! Several layers (one per downstream host, say) can share one budget:
//!
//! ```
//! use std::time::Duration;
//! use seawall_retry::{BudgetConfig, RetryBudget, RetryLayer};
//!
//! # fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let budget = RetryBudget::new(BudgetConfig::new(0.1, 5, Duration::from_secs(10))?);
//! let orders = RetryLayer::builder().name("orders").build()?.with_budget(budget.clone());
//! let stock = RetryLayer::builder().name("stock").build()?.with_budget(budget);
//! # drop((orders, stock));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use seawall_core::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

use crate::config::BudgetConfig;

const PPM: u64 = 1_000_000;
const COUNT_MASK: u64 = u32::MAX as u64;

/// A retry budget shared by every clone of the layers it is given to.
///
/// Cloning it is cheap and shares the same counts.
#[derive(Clone)]
pub struct RetryBudget {
    state: Arc<BudgetState>,
}

struct BudgetState {
    config: BudgetConfig,
    start: Instant,
    ttl_secs: u64,
    ratio_ppm: u64,
    reserve_ppm: u64,
    deposits: Box<[AtomicU64]>,
    withdrawals: Box<[AtomicU64]>,
}

impl RetryBudget {
    /// A budget as `config` says, empty but for its floor.
    pub fn new(config: BudgetConfig) -> Self {
        let ttl_secs = config.ttl.as_secs().max(1);
        let slots = || (0..ttl_secs).map(|_| AtomicU64::new(0)).collect();
        Self {
            state: Arc::new(BudgetState {
                config,
                start: Instant::now(),
                ttl_secs,
                // Rounded down, so the budget never allows more than the ratio says.
                ratio_ppm: (config.ratio * PPM as f64) as u64,
                reserve_ppm: u64::from(config.min_per_second) * ttl_secs * PPM,
                deposits: slots(),
                withdrawals: slots(),
            }),
        }
    }

    /// The budget's configuration.
    pub fn config(&self) -> &BudgetConfig {
        &self.state.config
    }

    /// Counts one request, which earns the budget `ratio` of a retry.
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// Takes one retry from the budget; `false` when none is left.
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }

    /// Retries left now, rounded down.
    pub fn available(&self) -> u64 {
        let s = &*self.state;
        let second = s.second(Instant::now());
        let allowed = s.allowed_ppm(second);
        let spent = sum(&s.withdrawals, second, s.ttl_secs) * PPM;
        allowed.saturating_sub(spent) / PPM
    }

    pub(crate) fn deposit_at(&self, now: Instant) {
        let s = &*self.state;
        let second = s.second(now);
        increment(&s.deposits[s.slot(second)], second);
    }

    pub(crate) fn withdraw_at(&self, now: Instant) -> bool {
        let s = &*self.state;
        let second = s.second(now);
        let slot = &s.withdrawals[s.slot(second)];
        let tag = increment(slot, second);
        let spent = sum(&s.withdrawals, second, s.ttl_secs).saturating_mul(PPM);
        if spent <= s.allowed_ppm(second) {
            return true;
        }
        decrement(slot, tag);
        false
    }
}

impl BudgetState {
    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    fn slot(&self, second: u64) -> usize {
        (second % self.ttl_secs) as usize
    }

    fn allowed_ppm(&self, second: u64) -> u64 {
        let requests = sum(&self.deposits, second, self.ttl_secs);
        self.ratio_ppm
            .saturating_mul(requests)
            .saturating_add(self.reserve_ppm)
    }
}

fn tag_of(word: u64) -> u64 {
    word >> 32
}

/// Adds one to the bucket for `second`, starting it afresh when it still holds an older
/// second; returns the tag the count went under.
fn increment(slot: &AtomicU64, second: u64) -> u64 {
    let tag = second & COUNT_MASK;
    let mut current = slot.load(Ordering::Acquire);
    loop {
        let (next, used) = if tag_of(current) >= tag {
            // A newer second (from a caller whose clock read came later) keeps its bucket.
            let count = (current & COUNT_MASK).saturating_add(1).min(COUNT_MASK);
            ((current & !COUNT_MASK) | count, tag_of(current))
        } else {
            ((tag << 32) | 1, tag)
        };
        match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return used,
            Err(actual) => current = actual,
        }
    }
}

/// Takes one back from the bucket if it still holds the count made under `tag`.
fn decrement(slot: &AtomicU64, tag: u64) {
    let mut current = slot.load(Ordering::Acquire);
    while tag_of(current) == tag && current & COUNT_MASK > 0 {
        match slot.compare_exchange_weak(current, current - 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

/// The counts of the buckets whose second lies in the `ttl` seconds ending at `second`.
fn sum(slots: &[AtomicU64], second: u64, ttl: u64) -> u64 {
    let now = second & COUNT_MASK;
    slots
        .iter()
        .map(|slot| slot.load(Ordering::Acquire))
        .filter(|&word| tag_of(word) + ttl > now)
        .map(|word| word & COUNT_MASK)
        .sum()
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.state.config)
            .field("available", &self.available())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn budget(ratio: f64, min_per_second: u32, ttl: u64) -> RetryBudget {
        RetryBudget::new(
            BudgetConfig::new(ratio, min_per_second, Duration::from_secs(ttl)).unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_alone_allows_min_per_second_times_ttl() {
        let b = budget(0.0, 2, 3);
        assert_eq!(b.available(), 6);
        assert!((0..6).all(|_| b.withdraw()));
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_earn_their_ratio() {
        let b = budget(0.5, 0, 1);
        assert!(!b.withdraw());
        b.deposit();
        assert!(!b.withdraw(), "half a retry is not one");
        b.deposit();
        assert!(b.withdraw());
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_ttl() {
        let b = budget(1.0, 0, 2);
        b.deposit();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!b.withdraw());
        b.deposit();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.withdraw(), "a deposit one second old still counts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_withdrawal_is_not_counted() {
        let b = budget(1.0, 0, 10);
        for _ in 0..100 {
            assert!(!b.withdraw());
        }
        b.deposit();
        assert!(b.withdraw());
    }
}
