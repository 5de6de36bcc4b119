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
//! Each algorithm is a plain state machine over samples (no clock, no locks), which keeps
//! them easy to check against Netflix's definitions.

pub(crate) mod aimd;
pub(crate) mod gradient2;
pub(crate) mod vegas;

use std::time::Duration;

use crate::config::AdaptiveLimit;

/// One adaptive algorithm's state.
#[derive(Debug)]
pub(crate) enum Algorithm {
    Aimd(aimd::Aimd),
    Vegas(vegas::Vegas),
    Gradient2(gradient2::Gradient2),
}

impl Algorithm {
    pub(crate) fn new(config: &AdaptiveLimit) -> Self {
        match config {
            AdaptiveLimit::Aimd(c) => Self::Aimd(aimd::Aimd::new(c)),
            AdaptiveLimit::Vegas(c) => Self::Vegas(vegas::Vegas::new(c)),
            AdaptiveLimit::Gradient2(c) => Self::Gradient2(gradient2::Gradient2::new(c)),
        }
    }

    /// Learns from one finished call and returns the limit now.
    ///
    /// `in_flight` is the number of calls in flight when this one started, itself included.
    pub(crate) fn update(&mut self, rtt: Duration, in_flight: usize, dropped: bool) -> usize {
        match self {
            Self::Aimd(a) => a.update(rtt, in_flight, dropped),
            Self::Vegas(v) => v.update(rtt, in_flight, dropped),
            Self::Gradient2(g) => g.update(rtt, in_flight),
        }
    }

    /// Overrides the current estimate (from a handle); the algorithm goes on from there.
    pub(crate) fn set(&mut self, limit: usize) {
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
