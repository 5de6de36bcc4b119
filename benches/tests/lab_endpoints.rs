//! Endpoints in the lab: `[downstream] endpoints`, faults that hit some of them, `[stacks]`
//! (balance, hedge, outlier), and how calls are spread, on small scenarios whose results are
//! worked out by hand.

use std::sync::Arc;
use std::time::Duration;

use seawall_bench::lab::metrics::{Failure, Outcome, Trace, summarize};
use seawall_bench::lab::run_stack;
use seawall_bench::lab::scenario::{Balance, Scenario};
use seawall_bench::lab::stacks::balance::{spread, spread_tower_resilience};
use seawall_bench::lab::stacks::{self, Built, Settings};
use seawall_bench::lab::workload::EjectedProbe;
use seawall_core::BoxError;
use tower::ServiceExt;
use tower::util::Either;

fn parse(text: &str) -> Scenario {
    Scenario::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> String {
    Scenario::parse("test.toml", text)
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

const BASE: &str = r#"
id = "endpoints"
duration = "1s"
[workload]
rate = 300
"#;

/// Every client spreads its calls by `balance` (with outlier ejection when `eject`), with no
/// other protection.
fn run_spread(scenario: &Scenario, balance: Balance, eject: bool) -> Trace {
    let outlier = eject.then(seawall_outlier::OutlierConfig::default);
    run_stack(scenario, 1, |ds, _, _| {
        let (service, handle) = spread(ds, balance, outlier.as_ref(), 7);
        let ejected = handle.map(|h| Arc::new(move || h.ejected() as u32) as EjectedProbe);
        Built {
            service: service.map_err(stacks::classify as fn(BoxError) -> Failure),
            breaker: None,
            keyed_breaker: false,
            ejected,
        }
    })
}

#[test]
fn endpoints_and_the_faults_that_hit_some_of_them_parse() {
    let s = parse(&format!(
        "{BASE}[downstream]\nendpoints = 3\nworkers = 2\n\
         [[faults]]\nkind = \"capacity\"\nworkers = 1\nstart = \"0s\"\nend = \"1s\"\nendpoints = [0]\n"
    ));
    assert_eq!(s.downstream.endpoints, 3);
    assert_eq!(s.faults[0].endpoints, Some(vec![0]));
    assert!(s.faults[0].hits_endpoint(0) && !s.faults[0].hits_endpoint(1));
    // Capacity is per endpoint: 2 + 2 workers, and 1 where the fault hits.
    assert_eq!(s.workers_at(Duration::from_millis(500)), Some(5));
    assert_eq!(parse(BASE).downstream.endpoints, 1);

    let err = error(&format!("{BASE}[downstream]\nendpoints = 0\n"));
    assert!(err.contains("downstream.endpoints"), "{err}");
    let err = error(&format!(
        "{BASE}[downstream]\nendpoints = 2\n[[faults]]\nkind = \"error\"\nstart = \"0s\"\nend = \"1s\"\nendpoints = [2]\n"
    ));
    assert!(
        err.contains("faults.endpoints") && err.contains("below downstream.endpoints (2)"),
        "{err}"
    );
    let err = error(&format!(
        "{BASE}[[faults]]\nkind = \"error\"\nstart = \"0s\"\nend = \"1s\"\nendpoints = []\n"
    ));
    assert!(err.contains("faults.endpoints"), "{err}");
}

#[test]
fn stacks_choose_their_balance_hedge_and_outlier() {
    let s = parse(BASE);
    assert_eq!(s.stacks.balance("seawall"), Balance::P2c);
    assert_eq!(s.stacks.balance("tower"), Balance::P2c);
    assert_eq!(s.stacks.balance("naive"), Balance::RoundRobin);
    assert!(s.stacks.hedge.is_none() && s.stacks.outlier.is_none());

    let s = parse(&format!(
        "{BASE}[stacks]\nbalance = \"round_robin\"\nhedge = {{ delay = \"10ms\" }}\noutlier = {{ consecutive_failures = 3 }}\n"
    ));
    assert_eq!(s.stacks.balance("seawall"), Balance::RoundRobin);
    assert_eq!(s.stacks.balance("unprotected"), Balance::RoundRobin);
    assert!(s.stacks.hedge.is_some() && s.stacks.outlier.is_some());

    let s = parse(&format!(
        "{BASE}[stacks]\nbalance = {{ naive = \"p2c\" }}\n"
    ));
    assert_eq!(s.stacks.balance("naive"), Balance::P2c);
    assert_eq!(s.stacks.balance("tower"), Balance::P2c);

    let err = error(&format!(
        "{BASE}[stacks]\nbalance = {{ envoy = \"p2c\" }}\n"
    ));
    assert!(err.contains("stacks.balance"), "{err}");
    let err = error(&format!("{BASE}[stacks]\nhedge = {{ max_attempts = 0 }}\n"));
    assert!(err.contains("max_attempts"), "{err}");
    let err = error(&format!("{BASE}[stacks]\nbalancer = \"p2c\"\n"));
    assert!(err.contains("balancer"), "{err}");
}

#[test]
fn one_endpoint_is_handed_on_as_it_is() {
    let s = parse(BASE);
    run_stack(&s, 1, |ds, _, _| {
        let (service, handle) = spread(ds, Balance::P2c, None, 7);
        assert!(matches!(service, Either::Right(_)));
        assert!(handle.is_none());
        Built {
            service: service.map_err(stacks::classify as fn(BoxError) -> Failure),
            breaker: None,
            keyed_breaker: false,
            ejected: None,
        }
    });
}

#[test]
fn round_robin_spreads_evenly_and_a_fault_hits_only_its_endpoint() {
    let s = parse(&format!(
        "{BASE}[downstream]\nendpoints = 3\n[[faults]]\nkind = \"error\"\nstart = \"0s\"\nend = \"1s\"\nendpoints = [1]\n"
    ));
    let trace = run_spread(&s, Balance::RoundRobin, false);
    // 300 calls in turn over 3 endpoints: 100 each; every call to endpoint 1 fails, the
    // others are served (10 ms, well within the deadline).
    assert_eq!(trace.endpoint_fault, vec![(100, 100), (100, 0), (100, 100)]);
    let failed = trace
        .requests
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .count();
    assert_eq!(failed, 100);
    let summary = summarize(&s, &trace);
    assert_eq!(summary.healthy_endpoints_success, Some(1.0));
    assert_eq!(summary.ejected_max, Some(0));
}

#[test]
fn p2c_with_outlier_ejection_stops_calling_the_failing_endpoint() {
    let s = parse(
        r#"
id = "eject"
duration = "2s"
[workload]
rate = 1000
[downstream]
endpoints = 5
[[faults]]
kind = "error"
start = "0s"
end = "2s"
endpoints = [0]
[thresholds]
eject_detect_max = "1s"
ejected_max = 1
"#,
    );
    let trace = run_spread(&s, Balance::P2c, true);
    // Errors come back at once, so each failure is counted before the next call is sent:
    // the fifth failure in a row ejects endpoint 0 for 30 s, longer than the run.
    assert_eq!(trace.endpoint_fault[0], (5, 0));
    // Every other attempt in the span is served (the last request, meant for just before
    // 2 s, may go out at 2 s on the millisecond clock, past the span).
    let (attempts, served) = trace.endpoint_fault[1..]
        .iter()
        .fold((0, 0), |(a, s), e| (a + e.0, s + e.1));
    assert_eq!(served, attempts);
    assert!((2000 - 5 - 1..=2000 - 5).contains(&attempts), "{attempts}");
    let summary = summarize(&s, &trace);
    assert_eq!(summary.ejected_max, Some(1));
    // Detected at the request after the fifth failure, within the first few ms.
    assert!(
        summary.eject_detect_ms.is_some_and(|ms| ms < 100.0),
        "{summary:?}"
    );
    let verdicts = seawall_bench::lab::metrics::verdicts(&s, &s.thresholds, &summary);
    assert!(verdicts.iter().all(|v| v.pass), "{verdicts:?}");

    // Without ejection, p2c keeps sending to it: a failing endpoint looks unloaded.
    let trace = run_spread(&s, Balance::P2c, false);
    assert!(
        trace.endpoint_fault[0].0 > 100,
        "{:?}",
        trace.endpoint_fault
    );
}

/// A scenario of five endpoints, endpoint 0 failing every call for the whole run, with
/// outlier ejection for the stacks that have it.
fn one_bad_of_five(duration: &str, outlier: &str) -> Scenario {
    parse(&format!(
        r#"
id = "eject"
duration = "{duration}"
[workload]
rate = 1000
[downstream]
endpoints = 5
[[faults]]
kind = "error"
start = "0s"
end = "{duration}"
endpoints = [0]
[stacks]
outlier = {outlier}
"#
    ))
}

#[test]
fn tower_resilience_outlier_detection_ejects_the_failing_endpoint() {
    let s = one_bad_of_five("2s", "{}");
    let config = s.stacks.outlier.clone();
    let run = |outlier: Option<&seawall_outlier::OutlierConfig>| {
        run_stack(&s, 1, |ds, _, _| {
            let (service, detector) = spread_tower_resilience(ds, Balance::P2c, outlier, 7);
            let ejected =
                detector.map(|d| Arc::new(move || d.ejected_count() as u32) as EjectedProbe);
            Built {
                service: service.map_err(stacks::classify as fn(BoxError) -> Failure),
                breaker: None,
                keyed_breaker: false,
                ejected,
            }
        })
    };
    // As with seawall-outlier: the fifth failure in a row ejects endpoint 0, which then gets
    // nothing more in the run (its 30 s ejection outlasts it), and the run does not stall.
    let trace = run(config.as_ref());
    assert_eq!(trace.endpoint_fault[0], (5, 0));
    let summary = summarize(&s, &trace);
    assert_eq!(summary.ejected_max, Some(1));
    assert!(
        summary.eject_detect_ms.is_some_and(|ms| ms < 100.0),
        "{summary:?}"
    );
    // Without it, p2c keeps sending to the endpoint that fails fast.
    let trace = run(None);
    assert!(
        trace.endpoint_fault[0].0 > 100,
        "{:?}",
        trace.endpoint_fault
    );
}

#[test]
fn tower_resilience_row_is_invalid_where_its_ejection_outlasts_its_ejection_time() {
    use seawall_bench::lab::report::{TOWER_RESILIENCE_EJECTION_INVALID, run_scenario, table};
    use seawall_bench::lab::stacks::StackKind;

    let row = |s: &Scenario| {
        let report = run_scenario(s, &[StackKind::TowerResilience], &Settings::default(), 1);
        let row = report.stacks[0].clone();
        (row, table(&report, 1, false))
    };
    // Ejected at once for 1 s, in a run of 3 s: on a clock that moves, endpoint 0 would be
    // back after 1 s; on the paused one it stays out to the end.
    let (outlasted, text) = row(&one_bad_of_five("3s", r#"{ base_ejection_time = "1s" }"#));
    assert!(
        outlasted.summary.ejected_max.is_some_and(|n| n > 0),
        "{text}"
    );
    assert!(!outlasted.valid, "{text}");
    assert_eq!(
        outlasted.invalid_reason.as_deref(),
        Some(TOWER_RESILIENCE_EJECTION_INVALID),
        "{text}"
    );
    // Marked, and no verdict is read from its figures.
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("tower-resilience !"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with(" -"), "{line}");
    assert!(
        text.contains(&format!(
            "! tower-resilience: invalid, {TOWER_RESILIENCE_EJECTION_INVALID}"
        )),
        "{text}"
    );
    // Ejected for 30 s in a run of 2 s: the clock never reaches the end of the ejection, so
    // the row is the crate's behaviour.
    let (within, text) = row(&one_bad_of_five("2s", "{}"));
    assert!(within.summary.ejected_max.is_some_and(|n| n > 0), "{text}");
    assert!(within.valid, "{text}");
    assert_eq!(within.invalid_reason, None);
}

#[test]
fn the_tower_stack_hedges_with_towers_hedge_when_the_scenario_asks() {
    let text = r#"
id = "tail"
duration = "2s"
[workload]
rate = 500
[downstream]
latency = { kind = "fixed", value = "5ms" }
workers = 50
[[faults]]
kind = "slow"
rate = 0.05
latency = { kind = "fixed", value = "400ms" }
start = "1s"
end = "2s"
"#;
    let hedged = format!(
        "{text}[stacks]\nhedge = {{ delay = {{ quantile = 0.9, min_samples = 20, window = \"1s\" }} }}\n"
    );
    let settings = Settings::default().tower;
    let run = |s: &Scenario| {
        run_stack(s, 1, |ds, client, seeds| {
            let ds = spread(ds, Balance::P2c, None, !seeds.client(client)).0;
            stacks::tower(ds, &settings, s.stacks.hedge.as_ref(), seeds.client(client))
        })
    };
    let (plain, hedged) = (parse(text), parse(&hedged));
    let without = summarize(&plain, &run(&plain));
    let with = summarize(&hedged, &run(&hedged));
    // Without a hedge, the 5 % of calls that take 400 ms are the tail; with one, a second
    // attempt sent after p90 of recent latency (5 ms) answers in 5 ms.
    let p999 =
        |s: &seawall_bench::lab::metrics::Summary| s.latency_success.as_ref().unwrap().p999_ms;
    assert!(p999(&without) >= 400.0, "{without:?}");
    assert!(p999(&with) < 100.0, "{with:?}");
}

#[test]
fn tower_resilience_hedges_with_its_hedge_when_the_scenario_asks_for_a_fixed_delay() {
    use seawall_bench::lab::report::{run_scenario, table};
    use seawall_bench::lab::stacks::StackKind;

    // 5 % of calls take 200 ms, under the peers' 300 ms attempt timeout: no call fails, so
    // every attempt beyond one a request is a hedge.
    let text = r#"
id = "tail"
duration = "2s"
[workload]
rate = 500
[downstream]
latency = { kind = "fixed", value = "5ms" }
workers = 50
[[faults]]
kind = "slow"
rate = 0.05
latency = { kind = "fixed", value = "200ms" }
start = "1s"
end = "2s"
"#;
    let stacks = [
        StackKind::Tower,
        StackKind::TowerResilience,
        StackKind::Seawall,
    ];
    let run = |hedge: &str| {
        let scenario = parse(&format!("{text}[stacks]\nhedge = {hedge}\n"));
        run_scenario(&scenario, &stacks, &Settings::default(), 1)
    };
    let fixed = run(r#"{ delay = "15ms" }"#);
    // tower-resilience's hedge has no percentile delay: with one it does not hedge.
    let percentile = run(r#"{ delay = { quantile = 0.9, min_samples = 20, window = "1s" } }"#);
    let row = |report: &seawall_bench::lab::report::ScenarioReport| {
        report
            .stacks
            .iter()
            .find(|s| s.stack == "tower-resilience")
            .map(|s| s.summary.clone())
            .expect("a tower-resilience row")
    };
    let (hedged, plain) = (row(&fixed), row(&percentile));
    assert!(
        table(&fixed, 1, false).contains("tower-resilience"),
        "{}",
        table(&fixed, 1, false)
    );
    let p999 = |s: &seawall_bench::lab::metrics::Summary| s.latency_success.unwrap().p999_ms;
    assert_eq!(plain.amplification, 1.0, "{plain:?}");
    assert!(p999(&plain) >= 200.0, "{plain:?}");
    // The slow 5 % of the last second are hedged after 15 ms and answered 5 ms later.
    assert!(hedged.amplification > 1.01, "{hedged:?}");
    assert!(p999(&hedged) < 50.0, "{hedged:?}");
}
