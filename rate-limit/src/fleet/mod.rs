//! Fleet-wide limits: buckets in a [`QuotaStore`] that every replica shares, with leases, a
//! cached "no", and a policy for when the store cannot answer.

pub(crate) mod config;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use metrics::Counter;
use pin_project_lite::pin_project;
use seawall_core::metrics::MetricScope;
use seawall_core::store::{Guarded, OnStoreFailure, StoreGuard, StoreMetricNames};
use tokio::time::Instant;

use self::config::FleetConfig;
use crate::clock::TokioClock;
use crate::config::{Quota, RateLimitConfig};
use crate::extract::{ExtractKey, KeyExtractor};
use crate::limiter::{Check, Decision, DirectLimiter, Limiter, SetQuota, admit, sealed};
use crate::store::{QuotaStore, StoreKey};
use seawall_core::time::nanos;

const METRICS: StoreMetricNames = StoreMetricNames {
    errors: "seawall_rate_limit_store_errors_total",
    round_trips: "seawall_rate_limit_store_round_trips_total",
    round_trip_seconds: "seawall_rate_limit_store_round_trip_seconds",
    fallbacks: "seawall_rate_limit_store_fallbacks_total",
};

/// One bucket for every call of every replica, kept in a shared [`QuotaStore`].
///
/// Made by [`RateLimitLayer::with_store`](crate::RateLimitLayer::with_store). Every replica
/// whose layer has the same name (and key prefix) draws from the same bucket, so the quota
/// holds for the fleet. Three things keep round trips to the store few and short:
///
/// - **Leases.** With `lease = L > 1`, a call that finds no leased cell asks the store for L
///   at once (as many as are free, up to L), spends one and keeps the rest, which the next
///   calls spend without a round trip. One lease round trip is out at a time per bucket;
///   calls meanwhile ask for a single cell each, which they spend at once. So a replica
///   holds at most L − 1 unspent cells, and the bound on the fleet follows from GCRA on the
///   store: cells granted over any window of `t` seconds are at most `burst + rate × t`
///   (plus one at the window's edge), and cells spent in it are at most those plus the ones
///   held when it began. **A fleet of N replicas admits at most `burst + rate × t + N × (L −
///   1)` calls in any window of `t` seconds** (to within one), against `burst + rate × t`
///   without leases: the overshoot is the leased cells, whatever the window. With 3 replicas
///   at lease 10, a quota of 100/s with burst 10 admits at most 10 + 1000 + 27 = 1037 calls in
///   10 s, and at least about 1000 + 10 − 27 under steady demand (cells leased but unspent
///   when demand stops are lost to the fleet). A lease larger than the quota's burst is
///   refused by the configuration: the store never grants more than the burst at once.
/// - **A cached "no".** When the store grants nothing it says when the next cell is free;
///   until then the replica answers this bucket's calls itself (`429` with that
///   Retry-After). GCRA frees no cell before then, for anyone, so this admits nothing less.
/// - **A guard.** Every call to the store is bounded by the fleet's `timeout`, and a breaker
///   stops calling a store that failed `failures` times in a row for `open_for`. Meanwhile
///   calls get what `on_failure` says: admitted (`fail_open`, counted in
///   `seawall_rate_limit_store_fallbacks_total`), refused with `503` and Retry-After
///   (`fail_closed`, rejection kind `StoreUnavailable`), or limited by a local bucket of the
///   quota divided by `expected_replicas`, rounded down (`local`). No call waits on the store
///   longer than the timeout.
///
/// **Reloading the quota** ([`RateLimitHandle::reload`](crate::RateLimitHandle::reload)) applies
/// to the next round trip of every bucket, and the local share of the `local` policy follows
/// it (divided as at build). The store keeps each bucket's theoretical arrival time (TAT),
/// which is a time, not a count of cells: the script reads it with the quota each call
/// passes, so what a bucket has spent carries over as *the share of its window* spent. A
/// bucket that spent all 4 cells of 4 a minute is empty under 8 a minute too and gets a cell
/// every 7.5 s from then; one that spent 2 of 4 (half its window) has 4 of 8 left; reloaded
/// lower, the same 2 of 4 leave 1 of 2. A refusal this replica cached is forgotten, so the
/// next call asks the store under the new quota. Cells leased under the old quota are spent, not
/// dropped: the store charged them already, so dropping them would give nothing back to the
/// fleet, only admit fewer calls, and the overshoot bound above holds through a reload as it
/// does at any time.
pub struct Fleet<S: QuotaStore> {
    core: Arc<FleetCore<S>>,
    bucket: Arc<Bucket>,
}

