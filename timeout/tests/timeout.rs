//! Timeout behaviour on the paused clock.

use std::future::{Future, pending};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderValue, Request};
use seawall_core::testing::{TestRecorder, paused_runtime};
use seawall_core::{BoxError, RejectionKind, rejected};
use seawall_timeout::deadline::GRPC_TIMEOUT;
use seawall_timeout::{Deadline, DeadlineConfig, InboundDeadlineLayer, TimeoutLayer};
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn layer(timeout: Duration) -> TimeoutLayer {
    TimeoutLayer::builder()
        .name("dep")
        .timeout(timeout)
        .build()
        .unwrap()
}

/// A service whose calls never finish.
fn hanging<Req>() -> impl Service<
    Req,
    Response = (),
    Error = BoxError,
    Future = impl Future<Output = Result<(), BoxError>> + Send,
> + Clone {
    service_fn(|_req: Req| async { pending::<Result<(), BoxError>>().await })
}

fn assert_timed_out(result: Result<(), BoxError>) {
    assert_eq!(ended_by(result), RejectionKind::TimedOut);
}

fn ended_by(result: Result<(), BoxError>) -> RejectionKind {
    let err = result.expect_err("the call should time out");
    let rejection = rejected(&*err).expect("a timeout is a rejection");
    assert_eq!(rejection.name(), "dep");
    rejection.kind()
}

#[tokio::test(start_paused = true)]
async fn times_out_exactly_at_the_deadline_not_before() {
    let mut svc = layer(ms(250)).layer(hanging::<()>());
    let mut call = task::spawn(svc.ready().await.unwrap().call(()));
    assert_pending!(call.poll());
    advance(ms(249)).await;
    assert_pending!(call.poll());
    advance(ms(1)).await;
    assert_timed_out(assert_ready!(call.poll()));
}

#[tokio::test(start_paused = true)]
async fn a_call_that_finishes_in_time_passes_through() {
    let svc = layer(ms(250)).layer(service_fn(|n: u32| async move {
        tokio::time::sleep(ms(249)).await;
        Ok::<_, BoxError>(n * 2)
    }));
    assert_eq!(svc.oneshot(21).await.unwrap(), 42);
}

