//! What the seawall stack must show: each threshold present becomes a pass/fail verdict.

use std::time::Duration;

use seawall_core::config::{self, ConfigError};
use serde::Deserialize;

/// What the seawall stack must show; each one present becomes a pass/fail verdict.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Downstream attempts per client request, over the whole run.
    pub amplification_max: Option<f64>,
    /// Amplification of the requests sent during the faults and load phases.
    pub amplification_fault_max: Option<f64>,
    /// Amplification of the requests sent during the fault while their breaker was open.
    pub amplification_open_max: Option<f64>,
    /// Amplification of the requests sent after the last fault or load phase.
    pub amplification_after_max: Option<f64>,
    /// The median client's time from the first fault's start to its first fast rejection or
    /// open breaker.
    #[serde(with = "config::duration")]
    pub detect_max: Option<Duration>,
    /// The median client's failed calls from the first fault's start until it stopped
    /// sending (its first fast rejection or open breaker).
    pub detect_calls_max: Option<u64>,
    /// The same for the 99th-percentile client.
    pub detect_calls_p99_max: Option<u64>,
    /// Time from the last fault's end to a rate of successes within the deadline back at 99%
    /// of before, held 5 s.
    #[serde(with = "config::duration")]
    pub recover_max: Option<Duration>,
    /// p99 latency of the calls the stack rejected itself during the fault.
    #[serde(with = "config::duration")]
    pub fast_fail_p99_max: Option<Duration>,
    /// p99 latency of the requests sent during the fault span (or the run), from their
    /// intended send time.
    #[serde(with = "config::duration")]
    pub p99_max: Option<Duration>,
    /// p99.9 latency of the same requests.
    #[serde(with = "config::duration")]
    pub p999_max: Option<Duration>,
    /// p99 latency of the requests sent after the last fault or load phase.
    #[serde(with = "config::duration")]
    pub p99_after_max: Option<Duration>,
    /// Time a breaker was open while the downstream was healthy.
    #[serde(with = "config::duration")]
    pub false_open_time_max: Option<Duration>,
    /// Share of the calls made while healthy during the fault span that the stack rejected.
    pub false_open_ratio_max: Option<f64>,
    /// Calls the stack rejected itself.
    pub rejections_max: Option<u64>,
    /// Calls rejected by a bulkhead or load shedder.
    pub bulkhead_rejections_max: Option<u64>,
    /// Most calls in flight at the downstream at once.
    pub inflight_max: Option<u64>,
    /// Whether each client's calls in flight at the downstream stay within its stack's
    /// concurrency limit.
    pub inflight_within_limit: Option<bool>,
    /// Times any breaker opened.
    pub breaker_opens_max: Option<u64>,
    /// Breaker transitions per flapping cycle.
    pub transitions_per_cycle_max: Option<f64>,
    /// Success rate, without fallback, of the requests sent during the fault.
    pub success_fault_min: Option<f64>,
    /// Success rate, without fallback, over the whole run.
    pub success_min: Option<f64>,
    /// Success rate of the keys no fault hits, during the fault.
    pub healthy_keys_success_min: Option<f64>,
    /// Whether only the breakers of the keys a fault hits may open (and they must).
    pub only_faulty_keys_open: Option<bool>,
    /// Share of calls made while healthy that timed out.
    pub false_timeout_max: Option<f64>,
    /// Goodput during the fault span as a share of the attainable rate.
    pub goodput_min: Option<f64>,
    /// Goodput after the last fault or load phase as a share of the attainable rate.
    pub goodput_after_min: Option<f64>,
    /// p99 of successful calls during the fault over their p99 before it.
    pub accepted_p99_ratio_max: Option<f64>,
    /// Retries a client sent to a key before a `Retry-After` it had received for that key
    /// expired.
    pub early_retries_max: Option<u64>,
    /// The median client's time from the first fault's start to its first request sent with
    /// an endpoint ejected.
    #[serde(with = "config::duration")]
    pub eject_detect_max: Option<Duration>,
    /// The most endpoints a client had ejected at once.
    pub ejected_max: Option<u64>,
    /// Share of the attempts at endpoints no fault hits, during the fault span, served with a
    /// success within the deadline.
    pub healthy_endpoints_success_min: Option<f64>,
}

