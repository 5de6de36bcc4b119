//! The buckets behind a rate limit: one for all calls ([`Direct`]), or one per key in a map of
//! bounded size ([`Keyed`]).
//!
//! Both run governor's GCRA, which keeps one 64-bit "theoretical arrival time" per bucket and
//! decides with a single compare-and-swap: no lock, no timer, no background task. A keyed limit
//! finds the bucket in a sharded map under a read lock of one shard.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use indexmap::IndexMap;
use indexmap::map::raw_entry_v1::{RawEntryApiV1, RawEntryMut};
use metrics::Counter;
use seawall_core::metrics::MetricScope;
use seawall_core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use seawall_core::sync::{RwLock, RwLockWriteGuard};
use tokio::time::Instant;

use crate::clock::{TokioClock, TokioInstant};
use crate::config::{Quota, RateLimitConfig};
use crate::extract::{ExtractKey, KeyExtractor};
use seawall_core::time::nanos;
use siphasher::sip::SipHasher13;

/// Finds and charges the bucket of a call. Implemented by [`Direct`] and [`Keyed`] (buckets in
/// the process) and by [`Fleet`](crate::Fleet) and [`FleetKeyed`](crate::FleetKeyed) (buckets in
/// a store the fleet shares) only.
pub trait Limiter<Req>: sealed::Sealed + Send + Sync + 'static {
    /// What identifies a bucket; kept by a call that waits, to check the same bucket again.
    type Key: Send + 'static;

    /// A round trip to the shared store, for a limit whose buckets live there.
    type Ask: Future<Output = Decision> + Send + 'static;

    /// The bucket `req` counts against.
    fn key(&self, req: &Req) -> Self::Key;

    /// Takes a permit from `key`'s bucket, says how long until one comes back, or asks the
    /// store.
    fn check(&self, key: &Self::Key) -> Check<Self::Ask>;

    /// As [`check`](Self::check), through a service clone's `cache` of the limiter.
    #[doc(hidden)]
    #[inline]
    fn check_cached(
        &self,
        cache: &mut <Self as sealed::Sealed>::Cache,
        key: &Self::Key,
    ) -> Check<Self::Ask> {
        let _ = cache;
        self.check(key)
    }
}

pub(crate) mod sealed {
    pub trait Sealed {
        /// What each service clone keeps of the limiter, so that a call does not go through
        /// what every clone shares to find it.
        type Cache: Clone + Send + Sync + 'static;

        fn cache(&self) -> Self::Cache;
    }
}

/// A clone's copy of a limiter that a reload swaps: the swap's pointer is read (one relaxed
/// load) and compared with the copy's on every call, and the copy taken again when they
/// differ, so a reload reaches every clone at its next call.
//
// Loading the swap itself on every call (`ArcSwap::load`: its thread-local debt list and
// the guard's release) cost 45 of the direct limit's 380 instructions a call (callgrind,
// `benches/callgrind.sh rate-limit`); the comparison costs about 3.
type Cached<T> = arc_swap::Cache<Arc<ArcSwap<T>>, Arc<T>>;

/// What a service clone keeps of a [`Direct`] limit: its buckets as of the last reload.
#[derive(Clone)]
pub struct DirectCache(Cached<DirectLimiter>);

impl fmt::Debug for DirectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectCache").finish_non_exhaustive()
    }
}

/// What a service clone keeps of a [`Keyed`] limit: its buckets as of the last reload.
pub struct KeyedCache<K: Hash + Eq + Clone>(Cached<KeyedLimiter<K>>);

impl<K: Hash + Eq + Clone> Clone for KeyedCache<K> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K: Hash + Eq + Clone> fmt::Debug for KeyedCache<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCache").finish_non_exhaustive()
    }
}

/// What a [`Limiter`] decides about a call at once.
#[derive(Debug)]
pub enum Check<A> {
    /// Admitted.
    Permit,
    /// Over the quota: a permit comes back after this long.
    Limited(Duration),
    /// The shared store cannot answer and the limit fails closed; try again after this long.
    Unavailable(Duration),
    /// Only the shared store can tell: the round trip that will.
    Ask(A),
}

/// What a round trip to the shared store decided about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted.
    Permit,
    /// Over the quota: a permit comes back after this long.
    Limited(Duration),
    /// The store could not answer and the limit fails closed; try again after this long.
    Unavailable(Duration),
}

/// The round trip of a limit that never asks a store: it cannot be made.
#[derive(Debug)]
pub enum NoStore {}

impl Future for NoStore {
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Decision> {
        match *self {}
    }
}

/// A limit whose quota a handle may change: a new quota takes effect for the next call.
pub(crate) trait SetQuota: Send + Sync + 'static {
    /// Admits by `quota` from now on, every bucket afresh.
    fn set_quota(&self, quota: Quota);
}

