//! What a run measured, computed from its trace after the fact.
//!
//! The engine only records, per request, when it was meant to be sent, how long it took from
//! then, how it ended, how many attempts reached the downstream and the breaker's state when
//! it was sent. Every figure of the report is arithmetic on that record, which is why the
//! tests can check each one on a hand-made trace with a known answer.

use std::time::Duration;

use serde::Serialize;

use crate::lab::scenario::{Scenario, Thresholds};

/// A breaker's state as a stack reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are rejected at once.
    Open,
    /// A few probe calls go through.
    HalfOpen,
}

/// Why a request failed, as far as the client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The downstream answered with an error.
    Downstream,
    /// A timeout ended it.
    Timeout,
    /// An open circuit breaker rejected it.
    CircuitOpen,
    /// A bulkhead, concurrency limit or load shedder rejected it.
    BulkheadFull,
    /// A retry budget refused it.
    Budget,
    /// Anything else.
    Other,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It failed.
    Failed(Failure),
    /// The stack's fallback answered it (with [`FALLBACK`](crate::lab::sim::FALLBACK)).
    Fallback,
    /// No answer came before the run ended.
    Unanswered,
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// Its intended send time, in nanoseconds from the start of the run.
    pub intended: u64,
    /// From its intended send time to its answer (or to the end of the run), in nanoseconds.
    pub latency: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Attempts that reached the downstream for it.
    pub attempts: u16,
    /// The key it was for.
    pub key: u32,
    /// The breaker's state for its key when it was sent.
    pub breaker: BreakerState,
}

impl RequestRecord {
    /// Whether the stack failed it (or answered it from its fallback) without ever calling
    /// the downstream: a fast rejection.
    pub fn rejected_locally(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_) | Outcome::Fallback) && self.attempts == 0
    }

    fn succeeded(&self) -> bool {
        self.outcome == Outcome::Success
    }

    fn at(&self) -> Duration {
        Duration::from_nanos(self.intended)
    }
}

/// Everything one run of one stack recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// How long arrivals went on.
    pub duration: Duration,
    /// Every request, in order of intended send time.
    pub requests: Vec<RequestRecord>,
    /// Attempts that reached the downstream in each second.
    pub attempts_per_second: Vec<u32>,
    /// The most calls in flight at the downstream at once.
    pub max_in_flight: u32,
}

/// Latency percentiles, in milliseconds, nearest rank.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many latencies.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of `latencies` in nanoseconds; `None` when there are none. Sorts them.
    pub fn of(latencies: &mut [u64]) -> Option<Self> {
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_unstable();
        Some(Self {
            count: latencies.len(),
            p50_ms: ms(quantile(latencies, 0.5)),
            p99_ms: ms(quantile(latencies, 0.99)),
            p999_ms: ms(quantile(latencies, 0.999)),
            max_ms: ms(latencies[latencies.len() - 1]),
        })
    }
}

