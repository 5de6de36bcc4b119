//! What every clone of one hedge layer shares: the delay source, the budget, the metric
//! handles and the hooks. Created once, when the layer is built.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use metrics::Counter;
use seawall_core::config::ConfigError;
use seawall_core::latency::{CachedQuantile, LatencyEstimate};
use seawall_core::metrics::{CallCounter, MetricScope};
use seawall_core::sync::Mutex;
use tokio::time::Instant;

use crate::budget::Budget;
use crate::config::{Delay, HedgeConfig};
use crate::event::{BudgetExhaustedEvent, HedgeEvent, HedgeWonEvent, Hooks};

/// Where a call's hedge delay comes from.
enum DelaySource {
    Fixed,
    Percentile {
        estimate: LatencyEstimate,
        quantile: CachedQuantile,
        /// The window's largest latency, for a window with fewer samples than the quantile
        /// waits for; `None` when no fewer suffice.
        largest: Option<CachedQuantile>,
        /// The median, for the margin; `None` without one.
        median: Option<CachedQuantile>,
        margin: f64,
    },
}

pub(crate) struct Metrics {
    calls: CallCounter,
    sent: Counter,
    won: Counter,
    budget_exhausted: Counter,
}

/// The latest time any call of the layer read from the clock.
///
/// Reading the clock costs about as much as the rest of a call through the layer; a call
/// answered at its first poll never reads it, and counts at this time instead. Calls that
/// wait read the clock (their hedge timer needs it) and move it on, and so does every 128th
/// request of a second. A time that lags makes the budget count a request a little earlier
/// than it came, which only ever lets fewer hedges out.
struct Clock {
    origin: Instant,
    nanos: AtomicU64,
}

impl Clock {
    fn advance(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        self.nanos
            .fetch_max(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The second (from the origin) of the latest time read.
    fn second(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed) / 1_000_000_000
    }
}

/// No hedge delay known yet.
const UNKNOWN: u64 = u64::MAX;

/// The layer's settings and counters.
pub(crate) struct State {
    pub(crate) name: Arc<str>,
    max_attempts: AtomicU32,
    delay: DelaySource,
    /// The configuration in force: read and replaced by reloads, never by calls.
    config: Mutex<HedgeConfig>,
    /// The hedge delay as of the latest clock read, in nanoseconds, or `UNKNOWN`.
    current_delay: AtomicU64,
    /// First attempts answered at their first poll since the latest clock read, for the
    /// latency estimate.
    at_once: AtomicU64,
    budget: Budget,
    metrics: Metrics,
    clock: Clock,
}

impl State {
    pub(crate) fn new(config: &HedgeConfig) -> Self {
        let scope = MetricScope::new(config.name.clone());
        let (delay, current) = match config.delay {
            Delay::Fixed(delay) => (DelaySource::Fixed, nanos(delay)),
            Delay::Percentile(p) => (
                DelaySource::Percentile {
                    estimate: LatencyEstimate::new(p.window)
                        .expect("a window checked by the config"),
                    // Forty refreshes per window: the delay follows latency within a fortieth
                    // of the window, for one scan of the histogram each time.
                    quantile: CachedQuantile::new(p.quantile, p.min_samples, p.window / 40),
                    largest: (bounding_samples(p.quantile) < p.min_samples).then(|| {
                        CachedQuantile::new(1.0, bounding_samples(p.quantile), p.window / 40)
                    }),
                    median: (p.margin > 0.0).then(|| {
                        let fewest = p.min_samples.min(bounding_samples(p.quantile));
                        CachedQuantile::new(0.5, fewest, p.window / 40)
                    }),
                    margin: p.margin,
                },
                UNKNOWN,
            ),
        };
        let origin = Instant::now();
        Self {
            name: config.name.clone().into(),
            max_attempts: AtomicU32::new(config.max_attempts),
            delay,
            config: Mutex::new(config.clone()),
            current_delay: AtomicU64::new(current),
            at_once: AtomicU64::new(0),
            budget: Budget::new(&config.budget, origin),
            clock: Clock {
                origin,
                nanos: AtomicU64::new(0),
            },
            metrics: Metrics {
                calls: scope.call_counter("seawall_hedge_calls_total", &[]),
                sent: scope.counter("seawall_hedge_sent_total", &[]),
                won: scope.counter("seawall_hedge_won_total", &[]),
                budget_exhausted: scope.counter("seawall_hedge_budget_exhausted_total", &[]),
            },
        }
    }

