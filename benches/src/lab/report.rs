//! The report: a table on the terminal, and JSON for CI and for plotting.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::lab::metrics::{self, Percentiles, Series, Summary, Verdict, fmt_num};
use crate::lab::scenario::{Cell, Scenario};
use crate::lab::stacks::{Settings, StackKind};

/// The version of the JSON layout; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 2;

/// Why a tower-resilience row whose breaker opened is not its behaviour.
pub const TOWER_RESILIENCE_INVALID: &str = "its breaker opened, and it times the open state with \
std::time::Instant, which the paused clock does not move: it would stay open to the end";

/// Why a tower-resilience row whose outlier ejection outlasted its ejection time is not its
/// behaviour.
pub const TOWER_RESILIENCE_EJECTION_INVALID: &str = "its outlier detection ejected an endpoint \
and the run went on past the ejection time, but it times ejections with std::time::Instant, \
which the paused clock does not move: the endpoint stayed out to the end";

/// One stack's results in one scenario cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackReport {
    /// The stack's name.
    pub stack: &'static str,
    /// Whether the row shows the stack's behaviour (false when the paused clock breaks it).
    pub valid: bool,
    /// Why not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// What it ran with.
    pub settings: Value,
    /// Every figure.
    pub summary: Summary,
    /// The scenario's thresholds checked against this stack.
    pub verdicts: Vec<Verdict>,
    /// Per-second figures.
    pub series: Series,
}

/// One scenario cell's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioReport {
    /// Its id.
    pub id: String,
    /// Its id with the cell's values.
    pub name: String,
    /// The cell's values, when the scenario has a matrix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<Cell>,
    /// What it shows.
    pub description: String,
    /// The file it came from.
    pub file: String,
    /// The hash of that file's text.
    pub hash: String,
    /// Seconds of requests.
    pub duration_s: f64,
    /// The total rate offered, open loop (0 in closed loop).
    pub rate: f64,
    /// Client stacks.
    pub clients: u32,
    /// Each request's budget, ms.
    pub deadline_ms: f64,
    /// Fault windows and load phases, `[start, end]` in seconds.
    pub fault_windows: Vec<[f64; 2]>,
    /// The downstream's healthy capacity in calls per second, if it has one.
    pub capacity_rps: Option<f64>,
    /// Each stack's results.
    pub stacks: Vec<StackReport>,
}

impl ScenarioReport {
    /// The seawall stack's verdicts that failed and are not known failures.
    pub fn seawall_unexpected(&self) -> Vec<&Verdict> {
        self.seawall()
            .flat_map(|s| &s.verdicts)
            .filter(|v| v.fails_unexpectedly())
            .collect()
    }

    /// The seawall stack's known failures that failed.
    pub fn seawall_known(&self) -> Vec<&Verdict> {
        self.seawall()
            .flat_map(|s| &s.verdicts)
            .filter(|v| !v.pass && v.known_failing.is_some())
            .collect()
    }

    /// Whether every seawall verdict passed or is a known failure (true when seawall did not
    /// run).
    pub fn seawall_passed(&self) -> bool {
        self.seawall_unexpected().is_empty()
    }

    fn seawall(&self) -> impl Iterator<Item = &StackReport> {
        self.stacks
            .iter()
            .filter(|s| s.stack == StackKind::Seawall.name())
    }
}

/// A whole lab run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The master seed.
    pub seed: u64,
    /// Whether the scenarios were shortened with `--quick`.
    pub quick: bool,
    /// The seawall stack's configuration before each cell's deadline.
    pub settings: Value,
    /// Every scenario cell.
    pub scenarios: Vec<ScenarioReport>,
    /// Seawall verdicts that failed as known.
    pub known_failures: usize,
    /// Seawall verdicts that failed and are not known failures.
    pub unexpected_failures: usize,
    /// Whether every seawall verdict passed or failed as known.
    pub passed: bool,
}

