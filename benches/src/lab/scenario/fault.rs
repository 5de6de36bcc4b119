//! What goes wrong with the downstream, when, and for which keys.

use std::time::Duration;

use seawall_chaos::{ChaosConfig, Faults, Latency};
use seawall_core::config::{self, ConfigError};
use serde::Deserialize;

use super::MAX_DURATION;
use super::downstream::{error_status, prefixed, retry_after};

/// What a fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Fails with a transport error (a reset connection), at once or after `error_cost`.
    Error,
    /// Never returns, and holds no worker.
    Hang,
    /// Answers `latency` later, holding no worker (a slow network, a slow proxy).
    Slow,
    /// Answers with the status `code` (and a `Retry-After`), at once or after `error_cost`.
    Status,
    /// The whole service time goes from `from` to `to` over the window, holding a worker
    /// (the downstream got slower).
    LatencyRamp,
    /// The workers drop to `workers` for the window.
    Capacity,
}

impl FaultKind {
    /// Its name in the file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Hang => "hang",
            Self::Slow => "slow",
            Self::Status => "status",
            Self::LatencyRamp => "latency_ramp",
            Self::Capacity => "capacity",
        }
    }
}

/// What a fault injects, by kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Effect {
    /// A transport error.
    Error,
    /// No answer.
    Hang,
    /// An extra delay on the answer.
    Slow(Latency),
    /// An answer with this status and `Retry-After`.
    Status {
        /// The status code.
        code: u16,
        /// The `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// A service time ramping from `from` to `to` over the window.
    Ramp {
        /// At the window's start.
        from: Duration,
        /// At its end.
        to: Duration,
    },
    /// Fewer workers.
    Capacity(u32),
}

/// One fault: what, how often, when, and for which keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "FaultSpec")]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// The share of calls it hits, in `(0, 1]`.
    pub rate: f64,
    /// When it begins.
    pub start: Duration,
    /// When it ends (for flapping, when the last down phase ends).
    pub end: Duration,
    /// Down and up phases, when the fault flaps.
    pub flapping: Option<Flap>,
    /// The keys it hits; every key when absent.
    pub keys: Option<Vec<u32>>,
    /// The endpoints it hits (`downstream.endpoints`); every endpoint when absent.
    pub endpoints: Option<Vec<u32>>,
    /// What it injects.
    pub effect: Effect,
}

/// A flapping fault's rhythm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flap {
    /// How long each down phase lasts.
    #[serde(with = "config::duration")]
    pub down: Duration,
    /// How long each up phase lasts.
    #[serde(with = "config::duration")]
    pub up: Duration,
    /// How many cycles.
    pub cycles: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    kind: FaultKind,
    rate: Option<f64>,
    #[serde(with = "config::duration")]
    start: Duration,
    #[serde(default, with = "config::duration")]
    end: Option<Duration>,
    latency: Option<Latency>,
    flapping: Option<Flap>,
    keys: Option<Vec<u32>>,
    endpoints: Option<Vec<u32>>,
    #[serde(default, with = "config::duration")]
    from: Option<Duration>,
    #[serde(default, with = "config::duration")]
    to: Option<Duration>,
    code: Option<u16>,
    #[serde(default, with = "config::duration")]
    retry_after: Option<Duration>,
    workers: Option<u32>,
}

fn only(
    kind: FaultKind,
    field: &'static str,
    given: bool,
    wanted: bool,
) -> Result<(), ConfigError> {
    match (given, wanted) {
        (true, false) => Err(ConfigError::new(
            field,
            "a value",
            format!("nothing for a `{}` fault", kind.name()),
        )),
        (false, true) => Err(ConfigError::new(
            field,
            "nothing",
            format!("a value for a `{}` fault", kind.name()),
        )),
        _ => Ok(()),
    }
}

impl TryFrom<FaultSpec> for Fault {
    type Error = ConfigError;

