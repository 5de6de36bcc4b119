//! The fixed bulkhead on the paused clock: admission, the queue, cancellation, metrics, the
//! handle.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall_bulkhead::{BulkheadLayer, RejectReason};
use seawall_core::testing::TestRecorder;
use seawall_core::{BoxError, RejectionKind, rejected};
use tokio::sync::Semaphore;
use tokio::time::advance;
use tokio_test::task::{Spawn, spawn};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn layer(limit: usize, queue: usize) -> BulkheadLayer {
    BulkheadLayer::builder()
        .name("db")
        .max_concurrent(limit)
        .queue_limit(queue)
        .max_wait(ms(100))
        .build()
        .unwrap()
}

/// A downstream whose calls finish only when the test adds permits to `gate`, in the order
/// they started waiting; `started` counts the calls that reached it.
#[derive(Clone)]
struct Gate {
    gate: Arc<Semaphore>,
    started: Arc<AtomicUsize>,
}

impl Gate {
    fn new() -> Self {
        Self {
            gate: Arc::new(Semaphore::new(0)),
            started: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn service(
        &self,
    ) -> impl Service<u32, Response = u32, Error = BoxError, Future = impl Future + Send> + Clone
    {
        let gate = self.gate.clone();
        let started = self.started.clone();
        service_fn(move |req: u32| {
            started.fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, BoxError>(req)
            }
        })
    }

    fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }

    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
}

async fn call<S>(svc: &mut S, req: u32) -> Spawn<S::Future>
where
    S: Service<u32>,
    S::Error: std::fmt::Debug,
{
    spawn(svc.ready().await.unwrap().call(req))
}

fn assert_full<T: std::fmt::Debug>(result: Result<T, BoxError>) {
    let err = result.expect_err("the call should be rejected");
    let rejection = rejected(&*err).expect("a full bulkhead is a rejection");
    assert_eq!(rejection.kind(), RejectionKind::BulkheadFull);
    assert_eq!(rejection.name(), "db");
}

