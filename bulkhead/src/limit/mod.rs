//! Adaptive limit algorithms, as Netflix's `concurrency-limits` defines them.
//!
//! A fixed limit has to be guessed, and a guess is wrong as soon as the downstream slows
//! down, scales out or shares its capacity with someone else. An adaptive limit measures
//! instead: each finished call is a sample of its latency, of how many calls were in flight
//! when it started, and of whether it dropped (failed, was rejected further in, or took too
//! long). By Little's law a downstream at capacity answers more slowly as concurrency grows,
//! so latency that rises with the limit says the limit is too high.
//!
//! - [AIMD](aimd) is loss-based: it only learns from drops. Good for clients, which see their
//!   downstream's errors and timeouts.
//! - [Vegas](vegas) and [Gradient2](gradient2) are latency-based: they shrink the limit as
//!   soon as latency rises, before anything fails. Good for servers protecting themselves.
//!
//! Samples are gathered in windows, as Netflix's `WindowedLimit` does: a window of at least
//! ten calls is summed up as its average latency, its largest in-flight count and whether any
//! call dropped, and only that summary moves the limit. Moving the limit on every call would
//! let one slow burst (every call of which is slow) cut the limit once per call, down to the
//! minimum.
//!
//! Each algorithm is a plain state machine over samples (no clock, no locks), which keeps
//! them easy to check against Netflix's definitions.

pub(crate) mod aimd;
pub(crate) mod gradient2;
pub(crate) mod vegas;

use std::time::Duration;

use tokio::time::Instant;

use crate::config::AdaptiveLimit;

/// Windows with fewer samples are skipped.
const MIN_WINDOW_SAMPLES: u32 = 10;
/// Calls faster than this say nothing about the downstream (cache hits, local answers).
const MIN_RTT: Duration = Duration::from_micros(100);

/// An algorithm fed with one summary per window of samples.
#[derive(Debug)]
pub(crate) struct Windowed {
    algorithm: Algorithm,
    length: Duration,
    next_update: Option<Instant>,
    window: Window,
}

#[derive(Debug, Default)]
struct Window {
    min_rtt: Option<Duration>,
    sum: Duration,
    count: u32,
    max_in_flight: usize,
    dropped: bool,
}

impl Windowed {
    pub(crate) fn new(config: &AdaptiveLimit, length: Duration) -> Self {
        Self {
            algorithm: Algorithm::new(config),
            length,
            next_update: None,
            window: Window::default(),
        }
    }

    /// Adds one finished call; returns the limit when a window closed and moved it.
    pub(crate) fn sample(
        &mut self,
        now: Instant,
        rtt: Duration,
        in_flight: usize,
        dropped: bool,
    ) -> Option<usize> {
        if rtt < MIN_RTT {
            return None;
        }
        let w = &mut self.window;
        w.min_rtt = Some(w.min_rtt.map_or(rtt, |min| min.min(rtt)));
        w.sum += rtt;
        w.count += 1;
        w.max_in_flight = w.max_in_flight.max(in_flight);
        w.dropped |= dropped;
        if self.next_update.is_some_and(|next| now <= next) {
            return None;
        }
        let w = std::mem::take(&mut self.window);
        self.next_update = Some(now + self.length);
        (w.count >= MIN_WINDOW_SAMPLES).then(|| {
            let average = w.sum / w.count;
            self.algorithm.update(average, w.max_in_flight, w.dropped)
        })
    }

    pub(crate) fn set(&mut self, limit: usize) {
        self.algorithm.set(limit);
    }
}

/// One adaptive algorithm's state.
#[derive(Debug)]
enum Algorithm {
    Aimd(aimd::Aimd),
    Vegas(vegas::Vegas),
    Gradient2(gradient2::Gradient2),
}

impl Algorithm {
    fn new(config: &AdaptiveLimit) -> Self {
        match config {
            AdaptiveLimit::Aimd(c) => Self::Aimd(aimd::Aimd::new(c)),
            AdaptiveLimit::Vegas(c) => Self::Vegas(vegas::Vegas::new(c)),
            AdaptiveLimit::Gradient2(c) => Self::Gradient2(gradient2::Gradient2::new(c)),
        }
    }

    /// Learns from one finished call and returns the limit now.
    ///
    /// `in_flight` is the number of calls in flight when this one started, itself included.
    fn update(&mut self, rtt: Duration, in_flight: usize, dropped: bool) -> usize {
        match self {
            Self::Aimd(a) => a.update(rtt, in_flight, dropped),
            Self::Vegas(v) => v.update(rtt, in_flight, dropped),
            Self::Gradient2(g) => g.update(rtt, in_flight),
        }
    }

    /// Overrides the current estimate (from a handle); the algorithm goes on from there.
    fn set(&mut self, limit: usize) {
        match self {
            Self::Aimd(a) => a.set(limit),
            Self::Vegas(v) => v.set(limit),
            Self::Gradient2(g) => g.set(limit),
        }
    }
}

/// `max(1, floor(log10(x)))`, Netflix's `Log10RootFunction` with a baseline of 0.
fn log10_root(x: f64) -> f64 {
    if x < 1.0 {
        1.0
    } else {
        x.log10().floor().max(1.0)
    }
}