/// The nearest-rank `q` quantile of sorted values.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Every figure of one run, as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Requests sent.
    pub requests: u64,
    /// Requests that succeeded.
    pub successes: u64,
    /// Share that succeeded.
    pub success_rate: f64,
    /// Share answered by the downstream or by the stack's fallback.
    pub success_rate_with_fallback: f64,
    /// Requests the stack's fallback answered.
    pub fallbacks: u64,
    /// Share that succeeded among the requests sent during the fault.
    pub success_rate_fault: Option<f64>,
    /// Successes within the client's deadline per second, during the fault span (or the run).
    pub goodput_rps: f64,
    /// Goodput as a share of the downstream's capacity.
    pub goodput_capacity: Option<f64>,
    /// Downstream attempts per request.
    pub amplification: f64,
    /// The highest amplification of any second.
    pub amplification_peak: f64,
    /// Amplification of the requests sent during the fault.
    pub amplification_fault: Option<f64>,
    /// Amplification of the requests sent during the fault while the breaker was open.
    pub amplification_open: Option<f64>,
    /// Latency of successes.
    pub latency_success: Option<Percentiles>,
    /// Latency of everything else: failures, fallback answers, and unanswered requests (until
    /// the end of the run).
    pub latency_failure: Option<Percentiles>,
    /// Latency of every request.
    pub latency_all: Option<Percentiles>,
    /// Latency of every request sent during the fault span.
    pub latency_span: Option<Percentiles>,
    /// p99 latency of the fast rejections during the fault, in milliseconds.
    pub fast_fail_p99_ms: Option<f64>,
    /// From the fault's start to the first fast rejection or open breaker, in seconds.
    pub time_to_detect_s: Option<f64>,
    /// Requests that failed between the fault's start and its detection.
    pub failed_before_detect: u64,
    /// From the fault's end to a success rate back at 99% of before, held 5 s, in seconds.
    pub time_to_recover_s: Option<f64>,
    /// Time the breaker was open while the downstream was healthy, in seconds (summed over
    /// keys).
    pub false_open_time_s: f64,
    /// Share of the requests sent while healthy within the fault span that were rejected.
    pub false_open_ratio: Option<f64>,
    /// The most calls in flight at the downstream at once.
    pub max_in_flight: u32,
    /// Requests the stack rejected itself.
    pub rejections: u64,
    /// Requests a bulkhead, concurrency limit or load shedder rejected.
    pub bulkhead_rejections: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Requests with no answer by the end of the run.
    pub unanswered: u64,
    /// Share of the requests sent while healthy that timed out.
    pub false_timeout_rate: f64,
    /// Times a breaker opened, over every key.
    pub breaker_opens: u64,
    /// Breaker transitions of the busiest key.
    pub breaker_transitions: u64,
    /// Transitions per flapping cycle.
    pub transitions_per_cycle: Option<f64>,
    /// Keys whose breaker opened.
    pub opened_keys: Vec<u32>,
    /// Success rate of the keys no fault hits, during the fault span.
    pub healthy_keys_success: Option<f64>,
    /// p99 of successes during the fault span over their p99 before it.
    pub accepted_p99_ratio: Option<f64>,
}

