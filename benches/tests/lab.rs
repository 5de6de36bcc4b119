//! The lab's arithmetic on hand-made traces with known answers, its scenario files' error
//! messages, and its determinism.

use std::time::Duration;

use seawall_bench::lab::cli::{Options, parse_args};
use seawall_bench::lab::metrics::{
    BreakerState, Failure, Outcome, Percentiles, RequestRecord, Trace, quantile, series, summarize,
    verdicts,
};
use seawall_bench::lab::report::{self, Report, SCHEMA_VERSION};
use seawall_bench::lab::scenario::Scenario;
use seawall_bench::lab::stacks::{Settings, StackKind};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// A 10 s scenario at 10 req/s with an outage from 2 s to 4 s.
fn scenario() -> Scenario {
    Scenario::parse(
        "test.toml",
        r#"
id = "test"
duration = "10s"
[workload]
rate = 10
[downstream]
workers = 2
[[faults]]
kind = "error"
start = "2s"
end = "4s"
[thresholds]
amplification_fault_max = 1.1
detect_max = "500ms"
recover_max = "2s"
"#,
    )
    .unwrap()
}

fn ok(intended: u64) -> RequestRecord {
    RequestRecord {
        intended,
        latency: 10 * MS,
        outcome: Outcome::Success,
        attempts: 1,
        key: 0,
        client: 0,
        breaker: BreakerState::Closed,
        ejected: 0,
    }
}

fn failed(intended: u64, attempts: u16) -> RequestRecord {
    RequestRecord {
        outcome: Outcome::Failed(Failure::Downstream),
        attempts,
        ..ok(intended)
    }
}

fn trace(requests: Vec<RequestRecord>) -> Trace {
    let mut attempts_per_second = vec![0; 10];
    for r in &requests {
        attempts_per_second[(r.intended / S) as usize] += u32::from(r.attempts);
    }
    Trace {
        duration: Duration::from_secs(10),
        clients: 1,
        keyed_breaker: false,
        endpoint_fault: Vec::new(),
        requests,
        attempts_per_second,
        queue_wait_per_second: Vec::new(),
        max_in_flight: 3,
        max_in_flight_per_client: 3,
        early_retries: 0,
    }
}

/// 100 requests, one every 100 ms. During the outage (2 s to 4 s): the first three fail at the
/// downstream after 4 attempts each, then the breaker opens and the rest are rejected without
/// an attempt. Successes come back at 5 s.
fn outage_trace() -> Trace {
    let requests = (0..100)
        .map(|i| {
            let t = i * 100 * MS;
            match t {
                t if t < 2 * S => ok(t),
                t if t < 2 * S + 300 * MS => failed(t, 4),
                t if t < 5 * S => RequestRecord {
                    latency: 0,
                    breaker: BreakerState::Open,
                    ..failed(t, 0)
                },
                t => ok(t),
            }
        })
        .collect();
    trace(requests)
}

#[test]
fn amplification_counts_attempts_per_request_overall_in_the_fault_and_at_the_peak() {
    let summary = summarize(&scenario(), &outage_trace());
    // 70 successes with one attempt each, 3 failures with four: 82 attempts for 100 requests.
    assert_eq!(summary.requests, 100);
    assert!((summary.amplification - 0.82).abs() < 1e-12);
    // The fault (2 s to 4 s) holds 20 requests and 12 attempts.
    assert_eq!(summary.amplification_fault, Some(0.6));
    // Second 2 holds 12 attempts for 10 requests.
    assert!((summary.amplification_peak - 1.2).abs() < 1e-12);
    // While the breaker was open during the fault: 17 requests, no attempt.
    assert_eq!(summary.amplification_open, Some(0.0));
}

#[test]
fn transitions_count_openings_and_closings_not_half_open_probing() {
    // Closed, open, a failed probe (half-open, open again), a good one (half-open, closed).
    let states = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::Closed,
    ];
    let requests = states
        .iter()
        .enumerate()
        .map(|(i, &breaker)| RequestRecord {
            breaker,
            ..ok(i as u64 * S)
        })
        .collect();
    let summary = summarize(&scenario(), &trace(requests));
    assert_eq!(summary.breaker_opens, 2);
    assert_eq!(summary.breaker_transitions, 3, "open, open again, closed");
}

#[test]
fn fallback_answers_count_apart_from_the_downstreams() {
    let mut t = outage_trace();
    // The stack's fallback answered 10 of the 17 calls the open breaker rejected.
    for r in t
        .requests
        .iter_mut()
        .filter(|r| r.rejected_locally())
        .take(10)
    {
        r.outcome = Outcome::Fallback;
    }
    let summary = summarize(&scenario(), &t);
    assert_eq!(summary.fallbacks, 10);
    assert!((summary.success_rate - 0.70).abs() < 1e-12);
    assert!((summary.success_rate_with_fallback - 0.80).abs() < 1e-12);
    // Fast answers from a fallback still count as fast rejections.
    assert_eq!(summary.rejections, 27);
}

