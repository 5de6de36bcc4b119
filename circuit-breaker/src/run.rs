//! How long a run of failures in a row must be to trip the breaker.
//!
//! A fixed run (Nygard's "N failures in a row") trips in any brownout sooner or later: at 30 %
//! independent errors five failures in a row come about once in 600 calls, fifty times in a
//! 30 s brownout at 1000 calls a second. The adaptive rule asks for a run that would be rare
//! at the failure rate seen before it began: with a baseline failure rate `p₀`, a run of `k`
//! begins at a given call with probability about `p₀ᵏ`, so tripping at the smallest `k` with
//! `p₀ᵏ ≤ 1 / one_in` trips by chance once in `one_in` calls whatever `p₀` (the CUSUM test of a
//! jump of the failure rate from `p₀` to 1, whose statistic a success resets and each failure
//! raises by `ln(1/p₀)`). A floor `p_min = one_in^(-1/min)` makes the run from a clean history
//! `min` long: the default `min = 5, one_in = 10⁷` trips after 5 failures from a healthy
//! downstream, 7 from 10 % errors and 14 from 30 %.
//!
//! The baseline leaves out the run itself (otherwise an outage would raise its own bar) and is
//! the higher of two estimates: the window's failure rate, shrunk toward zero by ten calls'
//! worth of successes so that a few calls after a reset say little and then raised by two of
//! its standard errors, and the failure rate of the last ten calls.
//!
//! Why raised: the window's rate is an estimate, and a run is as likely as `p₀ᵏ` of the *true*
//! rate. An estimate low by one standard error (0.045 for 100 calls at 30 %) asks for 12 failures
//! instead of 14, which come 10 times as often, while one as high saves little; so, averaged over
//! what the window reads, the bare estimate tripped once in 1 to 3 million calls at 10 to 50 %
//! errors (a false opening in one of 4 to 10 brownouts of 30 s at 10,000 calls a second), against
//! the one in 10⁷ asked. Two standard errors (`√(p̂(1 − p̂)/(n + 10))`) bring it to one in 25 to 50
//! million. A clean history has no error to raise (`p̂ = 0`), so an outage after it still trips
//! after `min` failures; after a 30 % brownout it takes about 16 instead of 13. The window's rate
//! is steady once a brownout has lasted a window; the last ten calls' rate rises after the first
//! short run of a brownout, so that the runs that follow need more failures before the window has
//! caught up.
//!
//! A run is counted in admission order: `k` calls admitted one after another (leaving out those
//! whose outcome was ignored or which were cancelled) that all failed. In completion order, the
//! calls in flight when an outage begins (rate × latency of them) come back as successes between
//! the new calls' instant failures and end every run; a call still in flight between two
//! failures keeps them apart only until it completes. So every call admitted while closed takes
//! a sequence number, and its outcome goes into a fixed ring of [`RING`] slots, each an atomic
//! word of the sequence number's lap and the call's state. A failure looks along the ring both
//! ways from its own slot for the run it belongs to: a success, a call still in flight or the
//! start of the closed phase ends it. More calls in flight than the ring holds overwrite the
//! slots of the oldest; a run that reaches such a slot (or a call whose own slot is gone) is
//! judged by the completion-order rule instead: calls slower than the ring's span of
//! admissions, and a failure whose thread is descheduled for that long between its end and its
//! look along the ring. That rule sees shorter runs at an outage's onset, but can see longer
//! ones where failures end much sooner than successes (the order of a steady mix is shuffled,
//! not kept); the ring makes it the exception.
//!
//! The run's baseline (window and recent calls) then leaves out the run as found, and the recent
//! calls are the ones admitted just before it.
//!
//! # A band that sheds before the trip
//!
//! A clean history says the failure rate was low, not what it is now: at a brownout's onset the
//! baseline still reads the healthy calls before it, so the run of `min` that finds an outage
//! after five failed calls also comes, from a 30 % brownout, for about 1 % of clients in their
//! first ten calls (`6 × 0.7 × 0.3⁵`), and a breaker that opened there would turn the partial
//! failure into a complete one for that client. The rule cannot tell the two apart from so short
//! a run, so it answers in two steps. From the run that the baseline makes rare ([`limit`]: 5 from
//! a clean history) the breaker stays closed and *sheds*: it rejects locally the next first
//! attempt after each failure (so that half of the client's calls still reach the downstream,
//! and a client of any rate sees a recovery, or a brownout's successes, within two of its
//! calls), and every retry. It opens at the run as rare at [`RIDE`] (30 %, the failure rate it
//! must ride through) as `one_in` asks, or at the baseline's own run when that is longer
//! ([`trip_limit`]): 14 by default. A success admitted after the run's latest failure ends the
//! shedding once at most [`RIDE`] of the ten calls before it failed; until then each failure
//! still owes a shed (a downstream failing most calls with a success now and then, as a queue
//! past its callers' timeouts, would otherwise end the shedding with each success and get the
//! whole load back).
//!
//! In an outage the first shed comes after the same `min` failed calls as the trip did, and the
//! breaker opens `trip − min` failed calls later (9 by default: 18 calls, 18 ms at 1000 calls a
//! second, 1.8 s at 10). From a 30 % brownout's onset a run of 5 sheds a call or two, and the 14
//! that would open it comes with probability about `10 × 0.7 × 0.3¹⁴ ≈ 3·10⁻⁷` per client (one
//! fleet of 1000 clients in 3000); in a steady brownout the baseline has risen and both runs are
//! about 16.
//!
//! [`limit`]: AdaptiveRun::limit
//! [`trip_limit`]: AdaptiveRun::trip_limit

