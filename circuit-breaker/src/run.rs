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
//! worth of successes so that a few calls after a reset say little, and the failure rate of
//! the last ten calls. The window's rate is steady once a brownout has lasted a window; the
//! last ten calls' rate rises after the first short run of a brownout, so that the runs that
//! follow need more failures before the window has caught up.

/// Calls of the latest ones that the short estimate of the baseline covers.
pub(crate) const RECENT: usize = 10;
/// Successes the window's estimate is shrunk by.
const PRIOR_CALLS: f64 = 10.0;

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
}

impl AdaptiveRun {
    pub(crate) fn new(min: u32, one_in: u64) -> Self {
        let ln_one_in = (one_in as f64).ln();
        Self {
            min,
            ln_one_in,
            p_min: (-ln_one_in / f64::from(min)).exp(),
        }
    }

    /// The run that trips after a baseline failure rate of `p0`.
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

/// The baseline failure rate before a run that has just begun with one failure, from the
/// window's `failures` of `calls` (that failure included) and, where the window keeps calls
/// in order, the `recent` failures among the [`RECENT`] calls before it.
pub(crate) fn baseline(failures: u64, calls: u64, recent: Option<u64>) -> f64 {
    let before = failures.saturating_sub(1) as f64;
    let calls = calls.saturating_sub(1) as f64;
    let window = before / (calls + PRIOR_CALLS);
    let recent = recent.map_or(0.0, |f| f as f64 / RECENT as f64);
    window.max(recent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn default_rule() -> AdaptiveRun {
        AdaptiveRun::new(5, 10_000_000)
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
    fn the_baseline_leaves_out_the_run_and_takes_the_higher_estimate() {
        // 100 calls, the new failure only: a clean history.
        assert_eq!(baseline(1, 100, Some(0)), 0.0);
        // 30 failures before in 99 calls, shrunk by 10.
        assert!((baseline(31, 100, Some(2)) - 30.0 / 109.0).abs() < 1e-12);
        // The last ten calls say more than a window full of older successes.
        assert_eq!(baseline(3, 100, Some(2)), 0.2);
        // A time window keeps no order: its rate alone.
        assert!((baseline(3, 100, None) - 2.0 / 109.0).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn the_run_that_trips_is_rare_at_its_baseline(
            p0 in 0.0f64..0.99,
            min in 1u32..=10,
            exp in 2u32..=12,
        ) {
            let one_in = 10u64.pow(exp);
            let rule = AdaptiveRun::new(min, one_in);
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
        fn a_higher_baseline_never_asks_for_a_shorter_run(a in 0.0f64..1.0, b in 0.0f64..1.0) {
            let rule = default_rule();
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(rule.limit(low) <= rule.limit(high));
        }
    }
}
