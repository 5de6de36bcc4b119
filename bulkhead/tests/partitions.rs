//! Partitioned bulkheads: shares, borrowing, and who is served first.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seawall_bulkhead::{BulkheadConfigBuilder, BulkheadHandle, BulkheadLayer, PartitionFn};
use seawall_core::{BoxError, RejectionKind, rejected};
use tokio::sync::Semaphore;
use tokio_test::task::{Spawn, spawn};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};

const LIVE: usize = 0;
const BATCH: usize = 1;

/// A request: its partition and a number.
type Req = (usize, u32);

fn builder() -> BulkheadConfigBuilder<BulkheadLayer> {
    BulkheadLayer::builder()
        .name("api")
        .max_concurrent(10)
        .partition("live", 0.9)
        .partition("batch", 0.1)
}

type Partitioned = BulkheadLayer<seawall_core::classify::AnyError, PartitionFn<fn(&Req) -> usize>>;

fn partitioned(builder: BulkheadConfigBuilder<BulkheadLayer>) -> (Partitioned, BulkheadHandle) {
    let key: fn(&Req) -> usize = |req| req.0;
    builder.build().unwrap().partition_by(key).pair()
}

/// A downstream whose calls finish when the test opens the gate; it records the order in
/// which calls reached it.
#[derive(Clone)]
struct Gate {
    gate: Arc<Semaphore>,
    reached: Arc<Mutex<Vec<Req>>>,
}

impl Gate {
    fn new() -> Self {
        Self {
            gate: Arc::new(Semaphore::new(0)),
            reached: Arc::default(),
        }
    }

    fn service(
        &self,
    ) -> impl Service<Req, Response = Req, Error = BoxError, Future = impl Future + Send> + Clone
    {
        let this = self.clone();
        service_fn(move |req: Req| {
            this.reached.lock().unwrap().push(req);
            let gate = this.gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, BoxError>(req)
            }
        })
    }

    fn reached(&self) -> Vec<Req> {
        self.reached.lock().unwrap().clone()
    }
}

async fn call<S>(svc: &mut S, req: Req) -> Spawn<S::Future>
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    spawn(svc.ready().await.unwrap().call(req))
}

fn is_full<T>(result: Result<T, BoxError>) -> bool {
    result
        .is_err_and(|err| rejected(&*err).is_some_and(|r| r.kind() == RejectionKind::BulkheadFull))
}

#[tokio::test(start_paused = true)]
async fn without_borrowing_a_noisy_partition_gets_only_its_share() {
    let gate = Gate::new();
    let (layer, handle) = partitioned(builder().borrowing(false));
    let mut svc = layer.layer(gate.service());
    let mut batch = call(&mut svc, (BATCH, 0)).await;
    assert_pending!(batch.poll());
    let mut more = call(&mut svc, (BATCH, 1)).await;
    assert!(
        is_full(assert_ready!(more.poll())),
        "batch's share is one slot"
    );

    let mut live = Vec::new();
    for i in 0..9 {
        let mut fut = call(&mut svc, (LIVE, i)).await;
        assert_pending!(fut.poll());
        live.push(fut);
    }
    assert_eq!(handle.partition_in_flight("live"), Some(9));
    assert_eq!(handle.partition_in_flight("batch"), Some(1));
    assert_eq!(handle.in_flight(), 10);
    let mut over = call(&mut svc, (LIVE, 9)).await;
    assert!(
        is_full(assert_ready!(over.poll())),
        "the total stays at the limit"
    );
}

#[tokio::test(start_paused = true)]
async fn with_borrowing_an_idle_share_is_used() {
    let gate = Gate::new();
    let (layer, handle) = partitioned(builder());
    let mut svc = layer.layer(gate.service());
    let mut batch = Vec::new();
    for i in 0..10 {
        let mut fut = call(&mut svc, (BATCH, i)).await;
        assert_pending!(fut.poll());
        batch.push(fut);
    }
    assert_eq!(handle.partition_in_flight("batch"), Some(10));
    let mut over = call(&mut svc, (LIVE, 0)).await;
    assert!(
        is_full(assert_ready!(over.poll())),
        "borrowed slots are given back as calls finish, never beyond the limit"
    );
}

