//! The decaying window of requests and accepts, lock-free and O(1) per call.
//!
//! Both counts live in one `AtomicU64`, requests in the high half and accepts in the low, each
//! in 1/4096 of a request, so a call adds to both with one `fetch_add` and a reader sees a pair
//! that belongs together. Time runs in ticks of `2^k` nanoseconds, the largest not over a
//! sixteenth of the window. Within a tick counts only grow; the first call of a later tick
//! wins a compare-and-swap on the tick word and decays both counts by one factor for the whole
//! gap (multiplying both by the same factor never changes whether requests exceed K × accepts,
//! so a call that sees no reason to throttle needs no decay to be sure of it).
//!
//! Reading the clock costs more than the rest of a call together, so a call reads it only
//! where time can matter. A call let through reads it when its outcome is counted while the
//! window holds under 256 requests (low rates, where a call is rare enough for the cost not to
//! matter and every tick counts), and otherwise only when its `fetch_add` took the whole
//! requests to a multiple of 16: each value is seen by exactly one call, so the counts are
//! decayed at least once every 16 calls, within about a tick. A call admitted while requests
//! exceed K × accepts reads it before its draw.
//!
//! The factor for a gap of `Δ` with `n` requests counted since the last decay is
//! `exp(-min(Δ/window, max(n/min_requests, Δ/max_window)))`: at `min_requests / window`
//! requests a second or more it is plain exponential decay with time constant `window`;
//! below, each request ages the window by `1/min_requests` (so it holds about `min_requests`
//! requests), but never by less than time alone would over `max_window`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// 1/4096 of a request is the unit of the counts.
const FRACTION_BITS: u32 = 12;
const ONE: u64 = 1 << FRACTION_BITS;
/// Requests in the window are capped at 2^31 units (524 288 requests) at each decay, so that
/// the adds of one tick can never carry out of their half of the word.
const CAP: u64 = 1 << 31;
const HALF: u32 = 32;
/// From this many requests in the window on, one counted call in [`SAMPLE_EVERY`] reads the
/// clock.
const SAMPLED_FROM: u64 = 256 << FRACTION_BITS;
const SAMPLE_EVERY: u64 = 16;
const LOW: u64 = (1 << HALF) - 1;
/// No call was refused yet.
const NEVER: u64 = u64::MAX;

/// Requests and accepts in the window, in requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThrottleCounts {
    /// Requests in the window, local rejections included.
    pub requests: f64,
    /// Accepts in the window.
    pub accepts: f64,
}

impl ThrottleCounts {
    fn of(word: u64) -> Self {
        Self {
            requests: (word >> HALF) as f64 / ONE as f64,
            accepts: (word & LOW) as f64 / ONE as f64,
        }
    }

    /// `max(0, (requests − K × accepts) / (requests + 1))`, the SRE book's client-side
    /// throttling probability, once the excess less the rounding of the counts (`(K + 1) / 4096`
    /// of a request) exceeds `2√((K − 1) × requests)`, two standard deviations of what a
    /// downstream accepting exactly `1/K` gives by chance; below that it is 0.
    pub fn rejection_probability(&self, multiplier: f64) -> f64 {
        let excess = self.requests - multiplier * self.accepts;
        let rounding = (multiplier + 1.0) / ONE as f64;
        if excess <= rounding || !beyond_noise(excess - rounding, self.requests, multiplier) {
            return 0.0;
        }
        excess / (self.requests + 1.0)
    }
}

/// How many standard deviations of noise an excess must clear before the throttle engages.
const NOISE_SIGMAS: f64 = 2.0;

/// Whether `requests − K × accepts` is more than [`NOISE_SIGMAS`] standard deviations above
/// what a downstream accepting exactly `1/K` of the calls gives by chance.
///
/// The formula engages where the accepted share falls below `1/K`. At that share, accepts out
/// of `R` requests are binomial with variance `R (1/K)(1 − 1/K)`, so the excess has mean 0
/// and standard deviation `√((K − 1) R)`. Without this test a small window rejects on noise:
/// with the default window of about 10 requests and a downstream accepting 73 % (offered
/// 1.5× its capacity), `R − 2A > 0` (4 or fewer accepts of 10) holds about 3 % of the time;
/// with `R − 2A > 2√R` (1 or no accept of 10) about 5·10⁻⁵. A downstream refusing everything
/// still engages once `R > 4 (K − 1)`: 5 requests at K = 2. Large windows are unaffected:
/// `2√R` is 2 % of 10 000 requests.
#[inline]
fn beyond_noise(excess: f64, requests: f64, multiplier: f64) -> bool {
    excess > 0.0 && excess * excess > NOISE_SIGMAS * NOISE_SIGMAS * (multiplier - 1.0) * requests
}

#[derive(Debug)]
pub(crate) struct Window {
    /// Requests (high half) and accepts (low half).
    counts: AtomicU64,
    /// The tick the counts were last decayed in.
    tick: AtomicU64,
    /// Requests right after the last decay.
    base: AtomicU64,
    /// The tick of the last call let through that the downstream did not accept, or
    /// [`NEVER`] before one.
    refused: AtomicU64,
    epoch: Instant,
    tick_shift: u32,
    window_ticks: f64,
    max_window_ticks: f64,
    min_requests: f64,
    multiplier: f64,
}