#[derive(Debug, PartialEq)]
struct DownstreamError(&'static str);

impl std::fmt::Display for DownstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DownstreamError {}

#[tokio::test(start_paused = true)]
async fn the_inner_error_passes_through_downcastable() {
    let svc = layer(ms(250)).layer(service_fn(|()| async {
        Err::<(), _>(DownstreamError("refused"))
    }));
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(rejected(&*err).is_none());
    assert_eq!(
        err.downcast_ref::<DownstreamError>(),
        Some(&DownstreamError("refused"))
    );
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_future_cancels_the_inner_call() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let mut svc = layer(ms(250)).layer(service_fn(move |()| {
        let guard = SetOnDrop(flag.clone());
        async move {
            let _guard = guard;
            pending::<Result<(), BoxError>>().await
        }
    }));
    let mut call = task::spawn(svc.ready().await.unwrap().call(()));
    assert_pending!(call.poll());
    assert!(!dropped.load(Ordering::SeqCst));
    drop(call);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the inner call is dropped with the future"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_call_drops_the_inner_call() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let svc = layer(ms(100)).layer(service_fn(move |()| {
        let guard = SetOnDrop(flag.clone());
        async move {
            let _guard = guard;
            pending::<Result<(), BoxError>>().await
        }
    }));
    assert_timed_out(svc.oneshot(()).await);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn poll_ready_waits_for_the_inner_service() {
    let (mock, mut handle) = tower_test::mock::pair::<(), ()>();
    let mut svc = layer(ms(100)).layer(mock);
    handle.allow(0);
    let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_pending!(ready.poll());
    handle.allow(1);
    assert!(assert_ready!(ready.poll()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_hook_hears_of_every_timeout() {
    let heard = Arc::new(AtomicUsize::new(0));
    let count = heard.clone();
    let layer = layer(ms(100)).on_timeout(move |event| {
        assert_eq!(event.name, "dep");
        assert_eq!(event.timeout, ms(100));
        count.fetch_add(1, Ordering::SeqCst);
    });
    for _ in 0..3 {
        assert_timed_out(layer.layer(hanging::<()>()).oneshot(()).await);
    }
    assert_eq!(heard.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn every_service_of_a_layer_counts_into_the_same_metrics() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| layer(ms(100)));

    let fast = layer.layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    fast.clone().oneshot(()).await.unwrap();
    fast.oneshot(()).await.unwrap();
    assert_timed_out(layer.layer(hanging::<()>()).oneshot(()).await);

    let calls = |result| {
        recorder.counter(
            "seawall_timeout_calls_total",
            &[("name", "dep"), ("result", result)],
        )
    };
    assert_eq!(calls("completed"), 2);
    assert_eq!(calls("timed_out"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_recorder_installed_later_counts_the_calls_made_after_it() {
    let svc = layer(ms(100)).layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    let recorder = TestRecorder::new();
    let mut call = task::spawn(svc.oneshot(()));
    recorder.install_for(|| assert_ready!(call.poll())).unwrap();
    let completed = recorder.counter(
        "seawall_timeout_calls_total",
        &[("name", "dep"), ("result", "completed")],
    );
    assert_eq!(completed, 1, "the call before the recorder is dropped");
}

// ===== deadline propagation =====

fn request(headers: &[(&'static str, &'static str)]) -> Request<()> {
    let mut req = Request::new(());
    for &(name, value) in headers {
        req.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    req
}

/// How long the call took to end, and whether the configured timeout (`TimedOut`) or the
/// caller's deadline (`DeadlineExceeded`) ended it.
async fn time_to_timeout(
    layer: TimeoutLayer<seawall_timeout::HeaderDeadlines>,
    req: Request<()>,
) -> (Duration, RejectionKind) {
    let start = Instant::now();
    let kind = ended_by(layer.layer(hanging::<Request<()>>()).oneshot(req).await);
    (start.elapsed(), kind)
}

const BY_CALLER: RejectionKind = RejectionKind::DeadlineExceeded;
const BY_TIMEOUT: RejectionKind = RejectionKind::TimedOut;

#[tokio::test(start_paused = true)]
async fn a_shorter_grpc_timeout_shortens_the_call() {
    let layer = layer(ms(1000)).propagate(DeadlineConfig::inbound());
    assert_eq!(
        time_to_timeout(layer, request(&[("grpc-timeout", "100m")])).await,
        (ms(100), BY_CALLER)
    );
}

#[tokio::test(start_paused = true)]
async fn a_longer_grpc_timeout_never_lengthens_the_call() {
    let layer = layer(ms(1000)).propagate(DeadlineConfig::inbound());
    assert_eq!(
        time_to_timeout(layer, request(&[("grpc-timeout", "10S")])).await,
        (ms(1000), BY_TIMEOUT)
    );
}

#[tokio::test(start_paused = true)]
async fn a_malformed_grpc_timeout_is_ignored() {
    for value in ["", "abc", "100", "123456789m", "-5m", "5x"] {
        let layer = layer(ms(1000)).propagate(DeadlineConfig::inbound());
        let mut req = Request::new(());
        req.headers_mut()
            .insert(GRPC_TIMEOUT, HeaderValue::from_static(value));
        assert_eq!(
            time_to_timeout(layer, req).await,
            (ms(1000), BY_TIMEOUT),
            "{value:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_configured_millisecond_header_shortens_the_call() {
    let config =
        DeadlineConfig::inbound().with_header(http::HeaderName::from_static("x-request-timeout"));
    let layer = layer(ms(1000)).propagate(config);
    assert_eq!(
        time_to_timeout(layer.clone(), request(&[("x-request-timeout", "300")])).await,
        (ms(300), BY_CALLER)
    );
    assert_eq!(
        time_to_timeout(layer.clone(), request(&[("x-request-timeout", "3000")])).await,
        (ms(1000), BY_TIMEOUT)
    );
    assert_eq!(
        time_to_timeout(layer, request(&[("x-request-timeout", "3.5")])).await,
        (ms(1000), BY_TIMEOUT)
    );
}

#[tokio::test(start_paused = true)]
async fn a_zero_budget_is_rejected_at_once_without_calling_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let svc = layer(ms(1000))
        .propagate(DeadlineConfig::inbound())
        .layer(service_fn(move |_: Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(()) }
        }));
    let mut call = task::spawn(svc.oneshot(request(&[("grpc-timeout", "0m")])));
    let result = assert_ready!(call.poll(), "ready without waiting");
    assert_eq!(ended_by(result), BY_CALLER);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_passed_before_arrival_is_rejected_at_once() {
    let layer = layer(ms(1000)).propagate(DeadlineConfig::inbound());
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(Deadline(Instant::now() + ms(10)));
    advance(ms(50)).await;
    assert_eq!(time_to_timeout(layer, req).await, (ms(0), BY_CALLER));
}

#[tokio::test(start_paused = true)]
async fn the_timer_fires_at_the_deadline_handed_to_the_inner_call() {
    // The future is made at `call` and first polled 40 ms later: the deadline the inner call
    // sees and the timer agree, both counted from `call`.
    let start = Instant::now();
    let layer = layer(ms(100)).propagate(DeadlineConfig::inbound());
    let mut svc = layer.layer(service_fn(|req: Request<()>| async move {
        let deadline = req.extensions().get::<Deadline>().copied();
        pending::<()>().await;
        Ok::<_, BoxError>(deadline)
    }));
    let future = svc.ready().await.unwrap().call(Request::new(()));
    advance(ms(40)).await;
    let mut call = task::spawn(future);
    assert_pending!(call.poll());
    advance(ms(59)).await;
    assert_pending!(call.poll());
    advance(ms(1)).await;
    let err = assert_ready!(call.poll()).unwrap_err();
    assert_eq!(rejected(&*err).unwrap().kind(), BY_TIMEOUT);
    assert_eq!(start.elapsed(), ms(100), "not 140 ms");
}

#[tokio::test(start_paused = true)]
async fn the_callers_deadline_and_a_timeout_are_counted_apart() {
    let recorder = TestRecorder::new();
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = heard.clone();
    let layer = recorder
        .install_for(|| layer(ms(1000)))
        .propagate(DeadlineConfig::inbound())
        .on_timeout(move |event| log.lock().unwrap().push((event.kind, event.timeout)));
    time_to_timeout(layer.clone(), request(&[("grpc-timeout", "100m")])).await;
    time_to_timeout(layer, request(&[])).await;
    let calls = |result| {
        recorder.counter(
            "seawall_timeout_calls_total",
            &[("name", "dep"), ("result", result)],
        )
    };
    assert_eq!(calls("deadline_exceeded"), 1);
    assert_eq!(calls("timed_out"), 1);
    assert_eq!(
        *heard.lock().unwrap(),
        [(BY_CALLER, ms(100)), (BY_TIMEOUT, ms(1000))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_extension_shortens_the_call() {
    let layer = layer(ms(1000)).propagate(DeadlineConfig::outbound());
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(Deadline(Instant::now() + ms(40)));
    assert_eq!(time_to_timeout(layer, req).await, (ms(40), BY_CALLER));
}

#[tokio::test(start_paused = true)]
async fn inbound_propagation_hands_the_deadline_to_the_handler() {
    let start = Instant::now();
    let layer = layer(ms(1000)).propagate(DeadlineConfig::inbound());
    let svc = layer.layer(service_fn(|req: Request<()>| async move {
        Ok::<_, BoxError>((
            req.extensions().get::<Deadline>().copied(),
            req.headers().get(GRPC_TIMEOUT).cloned(),
        ))
    }));
    let (deadline, header) = svc
        .oneshot(request(&[("grpc-timeout", "2S")]))
        .await
        .unwrap();
    assert_eq!(deadline, Some(Deadline(start + ms(1000))));
    assert_eq!(
        header,
        Some(HeaderValue::from_static("2S")),
        "inbound mode leaves headers alone"
    );
}

#[tokio::test(start_paused = true)]
async fn outbound_propagation_writes_the_remaining_budget() {
    let config =
        DeadlineConfig::outbound().with_header(http::HeaderName::from_static("x-request-timeout"));
    let layer = layer(ms(1000)).propagate(config);
    let svc = layer.layer(service_fn(|req: Request<()>| async move {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        Ok::<_, BoxError>((header("grpc-timeout"), header("x-request-timeout")))
    }));

    let mut req = Request::new(());
    req.extensions_mut()
        .insert(Deadline(Instant::now() + ms(600)));
    advance(ms(100)).await;
    let (grpc, millis) = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(grpc.as_deref(), Some("500000u"));
    assert_eq!(millis.as_deref(), Some("500"));

    let (grpc, _) = svc
        .oneshot(request(&[("grpc-timeout", "20m")]))
        .await
        .unwrap();
    assert_eq!(
        grpc.as_deref(),
        Some("20000000n"),
        "an existing shorter budget is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_current_inside_the_call() {
    let start = Instant::now();
    let layer = layer(ms(1000)).propagate(DeadlineConfig::inbound());
    let svc = layer.layer(service_fn(|_req: Request<()>| async {
        advance(ms(10)).await;
        Ok::<_, BoxError>(Deadline::current())
    }));
    let current = svc
        .oneshot(request(&[("grpc-timeout", "300m")]))
        .await
        .unwrap();
    assert_eq!(current, Some(Deadline(start + ms(300))));
    assert_eq!(Deadline::current(), None, "only inside the call");
}

#[tokio::test(start_paused = true)]
async fn without_propagation_there_is_no_current_deadline() {
    let svc = layer(ms(1000)).layer(service_fn(|()| async {
        Ok::<_, BoxError>(Deadline::current())
    }));
    assert_eq!(svc.oneshot(()).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn an_outbound_call_in_a_handler_inherits_the_inbound_deadline() {
    // The downstream the handler calls, through its own client stack with a 10 s timeout.
    let client = layer(ms(10_000))
        .propagate(DeadlineConfig::outbound())
        .layer(service_fn(|req: Request<()>| async move {
            Ok::<_, BoxError>(
                req.headers()
                    .get(GRPC_TIMEOUT)
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        }));
    // The handler spends 100 ms, then calls downstream without touching deadlines itself.
    let handler = service_fn(move |_req: Request<()>| {
        let client = client.clone();
        async move {
            tokio::time::sleep(ms(100)).await;
            client.oneshot(Request::new(())).await
        }
    });
    let server = layer(ms(1000))
        .propagate(DeadlineConfig::inbound())
        .layer(handler);
    let sent = server
        .oneshot(request(&[("grpc-timeout", "300m")]))
        .await
        .unwrap();
    assert_eq!(
        sent.as_deref(),
        Some("200000u"),
        "300 ms budget less the 100 ms spent"
    );
}

proptest::proptest! {
    /// Below an `InboundDeadlineLayer`, the timeout takes the caller's deadline from what that
    /// layer made current instead of reading the headers again: the handler sees the same.
    #[test]
    fn below_inbound_the_handler_sees_what_reading_the_headers_again_gives(
        headers in proptest::collection::vec(
            (
                proptest::sample::select(vec!["grpc-timeout", "x-request-timeout", "accept"]),
                proptest::sample::select(vec!["300m", "2S", "50", "5000", "bad"]),
            ),
            0..4,
        ),
        extension in proptest::option::of(0u64..3000),
    ) {
        let rt = paused_runtime();
        let seen = |below_inbound: bool| {
            let config = DeadlineConfig::inbound()
                .with_header(http::HeaderName::from_static("x-request-timeout"));
            let timeout = layer(ms(1000)).propagate(config.clone());
            let timeout = if below_inbound { timeout.below_inbound() } else { timeout };
            let svc = InboundDeadlineLayer::new(config).layer(timeout.layer(service_fn(
                |req: Request<()>| async move {
                    Ok::<_, BoxError>((
                        req.extensions().get::<Deadline>().copied(),
                        Deadline::current(),
                    ))
                },
            )));
            let mut req = request(&[]);
            for &(name, value) in &headers {
                req.headers_mut().append(name, HeaderValue::from_static(value));
            }
            rt.block_on(async {
                if let Some(after) = extension {
                    req.extensions_mut().insert(Deadline(Instant::now() + ms(after)));
                }
                svc.oneshot(req).await.map_err(|err| rejected(&*err).map(|r| r.kind()))
            })
        };
        proptest::prop_assert_eq!(seen(true), seen(false));
    }
}
