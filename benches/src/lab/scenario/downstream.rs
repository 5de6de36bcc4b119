//! The healthy downstream: its latency, workers and queue, how it refuses, its quota.

use std::time::Duration;

use seawall_chaos::{ChaosConfig, Latency};
use seawall_core::config::{self, ConfigError};
use serde::Deserialize;

use super::MAX_DURATION;

/// The most endpoints a downstream may have (a fault names them in a 64-bit set).
pub const MAX_ENDPOINTS: u32 = 64;

/// The healthy downstream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "DownstreamSpec")]
pub struct Downstream {
    /// The service time of a call.
    pub latency: Latency,
    /// Workers serving calls at once; no queueing when absent.
    pub workers: Option<u32>,
    /// How many calls may wait for a worker.
    pub queue_limit: Option<u32>,
    /// The queue depth past which the downstream slows down.
    pub degrade_above: Option<u32>,
    /// The fraction of its speed it keeps when degraded.
    pub degraded: f64,
    /// Calls over it are answered at once with 429.
    pub quota: Option<Quota>,
    /// How a full queue answers.
    pub refuse: Refuse,
    /// How long an injected error or status holds a worker.
    pub error_cost: Duration,
    /// Endpoints (replicas), each with its own workers, queue and latency draws; the quota
    /// is over all of them.
    pub endpoints: u32,
}

/// A quota: a token bucket of `burst` tokens refilled at `rate` per second, over every caller.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Calls per second.
    pub rate: f64,
    /// Calls allowed at once after a quiet spell.
    #[serde(default = "one")]
    pub burst: u32,
    /// The `Retry-After` of a 429, in whole seconds; without it, the time until the bucket
    /// holds a token again, rounded up to a whole second.
    #[serde(default, with = "config::duration")]
    pub retry_after: Option<Duration>,
}

fn one() -> u32 {
    1
}

/// How a full queue refuses a call: its status and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refuse {
    /// The status code.
    #[serde(default = "service_unavailable")]
    pub status: u16,
    /// The `Retry-After`, in whole seconds; none by default.
    #[serde(default, with = "config::duration")]
    pub retry_after: Option<Duration>,
}

fn service_unavailable() -> u16 {
    503
}

impl Default for Refuse {
    fn default() -> Self {
        Self {
            status: 503,
            retry_after: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownstreamSpec {
    #[serde(default = "default_latency")]
    latency: Latency,
    workers: Option<u32>,
    queue_limit: Option<u32>,
    degrade_above: Option<u32>,
    #[serde(default = "default_degraded")]
    degraded: f64,
    quota: Option<Quota>,
    #[serde(default)]
    refuse: Refuse,
    #[serde(default, with = "config::duration")]
    error_cost: Duration,
    #[serde(default = "one")]
    endpoints: u32,
}

fn default_latency() -> Latency {
    Latency::Uniform {
        min: Duration::from_millis(8),
        max: Duration::from_millis(12),
    }
}

fn default_degraded() -> f64 {
    0.8
}

impl Default for Downstream {
    fn default() -> Self {
        Self {
            latency: default_latency(),
            workers: None,
            queue_limit: None,
            degrade_above: None,
            degraded: default_degraded(),
            quota: None,
            refuse: Refuse::default(),
            error_cost: Duration::ZERO,
            endpoints: 1,
        }
    }
}

impl TryFrom<DownstreamSpec> for Downstream {
    type Error = ConfigError;

    fn try_from(spec: DownstreamSpec) -> Result<Self, ConfigError> {
        let downstream = Self {
            latency: spec.latency,
            workers: spec.workers,
            queue_limit: spec.queue_limit,
            degrade_above: spec.degrade_above,
            degraded: spec.degraded,
            quota: spec.quota,
            refuse: spec.refuse,
            error_cost: spec.error_cost,
            endpoints: spec.endpoints,
        };
        downstream.validate()?;
        Ok(downstream)
    }
}

/// Checks an HTTP error status.
pub(crate) fn error_status(field: &'static str, code: u16) -> Result<u16, ConfigError> {
    config::count_in(field, code, 400..=599)
}

/// Checks a `Retry-After`: whole seconds, as the header carries them.
pub(crate) fn retry_after(
    field: &'static str,
    value: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    if let Some(d) = value
        && (d.subsec_nanos() != 0 || d > MAX_DURATION)
    {
        return Err(ConfigError::new(
            field,
            format_args!("{d:?}"),
            "whole seconds in [0s, 86400s]",
        ));
    }
    Ok(value)
}

pub(crate) fn prefixed(prefix: &str, err: &ConfigError) -> ConfigError {
    let field = err.field().trim_start_matches("capacity.");
    ConfigError::new(
        format!("{prefix}{field}"),
        err.value(),
        err.allowed().to_owned(),
    )
}

impl Downstream {
    fn validate(&self) -> Result<(), ConfigError> {
        // The chaos layer's own checks of the latency and capacity, with the field named as
        // the file names it.
        let mut builder = ChaosConfig::builder().latency(self.latency);
        if let Some(workers) = self.workers {
            let mut capacity = seawall_chaos::Capacity::workers(workers);
            capacity.queue_limit = self.queue_limit;
            capacity.degrade_above = self.degrade_above;
            capacity.degraded = self.degraded;
            builder = builder.capacity(capacity);
        } else if self.queue_limit.is_some() || self.degrade_above.is_some() {
            return Err(ConfigError::new(
                "downstream.workers",
                "nothing",
                "a number of workers when queue_limit or degrade_above is set",
            ));
        }
        builder.build().map_err(|e| prefixed("downstream.", &e))?;
        config::count_in("downstream.endpoints", self.endpoints, 1..=MAX_ENDPOINTS)?;
        if let Some(quota) = &self.quota {
            super::workload::rate("downstream.quota.rate", quota.rate)?;
            config::count_in("downstream.quota.burst", quota.burst, 1..=1_000_000)?;
            retry_after("downstream.quota.retry_after", quota.retry_after)?;
        }
        error_status("downstream.refuse.status", self.refuse.status)?;
        retry_after("downstream.refuse.retry_after", self.refuse.retry_after)?;
        config::duration_in(
            "downstream.error_cost",
            self.error_cost,
            Duration::ZERO..=MAX_DURATION,
        )?;
        Ok(())
    }

    /// Calls per second the workers of every endpoint can serve at the healthy latency, when
    /// the downstream has workers.
    pub fn capacity_rps(&self) -> Option<f64> {
        let mean = self.latency.mean().as_secs_f64();
        self.workers
            .filter(|_| mean > 0.0)
            .map(|w| f64::from(w) * f64::from(self.endpoints) / mean)
    }
}

/// `latency` with every duration multiplied by `k`.
pub fn scale_latency(latency: Latency, k: f64) -> Latency {
    match latency {
        Latency::Fixed { value } => Latency::Fixed {
            value: value.mul_f64(k),
        },
        Latency::Uniform { min, max } => Latency::Uniform {
            min: min.mul_f64(k),
            max: max.mul_f64(k),
        },
        Latency::LongTail { median, p99 } => Latency::LongTail {
            median: median.mul_f64(k),
            p99: p99.mul_f64(k),
        },
    }
}
