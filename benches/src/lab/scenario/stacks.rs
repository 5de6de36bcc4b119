//! How the stacks meet the scenario's endpoints and tails: how each spreads calls over the
//! endpoints, and the hedging and outlier ejection the scenario asks of the stacks that have
//! them.

use std::collections::BTreeMap;

use seawall::stack::BreakerKey;
use seawall_core::config::ConfigError;
use seawall_hedge::HedgeConfig;
use seawall_outlier::OutlierConfig;
use serde::Deserialize;

/// How a stack spreads calls over the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// The power of two choices by pending calls (`tower::balance::p2c`).
    P2c,
    /// Each endpoint in turn, whatever its state: what a client without a balancer does
    /// over a list of addresses.
    RoundRobin,
}

impl Balance {
    /// Its name in the file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::P2c => "p2c",
            Self::RoundRobin => "round_robin",
        }
    }
}

/// The `[stacks]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "StacksSpec")]
pub struct StackOptions {
    /// The balance of each stack named; the others take their default.
    pub balance: BTreeMap<String, Balance>,
    /// Hedging, for the stacks that hedge (the seawall stack's `hedge` section; tower's
    /// hedge at the same percentile; tower-resilience's at the same fixed delay).
    pub hedge: Option<HedgeConfig>,
    /// Outlier ejection under the balancer, for the stacks that eject.
    pub outlier: Option<OutlierConfig>,
    /// The seawall stack's circuit breaker key (its `circuit_breaker_key`), when the settings
    /// have the default one breaker.
    pub circuit_breaker_key: Option<BreakerKey>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BalanceSpec {
    All(Balance),
    PerStack(BTreeMap<String, Balance>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StacksSpec {
    balance: Option<BalanceSpec>,
    hedge: Option<HedgeConfig>,
    outlier: Option<OutlierConfig>,
    circuit_breaker_key: Option<BreakerKey>,
}

/// The stacks a balance may be chosen for.
pub const STACKS: [&str; 5] = [
    "unprotected",
    "naive",
    "tower",
    "tower-resilience",
    "seawall",
];

/// The stacks that have a balancer of their own (p2c unless told otherwise); the others go
/// round-robin.
pub const BALANCING: [&str; 3] = ["tower", "tower-resilience", "seawall"];

impl TryFrom<StacksSpec> for StackOptions {
    type Error = ConfigError;

    fn try_from(spec: StacksSpec) -> Result<Self, ConfigError> {
        let balance = match spec.balance {
            None => BTreeMap::new(),
            Some(BalanceSpec::All(b)) => BALANCING.iter().map(|s| ((*s).to_owned(), b)).collect(),
            Some(BalanceSpec::PerStack(map)) => {
                if let Some(name) = map.keys().find(|n| !STACKS.contains(&n.as_str())) {
                    return Err(ConfigError::new(
                        "stacks.balance",
                        format_args!("`{name}`"),
                        "a stack name: unprotected, naive, tower, tower-resilience, seawall",
                    ));
                }
                map
            }
        };
        Ok(Self {
            balance,
            hedge: spec.hedge,
            outlier: spec.outlier,
            circuit_breaker_key: spec.circuit_breaker_key,
        })
    }
}

impl StackOptions {
    /// How the stack called `stack` spreads calls over the endpoints.
    pub fn balance(&self, stack: &str) -> Balance {
        self.balance
            .get(stack)
            .copied()
            .unwrap_or(if BALANCING.contains(&stack) {
                Balance::P2c
            } else {
                Balance::RoundRobin
            })
    }
}
