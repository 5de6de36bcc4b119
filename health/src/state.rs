use std::fmt;

use serde::{Deserialize, Serialize};

/// How well a component, or the whole service, is doing. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Working normally.
    Healthy,
    /// Working, but with trouble worth attention (a non-critical dependency down, errors above
    /// normal). Still ready for traffic.
    Degraded,
    /// Not able to serve; expected to recover on its own. Not ready for traffic.
    Unhealthy,
    /// Broken until restarted. Not live.
    Failed,
}

impl HealthState {
    /// Every state, best first.
    pub const ALL: [Self; 4] = [Self::Healthy, Self::Degraded, Self::Unhealthy, Self::Failed];

    /// A short lowercase label, as in metrics and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Failed => "failed",
        }
    }

    /// Whether the process should keep running (a liveness probe passes).
    pub const fn is_live(self) -> bool {
        !matches!(self, Self::Failed)
    }

    /// Whether the service should get traffic (a readiness probe passes).
    pub const fn is_ready(self) -> bool {
        matches!(self, Self::Healthy | Self::Degraded)
    }
}

impl seawall_core::metrics::Label for HealthState {
    const KEY: &'static str = "state";
    const ALL: &'static [Self] = &Self::ALL;

    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}
