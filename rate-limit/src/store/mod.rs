//! Where a rate limit's buckets live: in the process (the default), or in a store that every
//! replica of a service shares, so that a quota holds for the whole fleet.
//!
//! A service that runs as N replicas behind a load balancer and limits each replica to 100
//! calls a second admits N × 100. Breakers and bulkheads are right per replica (each protects
//! its own process), but a quota ("this API key may make 100 calls a minute") is the fleet's,
//! so its buckets must live where every replica sees them. [`QuotaStore`] is that seam: it
//! takes cells from a named bucket, atomically for every replica, and answers how many it
//! granted or how long until one comes back. Two stores implement it:
//!
//! - `RedisStore` (feature `redis`): GCRA evaluated atomically on the Redis server by one Lua
//!   script, loaded once and called by its SHA, on the server's clock, so replicas with skewed
//!   clocks still agree. Each bucket is one key holding its theoretical arrival time, which
//!   expires once the bucket is full again.
//! - [`MemoryStore`]: the same GCRA in this process's memory, shared by the limiters given a
//!   clone of it, with an optional round-trip latency and outages on demand. It models a
//!   shared store without a network: for tests on a paused clock and for the lab's server-side
//!   scenarios, where N replicas share one quota.
//!
//! A fleet-wide limit ([`RateLimitLayer::with_store`](crate::RateLimitLayer::with_store))
//! keeps the same [`Quota`], the same keyed extractors and the same answers (`429` or
//! `RESOURCE_EXHAUSTED` with Retry-After) as a local one. What it adds is in
//! [`Fleet`](crate::Fleet): leases of cells so that most calls need no round trip, a cached
//! "no" so that a limited key costs no round trip until a cell is back, and a policy for when
//! the store is down.
//!
//! Keys: a bucket is named `{key_prefix}:{name}` (the layer's name), and for a keyed limit
//! `{key_prefix}:{name}:{key}`, the key written by [`StoreKey`] in the same bytes in every
//! replica. Replicas share a bucket by sharing the layer's name.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use self::memory::{MemoryFuture, MemoryStore, StoreState};
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use seawall_core::store::{OnStoreFailure, StoreError, StoreErrorKind};

use crate::config::Quota;
use crate::extract::Fingerprint;

/// A store of rate limit buckets that every replica of a service shares.
///
/// Implementations evaluate GCRA atomically per bucket: two replicas taking cells at once
/// never both get the last one.
pub trait QuotaStore: Send + Sync + 'static {
    /// The answer to [`take`](Self::take).
    type Future: Future<Output = Result<Grant, StoreError>> + Send + 'static;

    /// Takes up to `cells` cells (at least one) from the bucket named `key` under `quota`:
    /// as many as are free now, up to `cells`, or none and how long until one is.
    fn take(&self, key: &[u8], quota: &Quota, cells: u32) -> Self::Future;
}

/// What a [`QuotaStore`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    cells: u32,
    retry_after: Duration,
}

impl Grant {
    /// `cells` cells granted, at least one.
    pub const fn cells(cells: u32) -> Self {
        Self {
            cells,
            retry_after: Duration::ZERO,
        }
    }

    /// No cell now; the next one is free in `retry_after`.
    pub const fn none(retry_after: Duration) -> Self {
        Self {
            cells: 0,
            retry_after,
        }
    }

    /// How many cells were granted.
    pub const fn granted(&self) -> u32 {
        self.cells
    }

