//! Gradient2: scale the limit by how the latest latency compares with the long-term average.
//!
//! `gradient = clamp(long_rtt / rtt, 0.5, 1)`, `new = limit × gradient + queue_size`, smoothed
//! as `limit × (1 − smoothing) + new × smoothing`. Averages, not minimums, because call costs
//! vary; the long-term average decays fast when latency falls back to half of it, so the
//! limit recovers after a long overload.

use std::time::Duration;

use super::whole;
use crate::config::Gradient2Config;

/// The first calls are averaged plainly before the exponential average takes over.
const WARMUP: u32 = 10;

#[derive(Debug)]
pub(crate) struct Gradient2 {
    estimate: f64,
    min: usize,
    max: usize,
    smoothing: f64,
    queue_size: f64,
    long_rtt: ExpAverage,
}

/// Netflix's `ExpAvgMeasurement`.
#[derive(Debug)]
struct ExpAverage {
    factor: f64,
    count: u32,
    sum: f64,
    value: f64,
}

impl ExpAverage {
    fn new(window: u32) -> Self {
        Self {
            factor: 2.0 / (f64::from(window) + 1.0),
            count: 0,
            sum: 0.0,
            value: 0.0,
        }
    }

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < WARMUP {
            self.count += 1;
            self.sum += sample;
            self.value = self.sum / f64::from(self.count);
        } else {
            self.value = self.value * (1.0 - self.factor) + sample * self.factor;
        }
        self.value
    }
}

impl Gradient2 {
    pub(crate) fn new(config: &Gradient2Config) -> Self {
        Self {
            estimate: config.initial as f64,
            min: config.min,
            max: config.max,
            smoothing: config.smoothing,
            queue_size: config.queue_size as f64,
            long_rtt: ExpAverage::new(config.long_window),
        }
    }

    fn limit(&self) -> usize {
        whole(self.estimate, self.min, self.max)
    }

    pub(crate) fn update(&mut self, rtt: Duration, in_flight: usize) -> usize {
        let short = rtt.as_secs_f64().max(1e-9);
        let mut long = self.long_rtt.add(short);
        if long / short > 2.0 {
            long *= 0.9;
            self.long_rtt.value = long;
        }
        if (in_flight as f64) < self.estimate / 2.0 {
            return self.limit();
        }
        let gradient = (long / short).clamp(0.5, 1.0);
        let next = self.estimate * gradient + self.queue_size;
        let next = self.estimate * (1.0 - self.smoothing) + next * self.smoothing;
        self.estimate = next.clamp(self.min as f64, self.max as f64);
        self.limit()
    }

    pub(crate) fn set(&mut self, limit: usize) -> usize {
        self.estimate = limit.clamp(self.min, self.max) as f64;
        self.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn gradient(initial: usize) -> Gradient2 {
        Gradient2::new(&Gradient2Config::new().initial(initial).min(5).max(200))
    }

    #[test]
    fn steady_latency_grows_by_the_smoothed_queue_size() {
        let mut g = gradient(20);
        // gradient 1: new = 20 + 4, smoothed 20 × 0.8 + 24 × 0.2 = 20.8.
        assert_eq!(g.update(ms(10), 20), 20);
        assert!((g.estimate - 20.8).abs() < 1e-9);
    }

    #[test]
    fn rising_latency_shrinks_the_limit() {
        let mut g = gradient(100);
        for _ in 0..20 {
            g.update(ms(10), 100);
        }
        let before = g.estimate;
        for _ in 0..5 {
            g.update(ms(40), 200);
        }
        assert!(g.estimate < before, "{} < {before}", g.estimate);
    }

    #[test]
    fn an_idle_limiter_does_not_drift_up() {
        let mut g = gradient(20);
        assert_eq!(g.update(ms(10), 9), 20);
        assert!((g.estimate - 20.0).abs() < 1e-9);
    }
}
