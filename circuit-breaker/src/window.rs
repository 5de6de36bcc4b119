//! The sliding windows the failure and slow-call rates are computed over.
//!
//! Both are lock-free on the path every call takes, with memory fixed when the breaker is
//! built, and keep running totals so reading a rate costs three loads, never a scan:
//!
//! - [`CountWindow`]: a ring of `n` one-byte outcome slots. A call takes the next slot with a
//!   `fetch_add` on a cursor and `swap`s its outcome in; the outcome it pushes out is taken off
//!   the totals and its own is added. So the window always holds exactly the last `n` calls
//!   (it slides; it is never only cleared on a state change).
//! - [`TimeWindow`]: one bucket per second for the last `n` seconds. A call adds itself to the
//!   bucket of its second and to the totals. When the clock enters a new second, the buckets
//!   of the seconds that fell out of the window are emptied (and taken off the totals) once,
//!   by whichever call first sees the new second: O(1) per call, amortised over seconds, not
//!   a rescan of every recorded call. A success can only lower the rates, so while the last
//!   decision in the current second found every rate below its threshold (the window is
//!   *calm*), a success that is not slow asks for no new decision: a failure, a slow call or
//!   a new second (whose expired buckets may raise a rate) does.
//!
//! Totals are adjusted by the same amounts as the slots and buckets, so they always converge to
//! the sum of what the window holds; while calls race, a figure may briefly read one call off,
//! never more, and readers clamp it to the window's bounds.

use seawall_core::sync::Mutex;
use seawall_core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Keeps a hot atomic on a cache line of its own, so that writes to one (the window's cursor,
/// say) do not slow down every core's reads of another (the breaker's state word).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// What one call adds to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

impl Sample {
    const EMPTY: u8 = 0;
    const PLAIN: Self = Self {
        failure: false,
        slow: false,
    };

    fn encode(self) -> u8 {
        1 | (u8::from(self.failure) << 1) | (u8::from(self.slow) << 2)
    }
}

/// The calls, failures and slow calls a window holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Calls in the window (ignored outcomes are not in it).
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window, failed or not.
    pub slow: u64,
}

impl WindowCounts {
    /// Failures over calls; 0 for an empty window.
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// Slow calls over calls; 0 for an empty window.
    pub fn slow_call_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Running totals, read as signed so that a decrement that lands before its increment reads as
/// a brief -1 rather than a huge number.
#[derive(Debug, Default)]
struct Totals {
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl Totals {
    /// Adds (or, with `add` false, takes off) the sample encoded as `code`.
    #[inline]
    fn apply(&self, code: u8, add: bool) {
        if code == Sample::EMPTY {
            return;
        }
        let op = |field: &AtomicU64| {
            if add {
                field.fetch_add(1, Ordering::Relaxed);
            } else {
                field.fetch_sub(1, Ordering::Relaxed);
            }
        };
        op(&self.calls);
        if code & 2 != 0 {
            op(&self.failures);
        }
        if code & 4 != 0 {
            op(&self.slow);
        }
    }

    fn add(&self, calls: u64, failures: u64, slow: u64, add: bool) {
        let op = |field: &AtomicU64, n: u64| match (n, add) {
            (0, _) => {}
            (n, true) => {
                field.fetch_add(n, Ordering::Relaxed);
            }
            (n, false) => {
                field.fetch_sub(n, Ordering::Relaxed);
            }
        };
        op(&self.calls, calls);
        op(&self.failures, failures);
        op(&self.slow, slow);
    }

    fn read(&self, max: u64) -> WindowCounts {
        let get =
            |field: &AtomicU64| (field.load(Ordering::Relaxed) as i64).clamp(0, max as i64) as u64;
        let calls = get(&self.calls);
        WindowCounts {
            calls,
            failures: get(&self.failures).min(calls),
            slow: get(&self.slow).min(calls),
        }
    }
}

/// The last `n` calls.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    cursor: Padded<AtomicU64>,
    totals: Padded<Totals>,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(Sample::EMPTY)).collect(),
            cursor: Padded::default(),
            totals: Padded::default(),
        }
    }

    /// Records `sample` over the oldest call; whether the counts changed.
    #[inline]
    pub(crate) fn record(&self, sample: Sample) -> bool {
        let at = self.cursor.fetch_add(1, Ordering::Relaxed) % self.slots.len() as u64;
        let code = sample.encode();
        let old = self.slots[at as usize].swap(code, Ordering::AcqRel);
        if old == code {
            return false;
        }
        self.totals.apply(old, false);
        self.totals.apply(code, true);
        true
    }

    pub(crate) fn counts(&self) -> WindowCounts {
        self.totals.read(self.slots.len() as u64)
    }

    /// Failures among the `n` calls recorded before the latest one (fewer if the window is
    /// smaller or holds fewer).
    pub(crate) fn failures_before_latest(&self, n: usize) -> u64 {
        let len = self.slots.len() as u64;
        // The cursor counts every call ever recorded; the latest took `cursor - 1`.
        let Some(latest) = self.cursor.load(Ordering::Relaxed).checked_sub(1) else {
            return 0;
        };
        (1..=(n as u64).min(len - 1).min(latest))
            .map(|back| self.slots[((latest - back) % len) as usize].load(Ordering::Relaxed))
            .filter(|&code| code & 2 != 0)
            .count() as u64
    }

    pub(crate) fn reset(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(Sample::EMPTY, Ordering::AcqRel);
            self.totals.apply(old, false);
        }
    }
}

