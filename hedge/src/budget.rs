//! The hedge budget: hedges as a share of recent requests, with no floor.
//!
//! A hedge is extra load sent exactly when the downstream is slow, which is when it can least
//! take it; a downstream that turns uniformly slow would see every call hedged. The budget
//! caps hedges at `ratio` of the requests seen over the last `window`, so the extra load stays
//! at the ratio whatever happens to latency. It has no per-second floor: a floor lets each of
//! a thousand quiet clients hedge on its own allowance, which adds up to many times the ratio
//! for the fleet; without it, the bound holds for any number of clients at any rate.
//!
//! Requests and hedges are counted in per-second buckets of atomics, one word per bucket
//! tagged with its second, so counting takes no lock and memory stays fixed. A withdrawal is
//! counted first and checked after, and undone when over the budget, so concurrent
//! withdrawals can never overdraw it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::config::BudgetConfig;

const PPM: u64 = 1_000_000;
const COUNT_MASK: u64 = u32::MAX as u64;

/// `ratio` in parts per million, rounded down, so the budget never allows more than the
/// ratio says.
fn ratio_ppm(ratio: f64) -> u64 {
    (ratio * PPM as f64) as u64
}

pub(crate) struct Budget {
    start: Instant,
    window_secs: u64,
    ratio_ppm: AtomicU64,
    deposits: Box<[AtomicU64]>,
    withdrawals: Box<[AtomicU64]>,
}

impl Budget {
    /// A budget whose seconds count from `start`.
    pub(crate) fn new(config: &BudgetConfig, start: Instant) -> Self {
        let window_secs = config.window.as_secs().max(1);
        let slots = || (0..window_secs).map(|_| AtomicU64::new(0)).collect();
        Self {
            start,
            window_secs,
            ratio_ppm: AtomicU64::new(ratio_ppm(config.ratio)),
            deposits: slots(),
            withdrawals: slots(),
        }
    }

    /// Counts one request, which earns the budget `ratio` of a hedge.
    #[cfg(test)]
    fn deposit_at(&self, now: Instant) {
        self.deposit_in(self.second(now));
    }

    /// Counts one request made in `second` (from `start`); returns how many the second's
    /// bucket holds now.
    pub(crate) fn deposit_in(&self, second: u64) -> u64 {
        increment(&self.deposits[self.slot(second)], second) & COUNT_MASK
    }

    /// Takes one hedge from the budget; `false` when none is left.
    pub(crate) fn withdraw_at(&self, now: Instant) -> bool {
        let second = self.second(now);
        let slot = &self.withdrawals[self.slot(second)];
        let tag = tag_of(increment(slot, second));
        let spent = sum(&self.withdrawals, second, self.window_secs).saturating_mul(PPM);
        if spent <= self.allowed_ppm(second) {
            return true;
        }
        decrement(slot, tag);
        false
    }

