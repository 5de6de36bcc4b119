//! The hedge budget: hedges as a share of recent requests, with no floor.
//!
//! A hedge is extra load sent exactly when the downstream is slow, which is when it can least
//! take it; a downstream that turns uniformly slow would see every call hedged. The budget
//! caps hedges at `ratio` of the requests seen over the last `window`, so the extra load stays
//! at the ratio whatever happens to latency. It has no per-second floor: a floor lets each of
//! a thousand quiet clients hedge on its own allowance, which adds up to many times the ratio
//! for the fleet; without it, the bound holds for any number of clients at any rate.
//!
//! The window's allowance is also paced: hedges go out at most at `ratio` of the current
//! request rate, a tenth of a second's worth (at least ten) at once. Unpaced, the allowance a
//! window of quiet seconds banked could go out in one moment, and it goes out exactly when a
//! queue at the downstream slows calls past the hedge delay: the hedges lengthen the queue,
//! which slows more calls into hedging, until the window's whole allowance is spent (the lab's
//! `tail-hedge` on some seeds: 812 hedges in one second, where 10 % of 1000 req/s is 100).
//!
//! While the latest hedge decided lost to its call's first attempt, the floor of ten is two:
//! hedges that lose mean calls slowed by a queue, not slow calls, and ten at once from each of
//! a fleet of quiet clients is ten times the fleet's pace into that queue. A hedge that wins
//! gives the ten back, for the clumps in which a Poisson stream's slow calls come.
//!
//! Requests and hedges are counted in per-second buckets of atomics, one word per bucket
//! tagged with its second, so counting takes no lock and memory stays fixed; the pace is one
//! word, touched only by hedges. A withdrawal is counted first and checked after, and undone
//! when over the budget, so concurrent withdrawals can never overdraw it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use seawall_core::time::nanos;
use tokio::time::Instant;

use crate::config::BudgetConfig;