#[derive(Debug, Default)]
struct Bucket {
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl Bucket {
    #[inline]
    fn add(&self, sample: Sample) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if sample.failure {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if sample.slow {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn take(&self) -> (u64, u64, u64) {
        (
            self.calls.swap(0, Ordering::Relaxed),
            self.failures.swap(0, Ordering::Relaxed),
            self.slow.swap(0, Ordering::Relaxed),
        )
    }
}

/// The calls of the last `n` seconds, one bucket per second.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    /// The latest second any call or reader has seen; buckets of seconds after
    /// `head - n` are live, the others were emptied when `head` passed them.
    head: Padded<AtomicU64>,
    /// Taken only to move `head` into a new second, at most once a second.
    advance: Mutex<()>,
    totals: Padded<Totals>,
    /// `second + 1` when a decision in `second` found every rate below its threshold; 0 when
    /// none did since the last failure, reset or reload.
    calm: AtomicU64,
}

impl TimeWindow {
    pub(crate) fn new(seconds: u64) -> Self {
        Self {
            buckets: (0..seconds).map(|_| Bucket::default()).collect(),
            head: Padded::default(),
            advance: Mutex::new(()),
            totals: Padded::default(),
            calm: AtomicU64::new(0),
        }
    }

    fn span(&self) -> u64 {
        self.buckets.len() as u64
    }

    /// Records `sample` in second `second` (counted from the breaker's start); whether the
    /// breaker must decide again, which a success that is not slow in a calm second need not.
    #[inline]
    pub(crate) fn record(&self, second: u64, sample: Sample) -> bool {
        let head = self.advance_to(second);
        if second + self.span() <= head {
            // Measured long before a later call moved the window on: no live bucket is its.
            return true;
        }
        self.buckets[(second % self.span()) as usize].add(sample);
        self.totals.apply(sample.encode(), true);
        sample != Sample::PLAIN || self.calm.load(Ordering::Relaxed) != head + 1
    }

    /// Records what the decision made in second `second` found: whether every rate was below
    /// its threshold. A decision that raced a failure's may mark a second calm that is not;
    /// the next failure, slow call or second decides again.
    pub(crate) fn settle(&self, second: u64, calm: bool) {
        self.calm
            .store(if calm { second + 1 } else { 0 }, Ordering::Relaxed);
    }

    /// The counts of the window that ends in second `second`.
    pub(crate) fn counts(&self, second: u64) -> WindowCounts {
        self.advance_to(second);
        self.totals.read(u64::MAX >> 1)
    }

    pub(crate) fn reset(&self) {
        let _guard = self.advance.lock().unwrap_or_else(|e| e.into_inner());
        self.calm.store(0, Ordering::Relaxed);
        for bucket in self.buckets.iter() {
            let (c, f, s) = bucket.take();
            self.totals.add(c, f, s, false);
        }
    }

    /// Moves the window's end to `second` if it is behind, emptying the buckets that fall out.
    #[inline]
    fn advance_to(&self, second: u64) -> u64 {
        let head = self.head.load(Ordering::Acquire);
        if head >= second {
            return head;
        }
        self.advance_slow(second)
    }

    #[cold]
    #[inline(never)]
    fn advance_slow(&self, second: u64) -> u64 {
        let _guard = self.advance.lock().unwrap_or_else(|e| e.into_inner());
        let head = self.head.load(Ordering::Acquire);
        if head >= second {
            return head;
        }
        let first = (head + 1).max((second + 1).saturating_sub(self.span()));
        for s in first..=second {
            let (c, f, slow) = self.buckets[(s % self.span()) as usize].take();
            self.totals.add(c, f, slow, false);
        }
        self.head.store(second, Ordering::Release);
        second
    }
}

/// A count or a time window.
#[derive(Debug)]
pub(crate) enum SlidingWindow {
    Count(CountWindow),
    Time(TimeWindow),
}

impl SlidingWindow {
    /// Whether recording needs the current second.
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Self::Time(_))
    }

