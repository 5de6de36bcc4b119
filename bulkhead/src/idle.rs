//! Giving back the slots of response bodies whose readers stopped reading.
//!
//! With `release_on_body_end` a slot is held until the response body ends. A client that never
//! reads (a full socket buffer, a closed HTTP/2 flow-control window) leaves its body unpolled:
//! it never ends, and a handful of such clients would hold every slot for good. A body nobody
//! polls runs no code, so no timer inside it can help, and a task or timer per body would cost
//! an allocation per call. Instead, a body waiting for its reader is counted in a bucket of
//! the time slice it started waiting in; the slots of buckets older than `max_reader_idle` are
//! given back in bulk by the next call that finds the bulkhead full, or by a waiter whose wait
//! runs out. A body read again afterwards finds its bucket given back and releases nothing.
//!
//! A bucket is one 64-bit word, the time slice (40 bits) and how many bodies wait since then
//! (24 bits, more than the largest limit); every change to it is one compare-and-swap, so a
//! body leaving its bucket and a sweep giving the bucket back never both release a slot. A
//! slice is a sixteenth of the max idle time, and a ring of 32 buckets per partition covers
//! twice that time: a slot comes back between 1 and 17/16 × `max_reader_idle` after its body
//! began to wait for its reader, once a call needs it.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use metrics::Counter;
use tokio::time::Instant;

use crate::semaphore::Semaphore;

const SLICES_PER_IDLE: u64 = 16;
const RING: usize = 32;
const COUNT_BITS: u32 = 24;
const COUNT: u64 = (1 << COUNT_BITS) - 1;
/// Slices are counted modulo this; the value itself marks a bucket given back.
const SLICES: u64 = (1 << 40) - 1;
const GIVEN_BACK: u64 = SLICES << COUNT_BITS;

/// The buckets of bodies waiting for their readers, one ring per partition.
#[derive(Debug)]
pub(crate) struct IdleSlots {
    epoch: Instant,
    slice_nanos: u64,
    /// `[0]` for calls outside any partition, `[p + 1]` for partition `p`.
    rings: Box<[[AtomicU64; RING]]>,
    /// The slice of the last sweep: one sweep per slice at most.
    last_sweep: AtomicU64,
    released: Counter,
}

impl IdleSlots {
    pub(crate) fn new(max_idle: Duration, partitions: usize, released: Counter) -> Self {
        let max_idle = u64::try_from(max_idle.as_nanos()).unwrap_or(u64::MAX);
        Self {
            epoch: Instant::now(),
            slice_nanos: (max_idle / SLICES_PER_IDLE).max(1),
            rings: (0..=partitions)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(GIVEN_BACK)))
                .collect(),
            last_sweep: AtomicU64::new(SLICES),
            released,
        }
    }

    /// The time slice now.
    pub(crate) fn now(&self) -> u64 {
        let nanos = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos();
        (u64::try_from(nanos).unwrap_or(u64::MAX) / self.slice_nanos) % SLICES
    }

    fn bucket(&self, partition: Option<usize>, slice: u64) -> &AtomicU64 {
        let ring = partition.map_or(0, |p| p + 1);
        &self.rings[ring][(slice % RING as u64) as usize]
    }

    /// Counts a body of `partition`, holding a slot, as waiting for its reader from `slice`.
    pub(crate) fn enter(&self, partition: Option<usize>, slice: u64, semaphore: &Semaphore) {
        let bucket = self.bucket(partition, slice);
        let mut word = bucket.load(SeqCst);
        loop {
            // A bucket of another slice is a whole ring older, long past the max: its bodies'
            // slots go back now.
            let (next, stale) = if word >> COUNT_BITS == slice {
                (word + 1, 0)
            } else {
                ((slice << COUNT_BITS) | 1, word & COUNT)
            };
            match bucket.compare_exchange_weak(word, next, SeqCst, SeqCst) {
                Ok(_) => {
                    self.give_back(partition, stale, semaphore);
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Stops counting a body that waits for its reader since `slice`: true if it still holds
    /// its slot, false if the slot was given back meanwhile.
    pub(crate) fn leave(&self, partition: Option<usize>, slice: u64) -> bool {
        let bucket = self.bucket(partition, slice);
        let mut word = bucket.load(SeqCst);
        loop {
            if word >> COUNT_BITS != slice || word & COUNT == 0 {
                return false;
            }
            match bucket.compare_exchange_weak(word, word - 1, SeqCst, SeqCst) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    /// Gives back the slots of bodies that have waited for their readers longer than the max;
    /// returns how many. Runs at most once per slice, on the caller's task.
    #[cold]
    #[inline(never)]
    pub(crate) fn sweep(&self, semaphore: &Semaphore) -> usize {
        let now = self.now();
        let last = self.last_sweep.load(SeqCst);
        if last == now
            || self
                .last_sweep
                .compare_exchange(last, now, SeqCst, SeqCst)
                .is_err()
        {
            return 0;
        }
        let mut total = 0;
        for (ring, buckets) in self.rings.iter().enumerate() {
            let partition = ring.checked_sub(1);
            for bucket in buckets {
                let mut word = bucket.load(SeqCst);
                while word != GIVEN_BACK && age(now, word >> COUNT_BITS) > SLICES_PER_IDLE {
                    match bucket.compare_exchange_weak(word, GIVEN_BACK, SeqCst, SeqCst) {
                        Ok(_) => {
                            total += self.give_back(partition, word & COUNT, semaphore);
                            break;
                        }
                        Err(actual) => word = actual,
                    }
                }
            }
        }
        if total > 0 {
            tracing::debug!(
                released = total,
                "slots of unread response bodies given back"
            );
        }
        total
    }

    fn give_back(&self, partition: Option<usize>, count: u64, semaphore: &Semaphore) -> usize {
        let count = count as usize;
        if count > 0 {
            self.released.increment(count as u64);
            semaphore.release_many(partition, count);
        }
        count
    }
}

/// How many slices `slice` lies before `now`.
fn age(now: u64, slice: u64) -> u64 {
    (now + SLICES - slice) % SLICES
}
