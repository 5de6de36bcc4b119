//! The tracker: components report into it, it keeps the overall state.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use metrics::Gauge;
use seawall_core::metrics::MetricScope;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{ComponentConfig, ProbeConfig};
use crate::hysteresis::ComponentState;
use crate::state::HealthState;

/// One service's health: the components that report into it and the overall state.
///
/// Cheap to clone; every clone is the same tracker. Probes and followers started from it stop
/// when the last clone is dropped.
#[derive(Clone)]
pub struct HealthTracker {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    metrics: MetricScope,
    registry: Mutex<Registry>,
    overall: watch::Sender<HealthState>,
}

struct Registry {
    components: Vec<Entry>,
    overall_gauges: [Gauge; 4],
}

struct Entry {
    name: Arc<str>,
    critical: bool,
    state: ComponentState,
    detail: Option<String>,
    since: Instant,
    gauges: [Gauge; 4],
    refresh: Option<Weak<dyn Refresh>>,
}

/// A component that can bring its own state up to date when asked (a rate window whose
/// seconds passed without calls).
pub(crate) trait Refresh: Send + Sync {
    fn refresh(&self);
}

impl fmt::Debug for HealthTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthTracker")
            .field("name", self.inner.metrics.name())
            .field("state", &*self.inner.overall.borrow())
            .finish_non_exhaustive()
    }
}

fn state_gauges(metrics: &MetricScope, component: &str) -> [Gauge; 4] {
    metrics.gauges::<HealthState, 4>("seawall_health_state", &[("component", component)])
}

fn set_gauges(gauges: &[Gauge; 4], current: HealthState) {
    for (gauge, state) in gauges.iter().zip(HealthState::ALL) {
        gauge.set(if state == current { 1.0 } else { 0.0 });
    }
}

