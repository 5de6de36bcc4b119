//! What a run measured, computed from its trace after the fact.
//!
//! The engine only records, per request, when it was meant to be sent, how long it took from
//! then, how it ended, how many attempts reached the downstream, its client and key, and the
//! breaker's state when it was sent; the downstream's tap adds attempts per second, calls in
//! flight and early retries. Every figure of the report is arithmetic on that record, which is
//! why the tests can check each one on a hand-made trace with a known answer.
//!
//! - [`summarize`]: the figures of a run ([`Summary`]);
//! - [`series`]: per-second figures for the timelines;
//! - [`verdicts`]: the scenario's thresholds checked against a summary.

mod series;
mod verdicts;

use std::time::Duration;

use serde::Serialize;

use crate::lab::scenario::{Mode, Scenario};

pub use self::series::{Series, series};
pub use self::verdicts::{Verdict, fmt_num, verdicts};

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
    /// The downstream's connection failed (an `error` fault).
    Downstream,
    /// The downstream answered with this error status.
    Status(u16),
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
    /// The stack's fallback answered it.
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
    /// The client that sent it.
    pub client: u32,
    /// Its client's breaker state for its key when it was sent.
    pub breaker: BreakerState,
    /// Endpoints its client had ejected when it was sent.
    pub ejected: u32,
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

    /// Whether it succeeded within `deadline` ns of its intended send time.
    fn good(&self, deadline: u64) -> bool {
        self.succeeded() && self.latency <= deadline
    }

    /// Its attempts that did not bring a success.
    fn failed_calls(&self) -> u64 {
        u64::from(self.attempts).saturating_sub(u64::from(self.succeeded()))
    }

    fn at(&self) -> Duration {
        Duration::from_nanos(self.intended)
    }
}

