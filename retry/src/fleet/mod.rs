//! A retry budget for a whole fleet: "retries stay under 10 % of the traffic" for every
//! replica together, kept in a store they share.
//!
//! Each replica's own [`RetryBudget`] holds the ratio for that replica's traffic, so the fleet's
//! retries stay under the ratio too, but its floor (`min_per_second`) multiplies by the number
//! of replicas, and a replica whose traffic is all retries of others' failures is not held to
//! the fleet's share. A [`FleetBudget`] counts the requests and retries of every replica in
//! one [`BudgetStore`] (Redis, or [`MemoryBudgetStore`] in tests), per second over the
//! budget's `ttl`, so the ratio and the floor are the fleet's.
//!
//! A retry must be decided at once, without a round trip, so each replica talks to the store
//! in batches, from a task of its own, every `sync_interval` (and at once when it runs out):
//! - **deposits**: the requests it saw since the last sync are added to the fleet's count;
//! - **withdrawals**: it takes a lease of retries from the fleet's budget (charged to the
//!   fleet when taken) and spends them locally. The lease is sized to twice the retries spent
//!   in the last interval, at least one and at most `max_lease`, so a healthy replica holds
//!   one and a failing one enough for its next interval.
//!
//! So the fleet's retries over any window of `ttl` stay within `ratio × requests + floor`,
//! plus the leases held when the window began: at most N × `max_lease` for N replicas. A
//! retry found with no lease is refused while the sync that refills it is under way: at the
//! start of an outage, a replica's first retries wait for the next sync.
//!
//! When the store cannot answer (a sync failed, or the breaker around it is open) and the
//! lease is spent, retries are decided by `on_failure`: all allowed (`fail_open`), none
//! (`fail_closed`), or by this replica's own budget with the fleet's ratio and its share of
//! the floor (`local`): the ratio holds for each replica's traffic, so for the fleet's.
//!
//! ```
//! use std::time::Duration;
//! use seawall_core::store::OnStoreFailure;
//! use seawall_retry::{BudgetConfig, FleetBudget, FleetBudgetConfig, MemoryBudgetStore, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), seawall_core::config::ConfigError> {
//! let config = FleetBudgetConfig::builder()
//!     .name("payments")
//!     .budget(BudgetConfig::new(0.1, 5, Duration::from_secs(10))?)
//!     .on_failure(OnStoreFailure::Local)
//!     .expected_replicas(3)
//!     .build()?;
//! // With the `redis` feature: `FleetBudget::redis(config)?`.
//! let budget = FleetBudget::new(config, MemoryBudgetStore::new());
//! let layer = RetryLayer::builder().name("payments").build()?.with_shared_budget(budget);
//! # drop(layer);
//! # Ok(())
//! # }
//! ```

mod config;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use seawall_core::metrics::MetricScope;
use seawall_core::store::{OnStoreFailure, StoreError, StoreGuard, StoreMetricNames};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

pub use self::config::{FleetBudgetConfig, FleetBudgetConfigBuilder};
pub use self::memory::MemoryBudgetStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisBudgetStore;

use crate::budget::RetryBudget;
use crate::config::BudgetConfig;

const METRICS: StoreMetricNames = StoreMetricNames {
    errors: "seawall_retry_budget_store_errors_total",
    round_trips: "seawall_retry_budget_store_round_trips_total",
    round_trip_seconds: "seawall_retry_budget_store_round_trip_seconds",
    fallbacks: "seawall_retry_budget_store_fallbacks_total",
};

/// Where a retry layer draws its retries from: a [`RetryBudget`] of its own, or one shared
/// by a fleet ([`FleetBudget`]).
///
/// Both calls are on the call path, so they must decide at once: no waiting, no round trip.
pub trait Budget: fmt::Debug + Send + Sync + 'static {
    /// Counts one request.
    fn deposit(&self, now: Instant);

    /// Takes one retry; `false` when none is left.
    fn withdraw(&self, now: Instant) -> bool;
}

impl Budget for RetryBudget {
    fn deposit(&self, now: Instant) {
        self.deposit_at(now);
    }

    fn withdraw(&self, now: Instant) -> bool {
        self.withdraw_at(now)
    }
}

/// The budget a retry layer holds.
#[derive(Clone)]
pub(crate) enum LayerBudget {
    Own(RetryBudget),
    Shared(Arc<dyn Budget>),
}

impl LayerBudget {
    #[inline]
    pub(crate) fn withdraw(&self) -> bool {
        match self {
            Self::Own(budget) => budget.withdraw(),
            Self::Shared(budget) => budget.withdraw(Instant::now()),
        }
    }

    pub(crate) fn own(&self) -> Option<&RetryBudget> {
        match self {
            Self::Own(budget) => Some(budget),
            Self::Shared(_) => None,
        }
    }
}

