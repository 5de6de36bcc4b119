//! The load an [`Endpoint`](crate::Endpoint) offers a balancer: its calls in flight, its
//! latency and its recent failures, from what the endpoint itself observes.
//!
//! **Why not calls in flight alone.** p2c by pending calls (`tower::load::PendingRequests`)
//! sees an endpoint that answers every call at once with an error as the least loaded — no
//! call is ever in flight there — and sends it *more* than its share; one client of a set in
//! which four endpoints of five fail got 8.8 % of its calls served where picking at random
//! gets 20 %. Nor can a client's own pending count see a healthy endpoint fill up when a
//! hundred clients share it (each has about 0.1 call in flight there): its latency can.
//!
//! **Why not tower's `PeakEwma`.** It ranks by latency, but a fast failure lowers its
//! estimate, so a failing endpoint looks *faster*; its `Cost` is opaque, so it cannot be
//! weighed with failures from outside. Envoy's Peak EWMA balancer leaves errors to outlier
//! detection; gRPC's weighted round robin adds an error penalty to the utilization its servers
//! report. This is Finagle's and tower's Peak EWMA with a failure penalty, kept in atomics.
//!
//! **The arithmetic.** Every call updates, at its end, with `d = exp(-Δt / τ)` (`Δt` since the
//! last update, `τ` = [`DECAY`]):
//! - the latency estimate `L`: a sample `s` (the call's time from `call` to its answer, or to
//!   its cancellation) above `L` becomes `L` at once (peak-sensitive); below it, a success (or
//!   an answer whose outcome only its body's end tells) moves `L` to `L·d + s·(1 − d)`. A
//!   failure or a cancelled call never lowers `L`: a fast failure says nothing of how fast the
//!   endpoint serves, and a cancelled call took at least that long;
//! - the failure pressure `F` in [0, 1], an average of the latest outcomes (1 a failure, 0 a
//!   success) with weight ½ for the newest, fading as `F·d` in between: a failure moves it
//!   to `F·d + (1 − F·d)/2`, a success to `F·d/2`. An overload answer counts as a failure (a
//!   balancer should send less there); an answer whose outcome only its body's end tells
//!   (gRPC's status, in its trailers) counts when that end comes. An endpoint failing every
//!   call reaches 1 within a few calls; one failing 30 % sits near 0.3; one transient failure
//!   weighs ½ and fades.
//!
//! Read at `t`, `Δt` after the last update, the cost is
//! `L·d · (pending + 1) · (1 + K·F·d)` with `K` = [`FAILURE_WEIGHT`]: a healthy endpoint costs
//! what it costs under `PeakEwma`, one failing every call up to `1 + K` times more (its
//! success weight has a floor of `1/(1 + K)`). So a fast-failing endpoint is picked over a
//! healthy one only once the healthy one's latency or calls in flight have grown `1 + K`
//! times: at one client, when its workers are full; at a hundred, when its queue has grown —
//! the healthy endpoint's excess goes to the others instead of piling up behind it. With every
//! endpoint healthy, or every one failing, the penalty is alike for all and the ranking is
//! `PeakEwma`'s. Nothing is starved for good: `L` and `F` decay to 0 while no call comes back,
//! so an avoided endpoint is tried again within a few `τ`.
//!
//! Before its first answer an endpoint costs 0 while no call is in flight there, and
//! [`UNKNOWN_PENALTY`] plus its calls in flight otherwise (Finagle's rule): a new endpoint gets
//! one call, not all of them, until its latency is known.
//!
//! **An endpoint that has only failed.** One that fails from its first call has for latency
//! the time of its fast failures, about 0, so its `1 + K` penalty multiplies nothing and it
//! ranks first. That is what ejects it fast: tried at once, its run of failures reaches the
//! consecutive-failures rule within milliseconds (passed by instead, it would take seconds).
//! Once the share cap has kept it in anyway, ejection cannot help, and ranking first it would
//! take most of a client's calls for as long as it fails. So while the cap holds an endpoint
//! whose latest outcome is a failure, its latency is read as at least the time of the set's
//! fastest success (one word per set, moved only by a faster one): the penalty then weighs
//! against a real latency, and it is picked only where the endpoints that answer cost `1 + K`
//! times that fastest success, their queue included. Its first success lifts the floor (its
//! own latency is real from then on), and as `F` fades it is tried again like any other.
//!
//! **An endpoint that starts failing.** One that was healthy has a real latency, so its
//! penalty would make p2c pass it by from its first failures on: at a few dozen calls a second
//! a client, a fifth of them to it, its run of consecutive failures (what ejects it) then
//! takes seconds instead of a fraction of one. So the failures since its latest success weigh
//! nothing when they began from a clean history (a known latency and `F` below 1/16, one
//! failure's weight after four successes, at the first of them) while the consecutive-failures
//! rule is on and the share cap has room: the run ends in its ejection, so there is nothing to
//! shy away from meanwhile. Once the cap has no room, ejection cannot help, and the penalty
//! (with the floor above) applies again; so it does to an endpoint failing at a steady rate,
//! whose `F` stays above the clean mark.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use seawall_core::time::nanos;

