//! The caller's deadline through whole stacks, on the paused clock: a call its caller gave up
//! on is neither blamed on the downstream nor retried, and a request never gets a fresh budget
//! after waiting in a server stack's queues.

use std::convert::Infallible;
use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use seawall::backoff::Backoff;
use seawall::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use seawall::retry::{HttpPolicy, RetryLayer};
use seawall::stack::{ServerStackConfig, ServerStackLayer};
use seawall::timeout::{Deadline, DeadlineConfig, TimeoutLayer};
use seawall::{BoxError, Rejected, RejectionKind, ServiceBuilderExt, rejected};
use tokio::sync::Semaphore;
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn kind(err: &BoxError) -> RejectionKind {
    rejected(&**err).expect("a rejection").kind()
}

#[tokio::test(start_paused = true)]
async fn a_timeout_set_by_the_callers_deadline_is_neither_counted_nor_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let downstream = service_fn(move |_: Request<String>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { pending::<Result<Response<String>, BoxError>>().await }
    });
    let (breaker, handle) = CircuitBreakerLayer::builder()
        .name("dep")
        .count_window(10)
        .minimum_calls(1)
        .failure_rate_threshold(0.5)
        .build()
        .unwrap()
        .pair();
    let retry = RetryLayer::builder()
        .name("dep")
        .max_attempts(3)
        .no_budget()
        .backoff(Backoff::constant(ms(1)).build().unwrap())
        .build()
        .unwrap()
        .policy(HttpPolicy::new());
    let attempt = TimeoutLayer::builder()
        .name("dep.attempt")
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .propagate(DeadlineConfig::outbound());
    let svc = ServiceBuilder::new()
        .with_retry(retry)
        .with_circuit_breaker(breaker)
        .with_timeout(attempt)
        .service(downstream);

    // A handler whose own caller has 20 ms left hands that deadline on.
    let start = Instant::now();
    let mut req = Request::get("/stock").body(String::new()).unwrap();
    req.extensions_mut().insert(Deadline(start + ms(20)));
    let err = svc.oneshot(req).await.unwrap_err();

    assert_eq!(kind(&err), RejectionKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), ms(20));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "never retried");
    assert_eq!(handle.counts().calls, 0, "not the downstream's failure");
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test]
async fn the_callers_deadline_is_answered_as_a_gateway_timeout() {
    let expired = || {
        service_fn(|_: Request<()>| async {
            Err::<Response<String>, BoxError>(
                Rejected::new(RejectionKind::DeadlineExceeded, "api").into(),
            )
        })
    };
    let http = seawall::http::ErrorResponseLayer::new().layer(expired());
    let res = http.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(res.headers().get("retry-after").is_none());

    let grpc = seawall::grpc::ErrorStatusLayer::new().layer(expired());
    let res = grpc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
}

// ===== the server stack =====

/// One slot, a queue of one that may wait 10 s, a 5 s timeout; optionally a rate limit of one
/// call a second that may wait 5 s for a permit.
fn server_stack(rate_limit: bool) -> ServerStackLayer {
    let mut config = serde_json::json!({
        "name": "api",
        "bulkhead": { "max_concurrent": 1, "queue_limit": 1, "max_wait": "10s" },
        "timeout": "5s",
    });
    if rate_limit {
        config["rate_limit"] = serde_json::json!({
            "quota": { "per_second": 1, "burst": 1 },
            "max_wait": "5s",
        });
    }
    ServerStackLayer::new(serde_json::from_value::<ServerStackConfig>(config).unwrap())
}

/// A handler that counts its runs and answers once `gate` gives it a permit.
fn handler(
    gate: Arc<Semaphore>,
    runs: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<()>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<()>, Infallible>> + Send,
> + Clone
+ Send {
    service_fn(move |_: Request<()>| {
        runs.fetch_add(1, Ordering::SeqCst);
        let gate = gate.clone();
        async move {
            gate.acquire().await.unwrap().forget();
            Ok(Response::new(()))
        }
    })
}

fn with_grpc_timeout(value: &'static str) -> Request<()> {
    Request::builder()
        .header("grpc-timeout", value)
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_deadline_passes_in_the_bulkhead_queue_leaves_it() {
    let stack = server_stack(false);
    let bulkhead = stack.bulkhead();
    let (gate, runs) = (Arc::new(Semaphore::new(0)), Arc::new(AtomicUsize::new(0)));
    let svc = stack.layer(handler(gate.clone(), runs.clone()));

    let mut holder = task::spawn(svc.clone().oneshot(Request::new(())));
    assert_pending!(holder.poll());
    let mut queued = task::spawn(svc.clone().oneshot(with_grpc_timeout("100m")));
    assert_pending!(queued.poll());
    assert_eq!(bulkhead.queued(), 1);

    advance(ms(99)).await;
    assert_pending!(queued.poll());
    advance(ms(1)).await;
    let err = assert_ready!(queued.poll()).unwrap_err();
    assert_eq!(kind(&err), RejectionKind::DeadlineExceeded);
    assert_eq!(bulkhead.queued(), 0, "left the queue at its deadline");

    gate.add_permits(1);
    assert!(assert_ready!(holder.poll()).is_ok());
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the expired request never ran"
    );
}

#[tokio::test(start_paused = true)]
async fn time_spent_queued_counts_against_the_callers_deadline() {
    let stack = server_stack(false);
    let (gate, runs) = (Arc::new(Semaphore::new(0)), Arc::new(AtomicUsize::new(0)));
    let svc = stack.layer(handler(gate.clone(), runs.clone()));
    let start = Instant::now();

    let mut holder = task::spawn(svc.clone().oneshot(Request::new(())));
    assert_pending!(holder.poll());
    let mut queued = task::spawn(svc.clone().oneshot(with_grpc_timeout("100m")));
    assert_pending!(queued.poll());

    // The slot frees after 60 ms: the queued request runs with the 40 ms its caller has left,
    // not with a fresh 100 ms.
    advance(ms(60)).await;
    gate.add_permits(1);
    assert!(assert_ready!(holder.poll()).is_ok());
    assert_pending!(queued.poll());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    advance(ms(39)).await;
    assert_pending!(queued.poll());
    advance(ms(1)).await;
    let err = assert_ready!(queued.poll()).unwrap_err();
    assert_eq!(kind(&err), RejectionKind::DeadlineExceeded);
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn a_request_is_never_kept_waiting_for_a_permit_past_its_deadline() {
    let stack = server_stack(true);
    let (gate, runs) = (Arc::new(Semaphore::new(10)), Arc::new(AtomicUsize::new(0)));
    let svc = stack.layer(handler(gate, runs.clone()));

    svc.clone().oneshot(Request::new(())).await.unwrap();
    // The next permit comes in 1 s; this caller gives up after 100 ms.
    let mut call = task::spawn(svc.clone().oneshot(with_grpc_timeout("100m")));
    let err = assert_ready!(call.poll(), "rejected at once").unwrap_err();
    assert_eq!(kind(&err), RejectionKind::RateLimited);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A caller with time to spare still waits for its permit.
    let mut patient = task::spawn(svc.oneshot(with_grpc_timeout("3S")));
    assert_pending!(patient.poll());
    advance(Duration::from_secs(1)).await;
    assert!(assert_ready!(patient.poll()).is_ok());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_arrives_with_no_time_left_never_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let svc = server_stack(false).layer(handler(Arc::new(Semaphore::new(10)), runs.clone()));
    let err = svc.oneshot(with_grpc_timeout("0m")).await.unwrap_err();
    assert_eq!(kind(&err), RejectionKind::DeadlineExceeded);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}
