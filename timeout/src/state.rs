//! What every clone of one layer's services shares: the timeout, the metric handles and the
//! hook. Created once, when the layer is built.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram};
use seawall_core::Hook;
use seawall_core::metrics::MetricScope;

use crate::config::TimeoutConfig;
use crate::event::TimedOutEvent;

/// What every clone of one layer's services shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) completed: Counter,
    pub(crate) timed_out: Counter,
    pub(crate) deadline_exceeded: Counter,
    pub(crate) remaining: Histogram,
    pub(crate) on_timeout: Hook<TimedOutEvent<'static>>,
}

impl Shared {
    pub(crate) fn new(config: &TimeoutConfig, metrics: MetricScope) -> Self {
        const CALLS: &str = "seawall_timeout_calls_total";
        Self {
            name: config.name.clone(),
            timeout: config.timeout,
            completed: metrics.counter(CALLS, &[("result", "completed")]),
            timed_out: metrics.counter(CALLS, &[("result", "timed_out")]),
            deadline_exceeded: metrics.counter(CALLS, &[("result", "deadline_exceeded")]),
            remaining: metrics.histogram("seawall_timeout_remaining_seconds", &[]),
            on_timeout: Hook::default(),
        }
    }
}