/// One bucket per key of every replica, kept in a shared [`QuotaStore`].
///
/// Made by [`RateLimitLayer::keyed`](crate::RateLimitLayer::keyed) on a fleet-wide layer. The
/// key's [`StoreKey`] bytes name its bucket in the store, the same in every replica. Each
/// replica tracks at most `max_keys` keys locally (their leases and cached answers); a key
/// evicted to make room loses its unspent lease, which only admits less. Otherwise as
/// [`Fleet`].
pub struct FleetKeyed<E: KeyExtractor, S: QuotaStore> {
    extractor: E,
    core: Arc<FleetCore<S>>,
    buckets: BucketMap<E::Key>,
}

/// The local side of a key's bucket in a [`FleetKeyed`] limit: what a waiting call keeps to
/// check the same bucket again.
pub struct FleetBucket(Arc<Bucket>);

impl fmt::Debug for FleetBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// What every bucket of one layer shares.
struct FleetCore<S> {
    name: Arc<str>,
    store: S,
    // Swapped whole by a reload; a load is a few atomic operations and no lock.
    quota: ArcSwap<FleetQuota>,
    replicas: u32,
    lease: u32,
    on_failure: OnStoreFailure,
    guard: Arc<StoreGuard>,
    epoch: Instant,
}

/// The quota in force, and the share of it a replica allows alone under the `local` policy.
#[derive(Debug)]
struct FleetQuota {
    quota: Quota,
    local: governor::Quota,
}

impl FleetQuota {
    fn new(quota: Quota, replicas: u32) -> Self {
        let share = |n: u32| (n / replicas).max(1);
        let local = match quota.period() {
            crate::config::Period::Second => Quota::per_second(share(quota.rate())),
            crate::config::Period::Minute => Quota::per_minute(share(quota.rate())),
        }
        .with_burst(share(quota.burst()));
        Self {
            quota,
            local: local.to_governor(),
        }
    }
}

/// A bucket's local share under the `local` policy, and the quota it was divided from.
struct LocalShare {
    quota: Quota,
    limiter: DirectLimiter,
}

/// One bucket's replica-local state: its store key, leased cells, the cached "no".
struct Bucket {
    key: Box<[u8]>,
    /// Leased cells not spent yet.
    cells: AtomicU32,
    /// While a lease round trip is out: when it times out, in ns after the epoch (0: none).
    refill_until: AtomicU64,
    /// The store had no cell for this bucket before this time, in ns after the epoch.
    denied_until: AtomicU64,
    /// The local share of the quota, made the first time the `local` policy needs it, and
    /// again the first time after a reload changed the quota.
    local: ArcSwapOption<LocalShare>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("leased", &self.cells.load(Ordering::Relaxed))
            .finish()
    }
}

impl Bucket {
    fn new(key: Vec<u8>) -> Self {
        Self {
            key: key.into(),
            cells: AtomicU32::new(0),
            refill_until: AtomicU64::new(0),
            denied_until: AtomicU64::new(0),
            local: ArcSwapOption::empty(),
        }
    }

    /// Spends a leased cell, if one is left.
    #[inline]
    fn spend_leased(&self) -> bool {
        let mut cells = self.cells.load(Ordering::Relaxed);
        while cells > 0 {
            match self.cells.compare_exchange_weak(
                cells,
                cells - 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cells = actual,
            }
        }
        false
    }

