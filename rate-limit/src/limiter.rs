//! The buckets behind a rate limit: one for all calls ([`Direct`]), or one per key in a map of
//! bounded size ([`Keyed`]).
//!
//! Both run governor's GCRA, which keeps one 64-bit "theoretical arrival time" per bucket and
//! decides with a single compare-and-swap: no lock, no timer, no background task. A keyed limit
//! finds the bucket in a sharded map (`dashmap`) under a read lock of one shard.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use tokio::time::Instant;

use crate::clock::{TokioClock, TokioInstant};
use crate::config::RateLimitConfig;
use crate::extract::{ExtractKey, KeyExtractor};

/// Finds and charges the bucket of a call. Implemented by [`Direct`] and [`Keyed`] only.
pub trait Limiter<Req>: sealed::Sealed + Send + Sync + 'static {
    /// What identifies a bucket; kept by a call that waits, to check the same bucket again.
    type Key: Send + 'static;

    /// The bucket `req` counts against.
    fn key(&self, req: &Req) -> Self::Key;

    /// Takes a permit from `key`'s bucket, or says how long until one comes back.
    fn check(&self, key: &Self::Key) -> Result<(), Duration>;
}

mod sealed {
    pub trait Sealed {}
}

#[cold]
#[inline(never)]
fn wait_time(not_until: &governor::NotUntil<TokioInstant>) -> Duration {
    not_until.wait_time_from(TokioClock.now())
}

// ===== Direct =====

type DirectLimiter =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

/// One bucket for every call.
pub struct Direct {
    limiter: DirectLimiter,
}

impl Direct {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        Self {
            limiter: governor::RateLimiter::direct_with_clock(
                config.quota.to_governor(),
                TokioClock,
            ),
        }
    }
}

impl sealed::Sealed for Direct {}

impl<Req> Limiter<Req> for Direct {
    type Key = ();

    #[inline]
    fn key(&self, _req: &Req) {}

    #[inline]
    fn check(&self, _key: &()) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| wait_time(&not_until))
    }
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

// ===== Keyed =====

type KeyedLimiter<K> =
    governor::RateLimiter<K, KeyStore<K>, TokioClock, NoOpMiddleware<TokioInstant>>;

/// One bucket per key, read off each request by an extractor `E`, in a map of bounded size.
///
/// The map must not grow with every key a client can invent (every forged `X-Forwarded-For`
/// address, every random API key). Two rules keep it bounded:
/// - At most `max_keys` keys are tracked. A new key that finds the map full shares one overflow
///   bucket, with the same quota, with every other such key until room is made: flooding the
///   map never lifts the limit, it only makes newcomers share.
/// - When new keys arrive (and, while the map is full, on any call, before its check), at most
///   once per `sweep_interval`, keys whose bucket is full again are swept out with governor's
///   `retain_recent`. Such a key was idle long enough that forgetting it changes nothing, so a
///   sweep never lets a client through sooner than its quota. A sweep visits every key, so it
///   runs on the calling task, at most once per interval, never per call.
pub struct Keyed<E: KeyExtractor> {
    extractor: E,
    limiter: KeyedLimiter<E::Key>,
    book: Arc<KeyBook>,
}

/// What the key store and its limiter share: the count of keys and when to sweep.
#[derive(Debug)]
struct KeyBook {
    name: Arc<str>,
    len: AtomicUsize,
    max: usize,
    epoch: Instant,
    sweep_interval: Duration,
    /// Nanoseconds after `epoch` before which no new sweep starts.
    next_sweep: AtomicU64,
    /// A new key arrived and a sweep is due.
    sweep_due: AtomicBool,
    /// A new key found the map full; cleared by a sweep that makes room.
    full: AtomicBool,
}