impl Report {
    /// The report of `scenarios`.
    pub fn new(
        seed: u64,
        quick: bool,
        settings: &Settings,
        scenarios: Vec<ScenarioReport>,
    ) -> Self {
        let known = scenarios.iter().map(|s| s.seawall_known().len()).sum();
        let unexpected = scenarios.iter().map(|s| s.seawall_unexpected().len()).sum();
        Self {
            schema_version: SCHEMA_VERSION,
            seed,
            quick,
            settings: settings.seawall.json().clone(),
            scenarios,
            known_failures: known,
            unexpected_failures: unexpected,
            passed: unexpected == 0,
        }
    }
}

/// Runs `stack` against one scenario cell and collects its results.
pub fn stack_report(
    scenario: &Scenario,
    stack: StackKind,
    settings: &Settings,
    seed: u64,
) -> StackReport {
    let deadline = scenario.workload.deadline;
    let settings = settings.with_deadline(deadline);
    let trace = crate::lab::run(scenario, stack, &settings, seed);
    let mut summary = metrics::summarize(scenario, &trace);
    summary.concurrency_limit = settings.concurrency_limit(stack);
    let mut verdicts = metrics::verdicts(scenario, &scenario.thresholds, &summary);
    if stack == StackKind::Seawall {
        for v in &mut verdicts {
            v.known_failing = scenario.known_failure(v.threshold).map(str::to_owned);
        }
    }
    let invalid_reason = (stack == StackKind::TowerResilience)
        .then(|| tower_resilience_invalid(scenario, &trace, &summary))
        .flatten();
    StackReport {
        stack: stack.name(),
        valid: invalid_reason.is_none(),
        invalid_reason,
        settings: settings.json(stack, deadline),
        series: metrics::series(&trace, deadline.as_nanos() as u64),
        verdicts,
        summary,
    }
}

