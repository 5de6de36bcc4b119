//! Each scenario key of the lab's second version, on a small scenario whose result is worked
//! out by hand (the arithmetic is in the comments), run end to end on the simulated
//! downstream; and the errors a mistake in one of them gives.

use std::time::Duration;

use seawall_bench::lab::metrics::{Failure, Outcome, RequestRecord, Trace, summarize};
use seawall_bench::lab::scenario::{Cell, Scenario};
use seawall_bench::lab::sim::Response;
use seawall_bench::lab::stacks::{self, Built, Settings, StackKind};
use seawall_bench::lab::{Seeds, run, run_stack, workload};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

// The paused clock moves in whole milliseconds: a request meant for 205.6 ms goes at 206 ms,
// and its latency, counted from 205.6 ms, holds that 0.4 ms.
fn send_delay(intended: u64) -> u64 {
    intended.next_multiple_of(MS) - intended
}

fn parse(text: &str) -> Scenario {
    Scenario::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

/// The downstream as it is, without even a deadline, so that its own timing shows.
fn unprotected(scenario: &Scenario) -> Trace {
    run_stack(scenario, 1, |ds, _, _| bare(ds))
}

fn bare(
    downstream: seawall_bench::lab::sim::Downstream,
) -> Built<
    impl tower::Service<seawall_bench::lab::sim::Request, Response = Response, Error = Failure>,
> {
    use tower::ServiceExt;
    Built {
        service: downstream.map_err(stacks::classify as fn(seawall_core::BoxError) -> Failure),
        breaker: None,
        keyed_breaker: false,
        ejected: None,
    }
}

fn failed(r: &RequestRecord) -> Option<Failure> {
    match r.outcome {
        Outcome::Failed(f) => Some(f),
        _ => None,
    }
}

#[test]
fn many_clients_split_the_rate_evenly_each_with_its_own_stack() {
    let scenario = parse(
        r#"
id = "clients"
duration = "1s"
[workload]
rate = 40
clients = 4
"#,
    );
    let mut built = 0;
    let trace = run_stack(&scenario, 1, |ds, client, _| {
        assert_eq!(client, built, "one stack per client, in order");
        built += 1;
        bare(ds)
    });
    assert_eq!(built, 4);
    // 40 req/s over 4 clients: each sends every 100 ms from an offset in [0, 100 ms), so
    // exactly 10 requests in the second.
    for client in 0..4 {
        let mine: Vec<_> = trace
            .requests
            .iter()
            .filter(|r| r.client == client)
            .collect();
        assert_eq!(mine.len(), 10, "client {client}");
        for pair in mine.windows(2) {
            assert_eq!(pair[1].intended - pair[0].intended, 100 * MS);
        }
    }
    // Offsets are drawn, not lined up.
    let firsts: Vec<u64> = (0..4)
        .map(|c| {
            trace
                .requests
                .iter()
                .find(|r| r.client == c)
                .unwrap()
                .intended
        })
        .collect();
    assert!(firsts.windows(2).any(|w| w[0] != w[1]), "{firsts:?}");
}

#[test]
fn a_closed_loop_caller_sends_again_when_answered() {
    let scenario = parse(
        r#"
id = "closed"
duration = "1s"
[workload]
mode = "closed"
concurrency = 2
[downstream]
latency = { kind = "fixed", value = "10ms" }
"#,
    );
    let trace = unprotected(&scenario);
    // Each caller starts in the first 100 ms and then calls every 10 ms (answer, no think
    // time): in [100 ms, 1 s) each sends exactly 900 / 10 = 90 calls.
    let late = trace
        .requests
        .iter()
        .filter(|r| r.intended >= 100 * MS)
        .count();
    assert_eq!(late, 2 * 90);
    assert!(
        trace
            .requests
            .iter()
            .all(|r| r.latency == 10 * MS + send_delay(r.intended))
    );
}

#[test]
fn a_closed_loop_caller_answered_at_once_waits_a_millisecond() {
    let scenario = parse(
        r#"
id = "closed"
duration = "1s"
[workload]
mode = "closed"
concurrency = 1
"#,
    );
    // A stack that rejects every call at once.
    let trace = run_stack(&scenario, 1, |_, _, _| Built {
        service: tower::service_fn(|_req| async { Err::<Response, _>(Failure::Other) }),
        breaker: None,
        keyed_breaker: false,
        ejected: None,
    });
    // One call per ms of virtual time: 900 in [100 ms, 1 s).
    let late = trace
        .requests
        .iter()
        .filter(|r| r.intended >= 100 * MS)
        .count();
    assert_eq!(late, 900);
}

#[test]
fn a_quota_answers_429_with_retry_after_and_the_lab_counts_early_retries() {
    let scenario = parse(
        r#"
id = "quota"
duration = "2s"
[workload]
rate = 200
[downstream]
latency = { kind = "fixed", value = "1ms" }
quota = { rate = 100, burst = 10, retry_after = "2s" }
[thresholds]
early_retries_max = 0
"#,
    );
    let trace = unprotected(&scenario);
    // The bucket starts with 10 tokens and gains 100/s: 10 + 100 x 2 s = 210 calls get
    // through (one less when the last token comes after the last call), the other 190 of the
    // 400 get 429.
    let ok = trace
        .requests
        .iter()
        .filter(|r| r.outcome == Outcome::Success)
        .count();
    assert!((209..=210).contains(&ok), "{ok}");
    assert!(
        trace
            .requests
            .iter()
            .all(|r| r.outcome == Outcome::Success || failed(r) == Some(Failure::Status(429)))
    );
    assert_eq!(
        trace.early_retries, 0,
        "the unprotected stack never retries"
    );

    // The naive stack retries a 429 at once, three times: every retry comes before the 2 s
    // of the Retry-After it just received.
    let settings = Settings::default().with_deadline(Duration::from_secs(1));
    let naive = run(&scenario, StackKind::Naive, &settings, 1);
    let retries: u64 = naive
        .requests
        .iter()
        .map(|r| u64::from(r.attempts) - 1)
        .sum();
    assert!(retries > 0);
    assert_eq!(naive.early_retries, retries);
    // The seawall stack's HTTP retry policy waits out a Retry-After (2 s is past its 1 s
    // total, so it gives up): no early retry.
    let seawall = run(&scenario, StackKind::Seawall, &settings, 1);
    assert_eq!(seawall.early_retries, 0);
    let summary = summarize(&scenario, &seawall);
    assert_eq!(summary.early_retries, 0);
}

#[test]
fn a_full_queue_refuses_with_the_configured_status() {
    let text = |refuse: &str| {
        format!(
            r#"
id = "refuse"
duration = "1s"
[workload]
rate = 200
[downstream]
latency = {{ kind = "fixed", value = "10ms" }}
workers = 1
queue_limit = 0
{refuse}
"#
        )
    };
    // One worker busy 10 ms per call, a call every 5 ms, no queue: every other call finds the
    // worker busy and is refused; 100 served, 100 refused.
    for (refuse, status) in [
        ("", 503),
        ("refuse = { status = 429, retry_after = \"1s\" }", 429),
    ] {
        let trace = unprotected(&parse(&text(refuse)));
        let ok = trace
            .requests
            .iter()
            .filter(|r| r.outcome == Outcome::Success)
            .count();
        let refused = trace
            .requests
            .iter()
            .filter(|r| failed(r) == Some(Failure::Status(status)))
            .count();
        assert_eq!((ok, refused), (100, 100), "{refuse}");
    }
}

#[test]
fn a_status_fault_answers_its_code() {
    let scenario = parse(
        r#"
id = "status"
duration = "1s"
[workload]
rate = 100
[[faults]]
kind = "status"
code = 503
retry_after = "1s"
start = "500ms"
end = "1s"
"#,
    );
    let trace = unprotected(&scenario);
    // Half of the 100 requests fall in the fault's window.
    let refused = trace
        .requests
        .iter()
        .filter(|r| failed(r) == Some(Failure::Status(503)))
        .count();
    assert_eq!(refused, 50);
    assert!(
        trace
            .requests
            .iter()
            .filter(|r| r.intended < 500 * MS)
            .all(|r| r.outcome == Outcome::Success)
    );
}

#[test]
fn a_costly_error_holds_a_worker() {
    let scenario = parse(
        r#"
id = "cost"
duration = "1s"
[workload]
rate = 100
[downstream]
latency = { kind = "fixed", value = "10ms" }
workers = 1
error_cost = "20ms"
[[faults]]
kind = "error"
start = "0s"
end = "1s"
"#,
    );
    let trace = unprotected(&scenario);
    // A call every 10 ms, each error holding the one worker 20 ms: call k starts at 20k ms
    // after the first and ends 20 ms later, so its latency is 20(k + 1) - 10k = 10k + 20 ms.
    for (k, r) in trace.requests.iter().enumerate() {
        assert_eq!(failed(r), Some(Failure::Downstream));
        assert_eq!(
            r.latency,
            (10 * k as u64 + 20) * MS + send_delay(r.intended),
            "call {k}"
        );
    }
}

#[test]
fn faults_of_different_kinds_compose_and_target_their_keys() {
    let scenario = parse(
        r#"
id = "compose"
duration = "1s"
[workload]
rate = 100
keys = 2
[downstream]
latency = { kind = "fixed", value = "10ms" }
[[faults]]
kind = "slow"
latency = { kind = "fixed", value = "50ms" }
start = "0s"
end = "1s"
[[faults]]
kind = "error"
start = "0s"
end = "1s"
keys = [0]
[[faults]]
kind = "status"
code = 500
start = "0s"
end = "1s"
keys = [1]
"#,
    );
    let trace = unprotected(&scenario);
    for r in &trace.requests {
        // The error (key 0) and the status (key 1) both arrive after the slow fault's 50 ms:
        // overlapping faults all apply. The error costs no worker time, so no 10 ms.
        let expected = if r.key == 0 {
            Failure::Downstream
        } else {
            Failure::Status(500)
        };
        assert_eq!(failed(r), Some(expected));
        assert_eq!(r.latency, 50 * MS + send_delay(r.intended));
    }
}

#[test]
fn a_latency_ramp_moves_the_whole_service_time() {
    let scenario = parse(
        r#"
id = "ramp"
duration = "1s"
[workload]
rate = 10
[[faults]]
kind = "latency_ramp"
from = "10ms"
to = "110ms"
start = "0s"
end = "1s"
"#,
    );
    let trace = unprotected(&scenario);
    // A call sent at t takes 10 ms + 100 ms x t / 1 s, rounded up to the clock's next
    // millisecond.
    for r in &trace.requests {
        let sent = r.intended + send_delay(r.intended);
        let expected = (sent + 10 * MS + sent / 10).next_multiple_of(MS) - r.intended;
        assert_eq!(r.latency, expected, "{r:?}");
    }
}

#[test]
fn a_capacity_fault_takes_workers_from_new_calls_only() {
    let scenario = parse(
        r#"
id = "capacity"
duration = "3s"
[workload]
rate = 2
[downstream]
latency = { kind = "fixed", value = "1s" }
workers = 2
[[faults]]
kind = "capacity"
workers = 1
start = "1s"
end = "3s"
"#,
    );
    let trace = unprotected(&scenario);
    let o = trace.requests[0].intended;
    let d = send_delay(o);
    let latencies: Vec<u64> = trace.requests.iter().map(|r| r.latency).collect();
    // Calls at o + 0.5 s k, 1 s each, on two workers (w0 takes c0, w1 takes c1):
    // c2 at o + 1 s: w0 is free, 1 s;
    // c3 at o + 1.5 s: w1 is free but out of service until 3 s; w0 is free at o + 2 s: 1.5 s;
    // c4 at o + 2 s: w1 at 3 s comes before w0 at o + 3 s: (3 s - (o + 2 s)) + 1 s = 2 s - o;
    // c5 at o + 2.5 s: w0 at o + 3 s: 1.5 s. Each is sent d after o + 0.5 s k (the clock's
    // milliseconds), which adds d but to c4, which waits for 3 s whenever it was sent.
    assert_eq!(
        latencies,
        [S + d, S + d, S + d, 3 * S / 2 + d, 2 * S - o, 3 * S / 2 + d],
        "offset {o}"
    );
}

#[test]
fn a_matrix_runs_every_cell_and_scales_what_it_says() {
    let scenario = parse(
        r#"
id = "matrix"
duration = "60s"
[workload]
rate = 1000
deadline = "1s"
phases = [{ start = "20s", end = "30s", rate = 1500 }]
[downstream]
latency = { kind = "uniform", min = "8ms", max = "12ms" }
workers = 11
quota = { rate = 500, burst = 50 }
error_cost = "2ms"
[[faults]]
kind = "capacity"
workers = 6
start = "20s"
end = "30s"
[[faults]]
kind = "slow"
latency = { kind = "fixed", value = "100ms" }
start = "40s"
end = "50s"
[matrix]
rate = [100, 1000]
clients = [1, 10]
latency_scale = [1, 5]
[thresholds]
detect_max = "1s"
amplification_fault_max = 1.1
"#,
    );
    let cells = scenario.cells();
    assert_eq!(cells.len(), 8);
    assert_eq!(
        cells[0].name(),
        "matrix [rate=100 clients=1 latency_scale=1]"
    );
    let cell = scenario.in_cell(Cell {
        rate: Some(100.0),
        clients: Some(10),
        latency_scale: Some(5.0),
    });
    // Rate x 0.1 and latency x 5: workers 11 x 0.1 x 5 = 5.5, rounded up to 6; the capacity
    // fault's 6 x 0.5 = 3; the quota 50/s with a burst of 5; the phase 150/s.
    assert_eq!(cell.workload.rate, 100.0);
    assert_eq!(cell.workload.clients, 10);
    assert_eq!(cell.workload.phases[0].rate, 150.0);
    assert_eq!(cell.downstream.workers, Some(6));
    assert_eq!(cell.workers_at(Duration::from_secs(25)), Some(3));
    let quota = cell.downstream.quota.unwrap();
    assert_eq!((quota.rate, quota.burst), (50.0, 5));
    // Times x 5: the latency (mean 50 ms), the error cost, the slow fault, the deadline and
    // the time thresholds; not the amplification.
    assert_eq!(cell.downstream.latency.mean(), Duration::from_millis(50));
    assert_eq!(cell.downstream.error_cost, Duration::from_millis(10));
    assert_eq!(cell.workload.deadline, Duration::from_secs(5));
    assert_eq!(cell.thresholds.detect_max, Some(Duration::from_secs(5)));
    assert_eq!(cell.thresholds.amplification_fault_max, Some(1.1));
    // Capacity stays what it was relative to the load: 6 workers / 50 ms = 120/s for 100/s.
    let capacity = cell.capacity_at(Duration::ZERO).unwrap();
    assert!((capacity - 120.0).abs() < 1e-9, "{capacity}");
}

#[test]
fn attainable_goodput_is_the_least_of_offered_capacity_and_quota() {
    let scenario = parse(
        r#"
id = "attainable"
duration = "4s"
[workload]
rate = 1000
[downstream]
latency = { kind = "fixed", value = "10ms" }
workers = 8
quota = { rate = 900, burst = 900 }
[[faults]]
kind = "capacity"
workers = 4
start = "1s"
end = "2s"
[[faults]]
kind = "latency_ramp"
from = "20ms"
to = "20ms"
start = "2s"
end = "3s"
"#,
    );
    let at = |s: f64| Duration::from_secs_f64(s);
    // 8 workers / 10 ms = 800/s: less than the offered 1000/s and the quota's 900/s.
    assert_eq!(scenario.attainable_at(at(0.5), 1000.0), 800.0);
    // 4 workers during the capacity fault: 400/s.
    assert_eq!(scenario.attainable_at(at(1.5), 1000.0), 400.0);
    // 8 workers at 20 ms: 400/s.
    assert!((scenario.attainable_at(at(2.5), 1000.0) - 400.0).abs() < 1e-6);
    // Less offered than all: the offered load.
    assert_eq!(scenario.attainable_at(at(3.5), 300.0), 300.0);
    // Over the fault span (1 s to 3 s): 400/s; after it (3 s to 4 s): 800/s. The unprotected
    // stack at 1000/s against 8 workers queues without bound: its goodput only says how much
    // of 400/s and 800/s it got.
    let summary = summarize(&scenario, &unprotected(&scenario));
    assert!((summary.attainable_rps - 400.0).abs() < 1e-6, "{summary:?}");
    assert!((summary.attainable_after_rps.unwrap() - 800.0).abs() < 1e-6);
}

#[test]
fn scenario_errors_name_the_new_keys_and_their_ranges() {
    let error = |body: &str| {
        Scenario::parse(
            "bad.toml",
            &format!("id = \"x\"\nduration = \"10s\"\n{body}"),
        )
        .unwrap_err()
        .to_string()
    };
    let cases = [
        (
            "[workload]\nrate = 10\nclients = 0\n",
            "workload.clients",
            "[1, 10000]",
        ),
        (
            "[workload]\nmode = \"closed\"\nrate = 10\nconcurrency = 2\n",
            "workload.rate",
            "closed loop",
        ),
        (
            "[workload]\nmode = \"closed\"\n",
            "workload.concurrency",
            "closed loop",
        ),
        (
            "[workload]\nmode = \"closed\"\nclients = 4\nconcurrency = 2\n",
            "workload.concurrency",
            "[4, 100000]",
        ),
        (
            "[workload]\nrate = 10\nconcurrency = 2\n",
            "workload.concurrency",
            "open loop",
        ),
        (
            "[workload]\nrate = 10\n[downstream]\nquota = { rate = 0 }\n",
            "downstream.quota.rate",
            "(0, 100000]",
        ),
        (
            "[workload]\nrate = 10\n[downstream]\nquota = { rate = 5, retry_after = \"1500ms\" }\n",
            "downstream.quota.retry_after",
            "whole seconds",
        ),
        (
            "[workload]\nrate = 10\n[downstream]\nrefuse = { status = 200 }\n",
            "downstream.refuse.status",
            "[400, 599]",
        ),
        (
            "[workload]\nrate = 10\n[downstream]\nqueue_limit = 3\n",
            "downstream.workers",
            "queue_limit",
        ),
        (
            "[workload]\nrate = 10\n[[faults]]\nkind = \"status\"\nstart = \"1s\"\nend = \"2s\"\n",
            "faults.code",
            "a value for a `status` fault",
        ),
        (
            "[workload]\nrate = 10\n[[faults]]\nkind = \"status\"\ncode = 302\nstart = \"1s\"\nend = \"2s\"\n",
            "faults.code",
            "[400, 599]",
        ),
        (
            "[workload]\nrate = 10\n[[faults]]\nkind = \"latency_ramp\"\nfrom = \"1ms\"\nstart = \"1s\"\nend = \"2s\"\n",
            "faults.to",
            "latency_ramp",
        ),
        (
            "[workload]\nrate = 10\n[[faults]]\nkind = \"error\"\nworkers = 2\nstart = \"1s\"\nend = \"2s\"\n",
            "faults.workers",
            "nothing for a `error` fault",
        ),
        (
            "[workload]\nrate = 10\n[[faults]]\nkind = \"capacity\"\nworkers = 2\nstart = \"1s\"\nend = \"2s\"\n",
            "faults.workers",
            "downstream.workers",
        ),
        (
            "[workload]\nrate = 10\n[downstream]\nworkers = 4\n[[faults]]\nkind = \"capacity\"\nworkers = 5\nstart = \"1s\"\nend = \"2s\"\n",
            "faults.workers",
            "[1, downstream.workers (4)]",
        ),
        (
            "[workload]\nrate = 10\n[downstream]\nworkers = 4\n[[faults]]\nkind = \"capacity\"\nworkers = 2\nkeys = [0]\nstart = \"1s\"\nend = \"2s\"\n",
            "faults.keys",
            "capacity",
        ),
        (
            "[workload]\nrate = 10\n[matrix]\nlatency_scale = [0]\n",
            "matrix.latency_scale",
            "(0, 100]",
        ),
        (
            "[workload]\nrate = 10\n[matrix]\nclients = [0]\n",
            "matrix.clients",
            "[1, 10000]",
        ),
        (
            "[workload]\nmode = \"closed\"\nconcurrency = 2\n[matrix]\nrate = [10]\n",
            "matrix.rate",
            "closed loop",
        ),
        (
            "[workload]\nrate = 10\n[thresholds]\ngoodput_after_min = 1.5\n",
            "thresholds.goodput_after_min",
            "[0, 1]",
        ),
        (
            "[workload]\nrate = 10\n[thresholds]\namplification_after_max = -1\n",
            "thresholds.amplification_after_max",
            "[0, inf)",
        ),
        (
            "[workload]\nrate = 10\n[known_failing]\ndetect_max = \"why\"\n",
            "known_failing",
            "a threshold this scenario sets",
        ),
        (
            "[workload]\nrate = 10\n[thresholds]\ndetect_max = \"1s\"\n[known_failing]\ndetect_max = { reason = \"why\", cells = [\"clients=3\"] }\n",
            "known_failing.cells",
            "matrix",
        ),
        (
            "[workload]\nrate = 10\n[features]\nonly_faulty_keys_open = \"per-key breakers\"\n",
            "features",
            "a threshold this scenario sets",
        ),
    ];
    for (body, field, allowed) in cases {
        let message = error(body);
        assert!(message.contains(field), "{body}\n=> {message}");
        assert!(message.contains(allowed), "{body}\n=> {message}");
        assert!(message.starts_with("bad.toml:"), "{message}");
    }
}

#[test]
fn known_failures_are_printed_but_do_not_fail_the_run() {
    let scenario = parse(
        r#"
id = "known"
duration = "3s"
[workload]
rate = 100
[[faults]]
kind = "error"
start = "1s"
end = "2s"
[thresholds]
success_fault_min = 0.99
amplification_fault_max = 1.0
[known_failing]
success_fault_min = "no stack succeeds against an outage"
[features]
success_fault_min = "miracles"
"#,
    );
    let settings = Settings::default();
    let report =
        seawall_bench::lab::report::run_scenario(&scenario, &[StackKind::Seawall], &settings, 1);
    let verdicts = &report.stacks[0].verdicts;
    let success = verdicts
        .iter()
        .find(|v| v.threshold == "success_fault_min")
        .unwrap();
    assert!(!success.pass);
    assert_eq!(
        success.known_failing.as_deref(),
        Some("no stack succeeds against an outage")
    );
    assert_eq!(success.feature.as_deref(), Some("miracles"));
    assert!(report.seawall_passed() || !report.seawall_unexpected().is_empty());
    let table = seawall_bench::lab::report::table(&report, 1, false);
    assert!(table.contains("FAIL* success_fault_min"), "{table}");
    assert!(
        table.contains("known failing: no stack succeeds"),
        "{table}"
    );
    assert!(table.contains("[feature check: miracles]"), "{table}");
    // Without the mark, the same failure fails the run.
    let mut unmarked = scenario.clone();
    unmarked.known_failing.clear();
    let report =
        seawall_bench::lab::report::run_scenario(&unmarked, &[StackKind::Seawall], &settings, 1);
    assert!(!report.seawall_passed());
}

#[test]
fn seeds_give_each_client_its_own_jitter() {
    let seeds = Seeds::derive(1);
    assert_ne!(seeds.client(0), seeds.client(1));
    assert_eq!(seeds.client(3), Seeds::derive(1).client(3));
    let plan = workload::arrivals(
        &parse("id = \"a\"\nduration = \"1s\"\n[workload]\nrate = 10\nclients = 2\n"),
        seeds.arrivals,
    );
    assert_eq!(plan.len(), 10);
}

#[test]
fn every_stack_gives_up_at_the_deadline() {
    let scenario = parse(
        r#"
id = "deadline"
duration = "2s"
[workload]
rate = 10
deadline = "300ms"
[[faults]]
kind = "hang"
start = "0s"
end = "2s"
"#,
    );
    let settings = Settings::default().with_deadline(scenario.workload.deadline);
    for stack in StackKind::ALL {
        let trace = run(&scenario, stack, &settings, 1);
        for r in &trace.requests {
            // Nothing answers: each request ends at its 300 ms budget (sent up to 1 ms late), or
            // sooner when a breaker that counted the earlier hangs rejects it at once, or when
            // an attempt cut at its timeout (seawall's: at most half the budget) may not be
            // retried because the retry budget is spent.
            match failed(r) {
                Some(Failure::Timeout) => assert!(r.latency <= 301 * MS, "{stack}: {r:?}"),
                Some(Failure::CircuitOpen | Failure::Budget) => {
                    assert!(r.latency < 300 * MS, "{stack}: {r:?}")
                }
                other => panic!("{stack}: {other:?} in {r:?}"),
            }
        }
    }
}

/// Arrivals counted in bins of a sixth of each segment's per-client gap, from `from` to
/// `to`, as shares of what the segment's rate gives.
fn bin_shares(plan: &[workload::Arrival], from: f64, to: f64, rate: f64, gap: f64) -> Vec<f64> {
    let bin = gap / 6.0;
    let bins = ((to - from) / bin).floor() as usize;
    let mut counts = vec![0u64; bins];
    for a in plan {
        let t = a.at as f64 / S as f64;
        if t >= from {
            let i = ((t - from) / bin) as usize;
            if i < bins {
                counts[i] += 1;
            }
        }
    }
    counts.iter().map(|&c| c as f64 / (rate * bin)).collect()
}

#[test]
fn a_fleet_stepping_its_rate_keeps_its_arrivals_spread() {
    // 10 000 clients at 1/s each, stepping up to 1.5/s, down to 0.5/s, and back to 1/s. Had
    // each client kept its phase across a step, the first gap after it would be the old one:
    // after the step up, 1000/s for two thirds of a second and then 2000/s for a third (the
    // clients whose old gap ended late, plus the early ones' second send); after the step
    // down, every client within the first two thirds of a second, 15 000/s against 5000/s.
    let scenario = parse(
        r#"
id = "steps"
duration = "8s"
[workload]
rate = 10000
clients = 10000
phases = [
    { start = "2s", end = "4s", rate = 15000 },
    { start = "4s", end = "6s", rate = 5000 },
]
"#,
    );
    let plan = workload::arrivals(&scenario, 7);
    assert_eq!(plan, workload::arrivals(&scenario, 7));
    for (from, to, rate) in [
        (1.0, 2.0, 10_000.0),
        (2.0, 4.0, 15_000.0),
        (4.0, 6.0, 5_000.0),
        (6.0, 8.0, 10_000.0),
    ] {
        let shares = bin_shares(&plan, from, to, rate, 10_000.0 / rate);
        assert!(!shares.is_empty());
        for (i, share) in shares.iter().enumerate() {
            assert!(
                (0.9..=1.1).contains(share),
                "bin {i} after {from} s holds {share:.3} of {rate}/s: {shares:.3?}"
            );
        }
    }
}

#[test]
fn a_client_stepping_its_rate_sends_after_the_scaled_rest_of_its_gap() {
    // One client at 1/s, 2/s from 10 s to 20 s: the gap that spans a step runs at the old
    // rate up to the step and at the new one after it, so what was left of it at the step
    // is halved going up and doubled going down.
    let scenario = parse(
        r#"
id = "step"
duration = "30s"
[workload]
rate = 1
phases = [{ start = "10s", end = "20s", rate = 2 }]
"#,
    );
    for seed in 1..=5 {
        let at: Vec<f64> = workload::arrivals(&scenario, seed)
            .iter()
            .map(|a| a.at as f64 / S as f64)
            .collect();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-8;
        for pair in at.windows(2) {
            let (t, next) = (pair[0], pair[1]);
            let expected = if t < 10.0 && t + 1.0 > 10.0 {
                10.0 + (t + 1.0 - 10.0) / 2.0
            } else if !(10.0..20.0).contains(&t) {
                t + 1.0
            } else if t + 0.5 > 20.0 {
                20.0 + (t + 0.5 - 20.0) * 2.0
            } else {
                t + 0.5
            };
            assert!(
                close(next, expected),
                "seed {seed}: {t} then {next}, not {expected}"
            );
        }
    }
}