/// Every threshold's name, in the order verdicts are listed.
pub const NAMES: [&str; 32] = [
    "amplification_max",
    "amplification_fault_max",
    "amplification_open_max",
    "amplification_after_max",
    "detect_max",
    "detect_calls_max",
    "detect_calls_p99_max",
    "recover_max",
    "fast_fail_p99_max",
    "p99_max",
    "p999_max",
    "p99_after_max",
    "false_open_time_max",
    "false_open_ratio_max",
    "rejections_max",
    "bulkhead_rejections_max",
    "inflight_max",
    "inflight_within_limit",
    "breaker_opens_max",
    "transitions_per_cycle_max",
    "success_fault_min",
    "success_min",
    "healthy_keys_success_min",
    "only_faulty_keys_open",
    "false_timeout_max",
    "goodput_min",
    "goodput_after_min",
    "accepted_p99_ratio_max",
    "early_retries_max",
    "eject_detect_max",
    "ejected_max",
    "healthy_endpoints_success_min",
];

impl Thresholds {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let ratios = [
            ("thresholds.false_open_ratio_max", self.false_open_ratio_max),
            ("thresholds.success_fault_min", self.success_fault_min),
            ("thresholds.success_min", self.success_min),
            (
                "thresholds.healthy_keys_success_min",
                self.healthy_keys_success_min,
            ),
            ("thresholds.false_timeout_max", self.false_timeout_max),
            ("thresholds.goodput_min", self.goodput_min),
            ("thresholds.goodput_after_min", self.goodput_after_min),
            (
                "thresholds.healthy_endpoints_success_min",
                self.healthy_endpoints_success_min,
            ),
        ];
        for (field, value) in ratios {
            if let Some(value) = value {
                config::ratio_or_zero(field, value)?;
            }
        }
        let positive = [
            ("thresholds.amplification_max", self.amplification_max),
            (
                "thresholds.amplification_fault_max",
                self.amplification_fault_max,
            ),
            (
                "thresholds.amplification_open_max",
                self.amplification_open_max,
            ),
            (
                "thresholds.amplification_after_max",
                self.amplification_after_max,
            ),
            (
                "thresholds.transitions_per_cycle_max",
                self.transitions_per_cycle_max,
            ),
            (
                "thresholds.accepted_p99_ratio_max",
                self.accepted_p99_ratio_max,
            ),
        ];
        for (field, value) in positive {
            if let Some(value) = value
                && !(value.is_finite() && value >= 0.0)
            {
                return Err(ConfigError::new(field, value, "[0, inf)"));
            }
        }
        Ok(())
    }

    /// The names of the thresholds that are set.
    pub fn set(&self) -> Vec<&'static str> {
        let t = self;
        let set = [
            t.amplification_max.is_some(),
            t.amplification_fault_max.is_some(),
            t.amplification_open_max.is_some(),
            t.amplification_after_max.is_some(),
            t.detect_max.is_some(),
            t.detect_calls_max.is_some(),
            t.detect_calls_p99_max.is_some(),
            t.recover_max.is_some(),
            t.fast_fail_p99_max.is_some(),
            t.p99_max.is_some(),
            t.p999_max.is_some(),
            t.p99_after_max.is_some(),
            t.false_open_time_max.is_some(),
            t.false_open_ratio_max.is_some(),
            t.rejections_max.is_some(),
            t.bulkhead_rejections_max.is_some(),
            t.inflight_max.is_some(),
            t.inflight_within_limit.is_some(),
            t.breaker_opens_max.is_some(),
            t.transitions_per_cycle_max.is_some(),
            t.success_fault_min.is_some(),
            t.success_min.is_some(),
            t.healthy_keys_success_min.is_some(),
            t.only_faulty_keys_open.is_some(),
            t.false_timeout_max.is_some(),
            t.goodput_min.is_some(),
            t.goodput_after_min.is_some(),
            t.accepted_p99_ratio_max.is_some(),
            t.early_retries_max.is_some(),
            t.eject_detect_max.is_some(),
            t.ejected_max.is_some(),
            t.healthy_endpoints_success_min.is_some(),
        ];
        NAMES
            .iter()
            .zip(set)
            .filter(|(_, s)| *s)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The same thresholds with every time multiplied by `k` (a matrix's `latency_scale`).
    pub fn scale_time(&mut self, k: f64) {
        for t in [
            &mut self.detect_max,
            &mut self.recover_max,
            &mut self.fast_fail_p99_max,
            &mut self.p99_max,
            &mut self.p999_max,
            &mut self.p99_after_max,
            &mut self.false_open_time_max,
            &mut self.eject_detect_max,
        ]
        .into_iter()
        .flatten()
        {
            *t = t.mul_f64(k);
        }
    }
}
