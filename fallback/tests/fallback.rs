//! Fallback behaviour for each trigger and each source.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Response, StatusCode};
use seawall_core::classify::HttpStatus;
use seawall_core::testing::TestRecorder;
use seawall_core::{BoxError, Rejected, RejectionKind, rejected};
use seawall_fallback::{Cause, Failed, FallbackLayer};
use tower::{Layer, ServiceExt, service_fn};

fn rejection(kind: RejectionKind) -> BoxError {
    Rejected::new(kind, "dep").into()
}

/// A downstream that answers `Ok(n)` for even requests and fails with `err(n)` for odd ones.
fn downstream(
    err: fn(u64) -> BoxError,
) -> impl tower::Service<u64, Response = u64, Error = BoxError, Future = impl Send> + Clone {
    service_fn(move |n: u64| async move {
        if n.is_multiple_of(2) {
            Ok(n)
        } else {
            Err(err(n))
        }
    })
}

#[tokio::test]
async fn a_success_is_never_replaced() {
    let layer = FallbackLayer::builder().value(999u64).build().unwrap();
    assert_eq!(
        layer
            .layer(downstream(|_| "io".into()))
            .oneshot(4)
            .await
            .unwrap(),
        4
    );
}

#[tokio::test]
async fn a_value_answers_a_chosen_rejection() {
    let layer = FallbackLayer::builder()
        .on_rejections([RejectionKind::CircuitOpen])
        .value(999u64)
        .build()
        .unwrap();
    let svc = layer.layer(downstream(|_| rejection(RejectionKind::CircuitOpen)));
    assert_eq!(svc.oneshot(1).await.unwrap(), 999);
}

#[tokio::test]
async fn other_rejections_and_errors_pass_through_as_they_were() {
    let layer = FallbackLayer::builder()
        .on_rejections([RejectionKind::CircuitOpen])
        .value(999u64)
        .build()
        .unwrap();
    let full = layer.layer(downstream(|_| rejection(RejectionKind::BulkheadFull)));
    let err = full.oneshot(1).await.unwrap_err();
    assert_eq!(
        rejected(&*err).map(Rejected::kind),
        Some(RejectionKind::BulkheadFull)
    );

    let io = layer.layer(downstream(|_| Box::new(std::io::Error::other("reset"))));
    let err = io.oneshot(1).await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());
}

#[tokio::test]
async fn any_error_fires_on_plain_errors_and_rejections() {
    let layer = FallbackLayer::builder()
        .on_any_error()
        .value(0u64)
        .build()
        .unwrap();
    assert_eq!(
        layer
            .layer(downstream(|_| "io".into()))
            .oneshot(1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        layer
            .layer(downstream(|_| rejection(RejectionKind::TimedOut)))
            .oneshot(1)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_closure_sees_the_failure() {
    let layer = FallbackLayer::builder()
        .with(
            |failed: Failed<u64>| match failed.rejection().map(Rejected::kind) {
                Some(RejectionKind::RateLimited) => 429,
                _ => 500,
            },
        )
        .build()
        .unwrap();
    let limited = layer.layer(downstream(|_| rejection(RejectionKind::RateLimited)));
    assert_eq!(limited.oneshot(1).await.unwrap(), 429);
    let io = layer.layer(downstream(|_| "io".into()));
    assert_eq!(io.oneshot(1).await.unwrap(), 500);
}

#[tokio::test(start_paused = true)]
async fn an_async_closure_answers_and_may_fail_itself() {
    let layer = FallbackLayer::builder()
        .with_async(|_failed: Failed<u64>| async {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            Ok(7)
        })
        .build()
        .unwrap();
    assert_eq!(
        layer
            .layer(downstream(|_| "io".into()))
            .oneshot(1)
            .await
            .unwrap(),
        7
    );

    let failing = FallbackLayer::builder()
        .with_async(|_failed: Failed<u64>| async { Err::<u64, BoxError>("cache down".into()) })
        .build()
        .unwrap();
    let err = failing
        .layer(downstream(|_| "io".into()))
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "cache down");
}

/// A request that cannot be cloned.
struct Order {
    id: u64,
    _payload: Vec<u8>,
}

#[tokio::test]
async fn with_request_keeps_only_what_it_needs() {
    let kept = Arc::new(AtomicUsize::new(0));
    let count = kept.clone();
    let layer = FallbackLayer::builder()
        .with_request(
            move |order: &Order| {
                count.fetch_add(1, Ordering::SeqCst);
                order.id
            },
            |id, _failed: Failed<String>| async move { Ok(format!("order {id} queued")) },
        )
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|order: Order| async move {
        if order.id == 1 {
            Ok(format!("order {} placed", order.id))
        } else {
            Err::<String, BoxError>("db down".into())
        }
    }));
    let order = |id| Order {
        id,
        _payload: vec![0; 1024],
    };
    assert_eq!(
        svc.clone().oneshot(order(1)).await.unwrap(),
        "order 1 placed"
    );
    assert_eq!(svc.oneshot(order(2)).await.unwrap(), "order 2 queued");
    assert_eq!(kept.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn failover_sends_the_request_to_the_other_service() {
    let replica = service_fn(|n: u64| async move { Ok::<_, std::io::Error>(n + 1000) });
    let layer = FallbackLayer::builder().failover(replica).build().unwrap();
    let svc = layer.layer(downstream(|_| "primary down".into()));
    assert_eq!(
        svc.clone().oneshot(2).await.unwrap(),
        2,
        "the primary answers when it can"
    );
    assert_eq!(svc.oneshot(3).await.unwrap(), 1003);
}

#[tokio::test]
async fn a_classifier_replaces_failed_answers_too() {
    let layer = FallbackLayer::builder()
        .on_failure(HttpStatus::server_errors())
        .with(|_failed: Failed<Response<&'static str>>| Response::new("cached page"))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|status: u16| async move {
        Ok::<_, BoxError>(
            Response::builder()
                .status(status)
                .body("live page")
                .unwrap(),
        )
    }));
    let ok = svc.clone().oneshot(200).await.unwrap();
    assert_eq!((ok.status(), *ok.body()), (StatusCode::OK, "live page"));
    let not_found = svc.clone().oneshot(404).await.unwrap();
    assert_eq!(
        *not_found.body(),
        "live page",
        "4xx is the caller's problem, not a failure"
    );
    let failed = svc.clone().oneshot(500).await.unwrap();
    assert_eq!(*failed.body(), "cached page");
    let unavailable = svc.oneshot(503).await.unwrap();
    assert_eq!(
        *unavailable.body(),
        "live page",
        "overload is not a failure unless chosen"
    );
}

