//! Additive increase, multiplicative decrease: TCP's congestion window, for calls.
//!
//! A success while at least half the limit is in use adds one; a drop (or a call slower than
//! the timeout) multiplies the limit by the backoff ratio. Calls made while the limit is far
//! from used say nothing about whether it is too low, so they leave it alone.

use std::time::Duration;

use seawall_core::config::{self, ConfigError, Raw};
use serde::{Deserialize, Serialize};

use super::bounds::{Bounds, bounds_setters};

/// Settings of the AIMD limit; checked when the bulkhead is built.
///
/// Each call that succeeds while at least half the limit is in use adds one; a drop (a
/// failure, a `Rejected` from further in, or a call slower than `timeout`) multiplies the
/// limit by `backoff_ratio`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AimdSpec", into = "AimdSpec")]
pub struct AimdConfig {
    pub(crate) bounds: Bounds,
    pub(crate) backoff_ratio: f64,
    pub(crate) timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AimdSpec {
    initial: Raw<usize>,
    min: Raw<usize>,
    max: Raw<usize>,
    backoff_ratio: Raw<f64>,
    timeout: Raw<Duration>,
}

impl Default for AimdSpec {
    fn default() -> Self {
        AimdConfig::default().into()
    }
}

impl From<AimdConfig> for AimdSpec {
    fn from(c: AimdConfig) -> Self {
        let [initial, min, max] = c.bounds.to_spec();
        Self {
            initial,
            min,
            max,
            backoff_ratio: c.backoff_ratio.into(),
            timeout: c.timeout.into(),
        }
    }
}

impl TryFrom<AimdSpec> for AimdConfig {
    type Error = ConfigError;

    fn try_from(spec: AimdSpec) -> Result<Self, ConfigError> {
        Ok(Self {
            bounds: Bounds::from_spec("aimd", [spec.initial, spec.min, spec.max])?,
            backoff_ratio: spec.backoff_ratio.value("aimd.backoff_ratio", "[0.5, 1)")?,
            timeout: spec
                .timeout
                .value("aimd.timeout", config::POSITIVE_DURATIONS)?,
        })
    }
}

impl Default for AimdConfig {
    fn default() -> Self {
        Self {
            bounds: Bounds::new(10, 1, 200),
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
        }
    }
}

impl AimdConfig {
    /// Netflix's defaults: initial 10, min 1, max 200, backoff ratio 0.9, timeout 5 s.
    pub fn new() -> Self {
        Self::default()
    }

    bounds_setters!();

    /// What a drop multiplies the limit by, in `[0.5, 1)`.
    #[must_use]
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// A call slower than this counts as a drop.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the settings; errors name the field within the algorithm.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        self.bounds.check()?;
        if !(0.5..1.0).contains(&self.backoff_ratio) {
            return Err(ConfigError::new(
                "backoff_ratio",
                self.backoff_ratio,
                "[0.5, 1)",
            ));
        }
        config::positive_duration("timeout", self.timeout, config::MAX_DURATION)?;
        Ok(())
    }
}

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
            limit: config.bounds.initial,
            min: config.bounds.min,
            max: config.bounds.max,
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
