//! The bulkhead's semaphore: an atomic count of slots for the uncontended path, a FIFO queue
//! of waiters behind a lock for the rest.
//!
//! Why not `tokio::sync::Semaphore`: its acquire future is an unnameable type, so a response
//! future holding one would have to be boxed; its limit can only grow (an adaptive limit must
//! also shrink, with calls in flight); and it knows nothing of partitions. What we need is
//! small: taking a slot is one compare-and-swap on the in-flight count while nobody waits;
//! only a call that finds the bulkhead full takes the lock, to queue.
//!
//! Waking is a hand-off: a released slot is given to the waiter under the lock (the count
//! stays up), so a woken waiter owns its slot before it even runs, and a new arrival can never
//! steal it. A waiter dropped after it was given a slot passes the slot on as a release would.
//!
//! Partitions: each has its own in-flight count and a reserved number of slots,
//! `⌈share × limit⌉`. With borrowing, a partition may use any free slot, and when a slot
//! frees, waiters of partitions below their share are served before anyone else's; without
//! borrowing, a partition never holds more than its share. The total never exceeds the limit.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError};
use std::task::Context;

use futures::task::AtomicWaker;
use metrics::Gauge;
use seawall_core::metrics::{look_for_recorder, recorder_installed};
use seawall_core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use seawall_core::sync::{Mutex, MutexGuard};

use crate::config::PartitionConfig;

#[derive(Debug)]
pub(crate) struct Semaphore {
    // Written by every call; on a cache line of its own so that reading the limit and the
    // queue length, which rarely change, does not miss the cache each time it moves.
    in_flight: CacheLine<AtomicUsize>,
    limit: AtomicUsize,
    queued: AtomicUsize,
    queue_limit: AtomicUsize,
    borrowing: bool,
    partitions: Box<[Partition]>,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
    /// Whether the in-flight gauge is kept: a recorder has been seen. Without one, updating
    /// it (a stand-in handle's atomics and its check for a recorder, twice a call) was 106 of
    /// the 443 instructions of an uncontended call, against 252 for tower's
    /// `ConcurrencyLimit` (callgrind, `benches/callgrind.sh bulkhead`).
    gauged: AtomicBool,
    in_flight_gauge: Gauge,
    queued_gauge: Gauge,
}

/// A value aligned to (two) cache lines, as `crossbeam`'s `CachePadded` on x86-64.
#[derive(Debug)]
#[repr(align(128))]
struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Debug)]
struct Partition {
    share: f64,
    in_flight: AtomicUsize,
    queue_room: AtomicUsize,
    queued: AtomicUsize,
}

/// A partition's part of a queue of `queue_limit`: at least one place when there is a queue.
fn queue_room(queue_limit: usize, share: f64) -> usize {
    if queue_limit == 0 {
        0
    } else {
        ((queue_limit as f64 * share).ceil() as usize).max(1)
    }
}

impl Partition {
    fn reserved(&self, limit: usize) -> usize {
        (limit as f64 * self.share).ceil() as usize
    }
}

/// A call waiting for a slot.
#[derive(Debug)]
pub(crate) struct Waiter {
    partition: Option<usize>,
    granted: AtomicBool,
    waker: AtomicWaker,
}

/// What a call gets when it asks for a slot.
#[derive(Debug)]
pub(crate) enum Acquired {
    /// A slot, with the number of calls in flight counting this one.
    Now(usize),
    /// A place in the queue.
    Queued(Arc<Waiter>),
    /// Nothing: the bulkhead and its queue are full.
    Full,
}

/// Gauges the semaphore keeps current.
#[derive(Debug)]
pub(crate) struct Gauges {
    pub(crate) in_flight: Gauge,
    pub(crate) queued: Gauge,
}