#[test]
fn time_to_detect_runs_from_fault_start_to_first_fast_rejection() {
    let summary = summarize(&scenario(), &outage_trace());
    let detect = summary.time_to_detect_s.unwrap();
    assert!((detect - 0.3).abs() < 1e-9, "{detect}");
    // Three failed requests of four attempts each: 12 failed calls.
    assert_eq!(summary.detect_calls, 12);
    assert_eq!(summary.rejections, 27);
}

#[test]
fn time_to_recover_runs_from_fault_end_to_success_held_five_seconds() {
    let summary = summarize(&scenario(), &outage_trace());
    // The fault ends at 4 s; successes are back from 5 s and hold to the end (10 s).
    let recover = summary.time_to_recover_s.unwrap();
    assert!((recover - 1.0).abs() < 1e-9, "{recover}");
    // Breaker open from 4 s to 5 s with a healthy downstream: 1 s of false-open time.
    assert!((summary.false_open_time_s - 1.0).abs() < 1e-9);
}

#[test]
fn recovery_that_does_not_hold_five_seconds_is_no_recovery() {
    let mut t = outage_trace();
    // A relapse at 8 s: from 5 s, no five healthy seconds fit before the end.
    for r in t.requests.iter_mut().filter(|r| r.intended >= 8 * S) {
        *r = failed(r.intended, 1);
    }
    assert_eq!(summarize(&scenario(), &t).time_to_recover_s, None);
}

#[test]
fn percentiles_are_nearest_rank_from_intended_send_time() {
    let mut latencies: Vec<u64> = (1..=1000).rev().map(|ms| ms * MS).collect();
    let p = Percentiles::of(&mut latencies).unwrap();
    assert_eq!(
        (p.p50_ms, p.p99_ms, p.p999_ms, p.max_ms),
        (500.0, 990.0, 999.0, 1000.0)
    );
    assert_eq!(quantile(&[7], 0.999), 7);
    assert_eq!(Percentiles::of(&mut []), None);

    // A request sent late still counts from when it was meant to go: 100 requests, the last
    // one answered 2 s after its intended time.
    let mut requests: Vec<_> = (0..100).map(|i| ok(i * 100 * MS)).collect();
    requests[99].latency = 2 * S;
    let summary = summarize(&scenario(), &trace(requests));
    assert_eq!(summary.latency_success.unwrap().max_ms, 2000.0);
    assert_eq!(summary.latency_success.unwrap().p99_ms, 10.0);
}

#[test]
fn series_buckets_requests_by_intended_second() {
    let s = series(&outage_trace(), 1_000_000_000);
    assert_eq!(s.offered, vec![10; 10]);
    assert_eq!(s.attempts[2], 12);
    assert_eq!(s.successes[2], 0);
    assert_eq!(s.success_rate[0], Some(1.0));
    assert_eq!(s.breaker_open[3], 1.0);
    assert_eq!(s.p99_ms[0], Some(10.0));
}

#[test]
fn verdicts_compare_each_threshold() {
    let scenario = scenario();
    let summary = summarize(&scenario, &outage_trace());
    let v = verdicts(&scenario, &scenario.thresholds, &summary);
    let names: Vec<_> = v.iter().map(|v| (v.threshold, v.pass)).collect();
    assert_eq!(
        names,
        [
            ("amplification_fault_max", true),
            ("detect_max", true),
            ("recover_max", true)
        ]
    );
    assert_eq!(v[1].actual, "300 ms");
}