    /// Hedges left at `now`, rounded down.
    pub(crate) fn available_at(&self, now: Instant) -> u64 {
        let second = self.second(now);
        let spent = sum(&self.withdrawals, second, self.window_secs) * PPM;
        self.allowed_ppm(second).saturating_sub(spent) / PPM
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    /// Allows `ratio` of the requests of the window from now on, the requests and hedges
    /// already counted included.
    pub(crate) fn set_ratio(&self, ratio: f64) {
        self.ratio_ppm.store(ratio_ppm(ratio), Ordering::Relaxed);
    }

    fn slot(&self, second: u64) -> usize {
        (second % self.window_secs) as usize
    }

    fn allowed_ppm(&self, second: u64) -> u64 {
        let requests = sum(&self.deposits, second, self.window_secs);
        self.ratio_ppm
            .load(Ordering::Relaxed)
            .saturating_mul(requests)
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("window_secs", &self.window_secs)
            .field("ratio_ppm", &self.ratio_ppm.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn tag_of(word: u64) -> u64 {
    word >> 32
}

/// Adds one to the bucket for `second`, starting it afresh when it still holds an older
/// second; returns the bucket's word after the increment (its tag and count).
fn increment(slot: &AtomicU64, second: u64) -> u64 {
    let tag = second & COUNT_MASK;
    let mut current = slot.load(Ordering::Acquire);
    loop {
        let next = if tag_of(current) >= tag {
            // A newer second (from a caller whose clock read came later) keeps its bucket.
            let count = (current & COUNT_MASK).saturating_add(1).min(COUNT_MASK);
            (current & !COUNT_MASK) | count
        } else {
            (tag << 32) | 1
        };
        match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return next,
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

/// The counts of the buckets whose second lies in the `window` seconds ending at `second`.
fn sum(slots: &[AtomicU64], second: u64, window: u64) -> u64 {
    let now = second & COUNT_MASK;
    slots
        .iter()
        .map(|slot| slot.load(Ordering::Acquire))
        .filter(|&word| tag_of(word) + window > now && tag_of(word) <= now)
        .map(|word| word & COUNT_MASK)
        .sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn budget(ratio: f64, window: u64) -> Budget {
        Budget::new(
            &BudgetConfig::new(ratio, Duration::from_secs(window)).unwrap(),
            Instant::now(),
        )
    }

    #[derive(Debug, Clone, Copy)]
    enum Event {
        Request,
        Hedge,
    }

    fn event() -> impl Strategy<Value = (u64, Event)> {
        (
            0u64..4,
            prop_oneof![3 => Just(Event::Request), 1 => Just(Event::Hedge)],
        )
    }

    proptest! {
        #[test]
        fn hedges_follow_the_model_of_a_ratio_of_recent_requests(
            ratio_pct in 1u32..=100,
            window in 1u64..=10,
            steps in prop::collection::vec(event(), 1..400),
        ) {
            let ratio = f64::from(ratio_pct) / 100.0;
            let b = budget(ratio, window);
            let ratio_ppm = (ratio * PPM as f64) as u64;
            // The model: every request and granted hedge with its second.
            let (mut requests, mut hedges) = (Vec::new(), Vec::new());
            let mut second = 0;
            for (advance, event) in steps {
                second += advance;
                let now = b.start + Duration::from_secs(second);
                let recent = |xs: &Vec<u64>| xs.iter().filter(|&&s| s + window > second).count() as u64;
                match event {
                    Event::Request => {
                        b.deposit_at(now);
                        requests.push(second);
                    }
                    Event::Hedge => {
                        let allowed = (recent(&hedges) + 1) * PPM <= ratio_ppm * recent(&requests);
                        prop_assert_eq!(b.withdraw_at(now), allowed, "second {}", second);
                        if allowed {
                            hedges.push(second);
                        }
                    }
                }
                let left = (ratio_ppm * recent(&requests)).saturating_sub(recent(&hedges) * PPM) / PPM;
                prop_assert_eq!(b.available_at(now), left);
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn a_fleet_never_hedges_more_than_the_ratio_of_its_requests(
            rates in prop::collection::vec(0u64..20, 1..1000),
            seconds in 1u64..15,
        ) {
            // Each client sends `rate` requests a second and tries to hedge every one of them.
            let clients: Vec<Budget> = rates.iter().map(|_| budget(0.1, 10)).collect();
            let (mut sent, mut hedged) = (0u64, 0u64);
            for second in 0..seconds {
                for (client, &rate) in clients.iter().zip(&rates) {
                    let now = client.start + Duration::from_secs(second);
                    for _ in 0..rate {
                        client.deposit_at(now);
                        sent += 1;
                        hedged += u64::from(client.withdraw_at(now));
                    }
                }
            }
            // However many clients, however quiet: at most a tenth more load.
            prop_assert!(hedged * 10 <= sent, "{} hedges for {} requests", hedged, sent);
        }
    }

    #[test]
    fn a_new_client_has_nothing_to_hedge_with() {
        let b = budget(0.1, 10);
        assert!(!b.withdraw_at(b.start), "no floor");
        for _ in 0..9 {
            b.deposit_at(b.start);
        }
        assert!(!b.withdraw_at(b.start), "nine requests earn 0.9 of a hedge");
        b.deposit_at(b.start);
        assert!(b.withdraw_at(b.start));
        assert!(!b.withdraw_at(b.start));
        // Ten seconds on, the requests have left the window.
        let later = b.start + Duration::from_secs(10);
        assert_eq!(b.available_at(later), 0);
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        let b = Arc::new(budget(0.1, 10));
        for _ in 0..1000 {
            b.deposit_at(b.start);
        }
        let granted: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let b = b.clone();
                    s.spawn(move || (0..100).filter(|_| b.withdraw_at(b.start)).count() as u64)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(granted, 100);
        assert_eq!(b.available_at(b.start), 0);
    }
}
