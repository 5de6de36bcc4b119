//! One breaker per key: per downstream host, route or tenant.
//!
//! One breaker for a whole client trips for everyone when one host (or one tenant's traffic)
//! goes bad. A keyed breaker takes a key from each request with an extractor (the one key
//! trait of `seawall_core::key`, which keyed rate limits use too) and keeps a breaker per key, so one bad host is cut off while the others carry on.
//!
//! The breakers live in a map bounded by `max_keys`, so unbounded key sets (client addresses,
//! say) cannot grow memory without limit; the configuration also refuses a `max_keys` whose
//! windows would hold more than 256 MiB. When a new key finds the map full, one breaker is
//! evicted, chosen from a small random sample so that no insertion scans the map under its
//! write lock: a closed breaker that no call is using (its result would be lost with it), idle
//! for `key_idle_timeout` if the sample has one, else the least recently used. An open (or
//! half-open, or forced-open) breaker is evicted only when every breaker in the map is one: each breaker tells the map when it starts or stops
//! rejecting, and the map samples the closed ones first. So a client rotating keys cannot
//! flush the open breaker of a bad host and reset it to closed.
//!
//! The lookup takes a read lock and hashes the key once per call; a new key takes the write
//! lock once. Calls, rejections and transitions of all keys count into the layer's metrics;
//! the state and rate gauges are per breaker and so not exported for keyed layers (use
//! [`KeyedCircuitBreakerLayer::handle`] per key instead).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use seawall_core::BoxError;
use seawall_core::classify::{AnyError, Classify};
pub use seawall_core::key::{ByAuthority, HasAuthority};
use seawall_core::key::{ExtractKey, KeyExtractor};
use seawall_core::sync::atomic::{AtomicU64, Ordering};
use seawall_core::sync::{Mutex, RwLock};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::breaker::{Breaker, Observers, Tracker, random_seed};
use crate::config::{CircuitBreakerConfig, CircuitBreakerConfigBuilder, FromConfig};
use crate::future::{CallReport, Policy, ResponseFuture};
use crate::handle::CircuitBreakerHandle;
use crate::retry_after::{NoRetryAfter, RetryAfter};
use crate::service::call;
use crate::state::{OutcomeEvent, RejectedEvent, StateChangedEvent};
use seawall_core::time::nanos;

/// Keeps one circuit breaker per key taken from each request.
///
/// ```
/// use http::Request;
/// use seawall_circuit_breaker::KeyedCircuitBreakerLayer;
/// use seawall_core::key::key_fn;
///
/// # fn main() -> Result<(), seawall_core::config::ConfigError> {
/// let by_host = key_fn(|req: &Request<()>| req.uri().host().unwrap_or_default().to_owned());
/// let layer = KeyedCircuitBreakerLayer::builder(by_host)
///     .name("upstreams")
///     .max_keys(1000)
///     .build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
pub struct KeyedCircuitBreakerLayer<K, F, C = AnyError, H = NoRetryAfter> {
    map: Arc<BreakerMap<K, F>>,
    policy: Arc<Policy<C, H>>,
}

struct BreakerMap<K, F> {
    config: CircuitBreakerConfig,
    observers: Arc<Observers>,
    key: F,
    epoch: Instant,
    breakers: RwLock<Slots<K>>,
    /// Slots whose breaker started or stopped rejecting since the map last looked.
    moved: Arc<Mutex<Vec<usize>>>,
}

/// Breakers looked at per eviction: enough that a sample of closed breakers nearly always holds
/// an idle or an old one, few enough to cost next to nothing under the write lock.
const SAMPLE: usize = 8;

/// The breakers: a slab with stable slot numbers (a breaker's tracker names its slot), an index
/// by key, and the occupied slots in two lists by whether their breaker rejects calls.
struct Slots<K> {
    index: HashMap<K, usize>,
    slots: Vec<Option<Slot<K>>>,
    free: Vec<usize>,
    /// Slots whose breaker lets calls through (`[0]`) or rejects them (`[1]`), as last seen.
    lists: [Vec<usize>; 2],
    rng: u64,
}

