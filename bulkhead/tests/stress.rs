//! Many threads, thousands of calls, random drops, cancellations, failures and futures polled
//! again after their answer: the limit holds and every slot comes back, exactly once.

mod invariants;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use seawall_bulkhead::{AimdConfig, BulkheadHandle, BulkheadLayer};
use seawall_core::BoxError;
use tower::{Layer, Service, ServiceExt, service_fn};

const CLIENTS: u64 = 16;
const CALLS_PER_CLIENT: u64 = 400;

/// Counts the calls inside the downstream and remembers the most at once.
#[derive(Clone, Default)]
struct Watch {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    by_partition: Arc<[AtomicUsize; 2]>,
    most_by_partition: Arc<[AtomicUsize; 2]>,
}

struct Inside(Watch, usize);

impl Inside {
    fn enter(watch: &Watch, partition: usize) -> Self {
        let n = watch.now.fetch_add(1, Ordering::SeqCst) + 1;
        watch.most.fetch_max(n, Ordering::SeqCst);
        let p = watch.by_partition[partition].fetch_add(1, Ordering::SeqCst) + 1;
        watch.most_by_partition[partition].fetch_max(p, Ordering::SeqCst);
        Self(watch.clone(), partition)
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
        self.0.by_partition[self.1].fetch_sub(1, Ordering::SeqCst);
    }
}

/// A downstream that yields a few times, and sometimes fails.
fn downstream(
    watch: Watch,
) -> impl Service<(usize, u8), Response = (), Error = BoxError, Future = impl Future + Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |(partition, yields): (usize, u8)| {
        let inside = Inside::enter(&watch, partition);
        async move {
            let _inside = inside;
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            if yields % 7 == 0 {
                Err::<(), BoxError>("failed".into())
            } else {
                Ok(())
            }
        }
    })
}

/// Polls `fut` at most `polls` times, then drops it: a caller that gives up.
struct GiveUpAfter<F> {
    fut: Pin<Box<F>>,
    polls: u8,
}

impl<F: Future> Future for GiveUpAfter<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polls == 0 {
            return Poll::Ready(None);
        }
        self.polls -= 1;
        match self.fut.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Awaits a future, then polls it once more: it may panic (futures may), but never answer
/// twice.
struct PollAgain<F>(Pin<Box<F>>);

impl<F: Future> Future for PollAgain<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let _ = std::task::ready!(self.0.as_mut().poll(cx));
        let fut = self.0.as_mut();
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx)));
        assert!(!matches!(again, Ok(Poll::Ready(_))), "a second answer");
        Poll::Ready(())
    }
}

async fn hammer<S>(svc: S, seed: u64, partitions: usize)
where
    S: Service<(usize, u8), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut rng = SmallRng::seed_from_u64(seed);
    for _ in 0..CALLS_PER_CLIENT {
        let partition = rng.random_range(0..partitions);
        let yields = rng.random_range(0..12u8);
        let call = svc.clone().oneshot((partition, yields));
        match rng.random_range(0..10) {
            // Dropped before it is ever polled.
            0 => drop(call),
            // Polled once more after its answer, as a careless caller might (the bulkhead's own
            // future: `Oneshot` guards itself).
            4 => {
                drop(call);
                let mut svc = svc.clone();
                if let Ok(ready) = svc.ready().await {
                    PollAgain(Box::pin(ready.call((partition, yields)))).await;
                }
            }
            // Given up on after a few polls: in the queue, or in flight.
            1..=3 => {
                let polls = rng.random_range(1..6);
                let _ = GiveUpAfter {
                    fut: Box::pin(call),
                    polls,
                }
                .await;
            }
            _ => {
                let _ = call.await;
            }
        }
        if rng.random_bool(0.3) {
            tokio::task::yield_now().await;
        }
    }
}

async fn run<S>(svc: S, partitions: usize, handle: &BulkheadHandle, limit: usize)
where
    S: Service<(usize, u8), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let monitor = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..2000 {
                most = most.max(handle.in_flight());
                tokio::task::yield_now().await;
            }
            most
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|seed| tokio::spawn(hammer(svc.clone(), seed, partitions)))
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    invariants::within_limit(monitor.await.unwrap(), limit);
    invariants::every_slot_back(handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limit_holds_and_every_slot_comes_back() {
    let watch = Watch::default();
    let (layer, handle) = BulkheadLayer::builder()
        .max_concurrent(8)
        .queue_limit(4)
        .max_wait(Duration::from_millis(2))
        .build()
        .unwrap()
        .pair();
    run(layer.layer(downstream(watch.clone())), 1, &handle, 8).await;
    let most = watch.most.load(Ordering::SeqCst);
    invariants::within_limit(most, 8);
    assert!(most > 1, "the stress test made calls overlap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_hold_their_shares_and_every_slot_comes_back() {
    let watch = Watch::default();
    let (layer, handle) = BulkheadLayer::builder()
        .max_concurrent(10)
        .queue_limit(20)
        .max_wait(Duration::from_millis(2))
        .partition("live", 0.7)
        .partition("batch", 0.3)
        .borrowing(false)
        .build()
        .unwrap()
        .partition_by(|req: &(usize, u8)| req.0)
        .pair();
    run(layer.layer(downstream(watch.clone())), 2, &handle, 10).await;
    invariants::within_limit(watch.most.load(Ordering::SeqCst), 10);
    assert!(watch.most_by_partition[0].load(Ordering::SeqCst) <= 7);
    assert!(watch.most_by_partition[1].load(Ordering::SeqCst) <= 3);
    assert_eq!(handle.partition_in_flight("live"), Some(0));
    assert_eq!(handle.partition_in_flight("batch"), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_borrowing_adaptive_bulkhead_gives_every_slot_back() {
    let watch = Watch::default();
    let (layer, handle) = BulkheadLayer::builder()
        .adaptive(AimdConfig::new().initial(8).min(2).max(16))
        .sample_window(Duration::from_millis(100))
        .queue_limit(20)
        .max_wait(Duration::from_millis(2))
        .partition("live", 0.5)
        .partition("batch", 0.5)
        .build()
        .unwrap()
        .partition_by(|req: &(usize, u8)| req.0)
        .pair();
    run(layer.layer(downstream(watch.clone())), 2, &handle, 16).await;
    invariants::within_limit(watch.most.load(Ordering::SeqCst), 16);
    assert_eq!(handle.partition_in_flight("live"), Some(0));
    assert_eq!(handle.partition_in_flight("batch"), Some(0));
}
