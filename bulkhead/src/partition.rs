//! Which partition a request belongs to.
//!
//! A key is a plain function of the request that returns a partition's index, in the order
//! the partitions were configured: no string or map lookup per call. An index past the last
//! partition counts as the last one. Or it is core's one key trait, [`ExtractKey`] (a client
//! address, a header, a route, a host), whose keys are hashed onto the partitions: no memory
//! per key, however many keys there are.

use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use seawall_core::key::ExtractKey;

/// Picks the partition of a request.
pub trait PartitionKey<Req> {
    /// The partition's index, or `None` to count the call against the whole bulkhead only.
    fn partition(&self, req: &Req) -> Option<usize>;
}

/// No partitions: every call counts against the whole bulkhead only.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unpartitioned;

impl<Req> PartitionKey<Req> for Unpartitioned {
    #[inline]
    fn partition(&self, _req: &Req) -> Option<usize> {
        None
    }
}

/// A partition key made from a closure; made by
/// [`BulkheadLayer::partition_by`](crate::BulkheadLayer::partition_by).
pub struct PartitionFn<F>(Arc<F>);

impl<F> PartitionFn<F> {
    pub(crate) fn new(f: F) -> Self {
        Self(Arc::new(f))
    }
}

impl<F> Clone for PartitionFn<F> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<F> fmt::Debug for PartitionFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionFn").finish_non_exhaustive()
    }
}

impl<Req, F> PartitionKey<Req> for PartitionFn<F>
where
    F: Fn(&Req) -> usize,
{
    #[inline]
    fn partition(&self, req: &Req) -> Option<usize> {
        Some((self.0)(req))
    }
}

/// Spreads the keys of an [`ExtractKey`] over the partitions by a hash of the key; made by
/// [`BulkheadLayer::partition_by_key`](crate::BulkheadLayer::partition_by_key).
#[derive(Debug, Clone)]
pub struct PartitionByKey<X> {
    extract: X,
    partitions: usize,
}

impl<X> PartitionByKey<X> {
    pub(crate) fn new(extract: X, partitions: usize) -> Self {
        Self {
            extract,
            partitions,
        }
    }
}

impl<Req, X: ExtractKey<Req>> PartitionKey<Req> for PartitionByKey<X> {
    #[inline]
    fn partition(&self, req: &Req) -> Option<usize> {
        if self.partitions == 0 {
            return None;
        }
        // A fixed hasher: the same key lands in the same partition for the layer's life, and
        // hashing allocates nothing.
        let hash =
            BuildHasherDefault::<DefaultHasher>::default().hash_one(self.extract.extract(req));
        Some((hash % self.partitions as u64) as usize)
    }
}