    /// When none was granted, how long until the next cell is free.
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// GCRA over whole cells, on nanoseconds: the reference both stores follow (the Redis script
/// does the same on microseconds).
///
/// A bucket holds its theoretical arrival time `tat`: with `interval` between cells and room
/// for `burst` of them, the cells free at `now` are `(now + burst × interval − tat) / interval`.
/// Taking `n` of them moves `tat` on by `n × interval`. Returns the new `tat`, if cells were
/// taken, and the grant.
pub(crate) fn gcra(
    tat: Option<u64>,
    now: u64,
    interval: u64,
    burst: u32,
    want: u32,
) -> (Option<u64>, Grant) {
    let interval = interval.max(1);
    let tat = tat.unwrap_or(now).max(now);
    let tolerance = interval.saturating_mul(u64::from(burst));
    let free = now.saturating_add(tolerance).saturating_sub(tat) / interval;
    if free == 0 {
        let wait = tat
            .saturating_add(interval)
            .saturating_sub(tolerance)
            .saturating_sub(now);
        return (None, Grant::none(Duration::from_nanos(wait.max(1))));
    }
    let taken = u32::try_from(free).unwrap_or(u32::MAX).min(want.max(1));
    (
        Some(tat.saturating_add(interval.saturating_mul(u64::from(taken)))),
        Grant::cells(taken),
    )
}

/// A key that names the same bucket in every replica: the bytes a keyed fleet-wide limit
/// appends to the bucket's name in the store.
///
/// Implemented for integers, strings, booleans, IP and socket addresses, [`Fingerprint`]s,
/// `Option`s and pairs of these, so that the extractors of this crate (`ClientIp`, `Header`,
/// `Route`) and closures returning such values work as they are. For a key type of your own,
/// write bytes that depend on the value only, never on the process (no pointers, no random
/// hash keys).
pub trait StoreKey {
    /// Appends the key's bytes to `out`.
    fn write_key(&self, out: &mut Vec<u8>);
}

macro_rules! display_key {
    ($($t:ty),*) => {$(
        impl StoreKey for $t {
            fn write_key(&self, out: &mut Vec<u8>) {
                use std::io::Write as _;
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

display_key!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, bool, char, IpAddr, Ipv4Addr,
    Ipv6Addr, SocketAddr
);

impl StoreKey for str {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl StoreKey for String {
    fn write_key(&self, out: &mut Vec<u8>) {
        self.as_str().write_key(out);
    }
}

impl StoreKey for Box<str> {
    fn write_key(&self, out: &mut Vec<u8>) {
        (**self).write_key(out);
    }
}

impl StoreKey for Arc<str> {
    fn write_key(&self, out: &mut Vec<u8>) {
        (**self).write_key(out);
    }
}

impl StoreKey for &'static str {
    fn write_key(&self, out: &mut Vec<u8>) {
        (**self).write_key(out);
    }
}

impl StoreKey for () {
    fn write_key(&self, _out: &mut Vec<u8>) {}
}

impl StoreKey for Fingerprint {
    fn write_key(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = write!(out, "{:016x}", self.value());
    }
}

impl<T: StoreKey> StoreKey for Option<T> {
    /// `None` is `-`; `Some(key)` is `+` and the key, so that no key can pass for `None`.
    fn write_key(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(b'-'),
            Some(key) => {
                out.push(b'+');
                key.write_key(out);
            }
        }
    }
}

impl<A: StoreKey, B: StoreKey> StoreKey for (A, B) {
    fn write_key(&self, out: &mut Vec<u8>) {
        self.0.write_key(out);
        out.push(b':');
        self.1.write_key(out);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(k: &impl StoreKey) -> String {
        let mut out = Vec::new();
        k.write_key(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keys_are_written_the_same_in_every_process() {
        assert_eq!(key(&42u64), "42");
        assert_eq!(key(&"tenant-1"), "tenant-1");
        assert_eq!(key(&Some(IpAddr::from([10, 0, 0, 1]))), "+10.0.0.1");
        assert_eq!(key(&None::<IpAddr>), "-");
        assert_eq!(key(&(7u8, String::from("x"))), "7:x");
        assert_eq!(
            key(&Fingerprint::stable(b"api-key-1")),
            key(&Fingerprint::stable(b"api-key-1"))
        );
        assert_eq!(key(&Fingerprint::stable(b"k")).len(), 16);
    }

    #[test]
    fn a_fresh_bucket_grants_its_burst_then_one_cell_per_interval() {
        let (tat, grant) = gcra(None, 1_000, 10, 5, 100);
        assert_eq!(grant, Grant::cells(5));
        assert_eq!(tat, Some(1_050));
        let (tat2, grant) = gcra(tat, 1_000, 10, 5, 1);
        assert_eq!((tat2, grant), (None, Grant::none(Duration::from_nanos(10))));
        let (_, grant) = gcra(tat, 1_010, 10, 5, 3);
        assert_eq!(grant, Grant::cells(1));
        let (_, grant) = gcra(tat, 1_035, 10, 5, 3);
        assert_eq!(grant, Grant::cells(3));
    }

    proptest! {
        /// Over any run of takes, the cells granted by time t never exceed burst + t/interval,
        /// and a bucket left alone for burst × interval is full again.
        #[test]
        fn gcra_never_grants_more_than_burst_plus_the_rate(
            interval in 1u64..1_000,
            burst in 1u32..50,
            steps in prop::collection::vec((0u64..2_000, 1u32..20), 1..200),
        ) {
            let mut tat = None;
            let mut now = 0u64;
            let mut granted = 0u64;
            for (gap, want) in steps {
                now += gap;
                let (next, grant) = gcra(tat, now, interval, burst, want);
                prop_assert!(grant.granted() <= want);
                if grant.granted() == 0 {
                    prop_assert!(grant.retry_after() > Duration::ZERO);
                    prop_assert!(grant.retry_after() <= Duration::from_nanos(interval));
                    let (_, later) = gcra(tat, now + grant.retry_after().as_nanos() as u64, interval, burst, 1);
                    prop_assert_eq!(later, Grant::cells(1), "a cell is free after retry_after");
                }
                granted += u64::from(grant.granted());
                prop_assert!(granted <= u64::from(burst) + now / interval);
                tat = next.or(tat);
            }
            let full = now + interval * u64::from(burst);
            let (_, grant) = gcra(tat, full, interval, burst, burst);
            prop_assert_eq!(grant, Grant::cells(burst));
        }
    }
}
