//! What every clone of one layer's services shares: the timeout (fixed, or learned from recent
//! latency), the metric handles and the hook. Created once, when the layer is built.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use metrics::{Counter, Histogram};
use seawall_core::Hook;
use seawall_core::config::ConfigError;
use seawall_core::latency::{CachedQuantile, LatencyEstimate};
use seawall_core::metrics::{CallCounter, MetricScope};
use tokio::time::Instant;

use crate::config::{AdaptiveTimeout, TimeoutConfig, TimeoutMode};
use crate::event::TimedOutEvent;
use seawall_core::time::nanos;

/// What every clone of one layer's services shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) live: Arc<Live>,
    pub(crate) completed: CallCounter,
    pub(crate) timed_out: Counter,
    pub(crate) deadline_exceeded: Counter,
    pub(crate) remaining: Histogram,
    pub(crate) on_timeout: Hook<TimedOutEvent<'static>>,
    pub(crate) metrics: MetricScope,
}

impl Shared {
    pub(crate) fn new(config: &TimeoutConfig, metrics: MetricScope) -> Self {
        const CALLS: &str = "seawall_timeout_calls_total";
        Self {
            name: config.name.clone().into(),
            live: Arc::new(Live::new(config)),
            completed: metrics.call_counter(CALLS, &[("result", "completed")]),
            timed_out: metrics.counter(CALLS, &[("result", "timed_out")]),
            deadline_exceeded: metrics.counter(CALLS, &[("result", "deadline_exceeded")]),
            remaining: metrics.histogram("seawall_timeout_remaining_seconds", &[]),
            on_timeout: Hook::default(),
            metrics,
        }
    }
}

/// The values a handle may change while calls run: read with relaxed atomic loads, so a call
/// sees the old values or the new ones and a call in flight keeps the timeout it was given.
pub(crate) struct Live {
    /// The fixed timeout, or the adaptive ceiling, in nanoseconds.
    timeout: AtomicU64,
    /// The configuration in force, for handles to read and compare; never locked on a
    /// call's path.
    config: Mutex<TimeoutConfig>,
    pub(crate) adaptive: Option<Adaptive>,
}

/// An adaptive timeout's estimate and its reloadable bounds.
pub(crate) struct Adaptive {
    estimate: LatencyEstimate,
    quantile: CachedQuantile,
    /// The multiplier, as `f64` bits.
    multiplier: AtomicU64,
    floor: AtomicU64,
    /// How many times the timeout is doubled: once per call cut off, back to none when a call
    /// answers within the learned timeout.
    backoff: AtomicU32,
}

/// A call's learned timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Learned {
    /// The timeout, at most the ceiling.
    pub(crate) timeout: Duration,
    /// The ceiling is no bound the downstream was seen to keep: too few calls were seen, or
    /// cuts doubled the timeout past the ceiling and no call answered within it since. An
    /// attempt under a retry may then wait for what the caller's deadline leaves.
    pub(crate) open_ended: bool,
}

/// Enough doublings to take a 1 ms timeout past a day.
const MAX_DOUBLINGS: u32 = 27;

impl Adaptive {
    /// The multiple of the recent percentile between the floor and the ceiling; `None` until
    /// the window holds enough calls.
    fn base_at(&self, now: Instant) -> Option<Duration> {
        let percentile = self.quantile.get(&self.estimate, now)?;
        let multiplier = f64::from_bits(self.multiplier.load(Ordering::Relaxed));
        let floor = Duration::from_nanos(self.floor.load(Ordering::Relaxed));
        Some(percentile.mul_f64(multiplier).max(floor))
    }
}

impl Live {
    fn new(config: &TimeoutConfig) -> Self {
        let adaptive = match &config.timeout {
            TimeoutMode::Fixed(_) => None,
            TimeoutMode::Adaptive(a) => Some(Adaptive {
                estimate: LatencyEstimate::new(a.window).expect("checked with the config"),
                // A tenth of the time 1 % of a window at 1000 calls a second takes to fill.
                quantile: CachedQuantile::new(a.quantile, a.min_samples, a.window / 300),
                multiplier: AtomicU64::new(a.multiplier.to_bits()),
                floor: AtomicU64::new(nanos(a.floor)),
                backoff: AtomicU32::new(0),
            }),
        };
        Self {
            timeout: AtomicU64::new(nanos(config.timeout())),
            config: Mutex::new(config.clone()),
            adaptive,
        }
    }

    /// The fixed timeout, or the adaptive ceiling.
    #[inline]
    pub(crate) fn ceiling(&self) -> Duration {
        Duration::from_nanos(self.timeout.load(Ordering::Relaxed))
    }

    /// The timeout of a call starting at `now`: the fixed one, or the multiple of the recent
    /// percentile between the floor and the ceiling (the ceiling until enough calls were seen),
    /// doubled for each call cut off since one answered within it.
    pub(crate) fn timeout_at(&self, now: Instant) -> Duration {
        self.learned_at(now).timeout
    }

