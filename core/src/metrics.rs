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
    pub fn counter(
        &self,
        metric: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Counter {
        let key = self.key(metric, labels);
        metrics::with_recorder(|recorder| recorder.register_counter(&key, &METADATA))
    }

    /// Registers the gauge `metric` with the extra `labels`.
    pub fn gauge(&self, metric: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        let key = self.key(metric, labels);
        metrics::with_recorder(|recorder| recorder.register_gauge(&key, &METADATA))
    }

    /// Registers the histogram `metric` with the extra `labels`.
    pub fn histogram(
        &self,
        metric: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Histogram {
        let key = self.key(metric, labels);
        metrics::with_recorder(|recorder| recorder.register_histogram(&key, &METADATA))
    }

    fn key(&self, metric: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        let labels = std::iter::once(Label::new("name", self.name.to_string()))
            .chain(labels.iter().map(|&(k, v)| Label::new(k, v)))
            .collect::<Vec<_>>();
        Key::from_parts(metric, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn handles_carry_the_layer_name_and_extra_labels() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let scope = MetricScope::new("payments");
            let counter = scope.counter("seawall_test_calls_total", &[("result", "ok")]);
            counter.increment(2);
        });
        let snapshot = snapshotter.snapshot().into_vec();
        assert_eq!(snapshot.len(), 1);
        let (key, _, _, value) = &snapshot[0];
        assert_eq!(key.key().name(), "seawall_test_calls_total");
        let labels: Vec<_> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        assert_eq!(
            labels,
            [
                ("name".to_owned(), "payments".to_owned()),
                ("result".to_owned(), "ok".to_owned())
            ]
        );
        assert_eq!(value, &DebugValue::Counter(2));
    }
}
