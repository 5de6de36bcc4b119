//! What every clone of one bulkhead shares: the semaphore, the limit algorithm, the metric
//! handles, the hooks. Created once, when the layer is built.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use metrics::{Counter, Histogram};
use seawall_core::Hook;
use seawall_core::config::{ConfigError, count_in};
use seawall_core::metrics::MetricScope;
use seawall_core::sync::Mutex;
use seawall_core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::ages::Ages;
use crate::config::{BulkheadConfig, Limit};
use crate::event::{LimitChangedEvent, RejectReason, RejectedEvent};
use crate::idle::IdleSlots;
use crate::limit::{Load, MAX_LIMIT, Tally, Windowed};
use crate::semaphore::{Gauges, Semaphore};
use seawall_core::time::{self, nanos};

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) name: Arc<str>,
    pub(crate) semaphore: Semaphore,
    /// Nanoseconds a call may wait in the queue; a reload may change it.
    max_wait: AtomicU64,
    pub(crate) adaptive: Option<Adaptive>,
    pub(crate) partition_names: Box<[Box<str>]>,
    pub(crate) rejected: Counter,
    pub(crate) wait: Histogram,
    /// Response bodies waiting for their readers, whose slots go back after a while.
    pub(crate) idle: IdleSlots,
    limit_gauge: metrics::Gauge,
    /// Here rather than in [`Hooks`]: handles reach the state, and a handle's `set_limit`
    /// fires it too.
    pub(crate) on_limit_change: Hook<LimitChangedEvent<'static>>,
    /// The configuration in force, as a handle reads it back; reloads take turns on it.
    config: Mutex<BulkheadConfig>,
}