impl HealthTracker {
    /// A tracker called `name` (the `name` label of `seawall_health_state`), healthy and with
    /// no components.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        let metrics = MetricScope::new(name);
        let overall_gauges = state_gauges(&metrics, "overall");
        set_gauges(&overall_gauges, HealthState::Healthy);
        Self {
            inner: Arc::new(Inner {
                metrics,
                registry: Mutex::new(Registry {
                    components: Vec::new(),
                    overall_gauges,
                }),
                overall: watch::channel(HealthState::Healthy).0,
            }),
        }
    }

    /// The overall state: the worst of the components, a non-critical one counting as
    /// degraded at worst.
    pub fn state(&self) -> HealthState {
        self.refresh();
        *self.inner.overall.borrow()
    }

    /// Follows the overall state as it changes.
    pub fn subscribe(&self) -> watch::Receiver<HealthState> {
        self.inner.overall.subscribe()
    }

    /// The overall state with every component's state and detail.
    pub fn report(&self) -> HealthReport {
        self.refresh();
        let registry = self.inner.lock();
        let now = Instant::now();
        HealthReport {
            status: *self.inner.overall.borrow(),
            components: registry
                .components
                .iter()
                .map(|e| ComponentReport {
                    name: e.name.to_string(),
                    status: e.state.state(),
                    critical: e.critical,
                    detail: e.detail.clone(),
                    since_seconds: now.saturating_duration_since(e.since).as_secs_f64(),
                })
                .collect(),
        }
    }

    /// Adds a component that code reports into through the returned handle.
    pub fn component(&self, config: ComponentConfig) -> ComponentHandle {
        self.register(config, None)
    }

    pub(crate) fn register(
        &self,
        config: ComponentConfig,
        refresh: Option<Weak<dyn Refresh>>,
    ) -> ComponentHandle {
        let gauges = state_gauges(&self.inner.metrics, &config.name);
        set_gauges(&gauges, HealthState::Healthy);
        let mut registry = self.inner.lock();
        let index = registry.components.len();
        registry.components.push(Entry {
            name: config.name.into(),
            critical: config.critical,
            state: ComponentState::new(config.hysteresis),
            detail: None,
            since: Instant::now(),
            gauges,
            refresh,
        });
        ComponentHandle {
            tracker: Arc::downgrade(&self.inner),
            index,
        }
    }

    /// Runs `check` every `interval` of `config` with its timeout, as the component it names:
    /// `Ok` is a good observation, an error or a timeout an unhealthy one.
    ///
    /// The probe runs on the current tokio runtime until the tracker is dropped.
    pub fn probe<F, Fut, E>(&self, config: ProbeConfig, check: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send,
        E: fmt::Display,
    {
        let handle = self.component(config.component.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(config.interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let outcome = tokio::time::timeout(config.timeout, check()).await;
                let alive = match outcome {
                    Ok(Ok(())) => handle.observe(HealthState::Healthy, None),
                    Ok(Err(err)) => handle.observe(HealthState::Unhealthy, Some(err.to_string())),
                    Err(_) => handle.observe(
                        HealthState::Unhealthy,
                        Some(format!("no answer within {:?}", config.timeout)),
                    ),
                };
                if !alive {
                    break;
                }
            }
        });
    }

    /// Follows `receiver` (a circuit breaker's state, say) as the component `config` names,
    /// taking the state `map` gives each value as it is, without hysteresis.
    ///
    /// The follower runs on the current tokio runtime until the tracker or the sender is
    /// dropped.
    pub fn follow<T, F>(&self, config: ComponentConfig, mut receiver: watch::Receiver<T>, map: F)
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> (HealthState, Option<String>) + Send + 'static,
    {
        let handle = self.component(config);
        tokio::spawn(async move {
            loop {
                let (state, detail) = map(&receiver.borrow_and_update());
                if !handle.set(state, detail) || receiver.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    fn refresh(&self) {
        // The state gauges may go long without a change; a recorder installed after the
        // tracker was made gets them when the state is asked for.
        self.inner.metrics.bind_late();
        let refreshers: Vec<_> = self
            .inner
            .lock()
            .components
            .iter()
            .filter_map(|e| e.refresh.as_ref().and_then(Weak::upgrade))
            .collect();
        for refresher in refreshers {
            refresher.refresh();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(
        &self,
        index: usize,
        detail: Option<String>,
        change: impl FnOnce(&mut ComponentState) -> bool,
    ) {
        let mut registry = self.lock();
        let entry = &mut registry.components[index];
        let before = entry.state.state();
        let changed = change(&mut entry.state);
        if detail.is_some() || entry.state.state() == HealthState::Healthy {
            entry.detail = detail;
        }
        if !changed {
            return;
        }
        let after = entry.state.state();
        entry.since = Instant::now();
        set_gauges(&entry.gauges, after);
        tracing::info!(
            tracker = %self.metrics.name(),
            component = %entry.name,
            from = before.as_str(),
            to = after.as_str(),
            detail = entry.detail.as_deref().unwrap_or(""),
            "health component changed"
        );
        let overall = registry
            .components
            .iter()
            .map(|e| match e.critical {
                true => e.state.state(),
                false => e.state.state().min(HealthState::Degraded),
            })
            .max()
            .unwrap_or(HealthState::Healthy);
        let previous = *self.overall.borrow();
        if overall != previous {
            set_gauges(&registry.overall_gauges, overall);
            tracing::info!(tracker = %self.metrics.name(), from = previous.as_str(), to = overall.as_str(), "health changed");
            self.overall.send_replace(overall);
        }
    }
}

/// Reports one component's observations into its tracker.
#[derive(Debug, Clone)]
pub struct ComponentHandle {
    tracker: Weak<Inner>,
    index: usize,
}

impl ComponentHandle {
    /// A good observation (`Healthy`) or a bad one of that severity, moved through the
    /// component's hysteresis. Returns `false` once the tracker is gone.
    pub fn observe(&self, observation: HealthState, detail: Option<String>) -> bool {
        self.with(detail, |state| state.observe(observation))
    }

    /// Sets the component's state at once, without hysteresis. Returns `false` once the
    /// tracker is gone.
    pub fn set(&self, state: HealthState, detail: Option<String>) -> bool {
        self.with(detail, |s| s.set(state))
    }

    /// Marks the component failed: the service needs a restart. Returns `false` once the
    /// tracker is gone.
    pub fn fail(&self, detail: impl Into<String>) -> bool {
        self.with(Some(detail.into()), |s| s.observe(HealthState::Failed))
    }

    fn with(
        &self,
        detail: Option<String>,
        change: impl FnOnce(&mut ComponentState) -> bool,
    ) -> bool {
        match self.tracker.upgrade() {
            Some(inner) => {
                inner.update(self.index, detail, change);
                true
            }
            None => false,
        }
    }
}

/// The overall state with every component's, as served on the health endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The overall state.
    pub status: HealthState,
    /// Every component, in the order they were added.
    pub components: Vec<ComponentReport>,
}

/// One component in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentReport {
    /// The component's name.
    pub name: String,
    /// Its state.
    pub status: HealthState,
    /// Whether it can make the whole service unhealthy.
    pub critical: bool,
    /// What its last bad observation said, until it is healthy again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How long it has been in its state.
    pub since_seconds: f64,
}

impl HealthReport {
    /// How long a component has been in its state.
    pub fn since(&self, component: &str) -> Option<Duration> {
        self.components
            .iter()
            .find(|c| c.name == component)
            .map(|c| Duration::from_secs_f64(c.since_seconds))
    }
}
