//! Which partition a request belongs to.
//!
//! A key is a plain function of the request that returns a partition's index, in the order
//! the partitions were configured: no string or map lookup per call. An index past the last
//! partition counts as the last one.

use std::fmt;
use std::sync::Arc;

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