#[test]
fn scenario_errors_name_file_line_and_field() {
    let unknown = Scenario::parse(
        "mine.toml",
        "id = \"x\"\nduration = \"10s\"\n[workload]\nrate = 10\nratee = 3\n",
    )
    .unwrap_err();
    assert_eq!((unknown.file.as_str(), unknown.line), ("mine.toml", 5));
    assert!(unknown.message.contains("ratee"), "{unknown}");
    assert!(unknown.to_string().starts_with("mine.toml:5:"), "{unknown}");

    let impossible = Scenario::parse(
        "mine.toml",
        "id = \"x\"\nduration = \"10s\"\n[workload]\nrate = 10\n\n[[faults]]\nkind = \"error\"\nrate = 1.5\nstart = \"1s\"\nend = \"2s\"\n",
    )
    .unwrap_err();
    assert!((6..=8).contains(&impossible.line), "{impossible}");
    assert!(impossible.message.contains("faults.rate"), "{impossible}");
    assert!(impossible.message.contains("1.5"), "{impossible}");

    let wrong_type = Scenario::parse(
        "mine.toml",
        "id = \"x\"\nduration = \"10s\"\n[workload]\nrate = \"fast\"\n",
    )
    .unwrap_err();
    assert_eq!(wrong_type.line, 4, "{wrong_type}");
    assert!(wrong_type.message.contains("`rate`"), "{wrong_type}");

    let late = Scenario::parse(
        "mine.toml",
        "id = \"x\"\nduration = \"10s\"\n[workload]\nrate = 10\n\n[[faults]]\nkind = \"hang\"\nstart = \"5s\"\nend = \"20s\"\n",
    )
    .unwrap_err();
    assert!(late.message.contains("faults.end"), "{late}");
    assert!(late.line >= 6, "{late}");

    let zero = Scenario::parse(
        "mine.toml",
        "id = \"x\"\nduration = \"10s\"\n[workload]\nrate = 0\n",
    )
    .unwrap_err();
    assert!(zero.message.contains("workload.rate"), "{zero}");
}

#[test]
fn the_built_in_suite_parses_and_quick_keeps_the_events() {
    let suite = Scenario::built_in();
    let ids: Vec<_> = suite.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "control",
            "outage",
            "black-hole",
            "brownout",
            "partial",
            "tail-spike",
            "slow-drip",
            "overload",
            "flapping",
            "outage-fleet",
            "brownout-fleet",
            "long-tail",
            "quota",
            "overload-refused",
            "overload-refused-retry-after",
            "slow-200ms",
            "slow-600ms",
            "latency-ramp",
            "metastable",
            "overlap",
            "tail-hedge",
            "tail-hedge-fixed",
            "endpoint-bad",
            "endpoints-four-bad"
        ]
    );
    // Outage and brownout at 100, 1000 and 10,000 req/s from 1, 100 and 1000 clients.
    let fleet = &suite[9];
    assert_eq!(fleet.cells().len(), 9);
    assert_eq!(
        fleet.cells()[8].name(),
        "outage-fleet [rate=10000 clients=1000]"
    );
    let outage = suite[1].quick();
    assert_eq!(outage.faults[0].start, Duration::from_secs(5));
    assert_eq!(outage.faults[0].end, Duration::from_secs(15));
    assert_eq!(outage.duration, Duration::from_secs(25));
    assert_eq!(suite[0].quick().duration, Duration::from_secs(15));
}

#[test]
fn command_line_options_parse() {
    let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let options = parse_args(args(
        "--stack naive,seawall --seed 7 --quick --json out.json",
    ))
    .unwrap();
    assert_eq!(
        options,
        Options {
            stacks: vec![StackKind::Naive, StackKind::Seawall],
            json: Some("out.json".into()),
            seed: 7,
            quick: true,
            ..Options::default()
        }
    );
    assert!(parse_args(args("--stack nope")).is_err());
    assert!(parse_args(args("--seed")).is_err());
}

fn short_run(seed: u64, text: &str) -> String {
    let scenario = Scenario::parse("short.toml", text).unwrap();
    let settings = Settings::default();
    let scenarios = scenario
        .cells()
        .iter()
        .map(|cell| report::run_scenario(cell, &StackKind::ALL, &settings, seed))
        .collect();
    report::to_json(&Report::new(seed, false, &settings, scenarios))
}

const OPEN: &str = r#"
id = "short"
duration = "3s"
[workload]
rate = 200
arrivals = "poisson"
keys = 2
[downstream]
latency = { kind = "long_tail", median = "10ms", p99 = "40ms" }
workers = 4
queue_limit = 10
quota = { rate = 150, burst = 10 }
error_cost = "2ms"
[[faults]]
kind = "error"
rate = 0.5
start = "1s"
end = "2s"
[[faults]]
kind = "status"
code = 503
retry_after = "1s"
rate = 0.2
start = "1500ms"
end = "2500ms"
keys = [1]
[matrix]
clients = [1, 3]
"#;

const CLOSED: &str = r#"
id = "closed"
duration = "3s"
[workload]
mode = "closed"
concurrency = 6
clients = 2
think = "5ms"
[downstream]
latency = { kind = "uniform", min = "5ms", max = "15ms" }
workers = 3
[[faults]]
kind = "latency_ramp"
from = "10ms"
to = "60ms"
start = "1s"
end = "2s"
[[faults]]
kind = "capacity"
workers = 1
start = "1500ms"
end = "2s"
"#;

