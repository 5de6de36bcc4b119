//! A metrics recorder for measuring layers with a recorder installed: every handle is its own
//! atomics (a counter's total, a gauge's value, a histogram's count and sum), so recording
//! costs what a production exporter's atomic handle costs and allocates nothing.
//!
//! `probe` installs it when `PROBE_RECORDER` is `before` (before the contender is built) or
//! `late` (after it is built, before its first call).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// A recorder whose handles are atomics that nothing reads.
// Not zero-sized: seawall-core tells `metrics`' no-op fallback recorder by its size of zero.
#[derive(Debug, Default)]
pub struct AtomicRecorder {
    registered: AtomicU64,
}

/// Installs an [`AtomicRecorder`] as the global recorder.
pub fn install() {
    metrics::set_global_recorder(AtomicRecorder::default()).expect("no recorder installed yet");
}

#[derive(Debug, Default)]
struct Total(AtomicU64);

impl CounterFn for Total {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Total {
    fn increment(&self, value: f64) {
        self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) + value);
    }

    fn decrement(&self, value: f64) {
        self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) - value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Samples {
    count: AtomicU64,
    sum: Total,
}

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        GaugeFn::increment(&self.sum, value);
    }
}

impl Recorder for AtomicRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        self.registered.fetch_add(1, Ordering::Relaxed);
        Counter::from_arc(Arc::new(Total::default()))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        self.registered.fetch_add(1, Ordering::Relaxed);
        Gauge::from_arc(Arc::new(Total::default()))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        self.registered.fetch_add(1, Ordering::Relaxed);
        Histogram::from_arc(Arc::new(Samples::default()))
    }
}
