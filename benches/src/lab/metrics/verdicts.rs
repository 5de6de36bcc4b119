//! The scenario's thresholds checked against a run's summary.

use std::time::Duration;

use serde::Serialize;

use super::Summary;
use crate::lab::scenario::{Scenario, Thresholds};

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
    /// The feature only which can pass it, when it is a feature check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// Why the seawall stack is known to fail it here, when it is (a known failure does not
    /// fail the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_failing: Option<String>,
}

impl Verdict {
    /// Whether it fails without being a known failure.
    pub fn fails_unexpectedly(&self) -> bool {
        !self.pass && self.known_failing.is_none()
    }
}

fn check(threshold: &'static str, limit: String, actual: Option<String>, pass: bool) -> Verdict {
    Verdict {
        threshold,
        limit,
        actual: actual.unwrap_or_else(|| "none".into()),
        pass,
        feature: None,
        known_failing: None,
    }
}

fn max_check(threshold: &'static str, limit: f64, actual: Option<f64>, unit: &str) -> Verdict {
    check(
        threshold,
        format!("<= {}{unit}", fmt_num(limit)),
        actual.map(|a| format!("{}{unit}", fmt_num(a))),
        actual.is_some_and(|a| a <= limit + 1e-12),
    )
}

fn min_check(threshold: &'static str, limit: f64, actual: Option<f64>, unit: &str) -> Verdict {
    check(
        threshold,
        format!(">= {}{unit}", fmt_num(limit)),
        actual.map(|a| format!("{}{unit}", fmt_num(a))),
        actual.is_some_and(|a| a >= limit - 1e-12),
    )
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

/// Every threshold of `thresholds` checked against `summary`, each labelled with the feature
/// it checks when `scenario` says so.
pub fn verdicts(scenario: &Scenario, thresholds: &Thresholds, summary: &Summary) -> Vec<Verdict> {
    let t = thresholds;
    let s = summary;
    let mut out = Vec::new();
    let count = |x: u64| Some(x as f64);
    let latency = s.latency_span.or(s.latency_all);
    let mut max = |name, limit: Option<f64>, actual: Option<f64>, unit| {
        if let Some(l) = limit {
            out.push(max_check(name, l, actual, unit));
        }
    };
    let time = |d: Option<Duration>| d.map(ms_of);
    max(
        "amplification_max",
        t.amplification_max,
        Some(s.amplification),
        "",
    );
    max(
        "amplification_fault_max",
        t.amplification_fault_max,
        s.amplification_fault,
        "",
    );
    max(
        "amplification_open_max",
        t.amplification_open_max,
        s.amplification_open,
        "",
    );
    max(
        "amplification_after_max",
        t.amplification_after_max,
        s.amplification_after,
        "",
    );
    max(
        "detect_max",
        time(t.detect_max),
        s.time_to_detect_s.map(|x| x * 1e3),
        " ms",
    );
    max(
        "detect_calls_max",
        t.detect_calls_max.map(|x| x as f64),
        count(s.detect_calls),
        "",
    );
    max(
        "detect_calls_p99_max",
        t.detect_calls_p99_max.map(|x| x as f64),
        count(s.detect_calls_p99),
        "",
    );
    max(
        "recover_max",
        time(t.recover_max),
        s.time_to_recover_s.map(|x| x * 1e3),
        " ms",
    );
    max(
        "fast_fail_p99_max",
        time(t.fast_fail_p99_max),
        s.fast_fail_p99_ms,
        " ms",
    );
    max("p99_max", time(t.p99_max), latency.map(|p| p.p99_ms), " ms");
    max(
        "p999_max",
        time(t.p999_max),
        latency.map(|p| p.p999_ms),
        " ms",
    );
    max(
        "p99_after_max",
        time(t.p99_after_max),
        s.latency_after.map(|p| p.p99_ms),
        " ms",
    );
    max(
        "false_open_time_max",
        time(t.false_open_time_max),
        Some(s.false_open_time_s * 1e3),
        " ms",
    );
    max(
        "false_open_ratio_max",
        t.false_open_ratio_max,
        s.false_open_ratio,
        "",
    );
    max(
        "rejections_max",
        t.rejections_max.map(|x| x as f64),
        count(s.rejections),
        "",
    );
    max(
        "bulkhead_rejections_max",
        t.bulkhead_rejections_max.map(|x| x as f64),
        count(s.bulkhead_rejections),
        "",
    );
    max(
        "inflight_max",
        t.inflight_max.map(|x| x as f64),
        Some(f64::from(s.max_in_flight)),
        "",
    );
    if t.inflight_within_limit == Some(true) {
        out.push(check(
            "inflight_within_limit",
            s.concurrency_limit.map_or_else(
                || "<= the stack's limit".into(),
                |l| format!("<= {l} per client"),
            ),
            Some(format!("{} per client", s.max_in_flight_per_client)),
            s.concurrency_limit
                .is_some_and(|l| u64::from(s.max_in_flight_per_client) <= l),
        ));
    }
    let mut max = |name, limit: Option<f64>, actual: Option<f64>, unit| {
        if let Some(l) = limit {
            out.push(max_check(name, l, actual, unit));
        }
    };
    max(
        "breaker_opens_max",
        t.breaker_opens_max.map(|x| x as f64),
        count(s.breaker_opens),
        "",
    );
    max(
        "transitions_per_cycle_max",
        t.transitions_per_cycle_max,
        s.transitions_per_cycle,
        "",
    );
    let mut min = |name, limit: Option<f64>, actual: Option<f64>| {
        if let Some(l) = limit {
            out.push(min_check(name, l, actual, ""));
        }
    };
    min(
        "success_fault_min",
        t.success_fault_min,
        s.success_rate_fault,
    );
    min("success_min", t.success_min, Some(s.success_rate));
    min(
        "healthy_keys_success_min",
        t.healthy_keys_success_min,
        s.healthy_keys_success,
    );
    if let Some(only) = t.only_faulty_keys_open {
        let faulty = scenario.faulty_keys();
        let opened = s.opened_keys.clone();
        out.push(check(
            "only_faulty_keys_open",
            format!("opened = {faulty:?}"),
            Some(format!("opened = {opened:?}")),
            !only || opened == faulty,
        ));
    }
    let mut max = |name, limit: Option<f64>, actual: Option<f64>, unit| {
        if let Some(l) = limit {
            out.push(max_check(name, l, actual, unit));
        }
    };
    max(
        "false_timeout_max",
        t.false_timeout_max,
        Some(s.false_timeout_rate),
        "",
    );
    let mut min = |name, limit: Option<f64>, actual: Option<f64>| {
        if let Some(l) = limit {
            out.push(min_check(name, l, actual, ""));
        }
    };
    min("goodput_min", t.goodput_min, s.goodput);
    min("goodput_after_min", t.goodput_after_min, s.goodput_after);
    let mut max = |name, limit: Option<f64>, actual: Option<f64>, unit| {
        if let Some(l) = limit {
            out.push(max_check(name, l, actual, unit));
        }
    };
    max(
        "accepted_p99_ratio_max",
        t.accepted_p99_ratio_max,
        s.accepted_p99_ratio,
        "",
    );
    max(
        "early_retries_max",
        t.early_retries_max.map(|x| x as f64),
        count(s.early_retries),
        "",
    );
    max(
        "eject_detect_max",
        time(t.eject_detect_max),
        s.eject_detect_ms,
        " ms",
    );
    max(
        "ejected_max",
        t.ejected_max.map(|x| x as f64),
        s.ejected_max.map(f64::from),
        "",
    );
    if let Some(limit) = t.healthy_endpoints_success_min {
        out.push(min_check(
            "healthy_endpoints_success_min",
            limit,
            s.healthy_endpoints_success,
            "",
        ));
    }
    for v in &mut out {
        v.feature = scenario.feature(v.threshold).map(str::to_owned);
    }
    out
}