struct Slot<K> {
    key: K,
    entry: Entry,
    /// The list that holds the slot, and where in it.
    list: usize,
    at: usize,
}

struct Entry {
    breaker: Arc<Breaker>,
    last_used: AtomicU64,
}

/// Marks a key as used at most this often, so hot keys do not write its cache line per call.
const TOUCH_RESOLUTION_NANOS: u64 = 1_000_000;

impl<K, F> BreakerMap<K, F>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    fn now_nanos(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    fn breaker(&self, key: K) -> Arc<Breaker> {
        let now = self.now_nanos();
        {
            let breakers = self.breakers.read().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = breakers.get(&key) {
                return entry.touch(now);
            }
        }
        self.insert(key, now)
    }

    #[cold]
    fn insert(&self, key: K, now: u64) -> Arc<Breaker> {
        let mut breakers = self.breakers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = breakers.get(&key) {
            return entry.touch(now);
        }
        if breakers.index.len() >= self.config.max_keys {
            self.file_moved(&mut breakers);
            breakers.evict(now, nanos(self.config.key_idle_timeout));
        }
        let slot = breakers.vacant();
        let label: Arc<str> = format!("{key:?}").into();
        let tracker = Tracker::new(self.moved.clone(), slot);
        let breaker = Breaker::new(
            &self.config,
            self.observers.clone(),
            Some(label),
            Some(tracker),
        );
        let entry = Entry {
            breaker: breaker.clone(),
            last_used: AtomicU64::new(now),
        };
        breakers.fill(slot, key, entry);
        breaker
    }

    /// Files the slots whose breakers started or stopped rejecting in the right list.
    fn file_moved(&self, breakers: &mut Slots<K>) {
        let mut moved = self.moved.lock().unwrap_or_else(|e| e.into_inner());
        for slot in moved.drain(..) {
            // The slot may hold another key by now, or none: its breaker is looked at anyway.
            let Some(breaker) = breakers.slots[slot].as_ref().map(|s| &s.entry.breaker) else {
                continue;
            };
            if let Some(tracker) = breaker.tracker() {
                tracker.unqueue();
            }
            let list = usize::from(breaker.rejects());
            breakers.move_to(slot, list);
        }
    }
}

impl<K> Slots<K> {
    fn new(seed: u64) -> Self {
        Self {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            lists: [Vec::new(), Vec::new()],
            rng: seed,
        }
    }
}

impl<K: Hash + Eq> Slots<K> {
    fn get(&self, key: &K) -> Option<&Entry> {
        let slot = *self.index.get(key)?;
        self.slots[slot].as_ref().map(|s| &s.entry)
    }