/// The figures of `trace`, a run of `scenario`.
pub fn summarize(scenario: &Scenario, trace: &Trace) -> Summary {
    let reqs = &trace.requests;
    let n = reqs.len() as u64;
    let windows = scenario.fault_windows();
    let phases = &scenario.workload.phases;
    let in_fault = |t: Duration| {
        windows.iter().any(|&(s, e, _)| s <= t && t < e)
            || phases.iter().any(|p| p.start <= t && t < p.end)
    };
    let span = scenario.span();
    let in_span = |t: Duration| span.is_some_and(|(s, e)| s <= t && t < e);
    let before_span = |t: Duration| span.is_none_or(|(s, _)| t < s);

    let successes = reqs.iter().filter(|r| r.succeeded()).count() as u64;
    let rejections = reqs.iter().filter(|r| r.rejected_locally()).count() as u64;
    let fallbacks = reqs
        .iter()
        .filter(|r| r.outcome == Outcome::Fallback)
        .count() as u64;
    let attempts: u64 = reqs.iter().map(|r| u64::from(r.attempts)).sum();

    let fault: Vec<&RequestRecord> = reqs.iter().filter(|r| in_fault(r.at())).collect();
    let fault_ok = fault.iter().filter(|r| r.succeeded()).count() as u64;
    let fault_attempts: u64 = fault.iter().map(|r| u64::from(r.attempts)).sum();
    let open: Vec<&&RequestRecord> = fault
        .iter()
        .filter(|r| r.breaker == BreakerState::Open)
        .collect();
    let open_attempts: u64 = open.iter().map(|r| u64::from(r.attempts)).sum();

    let mut offered = vec![0u32; trace.duration.as_secs().max(1) as usize];
    for r in reqs {
        if let Some(o) = offered.get_mut(r.at().as_secs() as usize) {
            *o += 1;
        }
    }
    let amplification_peak = offered
        .iter()
        .zip(&trace.attempts_per_second)
        .filter(|(o, _)| **o > 0)
        .map(|(&o, &a)| f64::from(a) / f64::from(o))
        .fold(0.0, f64::max);

    let latencies = |pick: &dyn Fn(&RequestRecord) -> bool| {
        let mut xs: Vec<u64> = reqs.iter().filter(|r| pick(r)).map(|r| r.latency).collect();
        Percentiles::of(&mut xs)
    };

    let (goodput_span, goodput_secs) = match span {
        Some((s, e)) => (Some((s, e)), (e - s).as_secs_f64()),
        None => (None, trace.duration.as_secs_f64()),
    };
    let deadline = scenario.workload.deadline.as_nanos() as u64;
    let good = reqs
        .iter()
        .filter(|r| goodput_span.is_none_or(|_| in_span(r.at())))
        .filter(|r| r.succeeded() && r.latency <= deadline)
        .count();
    let goodput_rps = good as f64 / goodput_secs;

    let detection = detect(scenario, reqs);
    let healthy_keys: Vec<u32> = (0..scenario.workload.keys)
        .filter(|k| !scenario.faulty_keys().contains(k))
        .collect();
    let healthy_keys_success = (!healthy_keys.is_empty() && span.is_some())
        .then(|| {
            let picked: Vec<_> = reqs
                .iter()
                .filter(|r| in_span(r.at()) && healthy_keys.contains(&r.key))
                .collect();
            ratio(
                picked.iter().filter(|r| r.succeeded()).count() as u64,
                picked.len() as u64,
            )
        })
        .flatten();

    let healthy_span: Vec<_> = reqs
        .iter()
        .filter(|r| in_span(r.at()) && scenario.healthy(r.at(), r.key))
        .collect();
    let healthy: Vec<_> = reqs
        .iter()
        .filter(|r| scenario.healthy(r.at(), r.key))
        .collect();

    let (opens, transitions, opened_keys) = breaker_changes(reqs, scenario.workload.keys);
    let cycles = scenario.cycles();

    let mut span_ok: Vec<u64> = reqs
        .iter()
        .filter(|r| in_span(r.at()) && r.succeeded())
        .map(|r| r.latency)
        .collect();
    let mut before_ok: Vec<u64> = reqs
        .iter()
        .filter(|r| before_span(r.at()) && r.succeeded())
        .map(|r| r.latency)
        .collect();
    let accepted_p99_ratio = match (
        span.and(Percentiles::of(&mut span_ok)),
        Percentiles::of(&mut before_ok),
    ) {
        (Some(during), Some(before)) if before.p99_ms > 0.0 => Some(during.p99_ms / before.p99_ms),
        _ => None,
    };

    Summary {
        requests: n,
        successes,
        success_rate: ratio(successes, n).unwrap_or(0.0),
        success_rate_with_fallback: ratio(successes + fallbacks, n).unwrap_or(0.0),
        fallbacks,
        success_rate_fault: ratio(fault_ok, fault.len() as u64),
        goodput_rps,
        goodput_capacity: scenario.downstream.capacity_rps().map(|c| goodput_rps / c),
        amplification: ratio(attempts, n).unwrap_or(0.0),
        amplification_peak,
        amplification_fault: ratio(fault_attempts, fault.len() as u64),
        amplification_open: ratio(open_attempts, open.len() as u64),
        latency_success: latencies(&|r| r.succeeded()),
        latency_failure: latencies(&|r| !r.succeeded()),
        latency_all: latencies(&|_| true),
        latency_span: span.and_then(|_| latencies(&|r| in_span(r.at()))),
        fast_fail_p99_ms: latencies(&|r| r.rejected_locally() && in_fault(r.at()))
            .map(|p| p.p99_ms),
        time_to_detect_s: detection.map(|(t, _)| t.as_secs_f64()),
        failed_before_detect: detection.map_or(0, |(_, failed)| failed),
        time_to_recover_s: recover(scenario, reqs).map(|t| t.as_secs_f64()),
        false_open_time_s: false_open_time(scenario, reqs).as_secs_f64(),
        false_open_ratio: ratio(
            healthy_span.iter().filter(|r| r.rejected_locally()).count() as u64,
            healthy_span.len() as u64,
        ),
        max_in_flight: trace.max_in_flight,
        rejections,
        bulkhead_rejections: reqs
            .iter()
            .filter(|r| r.outcome == Outcome::Failed(Failure::BulkheadFull))
            .count() as u64,
        timeouts: reqs
            .iter()
            .filter(|r| r.outcome == Outcome::Failed(Failure::Timeout))
            .count() as u64,
        unanswered: reqs
            .iter()
            .filter(|r| r.outcome == Outcome::Unanswered)
            .count() as u64,
        false_timeout_rate: ratio(
            healthy
                .iter()
                .filter(|r| r.outcome == Outcome::Failed(Failure::Timeout))
                .count() as u64,
            healthy.len() as u64,
        )
        .unwrap_or(0.0),
        breaker_opens: opens,
        breaker_transitions: transitions,
        transitions_per_cycle: (cycles > 0).then(|| transitions as f64 / f64::from(cycles)),
        opened_keys,
        healthy_keys_success,
        accepted_p99_ratio,
    }
}