#[tokio::test]
async fn overload_answers_are_replaced_when_chosen() {
    let layer = FallbackLayer::builder()
        .on_failure(HttpStatus::server_errors())
        .or_overload()
        .with(|_failed: Failed<Response<&'static str>>| Response::new("cached page"))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|status: u16| async move {
        Ok::<_, BoxError>(
            Response::builder()
                .status(status)
                .body("live page")
                .unwrap(),
        )
    }));
    for status in [429, 503, 500] {
        let res = svc.clone().oneshot(status).await.unwrap();
        assert_eq!(*res.body(), "cached page", "{status}");
    }
    let ok = svc.oneshot(200).await.unwrap();
    assert_eq!(*ok.body(), "live page");
}

#[tokio::test]
async fn a_panic_is_not_caught() {
    let layer = FallbackLayer::builder().value(0u64).build().unwrap();
    let svc = layer.layer(service_fn(|_: u64| async {
        if true {
            panic!("bug in the handler");
        }
        Ok::<u64, BoxError>(1)
    }));
    let joined = tokio::spawn(svc.oneshot(1)).await;
    assert!(joined.unwrap_err().is_panic());
}

#[tokio::test]
async fn each_answer_is_counted_by_cause_and_heard_by_the_hook() {
    let recorder = TestRecorder::new();
    let heard = Arc::new(AtomicUsize::new(0));
    let count = heard.clone();
    let layer = recorder
        .install_for(|| FallbackLayer::builder().name("catalog").value(0u64).build())
        .unwrap()
        .on_fallback(move |event| {
            assert_eq!(event.name, "catalog");
            count.fetch_add(1, Ordering::SeqCst);
        });
    let open = layer.layer(downstream(|_| rejection(RejectionKind::CircuitOpen)));
    for n in 0..4 {
        open.clone().oneshot(n).await.unwrap();
    }
    layer
        .layer(downstream(|_| "io".into()))
        .oneshot(1)
        .await
        .unwrap();

    let fired = |cause: Cause| {
        recorder.counter(
            "seawall_fallback_total",
            &[("name", "catalog"), ("cause", cause.as_str())],
        )
    };
    assert_eq!(fired(Cause::Rejected(RejectionKind::CircuitOpen)), 2);
    assert_eq!(fired(Cause::Error), 1);
    assert_eq!(fired(Cause::Failure), 0);
    assert_eq!(heard.load(Ordering::SeqCst), 3);
    // Every call is counted, answered by the fallback or not: the denominator of the share of
    // calls the fallback answers.
    assert_eq!(
        recorder.counter("seawall_fallback_calls_total", &[("name", "catalog")]),
        5
    );
}

#[tokio::test]
async fn a_recorder_installed_later_counts_the_calls_made_after_it() {
    let layer = FallbackLayer::builder()
        .name("catalog")
        .value(0u64)
        .build()
        .unwrap();
    let svc = layer.layer(downstream(|_| "io".into()));
    svc.clone().oneshot(1).await.unwrap();
    let recorder = TestRecorder::new();
    let mut call = std::pin::pin!(svc.oneshot(3));
    let answer = recorder.install_for(|| {
        call.as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    });
    assert!(matches!(answer, std::task::Poll::Ready(Ok(0))));
    assert_eq!(
        recorder.counter("seawall_fallback_calls_total", &[("name", "catalog")]),
        1,
        "the call before the recorder is dropped"
    );
}

#[tokio::test]
async fn an_empty_rejection_list_is_a_config_error() {
    let err = FallbackLayer::builder()
        .on_rejections([])
        .value(0u64)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "on.rejections");
}