/// Everything one run of one stack recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// How long requests were sent.
    pub duration: Duration,
    /// How many client stacks sent them.
    pub clients: u32,
    /// Whether each client's breaker keeps a state per key.
    pub keyed_breaker: bool,
    /// Every request, in order of intended send time.
    pub requests: Vec<RequestRecord>,
    /// Attempts that reached the downstream in each second.
    pub attempts_per_second: Vec<u32>,
    /// The longest an attempt of each second waited for a downstream worker, in microseconds;
    /// empty when the downstream has no workers.
    pub queue_wait_per_second: Vec<u64>,
    /// The most calls in flight at the downstream at once.
    pub max_in_flight: u32,
    /// The most calls in flight at the downstream at once from one client.
    pub max_in_flight_per_client: u32,
    /// Retries a client sent to a key before a `Retry-After` it had received for that key
    /// expired.
    pub early_retries: u64,
    /// Per endpoint, the attempts it received during the fault span and those it served with
    /// a success within the deadline.
    pub endpoint_fault: Vec<(u64, u64)>,
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
    /// Share that succeeded among the requests sent during the faults and load phases.
    pub success_rate_fault: Option<f64>,
    /// Successes within the deadline per second, among the requests sent during the fault
    /// span (or the run).
    pub goodput_rps: f64,
    /// The attainable rate over the same span: the least of the offered load, the
    /// downstream's capacity and its quota, averaged.
    pub attainable_rps: f64,
    /// Goodput as a share of the attainable rate.
    pub goodput: Option<f64>,
    /// Successes within the deadline per second after the last fault or load phase.
    pub goodput_after_rps: Option<f64>,
    /// The attainable rate after the last fault or load phase.
    pub attainable_after_rps: Option<f64>,
    /// Goodput after the last fault or load phase as a share of its attainable rate.
    pub goodput_after: Option<f64>,
    /// Downstream attempts per request.
    pub amplification: f64,
    /// The highest amplification of any second.
    pub amplification_peak: f64,
    /// Amplification of the requests sent during the faults and load phases.
    pub amplification_fault: Option<f64>,
    /// Amplification of the requests sent during the fault while their breaker was open.
    pub amplification_open: Option<f64>,
    /// Amplification of the requests sent after the last fault or load phase.
    pub amplification_after: Option<f64>,
    /// Latency of successes.
    pub latency_success: Option<Percentiles>,
    /// Latency of everything else: failures, fallback answers, and unanswered requests (until
    /// the end of the run).
    pub latency_failure: Option<Percentiles>,
    /// Latency of every request.
    pub latency_all: Option<Percentiles>,
    /// Latency of every request sent during the fault span.
    pub latency_span: Option<Percentiles>,
    /// Latency of every request sent after the last fault or load phase.
    pub latency_after: Option<Percentiles>,
    /// p99 latency of the fast rejections during the fault, in milliseconds.
    pub fast_fail_p99_ms: Option<f64>,
    /// The median client's time from the first fault's (or load phase's) start to its first
    /// fast rejection or breaker not closed, in seconds; `None` when the median client never
    /// got there.
    pub time_to_detect_s: Option<f64>,
    /// The median client's failed calls from the first fault's start until then.
    pub detect_calls: u64,
    /// The 99th-percentile client's failed calls from the first fault's start until then.
    pub detect_calls_p99: u64,
    /// Clients that detected the fault.
    pub clients_detected: u32,
    /// From the last fault's end to a rate of successes within the deadline back at 99% of
    /// before, held 5 s, in seconds.
    pub time_to_recover_s: Option<f64>,
    /// Time a breaker was open while the downstream was healthy, in seconds (summed over
    /// breakers).
    pub false_open_time_s: f64,
    /// Share of the requests sent while healthy within the fault span that were rejected.
    pub false_open_ratio: Option<f64>,
    /// The most calls in flight at the downstream at once.
    pub max_in_flight: u32,
    /// The most calls in flight at the downstream at once from one client.
    pub max_in_flight_per_client: u32,
    /// The stack's concurrency limit per client, when it has one.
    pub concurrency_limit: Option<u64>,
    /// Requests the stack rejected itself.
    pub rejections: u64,
    /// Requests a bulkhead, concurrency limit or load shedder rejected.
    pub bulkhead_rejections: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Requests answered with an error status.
    pub status_failures: u64,
    /// Requests with no answer by the end of the run.
    pub unanswered: u64,
    /// Share of the requests sent while healthy that timed out.
    pub false_timeout_rate: f64,
    /// Times a breaker opened, over every client and key.
    pub breaker_opens: u64,
    /// Breaker transitions of the busiest breaker.
    pub breaker_transitions: u64,
    /// Transitions per flapping cycle.
    pub transitions_per_cycle: Option<f64>,
    /// Keys whose requests met an open breaker.
    pub opened_keys: Vec<u32>,
    /// Success rate of the keys no fault hits, during the fault span.
    pub healthy_keys_success: Option<f64>,
    /// p99 of successes during the fault span over their p99 before it.
    pub accepted_p99_ratio: Option<f64>,
    /// Retries sent to a key before a `Retry-After` received for it expired.
    pub early_retries: u64,
    /// The median client's time from the first fault's start to its first request sent with
    /// an endpoint ejected, in ms; only for a downstream of several endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eject_detect_ms: Option<f64>,
    /// The most endpoints a client had ejected when it sent a request; only for a downstream
    /// of several endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_max: Option<u32>,
    /// Share of the attempts that reached endpoints no fault hits during the fault span that
    /// they served with a success within the deadline; only for a downstream of several
    /// endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_endpoints_success: Option<f64>,
}