#[tokio::test(start_paused = true)]
async fn a_partition_below_its_share_is_served_before_borrowers() {
    let gate = Gate::new();
    let (layer, handle) = partitioned(builder().queue_limit(20).max_wait(Duration::from_secs(5)));
    let mut svc = layer.layer(gate.service());
    let mut running = Vec::new();
    for i in 0..10 {
        let mut fut = call(&mut svc, (BATCH, i)).await;
        assert_pending!(fut.poll());
        running.push(fut);
    }
    // Batch queues first (its share of the queue is 2 places), then live.
    let mut batch_waiter = call(&mut svc, (BATCH, 10)).await;
    assert_pending!(batch_waiter.poll());
    let mut live_waiter = call(&mut svc, (LIVE, 0)).await;
    assert_pending!(live_waiter.poll());
    assert_eq!(handle.queued(), 2);

    gate.gate.add_permits(1);
    assert_ready_ok!(running[0].poll());
    assert!(
        live_waiter.is_woken(),
        "live is below its share: served first"
    );
    assert!(!batch_waiter.is_woken());
    assert_pending!(live_waiter.poll());
    assert_eq!(gate.reached().last(), Some(&(LIVE, 0)));
    assert_eq!(handle.partition_in_flight("live"), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_partition_queues_only_its_share_of_the_queue() {
    let gate = Gate::new();
    let (layer, handle) = partitioned(builder().queue_limit(10));
    let mut svc = layer.layer(gate.service());
    let mut running = Vec::new();
    for i in 0..10 {
        let mut fut = call(&mut svc, (LIVE, i)).await;
        assert_pending!(fut.poll());
        running.push(fut);
    }
    let mut batch_waiter = call(&mut svc, (BATCH, 0)).await;
    assert_pending!(batch_waiter.poll());
    let mut batch_over = call(&mut svc, (BATCH, 1)).await;
    assert!(
        is_full(assert_ready!(batch_over.poll())),
        "batch may queue one call"
    );
    let mut live_waiter = call(&mut svc, (LIVE, 10)).await;
    assert_pending!(live_waiter.poll());
    assert_eq!(handle.queued(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_index_past_the_last_partition_counts_as_the_last() {
    let gate = Gate::new();
    let (layer, handle) = partitioned(builder().borrowing(false));
    let mut svc = layer.layer(gate.service());
    let mut fut = call(&mut svc, (7, 0)).await;
    assert_pending!(fut.poll());
    assert_eq!(handle.partition_in_flight("batch"), Some(1));
    assert_eq!(handle.partition_in_flight("nope"), None);
}

#[tokio::test(start_paused = true)]
async fn the_rejection_hook_names_the_partition() {
    let gate = Gate::new();
    let heard = Arc::new(AtomicUsize::new(0));
    let count = heard.clone();
    let (layer, _handle) = partitioned(builder().borrowing(false));
    let layer = layer.on_rejected(move |event| {
        assert_eq!(event.partition, Some("batch"));
        count.fetch_add(1, Ordering::SeqCst);
    });
    let mut svc = layer.layer(gate.service());
    let mut first = call(&mut svc, (BATCH, 0)).await;
    assert_pending!(first.poll());
    let mut second = call(&mut svc, (BATCH, 1)).await;
    assert!(is_full(assert_ready!(second.poll())));
    assert_eq!(heard.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn partition_shares_follow_a_changed_limit() {
    let gate = Gate::new();
    let (layer, handle) = partitioned(builder().borrowing(false));
    handle.set_limit(20).unwrap();
    let mut svc = layer.layer(gate.service());
    let mut batch = Vec::new();
    for i in 0..2 {
        let mut fut = call(&mut svc, (BATCH, i)).await;
        assert_pending!(fut.poll());
        batch.push(fut);
    }
    let mut over = call(&mut svc, (BATCH, 2)).await;
    assert!(is_full(assert_ready!(over.poll())), "10 % of 20 is 2");
}
