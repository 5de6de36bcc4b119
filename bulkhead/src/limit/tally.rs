//! What finished calls add to an adaptive limit between two windows, without a lock.
//!
//! Every call that finishes is a sample: it adds to the window's sums and to the recent
//! successes, and gives back a call of credit. Behind the algorithm's lock that was a lock per
//! call, and a success that found the lock taken went unsampled. Here each figure is an atomic
//! word that a finished call changes on its own, and the lock is taken only when a window ends
//! (by one of the calls that see it end), after a raise, or on the cold paths that read the
//! figures (a call that finds the limit full, a reload, a handle).
//!
//! Taken in order, the samples leave every figure as the locked code did, so the algorithm's
//! decisions stay the same for the same sequence of samples. Samples that finish at once may
//! land on either side of a window's close, each figure on its own side: a call is counted by
//! one window, never by none, but its latency may go with the next. Recent successes are
//! counted in blocks of 16, each with its fastest and slowest; a reader sees a block without a
//! success whose call has taken its place in the block but not yet written its latency.

use std::time::Duration;

use seawall_core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use seawall_core::time::nanos;
use tokio::time::Instant;

use super::{RAISE_BURST, RECENT_SUCCESSES, Recent, Window};

const RELAXED: Ordering = Ordering::Relaxed;

/// Blocks of recent successes kept: the current one, the previous one, and room for calls of
/// older blocks still writing.
const BLOCKS: usize = 4;
/// Bits of a block's word holding a latency, in nanoseconds (4.9 hours; a longer success
/// counts as that long); the rest holds the block's number.
const LATENCY_BITS: u32 = 44;
const LATENCY: u64 = (1 << LATENCY_BITS) - 1;
const TAG: u64 = u64::MAX >> LATENCY_BITS;
/// What `Option<Duration>` and `Option<Instant>` keep for `None`.
const NO_LATENCY: u64 = u64::MAX;
const NO_TIME: u64 = 0;

/// [`MIN_RTT`](super::MIN_RTT) in nanoseconds.
const MIN_RTT: u64 = super::MIN_RTT.as_nanos() as u64;

const DROPPED: u32 = 1;
const OVERLOAD: u32 = 2;

/// The lock-free half of [`Windowed`](super::Windowed): the open window's sums and the recent
/// successes. Times are nanoseconds after `epoch` (plus one, so that zero is none).
#[derive(Debug)]
pub(crate) struct Tally {
    epoch: Instant,
    finished: AtomicU64,
    count: AtomicU32,
    sum: AtomicU64,
    /// The sum of squared latencies, in seconds², as `f64` bits.
    sum_squares: AtomicU64,
    max_in_flight: AtomicUsize,
    flags: AtomicU32,
    successes: AtomicU64,
    /// The fastest and slowest success of each block, with the block's number above them.
    fastest_of: [AtomicU64; BLOCKS],
    slowest_of: [AtomicU64; BLOCKS],
    latest: AtomicU64,
    answered: AtomicU64,
    fastest: AtomicU64,
    credit: AtomicU32,
    raised: AtomicBool,
    next_update: AtomicU64,
}

impl Tally {
    pub(super) fn new() -> Self {
        let tally = Self {
            epoch: Instant::now(),
            finished: AtomicU64::new(0),
            count: AtomicU32::new(0),
            sum: AtomicU64::new(0),
            sum_squares: AtomicU64::new(0),
            max_in_flight: AtomicUsize::new(0),
            flags: AtomicU32::new(0),
            successes: AtomicU64::new(0),
            fastest_of: std::array::from_fn(|_| AtomicU64::new(0)),
            slowest_of: std::array::from_fn(|_| AtomicU64::new(0)),
            latest: AtomicU64::new(NO_TIME),
            answered: AtomicU64::new(NO_TIME),
            fastest: AtomicU64::new(NO_LATENCY),
            credit: AtomicU32::new(0),
            raised: AtomicBool::new(false),
            next_update: AtomicU64::new(NO_TIME),
        };
        tally.reset();
        tally
    }

