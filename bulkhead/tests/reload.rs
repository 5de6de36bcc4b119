//! A live bulkhead takes a new limit, queue and wait through its handle without losing the
//! calls in flight or in the queue.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use seawall_bulkhead::{AimdConfig, BulkheadConfig, BulkheadLayer};
use seawall_core::{BoxError, RejectionKind, rejected};
use tokio::sync::Semaphore;
use tokio_test::task::{Spawn, spawn};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};

fn config(limit: usize, queue: usize) -> BulkheadConfig {
    BulkheadConfig::builder()
        .name("db")
        .max_concurrent(limit)
        .queue_limit(queue)
        .max_wait(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// A downstream whose calls finish only when the test adds permits to the gate.
fn gated(
    gate: Arc<Semaphore>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future = impl Future + Send> + Clone {
    service_fn(move |req: u32| {
        let gate = gate.clone();
        async move {
            gate.acquire().await.unwrap().forget();
            Ok::<_, BoxError>(req)
        }
    })
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
}

#[tokio::test(start_paused = true)]
async fn a_lowered_limit_keeps_the_calls_in_flight_and_admits_below_it() {
    let gate = Arc::new(Semaphore::new(0));
    let (layer, handle) = BulkheadLayer::new(config(3, 0)).pair();
    let mut svc = layer.layer(gated(gate.clone()));
    let mut calls = Vec::new();
    for n in 0..3 {
        let mut c = call(&mut svc, n).await;
        assert_pending!(c.poll());
        calls.push(c);
    }
    handle.reload(config(1, 0)).unwrap();
    assert_eq!(handle.limit(), 1);
    assert_eq!(
        handle.in_flight(),
        3,
        "the calls in flight keep their slots"
    );
    assert_full(assert_ready!(call(&mut svc, 9).await.poll()));

    gate.add_permits(3);
    for (n, mut c) in calls.into_iter().enumerate() {
        assert_eq!(
            assert_ready_ok!(c.poll()),
            n as u32,
            "no call fails for a reload"
        );
    }
    assert_eq!(handle.in_flight(), 0);
    let mut next = call(&mut svc, 10).await;
    assert_pending!(next.poll());
    assert_full(assert_ready!(call(&mut svc, 11).await.poll()));
}

#[tokio::test(start_paused = true)]
async fn a_raised_limit_and_queue_take_effect_at_once() {
    let gate = Arc::new(Semaphore::new(0));
    let (layer, handle) = BulkheadLayer::new(config(1, 0)).pair();
    let mut svc = layer.layer(gated(gate.clone()));
    let mut a = call(&mut svc, 1).await;
    assert_pending!(a.poll());
    assert_full(assert_ready!(call(&mut svc, 2).await.poll()));

    handle.reload(config(2, 1)).unwrap();
    assert_eq!(handle.config().queue_limit(), 1);
    let mut b = call(&mut svc, 2).await;
    assert_pending!(b.poll());
    let mut c = call(&mut svc, 3).await;
    assert_pending!(c.poll());
    assert_eq!((handle.in_flight(), handle.queued()), (2, 1));
    assert_full(assert_ready!(call(&mut svc, 4).await.poll()));

    gate.add_permits(3);
    assert_eq!(assert_ready_ok!(a.poll()), 1);
    assert_eq!(assert_ready_ok!(b.poll()), 2);
    assert_eq!(assert_ready_ok!(c.poll()), 3, "the queued call runs");
}

#[tokio::test(start_paused = true)]
async fn a_shorter_queue_keeps_the_calls_waiting_in_it() {
    let gate = Arc::new(Semaphore::new(0));
    let (layer, handle) = BulkheadLayer::new(config(1, 2)).pair();
    let mut svc = layer.layer(gated(gate.clone()));
    let mut a = call(&mut svc, 1).await;
    assert_pending!(a.poll());
    let mut b = call(&mut svc, 2).await;
    assert_pending!(b.poll());
    let mut c = call(&mut svc, 3).await;
    assert_pending!(c.poll());

    handle.reload(config(1, 0)).unwrap();
    assert_eq!(handle.queued(), 2, "the waiting calls keep their places");
    assert_full(assert_ready!(call(&mut svc, 4).await.poll()));
    gate.add_permits(3);
    assert_eq!(assert_ready_ok!(a.poll()), 1);
    assert_eq!(assert_ready_ok!(b.poll()), 2);
    assert_eq!(assert_ready_ok!(c.poll()), 3);
}

#[tokio::test(start_paused = true)]
async fn a_longer_wait_applies_to_the_next_queued_call() {
    let gate = Arc::new(Semaphore::new(0));
    let (layer, handle) = BulkheadLayer::new(config(1, 1)).pair();
    let mut svc = layer.layer(gated(gate.clone()));
    let mut a = call(&mut svc, 1).await;
    assert_pending!(a.poll());

    let longer = BulkheadConfig::builder()
        .name("db")
        .max_concurrent(1)
        .queue_limit(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    handle.reload(longer).unwrap();
    let mut b = call(&mut svc, 2).await;
    assert_pending!(b.poll());
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_pending!(b.poll(), "the new wait of 1 s holds, not the old 100 ms");
    gate.add_permits(2);
    assert_eq!(assert_ready_ok!(a.poll()), 1);
    assert_eq!(assert_ready_ok!(b.poll()), 2);
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_changes_what_needs_a_restart_is_refused_and_the_old_config_stays() {
    let (layer, handle) = BulkheadLayer::new(config(4, 2)).pair();
    let _svc = layer.layer(gated(Arc::new(Semaphore::new(0))));

    let other_name = BulkheadConfig::builder()
        .name("cache")
        .max_concurrent(8)
        .build()
        .unwrap();
    assert_eq!(handle.reload(other_name).unwrap_err().field(), "name");

    let adaptive = BulkheadConfig::builder()
        .name("db")
        .adaptive(AimdConfig::new().initial(4).min(1).max(8))
        .build()
        .unwrap();
    assert_eq!(handle.reload(adaptive).unwrap_err().field(), "adaptive");

    let partitioned = BulkheadConfig::builder()
        .name("db")
        .max_concurrent(8)
        .partition("a", 0.5)
        .partition("b", 0.5)
        .build()
        .unwrap();
    assert_eq!(
        handle.reload(partitioned.clone()).unwrap_err().field(),
        "partitions"
    );
    assert_eq!(
        handle.check_reload(&partitioned).unwrap_err().field(),
        "partitions"
    );

    assert_eq!(handle.limit(), 4, "the old limit stays");
    assert_eq!(handle.config().queue_limit(), 2, "the old queue stays");
    handle.check_reload(&config(8, 0)).unwrap();
    assert_eq!(handle.limit(), 4, "a check changes nothing");
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_keeps_the_limit_it_reached_within_its_new_bounds() {
    let adaptive = |min: usize, max: usize| {
        BulkheadConfig::builder()
            .name("db")
            .adaptive(AimdConfig::new().initial(min.max(10)).min(min).max(max))
            .build()
            .unwrap()
    };
    let (_layer, handle) = BulkheadLayer::new(adaptive(1, 50)).pair();
    handle.set_limit(30).unwrap();

    handle.reload(adaptive(1, 40)).unwrap();
    assert_eq!(
        handle.limit(),
        30,
        "the limit reached stays within the new bounds"
    );
    handle.reload(adaptive(1, 20)).unwrap();
    assert_eq!(handle.limit(), 20, "clamped to the new max");
    assert!(
        handle.set_limit(25).is_err(),
        "the new max bounds the handle too"
    );
    handle.reload(adaptive(22, 40)).unwrap();
    assert_eq!(handle.limit(), 22, "raised to the new min");
}

async fn echo(n: u32) -> Result<u32, BoxError> {
    tokio::task::yield_now().await;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_racing_calls_lose_no_call() {
    let (layer, handle) = BulkheadLayer::new(config(8, 64)).pair();
    let done = Arc::new(AtomicUsize::new(0));
    let svc = layer.layer(service_fn(echo));
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let svc = svc.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..200 {
                let _ = svc.clone().oneshot(t * 1000 + n).await;
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for i in 0..100 {
        handle.reload(config(4 + i % 8, 64)).unwrap();
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 800);
    assert_eq!(handle.in_flight(), 0, "every slot came back");
    assert_eq!(handle.queued(), 0);
}
