//! What every service of one rate limit layer shares: its configuration, limiter, metric
//! handles and hooks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use metrics::Counter;
use seawall_core::metrics::{CallCounter, MetricScope};
use seawall_core::{BoxError, Hook, Rejected, RejectionKind};

use crate::config::RateLimitConfig;
use crate::event::{RejectedEvent, WaitedEvent};

/// What a handle may change while calls flow: `max_wait` (read only by calls that find no
/// permit) and the configuration in force, which reloads take turns on.
pub(crate) struct Live {
    name: Arc<str>,
    /// Nanoseconds; `u64::MAX` for none.
    max_wait: AtomicU64,
    config: Mutex<RateLimitConfig>,
}

const NO_WAIT: u64 = u64::MAX;

impl Live {
    fn new(config: &RateLimitConfig) -> Self {
        let live = Self {
            name: config.name.clone().into(),
            max_wait: AtomicU64::new(NO_WAIT),
            config: Mutex::new(config.clone()),
        };
        live.set_max_wait(config.max_wait);
        live
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// How long a call may wait for a permit now.
    pub(crate) fn max_wait(&self) -> Option<Duration> {
        match self.max_wait.load(Ordering::Relaxed) {
            NO_WAIT => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    pub(crate) fn set_max_wait(&self, max_wait: Option<Duration>) {
        let nanos = max_wait.map_or(NO_WAIT, |wait| {
            u64::try_from(wait.as_nanos()).unwrap_or(NO_WAIT - 1)
        });
        self.max_wait.store(nanos, Ordering::Relaxed);
    }

    /// The configuration in force, held against other reloads.
    pub(crate) fn lock(&self) -> MutexGuard<'_, RateLimitConfig> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> RateLimitConfig {
        self.lock().clone()
    }
}

/// What every clone of one layer's services shares.
pub(crate) struct Shared<L> {
    pub(crate) config: RateLimitConfig,
    pub(crate) live: Arc<Live>,
    pub(crate) limiter: Arc<L>,
    pub(crate) permitted: CallCounter,
    pub(crate) waited: Counter,
    pub(crate) rejected: Counter,
    pub(crate) unavailable: Counter,
    pub(crate) on_rejected: Hook<RejectedEvent<'static>>,
    pub(crate) on_waited: Hook<WaitedEvent<'static>>,
}

impl<L> Shared<L> {
    pub(crate) fn new(config: RateLimitConfig, limiter: L) -> Self {
        const CALLS: &str = "seawall_rate_limit_calls_total";
        let metrics = MetricScope::new(config.name.clone());
        Self {
            permitted: metrics.call_counter(CALLS, &[("result", "permitted")]),
            waited: metrics.counter(CALLS, &[("result", "waited")]),
            rejected: metrics.counter(CALLS, &[("result", "rejected")]),
            unavailable: metrics.counter(CALLS, &[("result", "unavailable")]),
            live: Arc::new(Live::new(&config)),
            config,
            limiter: Arc::new(limiter),
            on_rejected: Hook::default(),
            on_waited: Hook::default(),
        }
    }

    /// The same metric handles and hooks over another limiter.
    pub(crate) fn with_limiter<M>(&self, limiter: Arc<M>) -> Shared<M> {
        Shared {
            config: self.config.clone(),
            live: self.live.clone(),
            limiter,
            permitted: self.permitted.clone(),
            waited: self.waited.clone(),
            rejected: self.rejected.clone(),
            unavailable: self.unavailable.clone(),
            on_rejected: self.on_rejected.clone(),
            on_waited: self.on_waited.clone(),
        }
    }

    /// Records a rejection and builds its error.
    #[cold]
    #[inline(never)]
    pub(crate) fn reject(&self, retry_after: Duration) -> BoxError {
        let name = &self.config.name;
        self.rejected.increment(1);
        tracing::debug!(rejected_by = %name, rejection = "rate_limited", ?retry_after, "call rejected");
        self.on_rejected.call(RejectedEvent { name, retry_after });
        Rejected::new(RejectionKind::RateLimited, name.clone())
            .with_retry_after(retry_after)
            .into()
    }

    /// Records a call refused because the shared store could not answer and the limit fails
    /// closed, and builds its error.
    #[cold]
    #[inline(never)]
    pub(crate) fn unavailable(&self, retry_after: Duration) -> BoxError {
        let name = &self.config.name;
        self.unavailable.increment(1);
        tracing::debug!(%name, ?retry_after, "quota store unavailable, call refused");
        Rejected::new(RejectionKind::StoreUnavailable, name.clone())
            .with_retry_after(retry_after)
            .into()
    }

    /// Records a call admitted at once.
    #[inline]
    pub(crate) fn admitted(&self) {
        self.permitted.increment(1);
        tracing::trace!(name = %self.config.name, "permitted");
    }

    /// Records a call admitted after waiting `waited`.
    #[cold]
    #[inline(never)]
    pub(crate) fn admitted_after(&self, waited: Duration) {
        let name = &self.config.name;
        self.waited.increment(1);
        tracing::trace!(%name, ?waited, "permitted after waiting");
        self.on_waited.call(WaitedEvent { name, waited });
    }
}

impl<L> Clone for Shared<L> {
    fn clone(&self) -> Self {
        self.with_limiter(self.limiter.clone())
    }
}
