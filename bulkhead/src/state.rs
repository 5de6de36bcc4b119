//! What every clone of one bulkhead shares: the semaphore, the limit algorithm, the metric
//! handles. Created once, when the layer is built.

use std::fmt;
use std::sync::{Arc, PoisonError, TryLockError};
use std::time::Duration;

use tokio::time::Instant;

use metrics::{Counter, Histogram};
use seawall_core::config::{ConfigError, count_in};
use seawall_core::metrics::MetricScope;
use seawall_core::sync::{Mutex, RwLock};

use crate::config::{BulkheadConfig, Limit, MAX_LIMIT};
use crate::idle::IdleSlots;
use crate::limit::Windowed;
use crate::semaphore::{Gauges, Semaphore};

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) name: Arc<str>,
    pub(crate) semaphore: Semaphore,
    pub(crate) max_wait: Duration,
    pub(crate) adaptive: Option<Adaptive>,
    pub(crate) partition_names: Box<[Box<str>]>,
    pub(crate) rejected: Counter,
    pub(crate) wait: Histogram,
    /// Response bodies waiting for their readers, whose slots go back after a while.
    pub(crate) idle: IdleSlots,
    limit_gauge: metrics::Gauge,
    on_limit_change: OnLimitChange,
}

/// Told the layer's name and the limit before and after, each time the limit moves.
pub(crate) type LimitHook = Arc<dyn Fn(&str, usize, usize) + Send + Sync>;

/// The limit hook, set at any time through the layer and fired by adaptation and by handles.
#[derive(Default)]
struct OnLimitChange(RwLock<Option<LimitHook>>);

impl fmt::Debug for OnLimitChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.0.read().map(|hook| hook.is_some()).unwrap_or(true);
        f.debug_tuple("OnLimitChange").field(&set).finish()
    }
}

/// An adaptive limit: the algorithm behind a lock, and its bounds.
#[derive(Debug)]
pub(crate) struct Adaptive {
    algorithm: Mutex<Windowed>,
    min: usize,
    max: usize,
}

/// A limit that moved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitChange {
    pub(crate) from: usize,
    pub(crate) to: usize,
}

impl State {
    pub(crate) fn new(config: &BulkheadConfig) -> Self {
        let metrics = MetricScope::new(config.name.clone());
        let (limit, adaptive) = match &config.limit {
            Limit::Fixed(n) => (*n, None),
            Limit::Adaptive(a) => (
                a.initial(),
                Some(Adaptive {
                    algorithm: Mutex::new(Windowed::new(a, config.sample_window)),
                    min: a.min(),
                    max: a.max(),
                }),
            ),
        };
        let limit_gauge = metrics.gauge("seawall_bulkhead_limit", &[]);
        limit_gauge.set(limit as f64);
        let gauges = Gauges {
            in_flight: metrics.gauge("seawall_bulkhead_in_flight", &[]),
            queued: metrics.gauge("seawall_bulkhead_queued", &[]),
        };
        gauges.in_flight.set(0.0);
        gauges.queued.set(0.0);
        Self {
            name: config.name.clone(),
            semaphore: Semaphore::new(
                limit,
                config.max_queue,
                config.borrowing,
                &config.partitions,
                gauges,
            ),
            max_wait: config.max_wait,
            adaptive,
            partition_names: config
                .partitions
                .iter()
                .map(|p| p.name.as_str().into())
                .collect(),
            rejected: metrics.counter("seawall_bulkhead_rejected_total", &[]),
            idle: IdleSlots::new(
                config.max_reader_idle,
                config.partitions.len(),
                metrics.counter("seawall_bulkhead_idle_released_total", &[]),
            ),
            wait: metrics.histogram("seawall_bulkhead_wait_seconds", &[]),
            limit_gauge,
            on_limit_change: OnLimitChange::default(),
        }
    }

    /// Feeds one finished call to the adaptive limit, if there is one.
    ///
    /// A drop always counts; a success is skipped when another thread is updating the limit
    /// at that moment, so finishing a call never waits on a lock behind other calls.
    pub(crate) fn sample(&self, now: Instant, rtt: Duration, in_flight: usize, dropped: bool) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        let mut algorithm = if dropped {
            adaptive
                .algorithm
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        } else {
            match adaptive.algorithm.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            }
        };
        let Some(limit) = algorithm.sample(now, rtt, in_flight, dropped) else {
            return;
        };
        let change = self.apply(limit);
        // The hook may read or set the limit itself.
        drop(algorithm);
        if let Some(change) = change {
            self.limit_changed(change);
        }
    }

    /// Sets the limit from a handle, and tells the hook if it moved.
    pub(crate) fn set_limit(&self, limit: usize) -> Result<Option<LimitChange>, ConfigError> {
        let change = match &self.adaptive {
            None => {
                count_in("limit", limit, 1..=MAX_LIMIT)?;
                self.apply(limit)
            }
            Some(adaptive) => {
                count_in("limit", limit, adaptive.min..=adaptive.max)?;
                let mut algorithm = adaptive
                    .algorithm
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                algorithm.set(limit);
                self.apply(limit)
            }
        };
        if let Some(change) = change {
            self.limit_changed(change);
        }
        Ok(change)
    }

    pub(crate) fn set_on_limit_change(&self, hook: LimitHook) {
        *self
            .on_limit_change
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    fn limit_changed(&self, change: LimitChange) {
        tracing::debug!(name = %self.name, from = change.from, to = change.to, "limit changed");
        let hook = self
            .on_limit_change
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(hook) = hook {
            hook(&self.name, change.from, change.to);
        }
    }

    fn apply(&self, limit: usize) -> Option<LimitChange> {
        if self.semaphore.limit() == limit {
            return None;
        }
        let from = self.semaphore.set_limit(limit);
        self.limit_gauge.set(limit as f64);
        Some(LimitChange { from, to: limit })
    }

    /// Gives back the slots of response bodies whose readers stopped reading; true if any.
    pub(crate) fn release_idle(&self) -> bool {
        self.idle.sweep(&self.semaphore) > 0
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }
}