use seawall_core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::window::Padded;

/// The failure rate a breaker rides through without opening: the brownout of LAB.md and
/// issue 12 (a breaker turns a partial failure into a complete one, Brooker, 2022). The run that
/// opens is as rare at this rate as the run that sheds is at the baseline.
pub(crate) const RIDE: f64 = 0.3;
/// Calls of the latest ones that the short estimate of the baseline covers.
pub(crate) const RECENT: usize = 10;
/// Successes the window's estimate is shrunk by.
const PRIOR_CALLS: f64 = 10.0;
/// Standard errors the window's estimate is raised by.
const BASELINE_SIGMAS: f64 = 2.0;

/// The consecutive-failures rule as a breaker applies it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RunRule {
    Fixed(u32),
    Adaptive(AdaptiveRun),
}

/// The adaptive rule's constants.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdaptiveRun {
    min: u32,
    ln_one_in: f64,
    p_min: f64,
    /// The failure rate the breaker rides through without opening (its rate threshold): the
    /// trip asks for a run as rare at this rate as the shed asks at the baseline.
    ride: f64,
}

/// What a run of failures calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunVerdict {
    /// Nothing: too short.
    Pass,
    /// Shed calls locally, staying closed.
    Shed,
    /// Open the breaker.
    Trip,
}

impl AdaptiveRun {
    pub(crate) fn new(min: u32, one_in: u64, ride: f64) -> Self {
        let ln_one_in = (one_in as f64).ln();
        Self {
            min,
            ln_one_in,
            p_min: (-ln_one_in / f64::from(min)).exp(),
            ride,
        }
    }

    /// The failure rate the breaker rides through without opening.
    pub(crate) fn ride(&self) -> f64 {
        self.ride
    }

    /// What a run of `run` failures calls for after a baseline failure rate of `p0`.
    pub(crate) fn verdict(&self, run: u32, p0: f64) -> RunVerdict {
        if run >= self.trip_limit(p0) {
            RunVerdict::Trip
        } else if run >= self.limit(p0) {
            RunVerdict::Shed
        } else {
            RunVerdict::Pass
        }
    }

    /// The run that opens the breaker after a baseline failure rate of `p0`: as rare at the
    /// higher of `p0` and the rate ridden through as [`limit`](Self::limit) is at `p0`.
    pub(crate) fn trip_limit(&self, p0: f64) -> u32 {
        self.limit(p0.max(self.ride))
    }

