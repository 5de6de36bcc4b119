//! The error every layer returns and the rejection it decides itself.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The error type of every seawall layer, as in tower's own layers.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Why a layer refused or ended a call on its own.
///
/// In configuration files it is written in snake case (`"circuit_open"`), as [`as_str`](Self::as_str) gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectionKind {
    /// A circuit breaker is open (or half-open with every probe slot taken).
    CircuitOpen,
    /// A bulkhead has no free slot and no room left in its queue.
    BulkheadFull,
    /// A rate limiter has no permit left in its quota.
    RateLimited,
    /// A timeout elapsed before the inner service answered.
    TimedOut,
    /// The caller's own deadline passed (or had passed on arrival): a timeout shortened to it
    /// by deadline propagation elapsed, or a queue was left when it passed.
    DeadlineExceeded,
    /// A retry layer had a retry to make and its retry budget had none left: the call ends
    /// with its last error, which is this rejection's [`source`](Error::source).
    BudgetExhausted,
    /// A chaos layer injected this failure on purpose.
    Injected,
    /// A client-side throttle refused the call locally, because the downstream has been
    /// refusing too much of its recent load.
    Throttled,
    /// A quota shared by a fleet could not be checked (its store, such as Redis, was down or
    /// slow) and the layer fails closed.
    StoreUnavailable,
}

impl RejectionKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 9] = [
        Self::CircuitOpen,
        Self::BulkheadFull,
        Self::RateLimited,
        Self::TimedOut,
        Self::DeadlineExceeded,
        Self::BudgetExhausted,
        Self::Injected,
        Self::Throttled,
        Self::StoreUnavailable,
    ];

    /// A short lowercase label, as used in metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::BulkheadFull => "bulkhead_full",
            Self::RateLimited => "rate_limited",
            Self::TimedOut => "timed_out",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::BudgetExhausted => "budget_exhausted",
            Self::Injected => "injected",
            Self::Throttled => "throttled",
            Self::StoreUnavailable => "store_unavailable",
        }
    }

    /// Whether a call rejected this way counts against the downstream.
    ///
    /// A timeout (the downstream was too slow) and an injected failure (standing in for a
    /// downstream's) do. An open circuit, a full bulkhead, a rate limit, an exhausted retry
    /// budget, a throttle and an unreachable quota store stopped the call before it reached the
    /// downstream and say nothing about its health: a circuit breaker outside such a layer
    /// counts them for nothing, or a bulkhead filling up under load would open it. Nor does the caller's own deadline: a
    /// caller that gave the call almost no time says nothing about the downstream, and retrying
    /// it cannot succeed.
    pub const fn is_downstream_failure(self) -> bool {
        matches!(self, Self::TimedOut | Self::Injected)
    }

    fn describe(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit open",
            Self::BulkheadFull => "bulkhead full",
            Self::RateLimited => "rate limited",
            Self::TimedOut => "timed out",
            Self::DeadlineExceeded => "deadline exceeded",
            Self::BudgetExhausted => "retry budget exhausted",
            Self::Injected => "injected failure",
            Self::Throttled => "throttled",
            Self::StoreUnavailable => "quota store unavailable",
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.describe())
    }
}

/// A call that a layer refused or ended by its own decision, not the inner service's.
///
/// Find it in any stack's error with [`rejected`]. A rejection that ends a call which had
/// already failed (a retry refused by the budget) carries that failure as its
/// [`source`](Error::source).
#[derive(Debug, Clone)]
pub struct Rejected {
    kind: RejectionKind,
    name: Arc<str>,
    retry_after: Option<Duration>,
    source: Option<Arc<dyn Error + Send + Sync + 'static>>,
}

/// Two rejections are equal when their kind, layer and hint are: their sources are not
/// compared.
impl PartialEq for Rejected {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.name == other.name && self.retry_after == other.retry_after
    }
}

impl Eq for Rejected {}

