//! A scenario's matrix: the same situation at other rates, client counts and latencies, so
//! that settings fitted to one shape do not pass.

use seawall_core::config::{self, ConfigError};
use serde::{Deserialize, Serialize};

use super::workload::{MAX_CLIENTS, Mode, Workload, rate};

/// Lists of values a scenario runs at; every combination is a cell, and every verdict must
/// hold in every cell.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Matrix {
    /// Total request rates; each scales the workload's rate, its phases, the workers and the
    /// quota together.
    pub rate: Vec<f64>,
    /// Client counts.
    pub clients: Vec<u32>,
    /// Latency factors; each scales the downstream's latency, the faults' latencies,
    /// `error_cost`, the workers (capacity stays the same), the deadline and every time
    /// threshold.
    pub latency_scale: Vec<f64>,
}

/// One combination of a matrix's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cell {
    /// The total rate, when the matrix sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// The client count, when the matrix sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<u32>,
    /// The latency factor, when the matrix sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_scale: Option<f64>,
}

impl Cell {
    /// Its values as `name=value` words (`rate=100 clients=1000`).
    pub fn parts(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if let Some(r) = self.rate {
            parts.push(format!("rate={r}"));
        }
        if let Some(c) = self.clients {
            parts.push(format!("clients={c}"));
        }
        if let Some(k) = self.latency_scale {
            parts.push(format!("latency_scale={k}"));
        }
        parts
    }

    /// Its values as one label (`rate=100 clients=1000`).
    pub fn label(&self) -> String {
        self.parts().join(" ")
    }

    /// Whether every `name=value` word of `pattern` is one of its values.
    pub fn matches(&self, pattern: &str) -> bool {
        let parts = self.parts();
        pattern
            .split_whitespace()
            .all(|w| parts.iter().any(|p| p == w))
    }
}

impl Matrix {
    /// Every cell, rates outermost.
    pub fn cells(&self) -> Vec<Cell> {
        fn or_none<T: Copy>(xs: &[T]) -> Vec<Option<T>> {
            if xs.is_empty() {
                vec![None]
            } else {
                xs.iter().copied().map(Some).collect()
            }
        }
        let mut cells = Vec::new();
        for &rate in &or_none(&self.rate) {
            for &clients in &or_none(&self.clients) {
                for &latency_scale in &or_none(&self.latency_scale) {
                    cells.push(Cell {
                        rate,
                        clients,
                        latency_scale,
                    });
                }
            }
        }
        cells
    }

    pub(crate) fn validate(&self, workload: &Workload) -> Result<(), ConfigError> {
        if self.rate.is_empty() && self.clients.is_empty() && self.latency_scale.is_empty() {
            return Err(ConfigError::new(
                "matrix",
                "no list",
                "at least one of `rate`, `clients`, `latency_scale`",
            ));
        }
        if !self.rate.is_empty() && workload.mode == Mode::Closed {
            return Err(ConfigError::new(
                "matrix.rate",
                "rates",
                "nothing in closed loop (it has no rate)",
            ));
        }
        for &r in &self.rate {
            rate("matrix.rate", r)?;
        }
        let max_clients = match workload.mode {
            Mode::Open => MAX_CLIENTS,
            Mode::Closed => workload.concurrency.min(MAX_CLIENTS),
        };
        for &c in &self.clients {
            config::count_in("matrix.clients", c, 1..=max_clients)?;
        }
        for &k in &self.latency_scale {
            if !(k > 0.0 && k <= 100.0) {
                return Err(ConfigError::new("matrix.latency_scale", k, "(0, 100]"));
            }
        }
        Ok(())
    }
}
