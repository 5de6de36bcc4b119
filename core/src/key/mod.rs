//! What a keyed layer groups calls by: the key of a breaker per key, a rate limit per key, a
//! bulkhead's partitions, the calls a chaos layer targets.
//!
//! A keyed layer gives every key (a client address, an API key, a route) its own breaker or
//! quota, so one failing or busy client cannot open or spend everyone's. An extractor names the key type ([`KeyExtractor`]) and
//! reads the key off a request ([`ExtractKey`]); [`key_fn`] turns a closure into one, with the
//! `http` feature `ByAuthority` keys by the host a request goes to, and with the `axum`
//! feature `ClientIp`, `Header` and `Route` cover the usual cases.
//!
//! Keys live in a map of bounded size, so they should be small and owned: an address, a
//! number, a [`Fingerprint`] of some bytes. Keeping a request's own buffers (a `HeaderValue`
//! straight from hyper, say) would keep whole read buffers alive.

#[cfg(feature = "http")]
mod authority;
#[cfg(feature = "axum")]
mod http;

#[cfg(feature = "http")]
pub use self::authority::{ByAuthority, HasAuthority};
#[cfg(feature = "axum")]
pub use self::http::{ClientIp, Header, Route};

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::marker::PhantomData;

/// The key type of an extractor.
pub trait KeyExtractor: Send + Sync + 'static {
    /// What calls are grouped by.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
}

/// Reads the key of a request of type `Req`.
pub trait ExtractKey<Req>: KeyExtractor {
    /// The bucket `req` counts against.
    fn extract(&self, req: &Req) -> Self::Key;
}

/// An extractor made of a closure, by [`key_fn`].
pub struct KeyFn<F, Req, K> {
    f: F,
    _types: PhantomData<fn(&Req) -> K>,
}

/// Groups calls by what `f` returns for their request.
///
/// ```
/// use seawall_core::key::key_fn;
///
/// // Tenants by the high bits of a request id.
/// let by_tenant = key_fn(|id: &u64| id >> 48);
/// # let _ = by_tenant;
/// ```
pub fn key_fn<Req, K, F>(f: F) -> KeyFn<F, Req, K>
where
    F: Fn(&Req) -> K,
{
    KeyFn {
        f,
        _types: PhantomData,
    }
}

impl<F, Req, K> KeyExtractor for KeyFn<F, Req, K>
where
    F: Fn(&Req) -> K + Send + Sync + 'static,
    Req: 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;
}

impl<F, Req, K> ExtractKey<Req> for KeyFn<F, Req, K>
where
    F: Fn(&Req) -> K + Send + Sync + 'static,
    Req: 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn extract(&self, req: &Req) -> K {
        (self.f)(req)
    }
}

impl<F: Clone, Req, K> Clone for KeyFn<F, Req, K> {
    fn clone(&self) -> Self {
        Self {
            f: self.f.clone(),
            _types: PhantomData,
        }
    }
}

impl<F, Req, K> fmt::Debug for KeyFn<F, Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFn").finish_non_exhaustive()
    }
}

/// A 64-bit keyed hash of some bytes (a header value, a path), as a compact key.
///
/// [`stable`](Self::stable) hashes with SipHash-2-4 under a fixed key, so every replica of a
/// service computes the same fingerprint for the same bytes and a fleet-wide limit finds the
/// same bucket (the `Header` and `Route` extractors use it). That the key is public gives a
/// client nothing: two distinct values share a bucket with a chance near `n² / 2⁶⁵` among `n`
/// keys, and aiming at the bucket of a value one knows takes about 2⁶³ tries, while sending
/// that value itself is easier. [`of`](Self::of) hashes under a `RandomState` of your own,
/// which differs in every process: fine for a limit kept in the process, wrong for a
/// fleet-wide one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64);

/// SipHash-2-4's key for [`Fingerprint::stable`]: the digits of pi, nothing up the sleeve.
const STABLE_KEY: (u64, u64) = (0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344);

impl Fingerprint {
    /// The fingerprint of `bytes` under `hasher`'s key.
    pub fn of(hasher: &RandomState, bytes: &[u8]) -> Self {
        Self(hasher.hash_one(bytes))
    }

    /// The fingerprint of `bytes` that every process computes alike.
    pub fn stable(bytes: &[u8]) -> Self {
        // The one hasher in std whose algorithm and key are fixed across processes and Rust
        // releases; its deprecation points at `DefaultHasher`, which promises neither.
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new_with_keys(STABLE_KEY.0, STABLE_KEY.1);
        hasher.write(bytes);
        Self(hasher.finish())
    }

    /// The hash.
    pub fn value(&self) -> u64 {
        self.0
    }
}