    fn vacant(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        })
    }

    /// Puts a new key's entry in `slot`, among the breakers that let calls through.
    fn fill(&mut self, slot: usize, key: K, entry: Entry)
    where
        K: Clone,
    {
        self.index.insert(key.clone(), slot);
        let at = self.lists[0].len();
        self.lists[0].push(slot);
        self.slots[slot] = Some(Slot {
            key,
            entry,
            list: 0,
            at,
        });
    }

    fn slot(&self, slot: usize) -> &Slot<K> {
        self.slots[slot]
            .as_ref()
            .expect("a listed slot is occupied")
    }

    fn slot_mut(&mut self, slot: usize) -> &mut Slot<K> {
        self.slots[slot]
            .as_mut()
            .expect("a listed slot is occupied")
    }

    fn unlist(&mut self, list: usize, at: usize) {
        self.lists[list].swap_remove(at);
        if let Some(&moved) = self.lists[list].get(at) {
            self.slot_mut(moved).at = at;
        }
    }

    fn move_to(&mut self, slot: usize, list: usize) {
        let (from, at) = {
            let s = self.slot(slot);
            (s.list, s.at)
        };
        if from == list {
            return;
        }
        self.unlist(from, at);
        let at = self.lists[list].len();
        self.lists[list].push(slot);
        let s = self.slot_mut(slot);
        s.list = list;
        s.at = at;
    }

    /// Evicts one breaker: from a sample of those that let calls through, an idle one or else
    /// the least recently used; a rejecting one only when none lets calls through.
    fn evict(&mut self, now: u64, idle: u64) {
        let victim = self
            .victim(0, now, idle)
            .or_else(|| self.victim(1, now, idle));
        if let Some(slot) = victim {
            let Slot { key, list, at, .. } = self.slots[slot].take().expect("a victim slot");
            self.index.remove(&key);
            self.unlist(list, at);
            self.free.push(slot);
        }
    }

    /// The best of a sample of `list` (all of it when small): one that lets calls through
    /// before one that rejects them (a breaker may have moved since it was filed), then one no
    /// call holds, then an idle one, then the least recently used.
    //
    // A breaker a call holds is spared because the call's result would go to a breaker no
    // longer in the map: a failure that trips it would be lost, and the key start over closed.
    // The map's own reference is the one count a breaker no call (or handle) holds has.
    fn victim(&mut self, list: usize, now: u64, idle: u64) -> Option<usize> {
        let len = self.lists[list].len();
        let looks = len.min(SAMPLE);
        let mut best: Option<((bool, bool, bool, u64), usize)> = None;
        for look in 0..looks {
            let at = if len <= SAMPLE {
                look
            } else {
                (self.next_random() % len as u64) as usize
            };
            let slot = self.lists[list][at];
            let entry = &self.slot(slot).entry;
            let last_used = entry.last_used.load(Ordering::Relaxed);
            let rank = (
                entry.breaker.rejects(),
                Arc::strong_count(&entry.breaker) > 1,
                now.saturating_sub(last_used) < idle,
                last_used,
            );
            if best.is_none_or(|(best, _)| rank < best) {
                best = Some((rank, slot));
            }
        }
        let ((rejects, _, _, _), slot) = best?;
        // Sampled from the closed list but open since: spare it, look at the open list.
        (list == 1 || !rejects).then_some(slot)
    }

    /// SplitMix64: a few cycles, and no state to share beyond the write lock it runs under.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Entry {
    fn touch(&self, now: u64) -> Arc<Breaker> {
        if now.saturating_sub(self.last_used.load(Ordering::Relaxed)) >= TOUCH_RESOLUTION_NANOS {
            self.last_used.store(now, Ordering::Relaxed);
        }
        self.breaker.clone()
    }
}

impl<K, F> KeyedCircuitBreakerLayer<K, F> {
    /// A layer keeping a breaker per key that `key` takes from each request, each configured
    /// by `config` (whose `max_keys` and `key_idle_timeout` bound the map).
    ///
    /// `key` is any [`ExtractKey`]: a closure through [`key_fn`](seawall_core::key::key_fn),
    /// or (feature `axum` of `seawall-core`) `ClientIp`, `Header` or `Route`.
    pub fn new(config: CircuitBreakerConfig, key: F) -> Self
    where
        F: KeyExtractor<Key = K>,
    {
        let observers = Arc::new(Observers::new(config.name.clone().into(), false));
        let seed = config.seed.unwrap_or_else(random_seed);
        Self {
            map: Arc::new(BreakerMap {
                config,
                observers,
                key,
                epoch: Instant::now(),
                breakers: RwLock::new(Slots::new(seed)),
                moved: Arc::default(),
            }),
            policy: Arc::new(Policy {
                classify: AnyError,
                retry_after: NoRetryAfter,
            }),
        }
    }
}

impl<K, F: KeyExtractor<Key = K>> KeyedCircuitBreakerLayer<K, F> {
    /// A builder keyed by `key` whose `build` makes the layer; `max_keys` and
    /// `key_idle_timeout` bound the map.
    pub fn builder(key: F) -> CircuitBreakerConfigBuilder<Self, F> {
        CircuitBreakerConfigBuilder::with(key)
    }
}

impl<K, F: KeyExtractor<Key = K>> FromConfig<F> for KeyedCircuitBreakerLayer<K, F> {
    fn from_config(config: CircuitBreakerConfig, key: F) -> Self {
        Self::new(config, key)
    }
}