impl Rejected {
    /// A rejection of `kind` by the layer instance called `name`.
    pub fn new(kind: RejectionKind, name: impl Into<Arc<str>>) -> Self {
        Self {
            kind,
            name: name.into(),
            retry_after: None,
            source: None,
        }
    }

    /// Adds the error that the call had failed with when the layer ended it, as its
    /// [`source`](Error::source).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    /// Adds a hint of how long until the call may succeed.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Why the call was rejected.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The name of the layer instance that rejected the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the call may succeed, when the layer knows.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind, self.name)?;
        if let Some(after) = self.retry_after {
            write!(f, ", retry after {after:?}")?;
        }
        Ok(())
    }
}

impl Error for Rejected {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}

/// Finds the [`Rejected`] in `err` or anywhere in its source chain.
///
/// ```
/// use seawall_core::{BoxError, Rejected, RejectionKind, rejected};
///
/// let err: BoxError = Rejected::new(RejectionKind::TimedOut, "payments").into();
/// assert_eq!(rejected(&*err).map(Rejected::kind), Some(RejectionKind::TimedOut));
/// ```
pub fn rejected<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a Rejected> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(rejected) = err.downcast_ref::<Rejected>() {
            return Some(rejected);
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(Rejected);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn rejected_is_found_through_the_source_chain() {
        let inner = Rejected::new(RejectionKind::CircuitOpen, "db")
            .with_retry_after(Duration::from_secs(3));
        let err: BoxError = Box::new(Wrapper(inner.clone()));
        assert_eq!(rejected(&*err), Some(&inner));
    }

    #[test]
    fn other_errors_are_not_rejections() {
        let err: BoxError = "boom".into();
        assert!(rejected(&*err).is_none());
    }

    #[test]
    fn only_timeouts_and_injected_failures_blame_the_downstream() {
        let blamed: Vec<_> = RejectionKind::ALL
            .into_iter()
            .filter(|k| k.is_downstream_failure())
            .collect();
        assert_eq!(blamed, [RejectionKind::TimedOut, RejectionKind::Injected]);
    }

    #[test]
    fn the_callers_own_deadline_blames_nobody() {
        let kind = RejectionKind::DeadlineExceeded;
        assert!(!kind.is_downstream_failure());
        assert_eq!(kind.as_str(), "deadline_exceeded");
        assert_eq!(
            Rejected::new(kind, "api").to_string(),
            "deadline exceeded (api)"
        );
    }

    #[test]
    fn kinds_read_and_write_as_their_labels() {
        for kind in RejectionKind::ALL {
            let json = format!("\"{}\"", kind.as_str());
            assert_eq!(serde_json::to_string(&kind).unwrap(), json);
            assert_eq!(serde_json::from_str::<RejectionKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn a_rejection_carries_the_error_it_ended_the_call_with() {
        let last: BoxError = Rejected::new(RejectionKind::TimedOut, "attempt").into();
        let err: BoxError = Rejected::new(RejectionKind::BudgetExhausted, "retry")
            .with_source(last)
            .into();
        assert_eq!(
            rejected(&*err).map(Rejected::kind),
            Some(RejectionKind::BudgetExhausted)
        );
        let source = err.source().expect("the last error");
        assert_eq!(
            rejected(source).map(Rejected::kind),
            Some(RejectionKind::TimedOut)
        );
        assert_eq!(err.to_string(), "retry budget exhausted (retry)");
        assert!(
            Rejected::new(RejectionKind::CircuitOpen, "db")
                .source()
                .is_none()
        );
    }

    #[test]
    fn display_names_kind_layer_and_hint() {
        let r = Rejected::new(RejectionKind::RateLimited, "api")
            .with_retry_after(Duration::from_millis(250));
        assert_eq!(r.to_string(), "rate limited (api), retry after 250ms");
        assert_eq!(
            Rejected::new(RejectionKind::TimedOut, "api").to_string(),
            "timed out (api)"
        );
    }
}