    /// [`timeout_at`](Self::timeout_at), and whether it is open-ended.
    pub(crate) fn learned_at(&self, now: Instant) -> Learned {
        let ceiling = self.ceiling();
        let Some(a) = &self.adaptive else {
            return Learned {
                timeout: ceiling,
                open_ended: false,
            };
        };
        match a.base_at(now) {
            // Too few calls to know the downstream's latency (a client at a few calls a
            // second never has enough): a ceiling cut would be a guess, and the first call to
            // a downstream uniformly slower than it would fail at every such client.
            None => Learned {
                timeout: ceiling,
                open_ended: true,
            },
            Some(base) => {
                let doublings = a.backoff.load(Ordering::Relaxed);
                // Ceiling last: a reload seen half-done (a new floor above the old ceiling)
                // never lets a call wait past either ceiling.
                let doubled = base.min(ceiling).saturating_mul(1 << doublings);
                Learned {
                    timeout: doubled.min(ceiling),
                    open_ended: doubled > ceiling,
                }
            }
        }
    }

    /// Feeds a call that answered after `latency`, at `now`, into the estimate; an answer
    /// within the learned timeout (or within the ceiling, before enough calls were seen) ends
    /// its backoff.
    pub(crate) fn answered(&self, latency: Duration, now: Instant) {
        let Some(a) = &self.adaptive else {
            return;
        };
        a.estimate.record_at(latency, now);
        if a.backoff.load(Ordering::Relaxed) != 0 {
            let ceiling = self.ceiling();
            let within = a.base_at(now).map_or(ceiling, |base| base.min(ceiling));
            if latency <= within {
                a.backoff.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Feeds a call cut off after `latency`, at `now`, into the estimate, and doubles the
    /// timeout of the calls that follow (up to the ceiling) unless `by_caller`: the caller's
    /// deadline cut it, which says nothing of the downstream.
    ///
    /// A cut says only that the call would have taken at least its time, so it counts as the
    /// percentile that time came from (the timeout without its doublings, over the
    /// multiplier): at the percentile's rank it holds the timeout where it is, never raises
    /// it. Only answers raise it, the doubling's probes that answered among them.
    pub(crate) fn cut(&self, latency: Duration, now: Instant, by_caller: bool) {
        let Some(a) = &self.adaptive else {
            return;
        };
        let given = a
            .base_at(now)
            .map_or(latency, |base| base.min(self.ceiling()));
        let multiplier = f64::from_bits(a.multiplier.load(Ordering::Relaxed));
        a.estimate
            .record_at(latency.min(given).div_f64(multiplier), now);
        if !by_caller {
            let _ = a
                .backoff
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |doublings| {
                    (doublings < MAX_DOUBLINGS).then_some(doublings + 1)
                });
        }
    }

    /// The percentile the timeout follows, as last computed, if it learns and has seen enough.
    pub(crate) fn percentile(&self) -> Option<Duration> {
        let a = self.adaptive.as_ref()?;
        a.quantile.get(&a.estimate, Instant::now())
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> TimeoutConfig {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, TimeoutConfig> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `config` may replace the one in force: the same name and mode, and for an
    /// adaptive timeout the same estimate (quantile, window, samples).
    pub(crate) fn check_reload(&self, config: &TimeoutConfig) -> Result<(), ConfigError> {
        check_reload(&self.lock(), config)
    }

    /// Puts `config` in force, if [`check_reload`](Self::check_reload) takes it.
    pub(crate) fn reload(&self, config: &TimeoutConfig) -> Result<(), ConfigError> {
        // Under the lock, so that two reloads never leave half of each in force.
        let mut live = self.lock();
        check_reload(&live, config)?;
        if let (Some(a), TimeoutMode::Adaptive(new)) = (&self.adaptive, &config.timeout) {
            a.multiplier
                .store(new.multiplier.to_bits(), Ordering::Relaxed);
            a.floor.store(nanos(new.floor), Ordering::Relaxed);
        }
        self.timeout
            .store(nanos(config.timeout()), Ordering::Relaxed);
        *live = config.clone();
        Ok(())
    }
}

fn check_reload(live: &TimeoutConfig, config: &TimeoutConfig) -> Result<(), ConfigError> {
    ConfigError::same_name(&config.name, &live.name)?;
    match (&live.timeout, &config.timeout) {
        (TimeoutMode::Fixed(_), TimeoutMode::Fixed(_)) => Ok(()),
        (TimeoutMode::Adaptive(old), TimeoutMode::Adaptive(new)) => same_estimate(old, new),
        (TimeoutMode::Fixed(d), TimeoutMode::Adaptive(_)) => Err(ConfigError::needs_restart(
            "timeout",
            "an adaptive timeout",
            format_args!("a fixed timeout ({d:?})"),
        )),
        (TimeoutMode::Adaptive(_), TimeoutMode::Fixed(d)) => Err(ConfigError::needs_restart(
            "timeout",
            format_args!("a fixed timeout ({d:?})"),
            "an adaptive timeout",
        )),
    }
}

/// The estimate's shape stays: a reload keeps the latencies it learned.
fn same_estimate(old: &AdaptiveTimeout, new: &AdaptiveTimeout) -> Result<(), ConfigError> {
    if new.quantile != old.quantile {
        return Err(ConfigError::needs_restart(
            "timeout.quantile",
            format_args!("{}", new.quantile),
            format_args!("{}", old.quantile),
        ));
    }
    if new.window != old.window {
        return Err(ConfigError::needs_restart(
            "timeout.window",
            format_args!("{:?}", new.window),
            format_args!("{:?}", old.window),
        ));
    }
    if new.min_samples != old.min_samples {
        return Err(ConfigError::needs_restart(
            "timeout.min_samples",
            format_args!("{}", new.min_samples),
            format_args!("{}", old.min_samples),
        ));
    }
    Ok(())
}