    /// The run that starts shedding after a baseline failure rate of `p0`.
    pub(crate) fn limit(&self, p0: f64) -> u32 {
        if p0 <= self.p_min {
            return self.min;
        }
        if p0 >= 1.0 {
            return u32::MAX;
        }
        // A hair under a whole number is that number: 0.1⁷ is one in 10⁷ exactly.
        let k = (self.ln_one_in / -p0.ln() - 1e-9).ceil();
        if k >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            (k as u32).max(self.min)
        }
    }
}

/// The baseline failure rate before a run of `run` failures, from the window's `failures` of
/// `calls` (the run's included) and, where the window keeps calls in order, the `recent`
/// failures among the [`RECENT`] calls before it.
pub(crate) fn baseline(run: u64, failures: u64, calls: u64, recent: Option<u64>) -> f64 {
    let before = failures.saturating_sub(run) as f64;
    let calls = calls.saturating_sub(run) as f64 + PRIOR_CALLS;
    let window = before / calls;
    let window = window + BASELINE_SIGMAS * (window * (1.0 - window) / calls).sqrt();
    let recent = recent.map_or(0.0, |f| f as f64 / RECENT as f64);
    window.max(recent)
}

/// Calls the admission ring remembers: more in flight at once and the oldest lose their slots.
//
// 4 KiB a breaker: 1024 calls in flight is 10,000 calls a second at 100 ms. Small under loom,
// whose atomics are heavy.
pub(crate) const RING: usize = if cfg!(loom) { 8 } else { 1024 };
const RING_BITS: u32 = RING.trailing_zeros();
const STATE_BITS: u32 = 2;
const LAP_MASK: u32 = u32::MAX >> STATE_BITS;

/// What a slot of the admission ring says about its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Admitted, no outcome yet (or admitted and not yet written).
    InFlight = 0,
    Success = 1,
    Failure = 2,
    /// Ignored, cancelled, or a late result of an earlier phase: not part of any run.
    Skipped = 3,
    /// Overwritten by a call [`RING`] admissions later.
    Gone = 4,
}

/// A run found in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// Failures in it.
    pub(crate) failures: u32,
    /// Failures among the last `recent` completed calls admitted before it.
    pub(crate) recent: u64,
}

/// The outcomes of the latest [`RING`] calls admitted while closed, by admission order.
#[derive(Debug)]
pub(crate) struct AdmissionRing {
    next: Padded<AtomicU64>,
    /// Bumped by every failure between writing its slot and looking for its run: of two
    /// failures written at once, the later bump sees the earlier one's slot.
    failures: Padded<AtomicU64>,
    /// The first sequence number of the closed phase: runs never reach before it.
    floor: AtomicU64,
    // An array of its fixed length rather than a slice, so that indexing by `seq % RING`
    // needs no bounds check: a check at admission and one at completion, 6 instructions a
    // call (callgrind, `benches/callgrind.sh circuit-breaker`).
    slots: Box<[AtomicU32; RING]>,
}

impl AdmissionRing {
    pub(crate) fn new() -> Self {
        const { assert!(RING.is_power_of_two()) };
        Self {
            next: Padded::default(),
            failures: Padded::default(),
            floor: AtomicU64::new(0),
            slots: Box::new(std::array::from_fn(|_| AtomicU32::new(0))),
        }
    }

    fn lap(seq: u64) -> u32 {
        (seq >> RING_BITS) as u32 & LAP_MASK
    }

    fn slot(&self, seq: u64) -> &AtomicU32 {
        &self.slots[seq as usize & (RING - 1)]
    }

    /// Takes the next sequence number and marks its call in flight.
    #[inline]
    pub(crate) fn admit(&self) -> u64 {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.slot(seq)
            .store(Self::lap(seq) << STATE_BITS, Ordering::Release);
        seq
    }

    /// Writes how call `seq` ended, unless its slot has gone to a later call; false if it has.
    #[inline]
    pub(crate) fn complete(&self, seq: u64, slot: Slot) -> bool {
        let word = (Self::lap(seq) << STATE_BITS) | slot as u32;
        let cell = self.slot(seq);
        let current = cell.load(Ordering::Relaxed);
        if current >> STATE_BITS != Self::lap(seq) {
            return false;
        }
        // Only this call writes its slot until the ring comes round again: a later call takes
        // it over with a plain store, which a compare-and-swap here would not overwrite.
        let written = cell
            .compare_exchange(current, word, Ordering::Release, Ordering::Relaxed)
            .is_ok();
        if written && slot == Slot::Failure {
            // Two failures written at once must not both miss the other (the store-buffer
            // pattern): their bumps of one counter are ordered, and the later one acquires
            // the earlier one's slot.
            self.failures.fetch_add(1, Ordering::AcqRel);
        }
        written
    }

