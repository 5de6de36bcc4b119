//! Scenarios as data: a TOML file says what the downstream is, what goes wrong with it and
//! when, what load it gets, at which rates, client counts and latencies, and what the seawall
//! stack must show.
//!
//! A user describes their own downstream without writing Rust, so a mistake in the file must
//! be easy to fix: every unknown key and impossible value is reported with the file, the line
//! and the field, and the range allowed. The built-in suite ships as such files
//! (`benches/scenarios/*.toml`). `lab --help-scenario` prints every key with its meaning
//! ([`HELP`](crate::lab::help::SCENARIO)).
//!
//! - [`workload`]: open or closed loop, clients, keys, deadline, phases;
//! - [`downstream`]: latency, workers and queue, quota, refusals, the cost of errors;
//! - [`fault`]: what goes wrong and when, composing when windows overlap;
//! - [`thresholds`]: the verdicts;
//! - [`matrix`]: the cells a scenario runs in.

pub mod downstream;
mod error;
pub mod fault;
pub mod matrix;
pub mod stacks;
pub mod thresholds;
pub mod workload;

use std::collections::BTreeMap;
use std::time::Duration;

use seawall_core::config::{self, ConfigError};
use serde::Deserialize;
use toml::Spanned;

pub use self::downstream::{Downstream, Quota, Refuse};
pub use self::error::ScenarioError;
pub use self::fault::{Effect, Fault, FaultKind, Flap};
pub use self::matrix::{Cell, Matrix};
pub use self::stacks::{Balance, StackOptions};
pub use self::thresholds::Thresholds;
pub use self::workload::{Arrivals, Mode, Phase, Workload};

use self::error::{error_at, find_key};

pub(crate) use seawall_core::config::MAX_DURATION;

/// The built-in suite, in the order it runs.
pub const BUILT_IN: [(&str, &str); 24] = [
    (
        "control.toml",
        include_str!("../../../scenarios/control.toml"),
    ),
    (
        "outage.toml",
        include_str!("../../../scenarios/outage.toml"),
    ),
    (
        "black-hole.toml",
        include_str!("../../../scenarios/black-hole.toml"),
    ),
    (
        "brownout.toml",
        include_str!("../../../scenarios/brownout.toml"),
    ),
    (
        "partial.toml",
        include_str!("../../../scenarios/partial.toml"),
    ),
    (
        "tail-spike.toml",
        include_str!("../../../scenarios/tail-spike.toml"),
    ),
    (
        "slow-drip.toml",
        include_str!("../../../scenarios/slow-drip.toml"),
    ),
    (
        "overload.toml",
        include_str!("../../../scenarios/overload.toml"),
    ),
    (
        "flapping.toml",
        include_str!("../../../scenarios/flapping.toml"),
    ),
    (
        "outage-fleet.toml",
        include_str!("../../../scenarios/outage-fleet.toml"),
    ),
    (
        "brownout-fleet.toml",
        include_str!("../../../scenarios/brownout-fleet.toml"),
    ),
    (
        "long-tail.toml",
        include_str!("../../../scenarios/long-tail.toml"),
    ),
    ("quota.toml", include_str!("../../../scenarios/quota.toml")),
    (
        "overload-refused.toml",
        include_str!("../../../scenarios/overload-refused.toml"),
    ),
    (
        "overload-refused-retry-after.toml",
        include_str!("../../../scenarios/overload-refused-retry-after.toml"),
    ),
    (
        "slow-200ms.toml",
        include_str!("../../../scenarios/slow-200ms.toml"),
    ),
    (
        "slow-600ms.toml",
        include_str!("../../../scenarios/slow-600ms.toml"),
    ),
    (
        "latency-ramp.toml",
        include_str!("../../../scenarios/latency-ramp.toml"),
    ),
    (
        "metastable.toml",
        include_str!("../../../scenarios/metastable.toml"),
    ),
    (
        "overlap.toml",
        include_str!("../../../scenarios/overlap.toml"),
    ),
    (
        "tail-hedge.toml",
        include_str!("../../../scenarios/tail-hedge.toml"),
    ),
    (
        "tail-hedge-fixed.toml",
        include_str!("../../../scenarios/tail-hedge-fixed.toml"),
    ),
    (
        "endpoint-bad.toml",
        include_str!("../../../scenarios/endpoint-bad.toml"),
    ),
    (
        "endpoints-four-bad.toml",
        include_str!("../../../scenarios/endpoints-four-bad.toml"),
    ),
];