/// From the fault's start to the first request the stack rejected itself or sent with its
/// breaker not closed, and the requests that failed in between.
fn detect(scenario: &Scenario, reqs: &[RequestRecord]) -> Option<(Duration, u64)> {
    let (start, end) = scenario.fault_windows().first().map(|w| (w.0, w.1))?;
    let end = scenario.span().map_or(end, |s| s.1);
    let mut failed = 0;
    for r in reqs.iter().filter(|r| r.at() >= start && r.at() < end) {
        if r.rejected_locally() || r.breaker != BreakerState::Closed {
            return Some((r.at() - start, failed));
        }
        if !r.succeeded() {
            failed += 1;
        }
    }
    None
}

/// From the end of the fault span to the first instant from which five consecutive seconds
/// each have a success rate of at least 99% of the rate before the fault, in 100 ms steps.
fn recover(scenario: &Scenario, reqs: &[RequestRecord]) -> Option<Duration> {
    const STEP: u64 = 100_000_000;
    const SECOND: usize = 10;
    const HOLD: usize = 5;
    let (start, end) = scenario.span()?;
    let before: Vec<_> = reqs.iter().filter(|r| r.at() < start).collect();
    let baseline = ratio(
        before.iter().filter(|r| r.succeeded()).count() as u64,
        before.len() as u64,
    )
    .unwrap_or(1.0);
    let buckets = (scenario.duration.as_nanos() as u64).div_ceil(STEP) as usize;
    let mut sent = vec![0u64; buckets];
    let mut ok = vec![0u64; buckets];
    for r in reqs {
        let b = (r.intended / STEP) as usize;
        if b < buckets {
            sent[b] += 1;
            ok[b] += u64::from(r.succeeded());
        }
    }
    let first = (end.as_nanos() as u64 / STEP) as usize;
    (first..buckets)
        .take_while(|b| b + HOLD * SECOND <= buckets)
        .find(|&b| {
            (0..HOLD).all(|k| {
                let range = b + k * SECOND..b + (k + 1) * SECOND;
                let s: u64 = sent[range.clone()].iter().sum();
                let o: u64 = ok[range].iter().sum();
                s == 0 || o as f64 >= 0.99 * baseline * s as f64
            })
        })
        .map(|b| Duration::from_nanos(b as u64 * STEP).saturating_sub(end))
}

/// Time the breaker of each key was open while the downstream was healthy for that key, from
/// the state sampled at each of its requests, summed over keys.
fn false_open_time(scenario: &Scenario, reqs: &[RequestRecord]) -> Duration {
    let keys = scenario.workload.keys;
    let mut total = 0u64;
    for key in 0..keys {
        let mut last: Option<&RequestRecord> = None;
        for r in reqs.iter().filter(|r| r.key == key) {
            if let Some(prev) = last
                && prev.breaker == BreakerState::Open
                && scenario.healthy(prev.at(), key)
            {
                total += r.intended - prev.intended;
            }
            last = Some(r);
        }
    }
    Duration::from_nanos(total)
}

/// Opens over every key, transitions of the busiest key, and the keys that opened.
///
/// A transition is the breaker opening (from closed, or again from half-open) or closing;
/// half-open is the probing step of a recovery, not a transition of its own, so a breaker that
/// opens once and recovers once makes two.
fn breaker_changes(reqs: &[RequestRecord], keys: u32) -> (u64, u64, Vec<u32>) {
    let mut opens = 0;
    let mut busiest = 0;
    let mut opened = Vec::new();
    for key in 0..keys {
        let mut state = BreakerState::Closed;
        let mut transitions = 0;
        for r in reqs.iter().filter(|r| r.key == key) {
            if r.breaker != state {
                if r.breaker != BreakerState::HalfOpen {
                    transitions += 1;
                }
                if r.breaker == BreakerState::Open {
                    opens += 1;
                    if !opened.contains(&key) {
                        opened.push(key);
                    }
                }
                state = r.breaker;
            }
        }
        busiest = busiest.max(transitions);
    }
    (opens, busiest, opened)
}

