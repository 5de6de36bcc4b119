//! A lock-free estimate of recent call latency and its percentiles.
//!
//! Layers that act on "slow for this downstream" rather than on a fixed number — a hedge sent
//! after the 95th percentile, an attempt timeout at a multiple of the 99th — need a percentile
//! of the latencies seen lately, read and fed on every call, from every thread, without a lock.
//! [`LatencyEstimate`] is one, shared by all of them.
//!
//! **Shape.** A log-linear histogram (as HdrHistogram's, with 16 sub-buckets per power of two)
//! over microseconds, kept in four slices of a rotating time window. Recording a sample is one
//! clock-free bucket computation and one atomic add; the first sample of a new slice clears the
//! slot it reuses. Memory is fixed: 4 × 464 counters of 32 bits, about 7.4 KiB, whatever the
//! rate.
//!
//! **Window.** A sample counts from when it is recorded until its slice is reused: the estimate
//! covers the current slice and the three before it, that is between the last ¾ of `window`
//! (just after a slice turned) and the whole `window`.
//!
//! **Accuracy.** A quantile is the midpoint of the bucket that holds the sample of rank
//! ⌈q·n⌉ among the n samples in the window, so it is within 1/32 (3.125 %) of that sample, or
//! within 0.5 µs below 16 µs. Latencies above 2³² µs (about 71 minutes) count as 2³² µs. A
//! sample recorded by a thread whose clock read fell in the slice just turned may be dropped or
//! counted in the next slice; nothing else is lost under any concurrency.
//!
//! **Reading.** [`quantile`](LatencyEstimate::quantile) sums the live slices (about 1,900
//! relaxed loads, a few microseconds): fine once in a while, too much for every call. A
//! [`CachedQuantile`] reads it at most once per refresh period and otherwise answers with
//! one atomic load.
//!
//! Why not a crate: `hdrhistogram` records through `&mut self` (its concurrent form funnels
//! samples through channels and allocates), `sketches-ddsketch` and `quantiles` do too, and
//! `metrics-util`'s lock-free `AtomicBucket` keeps every sample in growing blocks. None records
//! from many threads into fixed memory without a lock, which is the whole job here.
//!
//! ```
//! use std::time::Duration;
//! use seawall_core::latency::{CachedQuantile, LatencyEstimate};
//! use tokio::time::Instant;
//!
//! # fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let estimate = LatencyEstimate::new(Duration::from_secs(10))?;
//! let now = Instant::now();
//! for ms in 1..=100 {
//!     estimate.record_at(Duration::from_millis(ms), now);
//! }
//! let p95 = estimate.quantile_at(0.95, now).unwrap();
//! assert!(p95.abs_diff(Duration::from_millis(95)) <= Duration::from_millis(95) / 32);
//!
//! // At most one scan per 100 ms; at least 50 samples before it answers.
//! let cached = CachedQuantile::new(0.95, 50, Duration::from_millis(100));
//! assert_eq!(cached.get(&estimate, now), Some(p95));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{self, ConfigError};

/// Slices of the window; the oldest is reused as time goes on.
const SLICES: usize = 4;
/// Sub-buckets per power of two: the buckets' relative width is at most 1/16.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// The largest latency told apart, in microseconds.
const MAX_MICROS: u64 = u32::MAX as u64;
/// Buckets from 0 to `MAX_MICROS`: 16 of width 1, then 16 per power of two from 2⁴ to 2³¹.
const BUCKETS: usize = ((63 - MAX_MICROS.leading_zeros() - SUB_BITS + 2) as usize) * SUB as usize;
/// A slice being cleared for the turn in the other bits.
const RESETTING: u64 = 1 << 63;
/// No quantile cached.
const NONE: u64 = u64::MAX;

/// The bucket of a latency of `micros` microseconds.
fn bucket_of(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < SUB {
        return v as usize;
    }
    let exponent = 63 - v.leading_zeros();
    let sub = (v >> (exponent - SUB_BITS)) & (SUB - 1);
    (exponent - SUB_BITS + 1) as usize * SUB as usize + sub as usize
}

/// The lowest value of bucket `index` and its width, in microseconds.
fn bounds(index: usize) -> (u64, u64) {
    let (group, sub) = (index as u64 / SUB, index as u64 % SUB);
    if group == 0 {
        return (sub, 1);
    }
    let width = 1 << (group - 1);
    (
        (1 << (group + u64::from(SUB_BITS) - 1)) + sub * width,
        width,
    )
}

