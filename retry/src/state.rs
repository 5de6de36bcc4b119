//! What every service of one retry layer shares: its settings, budget, metric handles and hook.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use metrics::{Counter, Histogram};
use seawall_core::Hook;
use seawall_core::backoff::Backoff;
use seawall_core::metrics::{CallCounter, MetricScope};
use seawall_core::time::nanos;
use tokio::time::Instant;

use crate::budget::RetryBudget;
use crate::config::RetryConfig;
use crate::event::RetryEvent;
use crate::fleet::LayerBudget;

/// The metric handles of one layer instance.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) success_without_retry: CallCounter,
    pub(crate) success_with_retry: CallCounter,
    pub(crate) failed_without_retry: CallCounter,
    pub(crate) failed_with_retry: CallCounter,
    pub(crate) attempts: CallCounter,
    pub(crate) budget_exhausted: Counter,
    pub(crate) attempts_per_call: Histogram,
    pub(crate) duration: Histogram,
    pub(crate) scope: MetricScope,
}

impl Metrics {
    fn new(scope: &MetricScope) -> Self {
        const CALLS: &str = "seawall_retry_calls_total";
        Self {
            success_without_retry: scope.call_counter(CALLS, &[("kind", "success_without_retry")]),
            success_with_retry: scope.call_counter(CALLS, &[("kind", "success_with_retry")]),
            failed_without_retry: scope.call_counter(CALLS, &[("kind", "failed_without_retry")]),
            failed_with_retry: scope.call_counter(CALLS, &[("kind", "failed_with_retry")]),
            attempts: scope.call_counter("seawall_retry_attempts_total", &[]),
            budget_exhausted: scope.counter("seawall_retry_budget_exhausted_total", &[]),
            attempts_per_call: scope.histogram("seawall_retry_call_attempts", &[]),
            duration: scope.histogram("seawall_retry_call_duration_seconds", &[]),
            scope: scope.clone(),
        }
    }
}

/// The settings a handle may reload, shared by every copy of a layer's state: `max_attempts`
/// is read by every call, so it is an atomic; the rest only when a retry is planned, under a
/// lock taken only then.
pub(crate) struct Settings {
    pub(crate) max_attempts: AtomicU32,
    pub(crate) config: RwLock<RetryConfig>,
}

/// What a retry's plan reads of the settings.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_delay: Duration,
    pub(crate) max_elapsed: Option<Duration>,
}

impl Settings {
    fn new(config: &RetryConfig) -> Self {
        Self {
            max_attempts: AtomicU32::new(config.max_attempts),
            config: RwLock::new(config.clone()),
        }
    }

    /// The most attempts a call may make now.
    #[inline]
    pub(crate) fn max_attempts(&self) -> u32 {
        self.max_attempts.load(Ordering::Relaxed)
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> RwLockReadGuard<'_, RetryConfig> {
        self.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The limits a retry is planned within now.
    pub(crate) fn limits(&self) -> Limits {
        let config = self.config();
        Limits {
            max_attempts: config.max_attempts,
            backoff: config.backoff,
            max_delay: config.max_delay,
            max_elapsed: config.max_elapsed,
        }
    }

    /// Takes `config` in, which the caller has checked.
    pub(crate) fn set(&self, config: RetryConfig) {
        let mut live = self.config.write().unwrap_or_else(PoisonError::into_inner);
        self.max_attempts
            .store(config.max_attempts, Ordering::Relaxed);
        *live = config;
    }
}

/// How many authorities a layer holds back retries to at once.
pub(crate) const HELD_AUTHORITIES: usize = 16;

/// Until when a downstream's `Retry-After` holds back the retries of the layer: per authority
/// (the host the requests go to), or layer-wide for requests that name none.
///
/// A 429 or 503 with `Retry-After` speaks for the host that sent it, not for the one request
/// that got it: the requests in flight beside it would otherwise retry into the same refusal
/// before it expires. It does not speak for the other hosts a shared client calls. The holds
/// are a fixed table of [`HELD_AUTHORITIES`] (authority hash, deadline) slots, a new authority
/// taking the slot that expires first, so that a caller cycling through hosts of its choosing
/// cannot grow it; an authority pushed out only loses the hold on requests beside the one that
/// got the hint (whose own wait stands). Deadlines are nanoseconds since the layer was built.
pub(crate) struct Suspension {
    epoch: Instant,
    hasher: RandomState,
    keyless: AtomicU64,
    /// The latest deadline of any slot, so that a retry planned while no authority is held
    /// takes no lock.
    latest: AtomicU64,
    // Taken only when a retry is planned while a hold may be on.
    slots: Mutex<[Hold; HELD_AUTHORITIES]>,
}

/// One authority's hold: its hash and deadline (0 for a free slot).
#[derive(Clone, Copy, Default)]
struct Hold {
    key: u64,
    until: u64,
}

impl Suspension {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            hasher: RandomState::new(),
            keyless: AtomicU64::new(0),
            latest: AtomicU64::new(0),
            slots: Mutex::new([Hold::default(); HELD_AUTHORITIES]),
        }
    }

    fn nanos_at(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.epoch))
    }

    fn slots(&self) -> MutexGuard<'_, [Hold; HELD_AUTHORITIES]> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key of `authority` (`host:port`, whose host is case-insensitive), `None` for a
    /// request that names none.
    pub(crate) fn key(&self, authority: Option<&str>) -> Option<u64> {
        let authority = authority.filter(|a| !a.is_empty())?;
        let mut hasher = self.hasher.build_hasher();
        for byte in authority.bytes() {
            hasher.write_u8(byte.to_ascii_lowercase());
        }
        Some(hasher.finish())
    }

    /// Holds back retries to `key` until `after` past `now`, unless they are held longer
    /// already.
    pub(crate) fn hold(&self, key: Option<u64>, now: Instant, after: Duration) {
        let until = self.nanos_at(now).saturating_add(nanos(after)).max(1);
        let Some(key) = key else {
            self.keyless.fetch_max(until, Ordering::Relaxed);
            return;
        };
        self.latest.fetch_max(until, Ordering::Relaxed);
        let mut slots = self.slots();
        let slot = match slots.iter().position(|h| h.until != 0 && h.key == key) {
            Some(i) => &mut slots[i],
            // Free slots and expired holds have the earliest deadlines.
            None => {
                let earliest = slots.iter_mut().min_by_key(|h| h.until);
                let slot = earliest.expect("the table has slots");
                *slot = Hold { key, until: 0 };
                slot
            }
        };
        slot.until = slot.until.max(until);
    }

    /// How long retries to `key` are still held back at `now`; zero when they are not.
    pub(crate) fn left(&self, key: Option<u64>, now: Instant) -> Duration {
        let now = self.nanos_at(now);
        let until = match key {
            None => self.keyless.load(Ordering::Relaxed),
            Some(_) if self.latest.load(Ordering::Relaxed) <= now => 0,
            Some(key) => self
                .slots()
                .iter()
                .find(|h| h.until != 0 && h.key == key)
                .map_or(0, |h| h.until),
        };
        Duration::from_nanos(until.saturating_sub(now))
    }
}

