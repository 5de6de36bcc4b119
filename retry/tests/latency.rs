//! The per-call histograms: total duration (every attempt and wait) and attempts per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use seawall_core::BoxError;
use seawall_core::backoff::{Backoff, Jitter};
use seawall_core::testing::TestRecorder;
use seawall_retry::RetryLayer;
use tokio::time::sleep;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn each_call_records_its_total_duration_and_attempts() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| {
        RetryLayer::builder()
            .name("dep")
            .max_attempts(3)
            .backoff(
                Backoff::constant(Duration::from_millis(50))
                    .jitter(Jitter::None)
                    .build()
                    .unwrap(),
            )
            .no_budget()
            .build()
            .unwrap()
    });
    // Each call takes 100 ms; the first one fails.
    let calls = Arc::new(AtomicU32::new(0));
    let downstream = service_fn(move |n: u64| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            sleep(Duration::from_millis(100)).await;
            if first {
                Err(BoxError::from("boom"))
            } else {
                Ok(n)
            }
        }
    });
    let svc = layer.layer(downstream);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
    assert_eq!(svc.oneshot(2).await.unwrap(), 2);
    let labels = [("name", "dep")];
    assert_eq!(
        recorder.histogram("seawall_retry_call_attempts", &labels),
        [2.0, 1.0]
    );
    assert_eq!(
        recorder.histogram("seawall_retry_call_duration_seconds", &labels),
        [0.25, 0.1],
        "attempts and the wait between them"
    );
}