const PPM: u64 = 1_000_000;
/// Hedges the pace lets go at once whatever the rate. Below 100 hedges a second a tenth of a
/// second's worth is a few hedges or none, and the slow calls of a Poisson stream come in
/// clumps, which a pace of one at a time leaves unhedged (the lab's `tail-hedge` at 10
/// clients of 100 requests a second failed p99.9 on 10 seeds of 10 with one, on 6 with ten).
/// The floor is per client: a fleet of clients under 1000 requests a second each may send
/// ten hedges each at once, so it holds only while hedges win ([`LOSING_BURST`] after one
/// lost).
const MIN_BURST: u64 = 10;
/// Hedges the pace lets go at once, below 1000 requests a second, after a hedge lost to its
/// call's first attempt (the lab's `tail-hedge` at 75 clients, up to ten each into a queue of a
/// few ms: A 1.105 in the fault; with two, 1.034). One cost slow calls of a long tail their
/// hedges, where healthy hedges lose often (`tail-hedge` on a long tail at 10–50 clients:
/// p99.9 111–156 ms; with one, 227–293; with two, 118–196).
const LOSING_BURST: u64 = 2;
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
    /// When, in nanoseconds from `start`, the pace lets the next hedge go.
    paced: AtomicU64,
    /// Whether the latest hedge to be decided lost to its call's first attempt.
    losing: AtomicBool,
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
            paced: AtomicU64::new(0),
            losing: AtomicBool::new(false),
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

    /// Records whether a hedge answered before its call's first attempt (`true`) or lost to it.
    pub(crate) fn hedge_decided(&self, won: bool) {
        self.losing.store(!won, Ordering::Relaxed);
    }

    /// Takes one hedge from the budget; `false` when none is left.
    pub(crate) fn withdraw_at(&self, now: Instant) -> bool {
        let second = self.second(now);
        let slot = &self.withdrawals[self.slot(second)];
        let tag = tag_of(increment(slot, second));
        let spent = sum(&self.withdrawals, second, self.window_secs).saturating_mul(PPM);
        let requests = sum(&self.deposits, second, self.window_secs);
        if spent <= self.allowed_ppm(requests) && self.pace(now, second, requests) {
            return true;
        }
        decrement(slot, tag);
        false
    }

    /// Whether a hedge may go now at the pace of `ratio` of the current request rate, a
    /// tenth of a second's worth (at least [`MIN_BURST`], or [`LOSING_BURST`] while hedges
    /// lose) at once (the module docs say why); if so, counts it.
    fn pace(&self, now: Instant, second: u64, window_requests: u64) -> bool {
        let requests = |s: u64| count_in(&self.deposits[self.slot(s)], s);
        let mut rate = requests(second).max(window_requests.div_ceil(self.window_secs));
        if second > 0 && self.window_secs > 1 {
            rate = rate.max(requests(second - 1));
        }
        // Hedges per second, in millionths.
        let per_second = self.ratio_ppm().saturating_mul(rate);
        if per_second == 0 {
            return false;
        }
        let interval = (1_000_000_000 * u128::from(PPM) / u128::from(per_second)) as u64;
        let floor = if self.losing.load(Ordering::Relaxed) {
            LOSING_BURST
        } else {
            MIN_BURST
        };
        let burst = (per_second / (10 * PPM)).max(floor);
        let tolerance = (burst - 1).saturating_mul(interval);
        let now = nanos(now.saturating_duration_since(self.start));
        let mut due = self.paced.load(Ordering::Acquire);
        loop {
            let from = due.max(now);
            if from - now > tolerance {
                return false;
            }
            match self.paced.compare_exchange_weak(
                due,
                from.saturating_add(interval),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => due = actual,
            }
        }
    }

    fn ratio_ppm(&self) -> u64 {
        self.ratio_ppm.load(Ordering::Relaxed)
    }

    /// Hedges left at `now`, rounded down.
    pub(crate) fn available_at(&self, now: Instant) -> u64 {
        let second = self.second(now);
        let spent = sum(&self.withdrawals, second, self.window_secs) * PPM;
        let requests = sum(&self.deposits, second, self.window_secs);
        self.allowed_ppm(requests).saturating_sub(spent) / PPM
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

    /// Hedges `requests` of the window earn, in millionths.
    fn allowed_ppm(&self, requests: u64) -> u64 {
        self.ratio_ppm().saturating_mul(requests)
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("window_secs", &self.window_secs)
            .field("ratio_ppm", &self.ratio_ppm())
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

/// The count the bucket holds for `second`: zero when it holds another second.
fn count_in(slot: &AtomicU64, second: u64) -> u64 {
    let word = slot.load(Ordering::Acquire);
    if tag_of(word) == second & COUNT_MASK {
        word & COUNT_MASK
    } else {
        0
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
        Won,
        Lost,
    }

    fn event() -> impl Strategy<Value = (u64, Event)> {
        (
            prop_oneof![2 => Just(0u64), 2 => 1u64..50, 1 => 50u64..4000],
            prop_oneof![
                6 => Just(Event::Request),
                2 => Just(Event::Hedge),
                1 => Just(Event::Won),
                1 => Just(Event::Lost),
            ],
        )
    }

    /// The budget as a list of events: the window's ratio, and hedges spaced out at `ratio`
    /// of the busier of this second and the one before (and the window's average), a tenth
    /// of a second's worth (at least ten, or two after a hedge lost) at once.
    struct Model {
        ratio_ppm: u64,
        window: u64,
        requests: Vec<u64>,
        hedges: Vec<u64>,
        /// When the next hedge may go, in nanoseconds.
        due: u64,
        /// Whether the latest hedge decided lost.
        losing: bool,
    }

    impl Model {
        fn in_window(&self, times: &[u64], second: u64) -> u64 {
            let window = self.window;
            times
                .iter()
                .filter(|&&ms| ms / 1000 + window > second)
                .count() as u64
        }

        fn in_second(&self, second: u64) -> u64 {
            self.requests
                .iter()
                .filter(|&&ms| ms / 1000 == second)
                .count() as u64
        }

        fn allowed(&self, second: u64) -> u64 {
            self.ratio_ppm * self.in_window(&self.requests, second)
        }

        fn hedge(&mut self, at_ms: u64) -> bool {
            let second = at_ms / 1000;
            let requests = self.in_window(&self.requests, second);
            if (self.in_window(&self.hedges, second) + 1) * PPM > self.allowed(second) {
                return false;
            }
            let mut rate = self.in_second(second).max(requests.div_ceil(self.window));
            if second > 0 && self.window > 1 {
                rate = rate.max(self.in_second(second - 1));
            }
            let per_second = self.ratio_ppm * rate;
            if per_second == 0 {
                return false;
            }
            let interval = (1_000_000_000 * u128::from(PPM) / u128::from(per_second)) as u64;
            let burst = (per_second / (10 * PPM)).max(if self.losing { 2 } else { 10 });
            let now = at_ms * 1_000_000;
            let from = self.due.max(now);
            if from - now > (burst - 1) * interval {
                return false;
            }
            self.due = from + interval;
            self.hedges.push(at_ms);
            true
        }
    }

    proptest! {
        #[test]
        fn hedges_follow_the_model_of_a_paced_ratio_of_recent_requests(
            ratio_pct in 1u32..=100,
            window in 1u64..=10,
            steps in prop::collection::vec(event(), 1..400),
        ) {
            let ratio = f64::from(ratio_pct) / 100.0;
            let b = budget(ratio, window);
            let mut model = Model {
                ratio_ppm: (ratio * PPM as f64) as u64,
                window,
                requests: Vec::new(),
                hedges: Vec::new(),
                due: 0,
                losing: false,
            };
            let mut at = 0;
            for (advance, event) in steps {
                at += advance;
                let now = b.start + Duration::from_millis(at);
                match event {
                    Event::Request => {
                        b.deposit_at(now);
                        model.requests.push(at);
                    }
                    Event::Hedge => {
                        prop_assert_eq!(b.withdraw_at(now), model.hedge(at), "at {} ms", at);
                    }
                    Event::Won | Event::Lost => {
                        let won = matches!(event, Event::Won);
                        b.hedge_decided(won);
                        model.losing = !won;
                    }
                }
                let second = at / 1000;
                let left = model.allowed(second)
                    .saturating_sub(model.in_window(&model.hedges, second) * PPM) / PPM;
                prop_assert_eq!(b.available_at(now), left);
            }
        }

        #[test]
        fn a_banked_allowance_goes_out_at_the_pace_of_the_ratio(
            rate in 10u64..5000,
            ratio_pct in 1u32..=100,
        ) {
            // Ten quiet seconds bank `ratio` of their requests; then every request of the
            // next second asks for a hedge.
            let ratio = f64::from(ratio_pct) / 100.0;
            let b = budget(ratio, 10);
            let at = |i: u64| b.start + Duration::from_nanos(i * 1_000_000_000 / rate);
            for i in 0..10 * rate {
                b.deposit_at(at(i));
            }
            let mut per_tenth = [0u64; 10];
            for i in 10 * rate..11 * rate {
                b.deposit_at(at(i));
                if b.withdraw_at(at(i)) {
                    per_tenth[((i - 10 * rate) * 10 / rate) as usize] += 1;
                }
            }
            // A tenth of a second's share (at least ten) at once, then a tenth of a second's
            // share in each.
            let share = (ratio_pct as u64 * rate).div_ceil(1000);
            let burst = share.max(10);
            for (tenth, &hedges) in per_tenth.iter().enumerate() {
                prop_assert!(
                    hedges <= burst + share + 1,
                    "{} hedges in tenth {} for a share of {}", hedges, tenth, share
                );
            }
            let total: u64 = per_tenth.iter().sum();
            prop_assert!(total <= burst + 10 * share + 1, "{} hedges in a second", total);
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
        let withdraw_from_8_threads = |at: &(dyn Fn(u64) -> Instant + Sync)| -> u64 {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        let b = b.clone();
                        s.spawn(move || (0..100).filter(|&i| b.withdraw_at(at(i))).count() as u64)
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            })
        };
        // At one moment, the pace's tenth of a second (100 hedges a second); the window keeps
        // what the pace refused.
        assert_eq!(withdraw_from_8_threads(&|_| b.start), 10);
        assert_eq!(b.available_at(b.start), 90);
        // Over the rest of the second, never more than the window's 100 in all.
        let later = withdraw_from_8_threads(&|i| b.start + Duration::from_millis(10 * i));
        assert!(10 + later <= 100, "{later}");
        assert_eq!(b.available_at(b.start), 90 - later);
    }
}
