//! The throttle's counters under contention, on a multi-thread runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Response;
use seawall_core::classify::HttpStatus;
use seawall_core::testing::TestRecorder;
use seawall_core::{Rejected, RejectionKind, rejected};
use seawall_throttle::ThrottleLayer;
use tower::{Layer, ServiceExt, service_fn};

const TASKS: usize = 8;
const CALLS: usize = 5_000;

fn status_of(n: usize) -> u16 {
    match n % 4 {
        0 => 200,
        1 => 503,
        2 => 429,
        _ => 404,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_count_is_lost_or_made_up_under_contention() {
    // A window of an hour has ticks of minutes: nothing decays while the test runs, so every
    // count must be exact.
    let recorder = TestRecorder::new();
    let (layer, handle) = recorder.install_for(|| {
        ThrottleLayer::builder()
            .window(Duration::from_secs(3600))
            .max_window(Duration::from_secs(3600))
            .seed(5)
            .build()
            .unwrap()
            .pair()
    });
    let layer = layer.classify(HttpStatus::default().ignoring(http::StatusCode::NOT_FOUND));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let svc = layer.layer(service_fn(|n: usize| async move {
                tokio::task::yield_now().await;
                Ok::<_, std::convert::Infallible>(
                    Response::builder().status(status_of(n)).body(()).unwrap(),
                )
            }));
            tokio::spawn(async move {
                let mut throttled = 0;
                for n in 0..CALLS {
                    match svc.clone().oneshot(task + n).await {
                        Ok(_) => {}
                        Err(err) => {
                            assert_eq!(
                                rejected(&*err).map(Rejected::kind),
                                Some(RejectionKind::Throttled)
                            );
                            throttled += 1;
                        }
                    }
                }
                throttled
            })
        })
        .collect();
    let mut throttled = 0;
    for task in tasks {
        throttled += task.await.unwrap();
    }
    let calls = |result| {
        recorder.counter(
            "seawall_throttle_calls_total",
            &[("name", "throttle"), ("result", result)],
        )
    };
    let counts = handle.counts();
    assert_eq!(calls("rejected"), throttled);
    assert_eq!(
        calls("success") + calls("overload") + calls("ignored") + calls("rejected"),
        (TASKS * CALLS) as u64
    );
    assert_eq!(
        counts.requests,
        (calls("success") + calls("overload") + calls("rejected")) as f64
    );
    assert_eq!(counts.accepts, calls("success") as f64);
    // Half of what reaches the downstream is refused: p settles near 1 − 2 × accepted share.
    let p = handle.rejection_probability();
    assert!((0.0..1.0).contains(&p), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_decays_keep_the_counts_sane() {
    // Ticks of under a millisecond: calls race to decay the window all the time.
    let (layer, handle) = ThrottleLayer::builder()
        .window(Duration::from_millis(10))
        .min_requests(1)
        .build()
        .unwrap()
        .pair();
    let layer = layer.classify(HttpStatus::default());
    let made = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let svc = layer.layer(service_fn(|n: usize| async move {
                Ok::<_, std::convert::Infallible>(
                    Response::builder().status(status_of(n)).body(()).unwrap(),
                )
            }));
            let (handle, made) = (handle.clone(), made.clone());
            tokio::spawn(async move {
                for n in 0..CALLS {
                    // Counted before the call: a call another task's window has recorded is
                    // always counted here already, so the check below cannot race it.
                    made.fetch_add(1, Ordering::Relaxed);
                    let _ = svc.clone().oneshot(n).await;
                    if n % 64 == 0 {
                        let counts = handle.counts();
                        assert!(counts.accepts <= counts.requests, "{counts:?}");
                        assert!(counts.requests <= made.load(Ordering::Relaxed) as f64);
                        let p = handle.rejection_probability();
                        assert!((0.0..1.0).contains(&p), "{p}");
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let counts = handle.counts();
    assert!(counts.accepts <= counts.requests, "{counts:?}");
}
