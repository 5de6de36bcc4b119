//! The shed on the response to shedding: each client tells a queue that it helps to grow from a
//! downstream that became slower by shedding a little and watching its next answer.
//!
//! With many clients none is the cause of a queue, and none sees it in a per-client limit;
//! what each sees is its answers' latency. An answer **elevated** above `elevation × base`
//! (the base: the fastest answer of the last one or two `base_window`s) sets the shed
//! probability `s` to the probe and the mode to *Probing*. The next answer sent after that one
//! came back decides: lower by more than a fifth, or no longer elevated, and the queue answers
//! the fleet's shed (*Queue*); higher by more than a fifth, and `s` rises by 0.3; as slow again,
//! and nothing answers shedding, so the downstream is slower: that latency becomes the base and
//! `s` is dropped. In *Queue* mode an elevated answer (a cut attempt too) adds 0.1 and one within
//! `1.25 × base` halves `s`. In every mode any answer that is not elevated takes 0.01 and `s`
//! decays with time constant `decay` (five times that in *Queue* mode); at 0 the mode is *Idle*
//! again. A run of three cuts with no answer between them, each sent after the one before came
//! back, probes too: a queue past the attempt timeout answers nothing.
//!
//! What is not a queue:
//! - *A tail.* An elevated answer to a call sent before a later call came back fast met a tail,
//!   not a queue: in a queue no later call overtakes it.
//! - *A long-tailed downstream.* No probe while the mean excess of answers over the base (30 s
//!   time constant) exceeds the base: one answer tells nothing there.
//! - *A tail or a hang cut by an attempt timeout.* No probe on an elevated answer for
//!   `tail_hold` after a cut that came while *Idle*: a queue is elevated long before it reaches
//!   an attempt timeout, and the retries of cut calls queue a little on their own.
//!
//! **Lock-free.** The state is seven atomic words, each updated whole: `level` (mode, `s` and when
//! it was set; the only word a call reads on admission, and the one every decision is a
//! compare-and-swap on), `probe` (the elevated latency being probed and when it came back),
//! `base` (the window's two minima), `spread`, `fast_end`, `idle_cut` and `cut_run`. Two answers of one
//! client that complete at the same moment may each decide on the probe the other replaced: one
//! of them then acts as if it had come a moment later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ShedConfig;
use crate::event::ShedChange;

/// Steps of the shed probability in `level`: 14 bits.
const S_ONE: u64 = (1 << 14) - 1;
const S_SHIFT: u32 = 48;
const MODE_SHIFT: u32 = 62;
/// Microseconds in `level`'s time field, wrapping after about 8.9 years.
const AT_MASK: u64 = (1 << S_SHIFT) - 1;
/// Latencies are kept in microseconds, in 24 bits (at most about 16.8 s).
const LATENCY_MASK: u64 = (1 << 24) - 1;
/// No latency seen in a bucket of the base.
const NONE: u64 = LATENCY_MASK;

/// A probe answered by more than this share lower, or higher, moved with the shed.
const MARGIN: f64 = 0.2;
/// How much a higher answer to the probe raises `s`.
const STEP: f64 = 0.3;
/// How much an elevated answer raises `s` in a confirmed queue.
const QUEUE_STEP: f64 = 0.1;
/// How much an answer that is not elevated lowers `s`.
const EASE: f64 = 0.01;
/// An answer within this many times the base shows no queue at all: `s` is halved.
const RELEASE_BELOW: f64 = 1.25;
/// The most the shed takes.
const MAX: f64 = 0.9;
/// `s` below this is nothing.
const FLOOR: f64 = 0.01;
/// The time constant of the mean excess over the base that gates probes.
const SPREAD_TIME: f64 = 30.0;
/// Answers a client has seen before it probes: a spread of fewer says nothing.
const SPREAD_FROM: u64 = 4;
/// How many times slower `s` decays in a confirmed queue.
const QUEUE_DECAY: f64 = 5.0;
/// Cuts in a run, with no answer between them, that probe: a queue past the attempt timeout
/// answers nothing, while a hang of one call in ten makes three in a row one time in 1000.
const CUT_RUN: u64 = 3;
/// An elevation of less than this is never worth a shed (a base of microseconds).
const MIN_EXCESS_MICROS: u64 = 1000;

