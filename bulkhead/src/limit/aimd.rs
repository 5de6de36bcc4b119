//! Additive increase, multiplicative decrease: TCP's congestion window, for calls.
//!
//! A success while at least half the limit is in use adds one; a drop (or a call slower than
//! the timeout) multiplies the limit by the backoff ratio. Calls made while the limit is far
//! from used say nothing about whether it is too low, so they leave it alone.

use std::time::Duration;

use crate::config::AimdConfig;

#[derive(Debug)]
pub(crate) struct Aimd {
    limit: usize,
    min: usize,
    max: usize,
    backoff_ratio: f64,
    timeout: Duration,
}

impl Aimd {
    pub(crate) fn new(config: &AimdConfig) -> Self {
        Self {
            limit: config.initial,
            min: config.min,
            max: config.max,
            backoff_ratio: config.backoff_ratio,
            timeout: config.timeout,
        }
    }

    pub(crate) fn update(&mut self, rtt: Duration, in_flight: usize, dropped: bool) -> usize {
        let limit = self.limit;
        let next = if dropped || rtt > self.timeout {
            let backed_off = (limit as f64 * self.backoff_ratio) as usize;
            backed_off.min(limit.saturating_sub(1))
        } else if in_flight * 2 >= limit {
            limit + 1
        } else {
            return limit;
        };
        self.limit = next.clamp(self.min, self.max);
        self.limit
    }

    pub(crate) fn set(&mut self, limit: usize) -> usize {
        self.limit = limit.clamp(self.min, self.max);
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aimd(initial: usize) -> Aimd {
        Aimd::new(&AimdConfig::new().initial(initial).min(2).max(50))
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_by_one_while_busy_and_succeeding() {
        let mut a = aimd(10);
        assert_eq!(a.update(MS, 5, false), 11);
        assert_eq!(a.update(MS, 6, false), 12);
    }

    #[test]
    fn idle_successes_leave_the_limit_alone() {
        let mut a = aimd(10);
        assert_eq!(a.update(MS, 4, false), 10);
    }

    #[test]
    fn a_drop_or_a_slow_call_backs_off() {
        let mut a = aimd(20);
        assert_eq!(a.update(MS, 1, true), 18);
        assert_eq!(a.update(Duration::from_secs(6), 1, false), 16);
        let mut small = aimd(3);
        assert_eq!(small.update(MS, 1, true), 2, "at least one less");
        assert_eq!(small.update(MS, 1, true), 2, "never below min");
    }

    #[test]
    fn never_above_max() {
        let mut a = aimd(50);
        assert_eq!(a.update(MS, 50, false), 50);
    }
}