/// One scenario (or one cell of a scenario's matrix): a downstream, its faults, the load, and
/// the thresholds the seawall stack must meet.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its short name (`outage`).
    pub id: String,
    /// One line on what it shows.
    pub description: String,
    /// The file it came from.
    pub file: String,
    /// A hash of the file's text, so a report says exactly which scenario it measured.
    pub hash: String,
    /// How long requests are sent.
    pub duration: Duration,
    /// The clients' load.
    pub workload: Workload,
    /// The healthy downstream.
    pub downstream: Downstream,
    /// What goes wrong, and when.
    pub faults: Vec<Fault>,
    /// What the seawall stack must show.
    pub thresholds: Thresholds,
    /// The cells it runs in, if it has a matrix.
    pub matrix: Option<Matrix>,
    /// The cell this is, once [`cells`](Self::cells) expanded the matrix.
    pub cell: Option<Cell>,
    /// Verdicts the seawall stack is known to fail, with why (and in which cells).
    pub known_failing: BTreeMap<String, KnownFailure>,
    /// Verdicts that only a feature can pass, with the feature's name.
    pub features: BTreeMap<String, String>,
    /// How the stacks spread calls over the endpoints, and the hedging and outlier ejection
    /// asked of them.
    pub stacks: StackOptions,
}

