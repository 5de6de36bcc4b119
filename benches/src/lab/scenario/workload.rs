//! The load: open-loop arrivals at a rate, or closed-loop callers; one client or many.

use std::time::Duration;

use seawall_core::config::{self, ConfigError};
use serde::Deserialize;

use super::MAX_DURATION;

/// The most clients a workload may have.
pub const MAX_CLIENTS: u32 = 10_000;
/// The most callers a closed-loop workload may have.
pub const MAX_CONCURRENCY: u32 = 100_000;

/// How requests are made, by how many independent clients, and how long each waits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "WorkloadSpec")]
pub struct Workload {
    /// Open-loop arrivals at `rate`, or closed-loop callers.
    pub mode: Mode,
    /// Requests per second over every client (open loop); 0 in closed loop.
    pub rate: f64,
    /// Evenly spaced or Poisson (open loop).
    pub arrivals: Arrivals,
    /// How many keys (shards) each client's requests spread over, round-robin.
    pub keys: u32,
    /// Each request's total budget: every stack gets it as its total timeout, and goodput
    /// counts the successes within it.
    pub deadline: Duration,
    /// Periods with another rate (open loop).
    pub phases: Vec<Phase>,
    /// Independent client stacks sharing the downstream, as replicas of a caller.
    pub clients: u32,
    /// Callers over every client, each waiting for its answer before the next call (closed
    /// loop).
    pub concurrency: u32,
    /// How long a closed-loop caller waits after an answer before its next call.
    pub think: Duration,
}

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Requests arrive at their intended times whatever happened to earlier ones.
    #[default]
    Open,
    /// A fixed number of callers, each sending its next call after the last one's answer.
    Closed,
}

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrivals {
    /// A client's request i at `offset + i × clients / rate` (a gap that spans a phase's
    /// start or end rescaled there to the new rate).
    #[default]
    Uniform,
    /// Exponential gaps with mean `clients / rate`, from the seeded arrivals stream.
    Poisson,
}

/// A period with its own arrival rate.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// When it begins.
    #[serde(with = "config::duration")]
    pub start: Duration,
    /// When it ends.
    #[serde(with = "config::duration")]
    pub end: Duration,
    /// Requests per second meanwhile, over every client.
    pub rate: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadSpec {
    #[serde(default)]
    mode: Mode,
    rate: Option<f64>,
    #[serde(default)]
    arrivals: Option<Arrivals>,
    #[serde(default = "one")]
    keys: u32,
    #[serde(default = "one_second", with = "config::duration")]
    deadline: Duration,
    #[serde(default)]
    phases: Vec<Phase>,
    #[serde(default = "one")]
    clients: u32,
    concurrency: Option<u32>,
    #[serde(default, with = "config::duration")]
    think: Option<Duration>,
}

fn one() -> u32 {
    1
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl TryFrom<WorkloadSpec> for Workload {
    type Error = ConfigError;

    fn try_from(spec: WorkloadSpec) -> Result<Self, ConfigError> {
        config::count_in("workload.keys", spec.keys, 1..=64)?;
        config::positive_duration("workload.deadline", spec.deadline, MAX_DURATION)?;
        config::count_in("workload.clients", spec.clients, 1..=MAX_CLIENTS)?;
        let (rate, concurrency, think) = match spec.mode {
            Mode::Open => {
                let Some(rate) = spec.rate else {
                    return Err(ConfigError::new(
                        "workload.rate",
                        "nothing",
                        "(0, 100000] requests per second in open loop",
                    ));
                };
                if let Some(concurrency) = spec.concurrency {
                    return Err(ConfigError::new(
                        "workload.concurrency",
                        concurrency,
                        "nothing in open loop (it takes `rate`; `mode = \"closed\"` takes this)",
                    ));
                }
                if spec.think.is_some() {
                    return Err(ConfigError::new(
                        "workload.think",
                        "a think time",
                        "nothing in open loop (`mode = \"closed\"` takes it)",
                    ));
                }
                (self::rate("workload.rate", rate)?, 0, Duration::ZERO)
            }
            Mode::Closed => {
                if let Some(rate) = spec.rate {
                    return Err(ConfigError::new(
                        "workload.rate",
                        rate,
                        "nothing in closed loop (callers send as answers come; set `concurrency`)",
                    ));
                }
                if !spec.phases.is_empty() {
                    return Err(ConfigError::new(
                        "workload.phases",
                        "phases",
                        "nothing in closed loop",
                    ));
                }
                if spec.arrivals.is_some() {
                    return Err(ConfigError::new(
                        "workload.arrivals",
                        "an arrival process",
                        "nothing in closed loop",
                    ));
                }
                let Some(concurrency) = spec.concurrency else {
                    return Err(ConfigError::new(
                        "workload.concurrency",
                        "nothing",
                        format!("callers in [clients, {MAX_CONCURRENCY}] in closed loop"),
                    ));
                };
                config::count_in(
                    "workload.concurrency",
                    concurrency,
                    spec.clients..=MAX_CONCURRENCY,
                )?;
                let think = spec.think.unwrap_or(Duration::ZERO);
                config::duration_in("workload.think", think, Duration::ZERO..=MAX_DURATION)?;
                (0.0, concurrency, think)
            }
        };
        for phase in &spec.phases {
            self::rate("workload.phases.rate", phase.rate)?;
            if phase.start >= phase.end {
                return Err(ConfigError::new(
                    "workload.phases.end",
                    format_args!("{:?}", phase.end),
                    format!("after start ({:?})", phase.start),
                ));
            }
        }
        Ok(Self {
            mode: spec.mode,
            rate,
            arrivals: spec.arrivals.unwrap_or_default(),
            keys: spec.keys,
            deadline: spec.deadline,
            phases: spec.phases,
            clients: spec.clients,
            concurrency,
            think,
        })
    }
}

/// Checks a rate in requests per second.
pub(crate) fn rate(field: &'static str, rate: f64) -> Result<f64, ConfigError> {
    if !(rate > 0.0 && rate <= 100_000.0) {
        return Err(ConfigError::new(
            field,
            rate,
            "(0, 100000] requests per second",
        ));
    }
    Ok(rate)
}

impl Workload {
    /// The arrival rate over every client at `t` (open loop).
    pub fn rate_at(&self, t: Duration) -> f64 {
        self.phases
            .iter()
            .find(|p| p.start <= t && t < p.end)
            .map_or(self.rate, |p| p.rate)
    }
}