/// How fast the latency estimate and the failure pressure forget: `τ` of `exp(-Δt/τ)`.
pub const DECAY: Duration = Duration::from_secs(1);

/// How much more an endpoint that fails every call costs: `1 + K` times a healthy one's cost
/// at the same latency and calls in flight. Small enough that a healthy endpoint sheds to a
/// failing one before its queue grows past `1 + K` times its latency (well inside the attempt
/// timeouts above it), large enough that it is preferred while its workers have room.
pub const FAILURE_WEIGHT: f64 = 3.0;

/// The cost of an endpoint with calls in flight and no answer yet, in nanoseconds.
pub const UNKNOWN_PENALTY: f64 = 1e15;

/// The cost below which the latency estimate does not go once known (1 µs), so that failures
/// weigh even against an endpoint that answers in no time.
const FLOOR_NS: f64 = 1_000.0;

/// `L` before the first answer.
const UNKNOWN: f32 = -1.0;

/// The failure pressure below which a history is clean: one failure's weight after four
/// successes (or about two `τ`). An earlier transient failure no longer counts against the
/// run that follows; a steady rate of failures, which keeps `F` above it, does.
const CLEAN_HISTORY: f64 = 1.0 / 16.0;

/// The latency of a set's fastest success, in nanoseconds (0 before the first): what serving a
/// call takes there without a queue. The fastest rather than an average, which would rise
/// with the queue of the endpoints that answer and so never let them shed to a held one.
#[derive(Debug)]
pub(crate) struct SetLatency(AtomicU64);

impl Default for SetLatency {
    fn default() -> Self {
        Self(AtomicU64::new(u64::MAX))
    }
}

impl SetLatency {
    fn succeeded(&self, rtt: u64) {
        // A load first: after the first few calls a success is rarely the fastest.
        if rtt < self.0.load(Ordering::Relaxed) {
            self.0.fetch_min(rtt, Ordering::Relaxed);
        }
    }

    /// The fastest success, in nanoseconds.
    pub(crate) fn get(&self) -> f64 {
        match self.0.load(Ordering::Relaxed) {
            u64::MAX => 0.0,
            fastest => fastest as f64,
        }
    }
}

/// An endpoint's load as a balancer compares it: lower is better.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct EndpointCost(f64);

impl EndpointCost {
    /// The cost in nanoseconds of expected wait: latency × (calls in flight + 1) × penalty.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// How a finished call went, for the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sample {
    /// Succeeded: a latency sample, and the failure pressure halves.
    Success,
    /// Failed (or answered that it is overloaded): the failure pressure goes halfway to 1.
    Failure,
    /// Answered, with its outcome known only at the end of its body: a latency sample now,
    /// the outcome when the body ends.
    Answered,
    /// Cancelled, or stopped further in: its time counts upward only, its outcome not at all.
    Cancelled,
}

