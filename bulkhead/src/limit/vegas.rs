//! TCP Vegas for calls: estimate the queue from how far latency rose above the no-load
//! latency, and keep it small.
//!
//! `queue = limit × (1 − rtt_noload / rtt)`. With Netflix's functions of the limit
//! (`f(L) = max(1, ⌊log10 L⌋)`): no queue (`≤ f`) grows the limit by `6f`, a small queue
//! (`< 3f`) by `f`, a drop shrinks it by `f`. The no-load latency is the smallest seen,
//! re-measured about every `probe_multiplier × limit` calls (with jitter) so that it follows
//! a downstream whose base latency changes.
//!
//! Two departures, because the bulkhead feeds Vegas one summary per window of many round
//! trips rather than one sample per round trip:
//! - a large queue (`> 6f`) is cut back to `3f` in one step (`limit − queue + 3f`) rather than
//!   by `f`: TCP Vegas takes one step of one per round trip, a few hundred in a one-second
//!   window. Overload at 1500 calls a second on 11 workers of 10 ms, with a limit of 38 from
//!   the healthy minutes before, queues 27 calls (about 25 ms each) and took 20 windows to
//!   drain at `f = 1` a window, the accepted calls' p99 2.6 times the healthy one; now the
//!   next window holds 13;
//! - the limit grows only when the window reached it: a window whose busiest moment is half
//!   the limit would otherwise grow it by `6f` each second of healthy traffic, and an
//!   overload would start against a limit far above what the downstream serves without a
//!   queue. Growth where the limit turns calls away is slow start's (see the module above);
//! - a rise of the window's mean within three standard errors of its difference from the
//!   lowest mean is noise, not a queue (see "Slow start" in the module above): at a long
//!   tail's 64.8 ms and 70.7 ms, 80 calls read as 7 queued and were cut by 4 each window. A
//!   rise beyond it is read in full.

use std::time::Duration;

use seawall_core::config::{self, ConfigError, Raw};
use serde::{Deserialize, Serialize};

use super::bounds::{Bounds, bounds_setters};
use super::{beyond_noise, log10_root, whole};

/// Settings of the Vegas limit; checked when the bulkhead is built.
///
/// The queue is estimated as `limit × (1 − no-load latency / latency)`; with Netflix's
/// functions of the limit (`log10` based) it grows fast while there is no queue, slowly while
/// the queue is small, and shrinks once the queue is large or a call drops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "VegasSpec", into = "VegasSpec")]
pub struct VegasConfig {
    pub(crate) bounds: Bounds,
    pub(crate) smoothing: f64,
    pub(crate) probe_multiplier: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct VegasSpec {
    initial: Raw<usize>,
    min: Raw<usize>,
    max: Raw<usize>,
    smoothing: Raw<f64>,
    probe_multiplier: Raw<u32>,
}

impl Default for VegasSpec {
    fn default() -> Self {
        VegasConfig::default().into()
    }
}

impl From<VegasConfig> for VegasSpec {
    fn from(c: VegasConfig) -> Self {
        let [initial, min, max] = c.bounds.to_spec();
        Self {
            initial,
            min,
            max,
            smoothing: c.smoothing.into(),
            probe_multiplier: c.probe_multiplier.into(),
        }
    }
}

impl TryFrom<VegasSpec> for VegasConfig {
    type Error = ConfigError;

    fn try_from(spec: VegasSpec) -> Result<Self, ConfigError> {
        Ok(Self {
            bounds: Bounds::from_spec("vegas", [spec.initial, spec.min, spec.max])?,
            smoothing: spec.smoothing.value("vegas.smoothing", "(0, 1]")?,
            probe_multiplier: spec
                .probe_multiplier
                .value("vegas.probe_multiplier", "[1, 1000000]")?,
        })
    }
}

impl Default for VegasConfig {
    fn default() -> Self {
        Self {
            bounds: Bounds::new(20, 1, 1000),
            smoothing: 1.0,
            probe_multiplier: 30,
        }
    }
}

impl VegasConfig {
    /// Netflix's defaults: initial 20, min 1, max 1000, smoothing 1, probe multiplier 30.
    pub fn new() -> Self {
        Self::default()
    }