impl fmt::Debug for LayerBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Own(budget) => fmt::Debug::fmt(budget, f),
            Self::Shared(budget) => fmt::Debug::fmt(budget, f),
        }
    }
}

/// A store of retry budgets that every replica of a service shares.
///
/// Implementations count requests and retries per second, atomically for every replica.
pub trait BudgetStore: fmt::Debug + Send + Sync + 'static {
    /// The answer to [`sync`](Self::sync).
    type Future: Future<Output = Result<u32, StoreError>> + Send + 'static;

    /// Adds `deposits` requests to the budget named `key`, then takes up to `want` retries
    /// from what `budget` allows over its `ttl` (`ratio` × requests + `min_per_second` ×
    /// `ttl`, less the retries taken), and returns how many it took.
    fn sync(&self, key: &[u8], budget: &BudgetConfig, deposits: u64, want: u32) -> Self::Future;
}

/// A retry budget shared by every replica of a fleet through a [`BudgetStore`]; see the
/// [module docs](self).
///
/// Cloning it is cheap and shares the same counts; give it to layers with
/// [`RetryLayer::with_shared_budget`](crate::RetryLayer::with_shared_budget).
pub struct FleetBudget<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for FleetBudget<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    config: FleetBudgetConfig,
    store: S,
    key: Box<[u8]>,
    guard: Arc<StoreGuard>,
    /// Requests seen since the last sync.
    deposits: AtomicU64,
    /// Leased retries not spent yet.
    lease: AtomicU64,
    /// Retries spent since the last sync, to size the next lease.
    spent: AtomicU64,
    /// When the lease was granted, in ms after `epoch`: it is dropped after the budget's ttl.
    leased_at: AtomicU64,
    /// The store could not answer the last sync.
    failing: AtomicBool,
    /// Held for a whole sync: a sync sizes its request from the lease held, which another
    /// sync in flight has not added its grant to yet, so two at once would each take up to
    /// `max_lease`.
    syncing: Mutex<()>,
    /// This replica's own budget, for the `local` policy; it counts every request, so that it
    /// is ready when needed.
    local: RetryBudget,
    wake: Arc<Notify>,
    started: OnceLock<()>,
    epoch: Instant,
}

impl<S: BudgetStore> FleetBudget<S> {
    /// A fleet-wide budget as `config` says, in `store`. Its sync task starts on the first
    /// request, on the runtime that request runs on.
    pub fn new(config: FleetBudgetConfig, store: S) -> Self {
        let mut key = config.key_prefix().as_bytes().to_vec();
        key.push(b':');
        key.extend_from_slice(config.name.as_bytes());
        let budget = config.budget;
        let replicas = config.expected_replicas().unwrap_or(1).max(1);
        let local = BudgetConfig::new(
            budget.ratio(),
            budget.min_per_second() / replicas,
            budget.ttl(),
        )
        .unwrap_or(budget);
        let scope = MetricScope::new(config.name.clone());
        Self {
            inner: Arc::new(Inner {
                guard: Arc::new(StoreGuard::new(*config.guard(), &scope, &METRICS)),
                store,
                key: key.into(),
                deposits: AtomicU64::new(0),
                lease: AtomicU64::new(0),
                spent: AtomicU64::new(0),
                leased_at: AtomicU64::new(0),
                failing: AtomicBool::new(false),
                syncing: Mutex::new(()),
                local: RetryBudget::new(local),
                wake: Arc::new(Notify::new()),
                started: OnceLock::new(),
                epoch: Instant::now(),
                config,
            }),
        }
    }

    /// The budget's configuration.
    pub fn config(&self) -> &FleetBudgetConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Leased retries this replica has not spent yet.
    pub fn leased(&self) -> u64 {
        self.inner.lease.load(Ordering::Acquire)
    }

    /// Whether the store could not answer the last sync, or the breaker around it is open:
    /// retries past the lease are then decided by `on_failure`.
    pub fn store_unavailable(&self) -> bool {
        self.inner.failing.load(Ordering::Acquire) || self.inner.guard.is_open()
    }

    /// Syncs with the store now: flushes the requests counted since the last sync and refills
    /// the lease. The sync task does this every `sync_interval`; a sync already under way
    /// (the task's, or another caller's) finishes first, so the lease never passes
    /// `max_lease`.
    pub async fn sync(&self) {
        self.inner.sync().await;
    }

    fn start(&self) {
        if self.inner.started.get().is_some() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && self.inner.started.set(()).is_ok()
        {
            runtime.spawn(run(Arc::downgrade(&self.inner)));
        }
    }
}