/// Why a tower-resilience run is not its behaviour, if it is not: where its wall-clock timing
/// (of an open breaker, of an ejection) would have ended something that, on the paused clock,
/// went on to the end of the run.
fn tower_resilience_invalid(
    scenario: &Scenario,
    trace: &metrics::Trace,
    summary: &Summary,
) -> Option<String> {
    let breaker = (summary.breaker_opens > 0).then_some(TOWER_RESILIENCE_INVALID);
    let ejection = scenario
        .stacks
        .outlier
        .as_ref()
        .filter(|config| {
            // A first ejection's time; one never ends on the paused clock, so there is no second.
            let first = config.base_ejection_time().min(config.max_ejection_time());
            ejection_outlasted(trace, first)
        })
        .map(|_| TOWER_RESILIENCE_EJECTION_INVALID);
    let reasons: Vec<&str> = breaker.into_iter().chain(ejection).collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// Whether a client sent a request `ejection` or more after its first request that saw an
/// endpoint ejected (the ejection would have ended by then on a clock that moves), or saw
/// fewer ejected than before (the wall clock ended one: a slow run).
fn ejection_outlasted(trace: &metrics::Trace, ejection: std::time::Duration) -> bool {
    let ejection = ejection.as_nanos() as u64;
    let mut seen: Vec<(Option<u64>, u32)> = vec![(None, 0); trace.clients as usize];
    // A request never sent has read no count.
    let mut sent = trace
        .requests
        .iter()
        .filter(|r| r.outcome != metrics::Outcome::Unanswered);
    sent.any(|r| {
        let (first, last) = &mut seen[r.client as usize];
        let ended =
            r.ejected < *last || first.is_some_and(|t| r.intended >= t.saturating_add(ejection));
        if r.ejected > 0 && first.is_none() {
            *first = Some(r.intended);
        }
        *last = r.ejected;
        ended
    })
}

/// The report of one scenario cell from its stacks' reports.
pub fn scenario_report(scenario: &Scenario, stacks: Vec<StackReport>) -> ScenarioReport {
    let mut fault_windows: Vec<[f64; 2]> = scenario
        .fault_windows()
        .iter()
        .map(|&(s, e, _)| [s.as_secs_f64(), e.as_secs_f64()])
        .chain(
            scenario
                .workload
                .phases
                .iter()
                .map(|p| [p.start.as_secs_f64(), p.end.as_secs_f64()]),
        )
        .collect();
    fault_windows.sort_by(|a, b| a[0].total_cmp(&b[0]));
    ScenarioReport {
        id: scenario.id.clone(),
        name: scenario.name(),
        cell: scenario.cell.filter(|c| !c.parts().is_empty()),
        description: scenario.description.clone(),
        file: scenario.file.clone(),
        hash: scenario.hash.clone(),
        duration_s: scenario.duration.as_secs_f64(),
        rate: scenario.workload.rate,
        clients: scenario.workload.clients,
        deadline_ms: scenario.workload.deadline.as_secs_f64() * 1e3,
        fault_windows,
        capacity_rps: scenario.downstream.capacity_rps(),
        stacks,
    }
}

/// Runs every stack of `stacks` against one scenario cell, one after the other.
pub fn run_scenario(
    scenario: &Scenario,
    stacks: &[StackKind],
    settings: &Settings,
    seed: u64,
) -> ScenarioReport {
    let reports = stacks
        .iter()
        .map(|&stack| stack_report(scenario, stack, settings, seed))
        .collect();
    scenario_report(scenario, reports)
}

/// The report as pretty JSON.
pub fn to_json(report: &Report) -> String {
    let mut json = serde_json::to_string_pretty(report).expect("the report serializes");
    json.push('\n');
    json
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or_else(|| "-".into(), f)
}

fn ms(p: Option<Percentiles>, f: fn(&Percentiles) -> f64) -> String {
    p.as_ref()
        .map_or("-".into(), |p| format!("{}ms", fmt_ms(f(p))))
}

/// The columns of the default table (it fits 120 columns), then those only `--wide` shows.
pub const COLUMNS: [(&str, bool, &str); 25] = [
    (
        "stack",
        true,
        "the stack; `!` marks a row that is not its behaviour (see below it)",
    ),
    (
        "success",
        true,
        "share of requests that succeeded (without fallback)",
    ),
    (
        "w/ fb",
        false,
        "share that succeeded or got a fallback answer",
    ),
    (
        "goodput",
        true,
        "successes within the deadline during the faults and load phases (the whole run without any), as a share of the attainable rate: min(offered, capacity, quota)",
    ),
    ("good/s", false, "the same goodput in successes per second"),
    (
        "good aft",
        false,
        "goodput after the last fault or load phase, as a share of the attainable rate",
    ),
    (
        "A",
        true,
        "amplification: attempts that reached the downstream per request, whole run",
    ),
    ("A peak", false, "the highest amplification of any second"),
    (
        "A fault",
        true,
        "amplification of the requests sent during the faults and load phases",
    ),
    (
        "A after",
        true,
        "amplification of the requests sent after the last fault or load phase",
    ),
    (
        "ok p50",
        false,
        "median latency of successes, from the intended send time",
    ),
    (
        "ok p99",
        true,
        "p99 latency of successes, from the intended send time",
    ),
    ("ok p99.9", false, "p99.9 latency of successes"),
    ("ok max", false, "slowest success"),
    (
        "fail p99",
        true,
        "p99 latency of failures, fallback answers and unanswered requests",
    ),
    ("fail max", false, "slowest of those"),
    (
        "p99 aft",
        false,
        "p99 latency of every request sent after the last fault or load phase",
    ),
    (
        "detect",
        true,
        "the median client's time from the first fault (or load phase) to its first fast rejection or open breaker; in brackets its failed calls (attempts) until then; `-` when the median client never detected",
    ),
    (
        "calls p99",
        false,
        "failed calls before detection of the 99th-percentile client",
    ),
    (
        "recover",
        true,
        "from the last fault's end to successes within the deadline back at 99% of before, held 5 s",
    ),
    (
        "false-open",
        false,
        "time a breaker was open while the downstream was healthy, summed over breakers",
    ),
    (
        "opens",
        true,
        "times a breaker opened, over every client (and key)",
    ),
    (
        "in-flight",
        false,
        "most calls in flight at the downstream at once (per client in brackets)",
    ),
    (
        "early",
        false,
        "retries sent before a Retry-After received for that key expired",
    ),
    (
        "verdicts",
        true,
        "the scenario's thresholds this stack meets, of all (- on an invalid row, marked !)",
    ),
];

fn cells(s: &StackReport) -> Vec<String> {
    let m = &s.summary;
    let (ok, fail) = (m.latency_success, m.latency_failure);
    let passed = s.verdicts.iter().filter(|v| v.pass).count();
    vec![
        format!("{}{}", s.stack, if s.valid { "" } else { " !" }),
        pct(m.success_rate),
        pct(m.success_rate_with_fallback),
        opt(m.goodput, pct),
        format!("{:.0}/s", m.goodput_rps),
        opt(m.goodput_after, pct),
        format!("{:.3}", m.amplification),
        format!("{:.2}", m.amplification_peak),
        opt(m.amplification_fault, |a| format!("{a:.3}")),
        opt(m.amplification_after, |a| format!("{a:.3}")),
        ms(ok, |p| p.p50_ms),
        ms(ok, |p| p.p99_ms),
        ms(ok, |p| p.p999_ms),
        ms(ok, |p| p.max_ms),
        ms(fail, |p| p.p99_ms),
        ms(fail, |p| p.max_ms),
        ms(m.latency_after, |p| p.p99_ms),
        match m.time_to_detect_s {
            Some(t) => format!("{}ms ({})", fmt_ms(t * 1e3), m.detect_calls),
            None if m.clients_detected > 0 || m.detect_calls > 0 => {
                format!("- ({})", m.detect_calls)
            }
            None => "-".into(),
        },
        m.detect_calls_p99.to_string(),
        opt(m.time_to_recover_s, |t| format!("{t:.1}s")),
        format!("{:.1}s", m.false_open_time_s),
        m.breaker_opens.to_string(),
        format!("{} ({})", m.max_in_flight, m.max_in_flight_per_client),
        m.early_retries.to_string(),
        // An invalid row's figures are not the stack's behaviour: no verdict is read from them.
        if s.valid {
            format!("{passed}/{}", s.verdicts.len())
        } else {
            "-".into()
        },
    ]
}

/// The terminal table of one scenario cell: a row per stack, then the seawall verdicts.
///
/// The default table keeps the columns that fit 120 characters; `wide` shows them all. The
/// legend of every column is [`COLUMNS`] (printed by `lab --help`).
pub fn table(report: &ScenarioReport, seed: u64, wide: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} - {} ({}, seed {seed}, hash {})",
        report.name, report.description, report.file, report.hash
    );
    let shown: Vec<usize> = (0..COLUMNS.len())
        .filter(|&i| wide || COLUMNS[i].1)
        .collect();
    let mut rows = vec![
        shown
            .iter()
            .map(|&i| COLUMNS[i].0.to_owned())
            .collect::<Vec<_>>(),
    ];
    for s in &report.stacks {
        let all = cells(s);
        rows.push(shown.iter().map(|&i| all[i].clone()).collect());
    }
    let widths: Vec<usize> = (0..shown.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "  {}", line.join(" ").trim_end());
    }
    for s in report.stacks.iter().filter(|s| !s.valid) {
        let _ = writeln!(
            out,
            "  ! {}: invalid, {}",
            s.stack,
            s.invalid_reason.as_deref().unwrap_or("")
        );
    }
    for s in report
        .stacks
        .iter()
        .filter(|s| s.stack == StackKind::Seawall.name())
    {
        for v in &s.verdicts {
            let mark = match (v.pass, &v.known_failing) {
                (true, _) => "pass ",
                (false, None) => "FAIL ",
                (false, Some(_)) => "FAIL*",
            };
            let feature = v
                .feature
                .as_ref()
                .map_or(String::new(), |f| format!("  [feature check: {f}]"));
            let _ = writeln!(
                out,
                "  seawall {mark} {:<25} {:<17} actual {}{feature}",
                v.threshold, v.limit, v.actual
            );
            if let (false, Some(reason)) = (v.pass, &v.known_failing) {
                let _ = writeln!(out, "                * known failing: {reason}");
            }
        }
    }
    out
}

fn fmt_ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        fmt_num((x * 10.0).round() / 10.0)
    }
}