impl KeyBook {
    /// Whether a sweep may start now; the caller that gets `true` must run it.
    fn claim_sweep(&self) -> bool {
        let now = nanos_since(self.epoch);
        let next = self.next_sweep.load(Ordering::Relaxed);
        now >= next
            && self
                .next_sweep
                .compare_exchange(
                    next,
                    now.saturating_add(nanos(self.sweep_interval)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Called when a key is not in the map: asks for a sweep if the last one is long enough ago.
    fn missed(&self) {
        if self.claim_sweep() {
            self.sweep_due.store(true, Ordering::Release);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn nanos_since(epoch: Instant) -> u64 {
    nanos(Instant::now().saturating_duration_since(epoch))
}

impl<E: KeyExtractor> Keyed<E> {
    pub(crate) fn new(config: &RateLimitConfig, extractor: E) -> Self {
        let book = Arc::new(KeyBook {
            name: config.name.clone(),
            len: AtomicUsize::new(0),
            max: config.max_keys,
            epoch: Instant::now(),
            sweep_interval: config.sweep_interval,
            next_sweep: AtomicU64::new(0),
            sweep_due: AtomicBool::new(false),
            full: AtomicBool::new(false),
        });
        let store = KeyStore {
            map: DashMap::new(),
            overflow: InMemoryState::default(),
            book: book.clone(),
        };
        Self {
            extractor,
            limiter: governor::RateLimiter::new(config.quota.to_governor(), store, TokioClock),
            book,
        }
    }

    /// How many keys are tracked now.
    pub fn len(&self) -> usize {
        self.book.len.load(Ordering::Relaxed)
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every key whose bucket is full again, as a sweep does.
    #[cold]
    #[inline(never)]
    pub fn sweep(&self) {
        let before = self.len();
        self.limiter.retain_recent();
        if self.len() < self.book.max && self.book.full.swap(false, Ordering::Relaxed) {
            tracing::info!(name = %self.book.name, keys = self.len(), "rate limit key map has room again");
        }
        tracing::debug!(
            name = %self.book.name,
            before,
            after = self.len(),
            "swept idle rate limit keys"
        );
    }
}

impl<E: KeyExtractor> sealed::Sealed for Keyed<E> {}

impl<E, Req> Limiter<Req> for Keyed<E>
where
    E: ExtractKey<Req>,
{
    type Key = E::Key;

    #[inline]
    fn key(&self, req: &Req) -> E::Key {
        self.extractor.extract(req)
    }

    #[inline]
    fn check(&self, key: &E::Key) -> Result<(), Duration> {
        // While the map is full, sweep before checking so that this key may get a slot.
        if self.book.full.load(Ordering::Relaxed) && self.book.claim_sweep() {
            self.sweep();
        }
        let result = self.limiter.check_key(key);
        if self.book.sweep_due.load(Ordering::Relaxed)
            && self.book.sweep_due.swap(false, Ordering::Acquire)
        {
            self.sweep();
        }
        result.map_err(|not_until| wait_time(&not_until))
    }
}

impl<E: KeyExtractor + fmt::Debug> fmt::Debug for Keyed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("extractor", &self.extractor)
            .field("keys", &self.len())
            .field("max_keys", &self.book.max)
            .finish()
    }
}

/// governor's state store for keyed limits, with a cap on keys and an overflow bucket.
struct KeyStore<K> {
    map: DashMap<K, InMemoryState>,
    overflow: InMemoryState,
    book: Arc<KeyBook>,
}

impl<K> fmt::Debug for KeyStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> StateStore for KeyStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        self.book.missed();
        match self.map.entry(key.clone()) {
            Entry::Occupied(entry) => entry.get().measure_and_replace(&NotKeyed::NonKey, f),
            Entry::Vacant(entry) => {
                if self.book.len.fetch_add(1, Ordering::Relaxed) >= self.book.max {
                    self.book.len.fetch_sub(1, Ordering::Relaxed);
                    drop(entry);
                    if !self.book.full.load(Ordering::Relaxed)
                        && !self.book.full.swap(true, Ordering::Relaxed)
                    {
                        tracing::info!(
                            name = %self.book.name,
                            max_keys = self.book.max,
                            "rate limit key map full; new keys share the overflow bucket"
                        );
                    }
                    return self.overflowed(f);
                }
                entry
                    .insert(InMemoryState::default())
                    .measure_and_replace(&NotKeyed::NonKey, f)
            }
        }
    }
}

impl<K> KeyStore<K> {
    #[cold]
    #[inline(never)]
    fn overflowed<T, F, E>(&self, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        tracing::trace!(name = %self.book.name, "key map full, using the overflow bucket");
        self.overflow.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

/// The theoretical arrival time a bucket holds; `None` for a fresh one.
fn arrival(state: &InMemoryState) -> Option<Nanos> {
    state
        .measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>)
        .err()
        .flatten()
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for KeyStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.map.retain(|_, state| {
            let keep = arrival(state).is_some_and(|tat| tat > drop_below);
            if !keep {
                self.book.len.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
        if self.map.len().saturating_mul(4) < self.map.capacity() {
            self.map.shrink_to_fit();
        }
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
