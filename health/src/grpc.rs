//! Feeding tonic-health's `grpc.health.v1` service.

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::tracker::HealthTracker;

/// Keeps the overall service (`""`) of `reporter` `SERVING` while `tracker` is ready and
/// `NOT_SERVING` otherwise, until the tracker is dropped. Runs on the current tokio runtime.
pub fn serve_status(tracker: &HealthTracker, reporter: HealthReporter) {
    let mut states = tracker.subscribe();
    tokio::spawn(async move {
        loop {
            let status = match states.borrow_and_update().is_ready() {
                true => ServingStatus::Serving,
                false => ServingStatus::NotServing,
            };
            reporter.set_service_status("", status).await;
            if states.changed().await.is_err() {
                break;
            }
        }
    });
}