    bounds_setters!();

    /// How much of each new estimate is taken, in `(0, 1]`.
    #[must_use]
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The no-load latency is measured afresh about every `probe_multiplier × limit` calls.
    #[must_use]
    pub fn probe_multiplier(mut self, multiplier: u32) -> Self {
        self.probe_multiplier = multiplier;
        self
    }

    /// Checks the settings; errors name the field within the algorithm.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        self.bounds.check()?;
        config::ratio("smoothing", self.smoothing)?;
        config::count_in("probe_multiplier", self.probe_multiplier, 1..=1_000_000)?;
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct Vegas {
    estimate: f64,
    min: usize,
    max: usize,
    smoothing: f64,
    probe_multiplier: f64,
    probe_count: u64,
    probe_jitter: f64,
    rtt_noload: Option<Duration>,
    /// How much of the next latency may be the noise of a window's mean, in seconds.
    noise: f64,
    rng: u64,
}

impl Vegas {
    pub(crate) fn new(config: &VegasConfig) -> Self {
        let mut vegas = Self {
            estimate: config.bounds.initial as f64,
            min: config.bounds.min,
            max: config.bounds.max,
            smoothing: config.smoothing,
            probe_multiplier: f64::from(config.probe_multiplier),
            probe_count: 0,
            probe_jitter: 1.0,
            rtt_noload: None,
            noise: 0.0,
            rng: 0x9E37_79B9_7F4A_7C15,
        };
        vegas.reset_probe_jitter();
        vegas
    }

    /// A jitter in `[0.5, 1)` from a xorshift generator: deterministic, so runs repeat.
    fn reset_probe_jitter(&mut self) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        self.probe_jitter = 0.5 + unit / 2.0;
    }

    fn limit(&self) -> usize {
        whole(self.estimate, self.min, self.max)
    }

    pub(crate) fn update(&mut self, rtt: Duration, in_flight: usize, dropped: bool) -> usize {
        let rtt = rtt.max(Duration::from_nanos(1));
        self.probe_count += 1;
        if self.probe_jitter * self.probe_multiplier * self.estimate <= self.probe_count as f64 {
            self.reset_probe_jitter();
            self.probe_count = 0;
            self.rtt_noload = Some(rtt);
            return self.limit();
        }
        let noload = match self.rtt_noload {
            Some(noload) if rtt >= noload => noload,
            _ => {
                self.rtt_noload = Some(rtt);
                return self.limit();
            }
        };

        let estimate = self.estimate;
        let rtt = beyond_noise(rtt, noload, self.noise);
        let queue = (estimate * (1.0 - noload.as_secs_f64() / rtt.as_secs_f64())).ceil();
        let f = log10_root(estimate);
        // Growth needs a limit that was reached: a window's busiest moment at half the limit
        // says nothing of whether more calls would be served without a queue.
        let reached = in_flight >= self.limit();
        let next = if dropped {
            estimate - f
        } else if (in_flight as f64) * 2.0 < estimate {
            return self.limit();
        } else if queue <= f && reached {
            estimate + 6.0 * f
        } else if queue < 3.0 * f && reached {
            estimate + f
        } else if queue > 6.0 * f {
            // One window sums up many round trips, in each of which TCP Vegas would have
            // shrunk by one: the queue goes back to 3f at once.
            (estimate - f).min(estimate - queue + 3.0 * f)
        } else {
            return self.limit();
        };
        let next = next.clamp(self.min as f64, self.max as f64);
        self.estimate = (1.0 - self.smoothing) * estimate + self.smoothing * next;
        self.limit()
    }

    /// Takes `noise` (seconds) of the next latency as the noise of a window's mean.
    pub(crate) fn allow_noise(&mut self, noise: f64) {
        self.noise = noise;
    }

    pub(crate) fn set(&mut self, limit: usize) -> usize {
        self.estimate = limit.clamp(self.min, self.max) as f64;
        self.limit()
    }

