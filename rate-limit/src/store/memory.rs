//! A shared quota store in this process's memory, for tests and the lab.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use super::{Grant, QuotaStore, StoreError, StoreErrorKind, gcra};
use crate::config::Quota;

/// What a [`MemoryStore`] does with the calls it gets, to model a store that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// Answers after its latency.
    Up,
    /// Fails every call after its latency, as a refused connection.
    Down,
    /// Never answers, as a store that hangs.
    Hanging,
}

/// A [`QuotaStore`] in this process's memory: every limiter given a clone of it shares its
/// buckets, as every replica shares a Redis.
///
/// It models a shared store without a network, on tokio's clock, so that tests on a paused
/// clock and the lab's scenarios can run N replicas of a limit against one quota: each call is
/// decided when it is made, with the same GCRA as the Redis script, and answered after the
/// store's latency (zero by default). [`set_state`](Self::set_state) takes it down or makes
/// it hang, to test failure policies. Buckets are kept until the store is dropped, so it is not
/// meant for production.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    buckets: Mutex<HashMap<Box<[u8]>, u64>>,
    epoch: std::sync::OnceLock<Instant>,
    latency: Duration,
    state: AtomicU8,
    round_trips: AtomicU64,
}

impl MemoryStore {
    /// An empty store that answers at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that answers after `latency`, as a round trip to a remote one.
    pub fn with_latency(latency: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                latency,
                ..Inner::default()
            }),
        }
    }

    /// Makes the store answer, fail or hang from now on.
    pub fn set_state(&self, state: StoreState) {
        self.inner.state.store(state as u8, Ordering::Release);
    }

    /// What the store does with calls now.
    pub fn state(&self) -> StoreState {
        match self.inner.state.load(Ordering::Acquire) {
            0 => StoreState::Up,
            1 => StoreState::Down,
            _ => StoreState::Hanging,
        }
    }

    /// Calls made to the store so far.
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    fn now(&self) -> u64 {
        let epoch = *self.inner.epoch.get_or_init(Instant::now);
        u64::try_from(Instant::now().saturating_duration_since(epoch).as_nanos())
            .unwrap_or(u64::MAX)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("latency", &self.inner.latency)
            .field("state", &self.state())
            .field("round_trips", &self.round_trips())
            .finish()
    }
}

impl QuotaStore for MemoryStore {
    type Future = MemoryFuture;

    fn take(&self, key: &[u8], quota: &Quota, cells: u32) -> MemoryFuture {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let answer = match self.state() {
            StoreState::Up => {
                let now = self.now();
                let interval =
                    u64::try_from(quota.replenish_interval().as_nanos()).unwrap_or(u64::MAX);
                let mut buckets = self
                    .inner
                    .buckets
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let (tat, grant) = gcra(
                    buckets.get(key).copied(),
                    now,
                    interval,
                    quota.burst(),
                    cells,
                );
                if let Some(tat) = tat {
                    buckets.insert(key.into(), tat);
                }
                Some(Ok(grant))
            }
            StoreState::Down => Some(Err(StoreError::new(
                StoreErrorKind::Connection,
                "the memory store is down",
            ))),
            StoreState::Hanging => None,
        };
        MemoryFuture {
            sleep: sleep_until(Instant::now() + self.inner.latency),
            answer,
        }
    }
}

pin_project! {
    /// A [`MemoryStore`]'s answer, after its latency.
    pub struct MemoryFuture {
        #[pin]
        sleep: Sleep,
        answer: Option<Result<Grant, StoreError>>,
    }
}

impl fmt::Debug for MemoryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryFuture")
            .field("answer", &self.answer)
            .finish_non_exhaustive()
    }
}

impl Future for MemoryFuture {
    type Output = Result<Grant, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.answer.is_none() {
            return Poll::Pending;
        }
        ready!(this.sleep.poll(cx));
        Poll::Ready(
            this.answer
                .take()
                .expect("MemoryFuture polled after completion"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn clones_share_buckets_and_answer_after_the_latency() {
        let store = MemoryStore::with_latency(Duration::from_millis(2));
        let other = store.clone();
        let quota = Quota::per_second(10).with_burst(3);
        let started = Instant::now();
        assert_eq!(store.take(b"k", &quota, 2).await, Ok(Grant::cells(2)));
        assert_eq!(started.elapsed(), Duration::from_millis(2));
        assert_eq!(other.take(b"k", &quota, 5).await, Ok(Grant::cells(1)));
        let none = other.take(b"k", &quota, 1).await.unwrap();
        assert_eq!(none.granted(), 0);
        assert!(none.retry_after() <= Duration::from_millis(100));
        assert_eq!(store.take(b"other", &quota, 1).await, Ok(Grant::cells(1)));
        assert_eq!(store.round_trips(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_is_down_fails_and_one_that_hangs_never_answers() {
        let store = MemoryStore::new();
        let quota = Quota::per_second(10);
        store.set_state(StoreState::Down);
        let err = store.take(b"k", &quota, 1).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Connection);
        store.set_state(StoreState::Hanging);
        let hung = tokio::time::timeout(Duration::from_secs(60), store.take(b"k", &quota, 1));
        assert!(hung.await.is_err());
        store.set_state(StoreState::Up);
        assert_eq!(store.take(b"k", &quota, 1).await, Ok(Grant::cells(1)));
    }
}