    fn try_from(spec: FaultSpec) -> Result<Self, ConfigError> {
        let kind = spec.kind;
        let rate = config::ratio("faults.rate", spec.rate.unwrap_or(1.0))?;
        only(
            kind,
            "faults.latency",
            spec.latency.is_some(),
            kind == FaultKind::Slow,
        )?;
        let ramp = kind == FaultKind::LatencyRamp;
        only(kind, "faults.from", spec.from.is_some(), ramp)?;
        only(kind, "faults.to", spec.to.is_some(), ramp)?;
        only(
            kind,
            "faults.code",
            spec.code.is_some(),
            kind == FaultKind::Status,
        )?;
        if spec.retry_after.is_some() {
            only(kind, "faults.retry_after", true, kind == FaultKind::Status)?;
        }
        only(
            kind,
            "faults.workers",
            spec.workers.is_some(),
            kind == FaultKind::Capacity,
        )?;
        let effect = match kind {
            FaultKind::Error => Effect::Error,
            FaultKind::Hang => Effect::Hang,
            FaultKind::Slow => {
                let latency = spec.latency.expect("checked");
                // The chaos layer's own checks of a latency.
                ChaosConfig::builder()
                    .faults(Faults::slow(rate, latency))
                    .build()
                    .map_err(|e| prefixed("faults.", &e))?;
                Effect::Slow(latency)
            }
            FaultKind::Status => Effect::Status {
                code: error_status("faults.code", spec.code.expect("checked"))?,
                retry_after: retry_after("faults.retry_after", spec.retry_after)?,
            },
            FaultKind::LatencyRamp => Effect::Ramp {
                from: config::duration_in(
                    "faults.from",
                    spec.from.expect("checked"),
                    Duration::ZERO..=MAX_DURATION,
                )?,
                to: config::duration_in(
                    "faults.to",
                    spec.to.expect("checked"),
                    Duration::ZERO..=MAX_DURATION,
                )?,
            },
            FaultKind::Capacity => {
                if spec.rate.is_some() {
                    return Err(ConfigError::new(
                        "faults.rate",
                        rate,
                        "nothing for a `capacity` fault (it takes every worker's place)",
                    ));
                }
                if spec.keys.is_some() {
                    return Err(ConfigError::new(
                        "faults.keys",
                        "keys",
                        "nothing for a `capacity` fault (workers serve every key)",
                    ));
                }
                Effect::Capacity(config::count_in(
                    "faults.workers",
                    spec.workers.expect("checked"),
                    1..=1_000_000,
                )?)
            }
        };
        let end = match (spec.end, spec.flapping) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "faults.end",
                    "both `end` and `flapping`",
                    "one of them: flapping ends after its cycles",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "faults.end",
                    "nothing",
                    "an end, or `flapping`",
                ));
            }
            (Some(end), None) => {
                if end <= spec.start {
                    return Err(ConfigError::new(
                        "faults.end",
                        format_args!("{end:?}"),
                        format!("after start ({:?})", spec.start),
                    ));
                }
                end
            }
            (None, Some(flap)) => {
                config::positive_duration("faults.flapping.down", flap.down, MAX_DURATION)?;
                config::positive_duration("faults.flapping.up", flap.up, MAX_DURATION)?;
                config::count_in("faults.flapping.cycles", flap.cycles, 1..=10_000)?;
                spec.start + (flap.down + flap.up) * (flap.cycles - 1) + flap.down
            }
        };
        if let Some(keys) = &spec.keys
            && keys.is_empty()
        {
            return Err(ConfigError::new("faults.keys", "[]", "at least one key"));
        }
        if let Some(endpoints) = &spec.endpoints
            && endpoints.is_empty()
        {
            return Err(ConfigError::new(
                "faults.endpoints",
                "[]",
                "at least one endpoint",
            ));
        }
        Ok(Self {
            kind,
            rate,
            start: spec.start,
            end,
            flapping: spec.flapping,
            keys: spec.keys,
            endpoints: spec.endpoints,
            effect,
        })
    }
}

impl Fault {
    /// The periods it is active, flapping expanded.
    pub fn windows(&self) -> impl Iterator<Item = (Duration, Duration)> + '_ {
        let (cycles, down, period) = match self.flapping {
            None => (1, self.end - self.start, Duration::ZERO),
            Some(flap) => (flap.cycles, flap.down, flap.down + flap.up),
        };
        (0..cycles).map(move |i| {
            let start = self.start + period * i;
            (start, start + down)
        })
    }

    /// Whether it is active at `t`.
    pub fn active_at(&self, t: Duration) -> bool {
        t >= self.start && t < self.end && self.windows().any(|(s, e)| s <= t && t < e)
    }

    /// Whether it hits calls for `key`.
    pub fn hits_key(&self, key: u32) -> bool {
        self.keys.as_ref().is_none_or(|keys| keys.contains(&key))
    }

    /// Whether it hits calls that reach `endpoint`.
    pub fn hits_endpoint(&self, endpoint: u32) -> bool {
        self.endpoints
            .as_ref()
            .is_none_or(|endpoints| endpoints.contains(&endpoint))
    }

    /// The same fault with every duration it injects multiplied by `k`.
    pub fn scale_latency(&mut self, k: f64) {
        self.effect = match self.effect {
            Effect::Slow(latency) => Effect::Slow(super::downstream::scale_latency(latency, k)),
            Effect::Ramp { from, to } => Effect::Ramp {
                from: from.mul_f64(k),
                to: to.mul_f64(k),
            },
            other => other,
        };
    }
}