    /// Forgets everything but the epoch, as a new tally would.
    pub(super) fn reset(&self) {
        self.take_window();
        self.successes.store(0, RELAXED);
        for (block, (fastest, slowest)) in self.fastest_of.iter().zip(&self.slowest_of).enumerate()
        {
            // Each slot starts as the block a ring before its first, which any call replaces.
            let stale = tag(block as u64).wrapping_sub(BLOCKS as u64) & TAG;
            fastest.store(stale << LATENCY_BITS, RELAXED);
            slowest.store(stale << LATENCY_BITS, RELAXED);
        }
        self.latest.store(NO_TIME, RELAXED);
        self.answered.store(NO_TIME, RELAXED);
        self.fastest.store(NO_LATENCY, RELAXED);
        self.credit.store(0, RELAXED);
        self.raised.store(false, RELAXED);
        self.next_update.store(NO_TIME, RELAXED);
    }

    /// `at` as this tally keeps it: nanoseconds after the epoch, plus one.
    #[inline]
    pub(crate) fn time(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.epoch)).saturating_add(1)
    }

    fn instant(&self, time: u64) -> Option<Instant> {
        (time != NO_TIME).then(|| self.epoch + Duration::from_nanos(time - 1))
    }

    /// Adds a call that finished at `now` (see [`time`](Self::time)) after `rtt` nanoseconds,
    /// started with `in_flight` calls in flight; `dropped` and `overload` as for the window.
    #[inline]
    pub(crate) fn record(
        &self,
        now: u64,
        rtt: u64,
        in_flight: usize,
        dropped: bool,
        overload: bool,
    ) {
        self.answered.fetch_max(now, RELAXED);
        let sampled = rtt >= MIN_RTT;
        if !dropped && sampled {
            self.succeeded(now, rtt);
        }
        let credit = self.credit.load(RELAXED);
        if credit < RAISE_BURST {
            // A call finishing at the same moment may take the same credit: one is lost.
            let _ = self
                .credit
                .compare_exchange(credit, credit + 1, RELAXED, RELAXED);
        }
        self.finished.fetch_add(1, RELAXED);
        if sampled {
            let seconds = Duration::from_nanos(rtt).as_secs_f64();
            self.sum.fetch_add(rtt, RELAXED);
            let _ = self.sum_squares.fetch_update(RELAXED, RELAXED, |bits| {
                Some((f64::from_bits(bits) + seconds * seconds).to_bits())
            });
            self.count.fetch_add(1, RELAXED);
            if self.max_in_flight.load(RELAXED) < in_flight {
                self.max_in_flight.fetch_max(in_flight, RELAXED);
            }
            let flags = (u32::from(dropped) * DROPPED) | (u32::from(overload) * OVERLOAD);
            if flags != 0 {
                self.flags.fetch_or(flags, RELAXED);
            }
        }
    }

    /// Adds a success that finished at `now` after `rtt` nanoseconds to the recent ones.
    pub(super) fn succeeded(&self, now: u64, rtt: u64) {
        if rtt < self.fastest.load(RELAXED) {
            self.fastest.fetch_min(rtt, RELAXED);
        }
        let block = self.successes.fetch_add(1, RELAXED) / u64::from(RECENT_SUCCESSES);
        let slot = block as usize % BLOCKS;
        let word = (tag(block) << LATENCY_BITS) | rtt.min(LATENCY);
        keep(&self.fastest_of[slot], word, |held| word < held);
        keep(&self.slowest_of[slot], word, |held| word > held);
        self.latest.fetch_max(now, RELAXED);
    }

    /// Whether a call finished at `now` leaves work for the lock: a raise to take back, or a
    /// window that ended.
    #[inline]
    pub(crate) fn settled(&self, now: u64) -> bool {
        !self.raised.load(RELAXED) && !self.window_ends(now)
    }

    /// Whether the open window ends with a call finished at `now`.
    pub(super) fn window_ends(&self, now: u64) -> bool {
        let next = self.next_update.load(RELAXED);
        next == NO_TIME || now > next
    }

    /// When the open window ends: a call finished after it closes it.
    pub(super) fn end_window_at(&self, at: Instant) {
        self.next_update.store(self.time(at), RELAXED);
    }

    /// The open window's sums, leaving it empty.
    pub(super) fn take_window(&self) -> Window {
        let flags = self.flags.swap(0, RELAXED);
        Window {
            finished: self.finished.swap(0, RELAXED),
            max_in_flight: self.max_in_flight.swap(0, RELAXED),
            dropped: flags & DROPPED != 0,
            overload: flags & OVERLOAD != 0,
            ..self.take_latencies()
        }
    }

    /// Empties the open window's latencies alone; the calls it counted stay.
    pub(super) fn take_latencies(&self) -> Window {
        Window {
            sum: Duration::from_nanos(self.sum.swap(0, RELAXED)),
            sum_squares: f64::from_bits(self.sum_squares.swap(0, RELAXED)),
            count: self.count.swap(0, RELAXED),
            ..Window::default()
        }
    }

    /// Latencies the open window has summed.
    pub(super) fn samples(&self) -> u32 {
        self.count.load(RELAXED)
    }

    /// The most calls in flight when a call the open window has summed was admitted.
    pub(super) fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(RELAXED)
    }

    /// The recent successes as they stand.
    pub(super) fn recent(&self) -> Recent {
        let successes = self.successes.load(RELAXED);
        let per_block = u64::from(RECENT_SUCCESSES);
        let current = successes / per_block;
        let started = !successes.is_multiple_of(per_block);
        let previous = current.checked_sub(1);
        let read = |of: &[AtomicU64; BLOCKS], block: u64| {
            let word = of[block as usize % BLOCKS].load(RELAXED);
            (word >> LATENCY_BITS == tag(block)).then(|| Duration::from_nanos(word & LATENCY))
        };
        Recent {
            current: started.then(|| read(&self.fastest_of, current)).flatten(),
            current_max: started
                .then(|| read(&self.slowest_of, current))
                .flatten()
                .unwrap_or_default(),
            previous: previous.and_then(|b| read(&self.fastest_of, b)),
            previous_max: previous
                .and_then(|b| read(&self.slowest_of, b))
                .unwrap_or_default(),
            latest: self.instant(self.latest.load(RELAXED)),
            answered: self.instant(self.answered.load(RELAXED)),
        }
    }

    /// The fastest success seen since [`set_fastest`](Self::set_fastest).
    pub(super) fn fastest(&self) -> Option<Duration> {
        let fastest = self.fastest.load(RELAXED);
        (fastest != NO_LATENCY).then(|| Duration::from_nanos(fastest))
    }

    pub(super) fn set_fastest(&self, fastest: Option<Duration>) {
        self.fastest
            .store(fastest.map_or(NO_LATENCY, nanos), RELAXED);
    }

    /// Takes one call of credit to let in over the limit, if there is one.
    pub(super) fn take_credit(&self) -> bool {
        self.credit
            .fetch_update(RELAXED, RELAXED, |c| c.checked_sub(1))
            .is_ok()
    }

    /// Marks the limit raised for one call; the next call that finishes takes it back.
    pub(super) fn raise(&self) {
        self.raised.store(true, RELAXED);
    }

    /// Whether the limit was raised, taking the raise back.
    pub(super) fn take_raised(&self) -> bool {
        self.raised.swap(false, RELAXED)
    }

    /// Counts `n` more finished calls that were no sample (a test's window of many calls).
    #[cfg(test)]
    pub(super) fn add_finished(&self, n: u64) {
        self.finished.fetch_add(n, RELAXED);
    }
}