/// The midpoint of bucket `index`.
fn midpoint(index: usize) -> Duration {
    let (lower, width) = bounds(index);
    Duration::from_nanos(lower * 1000 + width * 500)
}

/// One slice of the window: counts per bucket, tagged with the turn they belong to.
struct Slice {
    /// The turn (1-based; 0 before the first) whose samples the counts hold, or `RESETTING`
    /// with the turn they are being cleared for.
    turn: AtomicU64,
    counts: [AtomicU32; BUCKETS],
}

impl Slice {
    fn new() -> Self {
        Self {
            turn: AtomicU64::new(0),
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// Recent call latencies, recorded and read from any thread without a lock; see the
/// [module docs](self) for the window and the accuracy.
pub struct LatencyEstimate {
    origin: Instant,
    window: Duration,
    slice_nanos: u64,
    slices: Box<[Slice; SLICES]>,
}

impl LatencyEstimate {
    /// The windows an estimate accepts: 10 ms to 1 hour.
    pub const WINDOWS: RangeInclusive<Duration> =
        Duration::from_millis(10)..=Duration::from_secs(3600);

    /// An empty estimate over the last `window`, in [`WINDOWS`](Self::WINDOWS).
    pub fn new(window: Duration) -> Result<Self, ConfigError> {
        let window = config::duration_in("window", window, Self::WINDOWS)?;
        Ok(Self {
            origin: Instant::now(),
            window,
            slice_nanos: (window.as_nanos() / SLICES as u128) as u64,
            slices: Box::new(std::array::from_fn(|_| Slice::new())),
        })
    }

    /// The window the estimate covers.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records a call that took `latency`, now.
    pub fn record(&self, latency: Duration) {
        self.record_at(latency, Instant::now());
    }

    /// Records a call that took `latency`, as of `now`.
    pub fn record_at(&self, latency: Duration, now: Instant) {
        self.record_many_at(latency, 1, now);
    }

    /// Records `calls` calls that each took `latency`, as of `now`: a caller that counts calls
    /// of no measurable latency (answered at once) on its own hands them over in one go.
    pub fn record_many_at(&self, latency: Duration, calls: u32, now: Instant) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let turn = self.turn(now);
        let slice = &self.slices[(turn % SLICES as u64) as usize];
        let mut current = slice.turn.load(Ordering::Acquire);
        while current != turn {
            if current & RESETTING != 0 && current & !RESETTING <= turn {
                // Being cleared for this turn (or, by a thread whose clock lags, an earlier
                // one): a few hundred stores. Dropping the sample instead lost about one in
                // 10⁵ under contention (`concurrent_records_are_all_counted…`).
                std::hint::spin_loop();
                current = slice.turn.load(Ordering::Acquire);
                continue;
            }
            if current > turn {
                // Holding or being cleared for a later turn (read by a thread whose clock ran
                // ahead): this sample belongs to a slice that is gone.
                return;
            }
            match slice.turn.compare_exchange(
                current,
                RESETTING | turn,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    for count in &slice.counts {
                        count.store(0, Ordering::Relaxed);
                    }
                    slice.turn.store(turn, Ordering::Release);
                    break;
                }
                Err(actual) => current = actual,
            }
        }
        slice.counts[bucket_of(micros)].fetch_add(calls, Ordering::Relaxed);
    }

    /// The `q` quantile (`q` in `[0, 1]`, 0.99 for p99) of the latencies in the window now;
    /// `None` when there are none.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.quantile_at(q, Instant::now())
    }

    /// The `q` quantile of the latencies in the window as of `now`; `None` when there are
    /// none.
    pub fn quantile_at(&self, q: f64, now: Instant) -> Option<Duration> {
        self.quantile_of_at_least(q, 1, now)
    }

    /// How many latencies the window holds as of `now`.
    pub fn count_at(&self, now: Instant) -> u64 {
        self.sum(now).1
    }