#[test]
fn the_same_seed_gives_the_same_json_byte_for_byte() {
    for text in [OPEN, CLOSED] {
        let first = short_run(11, text);
        assert_eq!(first, short_run(11, text));
        assert_ne!(first, short_run(12, text));
        assert!(first.contains(&format!("\"schema_version\": {SCHEMA_VERSION}")));
        assert!(first.contains("\"hash\""));
        // Every stack's effective settings are recorded.
        assert!(first.contains("\"attempt_timeout\""));
    }
}

#[test]
fn every_documented_key_is_accepted() {
    let scenario = Scenario::parse(
        "all.toml",
        r#"
id = "my-db"
description = "every key"
duration = "90s"

[workload]
rate = 1000
arrivals = "poisson"
keys = 2
deadline = "500ms"
phases = [{ start = "20s", end = "50s", rate = 1500 }]

[downstream]
latency = { kind = "long_tail", median = "10ms", p99 = "80ms" }
workers = 11
queue_limit = 1000
degrade_above = 22
degraded = 0.8

[[faults]]
kind = "slow"
rate = 0.02
start = "20s"
end = "30s"
latency = { kind = "fixed", value = "2s" }
keys = [0]

[[faults]]
kind = "error"
start = "40s"
flapping = { down = "5s", up = "5s", cycles = 3 }
keys = [0]

[thresholds]
amplification_max = 1.2
amplification_fault_max = 1.1
amplification_open_max = 0.05
detect_max = "1s"
recover_max = "5s"
fast_fail_p99_max = "1ms"
p99_max = "210ms"
p999_max = "1010ms"
false_open_time_max = "0s"
false_open_ratio_max = 0.2
rejections_max = 0
bulkhead_rejections_max = 0
inflight_max = 25
breaker_opens_max = 0
transitions_per_cycle_max = 2
success_fault_min = 0.76
success_min = 0.9
healthy_keys_success_min = 0.99
only_faulty_keys_open = true
false_timeout_max = 0.001
goodput_min = 0.95
accepted_p99_ratio_max = 2.0
"#,
    )
    .unwrap();
    assert_eq!(scenario.faults[1].end, Duration::from_secs(65));
    assert_eq!(scenario.cycles(), 3);
    assert_eq!(scenario.faulty_keys(), [0]);
    assert_eq!(
        scenario.span(),
        Some((Duration::from_secs(20), Duration::from_secs(65)))
    );
    assert!(!scenario.healthy(Duration::from_secs(41), 0));
    // In the load phase (20 s to 50 s) no key is healthy; after it, key 0 flaps.
    assert!(!scenario.healthy(Duration::from_secs(46), 1));
    assert!(scenario.healthy(Duration::from_secs(56), 0));
    assert!(!scenario.healthy(Duration::from_secs(60), 0));
}

#[test]
fn a_stack_of_ones_own_runs_through_run_stack() {
    use seawall_bench::lab::stacks::{Built, classify};
    use seawall_core::BoxError;
    use tower::ServiceBuilder;

    let scenario = scenario();
    let trace = seawall_bench::lab::run_stack(&scenario, 3, |downstream, _, _| Built {
        service: ServiceBuilder::new()
            .map_err(classify as fn(BoxError) -> Failure)
            .load_shed()
            .concurrency_limit(1)
            .service(downstream),
        breaker: None,
        keyed_breaker: false,
        ejected: None,
    });
    let summary = summarize(&scenario, &trace);
    assert_eq!(summary.requests, 100);
    assert!(summary.max_in_flight <= 1);
    // The outage's calls fail at the downstream; the others succeed.
    assert_eq!(summary.successes, 80);
}

/// A keyed breaker small enough to read: opens after 5 failures in a row for 1 s, then lets
/// one probe through. It shows that the probe, the breaker band and the verdicts work end to
/// end, and that the outage and partial thresholds are within reach of a stack with a breaker.
mod tiny_breaker {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use seawall_bench::lab::metrics::{BreakerState, Failure};
    use seawall_bench::lab::sim::{Request, Response};
    use tokio::time::Instant;
    use tower::Service;

    #[derive(Debug, Clone, Copy, Default)]
    struct Core {
        failures: u32,
        open_until: Option<Instant>,
        probing: bool,
    }

    #[derive(Debug, Clone)]
    pub(crate) struct Breakers(Arc<Mutex<Vec<Core>>>);

    impl Breakers {
        pub(crate) fn new(keys: usize) -> Self {
            Self(Arc::new(Mutex::new(vec![Core::default(); keys])))
        }

        pub(crate) fn state(&self, key: u32) -> BreakerState {
            let core = self.0.lock().unwrap()[key as usize];
            match core.open_until {
                None => BreakerState::Closed,
                Some(until) if Instant::now() < until => BreakerState::Open,
                Some(_) => BreakerState::HalfOpen,
            }
        }
    }

