//! The remaining-budget histogram: how much of its timeout a call had left when it ended.

use std::time::Duration;

use seawall_core::testing::TestRecorder;
use seawall_timeout::TimeoutLayer;
use tokio::time::sleep;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn each_call_records_the_budget_it_had_left() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| {
        TimeoutLayer::builder()
            .name("dep")
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    });
    let downstream = service_fn(|ms: u64| async move {
        if ms > 0 {
            sleep(Duration::from_millis(ms)).await;
        }
        Ok::<_, std::convert::Infallible>(ms)
    });
    for ms in [0, 250, 2000] {
        let _ = layer.layer(downstream).oneshot(ms).await;
    }
    assert_eq!(
        recorder.histogram("seawall_timeout_remaining_seconds", &[("name", "dep")]),
        [1.0, 0.75, 0.0],
        "all of it on the first poll, what was left, none when it timed out"
    );
}