/// The load's state of one endpoint: lock-free, updated once per call (twice when its body's
/// end tells its outcome).
#[derive(Debug)]
pub(crate) struct LoadEstimate {
    pending: AtomicU32,
    /// `L` (nanoseconds) in the high 32 bits and `F` in the low, each an `f32`: one word, so
    /// that an update is one compare-and-swap.
    estimate: AtomicU64,
    /// When `estimate` was last updated, in nanoseconds from the set's origin.
    updated: AtomicU64,
    /// Whether the failures since the latest success began from a clean history: a known
    /// latency and `F` below [`CLEAN_HISTORY`].
    clean_run: AtomicBool,
}

impl Default for LoadEstimate {
    fn default() -> Self {
        Self {
            pending: AtomicU32::new(0),
            estimate: AtomicU64::new(pack(UNKNOWN, 0.0)),
            updated: AtomicU64::new(0),
            clean_run: AtomicBool::new(false),
        }
    }
}

fn pack(latency: f32, failure: f32) -> u64 {
    (u64::from(latency.to_bits()) << 32) | u64::from(failure.to_bits())
}

fn unpack(word: u64) -> (f32, f32) {
    (
        f32::from_bits((word >> 32) as u32),
        f32::from_bits(word as u32),
    )
}

/// `exp(-elapsed / τ)`.
fn decay(elapsed: u64) -> f64 {
    (-(elapsed as f64) / nanos(DECAY) as f64).exp()
}

impl LoadEstimate {
    /// A call sent.
    #[inline]
    pub(crate) fn started(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// A call sent at `sent` ended at `at` (nanoseconds from the set's origin) as `sample`; a
    /// success also goes to the set's latency.
    pub(crate) fn finished(&self, set: &SetLatency, sent: u64, at: u64, sample: Sample) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        let rtt = at.saturating_sub(sent);
        if sample == Sample::Success {
            set.succeeded(rtt);
        }
        self.update(at, Some(rtt as f64), sample);
    }

    /// The outcome of a call [`Answered`](Sample::Answered) before, told at `at` by the end of
    /// its body: the failure pressure moves as for a success or a failure; the latency sample
    /// came with the answer.
    pub(crate) fn concluded(&self, at: u64, failed: bool) {
        let sample = if failed {
            Sample::Failure
        } else {
            Sample::Success
        };
        self.update(at, None, sample);
    }

