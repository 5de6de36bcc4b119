//! Failures an outlier set marked as their endpoint's own count for nothing by default, on the
//! paused clock, with real `http::Response`s and errors.

use std::time::Duration;

use http::Response;
use seawall_circuit_breaker::{CircuitBreakerConfigBuilder, CircuitBreakerLayer, CircuitState};
use seawall_core::BoxError;
use seawall_core::classify::{DefaultClassify, EndpointFault, EndpointFaultError};
use tower::{Layer, ServiceExt, service_fn};

/// What the service under the breaker answers.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ok,
    Status500 { marked: bool },
    Error { marked: bool },
}

async fn answer(answer: Answer) -> Result<Response<()>, BoxError> {
    match answer {
        Answer::Ok => Ok(Response::new(())),
        Answer::Status500 { marked } => {
            let mut response = Response::builder().status(500).body(()).unwrap();
            if marked {
                response.extensions_mut().insert(EndpointFault);
            }
            Ok(response)
        }
        Answer::Error { marked } => {
            let err: BoxError = "connection reset".into();
            Err(if marked {
                EndpointFaultError::new(err).into()
            } else {
                err
            })
        }
    }
}

fn builder() -> CircuitBreakerConfigBuilder<CircuitBreakerLayer> {
    CircuitBreakerLayer::builder()
        .name("set")
        .count_window(10)
        .minimum_calls(5)
        .failure_rate_threshold(0.5)
        .noise_margin(0.0)
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(10))
        .open_jitter(0.0)
}

/// The breaker's state after `calls` go through it, with its window's calls and failures.
async fn after(endpoint_fault_is_failure: bool, calls: &[Answer]) -> (CircuitState, u64, u64) {
    let (layer, handle) = builder()
        .endpoint_fault_is_failure(endpoint_fault_is_failure)
        .build()
        .unwrap()
        .pair();
    let svc = layer.classify(DefaultClassify).layer(service_fn(answer));
    for &call in calls {
        let _ = svc.clone().oneshot(call).await;
    }
    let counts = handle.counts();
    (handle.state(), counts.calls, counts.failures)
}

#[tokio::test(start_paused = true)]
async fn marked_failures_count_for_nothing() {
    let marked = [
        Answer::Status500 { marked: true },
        Answer::Error { marked: true },
    ];
    let calls: Vec<Answer> = marked.iter().copied().cycle().take(20).collect();
    assert_eq!(after(false, &calls).await, (CircuitState::Closed, 0, 0));
    // Four in five fail, each marked, with a success between: the successes alone count.
    let mut mixed = Vec::new();
    for _ in 0..5 {
        mixed.extend(marked.iter().chain(&marked).copied());
        mixed.push(Answer::Ok);
    }
    assert_eq!(after(false, &mixed).await, (CircuitState::Closed, 5, 0));
}

#[tokio::test(start_paused = true)]
async fn unmarked_failures_still_open_it() {
    for unmarked in [
        Answer::Status500 { marked: false },
        Answer::Error { marked: false },
    ] {
        let (state, _, _) = after(false, &[unmarked; 3]).await;
        assert_eq!(state, CircuitState::Open, "{unmarked:?}");
    }
    // A marked failure between them neither counts nor breaks the run.
    let calls = [
        Answer::Error { marked: false },
        Answer::Status500 { marked: true },
        Answer::Error { marked: false },
        Answer::Error { marked: true },
        Answer::Status500 { marked: false },
    ];
    assert_eq!(after(false, &calls).await.0, CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn marked_failures_count_when_configured() {
    for marked in [
        Answer::Status500 { marked: true },
        Answer::Error { marked: true },
    ] {
        let (state, _, failures) = after(true, &[marked; 3]).await;
        assert_eq!((state, failures), (CircuitState::Open, 3), "{marked:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_marked_success_is_still_a_success() {
    let (layer, handle) = builder().build().unwrap().pair();
    let svc = layer
        .classify(DefaultClassify)
        .layer(service_fn(|(): ()| async {
            let mut response = Response::new(());
            response.extensions_mut().insert(EndpointFault);
            Ok::<_, BoxError>(response)
        }));
    for _ in 0..5 {
        svc.clone().oneshot(()).await.unwrap();
    }
    assert_eq!((handle.counts().calls, handle.counts().failures), (5, 0));
}

#[tokio::test(start_paused = true)]
async fn a_marked_failed_probe_frees_its_slot_and_the_next_probe_closes() {
    let (layer, handle) = builder().half_open_probes(1).build().unwrap().pair();
    let svc = layer.classify(DefaultClassify).layer(service_fn(answer));
    for _ in 0..3 {
        let _ = svc.clone().oneshot(Answer::Error { marked: false }).await;
    }
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    let _ = svc
        .clone()
        .oneshot(Answer::Status500 { marked: true })
        .await;
    assert_eq!(
        handle.state(),
        CircuitState::HalfOpen,
        "the probe counted for nothing"
    );
    svc.clone().oneshot(Answer::Ok).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Closed);
}