impl<K, F, C, H> KeyedCircuitBreakerLayer<K, F, C, H> {
    /// Classifies results with `classify`, keeping the same breakers.
    pub fn classify<C2>(self, classify: C2) -> KeyedCircuitBreakerLayer<K, F, C2, H>
    where
        H: Clone,
    {
        KeyedCircuitBreakerLayer {
            map: self.map,
            policy: Arc::new(Policy {
                classify,
                retry_after: self.policy.retry_after.clone(),
            }),
        }
    }

    /// Stays open as long as `retry_after` reads from the result that tripped a breaker,
    /// clamped to the configuration's
    /// [`hinted_open_range`](crate::CircuitBreakerConfig::hinted_open_range).
    pub fn open_duration_from<H2>(self, retry_after: H2) -> KeyedCircuitBreakerLayer<K, F, C, H2>
    where
        C: Clone,
    {
        KeyedCircuitBreakerLayer {
            map: self.map,
            policy: Arc::new(Policy {
                classify: self.policy.classify.clone(),
                retry_after,
            }),
        }
    }

    /// Calls `hook` on every state change of any key's breaker.
    pub fn on_state_change(
        self,
        hook: impl Fn(StateChangedEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.map.observers.hooks.state_change.set(hook);
        self
    }

    /// Calls `hook` on every rejected call.
    pub fn on_rejected(self, hook: impl Fn(RejectedEvent<'_>) + Send + Sync + 'static) -> Self {
        self.map.observers.hooks.rejected.set(hook);
        self
    }

    /// Calls `hook` with the outcome of every call let through.
    pub fn on_outcome(self, hook: impl Fn(OutcomeEvent<'_>) + Send + Sync + 'static) -> Self {
        self.map.observers.hooks.outcome.set(hook);
        self
    }

    /// Keys with a breaker now.
    pub fn len(&self) -> usize {
        self.map
            .breakers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .len()
    }

    /// Whether no key has a breaker yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, F, C, H> KeyedCircuitBreakerLayer<K, F, C, H> {
    /// The layer instance's name.
    pub fn name(&self) -> &str {
        &self.map.config.name
    }

    /// A handle on the breaker of `key`, if it has one.
    pub fn handle(&self, key: &K) -> Option<CircuitBreakerHandle> {
        let breakers = self.map.breakers.read().unwrap_or_else(|e| e.into_inner());
        breakers
            .get(key)
            .map(|entry| CircuitBreakerHandle::new(entry.breaker.clone()))
    }

    /// The keys with a breaker now.
    pub fn keys(&self) -> Vec<K> {
        let breakers = self.map.breakers.read().unwrap_or_else(|e| e.into_inner());
        breakers.index.keys().cloned().collect()
    }
}

impl<K, F, C, H> Clone for KeyedCircuitBreakerLayer<K, F, C, H> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<K, F, C, H> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("name", self.map.observers.name())
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl<S, K, F, C, H> Layer<S> for KeyedCircuitBreakerLayer<K, F, C, H> {
    type Service = KeyedCircuitBreaker<S, K, F, C, H>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            map: self.map.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// Routes each call through the breaker of its key.
///
/// Made by [`KeyedCircuitBreakerLayer`].
pub struct KeyedCircuitBreaker<S, K, F, C, H> {
    inner: S,
    map: Arc<BreakerMap<K, F>>,
    policy: Arc<Policy<C, H>>,
}

impl<S, K, F, C, H> KeyedCircuitBreaker<S, K, F, C, H> {
    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, K, F, C, H> Clone for KeyedCircuitBreaker<S, K, F, C, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            map: self.map.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C, H> fmt::Debug for KeyedCircuitBreaker<S, K, F, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("name", self.map.observers.name())
            .finish_non_exhaustive()
    }
}

impl<S, Req, K, F, C, H> Service<Req> for KeyedCircuitBreaker<S, K, F, C, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone + fmt::Debug,
    F: ExtractKey<Req, Key = K>,
    C: Classify<S::Response, BoxError>,
    H: RetryAfter<S::Response, BoxError>,
{
    type Response = C::Response<CallReport>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, H>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.map.breaker(self.map.key.extract(&req));
        call(&mut self.inner, req, breaker, &self.policy)
    }
}