/// What every clone of one layer's services shares.
pub(crate) struct Shared<P> {
    pub(crate) name: Arc<str>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) budget: Option<LayerBudget>,
    pub(crate) seed: u64,
    /// Numbers the retries, whose jitter RNG is seeded from `seed` and this number, so that a
    /// run on one thread repeats exactly.
    pub(crate) sequence: AtomicU64,
    pub(crate) suspension: Arc<Suspension>,
    pub(crate) policy: Arc<P>,
    pub(crate) metrics: Metrics,
    pub(crate) on_retry: Hook<RetryEvent<'static>>,
}

impl<P> Shared<P> {
    pub(crate) fn new(config: &RetryConfig, policy: P) -> Self {
        let scope = MetricScope::new(config.name.clone());
        // Without a seed, each layer draws its own, so a fleet of clients does not jitter in
        // step.
        let seed = config
            .seed
            .unwrap_or_else(|| RandomState::new().hash_one(config.name.as_ptr()));
        Self {
            name: config.name.clone().into(),
            settings: Arc::new(Settings::new(config)),
            budget: config
                .budget
                .map(|budget| LayerBudget::Own(RetryBudget::seeded(budget, seed))),
            seed,
            sequence: AtomicU64::new(0),
            suspension: Arc::new(Suspension::new()),
            policy: Arc::new(policy),
            metrics: Metrics::new(&scope),
            on_retry: Hook::default(),
        }
    }

    /// The same settings and metric handles with another policy.
    pub(crate) fn with_policy<Q>(&self, policy: Arc<Q>) -> Shared<Q> {
        Shared {
            name: self.name.clone(),
            settings: self.settings.clone(),
            budget: self.budget.clone(),
            seed: self.seed,
            sequence: AtomicU64::new(0),
            suspension: self.suspension.clone(),
            policy,
            metrics: self.metrics.clone(),
            on_retry: self.on_retry.clone(),
        }
    }
}

/// What a call's retries need: the layer's shared state and a clone of the inner service as
/// it was given, from which a call that must retry takes its own, readied before each retry.
///
/// One `Arc` per service (made when the layer wraps it), so that a call that needs no retry
/// clones only this handle, not the whole stack below.
pub(crate) struct Core<S, P> {
    pub(crate) shared: Arc<Shared<P>>,
    pub(crate) template: S,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_are_per_authority_case_insensitive_and_keyless_requests_share_one() {
        let s = Suspension::new();
        let now = Instant::now();
        let (a, b) = (s.key(Some("a.example:80")), s.key(Some("B.example:80")));
        s.hold(a, now, Duration::from_secs(2));
        assert_eq!(
            s.left(s.key(Some("A.EXAMPLE:80")), now),
            Duration::from_secs(2)
        );
        assert_eq!(s.left(b, now), Duration::ZERO);
        assert_eq!(s.left(None, now), Duration::ZERO);
        s.hold(None, now, Duration::from_secs(1));
        assert_eq!(s.left(None, now), Duration::from_secs(1));
        assert_eq!(s.left(b, now), Duration::ZERO);
        assert_eq!(s.key(Some("")), None, "an empty authority names none");
    }

    #[tokio::test(start_paused = true)]
    async fn authorities_cycled_by_the_thousand_keep_the_table_at_its_size() {
        let s = Suspension::new();
        let start = Instant::now();
        for i in 0..100_000u64 {
            let now = start + Duration::from_micros(i);
            s.hold(
                s.key(Some(&format!("host-{i}:443"))),
                now,
                Duration::from_secs(60),
            );
        }
        let now = start + Duration::from_millis(100);
        let live = s
            .slots()
            .iter()
            .filter(|h| h.until > s.nanos_at(now))
            .count();
        assert_eq!(live, HELD_AUTHORITIES, "a fixed table, whatever the hosts");
        // The latest authorities keep their holds; the earliest to expire made room.
        for i in 100_000 - HELD_AUTHORITIES as u64..100_000 {
            assert!(s.left(s.key(Some(&format!("host-{i}:443"))), now) > Duration::ZERO);
        }
        assert_eq!(s.left(s.key(Some("host-0:443")), now), Duration::ZERO);
        // A longer hold is not cut by a shorter one for the same authority.
        let key = s.key(Some("host-99999:443"));
        s.hold(key, now, Duration::from_millis(1));
        assert!(s.left(key, now) > Duration::from_secs(59));
    }
}
