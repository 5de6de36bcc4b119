//! Property tests: the bulkhead against a plain model of a FIFO-queued semaphore, on the paused
//! clock, through random calls, completions, cancellations, waits and limit changes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use proptest::prelude::*;
use seawall_bulkhead::BulkheadLayer;
use seawall_core::testing::paused_runtime;
use seawall_core::{BoxError, RejectionKind, rejected};
use tokio::sync::oneshot;
use tokio_test::task::spawn;
use tower::{Layer, Service, ServiceExt, service_fn};

const MAX_WAIT_MS: u64 = 100;

#[derive(Debug, Clone)]
enum Op {
    Call,
    Finish(usize),
    Drop(usize),
    Advance(u64),
    SetLimit(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Call),
        3 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Drop),
        2 => (1..=120u64).prop_map(Op::Advance),
        1 => (1..=4usize).prop_map(Op::SetLimit),
    ]
}

/// What a FIFO-queued semaphore with a bounded queue and a max wait does.
#[derive(Debug, Default)]
struct Model {
    limit: usize,
    queue_limit: usize,
    now: u64,
    running: Vec<u32>,
    queue: VecDeque<(u32, u64)>,
    rejected: Vec<u32>,
    finished: Vec<u32>,
}

impl Model {
    fn call(&mut self, id: u32) {
        if self.queue.is_empty() && self.running.len() < self.limit {
            self.running.push(id);
        } else if self.queue.len() < self.queue_limit {
            self.queue.push_back((id, self.now + MAX_WAIT_MS));
        } else {
            self.rejected.push(id);
        }
    }

    fn dispatch(&mut self) {
        while self.running.len() < self.limit {
            match self.queue.pop_front() {
                Some((id, _)) => self.running.push(id),
                None => break,
            }
        }
    }

    fn finish(&mut self, id: u32) {
        self.running.retain(|&r| r != id);
        self.finished.push(id);
        self.dispatch();
    }

    fn drop_call(&mut self, id: u32) {
        self.running.retain(|&r| r != id);
        self.queue.retain(|&(q, _)| q != id);
        self.dispatch();
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let now = self.now;
        let (expired, waiting): (VecDeque<_>, VecDeque<_>) = self
            .queue
            .drain(..)
            .partition(|&(_, deadline)| deadline <= now);
        self.rejected.extend(expired.into_iter().map(|(id, _)| id));
        self.queue = waiting;
    }

    fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        self.dispatch();
    }
}

fn run(limit: usize, queue_limit: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = paused_runtime();
    rt.block_on(async move {
        let gates: Arc<Mutex<HashMap<u32, oneshot::Receiver<()>>>> = Arc::default();
        let reached: Arc<Mutex<Vec<u32>>> = Arc::default();
        let downstream = {
            let (gates, reached) = (gates.clone(), reached.clone());
            service_fn(move |id: u32| {
                reached.lock().unwrap().push(id);
                let gate = gates.lock().unwrap().remove(&id).expect("a gate per call");
                async move {
                    let _ = gate.await;
                    Ok::<u32, BoxError>(id)
                }
            })
        };
        let (layer, handle) = BulkheadLayer::builder()
            .max_concurrent(limit)
            .queue_limit(queue_limit)
            .max_wait(Duration::from_millis(MAX_WAIT_MS))
            .build()
            .unwrap()
            .pair();
        let mut svc = layer.layer(downstream);
        let mut model = Model {
            limit,
            queue_limit,
            ..Model::default()
        };
        let mut live = Vec::new();
        let mut senders = HashMap::new();
        let mut next_id = 0u32;

        for op in ops {
            match op {
                Op::Call => {
                    let id = next_id;
                    next_id += 1;
                    let (tx, rx) = oneshot::channel();
                    gates.lock().unwrap().insert(id, rx);
                    senders.insert(id, tx);
                    let fut = spawn(svc.ready().await.unwrap().call(id));
                    live.push((id, fut));
                    model.call(id);
                }
                Op::Finish(i) => {
                    if model.running.is_empty() {
                        continue;
                    }
                    let id = model.running[i % model.running.len()];
                    senders.remove(&id).unwrap().send(()).unwrap();
                    model.finish(id);
                }
                Op::Drop(i) => {
                    if live.is_empty() {
                        continue;
                    }
                    let (id, fut) = live.remove(i % live.len());
                    drop(fut);
                    model.drop_call(id);
                }
                Op::Advance(ms) => {
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    model.advance(ms);
                }
                Op::SetLimit(n) => {
                    handle.set_limit(n).unwrap();
                    model.set_limit(n);
                }
            }

            for _pass in 0..2 {
                let mut still = Vec::new();
                for (id, mut fut) in live.drain(..) {
                    match fut.poll() {
                        Poll::Pending => still.push((id, fut)),
                        Poll::Ready(Ok(answer)) => {
                            prop_assert_eq!(answer, id);
                            prop_assert!(model.finished.contains(&id), "{} finished early", id);
                        }
                        Poll::Ready(Err(err)) => {
                            let kind = rejected(&*err).map(|r| r.kind());
                            prop_assert_eq!(kind, Some(RejectionKind::BulkheadFull));
                            prop_assert!(model.rejected.contains(&id), "{} rejected", id);
                        }
                    }
                }
                live = still;
            }
            for (id, _) in &live {
                prop_assert!(
                    !model.rejected.contains(id) && !model.finished.contains(id),
                    "{} should be done",
                    id
                );
            }
            prop_assert_eq!(handle.in_flight(), model.running.len());
            prop_assert_eq!(handle.queued(), model.queue.len());
            let mut reached_now: Vec<u32> = reached.lock().unwrap().clone();
            reached_now.sort_unstable();
            let mut running_reached: Vec<u32> = model.running.clone();
            running_reached.retain(|id| live.iter().any(|(l, _)| l == id));
            for id in &running_reached {
                prop_assert!(
                    reached_now.contains(id),
                    "{} holds a slot but never ran",
                    id
                );
            }
            for (id, _) in model.queue.iter() {
                prop_assert!(!reached_now.contains(id), "{} ran while queued", id);
            }
        }
        drop(live);
        prop_assert_eq!(handle.in_flight(), 0);
        prop_assert_eq!(handle.queued(), 0);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_bulkhead_behaves_as_a_fifo_semaphore_with_a_bounded_queue(
        limit in 1..=4usize,
        queue_limit in 0..=4usize,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(limit, queue_limit, ops)?;
    }
}
