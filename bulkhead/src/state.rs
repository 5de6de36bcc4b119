//! What every clone of one bulkhead shares: the semaphore, the limit algorithm, the metric
//! handles. Created once, when the layer is built.

use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::Duration;

use tokio::time::Instant;

use metrics::{Counter, Histogram};
use seawall_core::config::{ConfigError, count_in};
use seawall_core::metrics::MetricScope;

use crate::config::{BulkheadConfig, Limit, MAX_LIMIT};
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
    limit_gauge: metrics::Gauge,
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
            wait: metrics.histogram("seawall_bulkhead_wait_seconds", &[]),
            limit_gauge,
        }
    }

    /// Feeds one finished call to the adaptive limit, if there is one.
    ///
    /// A drop always counts; a success is skipped when another thread is updating the limit
    /// at that moment, so finishing a call never waits on a lock behind other calls.
    pub(crate) fn sample(
        &self,
        now: Instant,
        rtt: Duration,
        in_flight: usize,
        dropped: bool,
    ) -> Option<LimitChange> {
        let adaptive = self.adaptive.as_ref()?;
        let mut algorithm = if dropped {
            adaptive
                .algorithm
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        } else {
            match adaptive.algorithm.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return None,
            }
        };
        let limit = algorithm.sample(now, rtt, in_flight, dropped)?;
        self.apply(limit)
    }

    /// Sets the limit from a handle.
    pub(crate) fn set_limit(&self, limit: usize) -> Result<Option<LimitChange>, ConfigError> {
        match &self.adaptive {
            None => {
                count_in("limit", limit, 1..=MAX_LIMIT)?;
                Ok(self.apply(limit))
            }
            Some(adaptive) => {
                count_in("limit", limit, adaptive.min..=adaptive.max)?;
                let mut algorithm = adaptive
                    .algorithm
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                algorithm.set(limit);
                Ok(self.apply(limit))
            }
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

    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }
}
