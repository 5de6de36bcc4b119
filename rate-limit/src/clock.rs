//! A governor clock on tokio time.
//!
//! governor reads its own monotonic clock by default, which a paused tokio clock does not move.
//! [`TokioClock`] reads [`tokio::time::Instant`] instead, so a test that advances virtual time
//! replenishes permits exactly as real time would, and a waiting call sleeps on the same clock
//! the limiter measures with.

use std::ops::Add;

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use seawall_core::time::nanos;
use tokio::time::Instant;

/// A [`governor::clock::Clock`] that reads tokio's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokioClock;

/// A reading of [`TokioClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokioInstant(pub Instant);

impl Clock for TokioClock {
    type Instant = TokioInstant;

    #[inline]
    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, nanos: Nanos) -> Self {
        Self(self.0 + std::time::Duration::from(nanos))
    }
}

impl Reference for TokioInstant {
    // governor subtracts its start from every reading; core's inline `nanos` instead of
    // governor's out-of-line conversion of the `Duration` (9 instructions).
    #[inline]
    fn duration_since(&self, earlier: Self) -> Nanos {
        nanos(self.0.saturating_duration_since(earlier.0)).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        self.0.checked_sub(duration.into()).map_or(*self, Self)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_the_paused_clock() {
        let start = TokioClock.now();
        tokio::time::advance(Duration::from_millis(30)).await;
        let later = TokioClock.now();
        assert_eq!(
            later.duration_since(start),
            Duration::from_millis(30).into()
        );
        assert_eq!(start.duration_since(later), Nanos::from(0));
        assert_eq!(
            later.saturating_sub(Duration::from_millis(30).into()),
            start
        );
        assert_eq!(start + Nanos::from(Duration::from_millis(30)), later);
    }
}