    /// Forgets the cached "no": it was the old quota's answer, and a larger quota may have a
    /// cell free before it ends.
    fn forget_refusal(&self) {
        self.denied_until.store(0, Ordering::Release);
    }

    /// Whether this call may take the lease round trip (none is out, or the last one timed
    /// out unanswered).
    fn claim_refill(&self, now: u64, timeout: u64) -> bool {
        let until = self.refill_until.load(Ordering::Acquire);
        now >= until
            && self
                .refill_until
                .compare_exchange(
                    until,
                    now.saturating_add(timeout).max(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

impl<S: QuotaStore> FleetCore<S> {
    fn new(config: &RateLimitConfig, fleet: &FleetConfig, store: S) -> Self {
        let replicas = fleet.expected_replicas().unwrap_or(1).max(1);
        Self {
            name: config.name.clone().into(),
            store,
            quota: ArcSwap::from_pointee(FleetQuota::new(config.quota, replicas)),
            replicas,
            lease: fleet.lease,
            on_failure: fleet.on_failure(),
            guard: Arc::new(StoreGuard::new(
                *fleet.guard(),
                &MetricScope::new(config.name.clone()),
                &METRICS,
            )),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.epoch))
    }

    fn check(self: &Arc<Self>, bucket: &Arc<Bucket>) -> Check<Ask<S>> {
        if self.lease > 1 && bucket.spend_leased() {
            return Check::Permit;
        }
        self.ask(bucket)
    }

    #[cold]
    #[inline(never)]
    fn ask(self: &Arc<Self>, bucket: &Arc<Bucket>) -> Check<Ask<S>> {
        let now = self.now();
        let denied = bucket.denied_until.load(Ordering::Acquire);
        if now < denied {
            return Check::Limited(Duration::from_nanos(denied - now));
        }
        if let Err(open) = self.guard.admit() {
            return match self.fall_back(bucket, open) {
                Decision::Permit => Check::Permit,
                Decision::Limited(wait) => Check::Limited(wait),
                Decision::Unavailable(wait) => Check::Unavailable(wait),
            };
        }
        let timeout = nanos(self.guard.config().timeout());
        let want = match self.lease > 1 && bucket.claim_refill(now, timeout) {
            true => self.lease,
            false => 1,
        };
        tracing::trace!(name = %self.name, want, "asking the shared store");
        let quota = self.quota.load().quota;
        Check::Ask(Ask {
            call: self.guard.guard(self.store.take(&bucket.key, &quota, want)),
            want,
            bucket: bucket.clone(),
            core: self.clone(),
        })
    }

    /// What the failure policy decides for a call the store cannot answer now; a refusal
    /// asks the caller to come back after `retry_after`.
    fn fall_back(&self, bucket: &Bucket, retry_after: Duration) -> Decision {
        self.guard.fell_back(self.on_failure);
        match self.on_failure {
            OnStoreFailure::FailOpen => Decision::Permit,
            OnStoreFailure::FailClosed => Decision::Unavailable(retry_after),
            OnStoreFailure::Local => {
                let local = self.local_share(bucket);
                match admit(|| local.limiter.check()) {
                    Ok(()) => Decision::Permit,
                    Err(wait) => Decision::Limited(wait),
                }
            }
        }
    }

    /// `bucket`'s local share of the quota in force, made afresh when there is none yet or
    /// the quota changed since.
    #[cold]
    #[inline(never)]
    fn local_share(&self, bucket: &Bucket) -> Arc<LocalShare> {
        let quota = self.quota.load();
        loop {
            let current = bucket.local.load_full();
            if let Some(share) = &current
                && share.quota == quota.quota
            {
                return share.clone();
            }
            let fresh = Arc::new(LocalShare {
                quota: quota.quota,
                limiter: governor::RateLimiter::direct_with_clock(quota.local, TokioClock),
            });
            // Two calls making the share at once would each spend a cell of their own.
            let before = bucket.local.compare_and_swap(&current, Some(fresh.clone()));
            if same(&before, &current) {
                return fresh;
            }
        }
    }

    /// Takes `quota` for the next round trips, and its local share for the next fallbacks.
    fn set_quota(&self, quota: Quota) {
        self.quota
            .store(Arc::new(FleetQuota::new(quota, self.replicas)));
    }

    /// Takes in the store's answer to a round trip for `want` cells.
    fn answered(
        &self,
        bucket: &Bucket,
        want: u32,
        result: Result<crate::store::Grant, ()>,
    ) -> Decision {
        if want > 1 {
            bucket.refill_until.store(0, Ordering::Release);
        }
        match result {
            Ok(grant) if grant.granted() > 0 => {
                let extra = grant.granted().min(want) - 1;
                if extra > 0 {
                    bucket.cells.fetch_add(extra, Ordering::AcqRel);
                }
                Decision::Permit
            }
            Ok(grant) => {
                let wait = grant.retry_after();
                bucket
                    .denied_until
                    .fetch_max(self.now().saturating_add(nanos(wait)), Ordering::AcqRel);
                Decision::Limited(wait)
            }
            Err(()) => self.fall_back(bucket, self.guard.config().open_for()),
        }
    }
}

fn same(a: &Option<Arc<LocalShare>>, b: &Option<Arc<LocalShare>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

pin_project! {
    /// A round trip to a fleet-wide limit's store, bounded by the store's timeout, and what
    /// follows from its answer.
    pub struct Ask<S>
    where
        S: QuotaStore,
    {
        #[pin]
        call: Guarded<S::Future>,
        want: u32,
        bucket: Arc<Bucket>,
        core: Arc<FleetCore<S>>,
    }
}

impl<S: QuotaStore> fmt::Debug for Ask<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ask")
            .field("want", &self.want)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl<S: QuotaStore> Future for Ask<S> {
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        let this = self.project();
        let result = ready!(this.call.poll(cx)).map_err(drop);
        Poll::Ready(this.core.answered(this.bucket, *this.want, result))
    }
}

// ===== impl Fleet =====

impl<S: QuotaStore> Fleet<S> {
    pub(crate) fn new(config: &RateLimitConfig, fleet: &FleetConfig, store: S) -> Self {
        let mut key = fleet.key_prefix().as_bytes().to_vec();
        key.push(b':');
        key.extend_from_slice(config.name.as_bytes());
        Self {
            core: Arc::new(FleetCore::new(config, fleet, store)),
            bucket: Arc::new(Bucket::new(key)),
        }
    }

    /// The store's name for this limit's bucket.
    pub fn store_key(&self) -> &[u8] {
        &self.bucket.key
    }

    /// Leased cells not spent yet.
    pub fn leased(&self) -> u32 {
        self.bucket.cells.load(Ordering::Relaxed)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.core.store
    }

    /// Whether the breaker around the store keeps calls from it now.
    pub fn store_unavailable(&self) -> bool {
        self.core.guard.is_open()
    }

    pub(crate) fn keyed<E>(&self, extractor: E, max_keys: usize) -> FleetKeyed<E, S>
    where
        E: KeyExtractor,
    {
        FleetKeyed {
            extractor,
            core: self.core.clone(),
            buckets: BucketMap::new(self.bucket.key.to_vec(), max_keys, &self.core.name),
        }
    }
}

impl<S: QuotaStore> sealed::Sealed for Fleet<S> {
    type Cache = ();

    fn cache(&self) {}
}

impl<S: QuotaStore> SetQuota for Fleet<S> {
    fn set_quota(&self, quota: Quota) {
        self.core.set_quota(quota);
        self.bucket.forget_refusal();
    }
}

impl<S: QuotaStore, Req> Limiter<Req> for Fleet<S> {
    type Key = ();
    type Ask = Ask<S>;

    #[inline]
    fn key(&self, _req: &Req) {}

    #[inline]
    fn check(&self, _key: &()) -> Check<Ask<S>> {
        self.core.check(&self.bucket)
    }
}

impl<S: QuotaStore + fmt::Debug> fmt::Debug for Fleet<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("store", &self.core.store)
            .field("bucket", &self.bucket)
            .field("lease", &self.core.lease)
            .field("on_failure", &self.core.on_failure)
            .field("guard", &self.core.guard)
            .finish()
    }
}

// ===== impl FleetKeyed =====

impl<E: KeyExtractor, S: QuotaStore> FleetKeyed<E, S> {
    /// How many keys this replica tracks now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.core.store
    }
}

