//! The stacks the lab compares, each a tower service over the simulated downstream, one per
//! client.
//!
//! The seawall stack is `ClientStackLayer` from a `ClientStackConfig` ([`seawall()`](fn@seawall)),
//! exactly what a user gets; the peers ([`peers`]) get [`PeerSettings`] equivalent to its
//! configuration where the concept exists, so the comparison is of the layers, not of their
//! tuning. Every stack, the unprotected one included, gets the workload's deadline as its total
//! timeout: it is the caller's budget, as a propagated deadline would be. Each builder returns a [`Built`]: the service, whose errors are already sorted
//! into [`Failure`]s, and, when it has a circuit breaker, a probe of its state.

pub mod balance;
pub mod peers;
mod seawall;
pub mod settings;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};
use rand::{Rng as _, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seawall_core::{BoxError, RejectionKind, rejected};
use serde_json::Value;

pub use self::peers::{naive, tower, tower_resilience, unprotected};
pub use self::seawall::seawall;
pub use self::settings::{NAIVE_RETRIES, NAIVE_TIMEOUT, PeerSettings, SeawallSettings};
pub use crate::lab::workload::Built;

use crate::lab::metrics::Failure;
use crate::lab::sim::{ConnectionReset, Origin, Response};

/// The stacks, by the names `--stack` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackKind {
    /// No protection at all: the downstream as it is.
    Unprotected,
    /// What many clients do: 3 retries, no backoff, no jitter, no budget, a 1 s timeout.
    Naive,
    /// tower's built-ins: retry with `TpsBudget`, timeouts, concurrency limit and load shed.
    Tower,
    /// The tower-resilience crate: retry, circuit breaker, bulkhead and time limiters (and its
    /// hedge and outlier detection where a scenario asks for them).
    TowerResilience,
    /// seawall's client stack.
    Seawall,
}

impl StackKind {
    /// Every stack, in report order.
    pub const ALL: [StackKind; 5] = [
        Self::Unprotected,
        Self::Naive,
        Self::Tower,
        Self::TowerResilience,
        Self::Seawall,
    ];

    /// Its name on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unprotected => "unprotected",
            Self::Naive => "naive",
            Self::Tower => "tower",
            Self::TowerResilience => "tower-resilience",
            Self::Seawall => "seawall",
        }
    }

    /// The stack called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for StackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// What every stack runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The seawall stack's configuration.
    pub seawall: SeawallSettings,
    /// tower's.
    pub tower: PeerSettings,
    /// tower-resilience's.
    pub tower_resilience: PeerSettings,
}

impl Default for Settings {
    /// `ClientStackConfig::default()`, and the peers' equivalent.
    fn default() -> Self {
        Self::like(SeawallSettings::default())
    }
}

impl Settings {
    /// `seawall`, and the peers' equivalent.
    pub fn like(seawall: SeawallSettings) -> Self {
        let peers = PeerSettings::like(&seawall);
        Self {
            seawall,
            tower: peers.clone(),
            tower_resilience: peers,
        }
    }

    /// Every stack with `deadline` as its total timeout.
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        Self {
            seawall: self.seawall.with_deadline(deadline),
            tower: self.tower.with_deadline(deadline),
            tower_resilience: self.tower_resilience.with_deadline(deadline),
        }
    }

    /// What `stack` effectively runs with, as JSON.
    pub fn json(&self, stack: StackKind, deadline: Duration) -> Value {
        let text = |d: Duration| format!("{}ms", d.as_millis());
        match stack {
            StackKind::Unprotected => serde_json::json!({}),
            StackKind::Naive => serde_json::json!({
                "total_timeout": text(deadline),
                "attempt_timeout": text(NAIVE_TIMEOUT),
                "max_retries": NAIVE_RETRIES,
            }),
            StackKind::Tower => serde_json::to_value(&self.tower).expect("serializes"),
            StackKind::TowerResilience => {
                serde_json::to_value(&self.tower_resilience).expect("serializes")
            }
            StackKind::Seawall => self.seawall.json().clone(),
        }
    }

    /// The concurrency limit per client of `stack`, if it has one.
    pub fn concurrency_limit(&self, stack: StackKind) -> Option<u64> {
        match stack {
            StackKind::Unprotected | StackKind::Naive => None,
            StackKind::Tower => Some(self.tower.concurrency as u64),
            StackKind::TowerResilience => Some(self.tower_resilience.concurrency as u64),
            StackKind::Seawall => Some(self.seawall.concurrency_limit() as u64),
        }
    }
}

/// The first error of type `T` in `err`'s source chain.
pub fn find<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        next = e.source();
    }
    None
}

/// Sorts a stack's error into what the client can tell of it.
pub fn classify(err: BoxError) -> Failure {
    if let Some(rejection) = rejected(&*err) {
        return match rejection.kind() {
            RejectionKind::Injected => Failure::Downstream,
            RejectionKind::TimedOut | RejectionKind::DeadlineExceeded => Failure::Timeout,
            RejectionKind::CircuitOpen => Failure::CircuitOpen,
            RejectionKind::BulkheadFull | RejectionKind::RateLimited => Failure::BulkheadFull,
            RejectionKind::BudgetExhausted => Failure::Budget,
            _ => Failure::Other,
        };
    }
    if find::<ConnectionReset>(&*err).is_some() {
        Failure::Downstream
    } else if let Some(status) = find::<StatusError>(&*err) {
        Failure::Status(status.code)
    } else if err.is::<::tower::timeout::error::Elapsed>() {
        Failure::Timeout
    } else if err.is::<::tower::load_shed::error::Overloaded>() {
        Failure::BulkheadFull
    } else {
        Failure::Other
    }
}

impl From<BoxError> for Failure {
    fn from(err: BoxError) -> Self {
        classify(err)
    }
}

/// An error status, as the peers see it: an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusError {
    /// The status code.
    pub code: u16,
    /// Its `Retry-After` header, if any.
    pub retry_after: Option<u64>,
}

impl StatusError {
    /// The response it was.
    pub fn response(&self) -> Response {
        let mut res = http::Response::new(Origin::Downstream);
        *res.status_mut() = StatusCode::from_u16(self.code).expect("a status it came from");
        if let Some(after) = self.retry_after {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(after));
        }
        res
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the downstream answered {}", self.code)
    }
}

impl std::error::Error for StatusError {}

/// A downstream result with the statuses an HTTP client retries (5xx, 429) turned into a
/// [`StatusError`].
pub fn status_as_error(result: Result<Response, BoxError>) -> Result<Response, BoxError> {
    match result {
        Ok(res)
            if res.status().is_server_error() || res.status() == StatusCode::TOO_MANY_REQUESTS =>
        {
            let retry_after = res
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            Err(Box::new(StatusError {
                code: res.status().as_u16(),
                retry_after,
            }))
        }
        other => other,
    }
}

/// A seeded random stream that every clone draws from, so that each retry gets its own
/// jitter (tower's backoff is cloned per request with its generator).
#[derive(Debug, Clone)]
pub struct SharedRng(Arc<Mutex<ChaCha8Rng>>);

impl SharedRng {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))))
    }

    /// A number in `[0, 1)`.
    pub fn unit(&self) -> f64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .random()
    }
}

impl ::tower::util::rng::Rng for SharedRng {
    fn next_u64(&mut self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_u64()
    }
}