    #[derive(Debug, Clone)]
    pub(crate) struct Breaker<S> {
        pub(crate) inner: S,
        pub(crate) breakers: Breakers,
    }

    type Fut = Pin<Box<dyn Future<Output = Result<Response, Failure>>>>;

    impl<S> Service<Request> for Breaker<S>
    where
        S: Service<Request, Response = Response, Error = Failure>,
        S::Future: 'static,
    {
        type Response = Response;
        type Error = Failure;
        type Future = Fut;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: Request) -> Fut {
            let key = req.body().key as usize;
            {
                let mut all = self.breakers.0.lock().unwrap();
                let core = &mut all[key];
                if let Some(until) = core.open_until {
                    if Instant::now() < until || core.probing {
                        return Box::pin(std::future::ready(Err(Failure::CircuitOpen)));
                    }
                    core.probing = true;
                }
            }
            let fut = self.inner.call(req);
            let breakers = self.breakers.clone();
            Box::pin(async move {
                let result = fut.await;
                let mut all = breakers.0.lock().unwrap();
                let core = &mut all[key];
                if result.is_ok() {
                    *core = Core::default();
                } else {
                    core.failures += 1;
                    if core.failures >= 5 || core.probing {
                        core.open_until = Some(Instant::now() + Duration::from_secs(1));
                        core.probing = false;
                    }
                }
                result
            })
        }
    }
}

#[test]
fn a_stack_with_a_breaker_meets_the_outage_verdicts() {
    let outage = Scenario::built_in()[1].quick();
    let trace = trace_of(&outage);
    let summary = summarize(&outage, &trace);
    let v = verdicts(&outage, &outage.thresholds, &summary);
    assert!(v.iter().all(|v| v.pass), "{v:#?}");
    // Calls sent just before the fault still succeed for a few ms, resetting the count.
    let detect = summary.time_to_detect_s.unwrap();
    assert!(detect < 0.05, "{detect}");
    assert!((5..50).contains(&summary.detect_calls), "{summary:?}");
    assert!(summary.breaker_opens >= 1);
    let open_seconds = series(&trace, 1_000_000_000)
        .breaker_open
        .iter()
        .filter(|&&o| o > 0.5)
        .count();
    assert!(open_seconds >= 9, "{open_seconds}");
}

fn trace_of(scenario: &Scenario) -> Trace {
    use seawall_bench::lab::stacks::{Built, unprotected};
    use std::sync::Arc;

    let breakers = tiny_breaker::Breakers::new(scenario.workload.keys as usize);
    let probe = breakers.clone();
    seawall_bench::lab::run_stack(scenario, 5, |downstream, _, _| Built {
        service: tiny_breaker::Breaker {
            inner: unprotected(
                tower::util::Either::Right(downstream),
                Duration::from_secs(1),
            )
            .service,
            breakers: breakers.clone(),
        },
        breaker: Some({
            let probe = probe.clone();
            Arc::new(move |key| probe.state(key))
        }),
        keyed_breaker: true,
        ejected: None,
    })
}

#[test]
fn a_keyed_breaker_opens_only_for_the_failing_key() {
    let partial = Scenario::built_in()[4].quick();
    let summary = summarize(&partial, &trace_of(&partial));
    assert_eq!(summary.opened_keys, [0]);
    let v = verdicts(&partial, &partial.thresholds, &summary);
    assert!(v.iter().all(|v| v.pass), "{v:#?}");
}