impl<E: KeyExtractor, S: QuotaStore> sealed::Sealed for FleetKeyed<E, S> {
    type Cache = ();

    fn cache(&self) {}
}

impl<E: KeyExtractor, S: QuotaStore> SetQuota for FleetKeyed<E, S> {
    fn set_quota(&self, quota: Quota) {
        self.core.set_quota(quota);
        for shard in &self.buckets.shards {
            for bucket in shard
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .values()
            {
                bucket.forget_refusal();
            }
        }
    }
}

impl<E, S, Req> Limiter<Req> for FleetKeyed<E, S>
where
    E: ExtractKey<Req>,
    E::Key: StoreKey,
    S: QuotaStore,
{
    type Key = FleetBucket;
    type Ask = Ask<S>;

    #[inline]
    fn key(&self, req: &Req) -> FleetBucket {
        FleetBucket(self.buckets.get(&self.extractor.extract(req)))
    }

    #[inline]
    fn check(&self, key: &FleetBucket) -> Check<Ask<S>> {
        self.core.check(&key.0)
    }
}

impl<E: KeyExtractor + fmt::Debug, S: QuotaStore + fmt::Debug> fmt::Debug for FleetKeyed<E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetKeyed")
            .field("extractor", &self.extractor)
            .field("store", &self.core.store)
            .field("keys", &self.len())
            .field("lease", &self.core.lease)
            .field("on_failure", &self.core.on_failure)
            .finish()
    }
}

