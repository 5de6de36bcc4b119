//! The call-duration histogram: every call the breaker lets through is timed, whether or not
//! slow calls are tracked; rejected calls are not.

use std::time::Duration;

use seawall_circuit_breaker::CircuitBreakerLayer;
use seawall_core::BoxError;
use seawall_core::testing::TestRecorder;
use tokio::time::sleep;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn call_durations_go_to_a_histogram_without_slow_call_tracking() {
    let recorder = TestRecorder::new();
    let (layer, handle) = recorder.install_for(|| {
        CircuitBreakerLayer::builder()
            .name("dep")
            .count_window(2)
            .minimum_calls(2)
            .noise_margin(0.0)
            .build()
            .unwrap()
            .pair()
    });
    let downstream = service_fn(|(ms, ok): (u64, bool)| async move {
        sleep(Duration::from_millis(ms)).await;
        if ok {
            Ok(ms)
        } else {
            Err(BoxError::from("boom"))
        }
    });
    for call in [(20, true), (300, false)] {
        let _ = layer.layer(downstream).oneshot(call).await;
    }
    assert!(handle.state().rejects());
    let _ = layer.layer(downstream).oneshot((5, true)).await;
    let durations = recorder.histogram(
        "seawall_circuit_breaker_call_duration_seconds",
        &[("name", "dep")],
    );
    assert_eq!(durations, [0.02, 0.3], "the rejected call is not timed");
    assert!(
        recorder
            .description("seawall_circuit_breaker_call_duration_seconds")
            .is_some()
    );
}