    /// The most attempts per call, the first included.
    #[inline]
    pub(crate) fn max_attempts(&self) -> u32 {
        self.max_attempts.load(Ordering::Relaxed)
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> HedgeConfig {
        self.config.lock().expect("never poisoned").clone()
    }

    /// Whether `config` can be applied live: the same name, the same kind of delay (a
    /// percentile's estimate, with its window, is built with the layer, and so is its cached
    /// quantile) and the same budget window (its buckets).
    pub(crate) fn check_reload(&self, config: &HedgeConfig) -> Result<(), ConfigError> {
        check_reload(&self.config.lock().expect("never poisoned"), config)
    }

    /// Applies `config` from the next call on: the fixed delay, the most attempts and the
    /// budget ratio; refused, with nothing changed, as [`check_reload`](Self::check_reload)
    /// says. Calls already waiting keep the delay they started with.
    pub(crate) fn reload(&self, config: &HedgeConfig) -> Result<(), ConfigError> {
        let mut live = self.config.lock().expect("never poisoned");
        check_reload(&live, config)?;
        if let Delay::Fixed(delay) = config.delay {
            self.current_delay.store(nanos(delay), Ordering::Relaxed);
        }
        self.max_attempts
            .store(config.max_attempts, Ordering::Relaxed);
        self.budget.set_ratio(config.budget.ratio);
        *live = config.clone();
        tracing::info!(name = %self.name, "hedge reloaded");
        Ok(())
    }

    /// Counts a call (it earns the budget its share of a hedge) and returns the delay after
    /// which it may be hedged; `None` while a percentile has too few samples.
    #[inline]
    pub(crate) fn admit(&self) -> Option<Duration> {
        self.metrics.calls.increment(1);
        if self
            .budget
            .deposit_in(self.clock.second())
            .is_multiple_of(128)
        {
            self.now();
        }
        let mut delay = self.current_delay.load(Ordering::Relaxed);
        if delay == UNKNOWN && self.records_latency() {
            // No percentile yet, or none since the layer was last busy: ask again now.
            self.now();
            delay = self.current_delay.load(Ordering::Relaxed);
        }
        (delay != UNKNOWN).then(|| Duration::from_nanos(delay))
    }

    /// The time now, read from the clock; the calls answered at once since the last read go
    /// into the estimate, and the delay is brought up to date.
    pub(crate) fn now(&self) -> Instant {
        let now = Instant::now();
        self.clock.advance(now);
        if let DelaySource::Percentile {
            estimate,
            quantile,
            largest,
            median,
            margin,
        } = &self.delay
        {
            let at_once = self.at_once.swap(0, Ordering::Relaxed);
            if at_once > 0 {
                let calls = u32::try_from(at_once).unwrap_or(u32::MAX);
                estimate.record_many_at(Duration::ZERO, calls, now);
            }
            let delay = base(estimate, quantile, largest, now).map_or(UNKNOWN, |(q, _)| {
                let median = median.as_ref().and_then(|m| m.get(estimate, now));
                nanos(median.map_or(q, |m| q + q.saturating_sub(m).mul_f64(*margin)))
            });
            self.current_delay.store(delay, Ordering::Relaxed);
        }
        now
    }

    /// Records a first attempt answered at its first poll: it took no time worth a clock
    /// read.
    #[inline]
    pub(crate) fn record_at_once(&self) {
        if self.records_latency() {
            self.at_once.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The delay after which a call made now would be hedged.
    pub(crate) fn delay_now(&self) -> Option<Duration> {
        self.now();
        match self.current_delay.load(Ordering::Relaxed) {
            UNKNOWN => None,
            delay => Some(Duration::from_nanos(delay)),
        }
    }

    /// Whether calls feed a latency estimate.
    #[inline]
    pub(crate) fn records_latency(&self) -> bool {
        matches!(self.delay, DelaySource::Percentile { .. })
    }

    /// Records how long the first attempt of a call took (or, when a hedge answered first,
    /// had taken by then).
    pub(crate) fn record_latency(&self, latency: Duration, now: Instant) {
        if let DelaySource::Percentile { estimate, .. } = &self.delay {
            estimate.record_at(latency, now);
        }
    }

    /// Records a first attempt that a hedge answered before, `elapsed` after it was sent: it
    /// took at least that long.
    ///
    /// While the delay comes from the window's largest latency, one such sample would become
    /// the largest and raise the delay, and the next hedge's sample it again: it counts as
    /// that largest latency instead, which holds the delay and never raises it (answers do).
    /// Once the quantile has its samples it counts with its time, as before: the quantile's
    /// rank leaves room for `1 - q` of the window above it.
    pub(crate) fn record_hedged(&self, elapsed: Duration, now: Instant) {
        if let DelaySource::Percentile {
            estimate,
            quantile,
            largest,
            ..
        } = &self.delay
        {
            let at = match base(estimate, quantile, largest, now) {
                Some((top, true)) => elapsed.min(top),
                _ => elapsed,
            };
            estimate.record_at(at, now);
        }
    }

    /// The `q` quantile of recent first-attempt latency, when the delay is a percentile.
    pub(crate) fn latency_quantile(&self, q: f64) -> Option<Duration> {
        match &self.delay {
            DelaySource::Fixed => None,
            DelaySource::Percentile { estimate, .. } => {
                let now = self.now();
                estimate.quantile_at(q, now)
            }
        }
    }

    /// Records whether a hedge answered before its call's first attempt or lost to it.
    pub(crate) fn hedge_decided(&self, won: bool) {
        self.budget.hedge_decided(won);
    }

    /// Takes a hedge from the budget.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        self.budget.withdraw_at(now)
    }

    pub(crate) fn budget_available(&self) -> u64 {
        self.budget.available_at(Instant::now())
    }
}

fn check_reload(live: &HedgeConfig, config: &HedgeConfig) -> Result<(), ConfigError> {
    ConfigError::same_name(&config.name, &live.name)?;
    match (&config.delay, &live.delay) {
        (Delay::Fixed(_), Delay::Fixed(_)) => {}
        (Delay::Percentile(new), Delay::Percentile(old)) if new == old => {}
        (new, old) => {
            return Err(ConfigError::needs_restart(
                "delay",
                format_args!("{new:?}"),
                format_args!("{old:?}"),
            ));
        }
    }
    if config.budget.window != live.budget.window {
        return Err(ConfigError::needs_restart(
            "budget.window",
            format_args!("{:?}", config.budget.window),
            format_args!("{:?}", live.budget.window),
        ));
    }
    Ok(())
}

/// The fewest samples whose largest is at or above the `q` quantile with 95 % confidence,
/// whatever the distribution (all `n` fall below it with probability `qⁿ`): 59 for the 95th
/// percentile.
fn bounding_samples(q: f64) -> u64 {
    ((0.05f64.ln() / q.ln()).ceil() as u64).max(1)
}

/// The latency the delay is taken from: the quantile, or, while the window holds fewer samples
/// than the quantile waits for and enough to bound it, the window's largest (`true`).
fn base(
    estimate: &LatencyEstimate,
    quantile: &CachedQuantile,
    largest: &Option<CachedQuantile>,
    now: Instant,
) -> Option<(Duration, bool)> {
    if let Some(q) = quantile.get(estimate, now) {
        return Some((q, false));
    }
    let top = largest.as_ref()?.get(estimate, now)?;
    Some((top, true))
}

fn nanos(delay: Duration) -> u64 {
    u64::try_from(delay.as_nanos()).unwrap_or(UNKNOWN - 1)
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts())
            .finish_non_exhaustive()
    }
}

/// Everything one layer's services share: the state, the hooks and the policy.
pub(crate) struct Shared<P> {
    pub(crate) state: Arc<State>,
    pub(crate) hooks: Hooks,
    pub(crate) policy: Arc<P>,
}

impl<P> Clone for Shared<P> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            hooks: self.hooks.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<P> Shared<P> {
    pub(crate) fn hedge_sent(&self, attempt: u32, waited: Duration) {
        let name = &*self.state.name;
        self.state.metrics.sent.increment(1);
        tracing::trace!(name, attempt, ?waited, "hedge sent");
        self.hooks.on_hedge.call(HedgeEvent {
            name,
            attempt,
            waited,
        });
    }