/// A verdict the seawall stack is known to fail: it is printed as failing, but does not fail
/// the run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "KnownSpec")]
pub struct KnownFailure {
    /// Why, in one line.
    pub reason: String,
    /// The cells where it fails (`"clients=1000"` matches every cell with 1000 clients);
    /// every cell when empty.
    pub cells: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KnownSpec {
    Reason(String),
    #[serde(rename_all = "snake_case")]
    Cells {
        reason: String,
        cells: Vec<String>,
    },
}

impl From<KnownSpec> for KnownFailure {
    fn from(spec: KnownSpec) -> Self {
        match spec {
            KnownSpec::Reason(reason) => Self {
                reason,
                cells: Vec::new(),
            },
            KnownSpec::Cells { reason, cells } => Self { reason, cells },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioSpec {
    id: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(with = "config::duration")]
    duration: Duration,
    workload: Spanned<Workload>,
    #[serde(default)]
    downstream: Option<Spanned<Downstream>>,
    #[serde(default)]
    faults: Vec<Spanned<Fault>>,
    #[serde(default)]
    thresholds: Option<Spanned<Thresholds>>,
    #[serde(default)]
    matrix: Option<Spanned<Matrix>>,
    #[serde(default)]
    known_failing: Option<Spanned<BTreeMap<String, KnownFailure>>>,
    #[serde(default)]
    features: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    stacks: Option<StackOptions>,
}

impl Scenario {
    /// Reads a scenario from the TOML `text` of `file`.
    pub fn parse(file: &str, text: &str) -> Result<Self, ScenarioError> {
        let spec: ScenarioSpec =
            toml::from_str(text).map_err(|e| error_at(file, text, e.span(), e.message()))?;
        let fail = |span: std::ops::Range<usize>, err: ConfigError| {
            error_at(file, text, Some(span), &err.to_string())
        };
        let id_span = spec.id.span();
        let id = spec.id.into_inner();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(fail(
                id_span,
                ConfigError::new("id", format_args!("{id:?}"), "letters, digits, `-` and `_`"),
            ));
        }
        if spec.duration.is_zero() || spec.duration > Duration::from_secs(3600) {
            let err =
                config::positive_duration("duration", spec.duration, Duration::from_secs(3600));
            return Err(error_at(
                file,
                text,
                find_key(text, "duration"),
                &err.unwrap_err().to_string(),
            ));
        }
        let workload_span = spec.workload.span();
        let workload = spec.workload.into_inner();
        for phase in &workload.phases {
            if phase.end > spec.duration {
                return Err(fail(
                    workload_span,
                    ConfigError::new(
                        "workload.phases.end",
                        format_args!("{:?}", phase.end),
                        format!("at most the duration ({:?})", spec.duration),
                    ),
                ));
            }
        }
        let downstream = spec
            .downstream
            .map_or_else(Downstream::default, Spanned::into_inner);
        let mut faults = Vec::new();
        for fault in spec.faults {
            let span = fault.span();
            let fault = fault.into_inner();
            if fault.end > spec.duration {
                return Err(fail(
                    span,
                    ConfigError::new(
                        "faults.end",
                        format_args!("{:?}", fault.end),
                        format!("at most the duration ({:?})", spec.duration),
                    ),
                ));
            }
            if let Some(keys) = &fault.keys
                && let Some(&key) = keys.iter().find(|&&k| k >= workload.keys)
            {
                return Err(fail(
                    span,
                    ConfigError::new(
                        "faults.keys",
                        key,
                        format!("keys below workload.keys ({})", workload.keys),
                    ),
                ));
            }
            if let Some(endpoints) = &fault.endpoints
                && let Some(&endpoint) = endpoints.iter().find(|&&e| e >= downstream.endpoints)
            {
                return Err(fail(
                    span,
                    ConfigError::new(
                        "faults.endpoints",
                        endpoint,
                        format!(
                            "endpoints below downstream.endpoints ({})",
                            downstream.endpoints
                        ),
                    ),
                ));
            }
            if let Effect::Capacity(workers) = fault.effect {
                match downstream.workers {
                    None => {
                        return Err(fail(
                            span,
                            ConfigError::new(
                                "faults.workers",
                                workers,
                                "a `capacity` fault needs downstream.workers",
                            ),
                        ));
                    }
                    Some(all) if workers > all => {
                        return Err(fail(
                            span,
                            ConfigError::new(
                                "faults.workers",
                                workers,
                                format!("[1, downstream.workers ({all})]"),
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            faults.push(fault);
        }
        let thresholds = match spec.thresholds {
            Some(t) => {
                let span = t.span();
                let t = t.into_inner();
                t.validate().map_err(|e| fail(span, e))?;
                t
            }
            None => Thresholds::default(),
        };
        let matrix = match spec.matrix {
            Some(m) => {
                let span = m.span();
                let m = m.into_inner();
                m.validate(&workload).map_err(|e| fail(span, e))?;
                Some(m)
            }
            None => None,
        };
        let set = thresholds.set();
        let (known_failing, known_span) = spec
            .known_failing
            .map_or((BTreeMap::new(), 0..0), |k| (k.get_ref().clone(), k.span()));
        let cells = matrix
            .as_ref()
            .map_or_else(|| vec![Cell::default()], Matrix::cells);
        for (name, known) in &known_failing {
            if !set.contains(&name.as_str()) {
                return Err(fail(
                    known_span.clone(),
                    ConfigError::new(
                        "known_failing",
                        format_args!("`{name}`"),
                        "a threshold this scenario sets",
                    ),
                ));
            }
            if let Some(pattern) = known
                .cells
                .iter()
                .find(|p| !cells.iter().any(|c| c.matches(p)))
            {
                return Err(fail(
                    known_span.clone(),
                    ConfigError::new(
                        "known_failing.cells",
                        format_args!("{pattern:?}"),
                        "`name=value` words of this scenario's matrix (`rate=100 clients=1000`)",
                    ),
                ));
            }
        }
        let (features, features_span) = spec
            .features
            .map_or((BTreeMap::new(), 0..0), |f| (f.get_ref().clone(), f.span()));
        if let Some(name) = features.keys().find(|n| !set.contains(&n.as_str())) {
            return Err(fail(
                features_span,
                ConfigError::new(
                    "features",
                    format_args!("`{name}`"),
                    "a threshold this scenario sets",
                ),
            ));
        }
        Ok(Self {
            id,
            description: spec.description,
            file: file.to_owned(),
            hash: fnv1a(text),
            duration: spec.duration,
            workload,
            downstream,
            faults,
            thresholds,
            matrix,
            cell: None,
            known_failing,
            features,
            stacks: spec.stacks.unwrap_or_default(),
        })
    }

    /// The built-in suite.
    pub fn built_in() -> Vec<Self> {
        BUILT_IN
            .iter()
            .map(|(file, text)| {
                Self::parse(&format!("benches/scenarios/{file}"), text)
                    .expect("the built-in scenarios are valid")
            })
            .collect()
    }

    /// The built-in scenario called `id`.
    pub fn by_name(id: &str) -> Option<Self> {
        Self::built_in().into_iter().find(|s| s.id == id)
    }

    /// Its name in reports: the id, and the cell's values in brackets.
    pub fn name(&self) -> String {
        match &self.cell {
            Some(cell) if !cell.parts().is_empty() => format!("{} [{}]", self.id, cell.label()),
            _ => self.id.clone(),
        }
    }

    /// The scenario once per cell of its matrix (itself alone when it has none).
    pub fn cells(&self) -> Vec<Self> {
        match &self.matrix {
            None => vec![self.clone()],
            Some(matrix) => matrix.cells().iter().map(|c| self.in_cell(*c)).collect(),
        }
    }

    /// This scenario in `cell`.
    ///
    /// A rate scales the workload's rate, its phases, the workers (capacity faults included)
    /// and the quota by the same factor, so the downstream stays provisioned the same relative
    /// to its load; workers are rounded up. A latency factor scales the downstream's latency,
    /// the faults' latencies, `error_cost`, the workers (so capacity stays the same), the
    /// deadline and every time threshold.
    pub fn in_cell(&self, cell: Cell) -> Self {
        let mut s = self.clone();
        s.cell = Some(cell);
        let by_rate = cell.rate.map_or(1.0, |r| r / self.workload.rate);
        let by_latency = cell.latency_scale.unwrap_or(1.0);
        // Rounded up, but not for the float error of a product that is whole (6 x 0.1 x 5).
        let up = |x: f64| ((x - 1e-9).ceil() as u32).max(1);
        let workers = |w: u32| up(f64::from(w) * by_rate * by_latency);
        if let Some(rate) = cell.rate {
            s.workload.rate = rate;
            for phase in &mut s.workload.phases {
                phase.rate *= by_rate;
            }
            if let Some(quota) = &mut s.downstream.quota {
                quota.rate *= by_rate;
                quota.burst = up(f64::from(quota.burst) * by_rate);
            }
        }
        if let Some(clients) = cell.clients {
            s.workload.clients = clients;
        }
        s.downstream.workers = s.downstream.workers.map(workers);
        for fault in &mut s.faults {
            if let Effect::Capacity(w) = &mut fault.effect {
                *w = workers(*w);
            }
        }
        if by_latency != 1.0 {
            s.downstream.latency = downstream::scale_latency(s.downstream.latency, by_latency);
            s.downstream.error_cost = s.downstream.error_cost.mul_f64(by_latency);
            for fault in &mut s.faults {
                fault.scale_latency(by_latency);
            }
            s.workload.deadline = s.workload.deadline.mul_f64(by_latency);
            s.thresholds.scale_time(by_latency);
        }
        s
    }

    /// Why the seawall stack is known to fail `threshold` in this cell, if it is.
    pub fn known_failure(&self, threshold: &str) -> Option<&str> {
        let known = self.known_failing.get(threshold)?;
        let cell = self.cell.unwrap_or_default();
        (known.cells.is_empty() || known.cells.iter().any(|p| cell.matches(p)))
            .then_some(known.reason.as_str())
    }

    /// The feature that `threshold` checks, if it is a feature check.
    pub fn feature(&self, threshold: &str) -> Option<&str> {
        self.features.get(threshold).map(String::as_str)
    }

    /// Every fault window, flapping expanded, with the keys it hits.
    pub fn fault_windows(&self) -> Vec<(Duration, Duration, Option<&[u32]>)> {
        let mut windows: Vec<_> = self
            .faults
            .iter()
            .flat_map(|f| f.windows().map(move |(s, e)| (s, e, f.keys.as_deref())))
            .collect();
        windows.sort_by_key(|w| w.0);
        windows
    }

    /// From the first fault (or load phase) to the end of the last, if any.
    pub fn span(&self) -> Option<(Duration, Duration)> {
        let starts = self
            .faults
            .iter()
            .map(|f| (f.start, f.end))
            .chain(self.workload.phases.iter().map(|p| (p.start, p.end)));
        starts.fold(None, |acc, (s, e)| match acc {
            None => Some((s, e)),
            Some((s0, e0)) => Some((s0.min(s), e0.max(e))),
        })
    }

    /// Whether the downstream is healthy for `key` at `t`: no fault window or load phase
    /// covers it.
    pub fn healthy(&self, t: Duration, key: u32) -> bool {
        let faulty = self
            .faults
            .iter()
            .any(|f| f.hits_key(key) && f.active_at(t));
        let loaded = self
            .workload
            .phases
            .iter()
            .any(|p| p.start <= t && t < p.end);
        !faulty && !loaded
    }

    /// Flapping cycles over every fault.
    pub fn cycles(&self) -> u32 {
        self.faults
            .iter()
            .map(|f| f.flapping.map_or(0, |fl| fl.cycles))
            .sum()
    }

    /// The keys some fault hits (every key when one fault hits them all).
    pub fn faulty_keys(&self) -> Vec<u32> {
        (0..self.workload.keys)
            .filter(|&k| {
                self.faults
                    .iter()
                    .any(|f| f.kind != FaultKind::Capacity && f.hits_key(k))
            })
            .collect()
    }

    /// The workers in service at `t` over every endpoint, if the downstream has workers.
    pub fn workers_at(&self, t: Duration) -> Option<u32> {
        let all = self.downstream.workers?;
        Some(
            (0..self.downstream.endpoints)
                .map(|endpoint| {
                    self.faults
                        .iter()
                        .filter(|f| f.active_at(t) && f.hits_endpoint(endpoint))
                        .filter_map(|f| match f.effect {
                            Effect::Capacity(w) => Some(w),
                            _ => None,
                        })
                        .fold(all, u32::min)
                })
                .sum(),
        )
    }

    /// The mean service time of a call at `t`: the healthy latency, or a latency ramp's value
    /// for the share of calls it hits.
    pub fn mean_service_at(&self, t: Duration) -> Duration {
        let base = self.downstream.latency.mean().as_secs_f64();
        let mut mean = base;
        for f in self.faults.iter().filter(|f| f.active_at(t)) {
            if let Effect::Ramp { from, to } = f.effect {
                let hit = f.rate
                    * f.keys
                        .as_ref()
                        .map_or(1.0, |k| k.len() as f64 / f64::from(self.workload.keys))
                    * f.endpoints.as_ref().map_or(1.0, |e| {
                        e.len() as f64 / f64::from(self.downstream.endpoints)
                    });
                let ramp = ramp_at(from, to, f.start, f.end, t).as_secs_f64();
                mean += hit * (ramp - base);
            }
        }
        Duration::from_secs_f64(mean.max(0.0))
    }

    /// Calls per second the downstream can serve at `t`: workers over the mean service time;
    /// `None` without workers.
    pub fn capacity_at(&self, t: Duration) -> Option<f64> {
        let workers = self.workers_at(t)?;
        let mean = self.mean_service_at(t).as_secs_f64();
        Some(if mean > 0.0 {
            f64::from(workers) / mean
        } else {
            f64::INFINITY
        })
    }

    /// The most successes per second a stack could have at `t` with `offered` requests per
    /// second: the least of the offered load, the capacity and the quota.
    pub fn attainable_at(&self, t: Duration, offered: f64) -> f64 {
        let mut attainable = offered;
        if let Some(capacity) = self.capacity_at(t) {
            attainable = attainable.min(capacity);
        }
        if let Some(quota) = &self.downstream.quota {
            attainable = attainable.min(quota.rate);
        }
        attainable
    }

    /// The same scenario, shortened for CI: 5 s of health before the first event and 10 s
    /// after the last, the events themselves unchanged.
    pub fn quick(&self) -> Self {
        const LEAD: Duration = Duration::from_secs(5);
        const TAIL: Duration = Duration::from_secs(10);
        let mut quick = self.clone();
        let Some((start, end)) = self.span() else {
            quick.duration = self.duration.min(LEAD + TAIL);
            return quick;
        };
        let shift = start.saturating_sub(LEAD);
        for fault in &mut quick.faults {
            fault.start -= shift;
            fault.end -= shift;
        }
        for phase in &mut quick.workload.phases {
            phase.start -= shift;
            phase.end -= shift;
        }
        quick.duration = (self.duration - shift).min(end - shift + TAIL);
        quick
    }
}

/// A latency ramp's service time at `t`, from `from` at `start` to `to` at `end`.
pub fn ramp_at(
    from: Duration,
    to: Duration,
    start: Duration,
    end: Duration,
    t: Duration,
) -> Duration {
    let span = (end - start).as_secs_f64();
    let x = if span > 0.0 {
        (t.saturating_sub(start).as_secs_f64() / span).clamp(0.0, 1.0)
    } else {
        1.0
    };
    Duration::from_secs_f64(from.as_secs_f64() + (to.as_secs_f64() - from.as_secs_f64()) * x)
}

/// FNV-1a, 64 bits, in hex: a stable hash of a scenario's text.
pub fn fnv1a(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}