type BucketShard<K> = RwLock<HashMap<K, Arc<Bucket>>>;

/// The buckets a replica tracks for a keyed fleet-wide limit, in shards of bounded size.
struct BucketMap<K> {
    shards: Box<[BucketShard<K>]>,
    max_per_shard: usize,
    hasher: RandomState,
    prefix: Vec<u8>,
    evicted: Counter,
}

impl<K: Hash + Eq + Clone + StoreKey> BucketMap<K> {
    fn get(&self, key: &K) -> Arc<Bucket> {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % self.shards.len()];
        if let Some(bucket) = shard
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return bucket.clone();
        }
        self.insert(shard, key)
    }

    #[cold]
    #[inline(never)]
    fn insert(&self, shard: &BucketShard<K>, key: &K) -> Arc<Bucket> {
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = map.get(key) {
            return bucket.clone();
        }
        if map.len() >= self.max_per_shard {
            // Any bucket no call is using will do: its lease and cached answer only admit
            // less when lost.
            let victim = map
                .iter()
                .find(|(_, b)| Arc::strong_count(b) == 1)
                .or_else(|| map.iter().next())
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                map.remove(&victim);
                self.evicted.increment(1);
            }
        }
        let mut store_key = self.prefix.clone();
        store_key.push(b':');
        key.write_key(&mut store_key);
        let bucket = Arc::new(Bucket::new(store_key));
        map.insert(key.clone(), bucket.clone());
        bucket
    }
}

impl<K> BucketMap<K> {
    fn new(prefix: Vec<u8>, max_keys: usize, name: &Arc<str>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let count = (cpus * 4).min(max_keys.div_ceil(64)).max(1);
        Self {
            shards: (0..count).map(|_| RwLock::new(HashMap::new())).collect(),
            max_per_shard: max_keys.div_ceil(count),
            hasher: RandomState::new(),
            prefix,
            evicted: MetricScope::new(name.clone())
                .counter("seawall_rate_limit_keys_evicted_total", &[]),
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}