/// The figures of `trace`, a run of `scenario`.
pub fn summarize(scenario: &Scenario, trace: &Trace) -> Summary {
    let reqs = &trace.requests;
    let n = reqs.len() as u64;
    let endpoints = scenario.downstream.endpoints > 1;
    let windows = scenario.fault_windows();
    let phases = &scenario.workload.phases;
    let in_fault = |t: Duration| {
        windows.iter().any(|&(s, e, _)| s <= t && t < e)
            || phases.iter().any(|p| p.start <= t && t < p.end)
    };
    let span = scenario.span();
    let in_span = |t: Duration| span.is_some_and(|(s, e)| s <= t && t < e);
    let before_span = |t: Duration| span.is_none_or(|(s, _)| t < s);
    let after = span.map(|(_, e)| e).filter(|&e| e < trace.duration);
    let is_after = |t: Duration| after.is_some_and(|a| t >= a);
    let deadline = scenario.workload.deadline.as_nanos() as u64;

    let successes = reqs.iter().filter(|r| r.succeeded()).count() as u64;
    let rejections = reqs.iter().filter(|r| r.rejected_locally()).count() as u64;
    let fallbacks = reqs
        .iter()
        .filter(|r| r.outcome == Outcome::Fallback)
        .count() as u64;
    let attempts: u64 = reqs.iter().map(|r| u64::from(r.attempts)).sum();
    let count =
        |pick: &dyn Fn(&RequestRecord) -> bool| reqs.iter().filter(|r| pick(r)).count() as u64;
    let attempts_of = |pick: &dyn Fn(&RequestRecord) -> bool| -> u64 {
        reqs.iter()
            .filter(|r| pick(r))
            .map(|r| u64::from(r.attempts))
            .sum()
    };

    let fault_n = count(&|r| in_fault(r.at()));
    let fault_ok = count(&|r| in_fault(r.at()) && r.succeeded());
    let fault_attempts = attempts_of(&|r| in_fault(r.at()));
    let open = |r: &RequestRecord| in_fault(r.at()) && r.breaker == BreakerState::Open;
    let open_n = count(&open);
    let open_attempts = attempts_of(&open);
    let after_n = count(&|r| is_after(r.at()));
    let after_attempts = attempts_of(&|r| is_after(r.at()));

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

    let (from, to) = span.unwrap_or((Duration::ZERO, trace.duration));
    let good = count(&|r| r.at() >= from && r.at() < to && r.good(deadline));
    let seconds = (to - from).as_secs_f64();
    let goodput_rps = good as f64 / seconds;
    let attainable = attainable(scenario, reqs, from, to);
    // (good, attainable, seconds) after the last fault or load phase.
    let after_figures = after.map(|a| {
        (
            count(&|r| r.at() >= a && r.good(deadline)) as f64,
            self::attainable(scenario, reqs, a, trace.duration),
            (trace.duration - a).as_secs_f64(),
        )
    });

    let detection = detect(scenario, trace);
    let faulty_keys = scenario.faulty_keys();
    let healthy_keys: Vec<u32> = (0..scenario.workload.keys)
        .filter(|k| !faulty_keys.contains(k))
        .collect();
    let healthy_keys_success = (!healthy_keys.is_empty() && span.is_some())
        .then(|| {
            let pick = |r: &RequestRecord| in_span(r.at()) && healthy_keys.contains(&r.key);
            ratio(count(&|r| pick(r) && r.succeeded()), count(&pick))
        })
        .flatten();

    let healthy_span = |r: &RequestRecord| in_span(r.at()) && scenario.healthy(r.at(), r.key);
    let healthy_n = count(&|r| scenario.healthy(r.at(), r.key));
    let false_timeouts = count(&|r| {
        r.outcome == Outcome::Failed(Failure::Timeout) && scenario.healthy(r.at(), r.key)
    });

    let breakers = breaker_changes(scenario, trace);
    let cycles = scenario.cycles();

    let accepted_p99_ratio = match (
        span.and(latencies(&|r| in_span(r.at()) && r.succeeded())),
        latencies(&|r| before_span(r.at()) && r.succeeded()),
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
        success_rate_fault: ratio(fault_ok, fault_n),
        goodput_rps,
        attainable_rps: attainable / seconds,
        goodput: (attainable > 0.0).then(|| good as f64 / attainable),
        goodput_after_rps: after_figures.map(|(g, _, secs)| g / secs),
        attainable_after_rps: after_figures.map(|(_, a, secs)| a / secs),
        goodput_after: after_figures
            .filter(|(_, a, _)| *a > 0.0)
            .map(|(g, a, _)| g / a),
        amplification: ratio(attempts, n).unwrap_or(0.0),
        amplification_peak,
        amplification_fault: ratio(fault_attempts, fault_n),
        amplification_open: ratio(open_attempts, open_n),
        amplification_after: ratio(after_attempts, after_n),
        latency_success: latencies(&|r| r.succeeded()),
        latency_failure: latencies(&|r| !r.succeeded()),
        latency_all: latencies(&|_| true),
        latency_span: span.and_then(|_| latencies(&|r| in_span(r.at()))),
        latency_after: after.and_then(|_| latencies(&|r| is_after(r.at()))),
        fast_fail_p99_ms: latencies(&|r| r.rejected_locally() && in_fault(r.at()))
            .map(|p| p.p99_ms),
        time_to_detect_s: detection.time.map(|t| t.as_secs_f64()),
        detect_calls: detection.calls,
        detect_calls_p99: detection.calls_p99,
        clients_detected: detection.clients,
        time_to_recover_s: recover(scenario, reqs).map(|t| t.as_secs_f64()),
        false_open_time_s: breakers.false_open.as_secs_f64(),
        false_open_ratio: ratio(
            count(&|r| healthy_span(r) && r.rejected_locally()),
            count(&healthy_span),
        ),
        max_in_flight: trace.max_in_flight,
        max_in_flight_per_client: trace.max_in_flight_per_client,
        concurrency_limit: None,
        rejections,
        bulkhead_rejections: count(&|r| r.outcome == Outcome::Failed(Failure::BulkheadFull)),
        timeouts: count(&|r| r.outcome == Outcome::Failed(Failure::Timeout)),
        status_failures: count(&|r| matches!(r.outcome, Outcome::Failed(Failure::Status(_)))),
        unanswered: count(&|r| r.outcome == Outcome::Unanswered),
        false_timeout_rate: ratio(false_timeouts, healthy_n).unwrap_or(0.0),
        breaker_opens: breakers.opens,
        breaker_transitions: breakers.busiest,
        transitions_per_cycle: (cycles > 0).then(|| breakers.busiest as f64 / f64::from(cycles)),
        opened_keys: breakers.opened_keys,
        healthy_keys_success,
        accepted_p99_ratio,
        early_retries: trace.early_retries,
        eject_detect_ms: endpoints.then(|| eject_detect(scenario, trace)).flatten(),
        ejected_max: endpoints.then(|| reqs.iter().map(|r| r.ejected).max().unwrap_or(0)),
        healthy_endpoints_success: endpoints
            .then(|| healthy_endpoints_success(scenario, trace))
            .flatten(),
    }
}