#[cold]
#[inline(never)]
fn wait_time(not_until: &governor::NotUntil<TokioInstant>) -> Duration {
    not_until.wait_time_from(TokioClock.now())
}

/// Runs a bucket's `check` until it admits, or refuses with a wait that a fresh reading of the
/// clock confirms.
///
/// governor reads the clock before it reads the bucket. A thread preempted between the two (or
/// simply slower) reads a bucket that other threads have since moved past its stale reading,
/// and is refused a permit that was free by the time it looked: under 2 threads at a quota of
/// 10⁹ a second, 16 calls in about 10⁷ were refused with `retry_after` 0. A refusal whose wait,
/// from a fresh reading, is zero is checked again. The loop ends: each turn needs another
/// thread to have taken a permit since this one read the clock.
#[inline]
pub(crate) fn admit(
    check: impl Fn() -> Result<(), governor::NotUntil<TokioInstant>>,
) -> Result<(), Duration> {
    match check() {
        Ok(()) => Ok(()),
        Err(not_until) => recheck(&not_until, check),
    }
}

#[cold]
#[inline(never)]
fn recheck(
    not_until: &governor::NotUntil<TokioInstant>,
    check: impl Fn() -> Result<(), governor::NotUntil<TokioInstant>>,
) -> Result<(), Duration> {
    let mut wait = wait_time(not_until);
    while wait.is_zero() {
        match check() {
            Ok(()) => return Ok(()),
            Err(not_until) => wait = wait_time(&not_until),
        }
    }
    Err(wait)
}

// ===== Direct =====

pub(crate) type DirectLimiter =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

/// One bucket for every call.
pub struct Direct {
    // Swapped whole when the quota is reloaded: governor fixes a bucket's quota when it makes
    // it. Calls read it through their clone's `Cached` copy.
    limiter: Arc<ArcSwap<DirectLimiter>>,
}

fn direct(quota: Quota) -> DirectLimiter {
    governor::RateLimiter::direct_with_clock(quota.to_governor(), TokioClock)
}

impl Direct {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        Self {
            limiter: Arc::new(ArcSwap::from_pointee(direct(config.quota))),
        }
    }
}

impl SetQuota for Direct {
    fn set_quota(&self, quota: Quota) {
        self.limiter.store(Arc::new(direct(quota)));
    }
}

impl sealed::Sealed for Direct {
    type Cache = DirectCache;

    fn cache(&self) -> DirectCache {
        DirectCache(arc_swap::Cache::new(self.limiter.clone()))
    }
}

impl<Req> Limiter<Req> for Direct {
    type Key = ();
    type Ask = NoStore;

    #[inline]
    fn key(&self, _req: &Req) {}

    #[inline]
    fn check(&self, _key: &()) -> Check<NoStore> {
        direct_check(&self.limiter.load())
    }

    #[inline]
    fn check_cached(&self, cache: &mut DirectCache, _key: &()) -> Check<NoStore> {
        direct_check(cache.0.load())
    }
}

