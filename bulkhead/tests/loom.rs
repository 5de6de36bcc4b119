//! loom models of the bulkhead's semaphore: the fast path, the queue and its hand-off, a
//! waiter that gives up, and limit changes; and of an adaptive limit's samples, which calls
//! add without a lock while one of them closes the window. Each runs over the crate's real
//! code under every interleaving of two or three threads (within a preemption bound, as
//! tokio's own models).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p seawall-bulkhead --test loom`.
//! Under `--cfg loom` the semaphore's atomics and lock are loom's (`seawall_core::sync`); a
//! waiter that blocks is parked by loom, so a lost wake-up fails the model as a deadlock.
//! Time is tokio's paused clock (a queued call's max-wait timer never fires in a model).
#![cfg(loom)]

mod invariants;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use seawall_bulkhead::{BulkheadHandle, BulkheadLayer, VegasConfig};
use seawall_core::BoxError;
use tower::{Layer, Service, ServiceExt, service_fn};

use invariants::*;

/// Runs `f` under every interleaving loom explores, on a paused clock.
fn model(preemptions: usize, f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(move || {
        // A runtime per execution: what it holds (a breaker's timer task, a queued call's
        // timer) goes with the execution's loom objects. loom runs the execution's threads on
        // this thread, so they all read this runtime's clock.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _clock = runtime.enter();
        f();
    });
}

/// Counts the calls inside the downstream and the most at once.
#[derive(Default)]
struct Inside {
    now: AtomicUsize,
    most: AtomicUsize,
}

type Svc = tower::util::BoxCloneSyncService<(), (), BoxError>;

/// A bulkhead of `limit` slots and `queue` places over a downstream that counts its calls.
fn bulkhead(limit: usize, queue: usize) -> (Svc, BulkheadHandle, Arc<Inside>) {
    let (layer, handle) = BulkheadLayer::builder()
        .name("loom")
        .max_concurrent(limit)
        .queue_limit(queue)
        .build()
        .unwrap()
        .pair();
    let (svc, inside) = over_downstream(layer);
    (svc, handle, inside)
}

/// A bulkhead with an adaptive limit (Vegas) from `initial` to at most `max`, no queue.
fn adaptive(initial: usize, max: usize) -> (Svc, BulkheadHandle, Arc<Inside>) {
    let (layer, handle) = BulkheadLayer::builder()
        .name("loom")
        .adaptive(VegasConfig::new().initial(initial).max(max))
        .build()
        .unwrap()
        .pair();
    let (svc, inside) = over_downstream(layer);
    (svc, handle, inside)
}

/// `layer` over a downstream that counts its calls.
fn over_downstream(layer: BulkheadLayer) -> (Svc, Arc<Inside>) {
    let inside = Arc::new(Inside::default());
    let counted = inside.clone();
    let svc = layer.layer(service_fn(move |()| {
        let n = counted.now.fetch_add(1, Ordering::SeqCst) + 1;
        counted.most.fetch_max(n, Ordering::SeqCst);
        counted.now.fetch_sub(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, BoxError>(()))
    }));
    let svc = tower::util::BoxCloneSyncService::new(svc.map_response(|_| ()));
    (svc, inside)
}

/// A call admitted now, holding its slot until it is run or dropped.
fn hold(svc: &mut Svc) -> <Svc as Service<()>>::Future {
    svc.call(())
}

/// Polls `fut` once, with a waker that does nothing.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn a_released_slot_reaches_a_queued_waiter_without_a_lost_wake_up() {
    model(3, || {
        let (mut svc, handle, inside) = bulkhead(1, 1);
        let held = hold(&mut svc);
        let waiting = {
            let svc = svc.clone();
            // Queued (or admitted, if the slot came back first) and parked until served.
            thread::spawn(move || loom::future::block_on(svc.oneshot(())).unwrap())
        };
        let releasing = thread::spawn(move || loom::future::block_on(held).unwrap());
        waiting.join().unwrap();
        releasing.join().unwrap();
        within_limit(inside.most.load(Ordering::SeqCst), 1);
        every_slot_back(&handle);
    });
}

#[test]
fn a_waiter_that_gives_up_loses_no_slot_and_takes_none_twice() {
    model(3, || {
        let (mut svc, handle, inside) = bulkhead(1, 1);
        let held = hold(&mut svc);
        let giving_up = {
            let mut svc = svc.clone();
            thread::spawn(move || {
                let mut queued = svc.call(());
                // Served by then or not, it leaves.
                let _ = poll_once(&mut queued);
            })
        };
        let releasing = thread::spawn(move || drop(held));
        giving_up.join().unwrap();
        releasing.join().unwrap();
        every_slot_back(&handle);
        within_limit(inside.most.load(Ordering::SeqCst), 1);
        // The one slot is free: a call gets it at once.
        let mut next = hold(&mut svc);
        assert!(matches!(poll_once(&mut next), Poll::Ready(Ok(()))));
    });
}

#[test]
fn two_releases_serve_two_waiters_once_each() {
    model(2, || {
        let (mut svc, handle, inside) = bulkhead(2, 2);
        let first = hold(&mut svc);
        let second = hold(&mut svc);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let svc = svc.clone();
                thread::spawn(move || loom::future::block_on(svc.oneshot(())).unwrap())
            })
            .collect();
        drop(first);
        drop(second);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        within_limit(inside.most.load(Ordering::SeqCst), 2);
        every_slot_back(&handle);
    });
}

#[test]
fn limit_changes_racing_with_releases_keep_the_limit_and_every_slot() {
    model(2, || {
        let (mut svc, handle, inside) = bulkhead(1, 2);
        let held = hold(&mut svc);
        let waiting = {
            let svc = svc.clone();
            thread::spawn(move || loom::future::block_on(svc.oneshot(())).unwrap())
        };
        let resizing = {
            let handle = handle.clone();
            thread::spawn(move || {
                handle.set_limit(2).unwrap();
                handle.set_limit(1).unwrap();
            })
        };
        drop(held);
        waiting.join().unwrap();
        resizing.join().unwrap();
        within_limit(inside.most.load(Ordering::SeqCst), 2);
        every_slot_back(&handle);
        assert_eq!(handle.limit(), 1);
    });
}

#[test]
fn calls_finishing_at_once_close_the_window_once_and_give_every_slot_back() {
    model(2, || {
        let (mut svc, handle, inside) = adaptive(2, 4);
        let first = hold(&mut svc);
        let second = hold(&mut svc);
        // The first call to finish closes the first window (under the algorithm's lock); the
        // other adds its sample without it, or finds the window closed, while a handle takes
        // the lock to set the limit.
        let finishing = thread::spawn(move || loom::future::block_on(first).unwrap());
        let resizing = {
            let handle = handle.clone();
            thread::spawn(move || handle.set_limit(3).unwrap())
        };
        loom::future::block_on(second).unwrap();
        finishing.join().unwrap();
        resizing.join().unwrap();
        every_slot_back(&handle);
        within_limit(inside.most.load(Ordering::SeqCst), 2);
        assert!(
            (1..=4).contains(&handle.limit()),
            "limit {}",
            handle.limit()
        );
    });
}