/// The median client's time from the first fault's start to its first request sent with an
/// endpoint ejected, in ms; a client that never ejected counts as never.
fn eject_detect(scenario: &Scenario, trace: &Trace) -> Option<f64> {
    let (start, end) = scenario.span()?;
    let (s, e) = (start.as_nanos() as u64, end.as_nanos() as u64);
    let mut at: Vec<Option<u64>> = vec![None; trace.clients.max(1) as usize];
    for r in trace
        .requests
        .iter()
        .filter(|r| r.intended >= s && r.intended < e && r.ejected > 0)
    {
        let c = &mut at[r.client as usize];
        c.get_or_insert(r.intended - s);
    }
    at.sort_by_key(|t| t.unwrap_or(u64::MAX));
    at[(at.len() - 1) / 2].map(|ns| ns as f64 / 1e6)
}

/// Successes within the deadline over attempts, at the endpoints no fault hits, during the
/// fault span.
fn healthy_endpoints_success(scenario: &Scenario, trace: &Trace) -> Option<f64> {
    let (mut attempts, mut served) = (0, 0);
    for (e, &(a, s)) in trace.endpoint_fault.iter().enumerate() {
        if !scenario.faults.iter().any(|f| f.hits_endpoint(e as u32)) {
            attempts += a;
            served += s;
        }
    }
    ratio(served, attempts)
}

const STEP: u64 = 100_000_000;

/// The successes a stack could have had among the requests sent in `[from, to)`: per 100 ms,
/// the least of the offered rate (the workload's in open loop, what was sent in closed loop),
/// the downstream's capacity at the time and its quota.
fn attainable(scenario: &Scenario, reqs: &[RequestRecord], from: Duration, to: Duration) -> f64 {
    let (from, to) = (from.as_nanos() as u64, to.as_nanos() as u64);
    let steps = (to - from).div_ceil(STEP) as usize;
    let mut sent = vec![0u64; steps];
    if scenario.workload.mode == Mode::Closed {
        for r in reqs
            .iter()
            .filter(|r| r.intended >= from && r.intended < to)
        {
            sent[((r.intended - from) / STEP) as usize] += 1;
        }
    }
    (0..steps)
        .map(|i| {
            let start = from + i as u64 * STEP;
            let len = (to.min(start + STEP) - start) as f64 / 1e9;
            let mid = Duration::from_nanos(start + STEP / 2);
            let offered = match scenario.workload.mode {
                Mode::Open => scenario.workload.rate_at(mid),
                Mode::Closed => sent[i] as f64 / len,
            };
            scenario.attainable_at(mid, offered) * len
        })
        .sum()
}

/// How clients detected the first fault, over clients.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Detection {
    time: Option<Duration>,
    calls: u64,
    calls_p99: u64,
    clients: u32,
}