// Out of line, so that governor's compare-and-swap loop is inlined here, its one caller:
// inlined into `call`, the compiler left it out of line with its closure's captures spilled,
// 289 instructions a call against 255 this way (callgrind, `benches/callgrind.sh rate-limit`).
#[inline(never)]
fn direct_check(limiter: &DirectLimiter) -> Check<NoStore> {
    match admit(|| limiter.check()) {
        Ok(()) => Check::Permit,
        Err(wait) => Check::Limited(wait),
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
/// address, every random API key, every IPv6 address of a /48). Two rules keep it bounded:
/// - At most `max_keys` keys are tracked. A new key that finds the map full takes the place of
///   the key whose bucket is oldest (its theoretical arrival time is earliest) among a few
///   sampled at random, as Redis evicts: no scan of the map, and only the new key's shard is
///   locked. A client rotating through fresh keys thus evicts its own stale keys, and a new
///   client still gets a bucket of its own, with the full quota. A key evicted before its
///   bucket was full again starts afresh when it returns: against a client that invents keys,
///   only a limit that is not keyed (or keyed by something it cannot forge) bounds its rate.
///   Evictions are counted in `seawall_rate_limit_keys_evicted_total`.
/// - When new keys arrive, at most once per `sweep_interval`, keys whose bucket is full again
///   are swept out with governor's `retain_recent`. Such a key was idle long enough that
///   forgetting it changes nothing, so a sweep never lets a client through sooner than its
///   quota. A sweep visits every key, one shard at a time, so it runs on the calling task, at
///   most once per interval, never per call.
pub struct Keyed<E: KeyExtractor> {
    extractor: E,
    // Swapped whole, with a new map of keys, when the quota is reloaded; calls read it
    // through their clone's `Cached` copy.
    limiter: Arc<ArcSwap<KeyedLimiter<E::Key>>>,
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
    evicted: Counter,
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

fn nanos_since(epoch: Instant) -> u64 {
    nanos(Instant::now().saturating_duration_since(epoch))
}

impl<E: KeyExtractor> Keyed<E> {
    pub(crate) fn new(config: &RateLimitConfig, extractor: E) -> Self {
        let book = Arc::new(KeyBook {
            name: config.name.clone().into(),
            len: AtomicUsize::new(0),
            max: config.max_keys,
            epoch: Instant::now(),
            sweep_interval: config.sweep_interval,
            next_sweep: AtomicU64::new(0),
            sweep_due: AtomicBool::new(false),
            evicted: MetricScope::new(config.name.clone())
                .counter("seawall_rate_limit_keys_evicted_total", &[]),
        });
        Self {
            extractor,
            limiter: Arc::new(ArcSwap::from_pointee(keyed(config.quota, &book))),
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
        self.limiter.load().retain_recent();
        tracing::debug!(
            name = %self.book.name,
            before,
            after = self.len(),
            "swept idle rate limit keys"
        );
    }
}

fn keyed<K: Hash + Eq + Clone>(quota: Quota, book: &Arc<KeyBook>) -> KeyedLimiter<K> {
    governor::RateLimiter::new(quota.to_governor(), KeyStore::new(book.clone()), TokioClock)
}

impl<E: KeyExtractor> SetQuota for Keyed<E> {
    fn set_quota(&self, quota: Quota) {
        let limiter = keyed(quota, &self.book);
        // Calls still on the old map may count a key or two into the new length: it is a
        // gauge, and the shards bound the map, not the count.
        self.book.len.store(0, Ordering::Relaxed);
        self.limiter.store(Arc::new(limiter));
    }
}

impl<E: KeyExtractor> sealed::Sealed for Keyed<E> {
    type Cache = KeyedCache<E::Key>;

    fn cache(&self) -> KeyedCache<E::Key> {
        KeyedCache(arc_swap::Cache::new(self.limiter.clone()))
    }
}

impl<E, Req> Limiter<Req> for Keyed<E>
where
    E: ExtractKey<Req>,
{
    type Key = E::Key;
    type Ask = NoStore;

    #[inline]
    fn key(&self, req: &Req) -> E::Key {
        self.extractor.extract(req)
    }

    #[inline]
    fn check(&self, key: &E::Key) -> Check<NoStore> {
        self.check_in(&self.limiter.load(), key)
    }

    #[inline]
    fn check_cached(&self, cache: &mut KeyedCache<E::Key>, key: &E::Key) -> Check<NoStore> {
        self.check_in(cache.0.load(), key)
    }
}

impl<E: KeyExtractor> Keyed<E> {
    #[inline]
    fn check_in(&self, limiter: &KeyedLimiter<E::Key>, key: &E::Key) -> Check<NoStore> {
        let result = admit(|| limiter.check_key(key));
        if self.book.sweep_due.load(Ordering::Relaxed)
            && self.book.sweep_due.swap(false, Ordering::Acquire)
        {
            self.sweep();
        }
        match result {
            Ok(()) => Check::Permit,
            Err(wait) => Check::Limited(wait),
        }
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

/// How many keys an eviction compares. Redis samples 5 by default and finds 10 close to true
/// LRU; 8 keeps the sample on a cache line or two of states.
const EVICTION_SAMPLE: usize = 8;
/// Shards hold at least this many keys each, so that a shard's share of `max_keys` is never
/// so small that sampling within it misses the oldest keys of the map by much.
const MIN_SHARD_KEYS: usize = 64;

/// governor's state store for keyed limits: shards of an `IndexMap` (which can be sampled by
/// index), each with its share of `max_keys`.
struct KeyStore<K> {
    shards: Box<[Shard<K>]>,
    hasher: KeyHasher,
    book: Arc<KeyBook>,
}

/// SipHash-1-3, std's `RandomState` function, under a random 128-bit key drawn per map: clients
/// choose the keys (addresses, headers, API keys), and a keyed hash keeps them from building
/// collisions.
//
// A fixed-width key is one block, written inline: 95 instructions for a `u64` key, against
// 137 through std's `DefaultHasher`, whose byte-buffered `write` is out of line.
#[derive(Clone)]
struct KeyHasher {
    k0: u64,
    k1: u64,
}

impl KeyHasher {
    fn new() -> Self {
        // Two outputs of std's randomly keyed SipHash: 128 bits no client can predict.
        let seed = RandomState::new();
        Self {
            k0: seed.hash_one(0_u8),
            k1: seed.hash_one(1_u8),
        }
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = SipHasher13;

    #[inline]
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// A shard on cache lines of its own, so that locking one does not slow its neighbours.
#[repr(align(128))]
struct Shard<K> {
    map: RwLock<ShardMap<K>>,
    max: usize,
}

struct ShardMap<K> {
    keys: IndexMap<K, InMemoryState, KeyHasher>,
    /// xorshift state for sampling.
    rng: u64,
}

impl<K> KeyStore<K> {
    fn new(book: Arc<KeyBook>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let wanted = (cpus * 4).next_power_of_two();
        let most = (book.max / MIN_SHARD_KEYS).max(1);
        // A power of two no larger than `most`.
        let count = wanted.min(1 << most.ilog2());
        let hasher = KeyHasher::new();
        let shards = (0..count)
            .map(|i| Shard {
                map: RwLock::new(ShardMap {
                    keys: IndexMap::with_hasher(hasher.clone()),
                    rng: hasher.hash_one(i) | 1,
                }),
                max: book.max / count + usize::from(i < book.max % count),
            })
            .collect();
        Self {
            shards,
            hasher,
            book,
        }
    }

    fn shard(&self, hash: u64) -> &Shard<K> {
        // The high bits: the map inside uses the low ones.
        &self.shards[(hash >> 40) as usize & (self.shards.len() - 1)]
    }
}

impl<K> Shard<K> {
    fn write(&self) -> RwLockWriteGuard<'_, ShardMap<K>> {
        // A shard stays consistent whatever panicked while it was held: every change is a single
        // insert, remove or retain.
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K> ShardMap<K> {
    fn next_random(&mut self) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng as usize
    }

    /// Removes the key whose bucket is oldest among a sample (all keys, in a small shard).
    #[cold]
    fn evict_oldest(&mut self) {
        let len = self.keys.len();
        let oldest = if len <= EVICTION_SAMPLE {
            (0..len).min_by_key(|&i| self.arrival_at(i))
        } else {
            let sample: [usize; EVICTION_SAMPLE] =
                std::array::from_fn(|_| self.next_random() % len);
            sample.into_iter().min_by_key(|&i| self.arrival_at(i))
        };
        if let Some(i) = oldest {
            self.keys.swap_remove_index(i);
        }
    }

    fn arrival_at(&self, index: usize) -> Option<Nanos> {
        self.keys
            .get_index(index)
            .and_then(|(_, state)| arrival(state))
    }
}

impl<K> fmt::Debug for KeyStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> StateStore for KeyStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        {
            let map = shard.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, state)) = map.keys.raw_entry_v1().from_hash(hash, |k| k == key) {
                return state.measure_and_replace(&NotKeyed::NonKey, f);
            }
        }
        self.book.missed();
        self.insert(shard, hash, key, f)
    }
}

impl<K: Hash + Eq + Clone> KeyStore<K> {
    /// Adds `key` to its shard, evicting a key if the shard is full, and charges its bucket.
    #[cold]
    #[inline(never)]
    fn insert<T, F, E>(&self, shard: &Shard<K>, hash: u64, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = shard.write();
        let known = map
            .keys
            .raw_entry_v1()
            .from_hash(hash, |k| k == key)
            .is_some();
        if !known && map.keys.len() >= shard.max {
            map.evict_oldest();
            self.book.len.fetch_sub(1, Ordering::Relaxed);
            self.book.evicted.increment(1);
            tracing::trace!(name = %self.book.name, "rate limit key map full, oldest key evicted");
        }
        match map.keys.raw_entry_mut_v1().from_hash(hash, |k| k == key) {
            RawEntryMut::Occupied(entry) => entry.get().measure_and_replace(&NotKeyed::NonKey, f),
            RawEntryMut::Vacant(entry) => {
                self.book.len.fetch_add(1, Ordering::Relaxed);
                let (_, state) =
                    entry.insert_hashed_nocheck(hash, key.clone(), InMemoryState::default());
                state.measure_and_replace(&NotKeyed::NonKey, f)
            }
        }
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
        for shard in &self.shards {
            let mut map = shard.write();
            let before = map.keys.len();
            map.keys
                .retain(|_, state| arrival(state).is_some_and(|tat| tat > drop_below));
            self.book
                .len
                .fetch_sub(before - map.keys.len(), Ordering::Relaxed);
            if map.keys.len().saturating_mul(4) < map.keys.capacity() {
                map.keys.shrink_to_fit();
            }
        }
    }

    fn shrink_to_fit(&self) {
        for shard in &self.shards {
            shard.write().keys.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.book.len.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::KeyHasher;

    #[test]
    fn each_key_map_draws_its_own_hash_key() {
        let (a, b) = (KeyHasher::new(), KeyHasher::new());
        assert_ne!((a.k0, a.k1), (b.k0, b.k1));
        assert_ne!(a.hash_one("client"), b.hash_one("client"));
        assert_eq!(a.hash_one("client"), a.clone().hash_one("client"));
    }
}
