//! Whether an attempt timeout follows slow answers: a queue's cuts, not an outage's.
//!
//! A downstream that takes more load than it can serve queues it. Its answers get slower call
//! by call, and once the wait passes the attempt timeout every call is cut. A client that
//! calls a few times a second sees a few slow answers and then nothing but cuts, and a breaker
//! that counts those cuts as failures opens on a downstream that is up and serving its
//! capacity: overload turned into an outage (issue 12). A black hole looks different from the
//! client: answers at the usual latency, then silence.
//!
//! So each breaker keeps the lowest latency of its successes over the last two to four
//! seconds (two buckets of [`BUCKET`]), its *base*, and calls a success *slow* when it took
//! more than [`SLOW_FACTOR`] times the base. A slow success lets the next [`EXCUSED`] cuts
//! (attempt timeouts, [`RejectionKind::TimedOut`](seawall_core::RejectionKind)) count for
//! nothing; a success that is not slow ends that. Any other failure counts as before, and so
//! does every cut after a success at the base, or after the excused ones.
//!
//! What it could hide, and for how long: a downstream that gets slower and then dies within
//! the base's span (before a slower base is learned) is detected after `EXCUSED` more failed
//! calls than a black hole is. One whose successes are spread wider than `SLOW_FACTOR` times
//! its fastest (a long tail) excuses up to `EXCUSED` cuts after each slow success. A client
//! with no success in the last two buckets has no base and excuses nothing.
//!
//! Lock-free: one word of the two buckets' lows and the bucket's number, changed by
//! compare-and-swap only when a success is faster than the current bucket's low or starts a
//! new bucket; one counter of cuts still excused, written only when it changes.

use std::time::Duration;

use seawall_core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The span of one bucket of the base.
pub(crate) const BUCKET: Duration = Duration::from_secs(2);
/// How much slower than the base a success must be to show a queue.
pub(crate) const SLOW_FACTOR: u64 = 4;
/// Cuts that count for nothing after a slow success.
pub(crate) const EXCUSED: u32 = 3;

const LOW_BITS: u32 = 24;
/// No success in the bucket; also the cap of a latency in microseconds (about 16.8 s).
const EMPTY: u64 = (1 << LOW_BITS) - 1;
const BUCKET_SHIFT: u32 = 2 * LOW_BITS;

/// The base's buckets and the cuts still excused.
#[derive(Debug)]
pub(crate) struct QueueSigns {
    /// Bucket number (16 bits) | the previous bucket's low (24) | the current bucket's low
    /// (24), lows in microseconds.
    lows: AtomicU64,
    excused: AtomicU32,
}

impl QueueSigns {
    pub(crate) fn new() -> Self {
        Self {
            lows: AtomicU64::new(EMPTY << LOW_BITS | EMPTY),
            excused: AtomicU32::new(0),
        }
    }

    /// A call that succeeded after `latency`, ending `since_epoch` after the breaker's epoch.
    #[inline]
    pub(crate) fn success(&self, latency: Duration, since_epoch: Duration) {
        let micros = u64::try_from(latency.as_micros()).map_or(EMPTY, |m| m.min(EMPTY - 1));
        let bucket = (since_epoch.as_nanos() / BUCKET.as_nanos()) as u64 & 0xffff;
        let mut word = self.lows.load(Ordering::Relaxed);
        let slow = loop {
            let (base, next) = step(word, bucket, micros);
            if next == word {
                break base;
            }
            match self
                .lows
                .compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break base,
                Err(actual) => word = actual,
            }
        }
        .is_some_and(|base| micros > SLOW_FACTOR * base);
        let excused = if slow { EXCUSED } else { 0 };
        if self.excused.load(Ordering::Relaxed) != excused {
            self.excused.store(excused, Ordering::Relaxed);
        }
    }

    /// Whether a cut counts for nothing; takes one of the excused cuts if so.
    pub(crate) fn excuses_cut(&self) -> bool {
        self.excused
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Forgets the base and the excused cuts (a reload that turns the rule off and on again
    /// starts afresh).
    pub(crate) fn reset(&self) {
        self.lows
            .store(EMPTY << LOW_BITS | EMPTY, Ordering::Relaxed);
        self.excused.store(0, Ordering::Relaxed);
    }
}

/// The base a success of `micros` in `bucket` is judged against (the lowest of the two
/// buckets before it is added; `None` when both are empty), and the word with it added.
fn step(word: u64, bucket: u64, micros: u64) -> (Option<u64>, u64) {
    let current = word & EMPTY;
    let previous = (word >> LOW_BITS) & EMPTY;
    let (previous, current) = match bucket.wrapping_sub(word >> BUCKET_SHIFT) & 0xffff {
        0 => (previous, current),
        1 => (current, EMPTY),
        _ => (EMPTY, EMPTY),
    };
    let base = previous.min(current);
    let next = bucket << BUCKET_SHIFT | previous << LOW_BITS | current.min(micros);
    ((base != EMPTY).then_some(base), next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_slow_success_after_fast_ones_excuses_three_cuts() {
        let signs = QueueSigns::new();
        signs.success(10 * MS, Duration::ZERO);
        assert!(!signs.excuses_cut(), "no slow success yet");
        signs.success(50 * MS, 500 * MS);
        assert!(signs.excuses_cut());
        assert!(signs.excuses_cut());
        assert!(signs.excuses_cut());
        assert!(!signs.excuses_cut(), "three at most");
    }

    #[test]
    fn a_success_at_the_base_ends_the_excuse() {
        let signs = QueueSigns::new();
        signs.success(10 * MS, Duration::ZERO);
        signs.success(50 * MS, 500 * MS);
        signs.success(12 * MS, 700 * MS);
        assert!(!signs.excuses_cut());
    }

    #[test]
    fn the_base_is_the_lowest_of_the_last_two_buckets() {
        let signs = QueueSigns::new();
        signs.success(10 * MS, Duration::ZERO);
        // The next bucket still has the first one's low behind it.
        signs.success(45 * MS, BUCKET + MS);
        assert!(signs.excuses_cut());
        // A bucket later, 10 ms is forgotten: 45 ms is the base, 100 ms not four times it.
        signs.success(100 * MS, 2 * BUCKET + MS);
        assert!(!signs.excuses_cut());
        // A gap of two buckets or more forgets everything: no base, nothing excused.
        signs.success(900 * MS, 6 * BUCKET);
        assert!(!signs.excuses_cut());
    }
}
