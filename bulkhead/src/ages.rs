//! How many calls in flight are older than an age, for an adaptive limit.
//!
//! A call that hangs until a timeout further out holds its slot for the whole timeout while
//! the calls around it answer at their usual pace: it is held, not queued, and counting it
//! against the adaptive limit turns away calls the downstream would serve at once. Telling
//! such calls apart needs their ages, without a lock or a map per call: each call is counted in
//! the bucket of the time slice it started in, and the calls older than an age are the
//! buckets of older slices, summed only when a call finds the limit full.
//!
//! A bucket is one 64-bit word, the slice (40 bits) and how many calls that started in it are
//! still in flight (24 bits, more than the largest limit), changed by compare-and-swap. A call
//! starting in a slice whose bucket still holds one 64 slices older moves that bucket's count
//! to `older` (calls older than the ring, all of them held by any age the ring covers); a call
//! ending finds its own slice in its bucket, or leaves `older`.

use std::time::Duration;

use seawall_core::sync::atomic::{AtomicU64, Ordering::SeqCst};
use seawall_core::time::nanos;

const RING: usize = 64;
const COUNT_BITS: u32 = 24;
const COUNT: u64 = (1 << COUNT_BITS) - 1;
const SLICES: u64 = (1 << 40) - 1;

/// Calls in flight, counted by the time slice they started in.
#[derive(Debug)]
pub(crate) struct Ages {
    slice_nanos: u64,
    span: Duration,
    /// `slice + 1` (0: never used) and a count.
    buckets: [AtomicU64; RING],
    /// Calls that started more than the ring's span ago, still in flight; may dip below zero
    /// for a moment while a bucket moves here.
    older: AtomicU64,
}

impl Ages {
    /// A ring spanning `span`: ages are told apart to `span / 64`.
    /// Times are the adaptive limit's tally's: nanoseconds after its epoch, plus one.
    pub(crate) fn new(span: Duration) -> Self {
        let slice_nanos = (span.as_nanos() / RING as u128).clamp(1, u128::from(u32::MAX)) as u64;
        Self {
            slice_nanos,
            span,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            older: AtomicU64::new(0),
        }
    }

    /// The slice of a time: nanoseconds after the epoch, plus one.
    fn slice(&self, time: u64) -> u64 {
        (time.saturating_sub(1) / self.slice_nanos + 1) & SLICES
    }

    /// Counts a call that started at `start` (nanoseconds after the epoch, plus one).
    pub(crate) fn enter(&self, start: u64) {
        let slice = self.slice(start);
        let bucket = &self.buckets[slice as usize % RING];
        let mut current = bucket.load(SeqCst);
        loop {
            let (at, count) = (current >> COUNT_BITS, current & COUNT);
            let (next, moved) = if at == slice {
                (current + 1, 0)
            } else if at < slice {
                ((slice << COUNT_BITS) | 1, count)
            } else {
                // A later call took the bucket already: this one is as old as the ring.
                self.older.fetch_add(1, SeqCst);
                return;
            };
            match bucket.compare_exchange_weak(current, next, SeqCst, SeqCst) {
                Ok(_) => {
                    if moved > 0 {
                        self.older.fetch_add(moved, SeqCst);
                    }
                    return;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Forgets a call that started at `start`.
    pub(crate) fn leave(&self, start: u64) {
        let slice = self.slice(start);
        let bucket = &self.buckets[slice as usize % RING];
        let mut current = bucket.load(SeqCst);
        loop {
            if current >> COUNT_BITS != slice || current & COUNT == 0 {
                self.older.fetch_sub(1, SeqCst);
                return;
            }
            match bucket.compare_exchange_weak(current, current - 1, SeqCst, SeqCst) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Calls in flight that started at least `age` before `now` (to a slice); none for an
    /// age the ring does not span.
    pub(crate) fn older_than(&self, now: u64, age: Duration) -> usize {
        if age >= self.span {
            return 0;
        }
        // Only whole slices before the one `age` ago: a call is never counted younger.
        let cutoff = self.slice(now.saturating_sub(nanos(age)));
        let older = (self.older.load(SeqCst) as i64).max(0) as u64;
        let counted: u64 = self
            .buckets
            .iter()
            .map(|b| b.load(SeqCst))
            .filter(|&b| b >> COUNT_BITS != 0 && b >> COUNT_BITS < cutoff)
            .map(|b| b & COUNT)
            .sum();
        (older + counted) as usize
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    /// `at` as the tally keeps times, from the test's start.
    fn time(epoch: Instant, at: Instant) -> u64 {
        nanos(at - epoch) + 1
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn counts_the_calls_older_than_an_age() {
        let ages = Ages::new(ms(640));
        let epoch = Instant::now();
        let old = Instant::now();
        ages.enter(time(epoch, old));
        tokio::time::advance(ms(100)).await;
        let young = Instant::now();
        ages.enter(time(epoch, young));
        tokio::time::advance(ms(50)).await;
        let now = time(epoch, Instant::now());
        assert_eq!(ages.older_than(now, ms(30)), 2);
        assert_eq!(ages.older_than(now, ms(80)), 1);
        assert_eq!(ages.older_than(now, ms(200)), 0);
        ages.leave(time(epoch, old));
        assert_eq!(ages.older_than(now, ms(30)), 1);
        ages.leave(time(epoch, young));
        assert_eq!(ages.older_than(now, ms(30)), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_older_than_the_ring_stay_counted() {
        let ages = Ages::new(ms(64));
        let epoch = Instant::now();
        let old = Instant::now();
        ages.enter(time(epoch, old));
        tokio::time::advance(ms(64)).await;
        // The same bucket, a ring later: the old call moves to `older`.
        let young = Instant::now();
        ages.enter(time(epoch, young));
        tokio::time::advance(ms(5)).await;
        let now = time(epoch, Instant::now());
        assert_eq!(ages.older_than(now, ms(3)), 2);
        assert_eq!(ages.older_than(now, ms(20)), 1);
        ages.leave(time(epoch, old));
        assert_eq!(ages.older_than(now, ms(3)), 1);
        ages.leave(time(epoch, young));
        assert_eq!(ages.older_than(now, ms(3)), 0);
    }
}