/// An adaptive limit: the algorithm behind a lock, the tally finished calls add to without
/// it, its bounds, and what its Little's-law floor counts besides the samples.
#[derive(Debug)]
pub(crate) struct Adaptive {
    algorithm: Mutex<Windowed>,
    tally: Arc<Tally>,
    min: AtomicUsize,
    max: AtomicUsize,
    /// Calls rejected since the last window closed: demand the limit turned away.
    rejected: AtomicU64,
    /// Calls cancelled before their answer since the last window closed, and the nanoseconds
    /// they held their slots.
    cancelled: AtomicU64,
    cancelled_nanos: AtomicU64,
    /// The calls in flight by age, to tell calls held (hung) from calls queued.
    pub(crate) ages: Ages,
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
            Limit::Adaptive(a) => {
                let algorithm = Windowed::new(a, config.sample_window);
                let tally = algorithm.tally().clone();
                let adaptive = Adaptive {
                    algorithm: Mutex::new(algorithm),
                    ages: Ages::new(config.sample_window),
                    tally,
                    min: AtomicUsize::new(a.min()),
                    max: AtomicUsize::new(a.max()),
                    rejected: AtomicU64::new(0),
                    cancelled: AtomicU64::new(0),
                    cancelled_nanos: AtomicU64::new(0),
                };
                (a.initial(), Some(adaptive))
            }
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
            name: config.name.clone().into(),
            semaphore: Semaphore::new(
                limit,
                config.queue_limit,
                config.borrowing,
                &config.partitions,
                gauges,
            ),
            max_wait: AtomicU64::new(nanos(config.max_wait)),
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
            on_limit_change: Hook::default(),
            config: Mutex::new(config.clone()),
        }
    }

    /// How long a call may wait in the queue.
    pub(crate) fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.max_wait.load(Ordering::Relaxed))
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> BulkheadConfig {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Checks that `config` may replace the one in force.
    pub(crate) fn check_reload(&self, config: &BulkheadConfig) -> Result<(), ConfigError> {
        check_reload(&self.config(), config)
    }

    /// Takes the limit, the queue, the wait and the sample window of `config`, keeping the
    /// calls in flight and in the queue; the limit that moved, if it did.
    pub(crate) fn reload(
        &self,
        config: &BulkheadConfig,
    ) -> Result<Option<LimitChange>, ConfigError> {
        let mut live = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        check_reload(&live, config)?;
        self.max_wait
            .store(nanos(config.max_wait), Ordering::Relaxed);
        self.semaphore.set_queue_limit(config.queue_limit);
        let change = match (&config.limit, &self.adaptive) {
            (Limit::Fixed(limit), _) => self.apply(*limit),
            (Limit::Adaptive(a), Some(adaptive)) => {
                let mut algorithm = adaptive
                    .algorithm
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let unchanged = matches!(&live.limit, Limit::Adaptive(old) if old == a)
                    && live.sample_window == config.sample_window;
                let limit = self.semaphore.limit().clamp(a.min(), a.max());
                if !unchanged {
                    // The algorithm starts over from the limit it had reached, within the new
                    // bounds: what it learned under the old settings does not hold for the
                    // new ones.
                    algorithm.restart(a, config.sample_window);
                    algorithm.set(limit);
                }
                adaptive.min.store(a.min(), Ordering::Relaxed);
                adaptive.max.store(a.max(), Ordering::Relaxed);
                self.apply(limit)
            }
            (Limit::Adaptive(_), None) => unreachable!("a limit of the same kind, checked"),
        };
        *live = config.clone();
        drop(live);
        if let Some(change) = change {
            self.limit_changed(change);
        }
        Ok(change)
    }

    /// Feeds a call of the adaptive limit that started at `start` (see [`enter`](Self::enter))
    /// and finished now to the limit. A call `dropped` failed or was refused, for `overload`
    /// when that is set.
    ///
    /// The call adds to the tally without a lock; the lock is taken only when the window ends
    /// or a raise is to be taken back, so finishing a call never waits behind other calls.
    #[inline]
    pub(crate) fn sample(&self, start: u64, in_flight: usize, dropped: bool, overload: bool) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        let now = Instant::now();
        let at = adaptive.tally.time(now);
        let rtt = at.saturating_sub(start);
        adaptive.tally.record(at, rtt, in_flight, dropped, overload);
        if !adaptive.tally.settled(at) {
            self.settle(adaptive, now);
        }
    }

    /// Takes back a raise or closes the window, under the algorithm's lock.
    #[cold]
    #[inline(never)]
    fn settle(&self, adaptive: &Adaptive, now: Instant) {
        let mut algorithm = adaptive
            .algorithm
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let load = || Load {
            in_flight: self.semaphore.in_flight(),
            rejected: adaptive.rejected.swap(0, Ordering::Relaxed),
            cancelled: adaptive.cancelled.swap(0, Ordering::Relaxed),
            cancelled_time: Duration::from_nanos(
                adaptive.cancelled_nanos.swap(0, Ordering::Relaxed),
            ),
        };
        let Some(limit) = algorithm.settle(now, load) else {
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
                let min = adaptive.min.load(Ordering::Relaxed);
                let max = adaptive.max.load(Ordering::Relaxed);
                count_in("limit", limit, min..=max)?;
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

    fn limit_changed(&self, change: LimitChange) {
        tracing::debug!(name = %self.name, from = change.from, to = change.to, "limit changed");
        self.on_limit_change.call(LimitChangedEvent {
            name: &self.name,
            from: change.from,
            to: change.to,
        });
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

    /// A call found every slot taken: an adaptive limit raises itself to let it in when the
    /// downstream shows no queue (see [`Windowed::full`]); true if it did.
    #[cold]
    pub(crate) fn raise_for_full(&self) -> bool {
        let Some(adaptive) = &self.adaptive else {
            return false;
        };
        let mut algorithm = adaptive
            .algorithm
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let max = adaptive.max.load(Ordering::Relaxed);
        let in_flight = self.semaphore.in_flight();
        let now = Instant::now();
        let held = algorithm.held_age().map_or(0, |age| {
            adaptive.ages.older_than(adaptive.tally.time(now), age)
        });
        let Some(limit) = algorithm.full(now, in_flight, held, max) else {
            return false;
        };
        let change = self.apply(limit);
        drop(algorithm);
        if let Some(change) = change {
            self.limit_changed(change);
        }
        true
    }

    /// Counts a rejected call for the adaptive limit's floor.
    #[cold]
    pub(crate) fn count_rejected(&self) {
        if let Some(adaptive) = &self.adaptive {
            adaptive.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a call that started at `start` (see [`enter`](Self::enter)) and was cancelled
    /// now, for the adaptive limit's floor: it held its slot all that time.
    #[cold]
    pub(crate) fn count_cancelled(&self, start: u64) {
        if let Some(adaptive) = &self.adaptive {
            let held = adaptive.tally.time(Instant::now()).saturating_sub(start);
            adaptive.cancelled.fetch_add(1, Ordering::Relaxed);
            adaptive.cancelled_nanos.fetch_add(held, Ordering::Relaxed);
        }
    }

    /// Counts a call of an adaptive limit starting now; when it started, as the limit's tally
    /// keeps times (0 without an adaptive limit).
    #[inline]
    pub(crate) fn enter(&self) -> u64 {
        let Some(adaptive) = &self.adaptive else {
            return 0;
        };
        let start = adaptive.tally.time(time::call_now());
        adaptive.ages.enter(start);
        start
    }

    /// Forgets a call of an adaptive limit that started at `start`.
    #[inline]
    pub(crate) fn leave(&self, start: u64) {
        if let Some(adaptive) = &self.adaptive {
            adaptive.ages.leave(start);
        }
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }
}

/// Checks that `config` may replace `live`: the limit stays fixed or adaptive, and everything
/// but the limit, the queue, the wait and the sample window stays as it is.
fn check_reload(live: &BulkheadConfig, config: &BulkheadConfig) -> Result<(), ConfigError> {
    ConfigError::same_name(&config.name, &live.name)?;
    match (&config.limit, &live.limit) {
        (Limit::Fixed(_), Limit::Fixed(_)) | (Limit::Adaptive(_), Limit::Adaptive(_)) => {}
        (Limit::Fixed(_), Limit::Adaptive(a)) => {
            return Err(ConfigError::needs_restart(
                "max_concurrent",
                "a fixed limit",
                format_args!("an adaptive limit ({})", a.kind()),
            ));
        }
        (Limit::Adaptive(a), Limit::Fixed(_)) => {
            return Err(ConfigError::needs_restart(
                "adaptive",
                format_args!("an adaptive limit ({})", a.kind()),
                "a fixed limit",
            ));
        }
    }
    if config.partitions != live.partitions {
        return Err(ConfigError::needs_restart(
            "partitions",
            format_args!("{:?}", config.partitions),
            format_args!("{:?}", live.partitions),
        ));
    }
    if config.borrowing != live.borrowing {
        return Err(ConfigError::needs_restart(
            "borrowing",
            format_args!("{}", config.borrowing),
            format_args!("{}", live.borrowing),
        ));
    }
    if config.max_reader_idle != live.max_reader_idle {
        return Err(ConfigError::needs_restart(
            "max_reader_idle",
            format_args!("{:?}", config.max_reader_idle),
            format_args!("{:?}", live.max_reader_idle),
        ));
    }
    Ok(())
}

/// The hooks of one layer.
#[derive(Clone, Default, Debug)]
pub(crate) struct Hooks {
    pub(crate) on_rejected: Hook<RejectedEvent<'static>>,
}

impl Hooks {
    pub(crate) fn rejected(&self, state: &State, reason: RejectReason, partition: Option<usize>) {
        let partition = partition.map(|p| &*state.partition_names[p]);
        tracing::debug!(rejected_by = %state.name, rejection = "bulkhead_full", reason = reason.as_str(), partition, "call rejected");
        self.on_rejected.call(RejectedEvent {
            name: &state.name,
            reason,
            partition,
        });
    }
}

/// Everything one layer's services share: the state, the hooks and the classifier.
pub(crate) struct Shared<C> {
    pub(crate) state: Arc<State>,
    pub(crate) hooks: Hooks,
    pub(crate) classify: Arc<C>,
}

impl<C> Clone for Shared<C> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            hooks: self.hooks.clone(),
            classify: self.classify.clone(),
        }
    }
}
