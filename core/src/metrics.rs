//! Registering a layer's metric handles once, when the layer is built.
//!
//! A layer never looks a metric up by name per call: it keeps the [`Counter`], [`Gauge`] and
//! [`Histogram`] handles this module registers with the recorder in place at build time (the
//! global one, or a local one in tests), every one labelled `name = <layer instance>`.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata};

/// The metric handles of one layer instance are registered through this.
#[derive(Debug, Clone)]
pub struct MetricScope {
    name: Arc<str>,
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

impl MetricScope {
    /// A scope whose metrics carry the label `name = <name>`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self { name: name.into() }
    }

    /// The layer instance's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Registers the counter `metric` with the extra `labels`.
    pub fn counter(&self, metric: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        let key = self.key(metric, labels);
        metrics::with_recorder(|recorder| recorder.register_counter(&key, &METADATA))
    }

    /// Registers the gauge `metric` with the extra `labels`.
    pub fn gauge(&self, metric: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        let key = self.key(metric, labels);
        metrics::with_recorder(|recorder| recorder.register_gauge(&key, &METADATA))
    }

    /// Registers the histogram `metric` with the extra `labels`.
    pub fn histogram(&self, metric: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        let key = self.key(metric, labels);
        metrics::with_recorder(|recorder| recorder.register_histogram(&key, &METADATA))
    }

    fn key(&self, metric: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels = std::iter::once(Label::new("name", self.name.to_string()))
            .chain(labels.iter().map(|&(k, v)| Label::new(k, v.to_owned())))
            .collect::<Vec<_>>();
        Key::from_parts(metric, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestRecorder;

    #[test]
    fn handles_carry_the_layer_name_and_extra_labels() {
        let recorder = TestRecorder::new();
        let (counter, gauge) = recorder.install_for(|| {
            let scope = MetricScope::new("payments");
            (
                scope.counter("seawall_test_calls_total", &[("result", "ok")]),
                scope.gauge("seawall_test_level", &[]),
            )
        });
        counter.increment(2);
        gauge.set(1.0);
        let labels = [("name", "payments"), ("result", "ok")];
        assert_eq!(recorder.counter("seawall_test_calls_total", &labels), 2);
        assert_eq!(
            recorder.counter("seawall_test_calls_total", &[("name", "other")]),
            0
        );
        assert_eq!(
            recorder.gauge("seawall_test_level", &[("name", "payments")]),
            Some(1.0)
        );
        assert_eq!(
            recorder.gauge("seawall_test_level", &[("name", "payments")]),
            Some(1.0)
        );
    }
}