/// Per-second figures of a run, for the JSON report and the SVG timelines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Requests meant to be sent in each second.
    pub offered: Vec<u32>,
    /// Attempts that reached the downstream in each second.
    pub attempts: Vec<u32>,
    /// Successes among the requests of each second.
    pub successes: Vec<u32>,
    /// Success rate of the requests of each second.
    pub success_rate: Vec<Option<f64>>,
    /// p99 latency of the requests of each second, in milliseconds.
    pub p99_ms: Vec<Option<f64>>,
    /// Share of the requests of each second sent with the breaker open.
    pub breaker_open: Vec<f64>,
    /// Share of the requests of each second sent with the breaker half-open.
    pub breaker_half_open: Vec<f64>,
}

/// The per-second series of `trace`.
pub fn series(trace: &Trace) -> Series {
    let secs = trace.duration.as_secs().max(1) as usize;
    let mut buckets: Vec<Vec<u64>> = vec![Vec::new(); secs];
    let mut successes = vec![0u32; secs];
    let mut open = vec![0u32; secs];
    let mut half = vec![0u32; secs];
    for r in &trace.requests {
        let s = r.at().as_secs() as usize;
        if s >= secs {
            continue;
        }
        buckets[s].push(r.latency);
        successes[s] += u32::from(r.succeeded());
        open[s] += u32::from(r.breaker == BreakerState::Open);
        half[s] += u32::from(r.breaker == BreakerState::HalfOpen);
    }
    let offered: Vec<u32> = buckets.iter().map(|b| b.len() as u32).collect();
    let share = |xs: &[u32]| -> Vec<f64> {
        xs.iter()
            .zip(&offered)
            .map(|(&x, &o)| {
                if o == 0 {
                    0.0
                } else {
                    f64::from(x) / f64::from(o)
                }
            })
            .collect()
    };
    Series {
        success_rate: successes
            .iter()
            .zip(&offered)
            .map(|(&s, &o)| (o > 0).then(|| f64::from(s) / f64::from(o)))
            .collect(),
        p99_ms: buckets
            .iter_mut()
            .map(|b| Percentiles::of(b).map(|p| p.p99_ms))
            .collect(),
        breaker_open: share(&open),
        breaker_half_open: share(&half),
        attempts: trace
            .attempts_per_second
            .iter()
            .take(secs)
            .copied()
            .collect(),
        offered,
        successes,
    }
}

/// One threshold checked against a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The threshold's name, as in the scenario file.
    pub threshold: &'static str,
    /// Its limit, as text.
    pub limit: String,
    /// What the run showed, as text (`none` when it never happened).
    pub actual: String,
    /// Whether the run met it.
    pub pass: bool,
}

fn max_check(threshold: &'static str, limit: f64, actual: Option<f64>, unit: &str) -> Verdict {
    Verdict {
        threshold,
        limit: format!("<= {}{unit}", fmt_num(limit)),
        actual: actual.map_or("none".into(), |a| format!("{}{unit}", fmt_num(a))),
        pass: actual.is_some_and(|a| a <= limit + 1e-12),
    }
}

fn min_check(threshold: &'static str, limit: f64, actual: Option<f64>, unit: &str) -> Verdict {
    Verdict {
        threshold,
        limit: format!(">= {}{unit}", fmt_num(limit)),
        actual: actual.map_or("none".into(), |a| format!("{}{unit}", fmt_num(a))),
        pass: actual.is_some_and(|a| a >= limit - 1e-12),
    }
}