/// Per client, from the first fault's (or load phase's) start to the first request it
/// rejected itself or sent with its breaker not closed, and its failed calls (attempts that
/// brought no success) in between; then the median client's time and calls, and the
/// 99th-percentile client's calls. A client that never detected counts as never (time) and
/// with every failed call it sent until the span's end.
fn detect(scenario: &Scenario, trace: &Trace) -> Detection {
    let none = Detection {
        time: None,
        calls: 0,
        calls_p99: 0,
        clients: 0,
    };
    let Some((start, end)) = scenario.span() else {
        return none;
    };
    let clients = trace.clients.max(1) as usize;
    let mut at: Vec<Option<u64>> = vec![None; clients];
    let mut calls = vec![0u64; clients];
    let (s, e) = (start.as_nanos() as u64, end.as_nanos() as u64);
    for r in trace
        .requests
        .iter()
        .filter(|r| r.intended >= s && r.intended < e)
    {
        let c = r.client as usize;
        if at[c].is_some() {
            continue;
        }
        if r.rejected_locally() || r.breaker != BreakerState::Closed {
            at[c] = Some(r.intended - s);
        } else {
            calls[c] += r.failed_calls();
        }
    }
    let mut times: Vec<u64> = at.iter().map(|t| t.unwrap_or(u64::MAX)).collect();
    times.sort_unstable();
    calls.sort_unstable();
    let median = quantile(&times, 0.5);
    Detection {
        time: (median != u64::MAX).then(|| Duration::from_nanos(median)),
        calls: quantile(&calls, 0.5),
        calls_p99: quantile(&calls, 0.99),
        clients: at.iter().filter(|t| t.is_some()).count() as u32,
    }
}

/// From the end of the fault span to the first instant from which five consecutive seconds
/// each have a rate of successes within the deadline of at least 99% of the rate before the
/// fault, in 100 ms steps.
fn recover(scenario: &Scenario, reqs: &[RequestRecord]) -> Option<Duration> {
    const SECOND: usize = 10;
    const HOLD: usize = 5;
    let (start, end) = scenario.span()?;
    let deadline = scenario.workload.deadline.as_nanos() as u64;
    let before: Vec<_> = reqs.iter().filter(|r| r.at() < start).collect();
    let baseline = ratio(
        before.iter().filter(|r| r.good(deadline)).count() as u64,
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
            ok[b] += u64::from(r.good(deadline));
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

struct Breakers {
    opens: u64,
    busiest: u64,
    opened_keys: Vec<u32>,
    false_open: Duration,
}

/// Per breaker (a client's, or a client's for one key when its breaker is keyed), from the
/// state sampled at each of its requests: opens over every breaker, the transitions of the
/// busiest one, the keys whose requests met an open breaker, and the time a breaker was open
/// while the downstream was healthy for the key of the request that saw it.
///
/// A transition is the breaker opening (from closed, or again from half-open) or closing;
/// half-open is the probing step of a recovery, not a transition of its own, so a breaker that
/// opens once and recovers once makes two.
fn breaker_changes(scenario: &Scenario, trace: &Trace) -> Breakers {
    let keys = scenario.workload.keys as usize;
    let per_client = if trace.keyed_breaker { keys } else { 1 };
    let groups = trace.clients.max(1) as usize * per_client;
    let mut state = vec![BreakerState::Closed; groups];
    let mut transitions = vec![0u64; groups];
    let mut last: Vec<Option<(u64, BreakerState, u32)>> = vec![None; groups];
    let mut opens = 0;
    let mut opened = vec![false; keys];
    let mut false_open = 0u64;
    for r in &trace.requests {
        let g = r.client as usize * per_client
            + if trace.keyed_breaker {
                r.key as usize
            } else {
                0
            };
        if let Some((t, BreakerState::Open, key)) = last[g]
            && scenario.healthy(Duration::from_nanos(t), key)
        {
            false_open += r.intended - t;
        }
        last[g] = Some((r.intended, r.breaker, r.key));
        if r.breaker == BreakerState::Open {
            opened[r.key as usize] = true;
        }
        if r.breaker != state[g] {
            if r.breaker != BreakerState::HalfOpen {
                transitions[g] += 1;
            }
            if r.breaker == BreakerState::Open {
                opens += 1;
            }
            state[g] = r.breaker;
        }
    }
    Breakers {
        opens,
        busiest: transitions.iter().copied().max().unwrap_or(0),
        opened_keys: (0..keys as u32).filter(|&k| opened[k as usize]).collect(),
        false_open: Duration::from_nanos(false_open),
    }
}
