//! What every clone of one hedge layer shares: the delay source, the budget, the metric
//! handles and the hooks. Created once, when the layer is built.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use seawall_core::latency::{CachedQuantile, LatencyEstimate};
use seawall_core::metrics::MetricScope;
use tokio::time::Instant;

use crate::budget::Budget;
use crate::config::{Delay, HedgeConfig};
use crate::event::{BudgetExhaustedEvent, HedgeEvent, HedgeWonEvent, Hooks};

/// Where a call's hedge delay comes from.
enum DelaySource {
    Fixed(Duration),
    Percentile {
        estimate: LatencyEstimate,
        quantile: CachedQuantile,
    },
}

pub(crate) struct Metrics {
    calls: Counter,
    sent: Counter,
    won: Counter,
    budget_exhausted: Counter,
}

/// The layer's settings and counters.
pub(crate) struct State {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    delay: DelaySource,
    budget: Budget,
    metrics: Metrics,
}

impl State {
    pub(crate) fn new(config: &HedgeConfig) -> Self {
        let scope = MetricScope::new(config.name.clone());
        let delay = match config.delay {
            Delay::Fixed(delay) => DelaySource::Fixed(delay),
            Delay::Percentile(p) => DelaySource::Percentile {
                estimate: LatencyEstimate::new(p.window).expect("a window checked by the config"),
                // Forty refreshes per window: the delay follows latency within a fortieth of
                // the window, for one scan of the histogram each time.
                quantile: CachedQuantile::new(p.quantile, p.min_samples, p.window / 40),
            },
        };
        Self {
            name: config.name.clone(),
            max_attempts: config.max_attempts,
            delay,
            budget: Budget::new(&config.budget),
            metrics: Metrics {
                calls: scope.counter("seawall_hedge_calls_total", &[]),
                sent: scope.counter("seawall_hedge_sent_total", &[]),
                won: scope.counter("seawall_hedge_won_total", &[]),
                budget_exhausted: scope.counter("seawall_hedge_budget_exhausted_total", &[]),
            },
        }
    }

    /// Counts a call made at `now` (it earns the budget its share of a hedge) and returns the
    /// delay after which it may be hedged; `None` while a percentile has too few samples.
    #[inline]
    pub(crate) fn admit(&self, now: Instant) -> Option<Duration> {
        self.metrics.calls.increment(1);
        self.budget.deposit_at(now);
        self.delay_at(now)
    }

    pub(crate) fn delay_at(&self, now: Instant) -> Option<Duration> {
        match &self.delay {
            DelaySource::Fixed(delay) => Some(*delay),
            DelaySource::Percentile { estimate, quantile } => quantile.get(estimate, now),
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

    /// The `q` quantile of recent first-attempt latency, when the delay is a percentile.
    pub(crate) fn latency_quantile(&self, q: f64) -> Option<Duration> {
        match &self.delay {
            DelaySource::Fixed(_) => None,
            DelaySource::Percentile { estimate, .. } => estimate.quantile(q),
        }
    }

    /// Takes a hedge from the budget.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        self.budget.withdraw_at(now)
    }

    pub(crate) fn budget_available(&self) -> u64 {
        self.budget.available_at(Instant::now())
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
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
        if let Some(hook) = &self.hooks.on_hedge {
            hook(HedgeEvent {
                name,
                attempt,
                waited,
            });
        }
    }

    pub(crate) fn hedge_won(&self, attempt: u32, elapsed: Duration) {
        let name = &*self.state.name;
        self.state.metrics.won.increment(1);
        tracing::trace!(name, attempt, ?elapsed, "hedge answered first");
        if let Some(hook) = &self.hooks.on_hedge_won {
            hook(HedgeWonEvent {
                name,
                attempt,
                elapsed,
            });
        }
    }

    pub(crate) fn budget_exhausted(&self, attempt: u32) {
        let name = &*self.state.name;
        self.state.metrics.budget_exhausted.increment(1);
        tracing::debug!(name, attempt, "hedge budget exhausted");
        if let Some(hook) = &self.hooks.on_budget_exhausted {
            hook(BudgetExhaustedEvent { name, attempt });
        }
    }
}
