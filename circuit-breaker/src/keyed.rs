//! One breaker per key: per downstream host, route or tenant.
//!
//! One breaker for a whole client trips for everyone when one host (or one tenant's traffic)
//! goes bad. A keyed breaker takes a key from each request with a closure and keeps a breaker
//! per key, so one bad host is cut off while the others carry on.
//!
//! The breakers live in a map bounded by `max_keys`; a key unused for `key_idle_timeout` is
//! evicted when room is needed (and, if none is idle, the least recently used one), so
//! unbounded key sets (client addresses, say) cannot grow memory without limit. The lookup
//! takes a read lock and hashes the key once per call; a new key takes the write lock once.
//! Calls, rejections and transitions of all keys count into the layer's metrics; the state and
//! rate gauges are per breaker and so not exported for keyed layers (use
//! [`KeyedCircuitBreakerLayer::handle`] per key instead).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use seawall_core::BoxError;
use seawall_core::classify::{AnyError, Classify};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::breaker::{Breaker, Observers};
use crate::config::CircuitBreakerConfig;
use crate::future::{CallReport, Policy, ResponseFuture};
use crate::handle::CircuitBreakerHandle;
use crate::retry_after::{NoRetryAfter, RetryAfter};
use crate::service::call;
use crate::state::{OutcomeEvent, RejectedEvent, StateChangeEvent};

/// Keeps one circuit breaker per key taken from each request.
///
/// ```
/// use http::Request;
/// use seawall_circuit_breaker::{CircuitBreakerConfig, KeyedCircuitBreakerLayer};
///
/// # fn main() -> Result<(), seawall_core::config::ConfigError> {
/// let config = CircuitBreakerConfig::builder().name("upstreams").max_keys(1000).build()?;
/// let layer = KeyedCircuitBreakerLayer::new(config, |req: &Request<()>| {
///     req.uri().host().unwrap_or_default().to_owned()
/// });
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
    breakers: RwLock<HashMap<K, Entry>>,
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
        if breakers.len() >= self.config.max_keys {
            let idle = nanos(self.config.key_idle_timeout);
            breakers.retain(|_, e| now.saturating_sub(e.last_used.load(Ordering::Relaxed)) < idle);
            if breakers.len() >= self.config.max_keys {
                let oldest = breakers
                    .iter()
                    .min_by_key(|(_, e)| e.last_used.load(Ordering::Relaxed))
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    breakers.remove(&oldest);
                }
            }
        }
        let label: Arc<str> = format!("{key:?}").into();
        let breaker = Breaker::new(&self.config, self.observers.clone(), Some(label));
        breakers.insert(
            key,
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        breaker
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

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<K, F> KeyedCircuitBreakerLayer<K, F> {
    /// A layer keeping a breaker per key that `key` takes from each request, each configured
    /// by `config` (whose `max_keys` and `key_idle_timeout` bound the map).
    pub fn new<Req>(config: CircuitBreakerConfig, key: F) -> Self
    where
        F: Fn(&Req) -> K,
    {
        let observers = Arc::new(Observers::new(config.name.clone(), false));
        Self {
            map: Arc::new(BreakerMap {
                config,
                observers,
                key,
                epoch: Instant::now(),
                breakers: RwLock::default(),
            }),
            policy: Arc::new(Policy {
                classify: AnyError,
                retry_after: NoRetryAfter,
            }),
        }
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
        hook: impl Fn(StateChangeEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.map.observers.set_on_state_change(Arc::new(hook));
        self
    }

    /// Calls `hook` on every rejected call.
    pub fn on_rejected(self, hook: impl Fn(RejectedEvent<'_>) + Send + Sync + 'static) -> Self {
        self.map.observers.set_on_rejected(Arc::new(hook));
        self
    }

    /// Calls `hook` with the outcome of every call let through.
    pub fn on_outcome(self, hook: impl Fn(OutcomeEvent<'_>) + Send + Sync + 'static) -> Self {
        self.map.observers.set_on_outcome(Arc::new(hook));
        self
    }

    /// Keys with a breaker now.
    pub fn len(&self) -> usize {
        self.map
            .breakers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no key has a breaker yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, F, C, H> KeyedCircuitBreakerLayer<K, F, C, H> {
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
        breakers.keys().cloned().collect()
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
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
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
    F: Fn(&Req) -> K,
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
        let breaker = self.map.breaker((self.map.key)(&req));
        call(&mut self.inner, req, breaker, &self.policy)
    }
}
