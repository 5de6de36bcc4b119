//! The report: a table on the terminal, and JSON for CI and for plotting.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::lab::metrics::{self, Series, Summary, Verdict, fmt_num};
use crate::lab::scenario::Scenario;
use crate::lab::stacks::{Settings, StackKind};

/// The version of the JSON layout; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// One stack's results in one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackReport {
    /// The stack's name.
    pub stack: &'static str,
    /// Every figure.
    pub summary: Summary,
    /// The scenario's thresholds checked against this stack.
    pub verdicts: Vec<Verdict>,
    /// Per-second figures.
    pub series: Series,
}

/// One scenario's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioReport {
    /// Its id.
    pub id: String,
    /// What it shows.
    pub description: String,
    /// The file it came from.
    pub file: String,
    /// The hash of that file's text.
    pub hash: String,
    /// Seconds of arrivals.
    pub duration_s: f64,
    /// Fault windows and load phases, `[start, end]` in seconds.
    pub fault_windows: Vec<[f64; 2]>,
    /// The downstream's capacity in calls per second, if it has one.
    pub capacity_rps: Option<f64>,
    /// Each stack's results.
    pub stacks: Vec<StackReport>,
}

impl ScenarioReport {
    /// Whether every seawall verdict passed (true when seawall did not run).
    pub fn seawall_passed(&self) -> bool {
        self.stacks
            .iter()
            .filter(|s| s.stack == StackKind::Seawall.name())
            .all(|s| s.verdicts.iter().all(|v| v.pass))
    }
}

/// The settings every protected stack shared, as the JSON shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsReport {
    /// Per-attempt timeout, ms.
    pub attempt_timeout_ms: f64,
    /// Total timeout, ms.
    pub total_timeout_ms: f64,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Retry budget ratio.
    pub budget_ratio: f64,
    /// Retry budget floor per second.
    pub budget_floor: u32,
    /// Concurrency limit.
    pub concurrency: usize,
    /// Breaker failure-rate threshold.
    pub breaker_failure_rate: f64,
    /// Breaker open time, ms.
    pub breaker_open_ms: f64,
}

impl From<&Settings> for SettingsReport {
    fn from(s: &Settings) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Self {
            attempt_timeout_ms: ms(s.attempt_timeout),
            total_timeout_ms: ms(s.total_timeout),
            max_retries: s.max_retries,
            budget_ratio: f64::from(s.budget_ratio),
            budget_floor: s.budget_floor,
            concurrency: s.concurrency,
            breaker_failure_rate: s.breaker_failure_rate,
            breaker_open_ms: ms(s.breaker_open),
        }
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
    /// The protected stacks' shared settings.
    pub settings: SettingsReport,
    /// Every scenario.
    pub scenarios: Vec<ScenarioReport>,
    /// Whether every seawall verdict passed.
    pub passed: bool,
}

/// Runs every stack of `stacks` against `scenario` and collects the results.
pub fn scenario_report(
    scenario: &Scenario,
    stacks: &[StackKind],
    settings: &Settings,
    seed: u64,
) -> ScenarioReport {
    let stacks = stacks
        .iter()
        .map(|&stack| {
            let trace = crate::lab::run(scenario, stack, settings, seed);
            let summary = metrics::summarize(scenario, &trace);
            StackReport {
                stack: stack.name(),
                verdicts: metrics::verdicts(scenario, &scenario.thresholds, &summary),
                series: metrics::series(&trace),
                summary,
            }
        })
        .collect();
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
        description: scenario.description.clone(),
        file: scenario.file.clone(),
        hash: scenario.hash.clone(),
        duration_s: scenario.duration.as_secs_f64(),
        fault_windows,
        capacity_rps: scenario.downstream.capacity_rps(),
        stacks,
    }
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

/// The terminal table of one scenario: a row per stack, then the seawall verdicts.
///
/// Latencies run from each request's intended send time, successes (`ok`) and failures
/// (`fail`) apart; `detect` shows the calls that failed before detection in brackets.
pub fn table(report: &ScenarioReport, seed: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} - {} ({}, seed {seed}, hash {})",
        report.id, report.description, report.file, report.hash
    );
    let header = [
        "stack",
        "success",
        "w/ fb",
        "goodput",
        "A",
        "A peak",
        "A fault",
        "ok p50",
        "ok p99",
        "ok p99.9",
        "ok max",
        "fail p99",
        "fail max",
        "detect",
        "recover",
        "false-open",
        "in-flight",
        "verdicts",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for s in &report.stacks {
        let m = &s.summary;
        let ms = |p: Option<metrics::Percentiles>, f: fn(&metrics::Percentiles) -> f64| {
            p.as_ref()
                .map_or("-".into(), |p| format!("{}ms", fmt_ms(f(p))))
        };
        let (ok, fail) = (m.latency_success, m.latency_failure);
        let passed = s.verdicts.iter().filter(|v| v.pass).count();
        rows.push(vec![
            s.stack.to_owned(),
            pct(m.success_rate),
            pct(m.success_rate_with_fallback),
            match m.goodput_capacity {
                Some(c) => format!("{:.0}/s {}", m.goodput_rps, pct(c)),
                None => format!("{:.0}/s", m.goodput_rps),
            },
            format!("{:.3}", m.amplification),
            format!("{:.2}", m.amplification_peak),
            opt(m.amplification_fault, |a| format!("{a:.3}")),
            ms(ok, |p| p.p50_ms),
            ms(ok, |p| p.p99_ms),
            ms(ok, |p| p.p999_ms),
            ms(ok, |p| p.max_ms),
            ms(fail, |p| p.p99_ms),
            ms(fail, |p| p.max_ms),
            opt(m.time_to_detect_s, |t| {
                format!("{}ms ({})", fmt_ms(t * 1e3), m.failed_before_detect)
            }),
            opt(m.time_to_recover_s, |t| format!("{t:.1}s")),
            format!("{:.1}s", m.false_open_time_s),
            m.max_in_flight.to_string(),
            format!("{passed}/{}", s.verdicts.len()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
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
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
    for s in report
        .stacks
        .iter()
        .filter(|s| s.stack == StackKind::Seawall.name())
    {
        for v in &s.verdicts {
            let mark = if v.pass { "pass" } else { "FAIL" };
            let _ = writeln!(
                out,
                "  seawall {mark}  {:<26} {:<22} actual {}",
                v.threshold, v.limit, v.actual
            );
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