/// A number with at most four decimals, trailing zeros dropped.
pub fn fmt_num(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Every threshold of `thresholds` checked against `summary`.
pub fn verdicts(scenario: &Scenario, thresholds: &Thresholds, summary: &Summary) -> Vec<Verdict> {
    let t = thresholds;
    let s = summary;
    let mut out = Vec::new();
    let count = |x: u64| Some(x as f64);
    let latency = s.latency_span.or(s.latency_all);
    if let Some(l) = t.amplification_max {
        out.push(max_check("amplification_max", l, Some(s.amplification), ""));
    }
    if let Some(l) = t.amplification_fault_max {
        out.push(max_check(
            "amplification_fault_max",
            l,
            s.amplification_fault,
            "",
        ));
    }
    if let Some(l) = t.amplification_open_max {
        out.push(max_check(
            "amplification_open_max",
            l,
            s.amplification_open,
            "",
        ));
    }
    if let Some(l) = t.detect_max {
        let actual = s.time_to_detect_s.map(|x| x * 1e3);
        out.push(max_check("detect_max", ms_of(l), actual, " ms"));
    }
    if let Some(l) = t.recover_max {
        let actual = s.time_to_recover_s.map(|x| x * 1e3);
        out.push(max_check("recover_max", ms_of(l), actual, " ms"));
    }
    if let Some(l) = t.fast_fail_p99_max {
        out.push(max_check(
            "fast_fail_p99_max",
            ms_of(l),
            s.fast_fail_p99_ms,
            " ms",
        ));
    }
    if let Some(l) = t.p99_max {
        out.push(max_check(
            "p99_max",
            ms_of(l),
            latency.map(|p| p.p99_ms),
            " ms",
        ));
    }
    if let Some(l) = t.p999_max {
        out.push(max_check(
            "p999_max",
            ms_of(l),
            latency.map(|p| p.p999_ms),
            " ms",
        ));
    }
    if let Some(l) = t.false_open_time_max {
        let actual = Some(s.false_open_time_s * 1e3);
        out.push(max_check("false_open_time_max", ms_of(l), actual, " ms"));
    }
    if let Some(l) = t.false_open_ratio_max {
        out.push(max_check("false_open_ratio_max", l, s.false_open_ratio, ""));
    }
    if let Some(l) = t.rejections_max {
        out.push(max_check(
            "rejections_max",
            l as f64,
            count(s.rejections),
            "",
        ));
    }
    if let Some(l) = t.bulkhead_rejections_max {
        let actual = count(s.bulkhead_rejections);
        out.push(max_check("bulkhead_rejections_max", l as f64, actual, ""));
    }
    if let Some(l) = t.inflight_max {
        let actual = Some(f64::from(s.max_in_flight));
        out.push(max_check("inflight_max", l as f64, actual, ""));
    }
    if let Some(l) = t.breaker_opens_max {
        out.push(max_check(
            "breaker_opens_max",
            l as f64,
            count(s.breaker_opens),
            "",
        ));
    }
    if let Some(l) = t.transitions_per_cycle_max {
        let actual = s.transitions_per_cycle;
        out.push(max_check("transitions_per_cycle_max", l, actual, ""));
    }
    if let Some(l) = t.success_fault_min {
        out.push(min_check("success_fault_min", l, s.success_rate_fault, ""));
    }
    if let Some(l) = t.success_min {
        out.push(min_check("success_min", l, Some(s.success_rate), ""));
    }
    if let Some(l) = t.healthy_keys_success_min {
        let actual = s.healthy_keys_success;
        out.push(min_check("healthy_keys_success_min", l, actual, ""));
    }
    if let Some(only) = t.only_faulty_keys_open {
        let faulty = scenario.faulty_keys();
        let mut opened = s.opened_keys.clone();
        opened.sort_unstable();
        out.push(Verdict {
            threshold: "only_faulty_keys_open",
            limit: format!("opened = {faulty:?}"),
            actual: format!("opened = {opened:?}"),
            pass: !only || opened == faulty,
        });
    }
    if let Some(l) = t.false_timeout_max {
        out.push(max_check(
            "false_timeout_max",
            l,
            Some(s.false_timeout_rate),
            "",
        ));
    }
    if let Some(l) = t.goodput_min {
        out.push(min_check("goodput_min", l, s.goodput_capacity, ""));
    }
    if let Some(l) = t.accepted_p99_ratio_max {
        out.push(max_check(
            "accepted_p99_ratio_max",
            l,
            s.accepted_p99_ratio,
            "",
        ));
    }
    out
}