    fn read(&self, seq: u64) -> Slot {
        let word = self.slot(seq).load(Ordering::Acquire);
        let (lap, want) = (word >> STATE_BITS, Self::lap(seq));
        if lap != want {
            // Laps wrap at 2³⁰: a slot a later lap wrote reads ahead of `want`, one not yet
            // written by `seq` itself behind it.
            let ahead = lap.wrapping_sub(want) & LAP_MASK;
            return if ahead < LAP_MASK / 2 {
                Slot::Gone
            } else {
                Slot::InFlight
            };
        }
        match word & ((1 << STATE_BITS) - 1) {
            0 => Slot::InFlight,
            1 => Slot::Success,
            2 => Slot::Failure,
            _ => Slot::Skipped,
        }
    }

    /// Starts a closed phase: calls admitted before now are no part of its runs.
    pub(crate) fn restart(&self) {
        self.floor
            .store(self.next.load(Ordering::Relaxed), Ordering::Release);
    }

    /// The sequence number the latest admitted call took, if any in this phase.
    pub(crate) fn latest(&self) -> Option<u64> {
        let next = self.next.load(Ordering::Acquire);
        (next > self.floor.load(Ordering::Acquire)).then(|| next - 1)
    }

    /// The run of failures that call `seq` ends or belongs to (none if it did not fail), and
    /// the failures among up to `recent` completed calls admitted before it; `None` when the
    /// ring no longer holds the whole run.
    pub(crate) fn run_around(&self, seq: u64, recent: usize) -> Option<Run> {
        let floor = self.floor.load(Ordering::Acquire);
        let next = self.next.load(Ordering::Acquire);
        let mut failures = 0u32;
        let mut at = seq;
        // Backwards to the first call that is not part of the run.
        let mut before = loop {
            if at < floor {
                break None;
            }
            match self.read(at) {
                Slot::Failure => failures += 1,
                Slot::Skipped => {}
                Slot::Success | Slot::InFlight => break Some(at),
                Slot::Gone => return None,
            }
            if seq - at >= RING as u64 {
                return None;
            }
            let Some(earlier) = at.checked_sub(1) else {
                break None;
            };
            at = earlier;
        };
        if failures == 0 {
            return Some(Run {
                failures,
                recent: 0,
            });
        }
        // Forwards over calls admitted after it that failed already.
        let mut after = seq + 1;
        while after < next && after - seq < RING as u64 {
            match self.read(after) {
                Slot::Failure => failures += 1,
                Slot::Skipped => {}
                Slot::Success | Slot::InFlight => break,
                Slot::Gone => return None,
            }
            after += 1;
        }
        // The completed calls just before the run; a call in flight there says nothing yet.
        let (mut seen, mut recent_failures) = (0, 0);
        while let Some(at) =
            before.filter(|&at| at >= floor && seen < recent && seq - at < RING as u64)
        {
            match self.read(at) {
                Slot::Failure => {
                    seen += 1;
                    recent_failures += 1;
                }
                Slot::Success => seen += 1,
                Slot::Skipped | Slot::InFlight => {}
                Slot::Gone => break,
            }
            before = at.checked_sub(1);
        }
        Some(Run {
            failures,
            recent: recent_failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn default_rule() -> AdaptiveRun {
        AdaptiveRun::new(5, 10_000_000, RIDE)
    }

    #[test]
    fn a_clean_history_trips_after_min_failures() {
        let rule = default_rule();
        assert_eq!(rule.limit(0.0), 5);
        assert_eq!(rule.limit(0.01), 5);
        assert_eq!(rule.limit(rule.p_min), 5);
    }

    #[test]
    fn brownouts_need_longer_runs() {
        let rule = default_rule();
        assert_eq!(rule.limit(0.1), 7);
        assert_eq!(rule.limit(0.3), 14);
        assert_eq!(rule.limit(0.5), 24);
        assert_eq!(rule.limit(1.0), u32::MAX);
    }

    #[test]
    fn a_clean_history_sheds_at_min_and_opens_at_the_run_rare_at_the_ridden_rate() {
        let rule = default_rule();
        assert_eq!(rule.trip_limit(0.0), 14, "0.3¹⁴ ≤ 10⁻⁷ < 0.3¹³");
        assert_eq!(rule.verdict(4, 0.0), RunVerdict::Pass);
        assert_eq!(rule.verdict(5, 0.0), RunVerdict::Shed);
        assert_eq!(rule.verdict(13, 0.0), RunVerdict::Shed);
        assert_eq!(rule.verdict(14, 0.0), RunVerdict::Trip);
        // Past the ridden rate the baseline's own run opens, with no band before it.
        assert_eq!(rule.trip_limit(0.5), 24);
        assert_eq!(rule.verdict(23, 0.5), RunVerdict::Pass);
        assert_eq!(rule.verdict(24, 0.5), RunVerdict::Trip);
    }

    #[test]
    fn the_baseline_leaves_out_the_run_and_takes_the_higher_estimate() {
        // 100 calls, the new failure only: a clean history.
        assert_eq!(baseline(1, 1, 100, Some(0)), 0.0);
        // The estimate over `n` calls, raised by two standard errors.
        let raised = |p: f64, n: f64| p + 2.0 * (p * (1.0 - p) / n).sqrt();
        // 30 failures before in 99 calls, shrunk by 10.
        assert!((baseline(1, 31, 100, Some(2)) - raised(30.0 / 109.0, 109.0)).abs() < 1e-12);
        // A run of 4: left out, failures and calls alike.
        assert!((baseline(4, 34, 100, Some(2)) - raised(30.0 / 106.0, 106.0)).abs() < 1e-12);
        // The last ten calls say more than a window full of older successes.
        assert_eq!(baseline(1, 3, 100, Some(2)), 0.2);
        // A time window keeps no order: its rate alone.
        assert!((baseline(1, 3, 100, None) - raised(2.0 / 109.0, 109.0)).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn the_run_that_trips_is_rare_at_its_baseline(
            p0 in 0.0f64..0.99,
            min in 1u32..=10,
            exp in 2u32..=12,
        ) {
            let one_in = 10u64.pow(exp);
            let rule = AdaptiveRun::new(min, one_in, RIDE);
            let k = rule.limit(p0);
            prop_assert!(k >= min);
            // A run of k is at most as likely as one in `one_in` at p0 (and at the floor),
            prop_assert!(p0.max(rule.p_min).powi(k as i32) <= 1.0 / one_in as f64 * (1.0 + 1e-6));
            // and k is the shortest such run above min.
            if k > min {
                prop_assert!(p0.powi(k as i32 - 1) > 1.0 / one_in as f64);
            }
        }

        #[test]
        fn a_run_sheds_before_it_opens_and_opens_only_where_rare_at_the_ridden_rate(
            p0 in 0.0f64..0.99,
            run in 1u32..40,
        ) {
            let rule = default_rule();
            let (shed, trip) = (rule.limit(p0), rule.trip_limit(p0));
            prop_assert!(shed <= trip);
            let expected = if run >= trip {
                RunVerdict::Trip
            } else if run >= shed {
                RunVerdict::Shed
            } else {
                RunVerdict::Pass
            };
            prop_assert_eq!(rule.verdict(run, p0), expected);
            // The run that opens is at most as likely as one in 10⁷ at the ridden rate.
            prop_assert!(RIDE.max(p0).powi(trip as i32) <= 1e-7 * (1.0 + 1e-6));
        }

        #[test]
        fn a_higher_baseline_never_asks_for_a_shorter_run(a in 0.0f64..1.0, b in 0.0f64..1.0) {
            let rule = default_rule();
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(rule.limit(low) <= rule.limit(high));
        }
    }
}