/// What the shed believes of its downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Nothing elevated, or nothing since `s` decayed to nothing.
    Idle = 0,
    /// An elevated answer set the probe; the next answer decides.
    Probing = 1,
    /// The downstream's queue answered the shed.
    Queue = 2,
}

impl Mode {
    fn of(level: u64) -> Self {
        match level >> MODE_SHIFT {
            0 => Self::Idle,
            1 => Self::Probing,
            _ => Self::Queue,
        }
    }
}

/// `level` unpacked: the mode, `s` in steps of `1/S_ONE`, and when it was set.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Level {
    mode: Mode,
    s: u64,
    at: u64,
}

impl Level {
    fn of(word: u64) -> Self {
        Self {
            mode: Mode::of(word),
            s: (word >> S_SHIFT) & S_ONE,
            at: word & AT_MASK,
        }
    }

    fn word(self) -> u64 {
        ((self.mode as u64) << MODE_SHIFT) | (self.s << S_SHIFT) | (self.at & AT_MASK)
    }

    /// `s` decayed to `now` (microseconds since the epoch).
    fn decayed(self, now: u64, decay: f64) -> f64 {
        if self.s == 0 {
            return 0.0;
        }
        let dt = now.wrapping_sub(self.at) & AT_MASK;
        let decay = if self.mode == Mode::Queue {
            decay * QUEUE_DECAY
        } else {
            decay
        };
        self.s as f64 / S_ONE as f64 * (-(dt as f64) / decay).exp()
    }
}

fn steps(s: f64) -> u64 {
    if s < FLOOR {
        0
    } else {
        (s.min(1.0) * S_ONE as f64).round() as u64
    }
}

/// The base window's two minima, in `base`: bucket index (16 bits, wrapping), the current
/// bucket's minimum and the previous one's (24 bits each).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Base {
    bucket: u64,
    current: u64,
    previous: u64,
}

impl Base {
    fn of(word: u64) -> Self {
        Self {
            bucket: word >> 48,
            current: (word >> 24) & LATENCY_MASK,
            previous: word & LATENCY_MASK,
        }
    }

    fn word(self) -> u64 {
        ((self.bucket & 0xffff) << 48) | (self.current << 24) | self.previous
    }

    /// The window turned to `bucket`: the current minimum becomes the previous one if the
    /// bucket just ended, and is forgotten if one passed without a call.
    fn rolled(self, bucket: u64) -> Self {
        let bucket = bucket & 0xffff;
        if bucket == self.bucket {
            return self;
        }
        let previous = if bucket == (self.bucket + 1) & 0xffff {
            self.current
        } else {
            NONE
        };
        Self {
            bucket,
            current: NONE,
            previous,
        }
    }

    fn min(self) -> Option<u64> {
        Some(self.current.min(self.previous)).filter(|&m| m != NONE)
    }
}

/// One throttle's shed: its settings and lock-free state.
#[derive(Debug)]
pub(crate) struct Shed {
    epoch: Instant,
    probe_s: f64,
    elevation: f64,
    /// Microseconds.
    decay: f64,
    base_window: u64,
    tail_hold: u64,
    level: AtomicU64,
    /// The probed latency (24 bits, microseconds) and when it came back (40 bits,
    /// milliseconds since the epoch).
    probe: AtomicU64,
    base: AtomicU64,
    /// The mean excess over the base (24 bits, microseconds), answers averaged (16 bits, at most
    /// 65535) and when last (24 bits, milliseconds, wrapping).
    spread: AtomicU64,
    /// When the last answer that was not elevated came back, in microseconds.
    fast_end: AtomicU64,
    /// When the last cut while *Idle* came, in microseconds, plus one; 0 for never.
    idle_cut: AtomicU64,
    /// Cuts since the last answer, each sent after the one before came back (16 bits), and
    /// when the last of them came (48 bits, microseconds, wrapping).
    cut_run: AtomicU64,
}

