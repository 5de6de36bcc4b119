//! What every clone of one layer's services shares: the configuration, the schedule, the
//! injector and its capacity model, the metric handles and the hook. Created once, when the
//! layer is built.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::Counter;
use seawall_core::metrics::MetricScope;
use seawall_core::{BoxError, Hook, Rejected, RejectionKind};
use tokio::time::Instant;

use crate::config::ChaosConfig;
use crate::event::{Fault, InjectedEvent};
use crate::injector::{Injector, Schedule};

/// What every clone of one layer's services shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) config: ChaosConfig,
    pub(crate) enabled: Arc<AtomicBool>,
    pub(crate) schedule: Schedule,
    pub(crate) injector: Arc<Mutex<Injector>>,
    injected: [Counter; Fault::ALL.len()],
    pub(crate) on_injected: Hook<InjectedEvent<'static>>,
}

impl Shared {
    pub(crate) fn new(config: ChaosConfig, metrics: &MetricScope, epoch: Instant) -> Self {
        Self {
            name: config.name.clone().into(),
            enabled: Arc::new(AtomicBool::new(config.enabled)),
            schedule: Schedule::new(&config, epoch),
            injector: Arc::new(Mutex::new(Injector::new(&config, epoch))),
            injected: metrics
                .counters::<Fault, { Fault::ALL.len() }>("seawall_chaos_injected_total"),
            on_injected: Hook::default(),
            config,
        }
    }

    /// Restarts the schedule and the capacity model at `epoch`.
    pub(crate) fn restart_at(&mut self, epoch: Instant) {
        self.schedule = Schedule::new(&self.config, epoch);
        self.injector = Arc::new(Mutex::new(Injector::new(&self.config, epoch)));
    }

    pub(crate) fn queued(&self) -> usize {
        self.lock().queued(Instant::now())
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Injector> {
        self.injector.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn injected(&self, fault: Fault) {
        self.injected[fault as usize].increment(1);
        tracing::trace!(name = %self.name, fault = fault.as_str(), "injected");
        self.on_injected.call(InjectedEvent {
            name: &self.name,
            fault,
        });
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn error(&self, fault: Fault) -> BoxError {
        self.injected(fault);
        tracing::debug!(name = %self.name, fault = fault.as_str(), "injected failure");
        Rejected::new(RejectionKind::Injected, self.name.clone()).into()
    }
}