    /// The `q` quantile, when the window holds at least `min_samples` (at least one).
    fn quantile_of_at_least(&self, q: f64, min_samples: u64, now: Instant) -> Option<Duration> {
        let (counts, total) = self.sum(now);
        if total == 0 || total < min_samples {
            return None;
        }
        // The sample of rank ⌈q·n⌉ (1-based), as a sorted list of the samples would give it.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(midpoint(index));
            }
        }
        unreachable!("the counts add up to the total")
    }

    /// The counts per bucket of the live slices, and their total.
    fn sum(&self, now: Instant) -> ([u64; BUCKETS], u64) {
        let turn = self.turn(now);
        let mut counts = [0u64; BUCKETS];
        let mut total = 0;
        for slice in self.slices.iter() {
            let tagged = slice.turn.load(Ordering::Acquire);
            if tagged == 0
                || tagged & RESETTING != 0
                || tagged > turn
                || tagged + (SLICES as u64) <= turn
            {
                continue;
            }
            for (sum, count) in counts.iter_mut().zip(&slice.counts) {
                let count = u64::from(count.load(Ordering::Relaxed));
                *sum += count;
                total += count;
            }
        }
        (counts, total)
    }

    /// The turn of the slice that `now` falls in, from 1.
    fn turn(&self, now: Instant) -> u64 {
        self.nanos(now) / self.slice_nanos + 1
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl fmt::Debug for LatencyEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyEstimate")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// One quantile of a [`LatencyEstimate`], recomputed at most once per refresh period and
/// otherwise read with one atomic load: cheap enough for every call.
///
/// The first caller past the period recomputes it; the others answer with the value before.
/// Use it with one estimate only.
pub struct CachedQuantile {
    q: f64,
    min_samples: u64,
    refresh_nanos: u64,
    /// The quantile in nanoseconds, or `NONE`.
    value: AtomicU64,
    /// When the next refresh is due, in nanoseconds from the estimate's origin.
    next: AtomicU64,
}

impl CachedQuantile {
    /// The `q` quantile (clamped to `[0, 1]`), answered once the window holds at least
    /// `min_samples` latencies, recomputed at most once per `refresh`.
    pub fn new(q: f64, min_samples: u64, refresh: Duration) -> Self {
        Self {
            q: q.clamp(0.0, 1.0),
            min_samples: min_samples.max(1),
            refresh_nanos: u64::try_from(refresh.as_nanos()).unwrap_or(u64::MAX),
            value: AtomicU64::new(NONE),
            next: AtomicU64::new(0),
        }
    }

    /// The quantile of `estimate` as of its last refresh, refreshing it first if that is due
    /// at `now`; `None` while the window holds fewer than `min_samples`.
    pub fn get(&self, estimate: &LatencyEstimate, now: Instant) -> Option<Duration> {
        let at = estimate.nanos(now);
        let next = self.next.load(Ordering::Relaxed);
        if at >= next
            && self
                .next
                .compare_exchange(
                    next,
                    at.saturating_add(self.refresh_nanos),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let quantile = estimate.quantile_of_at_least(self.q, self.min_samples, now);
            let nanos = quantile.map_or(NONE, |d| d.as_nanos() as u64);
            self.value.store(nanos, Ordering::Relaxed);
        }
        match self.value.load(Ordering::Relaxed) {
            NONE => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// The quantile this reads.
    pub fn q(&self) -> f64 {
        self.q
    }
}

impl fmt::Debug for CachedQuantile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedQuantile")
            .field("q", &self.q)
            .field("min_samples", &self.min_samples)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The sample of rank ⌈q·n⌉ of `samples`.
    fn reference(samples: &mut [Duration], q: f64) -> Duration {
        samples.sort();
        let n = samples.len() as f64;
        let rank = ((q * n).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    }

    /// The documented bound: 1/32 of the value, or half a microsecond.
    fn within_bound(estimate: Duration, truth: Duration) -> bool {
        let bound = (truth / 32).max(Duration::from_nanos(500));
        estimate.abs_diff(truth) <= bound
    }

    #[test]
    fn buckets_cover_the_range_in_order() {
        assert_eq!(BUCKETS, 464);
        let mut last = 0;
        for v in (0..100_000).chain([MAX_MICROS - 1, MAX_MICROS, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v}");
            assert!(b >= last, "{v}");
            last = b;
            let (lower, width) = bounds(b);
            let v = v.min(MAX_MICROS);
            assert!(
                lower <= v && v < lower + width,
                "{v} in bucket {b} = [{lower}, +{width})"
            );
            assert!(
                b < SUB as usize || width * SUB <= lower,
                "{v}: width {width} of {lower}"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn an_empty_estimate_has_no_quantile() {
        let estimate = LatencyEstimate::new(Duration::from_secs(1)).unwrap();
        assert_eq!(estimate.quantile(0.5), None);
        assert_eq!(estimate.count_at(Instant::now()), 0);
    }

    #[test]
    fn windows_outside_the_range_are_refused() {
        let err = LatencyEstimate::new(Duration::from_millis(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid `window`: 1ms is outside the allowed range [10ms, 3600s]"
        );
    }

    #[test]
    fn samples_leave_the_window_when_their_slice_is_reused() {
        let estimate = LatencyEstimate::new(Duration::from_secs(4)).unwrap();
        let t0 = estimate.origin;
        estimate.record_at(ms(100), t0);
        estimate.record_at(ms(200), t0 + ms(1500));
        assert_eq!(estimate.count_at(t0 + ms(3999)), 2);
        // The first slice (0–1 s) is out of the window once the fifth (4–5 s) begins.
        assert_eq!(estimate.count_at(t0 + ms(4000)), 1);
        assert_eq!(
            estimate.quantile_at(0.0, t0 + ms(4000)),
            Some(midpoint(bucket_of(200_000)))
        );
        // A sample in the fifth slice reuses the first one's slot.
        estimate.record_at(ms(300), t0 + ms(4100));
        assert_eq!(estimate.count_at(t0 + ms(4100)), 2);
        assert_eq!(estimate.count_at(t0 + ms(5000)), 1);
        assert_eq!(estimate.count_at(t0 + ms(9000)), 0);
    }

    #[test]
    fn many_calls_count_as_many_samples() {
        let estimate = LatencyEstimate::new(Duration::from_secs(4)).unwrap();
        let t0 = estimate.origin;
        estimate.record_many_at(Duration::ZERO, 9, t0);
        estimate.record_at(ms(10), t0);
        assert_eq!(estimate.count_at(t0), 10);
        assert_eq!(
            estimate.quantile_at(0.9, t0),
            Some(Duration::from_nanos(500))
        );
        assert!(within_bound(
            estimate.quantile_at(0.91, t0).unwrap(),
            ms(10)
        ));
    }

    #[test]
    fn a_late_sample_for_a_reused_slice_is_dropped() {
        let estimate = LatencyEstimate::new(Duration::from_secs(4)).unwrap();
        let t0 = estimate.origin;
        estimate.record_at(ms(10), t0 + ms(4100));
        // A thread whose clock read 0.1 s before the slot turned over.
        estimate.record_at(ms(10), t0 + ms(100));
        assert_eq!(estimate.count_at(t0 + ms(4100)), 1);
    }

    #[test]
    fn the_cache_refreshes_once_per_period() {
        let estimate = LatencyEstimate::new(Duration::from_secs(10)).unwrap();
        let t0 = estimate.origin;
        let cached = CachedQuantile::new(0.5, 3, ms(100));
        estimate.record_at(ms(10), t0);
        estimate.record_at(ms(10), t0);
        assert_eq!(cached.get(&estimate, t0), None, "fewer than min_samples");
        estimate.record_at(ms(10), t0);
        assert_eq!(
            cached.get(&estimate, t0 + ms(99)),
            None,
            "not refreshed yet"
        );
        let p50 = cached.get(&estimate, t0 + ms(100)).unwrap();
        assert!(within_bound(p50, ms(10)), "{p50:?}");
        for _ in 0..10 {
            estimate.record_at(ms(50), t0 + ms(150));
        }
        assert_eq!(cached.get(&estimate, t0 + ms(150)), Some(p50));
        let later = cached.get(&estimate, t0 + ms(200)).unwrap();
        assert!(within_bound(later, ms(50)), "{later:?}");
    }

    proptest! {
        #[test]
        fn quantiles_are_within_the_documented_error_of_sorted_samples(
            micros in prop::collection::vec(
                prop_oneof![0u64..100, 0u64..100_000, 0u64..100_000_000],
                1..400,
            ),
            q in 0.0f64..=1.0,
        ) {
            let estimate = LatencyEstimate::new(Duration::from_secs(60)).unwrap();
            let now = estimate.origin;
            let mut samples: Vec<Duration> = micros
                .iter()
                .map(|&us| Duration::from_nanos(us * 1000 + us % 1000))
                .collect();
            for &sample in &samples {
                estimate.record_at(sample, now);
            }
            let truth = reference(&mut samples, q);
            let estimated = estimate.quantile_at(q, now).unwrap();
            prop_assert!(within_bound(estimated, truth), "q {q}: {estimated:?} for {truth:?}");
            prop_assert_eq!(estimate.count_at(now), samples.len() as u64);
        }

        #[test]
        fn the_window_holds_the_samples_of_the_last_four_slices(
            events in prop::collection::vec((0u64..20_000, 1u64..1_000_000), 1..300),
            q in 0.0f64..=1.0,
        ) {
            // Samples at increasing times (ms) over 20 s, window 4 s (slices of 1 s).
            let mut events = events;
            events.sort();
            let estimate = LatencyEstimate::new(Duration::from_secs(4)).unwrap();
            let t0 = estimate.origin;
            for &(at, us) in &events {
                estimate.record_at(Duration::from_micros(us), t0 + ms(at));
            }
            let now_ms = events.last().unwrap().0;
            let slice = now_ms / 1000;
            let mut live: Vec<Duration> = events
                .iter()
                .filter(|(at, _)| at / 1000 + 4 > slice)
                .map(|&(_, us)| Duration::from_micros(us))
                .collect();
            let now = t0 + ms(now_ms);
            prop_assert_eq!(estimate.count_at(now), live.len() as u64);
            let truth = reference(&mut live, q);
            let estimated = estimate.quantile_at(q, now).unwrap();
            prop_assert!(within_bound(estimated, truth), "q {q}: {estimated:?} for {truth:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_records_are_all_counted_and_reads_stay_in_range() {
        const TASKS: u64 = 8;
        const PER_TASK: u64 = 20_000;
        // 1 ms to 100 ms, every task the same spread.
        let sample = |task: u64, i: u64| Duration::from_micros(1_000 + (i * 7919 + task) % 99_000);
        let estimate = std::sync::Arc::new(LatencyEstimate::new(Duration::from_secs(60)).unwrap());
        let now = estimate.origin;
        let writers: Vec<_> = (0..TASKS)
            .map(|task| {
                let estimate = estimate.clone();
                tokio::spawn(async move {
                    for i in 0..PER_TASK {
                        estimate.record_at(sample(task, i), now);
                        if i % 1000 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let reader = {
            let estimate = estimate.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    if let Some(p99) = estimate.quantile_at(0.99, now) {
                        assert!(
                            p99 >= ms(1) - ms(1) / 32 && p99 <= ms(100) + ms(100) / 32,
                            "{p99:?}"
                        );
                    }
                    assert!(estimate.count_at(now) <= TASKS * PER_TASK);
                    tokio::task::yield_now().await;
                }
            })
        };
        for writer in writers {
            writer.await.unwrap();
        }
        reader.await.unwrap();
        assert_eq!(estimate.count_at(now), TASKS * PER_TASK);
        let mut all: Vec<Duration> = (0..TASKS)
            .flat_map(|task| (0..PER_TASK).map(move |i| sample(task, i)))
            .collect();
        for q in [0.5, 0.95, 0.99] {
            let truth = reference(&mut all, q);
            let estimated = estimate.quantile_at(q, now).unwrap();
            assert!(
                within_bound(estimated, truth),
                "q {q}: {estimated:?} for {truth:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_records_across_turning_slices_never_overcount() {
        const TASKS: u64 = 6;
        let estimate =
            std::sync::Arc::new(LatencyEstimate::new(Duration::from_millis(40)).unwrap());
        let t0 = estimate.origin;
        let writers: Vec<_> = (0..TASKS)
            .map(|task| {
                let estimate = estimate.clone();
                tokio::spawn(async move {
                    // Each task walks through 200 slices of 10 ms at its own pace.
                    for i in 0..20_000u64 {
                        let at = t0 + Duration::from_micros(i * 100 + task * 37);
                        estimate.record_at(ms(5), at);
                        let count = estimate.count_at(at);
                        // At most every sample of every task in four slices (100 per slice each).
                        assert!(count <= TASKS * 400, "{count}");
                        if let Some(q) = estimate.quantile_at(0.9, at) {
                            assert!(within_bound(q, ms(5)), "{q:?}");
                        }
                        if i % 500 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    }
}