impl Shed {
    pub(crate) fn new(config: &ShedConfig, now: Instant) -> Self {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Self {
            epoch: now,
            probe_s: config.probe,
            elevation: config.elevation,
            decay: micros(config.decay) as f64,
            base_window: micros(config.base_window).max(1),
            tail_hold: micros(config.tail_hold),
            cut_run: AtomicU64::new(0),
            level: AtomicU64::new(0),
            probe: AtomicU64::new(0),
            base: AtomicU64::new(
                Base {
                    bucket: 0,
                    current: NONE,
                    previous: NONE,
                }
                .word(),
            ),
            spread: AtomicU64::new(0),
            fast_end: AtomicU64::new(0),
            idle_cut: AtomicU64::new(0),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether a call may be shed at all: one load.
    #[inline]
    pub(crate) fn is_shedding(&self) -> bool {
        self.level.load(Ordering::Relaxed) >> S_SHIFT & S_ONE != 0
    }

    /// The shed probability at `now`.
    pub(crate) fn probability(&self, now: Instant) -> f64 {
        Level::of(self.level.load(Ordering::Relaxed)).decayed(self.micros(now), self.decay)
    }

    /// The mode now.
    pub(crate) fn mode(&self) -> Mode {
        Mode::of(self.level.load(Ordering::Relaxed))
    }

    /// One attempt sent at `started` that ended at `now`: answered with a success, or cut by an
    /// attempt timeout (`answered` false).
    pub(crate) fn sample(
        &self,
        started: Instant,
        now: Instant,
        answered: bool,
    ) -> Option<ShedChange> {
        let end = self.micros(now);
        let start = self.micros(started).min(end);
        let latency = (end - start).min(LATENCY_MASK - 1);
        let base = self.base_at(end, answered.then_some(latency))?;
        let (spread_before, seen) = if answered {
            self.add_spread(latency.saturating_sub(base), end)
        } else {
            self.spread_now()
        };
        let threshold = (self.elevation * base as f64).max((base + MIN_EXCESS_MICROS) as f64);
        let elevated = latency as f64 > threshold;
        let held = {
            let cut = self.idle_cut.load(Ordering::Relaxed);
            cut != 0 && end.saturating_sub(cut - 1) < self.tail_hold
        };
        let run = if answered {
            self.cut_run.store(0, Ordering::Relaxed);
            0
        } else {
            self.count_cut(start, end)
        };
        if !answered && self.mode() == Mode::Idle {
            self.idle_cut.store(end + 1, Ordering::Relaxed);
            if run < CUT_RUN {
                return None;
            }
            let change = self.update(end, |level, s| {
                (level.mode == Mode::Idle).then_some((Mode::Probing, s.max(self.probe_s)))
            });
            if change.is_some() {
                // A probe on cuts: no latency to compare the next answer with yet.
                self.probe.store((end / 1000) << 24, Ordering::Relaxed);
            }
            return change;
        }
        if !answered && !elevated {
            return None;
        }
        if !elevated {
            self.fast_end.fetch_max(end, Ordering::Relaxed);
            let release = latency as f64 <= RELEASE_BELOW * base as f64;
            return self.update(end, |level, s| {
                let mut s = (s - EASE).max(0.0);
                if release {
                    s *= 0.5;
                }
                let mode = match level.mode {
                    Mode::Probing => Mode::Queue,
                    _ if steps(s) == 0 => Mode::Idle,
                    mode => mode,
                };
                Some((mode, s))
            });
        }
        if start < self.fast_end.load(Ordering::Relaxed) {
            return None;
        }
        let (probed, probed_end) = {
            let word = self.probe.load(Ordering::Relaxed);
            (word & LATENCY_MASK, word >> 24)
        };
        let fresh = start / 1000 >= probed_end;
        let mut adopted = false;
        let mut probe_to = None;
        let change = self.update(end, |level, s| {
            probe_to = None;
            adopted = false;
            match level.mode {
                Mode::Idle => {
                    if !fresh || held || seen < SPREAD_FROM || spread_before > base {
                        return None;
                    }
                    probe_to = Some(latency);
                    Some((Mode::Probing, s.max(self.probe_s)))
                }
                Mode::Probing => {
                    if !fresh {
                        return None;
                    }
                    probe_to = Some(probed);
                    if !answered {
                        return None;
                    }
                    if probed == 0 {
                        // The first answer after a probe on cuts is what the next compares to.
                        probe_to = Some(latency);
                        return None;
                    }
                    let ratio = latency as f64 / probed.max(1) as f64;
                    if ratio > 1.0 + MARGIN {
                        probe_to = Some(latency);
                        Some((Mode::Probing, (s + STEP).min(MAX)))
                    } else if ratio < 1.0 - MARGIN {
                        Some((Mode::Queue, s))
                    } else {
                        adopted = true;
                        Some((Mode::Idle, 0.0))
                    }
                }
                Mode::Queue => Some((Mode::Queue, (s + QUEUE_STEP).min(MAX))),
            }
        });
        if let Some(probed) = probe_to {
            self.probe
                .store(probed | ((end / 1000) << 24), Ordering::Relaxed);
        }
        if adopted {
            let adopted = latency.min(probed);
            let bucket = end / self.base_window;
            self.base.store(
                Base {
                    bucket,
                    current: adopted,
                    previous: adopted,
                }
                .word(),
                Ordering::Relaxed,
            );
            return Some(ShedChange::Adopted);
        }
        change
    }

    /// Moves `level` by `step` (given the level and `s` decayed to `now`; `None` leaves it), in
    /// one compare-and-swap; tells what changed.
    fn update(
        &self,
        now: u64,
        mut step: impl FnMut(Level, f64) -> Option<(Mode, f64)>,
    ) -> Option<ShedChange> {
        let mut word = self.level.load(Ordering::Relaxed);
        loop {
            let level = Level::of(word);
            let (mode, s) = step(level, level.decayed(now, self.decay))?;
            let s = steps(s);
            let mode = if s == 0 && mode == Mode::Queue {
                Mode::Idle
            } else {
                mode
            };
            // Nothing to decay: a healthy downstream's answers leave the word as it is.
            let at = if s == 0 { 0 } else { now };
            let next = Level { mode, s, at }.word();
            if next == word {
                return None;
            }
            match self
                .level
                .compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return match (level.mode, mode) {
                        (Mode::Idle, Mode::Probing) => Some(ShedChange::Probed),
                        (Mode::Probing, Mode::Queue) => Some(ShedChange::QueueConfirmed),
                        (from, Mode::Idle) if from != Mode::Idle => Some(ShedChange::Released),
                        _ => None,
                    };
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Counts a cut sent at `start` into the run, unless it was sent before the run's last cut
    /// came back (a hang among calls sent close together); returns the run.
    fn count_cut(&self, start: u64, end: u64) -> u64 {
        let word = self.cut_run.load(Ordering::Relaxed);
        let (run, last) = (word >> 48, word & AT_MASK);
        if run > 0 && start & AT_MASK < last {
            return run;
        }
        let run = (run + 1).min(0xffff);
        self.cut_run
            .store((run << 48) | (end & AT_MASK), Ordering::Relaxed);
        run
    }

    /// The base at `now`, after adding `latency` to the window's minimum if given.
    fn base_at(&self, now: u64, latency: Option<u64>) -> Option<u64> {
        let bucket = now / self.base_window;
        let mut word = self.base.load(Ordering::Relaxed);
        loop {
            let before = Base::of(word).rolled(bucket);
            let after = match latency {
                Some(latency) => Base {
                    current: before.current.min(latency),
                    ..before
                },
                None => before,
            };
            let next = after.word();
            if next == word {
                return before.min();
            }
            match self
                .base
                .compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return before.min(),
                Err(actual) => word = actual,
            }
        }
    }

    /// The mean excess over the base, and how many answers it holds (at most 65535).
    fn spread_now(&self) -> (u64, u64) {
        let word = self.spread.load(Ordering::Relaxed);
        (word >> 40, (word >> 24) & 0xffff)
    }

    /// Adds an answer's excess over the base to the mean; returns the mean and count before it.
    fn add_spread(&self, excess: u64, now: u64) -> (u64, u64) {
        let now_ms = (now / 1000) & LATENCY_MASK;
        let mut word = self.spread.load(Ordering::Relaxed);
        loop {
            let (mean, seen, at) = (word >> 40, (word >> 24) & 0xffff, word & LATENCY_MASK);
            let n = (seen + 1).min(0xffff);
            let dt = now_ms.wrapping_sub(at) & LATENCY_MASK;
            let alpha = (dt as f64 / (SPREAD_TIME * 1000.0))
                .max(1.0 / n as f64)
                .min(1.0);
            let next_mean = mean as f64 + alpha * (excess.min(LATENCY_MASK) as f64 - mean as f64);
            let next = ((next_mean.round() as u64).min(LATENCY_MASK) << 40) | (n << 24) | now_ms;
            match self.spread.compare_exchange_weak(
                word,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (mean, seen),
                Err(actual) => word = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The rule as the module docs state it, on plain fields: one client, one answer at a time.
    #[derive(Debug)]
    struct Model {
        probe: f64,
        elevation: f64,
        decay: f64,
        window: u64,
        hold: u64,
        mode: Mode,
        /// In steps of `1/S_ONE`, as `level` keeps it.
        s: u64,
        at: u64,
        probed: u64,
        probed_end_ms: u64,
        bucket: u64,
        current: Option<u64>,
        previous: Option<u64>,
        spread: u64,
        seen: u64,
        spread_at_ms: u64,
        fast_end: u64,
        idle_cut: Option<u64>,
        run: u64,
        run_last: u64,
    }

    impl Model {
        fn new(c: &ShedConfig) -> Self {
            Self {
                probe: c.probe,
                elevation: c.elevation,
                decay: c.decay.as_micros() as f64,
                window: c.base_window.as_micros() as u64,
                hold: c.tail_hold.as_micros() as u64,
                mode: Mode::Idle,
                s: 0,
                at: 0,
                probed: 0,
                probed_end_ms: 0,
                bucket: 0,
                current: None,
                previous: None,
                spread: 0,
                seen: 0,
                spread_at_ms: 0,
                fast_end: 0,
                idle_cut: None,
                run: 0,
                run_last: 0,
            }
        }

        fn s_at(&self, now: u64) -> f64 {
            if self.s == 0 {
                return 0.0;
            }
            let decay = match self.mode {
                Mode::Queue => self.decay * QUEUE_DECAY,
                _ => self.decay,
            };
            self.s as f64 / S_ONE as f64 * (-((now - self.at) as f64) / decay).exp()
        }

        /// Sets the mode and `s`; tells what changed.
        fn set(&mut self, now: u64, mode: Mode, s: f64) -> Option<ShedChange> {
            let s = if s < FLOOR {
                0
            } else {
                (s.min(1.0) * S_ONE as f64).round() as u64
            };
            let mode = if s == 0 && mode == Mode::Queue {
                Mode::Idle
            } else {
                mode
            };
            let from = self.mode;
            let changed = (mode, s) != (self.mode, self.s) || (s != 0 && self.at != now);
            (self.mode, self.s, self.at) = (mode, s, if s == 0 { 0 } else { now });
            if !changed {
                return None;
            }
            match (from, mode) {
                (Mode::Idle, Mode::Probing) => Some(ShedChange::Probed),
                (Mode::Probing, Mode::Queue) => Some(ShedChange::QueueConfirmed),
                (from, Mode::Idle) if from != Mode::Idle => Some(ShedChange::Released),
                _ => None,
            }
        }

        fn sample(&mut self, start: u64, end: u64, answered: bool) -> Option<ShedChange> {
            let latency = end - start;
            let bucket = end / self.window;
            if bucket != self.bucket {
                self.previous = if bucket == self.bucket + 1 {
                    self.current
                } else {
                    None
                };
                (self.bucket, self.current) = (bucket, None);
            }
            let base = match (self.current, self.previous) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if answered {
                self.current = Some(self.current.map_or(latency, |c| c.min(latency)));
            }
            let base = base?;
            let (spread, seen) = (self.spread, self.seen);
            if answered {
                let n = self.seen + 1;
                let dt = (end / 1000 - self.spread_at_ms) as f64;
                let alpha = (dt / (SPREAD_TIME * 1000.0)).max(1.0 / n as f64).min(1.0);
                let excess = latency.saturating_sub(base) as f64;
                self.spread =
                    (self.spread as f64 + alpha * (excess - self.spread as f64)).round() as u64;
                (self.seen, self.spread_at_ms) = (n, end / 1000);
            }
            let elevated = latency as f64
                > (self.elevation * base as f64).max((base + MIN_EXCESS_MICROS) as f64);
            let held = self.idle_cut.is_some_and(|cut| end - cut < self.hold);
            let s = self.s_at(end);
            if answered {
                self.run = 0;
            } else if self.run == 0 || start >= self.run_last {
                (self.run, self.run_last) = (self.run + 1, end);
            }
            if !answered {
                if self.mode == Mode::Idle {
                    self.idle_cut = Some(end);
                    if self.run < CUT_RUN {
                        return None;
                    }
                    (self.probed, self.probed_end_ms) = (0, end / 1000);
                    return self.set(end, Mode::Probing, s.max(self.probe));
                }
                if !elevated {
                    return None;
                }
            }
            if !elevated {
                self.fast_end = self.fast_end.max(end);
                let mut next = (s - EASE).max(0.0);
                if latency as f64 <= RELEASE_BELOW * base as f64 {
                    next *= 0.5;
                }
                let mode = match self.mode {
                    Mode::Probing => Mode::Queue,
                    _ if next < FLOOR => Mode::Idle,
                    mode => mode,
                };
                return self.set(end, mode, next);
            }
            if start < self.fast_end {
                return None;
            }
            let fresh = start / 1000 >= self.probed_end_ms;
            match self.mode {
                Mode::Idle => {
                    if !fresh || held || seen < SPREAD_FROM || spread > base {
                        return None;
                    }
                    (self.probed, self.probed_end_ms) = (latency, end / 1000);
                    self.set(end, Mode::Probing, s.max(self.probe))
                }
                Mode::Probing if !fresh => None,
                Mode::Probing => {
                    self.probed_end_ms = end / 1000;
                    if !answered {
                        return None;
                    }
                    if self.probed == 0 {
                        self.probed = latency;
                        return None;
                    }
                    let ratio = latency as f64 / self.probed as f64;
                    if ratio > 1.0 + MARGIN {
                        self.probed = latency;
                        self.set(end, Mode::Probing, (s + STEP).min(MAX))
                    } else if ratio < 1.0 - MARGIN {
                        self.set(end, Mode::Queue, s)
                    } else {
                        let adopted = latency.min(self.probed);
                        self.set(end, Mode::Idle, 0.0);
                        (self.current, self.previous) = (Some(adopted), Some(adopted));
                        Some(ShedChange::Adopted)
                    }
                }
                Mode::Queue => self.set(end, Mode::Queue, (s + QUEUE_STEP).min(MAX)),
            }
        }
    }

    /// An answer: the time since the last one ended, its latency (microseconds) and whether it
    /// was answered (or cut).
    fn answer() -> impl Strategy<Value = (u64, u64, bool)> {
        let gap = prop_oneof![
            6 => 0u64..50_000,
            3 => 50_000u64..1_000_000,
            1 => 1_000_000u64..12_000_000,
        ];
        let latency = prop_oneof![
            6 => 8_000u64..12_000,
            3 => 16_000u64..60_000,
            1 => 60_000u64..2_000_000,
        ];
        (gap, latency, proptest::bool::weighted(0.75))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The packed, lock-free state decides as the model does, answer by answer.
        #[test]
        fn the_shed_follows_the_model(
            answers in proptest::collection::vec(answer(), 1..400),
            probe in 0.2f64..0.8,
            elevation in 1.5f64..4.0,
        ) {
            let config = ShedConfig::default()
                .with_probe(probe)
                .unwrap()
                .with_elevation(elevation)
                .unwrap();
            let epoch = Instant::now();
            let shed = Shed::new(&config, epoch);
            let mut model = Model::new(&config);
            let mut end = 0;
            for (i, (gap, latency, answered)) in answers.into_iter().enumerate() {
                end += gap;
                let start = end.saturating_sub(latency);
                let at = |us| epoch + Duration::from_micros(us);
                let change = shed.sample(at(start), at(end), answered);
                let expected = model.sample(start, end, answered);
                let level = Level::of(shed.level.load(Ordering::Relaxed));
                prop_assert_eq!(change, expected, "answer {}: {:?}", i, model);
                prop_assert_eq!((level.mode, level.s), (model.mode, model.s), "answer {}", i);
                let now = at(end + gap);
                prop_assert!((shed.probability(now) - model.s_at(end + gap)).abs() < 1e-12);
            }
        }
    }
}
