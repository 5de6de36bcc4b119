//! What each stack runs with: the seawall stack a [`ClientStackConfig`] (the default, or a
//! user's file), and the peers the equivalent settings where the concept exists.

use std::time::Duration;

use seawall::bulkhead::{BulkheadConfig, Limit};
use seawall::circuit_breaker::{CircuitBreakerConfig, OpenDuration, Window};
use seawall::retry::RetryConfig;
use seawall::stack::ClientStackConfig;
use seawall_core::config;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The seawall stack's configuration, kept as the JSON a service's file would hold, so that
/// the lab can give it each cell's deadline and each client its seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct SeawallSettings {
    config: Value,
}

impl Default for SeawallSettings {
    /// `ClientStackConfig::default()`.
    fn default() -> Self {
        Self::from_config(&ClientStackConfig::default())
    }
}

impl SeawallSettings {
    /// The settings of `config`.
    pub fn from_config(config: &ClientStackConfig) -> Self {
        Self {
            config: serde_json::to_value(config).expect("a config serializes"),
        }
    }

    /// A `ClientStackConfig` from TOML, as a service would load it.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: ClientStackConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(Self::from_config(&config))
    }

    /// The configuration as JSON.
    pub fn json(&self) -> &Value {
        &self.config
    }

    /// The same stack with `deadline` as its total timeout (and its attempt timeout, or an
    /// adaptive one's ceiling, no longer): the workload's deadline is each request's total
    /// budget. A retry limit that was the old total's (`max_elapsed`, which a stack sets to
    /// its total) follows it, as does an adaptive attempt timeout with no ceiling of its own
    /// (half the total).
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        let mut config = self.config.clone();
        let old_total = config["total_timeout"].clone();
        if config["retry"]["max_elapsed"] == old_total {
            config["retry"]["max_elapsed"] = text(deadline);
        }
        config["total_timeout"] = text(deadline);
        match self.adaptive_ceiling() {
            None if self.attempt_timeout() > deadline => {
                config["attempt_timeout"] = text(deadline);
            }
            Some(Some(ceiling)) if ceiling > deadline => {
                config["attempt_timeout"]["ceiling"] = text(deadline);
            }
            _ => {}
        }
        Self { config }
    }

    /// The stack of client `client`: its retry jitter, throttle and breaker seeded from `seed`.
    pub fn for_client(&self, seed: u64) -> ClientStackConfig {
        let mut config = self.config.clone();
        config["retry"]["seed"] = seed.into();
        config["circuit_breaker"]["seed"] = seed.wrapping_add(1).into();
        config["throttle"]["seed"] = seed.wrapping_add(2).into();
        serde_json::from_value(config).expect("validated when read")
    }

    fn part<T: serde::de::DeserializeOwned>(&self, name: &str) -> T {
        serde_json::from_value(self.config[name].clone()).expect("validated when read")
    }

    fn duration(&self, name: &str) -> Duration {
        serde_json::from_value::<Text>(self.config[name].clone())
            .expect("validated when read")
            .0
    }

    /// The total timeout.
    pub fn total_timeout(&self) -> Duration {
        self.duration("total_timeout")
    }

    /// The attempt timeout if fixed; if adaptive, the fixed one the peers get in its place
    /// ([`PEER_ATTEMPT_TIMEOUT`], no longer than the total).
    pub fn attempt_timeout(&self) -> Duration {
        match self.config["attempt_timeout"] {
            Value::Object(_) => PEER_ATTEMPT_TIMEOUT.min(self.total_timeout()),
            _ => self.duration("attempt_timeout"),
        }
    }

    /// `None` for a fixed attempt timeout; for an adaptive one its ceiling, if set.
    fn adaptive_ceiling(&self) -> Option<Option<Duration>> {
        match &self.config["attempt_timeout"] {
            Value::Object(table) => Some(table.get("ceiling").map(|c| {
                serde_json::from_value::<Text>(c.clone())
                    .expect("validated when read")
                    .0
            })),
            _ => None,
        }
    }

    /// The retry configuration.
    pub fn retry(&self) -> RetryConfig {
        self.part("retry")
    }

    /// The breaker configuration.
    pub fn circuit_breaker(&self) -> CircuitBreakerConfig {
        self.part("circuit_breaker")
    }

    /// The bulkhead configuration.
    pub fn bulkhead(&self) -> BulkheadConfig {
        self.part("bulkhead")
    }

    /// The most calls in flight it allows per client.
    pub fn concurrency_limit(&self) -> usize {
        match self.bulkhead().limit() {
            Limit::Fixed(n) => *n,
            Limit::Adaptive(a) => a.max(),
        }
    }
}