#[tokio::test(start_paused = true)]
async fn admits_up_to_the_limit_then_rejects_at_once() {
    let gate = Gate::new();
    let (layer, handle) = layer(2, 0).pair();
    let mut svc = layer.layer(gate.service());
    let mut a = call(&mut svc, 1).await;
    let mut b = call(&mut svc, 2).await;
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    assert_eq!(handle.in_flight(), 2);

    let mut c = call(&mut svc, 3).await;
    assert_full(assert_ready!(c.poll()));
    assert_eq!(
        gate.started(),
        2,
        "a rejected call never reaches the downstream"
    );

    gate.open(1);
    assert_eq!(assert_ready_ok!(a.poll()), 1);
    assert_eq!(handle.in_flight(), 1);
    let mut d = call(&mut svc, 4).await;
    assert_pending!(d.poll());
    assert_eq!(handle.in_flight(), 2);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_holds_no_slot() {
    let gate = Gate::new();
    let (layer, handle) = layer(1, 0).pair();
    let mut clones: Vec<_> = (0..10).map(|_| layer.layer(gate.service())).collect();
    for svc in &mut clones {
        svc.ready().await.unwrap();
    }
    assert_eq!(handle.in_flight(), 0, "ready clones hold nothing");
    let mut first = spawn(clones[3].call(1));
    assert_pending!(first.poll());
    assert_eq!(handle.in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_runs_when_a_slot_frees() {
    let gate = Gate::new();
    let (layer, handle) = layer(1, 1).pair();
    let mut svc = layer.layer(gate.service());
    let mut a = call(&mut svc, 1).await;
    assert_pending!(a.poll());
    let mut b = call(&mut svc, 2).await;
    assert_pending!(b.poll());
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
    assert_eq!(
        gate.started(),
        1,
        "the queued call waits before the downstream"
    );

    gate.open(1);
    assert_ready_ok!(a.poll());
    assert!(b.is_woken(), "the released slot wakes the waiter");
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
    assert_pending!(b.poll());
    assert_eq!(gate.started(), 2);
    gate.open(1);
    assert_eq!(assert_ready_ok!(b.poll()), 2);
    assert_eq!(handle.in_flight(), 0);
}

/// Polls every unfinished call once, and forgets those that finished (successfully).
fn poll_all<F, T, E>(calls: &mut [Option<Spawn<F>>])
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    for slot in calls.iter_mut() {
        if let Some(fut) = slot
            && let std::task::Poll::Ready(result) = fut.poll()
        {
            result.unwrap();
            *slot = None;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let (mock, mut downstream) = tower_test::mock::pair::<u32, u32>();
    let (layer, handle) = layer(1, 10).pair();
    let mut svc = layer.layer(mock);
    let mut first = call(&mut svc, 0).await;
    assert_pending!(first.poll());
    let mut waiting = Vec::new();
    for i in 1..=5 {
        let mut fut = call(&mut svc, i).await;
        assert_pending!(fut.poll());
        waiting.push(Some(fut));
    }
    // Polled in reverse, so only the queue's order can explain the order served.
    waiting.reverse();
    let (req, respond) = downstream.next_request().await.unwrap();
    assert_eq!(req, 0);
    respond.send_response(0);
    assert_ready_ok!(first.poll());
    for expected in 1..=5 {
        poll_all(&mut waiting);
        let (req, respond) = downstream.next_request().await.unwrap();
        assert_eq!(req, expected);
        assert_eq!(handle.in_flight(), 1);
        respond.send_response(req);
        poll_all(&mut waiting);
    }
    assert!(waiting.iter().all(Option::is_none));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_rejects_at_once() {
    let gate = Gate::new();
    let mut svc = layer(1, 2).layer(gate.service());
    let mut held = call(&mut svc, 0).await;
    assert_pending!(held.poll());
    let mut q1 = call(&mut svc, 1).await;
    let mut q2 = call(&mut svc, 2).await;
    assert_pending!(q1.poll());
    assert_pending!(q2.poll());
    let mut over = call(&mut svc, 3).await;
    assert_full(assert_ready!(over.poll()));
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_is_rejected_after_max_wait_not_before() {
    let gate = Gate::new();
    let recorder = TestRecorder::new();
    let (layer, handle) = recorder.install_for(|| layer(1, 1)).pair();
    let mut svc = layer.layer(gate.service());
    let mut held = call(&mut svc, 0).await;
    assert_pending!(held.poll());
    let mut waiter = call(&mut svc, 1).await;
    assert_pending!(waiter.poll());
    advance(ms(99)).await;
    assert_pending!(waiter.poll());
    advance(ms(1)).await;
    assert_full(assert_ready!(waiter.poll()));
    assert_eq!(handle.queued(), 0);
    assert_eq!(gate.started(), 1);
    assert_eq!(
        recorder.histogram("seawall_bulkhead_wait_seconds", &[("name", "db")]),
        [0.1]
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_future_releases_its_slot() {
    let gate = Gate::new();
    let (layer, handle) = layer(1, 0).pair();
    let mut svc = layer.layer(gate.service());
    let mut a = call(&mut svc, 1).await;
    assert_pending!(a.poll());
    assert_eq!(handle.in_flight(), 1);
    drop(a);
    assert_eq!(handle.in_flight(), 0);
    let mut b = call(&mut svc, 2).await;
    assert_pending!(b.poll());
    assert_eq!(handle.in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_before_its_first_poll_releases_its_slot() {
    let gate = Gate::new();
    let (layer, handle) = layer(1, 0).pair();
    let mut svc = layer.layer(gate.service());
    let never_polled = svc.ready().await.unwrap().call(1);
    assert_eq!(handle.in_flight(), 1);
    drop(never_polled);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_the_queue() {
    let gate = Gate::new();
    let (layer, handle) = layer(1, 1).pair();
    let mut svc = layer.layer(gate.service());
    let mut held = call(&mut svc, 0).await;
    assert_pending!(held.poll());
    let mut waiter = call(&mut svc, 1).await;
    assert_pending!(waiter.poll());
    drop(waiter);
    assert_eq!(handle.queued(), 0);
    // Its place is free again.
    let mut next = call(&mut svc, 2).await;
    assert_pending!(next.poll());
    assert_eq!(handle.queued(), 1);
    gate.open(1);
    assert_ready_ok!(held.poll());
    assert_pending!(next.poll());
    assert_eq!(gate.started(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_woken_waiter_that_is_dropped_passes_its_slot_on() {
    let gate = Gate::new();
    let (layer, handle) = layer(1, 2).pair();
    let mut svc = layer.layer(gate.service());
    let mut held = call(&mut svc, 0).await;
    assert_pending!(held.poll());
    let mut first = call(&mut svc, 1).await;
    let mut second = call(&mut svc, 2).await;
    assert_pending!(first.poll());
    assert_pending!(second.poll());

    gate.open(1);
    assert_ready_ok!(held.poll());
    assert!(first.is_woken(), "the slot went to the first waiter");
    // The first waiter is dropped before it runs: the slot it was handed goes to the next.
    drop(first);
    assert!(second.is_woken(), "the slot was passed on");
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
    assert_pending!(second.poll());
    assert_eq!(gate.started(), 2);
    gate.open(1);
    assert_eq!(assert_ready_ok!(second.poll()), 2);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_slot_given_as_the_wait_expires_is_used_not_lost() {
    let gate = Gate::new();
    let (layer, handle) = layer(1, 1).pair();
    let mut svc = layer.layer(gate.service());
    let mut held = call(&mut svc, 0).await;
    assert_pending!(held.poll());
    let mut waiter = call(&mut svc, 1).await;
    assert_pending!(waiter.poll());
    advance(ms(100)).await;
    // The slot frees at the very moment the wait runs out: the waiter takes it.
    gate.open(1);
    assert_ready_ok!(held.poll());
    assert_pending!(waiter.poll());
    assert_eq!(handle.in_flight(), 1);
    gate.open(1);
    assert_ready_ok!(waiter.poll());
    assert_eq!(handle.in_flight(), 0);
}

#[derive(Debug, PartialEq)]
struct DownstreamError;

impl std::fmt::Display for DownstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("downstream failed")
    }
}

impl std::error::Error for DownstreamError {}

#[tokio::test(start_paused = true)]
async fn the_inner_error_passes_through_and_releases_the_slot() {
    let (layer, handle) = layer(1, 0).pair();
    let svc = layer.layer(service_fn(|()| async { Err::<(), _>(DownstreamError) }));
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert!(rejected(&*err).is_none());
    assert_eq!(
        err.downcast_ref::<DownstreamError>(),
        Some(&DownstreamError)
    );
    assert_eq!(handle.in_flight(), 0);
    assert!(svc.oneshot(()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn an_inner_readiness_error_after_the_wait_releases_the_slot() {
    #[derive(Clone)]
    struct FailsWhenCloned {
        clone: bool,
        gate: Arc<Semaphore>,
    }
    impl Service<()> for FailsWhenCloned {
        type Response = ();
        type Error = BoxError;
        type Future = std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(if self.clone {
                Err("not ready".into())
            } else {
                Ok(())
            })
        }
        fn call(&mut self, (): ()) -> Self::Future {
            let gate = self.gate.clone();
            Box::pin(async move {
                gate.acquire().await.unwrap().forget();
                Ok(())
            })
        }
    }
    let gate = Arc::new(Semaphore::new(0));
    let (layer, handle) = layer(1, 1).pair();
    let mut svc = layer.layer(FailsWhenCloned {
        clone: false,
        gate: gate.clone(),
    });
    let mut held = spawn(svc.ready().await.unwrap().call(()));
    assert_pending!(held.poll());
    svc.get_mut().clone = true;
    let mut waiter = spawn(svc.call(()));
    assert_pending!(waiter.poll());
    gate.add_permits(1);
    assert_ready_ok!(held.poll());
    let err = assert_ready!(waiter.poll()).unwrap_err();
    assert_eq!(err.to_string(), "not ready");
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn every_service_of_a_layer_shares_one_bulkhead() {
    let gate = Gate::new();
    let layer = layer(1, 0);
    let mut one = layer.layer(gate.service());
    let mut other = layer.clone().layer(gate.service());
    let mut a = call(&mut one, 1).await;
    assert_pending!(a.poll());
    let mut b = call(&mut other, 2).await;
    assert_full(assert_ready!(b.poll()));
}

#[tokio::test(start_paused = true)]
async fn metrics_follow_the_bulkhead() {
    let gate = Gate::new();
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| layer(2, 1));
    let mut svc = layer.layer(gate.service());
    let gauge = |metric| recorder.gauge(metric, &[("name", "db")]);
    assert_eq!(gauge("seawall_bulkhead_limit"), Some(2.0));
    assert_eq!(gauge("seawall_bulkhead_in_flight"), Some(0.0));
    assert_eq!(gauge("seawall_bulkhead_queued"), Some(0.0));

    let mut a = call(&mut svc, 1).await;
    let mut b = call(&mut svc, 2).await;
    let mut c = call(&mut svc, 3).await;
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    assert_pending!(c.poll());
    assert_eq!(gauge("seawall_bulkhead_in_flight"), Some(2.0));
    assert_eq!(gauge("seawall_bulkhead_queued"), Some(1.0));
    let mut d = call(&mut svc, 4).await;
    assert_full(assert_ready!(d.poll()));
    assert_eq!(
        recorder.counter("seawall_bulkhead_rejected_total", &[("name", "db")]),
        1
    );

    advance(ms(30)).await;
    gate.open(1);
    assert_ready_ok!(a.poll());
    assert_pending!(c.poll());
    assert_eq!(gauge("seawall_bulkhead_queued"), Some(0.0));
    assert_eq!(gauge("seawall_bulkhead_in_flight"), Some(2.0));
    assert_eq!(
        recorder.histogram("seawall_bulkhead_wait_seconds", &[("name", "db")]),
        [0.03]
    );
    gate.open(2);
    assert_ready_ok!(b.poll());
    assert_ready_ok!(c.poll());
    assert_eq!(gauge("seawall_bulkhead_in_flight"), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn the_in_flight_gauge_starts_at_the_calls_in_flight_when_a_recorder_comes() {
    // Without a recorder the gauge is not kept; the first call that sees one starts it.
    let gate = Gate::new();
    let layer = layer(3, 0);
    let mut svc = layer.layer(gate.service());
    let mut a = call(&mut svc, 1).await;
    let mut b = call(&mut svc, 2).await;
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    let recorder = TestRecorder::new();
    let gauge = || recorder.gauge("seawall_bulkhead_in_flight", &[("name", "db")]);
    svc.ready().await.unwrap();
    let mut c = recorder.install_for(|| spawn(svc.call(3)));
    assert_pending!(c.poll());
    assert_eq!(gauge(), Some(3.0));
    gate.open(3);
    assert_ready_ok!(a.poll());
    assert_ready_ok!(b.poll());
    assert_ready_ok!(c.poll());
    assert_eq!(
        gauge(),
        Some(0.0),
        "kept after the recorder's scope, once bound"
    );
}

#[tokio::test(start_paused = true)]
async fn the_rejection_hook_hears_why() {
    let gate = Gate::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let layer = layer(1, 1).on_rejected(move |event| {
        assert_eq!(event.name, "db");
        assert_eq!(event.partition, None);
        log.lock().unwrap().push(event.reason);
    });
    let mut svc = layer.layer(gate.service());
    let mut held = call(&mut svc, 0).await;
    assert_pending!(held.poll());
    let mut waiter = call(&mut svc, 1).await;
    assert_pending!(waiter.poll());
    let mut over = call(&mut svc, 2).await;
    assert_full(assert_ready!(over.poll()));
    advance(ms(100)).await;
    assert_full(assert_ready!(waiter.poll()));
    assert_eq!(
        *heard.lock().unwrap(),
        [RejectReason::Full, RejectReason::WaitExpired]
    );
}

#[tokio::test(start_paused = true)]
async fn the_handle_changes_the_limit_at_runtime() {
    let gate = Gate::new();
    let recorder = TestRecorder::new();
    let (layer, handle) = recorder.install_for(|| layer(1, 5)).pair();
    let mut svc = layer.layer(gate.service());
    let mut calls = Vec::new();
    for i in 0..4 {
        let mut fut = call(&mut svc, i).await;
        assert_pending!(fut.poll());
        calls.push(fut);
    }
    assert_eq!((handle.in_flight(), handle.queued()), (1, 3));

    handle.set_limit(3).unwrap();
    assert_eq!(handle.limit(), 3);
    assert_eq!(
        recorder.gauge("seawall_bulkhead_limit", &[("name", "db")]),
        Some(3.0)
    );
    assert_eq!(
        (handle.in_flight(), handle.queued()),
        (3, 1),
        "a higher limit serves waiters at once"
    );

    handle.set_limit(1).unwrap();
    gate.open(2);
    for fut in &mut calls {
        let _ = fut.poll();
    }
    assert_eq!(
        (handle.in_flight(), handle.queued()),
        (1, 1),
        "a lower limit admits nobody until below it"
    );
    assert_eq!(handle.set_limit(0).unwrap_err().field(), "limit");
}

#[tokio::test(start_paused = true)]
async fn a_router_shares_one_bulkhead_across_requests() {
    use axum::Router;
    use axum::routing::get;
    use http::{Request, StatusCode};
    use seawall_core::http::ErrorResponseLayer;
    use tower::ServiceBuilder;

    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let (bulkhead, handle) = layer(1, 0).pair();
    let app: Router = Router::new()
        .route(
            "/",
            get(move || {
                let gate = held.clone();
                async move {
                    gate.acquire().await.unwrap().forget();
                    "done"
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(bulkhead),
        );
    let request = || Request::get("/").body(axum::body::Body::empty()).unwrap();
    let mut first = spawn(app.clone().oneshot(request()));
    assert_pending!(first.poll());
    assert_eq!(handle.in_flight(), 1);
    let second = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    gate.add_permits(1);
    assert_eq!(assert_ready_ok!(first.poll()).status(), StatusCode::OK);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_only_waits_for_the_inner_service() {
    let (mock, mut downstream) = tower_test::mock::pair::<u32, u32>();
    let (layer, handle) = layer(1, 0).pair();
    let mut svc = layer.layer(mock);
    downstream.allow(0);
    let mut ready = spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_pending!(ready.poll());
    downstream.allow(1);
    assert_ready_ok!(ready.poll());
    assert_eq!(handle.in_flight(), 0, "readiness takes no slot");
}

/// Polls a future that has already returned `Ready` once more, as a careless caller might. A
/// panic is an answer futures may give; taking a slot is not.
fn poll_again<F: Future>(future: &mut Spawn<F>) {
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.poll()));
    assert!(
        !matches!(again, Ok(std::task::Poll::Ready(_))),
        "a second answer"
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_polled_again_after_its_rejection_takes_no_slot() {
    let gate = Gate::new();
    let (layer, handle) = layer(1, 1).pair();
    let mut svc = layer.layer(gate.service());
    let mut held = call(&mut svc, 0).await;
    assert_pending!(held.poll());
    let mut waiter = call(&mut svc, 1).await;
    assert_pending!(waiter.poll());
    advance(ms(100)).await;
    assert_full(assert_ready!(waiter.poll()));
    poll_again(&mut waiter);
    poll_again(&mut waiter);
    assert_eq!(
        gate.started(),
        1,
        "the rejected call never reaches the downstream"
    );
    assert_eq!(handle.in_flight(), 1);
    drop(waiter);
    assert_eq!(handle.in_flight(), 1, "the held call still has its slot");
    gate.open(1);
    assert_ready_ok!(held.poll());
    assert_eq!(handle.in_flight(), 0, "no slot was counted twice");
    let mut next = call(&mut svc, 2).await;
    assert_pending!(next.poll());
    assert_eq!(handle.in_flight(), 1, "the bulkhead still admits");
}

#[tokio::test(start_paused = true)]
async fn futures_polled_again_after_their_answer_take_no_slot() {
    let gate = Gate::new();
    let (layer, handle) = layer(1, 0).pair();
    let mut svc = layer.layer(gate.service());
    let mut done = call(&mut svc, 0).await;
    let mut full = call(&mut svc, 1).await;
    assert_full(assert_ready!(full.poll()));
    poll_again(&mut full);
    gate.open(1);
    assert_ready_ok!(done.poll());
    poll_again(&mut done);
    assert_eq!(handle.in_flight(), 0);
    drop((done, full));
    assert_eq!(handle.in_flight(), 0);
}

#[test]
fn a_call_that_fails_to_queue_leaves_nothing_in_the_queue() {
    // tokio's timer needs a runtime: here the queued call's `max_wait` timer panics.
    let gate = Gate::new();
    let (layer, handle) = layer(1, 1).pair();
    let mut svc = layer.layer(gate.service());
    let held = svc.call(0);
    let queued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| svc.call(1)));
    assert!(queued.is_err(), "no timer outside a runtime");
    assert_eq!(handle.queued(), 0, "the place in the queue was given up");
    drop(held);
    assert_eq!(handle.in_flight(), 0, "the freed slot went to nobody");
}