impl Window {
    pub(crate) fn new(
        window: Duration,
        max_window: Duration,
        min_requests: u32,
        multiplier: f64,
        epoch: Instant,
    ) -> Self {
        let tick_shift = tick_shift(window);
        let tick = (1u64 << tick_shift) as f64;
        Self {
            counts: AtomicU64::new(0),
            tick: AtomicU64::new(0),
            base: AtomicU64::new(0),
            refused: AtomicU64::new(NEVER),
            epoch,
            tick_shift,
            window_ticks: window.as_nanos() as f64 / tick,
            max_window_ticks: max_window.as_nanos() as f64 / tick,
            min_requests: f64::from(min_requests),
            multiplier,
        }
    }

    #[inline]
    fn tick_of(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch);
        let nanos = since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()));
        nanos >> self.tick_shift
    }

    /// Decays the counts to `now`'s tick; true if this call did.
    #[inline]
    pub(crate) fn advance(&self, now: Instant) -> bool {
        let tick = self.tick_of(now);
        let last = self.tick.load(Ordering::Acquire);
        tick > last && self.roll(last, tick)
    }

    #[cold]
    #[inline(never)]
    fn roll(&self, mut last: u64, tick: u64) -> bool {
        // One caller per tick decays, for the whole gap since the last decay.
        loop {
            match self
                .tick
                .compare_exchange_weak(last, tick, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) if actual >= tick => return false,
                Err(actual) => last = actual,
            }
        }
        let base = self.base.load(Ordering::Acquire);
        let mut word = self.counts.load(Ordering::Acquire);
        let factor = self.factor(tick - last, word, base);
        loop {
            let decayed = scale(word, factor);
            match self.counts.compare_exchange_weak(
                word,
                decayed,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.base.store(decayed >> HALF, Ordering::Release);
                    return true;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// The decay factor for a gap of `ticks` after which the counts read `word`.
    fn factor(&self, ticks: u64, word: u64, base: u64) -> f64 {
        let requests = ((word >> HALF).saturating_sub(base)) as f64 / ONE as f64;
        let ticks = ticks as f64;
        let by_time = ticks / self.window_ticks;
        let by_count = (requests / self.min_requests).max(ticks / self.max_window_ticks);
        (-by_time.min(by_count)).exp()
    }

    /// Counts one request, and one accept if `accepted`, without reading the clock.
    #[inline]
    pub(crate) fn add(&self, accepted: bool) -> u64 {
        let delta = (ONE << HALF) | if accepted { ONE } else { 0 };
        self.counts.fetch_add(delta, Ordering::AcqRel)
    }

    /// Counts one request that ended `now()`, and one accept if `accepted`, decaying the counts
    /// first where the clock is read (see the module docs); true if this call decayed them.
    #[inline]
    pub(crate) fn record(&self, accepted: bool, now: impl FnOnce() -> Instant) -> bool {
        if self.counts.load(Ordering::Relaxed) >> HALF < SAMPLED_FROM {
            let decayed = self.advance(now());
            self.add(accepted);
            return decayed;
        }
        let before = self.add(accepted) >> (HALF + FRACTION_BITS);
        before.is_multiple_of(SAMPLE_EVERY) && self.advance(now())
    }

    /// Whether requests exceed K × accepts by more than the counts' rounding and beyond noise:
    /// whether any call may be rejected.
    #[inline]
    pub(crate) fn may_reject(&self) -> bool {
        let word = self.counts.load(Ordering::Acquire);
        let requests = (word >> HALF) as f64;
        let excess = requests - self.multiplier * (word & LOW) as f64;
        // In units of 1/4096 request, so the noise bound scales by 4096 once more.
        let rounding = self.multiplier + 1.0;
        excess > rounding && beyond_noise(excess - rounding, requests * ONE as f64, self.multiplier)
    }

    /// Notes that a call let through at `now` was not accepted.
    #[cold]
    pub(crate) fn refused_at(&self, now: Instant) {
        self.refused.store(self.tick_of(now), Ordering::Relaxed);
    }

    /// Whether a call let through was not accepted within the longest window before `now`:
    /// the throttle rejects only then (see the crate docs, "After an overload").
    pub(crate) fn refused_lately(&self, now: Instant) -> bool {
        let refused = self.refused.load(Ordering::Relaxed);
        refused != NEVER
            && (self.tick_of(now).saturating_sub(refused) as f64) <= self.max_window_ticks
    }

    /// The counts as they stand (decayed to the last tick a call saw).
    pub(crate) fn counts(&self) -> ThrottleCounts {
        ThrottleCounts::of(self.counts.load(Ordering::Acquire))
    }

    /// The counts as they would be decayed to `now`, changing nothing.
    pub(crate) fn counts_at(&self, now: Instant) -> ThrottleCounts {
        let last = self.tick.load(Ordering::Acquire);
        let base = self.base.load(Ordering::Acquire);
        let word = self.counts.load(Ordering::Acquire);
        let tick = self.tick_of(now);
        if tick <= last {
            return ThrottleCounts::of(word);
        }
        ThrottleCounts::of(scale(word, self.factor(tick - last, word, base)))
    }

    pub(crate) fn multiplier(&self) -> f64 {
        self.multiplier
    }
}

/// The largest power of two nanoseconds that is at most a sixteenth of `window`.
fn tick_shift(window: Duration) -> u32 {
    let sixteenth = u64::try_from(window.as_nanos() / 16)
        .unwrap_or(u64::MAX)
        .max(1);
    63 - sixteenth.leading_zeros()
}

/// Both halves of `word` times `factor`, rounded, with requests capped at [`CAP`].
fn scale(word: u64, factor: f64) -> u64 {
    let mut requests = ((word >> HALF) as f64 * factor).round();
    let mut accepts = ((word & LOW) as f64 * factor).round();
    if requests > CAP as f64 {
        accepts = (accepts * CAP as f64 / requests).round();
        requests = CAP as f64;
    }
    ((requests as u64) << HALF) | (accepts as u64).min(requests as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn window() -> (Window, Instant) {
        let epoch = Instant::now();
        (Window::new(ms(500), ms(30_000), 10, 2.0, epoch), epoch)
    }

    #[test]
    fn ticks_are_a_power_of_two_nanoseconds_within_a_sixteenth_of_the_window() {
        for window in [ms(10), ms(500), ms(1000), Duration::from_secs(3600)] {
            let tick = Duration::from_nanos(1 << tick_shift(window));
            assert!(tick <= window / 16 && tick * 2 > window / 16, "{window:?}");
        }
    }

    #[test]
    fn one_call_adds_one_request_and_maybe_one_accept() {
        let (w, _) = window();
        w.add(true);
        w.add(false);
        assert_eq!(
            w.counts(),
            ThrottleCounts {
                requests: 2.0,
                accepts: 1.0
            }
        );
        assert!(!w.may_reject(), "2 requests, K x 1 accept");
        // Refusals alone clear the noise bound 2√((K − 1) R) from the fifth request on.
        let (w, _) = window();
        for _ in 0..4 {
            w.add(false);
        }
        assert!(!w.may_reject(), "4 refusals are within noise");
        w.add(false);
        assert!(w.may_reject());
    }

    #[test]
    fn the_decay_is_exponential_in_time_at_high_rates() {
        let (w, epoch) = window();
        for _ in 0..1000 {
            w.add(true);
        }
        assert!(w.advance(epoch + ms(500)));
        assert!(!w.advance(epoch + ms(500)), "once per tick");
        let counts = w.counts();
        // 500 ms is whole ticks of 2^24 ns away from 0 only approximately.
        let ticks = (500_000_000u64 >> 24) as f64;
        let expected = 1000.0 * (-(ticks * (1u64 << 24) as f64) / 500e6).exp();
        assert!((counts.requests - expected).abs() < 0.01, "{counts:?}");
        assert_eq!(counts.requests, counts.accepts);
    }

    #[test]
    fn a_rare_caller_keeps_about_min_requests_requests() {
        let (w, epoch) = window();
        // One call a second: each ages the window by 1/10 (time alone would by 1/30).
        for second in 1..=200 {
            w.advance(epoch + Duration::from_secs(second));
            w.add(true);
        }
        let requests = w.counts().requests;
        let steady = 1.0 / (1.0 - (-0.1f64).exp());
        assert!((requests - steady).abs() < 0.01, "{requests} vs {steady}");
    }

    #[test]
    fn a_silent_window_empties_by_max_window() {
        let (w, epoch) = window();
        for _ in 0..10 {
            w.add(false);
        }
        w.advance(epoch + Duration::from_secs(300));
        assert!(w.counts().requests < 0.01, "{:?}", w.counts());
    }

    #[test]
    fn a_busy_window_reads_the_clock_every_sixteenth_call() {
        let (w, epoch) = window();
        let mut reads = 0;
        for _ in 0..1000 {
            w.record(true, || {
                reads += 1;
                epoch
            });
        }
        // Every call below 256 requests, then one in 16 of the other 744.
        assert_eq!(reads, 256 + 744 / 16 + 1);
        let later = epoch + ms(100);
        let mut decays = 0;
        for _ in 0..16 {
            decays += usize::from(w.record(true, || later));
        }
        assert_eq!(decays, 1, "within 16 calls the counts decay");
    }

    #[test]
    fn reading_ahead_changes_nothing() {
        let (w, epoch) = window();
        for _ in 0..100 {
            w.add(false);
        }
        let ahead = w.counts_at(epoch + ms(700));
        assert_eq!(w.counts().requests, 100.0);
        w.advance(epoch + ms(700));
        assert_eq!(w.counts(), ahead);
    }

    #[test]
    fn the_cap_keeps_the_accepted_share() {
        let scaled = scale((CAP << HALF) | (CAP / 2), 1.5);
        assert_eq!(scaled >> HALF, CAP);
        assert_eq!(scaled & LOW, CAP / 2);
    }
}