    /// Takes `rtt` as the no-load latency from now on: the downstream itself got slower.
    pub(crate) fn rebase(&mut self, rtt: Duration) {
        self.rtt_noload = Some(rtt);
        self.probe_count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn vegas(initial: usize) -> Vegas {
        Vegas::new(&VegasConfig::new().initial(initial).max(500))
    }

    #[test]
    fn the_first_sample_only_sets_the_noload_latency() {
        let mut v = vegas(20);
        assert_eq!(v.update(ms(10), 20, false), 20);
        assert_eq!(v.rtt_noload, Some(ms(10)));
    }

    #[test]
    fn no_queue_grows_fast_and_a_large_queue_shrinks() {
        let mut v = vegas(20);
        v.update(ms(10), 20, false);
        // Same latency as no load: no queue, grow by 6 × log10(20) = 6.
        assert_eq!(v.update(ms(10), 20, false), 26);
        // Latency doubled: a queue of 13 > 6, cut back to 3: 26 - 13 + 3.
        assert_eq!(v.update(ms(20), 26, false), 16);
        // A drop always shrinks.
        assert_eq!(v.update(ms(10), 1, true), 15);
    }

    #[test]
    fn a_small_queue_grows_slowly_and_a_moderate_one_holds() {
        let mut v = vegas(20);
        v.update(ms(100), 20, false);
        // queue = ceil(20 × (1 − 100/105)) = 1 ≤ 1: grow by 6.
        assert_eq!(v.update(ms(105), 20, false), 26);
        // queue = ceil(26 × (1 − 100/110)) = 3, in [3, 6]: hold.
        assert_eq!(v.update(ms(110), 26, false), 26);
    }

    #[test]
    fn a_large_queue_is_cut_back_in_one_window() {
        let mut v = vegas(38);
        v.update(ms(10), 38, false);
        // 38 calls on a downstream that serves 11 at a time: an estimated 28 wait, 3 stay.
        assert_eq!(v.update(ms(35), 38, false), 13);
    }

    #[test]
    fn a_rise_within_the_window_mean_s_noise_is_no_queue() {
        // A long tail at 80 calls: 64.8 ms then 70.7 ms reads as ceil(80 × (1 − 64.8/70.7))
        // = 7 queued > 6f = 6 and cuts; with 3 × √2 × 4.6 % of noise allowed it reads none.
        let micros = Duration::from_micros;
        let mut v = vegas(80);
        v.update(micros(64_800), 80, false);
        assert_eq!(v.update(micros(70_700), 80, false), 76);
        let mut v = vegas(80);
        v.update(micros(64_800), 80, false);
        v.allow_noise(0.195 * 0.0707);
        assert_eq!(v.update(micros(70_700), 80, false), 86);
    }

    #[test]
    fn a_rise_beyond_the_window_mean_s_noise_is_read_in_full() {
        // A queue formed within the first window: its mean (87.5 ms, standard error 0.78 ms)
        // is the lowest, then 100 ms: 16 standard errors above, a queue of
        // ceil(100 × (1 − 87.5/100)) = 13 > 6f = 12, which cuts. Shaving 3 × 0.78 ms off the
        // rise would read ceil(10.4) = 11 and hold the limit.
        let micros = Duration::from_micros;
        let mut v = vegas(100);
        v.update(micros(87_500), 100, false);
        v.allow_noise(3.0 * 0.000_78);
        assert!(v.update(micros(100_000), 100, false) < 100);
    }

    #[test]
    fn a_limit_not_reached_does_not_grow() {
        let mut v = vegas(40);
        v.update(ms(10), 40, false);
        assert_eq!(v.update(ms(10), 25, false), 40, "half the limit, no queue");
        assert_eq!(v.update(ms(10), 40, false), 46, "the limit reached");
    }

    #[test]
    fn an_idle_limiter_does_not_drift_up() {
        let mut v = vegas(20);
        v.update(ms(10), 20, false);
        assert_eq!(v.update(ms(10), 9, false), 20);
    }
}