#[test]
fn the_timeline_draws_the_breaker_band_and_the_fault_window() {
    use seawall_bench::lab::report::{ScenarioReport, StackReport};

    let outage = Scenario::built_in()[1].quick();
    let trace = trace_of(&outage);
    let summary = summarize(&outage, &trace);
    let report = ScenarioReport {
        id: outage.id.clone(),
        name: outage.name(),
        cell: None,
        rate: outage.workload.rate,
        clients: 1,
        deadline_ms: 1000.0,
        description: outage.description.clone(),
        file: outage.file.clone(),
        hash: outage.hash.clone(),
        duration_s: outage.duration.as_secs_f64(),
        fault_windows: vec![[5.0, 15.0]],
        capacity_rps: outage.downstream.capacity_rps(),
        stacks: vec![StackReport {
            stack: "tiny-breaker",
            verdicts: verdicts(&outage, &outage.thresholds, &summary),
            series: series(&trace, 1_000_000_000),
            summary,
            valid: true,
            invalid_reason: None,
            settings: serde_json::json!({}),
        }],
    };
    let svg = seawall_bench::lab::svg::timeline(&report);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains(r##"fill="#d62728" fill-opacity="1.00""##));
    assert!(svg.contains(r##"fill="#f4cccc""##));
    // offered, then attempts, success rate, goodput, rejections and p99 of the one stack
    assert_eq!(svg.matches("<polyline").count(), 6);
    std::fs::write(
        std::env::temp_dir().join("seawall-lab-tiny-breaker.svg"),
        svg,
    )
    .unwrap();
}

/// Three clients during the outage of `scenario()` (2 s to 4 s): client 0 fails 2 calls of 3
/// attempts each and then sees its breaker open at 2.5 s; client 1 fails 9 single attempts
/// and rejects on its own at 3 s; client 2 never detects and fails 20 single attempts.
fn three_clients() -> Trace {
    let mut requests = Vec::new();
    let mut push = |client, intended, attempts, outcome, breaker| {
        requests.push(RequestRecord {
            intended,
            latency: 5 * MS,
            outcome,
            attempts,
            key: 0,
            client,
            breaker,
            ejected: 0,
        });
    };
    let down = Outcome::Failed(Failure::Downstream);
    let open = Outcome::Failed(Failure::CircuitOpen);
    push(0, 2 * S, 3, down, BreakerState::Closed);
    push(0, 2 * S + 100 * MS, 3, down, BreakerState::Closed);
    push(0, 2 * S + 500 * MS, 0, open, BreakerState::Open);
    for i in 0..9 {
        push(1, 2 * S + i * 100 * MS, 1, down, BreakerState::Closed);
    }
    push(
        1,
        3 * S,
        0,
        Outcome::Failed(Failure::BulkheadFull),
        BreakerState::Closed,
    );
    for i in 0..20 {
        push(2, 2 * S + i * 100 * MS, 1, down, BreakerState::Closed);
    }
    requests.sort_by_key(|r| r.intended);
    Trace {
        clients: 3,
        ..trace(requests)
    }
}

#[test]
fn detection_is_judged_on_the_median_client_and_calls_on_the_p99_client() {
    let summary = summarize(&scenario(), &three_clients());
    // Detect times: 0.5 s, 1 s and never; the median client's is 1 s.
    assert_eq!(summary.time_to_detect_s, Some(1.0));
    assert_eq!(summary.clients_detected, 2);
    // Failed calls before detection: 6, 9 and 20 (all of client 2's in the span). Median 9;
    // nearest-rank p99 of three is the largest, 20.
    assert_eq!(summary.detect_calls, 9);
    assert_eq!(summary.detect_calls_p99, 20);
    let mut s = scenario();
    s.thresholds.detect_calls_max = Some(9);
    s.thresholds.detect_calls_p99_max = Some(19);
    let v = verdicts(&s, &s.thresholds, &summary);
    let get = |name| v.iter().find(|v| v.threshold == name).unwrap().pass;
    assert!(get("detect_calls_max"));
    assert!(!get("detect_calls_p99_max"));
}

#[test]
fn detection_runs_from_a_load_phase_as_from_a_fault() {
    let scenario = Scenario::parse(
        "phase.toml",
        "id = \"p\"\nduration = \"10s\"\n[workload]\nrate = 10\nphases = [{ start = \"2s\", end = \"4s\", rate = 20 }]\n",
    )
    .unwrap();
    // Rejections from 2.7 s: 0.7 s after the phase began, no failed call before.
    let requests = (0..100)
        .map(|i| {
            let t = i * 100 * MS;
            if (2700 * MS..4 * S).contains(&t) {
                RequestRecord {
                    attempts: 0,
                    outcome: Outcome::Failed(Failure::BulkheadFull),
                    ..ok(t)
                }
            } else {
                ok(t)
            }
        })
        .collect();
    let summary = summarize(&scenario, &trace(requests));
    let detect = summary.time_to_detect_s.unwrap();
    assert!((detect - 0.7).abs() < 1e-9, "{detect}");
    assert_eq!(summary.detect_calls, 0);
}

#[test]
fn after_the_fault_figures_cover_its_end_to_the_run_end() {
    // The outage ends at 4 s; after it, 60 requests (4 s to 10 s). Make those from 4 s to 5 s
    // take 2 attempts and 1.5 s (late: past the 1 s deadline), the rest 1 attempt and 10 ms.
    let mut t = outage_trace();
    for r in t
        .requests
        .iter_mut()
        .filter(|r| (4 * S..5 * S).contains(&r.intended))
    {
        *r = RequestRecord {
            attempts: 2,
            latency: 1500 * MS,
            ..ok(r.intended)
        };
    }
    let summary = summarize(&scenario(), &t);
    // Amplification after: (10 x 2 + 50) / 60.
    let a = summary.amplification_after.unwrap();
    assert!((a - 70.0 / 60.0).abs() < 1e-12, "{a}");
    // Goodput after: 50 successes within the deadline over 6 s; no capacity model and no
    // quota, so the attainable rate is the offered 10/s: 50 / 60.
    let g = summary.goodput_after.unwrap();
    assert!((g - 50.0 / 60.0).abs() < 1e-9, "{g}");
    // p99 after: 10 of 60 latencies are 1.5 s, so the nearest-rank p99 is 1.5 s.
    assert_eq!(summary.latency_after.unwrap().p99_ms, 1500.0);
    // Recovery needs successes within the deadline: from 5 s on, held 5 s to 10 s.
    let recover = summary.time_to_recover_s.unwrap();
    assert!((recover - 1.0).abs() < 1e-9, "{recover}");
}

#[test]
fn a_late_success_is_no_recovery() {
    let mut t = outage_trace();
    // Every success after the fault comes 1.2 s late, past the 1 s deadline.
    for r in t.requests.iter_mut().filter(|r| r.intended >= 4 * S) {
        *r = RequestRecord {
            latency: 1200 * MS,
            ..ok(r.intended)
        };
    }
    assert_eq!(summarize(&scenario(), &t).time_to_recover_s, None);
}

#[test]
fn the_default_table_fits_120_columns_and_wide_shows_every_column() {
    let scenario = scenario();
    let settings = Settings::default();
    let report = report::run_scenario(&scenario, &StackKind::ALL, &settings, 1);
    let narrow = report::table(&report, 1, false);
    // The header row and a row per stack follow the title line.
    let table_lines: Vec<&str> = narrow.lines().skip(2).take(6).collect();
    assert!(table_lines[0].trim_start().starts_with("stack"), "{narrow}");
    for line in &table_lines {
        assert!(
            line.chars().count() <= 120,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    let wide = report::table(&report, 1, true);
    for (name, _, _) in report::COLUMNS {
        assert!(wide.contains(name), "{name}");
    }
    // Every column is in the legend `--help` prints.
    let help = seawall_bench::lab::help::help();
    for (name, _, _) in report::COLUMNS {
        assert!(help.contains(name), "{name}");
    }
}

#[test]
fn scenarios_are_named_or_read_from_files() {
    let options = parse_args(["--scenario".to_owned(), "outage".to_owned()]).unwrap();
    let loaded = seawall_bench::lab::cli::load(&options).unwrap();
    assert_eq!(loaded[0].id, "outage");
    let options = parse_args(["--scenario".to_owned(), "no-such".to_owned()]).unwrap();
    let err = seawall_bench::lab::cli::load(&options).unwrap_err();
    assert!(err.contains("neither a built-in scenario"), "{err}");
    assert!(err.contains("outage"), "{err}");
}

#[test]
fn the_seawall_stack_takes_the_deadline_and_peers_take_its_settings() {
    use seawall_bench::lab::stacks::{PeerSettings, SeawallSettings};

    let seawall = SeawallSettings::default();
    assert_eq!(seawall.total_timeout(), Duration::from_secs(1));
    let late = seawall.with_deadline(Duration::from_secs(5));
    assert_eq!(late.total_timeout(), Duration::from_secs(5));
    // The retry limit that was the total's follows it.
    assert_eq!(late.retry().max_elapsed(), Some(Duration::from_secs(5)));
    let short = seawall.with_deadline(Duration::from_millis(200));
    assert_eq!(short.attempt_timeout(), Duration::from_millis(200));
    // The default attempt timeout is adaptive, its ceiling half of whatever the total is.
    assert_eq!(
        late.for_client(1).attempt().timeout(),
        Duration::from_millis(2500)
    );
    let capped = SeawallSettings::from_toml(
        "name = \"c\"\ntotal_timeout = \"2s\"\nattempt_timeout = { ceiling = \"800ms\" }\n[bulkhead]\nmax_concurrent = 7\n",
    )
    .unwrap()
    .with_deadline(Duration::from_millis(500));
    assert_eq!(
        capped.for_client(1).attempt().timeout(),
        Duration::from_millis(500),
        "a ceiling past the deadline is cut to it"
    );
    let peers = PeerSettings::like(&seawall);
    assert_eq!(peers.max_retries, seawall.retry().max_attempts() - 1);
    assert_eq!(peers.attempt_timeout, seawall.attempt_timeout());
    assert_eq!(peers.budget.unwrap().ratio, 0.09);
    assert_eq!(peers.concurrency, seawall.concurrency_limit());

    let file = SeawallSettings::from_toml(
        "name = \"mine\"\ntotal_timeout = \"2s\"\nattempt_timeout = \"500ms\"\n[bulkhead]\nmax_concurrent = 7\n",
    )
    .unwrap();
    assert_eq!(file.concurrency_limit(), 7);
    assert!(SeawallSettings::from_toml("name = \"x\"\n").is_err());
    let mine = PeerSettings::from_toml(
        r#"
total_timeout = "1s"
attempt_timeout = "100ms"
max_retries = 2
backoff_base = "10ms"
backoff_max = "100ms"
budget = { ratio = 0.2, min_per_second = 10, ttl = "10s" }
concurrency = 32
breaker_failure_rate = 0.5
breaker_window = 100
breaker_minimum_calls = 20
breaker_open = "1s"
breaker_probes = 5
"#,
    )
    .unwrap();
    assert_eq!(mine.concurrency, 32);
    let typo = PeerSettings::from_toml("concurency = 3\n").unwrap_err();
    assert!(typo.contains("concurency"), "{typo}");
}

#[test]
fn in_flight_is_judged_against_each_clients_own_limit() {
    let mut s = scenario();
    s.thresholds.inflight_within_limit = Some(true);
    // The trace's busiest client had 3 calls in flight at the downstream.
    let mut summary = summarize(&s, &outage_trace());
    assert_eq!(summary.max_in_flight_per_client, 3);
    let judge = |summary: &seawall_bench::lab::metrics::Summary| {
        let v = verdicts(&s, &s.thresholds, summary);
        v.iter()
            .find(|v| v.threshold == "inflight_within_limit")
            .unwrap()
            .pass
    };
    summary.concurrency_limit = Some(3);
    assert!(judge(&summary));
    summary.concurrency_limit = Some(2);
    assert!(!judge(&summary));
    // A stack with no limit cannot keep within one.
    summary.concurrency_limit = None;
    assert!(!judge(&summary));
}

#[test]
fn help_lists_the_format_and_every_threshold() {
    use seawall_bench::lab::cli::Help;
    use seawall_bench::lab::help::SCENARIO;
    use seawall_bench::lab::scenario::thresholds::NAMES;

    let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(parse_args(args("--help")).unwrap().help, Some(Help::Usage));
    assert_eq!(
        parse_args(args("--help-scenario")).unwrap().help,
        Some(Help::Scenario)
    );
    assert_eq!(parse_args(args("--list")).unwrap().help, Some(Help::List));
    for name in NAMES {
        assert!(SCENARIO.contains(name), "{name}");
    }
    for key in [
        "clients",
        "mode",
        "concurrency",
        "think",
        "quota",
        "refuse",
        "error_cost",
        "latency_ramp",
        "capacity",
        "status",
        "[matrix]",
        "latency_scale",
        "known_failing",
        "[features]",
    ] {
        assert!(SCENARIO.contains(key), "{key}");
    }
    let options = parse_args(args("--settings-for tower t.toml --wide --jobs 3")).unwrap();
    assert_eq!(options.settings_for, [(StackKind::Tower, "t.toml".into())]);
    assert!(options.wide);
    assert_eq!(options.jobs, Some(3));
    assert!(parse_args(args("--settings-for naive t.toml")).is_err());
    assert!(parse_args(args("--jobs 0")).is_err());
}

#[test]
fn settings_files_set_the_seawall_stack_and_single_peers() {
    let dir = std::env::temp_dir().join(format!("seawall-lab-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seawall = dir.join("seawall.toml");
    std::fs::write(
        &seawall,
        "name = \"mine\"\ntotal_timeout = \"2s\"\nattempt_timeout = \"400ms\"\n[bulkhead]\nmax_concurrent = 16\n",
    )
    .unwrap();
    let tower = dir.join("tower.toml");
    std::fs::write(
        &tower,
        r#"
total_timeout = "1s"
attempt_timeout = "50ms"
max_retries = 1
backoff_base = "10ms"
backoff_max = "100ms"
concurrency = 8
breaker_failure_rate = 0.5
breaker_window = 100
breaker_minimum_calls = 20
breaker_open = "1s"
breaker_probes = 5
"#,
    )
    .unwrap();
    let args = format!(
        "--settings {} --settings-for tower {}",
        seawall.display(),
        tower.display()
    );
    let options = parse_args(args.split_whitespace().map(String::from)).unwrap();
    let settings = seawall_bench::lab::cli::settings(&options).unwrap();
    assert_eq!(settings.seawall.concurrency_limit(), 16);
    // tower takes its own file; tower-resilience the seawall file's equivalent.
    assert_eq!(settings.tower.concurrency, 8);
    assert_eq!(settings.tower.budget, None);
    assert_eq!(settings.tower_resilience.concurrency, 16);
    assert_eq!(
        settings.tower_resilience.attempt_timeout,
        Duration::from_millis(400)
    );
    std::fs::write(&tower, "concurrency = \"many\"\n").unwrap();
    let err = seawall_bench::lab::cli::settings(&options).unwrap_err();
    assert!(err.contains("tower.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