    pub(crate) fn hedge_won(&self, attempt: u32, elapsed: Duration) {
        let name = &*self.state.name;
        self.state.metrics.won.increment(1);
        tracing::trace!(name, attempt, ?elapsed, "hedge answered first");
        self.hooks.on_hedge_won.call(HedgeWonEvent {
            name,
            attempt,
            elapsed,
        });
    }

    pub(crate) fn budget_exhausted(&self, attempt: u32) {
        let name = &*self.state.name;
        self.state.metrics.budget_exhausted.increment(1);
        tracing::debug!(name, attempt, "hedge budget exhausted");
        self.hooks
            .on_budget_exhausted
            .call(BudgetExhaustedEvent { name, attempt });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PercentileDelay;
    use proptest::prelude::*;

    /// The sample of rank ⌈q·n⌉ of `samples`.
    fn rank(samples: &[Duration], q: f64) -> Duration {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let n = sorted.len();
        sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
    }

    /// The delay's base as the docs state it: the 95th percentile from 100 samples, the
    /// largest from 59, none below; `true` when it is the largest.
    fn model_base(samples: &[Duration]) -> Option<(Duration, bool)> {
        match samples.len() {
            n if n >= 100 => Some((rank(samples, 0.95), false)),
            n if n >= 59 => Some((rank(samples, 1.0), true)),
            _ => None,
        }
    }

    /// Within the estimate's bucket error (1/32), twice over for the margin's arithmetic.
    fn near(actual: Duration, model: Duration) -> bool {
        actual.abs_diff(model) <= model / 16 + Duration::from_micros(1)
    }

    proptest! {
        #[test]
        fn the_delay_follows_the_model_of_few_and_many_samples(
            // Batches of first attempts that answered after `ms`, or (`hedged`) that a hedge
            // beat after `ms`.
            steps in prop::collection::vec((any::<bool>(), 1u64..60, 1usize..12), 1..24),
        ) {
            let runtime = seawall_core::testing::paused_runtime();
            runtime.block_on(async {
                // An hour's window, its delay refreshed every 90 s: 24 steps stay in it.
                let window = Duration::from_secs(3600);
                let config = HedgeConfig::builder()
                    .percentile(PercentileDelay::new().window(window))
                    .build()
                    .unwrap();
                let state = State::new(&config);
                let mut samples: Vec<Duration> = Vec::new();
                for (hedged, ms, calls) in steps {
                    let now = Instant::now();
                    let latency = Duration::from_millis(ms);
                    // The base as last refreshed: at most once per period, so once a step.
                    let base = model_base(&samples);
                    for _ in 0..calls {
                        if hedged {
                            state.record_hedged(latency, now);
                            let held = match base {
                                Some((top, true)) => latency.min(top),
                                _ => latency,
                            };
                            samples.push(held);
                        } else {
                            state.record_latency(latency, now);
                            samples.push(latency);
                        }
                    }
                    tokio::time::advance(window / 40).await;
                    let delay = state.delay_now();
                    let model = model_base(&samples).map(|(base, _)| {
                        let median = rank(&samples, 0.5);
                        base + base.saturating_sub(median) / 2
                    });
                    match (delay, model) {
                        (None, None) => {}
                        (Some(delay), Some(model)) => {
                            prop_assert!(near(delay, model), "{} samples: {delay:?} for {model:?}", samples.len());
                        }
                        _ => prop_assert!(false, "{} samples: {delay:?} for {model:?}", samples.len()),
                    }
                }
                Ok(())
            })?;
        }
    }
}