    /// Records `sample`; whether the breaker must decide again (not when a count window full
    /// of successes records one more, nor for a success in a calm time window).
    #[inline]
    pub(crate) fn record(&self, second: u64, sample: Sample) -> bool {
        match self {
            Self::Count(w) => w.record(sample),
            Self::Time(w) => w.record(second, sample),
        }
    }

    /// Records whether the decision made in second `second` found every rate below its
    /// threshold (a time window's calm); nothing for a count window.
    pub(crate) fn settle(&self, second: u64, calm: bool) {
        if let Self::Time(w) = self {
            w.settle(second, calm);
        }
    }

    pub(crate) fn counts(&self, second: u64) -> WindowCounts {
        match self {
            Self::Count(w) => w.counts(),
            Self::Time(w) => w.counts(second),
        }
    }

    /// Failures among the `n` calls before the latest, where the window keeps calls in order
    /// (a count window); `None` for a time window.
    pub(crate) fn failures_before_latest(&self, n: usize) -> Option<u64> {
        match self {
            Self::Count(w) => Some(w.failures_before_latest(n)),
            Self::Time(_) => None,
        }
    }

    /// The calls a count window holds; `None` for a time window, which keeps no order.
    pub(crate) fn ordered_len(&self) -> Option<usize> {
        match self {
            Self::Count(w) => Some(w.slots.len()),
            Self::Time(_) => None,
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Self::Count(w) => w.reset(),
            Self::Time(w) => w.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    const OK: Sample = Sample {
        failure: false,
        slow: false,
    };
    const FAIL: Sample = Sample {
        failure: true,
        slow: false,
    };

    fn counts_of<'a>(samples: impl Iterator<Item = &'a Sample>) -> WindowCounts {
        let mut c = WindowCounts::default();
        for s in samples {
            c.calls += 1;
            c.failures += u64::from(s.failure);
            c.slow += u64::from(s.slow);
        }
        c
    }

    #[test]
    fn count_window_slides_past_a_long_run_of_successes() {
        let w = CountWindow::new(10);
        for _ in 0..1000 {
            w.record(OK);
        }
        for _ in 0..20 {
            w.record(FAIL);
        }
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls: 10,
                failures: 10,
                slow: 0
            }
        );
    }

    #[test]
    fn time_window_forgets_seconds_that_fall_out() {
        let w = TimeWindow::new(3);
        w.record(0, FAIL);
        w.record(1, OK);
        w.record(2, OK);
        assert_eq!(w.counts(2).calls, 3);
        assert_eq!(w.counts(3).failures, 0);
        assert_eq!(w.counts(3).calls, 2);
        assert_eq!(w.counts(100).calls, 0);
    }

    fn sample() -> impl Strategy<Value = Sample> {
        (any::<bool>(), any::<bool>()).prop_map(|(failure, slow)| Sample { failure, slow })
    }

    proptest! {
        #[test]
        fn count_window_holds_exactly_the_last_n_calls(
            size in 1u32..32,
            samples in proptest::collection::vec(sample(), 0..200),
            reset_at in proptest::option::of(0usize..200),
        ) {
            let w = CountWindow::new(size);
            let mut model = VecDeque::new();
            for (i, s) in samples.iter().enumerate() {
                if reset_at == Some(i) {
                    w.reset();
                    model.clear();
                }
                w.record(*s);
                model.push_back(*s);
                if model.len() > size as usize {
                    model.pop_front();
                }
                prop_assert_eq!(w.counts(), counts_of(model.iter()));
            }
        }

        #[test]
        fn time_window_holds_exactly_the_last_n_seconds(
            span in 1u64..8,
            steps in proptest::collection::vec((0u64..4, sample()), 0..200),
        ) {
            let w = TimeWindow::new(span);
            let mut now = 0;
            let mut model: Vec<(u64, Sample)> = Vec::new();
            for (advance, s) in steps {
                now += advance;
                w.record(now, s);
                model.push((now, s));
                let live = model.iter().filter(|(t, _)| t + span > now).map(|(_, s)| s);
                prop_assert_eq!(w.counts(now), counts_of(live));
            }
        }
    }

    proptest! {
        /// The breaker decides again after every call but a success that is not slow in a calm
        /// second; across bucket boundaries and resets, that never misses a call after which
        /// the reference model's window trips.
        #[test]
        fn time_window_asks_for_every_decision_that_trips(
            span in 1u64..6,
            minimum in 1u64..8,
            threshold in 0.1f64..1.0,
            steps in proptest::collection::vec((0u64..3, sample()), 0..300),
        ) {
            let trips = |c: WindowCounts| c.calls >= minimum && c.failure_rate() >= threshold;
            let w = TimeWindow::new(span);
            let mut now = 0;
            let mut model: Vec<(u64, Sample)> = Vec::new();
            for (advance, s) in steps {
                now += advance;
                let decide = w.record(now, s);
                model.push((now, s));
                let live = counts_of(model.iter().filter(|(t, _)| t + span > now).map(|(_, s)| s));
                if !decide {
                    prop_assert!(!trips(live), "skipped a decision that trips: {live:?}");
                    continue;
                }
                let counts = w.counts(now);
                prop_assert_eq!(counts, live);
                w.settle(now, counts.failure_rate() < threshold);
                if trips(counts) {
                    // The breaker opens, and its window starts empty when it closes.
                    w.reset();
                    model.clear();
                }
            }
        }
    }

    #[test]
    fn concurrent_writers_leave_exact_totals() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        w.record(Sample {
                            failure: (i + t) % 3 == 0,
                            slow: i % 5 == 0,
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let slots: Vec<u8> = w.slots.iter().map(|s| s.load(Ordering::SeqCst)).collect();
        let calls = slots.iter().filter(|&&c| c != 0).count() as u64;
        let failures = slots.iter().filter(|&&c| c & 2 != 0).count() as u64;
        let slow = slots.iter().filter(|&&c| c & 4 != 0).count() as u64;
        assert_eq!(
            w.counts(),
            WindowCounts {
                calls,
                failures,
                slow
            }
        );
        assert_eq!(calls, 64);
    }
}