    /// Moves `L` (when the sample has a time, `rtt`) and `F` at `at` as `sample` says.
    #[inline]
    fn update(&self, at: u64, rtt: Option<f64>, sample: Sample) {
        let last = self.updated.fetch_max(at, Ordering::AcqRel);
        let d = decay(at.saturating_sub(last));
        let before = self
            .estimate
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let (latency, failure) = unpack(word);
                let (latency, failure) = (f64::from(latency), f64::from(failure) * d);
                let latency = match rtt {
                    Some(rtt) if rtt > latency => rtt,
                    Some(rtt) if matches!(sample, Sample::Success | Sample::Answered) => {
                        latency * d + rtt * (1.0 - d)
                    }
                    _ => latency,
                };
                let failure = match sample {
                    Sample::Success => failure / 2.0,
                    Sample::Failure => (failure + 1.0) / 2.0,
                    Sample::Answered | Sample::Cancelled => failure,
                };
                Some(pack(latency as f32, failure as f32))
            });
        match sample {
            Sample::Failure => {
                let (latency, failure) = unpack(before.unwrap_or_else(|word| word));
                if latency >= 0.0 && f64::from(failure) * d < CLEAN_HISTORY {
                    self.clean_run.store(true, Ordering::Relaxed);
                }
            }
            Sample::Success => {
                if self.clean_run.load(Ordering::Relaxed) {
                    self.clean_run.store(false, Ordering::Relaxed);
                }
            }
            Sample::Answered | Sample::Cancelled => {}
        }
    }

    /// Whether the endpoint's failures since its latest success began from a clean history.
    #[inline]
    pub(crate) fn in_clean_run(&self) -> bool {
        self.clean_run.load(Ordering::Relaxed)
    }

    /// The cost at `at` (nanoseconds from the set's origin), its latency read as at least
    /// `floor` nanoseconds once known, with the failure penalty if `penalized`.
    pub(crate) fn cost(&self, at: u64, floor: f64, penalized: bool) -> EndpointCost {
        let pending = f64::from(self.pending.load(Ordering::Relaxed));
        let (latency, failure) = unpack(self.estimate.load(Ordering::Acquire));
        if latency < 0.0 {
            return EndpointCost(if pending == 0.0 {
                0.0
            } else {
                UNKNOWN_PENALTY + pending
            });
        }
        let d = decay(at.saturating_sub(self.updated.load(Ordering::Acquire)));
        let latency = (f64::from(latency) * d).max(FLOOR_NS).max(floor);
        let penalty = if penalized {
            1.0 + FAILURE_WEIGHT * f64::from(failure) * d
        } else {
            1.0
        };
        EndpointCost(latency * (pending + 1.0) * penalty)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: u64 = 1_000_000;

    /// The arithmetic of the module docs, in `f64`, one endpoint.
    #[derive(Debug, Clone, Copy)]
    struct Model {
        latency: Option<f64>,
        failure: f64,
        updated: u64,
        /// The set's fastest success, this endpoint's successes its only ones.
        set: f64,
        /// The failures since the latest success began with a known latency and `F < 1/16`.
        clean_run: bool,
    }

    impl Model {
        fn new() -> Self {
            Self {
                latency: None,
                failure: 0.0,
                updated: 0,
                set: f64::INFINITY,
                clean_run: false,
            }
        }

        fn finished(&mut self, sent: u64, at: u64, sample: Sample) {
            let rtt = (at - sent) as f64;
            if sample == Sample::Success {
                self.set = self.set.min(rtt);
            }
            self.update(at, Some(rtt), sample);
        }

        fn concluded(&mut self, at: u64, failed: bool) {
            let sample = if failed {
                Sample::Failure
            } else {
                Sample::Success
            };
            self.update(at, None, sample);
        }

        fn update(&mut self, at: u64, rtt: Option<f64>, sample: Sample) {
            let d = (-((at - self.updated.min(at)) as f64) / 1e9).exp();
            self.updated = self.updated.max(at);
            match sample {
                Sample::Failure if self.latency.is_some() && self.failure * d < 1.0 / 16.0 => {
                    self.clean_run = true;
                }
                Sample::Success => self.clean_run = false,
                _ => {}
            }
            let latency = self.latency.unwrap_or(-1.0);
            self.latency = match rtt {
                Some(rtt) if rtt > latency => Some(rtt),
                Some(rtt) if matches!(sample, Sample::Success | Sample::Answered) => {
                    Some(latency * d + rtt * (1.0 - d))
                }
                _ => self.latency,
            };
            self.failure = match sample {
                Sample::Success => self.failure * d / 2.0,
                Sample::Failure => (self.failure * d + 1.0) / 2.0,
                Sample::Answered | Sample::Cancelled => self.failure * d,
            };
        }

        fn fastest(&self) -> f64 {
            if self.set.is_finite() { self.set } else { 0.0 }
        }

        /// The cost, its latency floored at the set's when `held`, its failures weighed when
        /// `penalized`.
        fn cost(&self, at: u64, held: bool, penalized: bool) -> f64 {
            let Some(latency) = self.latency else {
                return 0.0;
            };
            let d = (-((at - self.updated.min(at)) as f64) / 1e9).exp();
            let floor = if held { self.fastest() } else { 0.0 };
            let weight = if penalized { 3.0 } else { 0.0 };
            (latency * d).max(1_000.0).max(floor) * (1.0 + weight * self.failure * d)
        }
    }

    fn sample() -> impl Strategy<Value = Sample> {
        prop_oneof![
            Just(Sample::Success),
            Just(Sample::Failure),
            Just(Sample::Answered),
            Just(Sample::Cancelled)
        ]
    }

    /// Calls one after another: (gap before it, its latency, how it ended), in ms.
    fn calls() -> impl Strategy<Value = Vec<(u64, u64, Sample)>> {
        proptest::collection::vec((0u64..3_000, 0u64..500, sample()), 1..60)
    }

    /// With each answered call, whether its body ends (when the next call is sent) and how.
    fn bodies() -> impl Strategy<Value = Vec<Option<bool>>> {
        proptest::collection::vec(proptest::option::of(any::<bool>()), 60)
    }

    fn run(estimate: &LoadEstimate, model: &mut Model, calls: &[(u64, u64, Sample)]) -> u64 {
        run_in(&SetLatency::default(), estimate, model, calls, &[])
    }

    fn run_in(
        set: &SetLatency,
        estimate: &LoadEstimate,
        model: &mut Model,
        calls: &[(u64, u64, Sample)],
        bodies: &[Option<bool>],
    ) -> u64 {
        let mut at = 0;
        let mut body = None;
        for (i, &(gap, rtt, sample)) in calls.iter().enumerate() {
            let sent = at + gap * MS;
            if let Some(failed) = body.take() {
                estimate.concluded(sent, failed);
                model.concluded(sent, failed);
            }
            at = sent + rtt * MS;
            estimate.started();
            estimate.finished(set, sent, at, sample);
            model.finished(sent, at, sample);
            if sample == Sample::Answered {
                body = bodies.get(i).copied().flatten();
            }
        }
        at
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1.0)
    }

    proptest! {
        /// Every call's update (and answered bodies' ends) and every read against the model,
        /// with nothing in flight, held (the latency floored at the set's) or not, penalized
        /// or not.
        #[test]
        fn the_cost_is_the_models(
            calls in calls(),
            bodies in bodies(),
            later in 0u64..5_000,
            held: bool,
            penalized: bool,
        ) {
            let (set, estimate) = (SetLatency::default(), LoadEstimate::default());
            let mut model = Model::new();
            let at = run_in(&set, &estimate, &mut model, &calls, &bodies);
            prop_assert!(close(set.get(), model.fastest()));
            prop_assert_eq!(estimate.in_clean_run(), model.clean_run);
            let floor = if held { set.get() } else { 0.0 };
            for t in [at, at + later * MS] {
                let (cost, expected) = (estimate.cost(t, floor, penalized).get(), model.cost(t, held, penalized));
                prop_assert!(close(cost, expected), "{cost} against {expected}");
            }
        }

        /// Two endpoints with the same history cost the same; the one whose last call failed
        /// instead of succeeding costs more, and the gap closes as time passes.
        #[test]
        fn a_failure_weighs_and_fades(calls in calls(), later in 1u64..5_000) {
            let (same, failed) = (LoadEstimate::default(), LoadEstimate::default());
            let at = run(&same, &mut Model::new(), &calls);
            run(&failed, &mut Model::new(), &calls);
            prop_assert_eq!(same.cost(at, 0.0, true), failed.cost(at, 0.0, true));
            // Slower than any call before: both latencies peak to the same sample.
            let (sent, end) = (at + 10 * MS, at + 610 * MS);
            for (estimate, sample) in [(&same, Sample::Success), (&failed, Sample::Failure)] {
                estimate.started();
                estimate.finished(&SetLatency::default(), sent, end, sample);
            }
            prop_assert!(failed.cost(end, 0.0, true) > same.cost(end, 0.0, true));
            let ratio = |t| failed.cost(t, 0.0, true).get() / same.cost(t, 0.0, true).get();
            prop_assert!(ratio(end) <= 1.0 + FAILURE_WEIGHT + 1e-6);
            prop_assert!(ratio(end + later * MS) <= ratio(end) + 1e-9);
            prop_assert!(ratio(end + 20_000 * MS) < 1.01);
        }
    }

    #[test]
    fn calls_in_flight_multiply_the_cost_and_an_unknown_endpoint_takes_one_call() {
        let estimate = LoadEstimate::default();
        assert_eq!(estimate.cost(0, 0.0, true).get(), 0.0);
        estimate.started();
        assert!(estimate.cost(0, 0.0, true).get() >= UNKNOWN_PENALTY);
        estimate.finished(&SetLatency::default(), 0, 10 * MS, Sample::Success);
        let one = estimate.cost(10 * MS, 0.0, true).get();
        assert!(close(one, (10 * MS) as f64));
        estimate.started();
        estimate.started();
        assert!(close(estimate.cost(10 * MS, 0.0, true).get(), 3.0 * one));
    }

    /// Two endpoints, each after one call of 10 ms that ended as `sample`.
    fn two_after_a_call(sample: Sample) -> (LoadEstimate, LoadEstimate) {
        let pair = (LoadEstimate::default(), LoadEstimate::default());
        for estimate in [&pair.0, &pair.1] {
            estimate.started();
            estimate.finished(&SetLatency::default(), 0, 10 * MS, sample);
        }
        pair
    }

    #[test]
    fn a_fast_failure_never_makes_an_endpoint_look_faster() {
        let (healthy, failing) = two_after_a_call(Sample::Success);
        for i in 1..100 {
            let at = 10 * MS + i * MS;
            failing.started();
            failing.finished(&SetLatency::default(), at, at, Sample::Failure);
        }
        let at = 110 * MS;
        assert!(failing.cost(at, 0.0, true) > healthy.cost(at, 0.0, true));
        assert!(failing.cost(at, 0.0, true).get() > 3.9 * healthy.cost(at, 0.0, true).get());
    }

    #[test]
    fn an_answered_call_weighs_as_a_failure_once_its_body_ends_in_one() {
        let (ok, failed) = two_after_a_call(Sample::Answered);
        assert_eq!(ok.cost(10 * MS, 0.0, true), failed.cost(10 * MS, 0.0, true));
        ok.concluded(20 * MS, false);
        failed.concluded(20 * MS, true);
        let ratio = failed.cost(20 * MS, 0.0, true).get() / ok.cost(20 * MS, 0.0, true).get();
        assert!(close(ratio, 1.0 + FAILURE_WEIGHT / 2.0), "{ratio}");
    }

    #[test]
    fn a_run_of_failures_is_clean_only_from_a_clean_history_and_until_a_success() {
        let estimate = LoadEstimate::default();
        let call = |at: u64, sample| {
            estimate.started();
            estimate.finished(&SetLatency::default(), at, at + 10 * MS, sample);
        };
        // Failing from its first call: no latency known before the run.
        call(0, Sample::Failure);
        assert!(!estimate.in_clean_run());
        for i in 1..10 {
            call(i * 20 * MS, Sample::Success);
        }
        assert!(!estimate.in_clean_run());
        // After a healthy spell: every failure of the run, until a success.
        for i in 10..15 {
            call(i * 20 * MS, Sample::Failure);
            assert!(estimate.in_clean_run());
        }
        call(300 * MS, Sample::Success);
        assert!(!estimate.in_clean_run());
        // Right after those failures the history is not clean.
        call(320 * MS, Sample::Failure);
        assert!(!estimate.in_clean_run());
    }

    #[test]
    fn an_endpoint_failing_from_its_first_call_weighs_against_the_sets_latency_once_held() {
        let set = SetLatency::default();
        let (healthy, failing) = (LoadEstimate::default(), LoadEstimate::default());
        for i in 0..100 {
            let at = i * 10 * MS;
            healthy.started();
            healthy.finished(&set, at, at + 10 * MS, Sample::Success);
            failing.started();
            failing.finished(&set, at, at + MS / 10, Sample::Failure);
        }
        let at = 1000 * MS;
        assert!(close(set.get(), (10 * MS) as f64));
        // Not held: its fast failures make it the cheapest, so it is tried and ejected.
        assert!(failing.cost(at, 0.0, true) < healthy.cost(at, 0.0, true));
        // Held: its penalty weighs against the set's fastest success.
        let held = failing.cost(at, set.get(), true).get();
        assert!(held > 3.9 * healthy.cost(at, 0.0, true).get());
        // The floor never lowers a latency of its own.
        assert_eq!(
            healthy.cost(at, MS as f64, true),
            healthy.cost(at, 0.0, true)
        );
    }
}