/// Clamps an estimate into `[min, max]` and truncates it to a whole limit, as Netflix's
/// `(int)` casts do.
fn whole(estimate: f64, min: usize, max: usize) -> usize {
    (estimate as usize).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AimdConfig;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_window_moves_the_limit_once_with_its_summary() {
        let config = AdaptiveLimit::Aimd(AimdConfig::new().initial(20).max(100));
        let mut w = Windowed::new(&config, ms(100));
        let start = Instant::now();
        // The first sample opens the first window.
        assert_eq!(w.sample(start, ms(5), 20, false), None);
        for i in 0..20 {
            assert_eq!(w.sample(start + ms(i), ms(5), 20, true), None);
        }
        // Twenty drops in the window: one backoff, not twenty.
        assert_eq!(w.sample(start + ms(101), ms(5), 20, false), Some(18));
    }

    #[test]
    fn small_windows_and_tiny_latencies_are_skipped() {
        let config = AdaptiveLimit::Aimd(AimdConfig::new().initial(20).max(100));
        let mut w = Windowed::new(&config, ms(100));
        let start = Instant::now();
        assert_eq!(w.sample(start, ms(5), 20, false), None);
        for i in 0..5 {
            assert_eq!(w.sample(start + ms(i), ms(5), 20, true), None);
        }
        assert_eq!(
            w.sample(start + ms(101), ms(5), 20, true),
            None,
            "six samples"
        );
        for i in 0..30 {
            w.sample(start + ms(102 + i), Duration::from_micros(50), 20, true);
        }
        assert_eq!(
            w.sample(start + ms(300), Duration::from_micros(50), 20, true),
            None
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::config::{AimdConfig, Gradient2Config, VegasConfig};
    use proptest::prelude::*;

    fn sample() -> impl Strategy<Value = (Duration, usize, bool)> {
        (1..200u64, 0..300usize, prop::bool::weighted(0.1))
            .prop_map(|(ms, in_flight, dropped)| (Duration::from_millis(ms), in_flight, dropped))
    }

    fn bounds() -> impl Strategy<Value = (usize, usize, usize)> {
        (1..50usize, 0..100usize, 0..100usize)
            .prop_map(|(min, span, at)| (min, min + span, min + at.min(span)))
    }

    proptest! {
        #[test]
        fn every_algorithm_stays_within_its_bounds(
            (min, max, initial) in bounds(),
            samples in prop::collection::vec(sample(), 1..300),
        ) {
            let configs = [
                AdaptiveLimit::Aimd(AimdConfig::new().min(min).max(max).initial(initial)),
                AdaptiveLimit::Vegas(VegasConfig::new().min(min).max(max).initial(initial)),
                AdaptiveLimit::Gradient2(Gradient2Config::new().min(min).max(max).initial(initial)),
            ];
            for config in &configs {
                let mut algorithm = Algorithm::new(config);
                for &(rtt, in_flight, dropped) in &samples {
                    let limit = algorithm.update(rtt, in_flight, dropped);
                    prop_assert!((min..=max).contains(&limit), "{config:?}: {limit}");
                }
            }
        }

        #[test]
        fn aimd_matches_its_definition(
            (min, max, initial) in bounds(),
            samples in prop::collection::vec(sample(), 1..300),
        ) {
            let config = AimdConfig::new().min(min).max(max).initial(initial);
            let mut algorithm = Algorithm::new(&AdaptiveLimit::Aimd(config));
            let mut limit = initial;
            for &(rtt, in_flight, dropped) in &samples {
                if dropped || rtt > config.timeout {
                    limit = ((limit as f64 * 0.9) as usize).min(limit - 1).max(min);
                } else if in_flight * 2 >= limit {
                    limit = (limit + 1).min(max);
                }
                prop_assert_eq!(algorithm.update(rtt, in_flight, dropped), limit);
            }
        }

        #[test]
        fn a_drop_never_raises_a_vegas_limit(
            samples in prop::collection::vec(sample(), 1..300),
        ) {
            let mut algorithm = Algorithm::new(&AdaptiveLimit::Vegas(VegasConfig::new().max(500)));
            let mut limit = 20;
            for &(rtt, in_flight, dropped) in &samples {
                let next = algorithm.update(rtt, in_flight, dropped);
                if dropped {
                    prop_assert!(next <= limit, "{limit} -> {next}");
                }
                limit = next;
            }
        }

        #[test]
        fn gradient2_grows_at_most_by_its_smoothed_queue_size(
            samples in prop::collection::vec(sample(), 1..300),
        ) {
            let config = Gradient2Config::new().min(1).max(1000);
            let mut algorithm = Algorithm::new(&AdaptiveLimit::Gradient2(config));
            let mut limit = config.initial;
            for &(rtt, in_flight, dropped) in &samples {
                let next = algorithm.update(rtt, in_flight, dropped);
                let most = limit as f64 + config.smoothing * config.queue_size as f64 + 1.0;
                prop_assert!((next as f64) <= most, "{limit} -> {next}");
                limit = next;
            }
        }
    }
}