/// A block's number as its words keep it.
fn tag(block: u64) -> u64 {
    block & TAG
}

/// Writes `word` into `slot` while `better` than what it holds for the same block, or when
/// the slot holds an older block; a word of a block the slot has moved past is dropped.
fn keep(slot: &AtomicU64, word: u64, better: impl Fn(u64) -> bool) {
    let mut held = slot.load(RELAXED);
    loop {
        let behind = tag((word >> LATENCY_BITS).wrapping_sub(held >> LATENCY_BITS));
        let write = match behind {
            0 => better(held),
            // The slot's block is a ring or more older: this block takes the slot.
            d => d <= TAG / 2,
        };
        if !write {
            return;
        }
        match slot.compare_exchange_weak(held, word, RELAXED, RELAXED) {
            Ok(_) => return,
            Err(actual) => held = actual,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// Threads finishing calls at once while another closes windows: every call lands in one
    /// window, and every latency with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn calls_finishing_at_once_lose_no_sample_to_a_window_that_closes() {
        const THREADS: u64 = 4;
        const CALLS: u64 = 20_000;
        let tally = Arc::new(Tally::new());
        let done = Arc::new(AtomicBool::new(false));
        let closer = {
            let (tally, done) = (tally.clone(), done.clone());
            tokio::task::spawn_blocking(move || {
                let mut windows = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    windows.push(tally.take_window());
                    std::thread::yield_now();
                }
                windows
            })
        };
        let callers: Vec<_> = (0..THREADS)
            .map(|t| {
                let tally = tally.clone();
                tokio::spawn(async move {
                    for i in 0..CALLS {
                        // Latencies of 1–8 ms, every fourth call a drop.
                        let rtt = 1_000_000 * (1 + (t + i) % 8);
                        tally.record(1 + i, rtt, (i % 50) as usize, i % 4 == 0, false);
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        done.store(true, Ordering::SeqCst);
        let mut windows = closer.await.unwrap();
        windows.push(tally.take_window());
        let calls = THREADS * CALLS;
        let rtts =
            (0..THREADS).flat_map(|t| (0..CALLS).map(move |i| 1_000_000 * (1 + (t + i) % 8)));
        let finished: u64 = windows.iter().map(|w| w.finished).sum();
        let count: u64 = windows.iter().map(|w| u64::from(w.count)).sum();
        let sum: Duration = windows.iter().map(|w| w.sum).sum();
        let squares: f64 = windows.iter().map(|w| w.sum_squares).sum();
        let expected: f64 = rtts.clone().map(|r| (r as f64 / 1e9).powi(2)).sum();
        assert_eq!(finished, calls, "calls finished");
        assert_eq!(count, calls, "latencies summed");
        assert_eq!(sum, Duration::from_nanos(rtts.sum()));
        assert!(
            (squares - expected).abs() < 1e-9 * expected,
            "{squares} against {expected}"
        );
        assert!(windows.iter().any(|w| w.dropped));
        assert_eq!(windows.iter().map(|w| w.max_in_flight).max(), Some(49));
        assert_eq!(
            tally.successes.load(Ordering::SeqCst),
            calls * 3 / 4,
            "recent successes"
        );
        assert!(tally.credit.load(Ordering::SeqCst) <= RAISE_BURST);
    }

    #[test]
    fn recent_successes_are_read_as_blocks_of_sixteen() {
        let tally = Tally::new();
        let ms = |n: u64| n * 1_000_000;
        assert_eq!(tally.recent().min(), None);
        for i in 0..16 {
            tally.succeeded(1 + i, ms(20 + i));
        }
        let recent = tally.recent();
        assert_eq!(
            (recent.current, recent.previous),
            (None, Some(Duration::from_millis(20)))
        );
        assert_eq!(recent.slowest(), Some(Duration::from_millis(35)));
        tally.succeeded(17, ms(50));
        tally.succeeded(18, ms(9));
        let recent = tally.recent();
        assert_eq!(recent.current, Some(Duration::from_millis(9)));
        assert_eq!(recent.slowest(), Some(Duration::from_millis(50)));
        assert_eq!(recent.latest, tally.instant(18));
        assert_eq!(tally.fastest(), Some(Duration::from_millis(9)));
        // Four blocks later the slots are reused, and the old blocks' latencies are gone.
        for i in 0..62 {
            tally.succeeded(19 + i, ms(30));
        }
        let recent = tally.recent();
        assert_eq!(
            (recent.current, recent.previous),
            (None, Some(Duration::from_millis(30)))
        );
        assert_eq!(recent.slowest(), Some(Duration::from_millis(30)));
    }
}
