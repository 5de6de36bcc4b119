//! A shared retry budget store in this process's memory, for tests and the lab.

use std::collections::HashMap;
use std::fmt;
use std::future::Ready;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use seawall_core::store::{StoreError, StoreErrorKind};
use tokio::time::Instant;

use super::{BudgetStore, Counts};
use crate::config::BudgetConfig;

/// A [`BudgetStore`] in this process's memory: every [`FleetBudget`](super::FleetBudget)
/// given a clone of it shares its counts, as every replica shares a Redis. It counts per
/// second of tokio's clock, as the Redis script counts per second of the server's, and can be
/// taken down with [`set_down`](Self::set_down) to test failure policies.
#[derive(Clone, Default)]
pub struct MemoryBudgetStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    budgets: Mutex<HashMap<Box<[u8]>, Counts>>,
    epoch: OnceLock<Instant>,
    down: AtomicBool,
    round_trips: AtomicU64,
}

impl MemoryBudgetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every sync fail (`true`) or answer (`false`) from now on.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::Release);
    }

    /// Syncs made so far.
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for MemoryBudgetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudgetStore")
            .field("down", &self.inner.down.load(Ordering::Relaxed))
            .field("round_trips", &self.round_trips())
            .finish()
    }
}

impl BudgetStore for MemoryBudgetStore {
    type Future = Ready<Result<u32, StoreError>>;

    fn sync(&self, key: &[u8], budget: &BudgetConfig, deposits: u64, want: u32) -> Self::Future {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        if self.inner.down.load(Ordering::Acquire) {
            return std::future::ready(Err(StoreError::new(
                StoreErrorKind::Connection,
                "the memory store is down",
            )));
        }
        let epoch = *self.inner.epoch.get_or_init(Instant::now);
        let second = Instant::now().saturating_duration_since(epoch).as_secs();
        let mut budgets = self
            .inner
            .budgets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let counts = budgets.entry(key.into()).or_default();
        std::future::ready(Ok(counts.sync(second, budget, deposits, want)))
    }
}