impl Semaphore {
    pub(crate) fn new(
        limit: usize,
        queue_limit: usize,
        borrowing: bool,
        partitions: &[PartitionConfig],
        gauges: Gauges,
    ) -> Self {
        let partitions = partitions
            .iter()
            .map(|p| Partition {
                share: p.share,
                in_flight: AtomicUsize::new(0),
                queue_room: AtomicUsize::new(queue_room(queue_limit, p.share)),
                queued: AtomicUsize::new(0),
            })
            .collect();
        Self {
            in_flight: CacheLine(AtomicUsize::new(0)),
            limit: AtomicUsize::new(limit),
            queued: AtomicUsize::new(0),
            queue_limit: AtomicUsize::new(queue_limit),
            borrowing,
            partitions,
            queue: Mutex::new(VecDeque::new()),
            gauged: AtomicBool::new(recorder_installed()),
            in_flight_gauge: gauges.in_flight,
            queued_gauge: gauges.queued,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(SeqCst)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(SeqCst)
    }

    pub(crate) fn partition_in_flight(&self, partition: usize) -> Option<usize> {
        self.partitions
            .get(partition)
            .map(|p| p.in_flight.load(SeqCst))
    }

    pub(crate) fn partitions(&self) -> usize {
        self.partitions.len()
    }

    /// Maps a partition key's index to a partition: out-of-range indexes go to the last one.
    pub(crate) fn partition_of(&self, index: usize) -> Option<usize> {
        let n = self.partitions.len();
        (n > 0).then(|| index.min(n - 1))
    }

    /// Takes a slot at once if one is free and nobody waits; queues the call otherwise, if
    /// there is room.
    #[inline]
    pub(crate) fn acquire(&self, partition: Option<usize>) -> Acquired {
        if self.queued.load(SeqCst) == 0 {
            if let Some(in_flight) = self.try_take(partition) {
                return Acquired::Now(in_flight);
            }
            if self.queue_limit.load(SeqCst) == 0 {
                return Acquired::Full;
            }
        }
        self.acquire_slow(partition)
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(&self, partition: Option<usize>) -> Acquired {
        let mut queue = self.lock();
        // Whatever changed since the fast path (a release, a transient count of ours undone)
        // is settled here, under the lock, before deciding.
        self.dispatch(&mut queue);
        if queue.is_empty()
            && let Some(in_flight) = self.try_take(partition)
        {
            return Acquired::Now(in_flight);
        }
        let room = match partition.map(|p| &self.partitions[p]) {
            Some(p) => p.queued.load(SeqCst) < p.queue_room.load(SeqCst),
            None => true,
        };
        if queue.len() >= self.queue_limit.load(SeqCst) || !room {
            return Acquired::Full;
        }
        let waiter = Arc::new(Waiter {
            partition,
            granted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.queued.fetch_add(1, SeqCst);
        if let Some(p) = partition {
            self.partitions[p].queued.fetch_add(1, SeqCst);
        }
        self.queued_gauge.increment(1.0);
        queue.push_back(waiter.clone());
        // A slot may have been released between `try_take` and the count above.
        self.dispatch(&mut queue);
        if waiter.granted.load(SeqCst) {
            return Acquired::Now(self.in_flight());
        }
        Acquired::Queued(waiter)
    }

    /// Takes a slot for `partition` if the limits allow, and returns the calls in flight.
    #[inline]
    fn try_take(&self, partition: Option<usize>) -> Option<usize> {
        let limit = self.limit.load(SeqCst);
        let partition = partition.map(|p| &self.partitions[p]);
        if let Some(p) = partition {
            let cap = if self.borrowing {
                limit
            } else {
                p.reserved(limit)
            };
            increment_below(&p.in_flight, cap)?;
        }
        match increment_below(&self.in_flight, limit) {
            Some(in_flight) => {
                if self.gauged() {
                    self.in_flight_gauge.increment(1.0);
                }
                Some(in_flight)
            }
            None => {
                if let Some(p) = partition {
                    // Undoing may leave a waiter unserved; whoever undoes goes on to the lock
                    // (or already holds it), where `dispatch` runs again.
                    p.in_flight.fetch_sub(1, SeqCst);
                }
                None
            }
        }
    }

    /// Gives free slots to waiters: first to those whose partition is below its share, then
    /// in arrival order.
    fn dispatch(&self, queue: &mut VecDeque<Arc<Waiter>>) {
        if queue.is_empty() {
            return;
        }
        if self.borrowing && !self.partitions.is_empty() {
            let limit = self.limit.load(SeqCst);
            queue.retain(|waiter| {
                let below_share = waiter.partition.is_some_and(|p| {
                    let p = &self.partitions[p];
                    p.in_flight.load(SeqCst) < p.reserved(limit)
                });
                !(below_share && self.grant(waiter))
            });
        }
        queue.retain(|waiter| !self.grant(waiter));
    }

    /// Takes a slot for `waiter` and hands it over; false when there is none for it.
    fn grant(&self, waiter: &Waiter) -> bool {
        if self.in_flight.load(SeqCst) >= self.limit.load(SeqCst)
            || self.try_take(waiter.partition).is_none()
        {
            return false;
        }
        self.queued.fetch_sub(1, SeqCst);
        if let Some(p) = waiter.partition {
            self.partitions[p].queued.fetch_sub(1, SeqCst);
        }
        self.queued_gauge.decrement(1.0);
        waiter.granted.store(true, SeqCst);
        waiter.waker.wake();
        true
    }

    /// Whether `waiter` has been given a slot; if not, `cx` is woken when it is.
    pub(crate) fn poll_granted(&self, waiter: &Waiter, cx: &mut Context<'_>) -> bool {
        if waiter.granted.load(SeqCst) {
            return true;
        }
        waiter.waker.register(cx.waker());
        waiter.granted.load(SeqCst)
    }

    /// Leaves the queue. Returns true if a slot had already been handed over, which the caller
    /// then owns (and must use or release).
    pub(crate) fn leave(&self, waiter: &Arc<Waiter>) -> bool {
        let mut queue = self.lock();
        if waiter.granted.load(SeqCst) {
            return true;
        }
        if let Some(i) = queue.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            queue.remove(i);
            self.queued.fetch_sub(1, SeqCst);
            if let Some(p) = waiter.partition {
                self.partitions[p].queued.fetch_sub(1, SeqCst);
            }
            self.queued_gauge.decrement(1.0);
        }
        false
    }

    /// Gives a slot back, to the next waiter if any.
    #[inline]
    pub(crate) fn release(&self, partition: Option<usize>) {
        if let Some(p) = partition {
            self.partitions[p].in_flight.fetch_sub(1, SeqCst);
        }
        self.in_flight.fetch_sub(1, SeqCst);
        // A call taken before the gauge was started is in the count it started at.
        if self.gauged.load(SeqCst) {
            self.in_flight_gauge.decrement(1.0);
        }
        if self.queued.load(SeqCst) > 0 {
            self.release_slow();
        }
    }

    /// Gives `n` slots of `partition` back at once.
    #[cold]
    pub(crate) fn release_many(&self, partition: Option<usize>, n: usize) {
        if let Some(p) = partition {
            self.partitions[p].in_flight.fetch_sub(n, SeqCst);
        }
        self.in_flight.fetch_sub(n, SeqCst);
        if self.gauged.load(SeqCst) {
            self.in_flight_gauge.decrement(n as f64);
        }
        if self.queued.load(SeqCst) > 0 {
            self.release_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn release_slow(&self) {
        let mut queue = self.lock();
        self.dispatch(&mut queue);
    }

    /// Whether the caller updates the in-flight gauge: it is kept, and the caller's change is
    /// not in it yet. The first call that sees a recorder (looked for once every
    /// `seawall_core::metrics::LOOK_EVERY` calls on a thread) starts it at the count of calls
    /// in flight, its own change included.
    //
    // The countdown is inlined and the start kept out of line: calling into the start on every
    // call until a recorder comes cost its prologue, 21 of the 40 instructions a call spent
    // looking for one, and the look itself on every take ≈ 15 (callgrind,
    // `benches/callgrind.sh bulkhead`).
    #[inline]
    fn gauged(&self) -> bool {
        self.gauged.load(SeqCst) || (look_for_recorder() && self.start_gauging())
    }

    // A call that takes or gives back a slot between the store and the count read here may
    // be counted twice or not at all: the gauge can be off by the calls that race the first
    // sight of a recorder, once in the life of the bulkhead. Keeping it exact would put an
    // atomic or a lock on every call for the sake of that moment.
    #[cold]
    #[inline(never)]
    fn start_gauging(&self) -> bool {
        let _queue = self.lock();
        if self.gauged.swap(true, SeqCst) {
            return true;
        }
        // The caller's own take or release is in the count already: it must not add it again.
        self.in_flight_gauge.set(self.in_flight() as f64);
        false
    }

    /// Sets the limit; a higher one serves waiters at once, a lower one lets calls in flight
    /// finish and admits none until they are below it.
    pub(crate) fn set_limit(&self, limit: usize) -> usize {
        let old = self.limit.swap(limit, SeqCst);
        if limit > old && self.queued.load(SeqCst) > 0 {
            self.release_slow();
        }
        old
    }

    /// Sets how many calls may wait; calls already waiting beyond it keep their places.
    pub(crate) fn set_queue_limit(&self, queue_limit: usize) {
        let _queue = self.lock();
        for p in &self.partitions {
            p.queue_room.store(queue_room(queue_limit, p.share), SeqCst);
        }
        self.queue_limit.store(queue_limit, SeqCst);
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Waiter>>> {
        // The queue stays consistent whatever panicked while it was held: every change to it
        // is a single push, remove or retain.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Increments `count` if it is below `cap`; returns the new value.
#[inline]
fn increment_below(count: &AtomicUsize, cap: usize) -> Option<usize> {
    let mut current = count.load(SeqCst);
    loop {
        if current >= cap {
            return None;
        }
        match count.compare_exchange_weak(current, current + 1, SeqCst, SeqCst) {
            Ok(_) => return Some(current + 1),
            Err(actual) => current = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn semaphore(limit: usize, queue_limit: usize) -> Semaphore {
        Semaphore::new(
            limit,
            queue_limit,
            true,
            &[],
            Gauges {
                in_flight: Gauge::noop(),
                queued: Gauge::noop(),
            },
        )
    }

    fn queued(acquired: Acquired) -> Arc<Waiter> {
        match acquired {
            Acquired::Queued(waiter) => waiter,
            other => panic!("expected a place in the queue, got {other:?}"),
        }
    }

    #[test]
    fn waiters_are_served_in_arrival_order() {
        let s = semaphore(1, 3);
        assert!(matches!(s.acquire(None), Acquired::Now(1)));
        let first = queued(s.acquire(None));
        let second = queued(s.acquire(None));
        let mut cx = Context::from_waker(Waker::noop());
        s.release(None);
        assert!(s.poll_granted(&first, &mut cx));
        assert!(!s.poll_granted(&second, &mut cx));
        assert_eq!(s.in_flight(), 1);
        assert_eq!(s.queued(), 1);
    }

    #[test]
    fn a_full_queue_is_full() {
        let s = semaphore(1, 1);
        assert!(matches!(s.acquire(None), Acquired::Now(_)));
        let _waiter = queued(s.acquire(None));
        assert!(matches!(s.acquire(None), Acquired::Full));
    }

    #[test]
    fn a_granted_waiter_that_leaves_keeps_its_slot_for_the_caller() {
        let s = semaphore(1, 2);
        assert!(matches!(s.acquire(None), Acquired::Now(_)));
        let first = queued(s.acquire(None));
        s.release(None);
        assert!(s.leave(&first), "the slot was already handed over");
        assert_eq!(s.in_flight(), 1);
    }

    #[test]
    fn a_raised_limit_serves_waiters_at_once() {
        let s = semaphore(1, 2);
        assert!(matches!(s.acquire(None), Acquired::Now(_)));
        let waiter = queued(s.acquire(None));
        s.set_limit(2);
        assert!(waiter.granted.load(SeqCst));
        assert_eq!(s.in_flight(), 2);
    }
}