/// A duration as configuration text (`"250ms"`).
#[derive(Serialize, Deserialize)]
struct Text(#[serde(with = "config::duration")] Duration);

fn text(d: Duration) -> Value {
    serde_json::to_value(Text(d)).expect("a duration serializes")
}

/// A retry budget as the peers take it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerBudget {
    /// Retries as a share of requests.
    pub ratio: f64,
    /// Retries per second whatever the ratio.
    pub min_per_second: u32,
    /// How long deposits count.
    #[serde(with = "config::duration")]
    pub ttl: Duration,
}

/// What tower's and tower-resilience's stacks run with: the seawall stack's settings where
/// the concept exists. `--settings-for STACK FILE` reads one from TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSettings {
    /// How long a call may take, retries included (the workload's deadline in a run).
    #[serde(with = "config::duration")]
    pub total_timeout: Duration,
    /// How long one attempt may take.
    #[serde(with = "config::duration")]
    pub attempt_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first retry's backoff before jitter; it doubles per retry.
    #[serde(with = "config::duration")]
    pub backoff_base: Duration,
    /// The longest backoff.
    #[serde(with = "config::duration")]
    pub backoff_max: Duration,
    /// The retry budget, if any.
    pub budget: Option<PeerBudget>,
    /// Calls in flight at once; past it, calls are rejected at once.
    pub concurrency: usize,
    /// The failure rate that opens a breaker.
    pub breaker_failure_rate: f64,
    /// The calls a breaker judges its failure rate over.
    pub breaker_window: usize,
    /// The fewest calls in the window before a breaker may open.
    pub breaker_minimum_calls: usize,
    /// How long a breaker stays open before probing.
    #[serde(with = "config::duration")]
    pub breaker_open: Duration,
    /// Probe calls a half-open breaker lets through.
    pub breaker_probes: usize,
}

impl PeerSettings {
    /// The settings equivalent to the seawall stack's.
    pub fn like(seawall: &SeawallSettings) -> Self {
        let retry = seawall.retry();
        let breaker = seawall.circuit_breaker();
        let window = match breaker.window() {
            Window::Count(n) => n as usize,
            // A time window of n seconds judged as the calls of n seconds at 100/s.
            Window::Time(span) => (span.as_secs() * 100) as usize,
        };
        Self {
            total_timeout: seawall.total_timeout(),
            attempt_timeout: seawall.attempt_timeout(),
            max_retries: retry.max_attempts().saturating_sub(1),
            backoff_base: retry.backoff().base(),
            backoff_max: retry.backoff().max_delay().min(retry.max_delay()),
            budget: retry.budget().map(|b| PeerBudget {
                ratio: b.ratio(),
                min_per_second: b.min_per_second(),
                ttl: b.ttl(),
            }),
            concurrency: seawall.concurrency_limit(),
            breaker_failure_rate: breaker.failure_rate_threshold().unwrap_or(1.0),
            breaker_window: window,
            breaker_minimum_calls: breaker.minimum_calls() as usize,
            breaker_open: match breaker.open_duration() {
                OpenDuration::Fixed(d) => d,
                OpenDuration::Backoff(b) => b.base(),
            },
            breaker_probes: breaker.half_open_probes() as usize,
        }
    }

    /// Reads settings from TOML.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The same settings with `deadline` as the total timeout (and the attempt timeout no
    /// longer).
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        Self {
            total_timeout: deadline,
            attempt_timeout: self.attempt_timeout.min(deadline),
            ..self.clone()
        }
    }
}

/// The fixed attempt timeout the peers get where the seawall stack's learns from latency (no
/// peer can): what seawall's default was before it did, a third of the 1 s total as Polly's
/// standard pipeline sizes it, so the peers' rows stay comparable across versions.
pub const PEER_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);

/// The naive client's retries.
pub const NAIVE_RETRIES: u32 = 3;
/// The naive client's timeout per attempt.
pub const NAIVE_TIMEOUT: Duration = Duration::from_secs(1);
