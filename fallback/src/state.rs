//! What every clone of one layer's services shares: the source, the trigger, the metric
//! handles and the hook. Created once, when the layer is built.

use std::sync::Arc;

use metrics::Counter;
use seawall_core::Hook;
use seawall_core::metrics::{CallCounter, MetricScope};

use crate::event::FallbackEvent;
use crate::trigger::Cause;

/// What every clone of one layer's services shares.
#[derive(Clone)]
pub(crate) struct Shared<Src, W> {
    pub(crate) name: Arc<str>,
    pub(crate) source: Src,
    pub(crate) trigger: W,
    pub(crate) calls: CallCounter,
    fired: [Counter; Cause::ALL.len()],
    pub(crate) on_fallback: Hook<FallbackEvent<'static>>,
}

impl<Src, W> Shared<Src, W> {
    pub(crate) fn new(name: Arc<str>, source: Src, trigger: W, metrics: &MetricScope) -> Self {
        Self {
            name,
            source,
            trigger,
            calls: metrics.call_counter("seawall_fallback_calls_total", &[]),
            fired: metrics.counters::<Cause, { Cause::ALL.len() }>("seawall_fallback_total"),
            on_fallback: Hook::default(),
        }
    }

    #[cold]
    pub(crate) fn fired(&self, cause: Cause) {
        self.fired[cause.index()].increment(1);
        tracing::debug!(name = %self.name, cause = cause.as_str(), "fallback answered");
        self.on_fallback.call(FallbackEvent {
            name: &self.name,
            cause,
        });
    }
}