/// The sync task: every `sync_interval`, or at once when the lease runs out, until every
/// handle to the budget is dropped.
async fn run<S: BudgetStore>(inner: Weak<Inner<S>>) {
    loop {
        let Some(budget) = inner.upgrade() else {
            return;
        };
        budget.sync().await;
        let interval = budget.config.sync_interval;
        let wake = budget.wake.clone();
        // Holding only a weak reference while idle lets the budget be dropped.
        drop(budget);
        let _ = tokio::time::timeout(interval, wake.notified()).await;
    }
}

impl<S: BudgetStore> Inner<S> {
    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    async fn sync(&self) {
        let _one_at_a_time = self.syncing.lock().await;
        let now = Instant::now();
        // A lease older than the ttl was charged to a window that has passed.
        let ttl = self.config.budget.ttl();
        if self.ms(now) >= self.leased_at.load(Ordering::Acquire) + ttl.as_millis() as u64 {
            self.lease.store(0, Ordering::Release);
        }
        let spent = self.spent.swap(0, Ordering::AcqRel);
        let held = self.lease.load(Ordering::Acquire);
        let target = spent
            .saturating_mul(2)
            .clamp(1, u64::from(self.config.max_lease));
        let want = u32::try_from(target.saturating_sub(held)).unwrap_or(u32::MAX);
        let deposits = self.deposits.swap(0, Ordering::AcqRel);
        if deposits == 0 && want == 0 {
            return;
        }
        if self.guard.admit().is_err() {
            // Requests seen while the store is away are not counted for the fleet: the
            // budget errs on the side of fewer retries.
            self.failing.store(true, Ordering::Release);
            return;
        }
        let call = self
            .store
            .sync(&self.key, &self.config.budget, deposits, want);
        match self.guard.guard(call).await {
            Ok(granted) => {
                if granted > 0 {
                    self.lease.fetch_add(u64::from(granted), Ordering::AcqRel);
                    self.leased_at.store(self.ms(now), Ordering::Release);
                }
                self.failing.store(false, Ordering::Release);
            }
            Err(_) => self.failing.store(true, Ordering::Release),
        }
    }

    fn spend_leased(&self) -> bool {
        let mut lease = self.lease.load(Ordering::Acquire);
        while lease > 0 {
            match self.lease.compare_exchange_weak(
                lease,
                lease - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => lease = actual,
            }
        }
        false
    }
}

impl<S: BudgetStore> Budget for FleetBudget<S> {
    fn deposit(&self, now: Instant) {
        self.start();
        self.inner.deposits.fetch_add(1, Ordering::AcqRel);
        self.inner.local.deposit_at(now);
    }

    fn withdraw(&self, now: Instant) -> bool {
        let inner = &*self.inner;
        self.start();
        if inner.spend_leased() {
            inner.spent.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        // Counted as wanted, so that the next lease is sized for it.
        inner.spent.fetch_add(1, Ordering::AcqRel);
        if !self.store_unavailable() {
            inner.wake.notify_one();
            return false;
        }
        inner.guard.fell_back(inner.config.on_failure());
        match inner.config.on_failure() {
            OnStoreFailure::FailOpen => true,
            OnStoreFailure::FailClosed => false,
            OnStoreFailure::Local => inner.local.withdraw_at(now),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for FleetBudget<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBudget")
            .field("config", &self.inner.config)
            .field("store", &self.inner.store)
            .field("leased", &self.inner.lease.load(Ordering::Relaxed))
            .finish()
    }
}

/// Per-second counts of requests and retries over a window: the reference both stores follow.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    /// (second, requests, retries), oldest first.
    seconds: std::collections::VecDeque<(u64, u64, u64)>,
}

impl Counts {
    /// Adds `deposits` at `second`, then takes up to `want` retries from what `budget` allows
    /// over the `ttl` ending at `second`.
    pub(crate) fn sync(
        &mut self,
        second: u64,
        budget: &BudgetConfig,
        deposits: u64,
        want: u32,
    ) -> u32 {
        let ttl = budget.ttl().as_secs().max(1);
        while self
            .seconds
            .front()
            .is_some_and(|&(s, ..)| s + ttl <= second)
        {
            self.seconds.pop_front();
        }
        if self.seconds.back().is_none_or(|&(s, ..)| s != second) {
            self.seconds.push_back((second, 0, 0));
        }
        if let Some(last) = self.seconds.back_mut() {
            last.1 += deposits;
        }
        let (requests, retries) = self
            .seconds
            .iter()
            .fold((0, 0), |(d, w), &(_, dd, ww)| (d + dd, w + ww));
        let reserve = u64::from(budget.min_per_second()) * ttl;
        let allowed =
            ((budget.ratio() * requests as f64).floor() as u64 + reserve).saturating_sub(retries);
        let granted = allowed.min(u64::from(want)) as u32;
        if let Some(last) = self.seconds.back_mut() {
            last.2 += u64::from(granted);
        }
        granted
    }
}
