use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use seawall_core::classify::{AnyError, Classify};
use seawall_core::{BoxError, Deadline};
use tower::Service;

use crate::event::RejectReason;
use crate::future::{Completion, Permit, ResponseFuture, reject};
use crate::partition::{PartitionKey, Unpartitioned};
use crate::semaphore::Acquired;
use crate::state::{Shared, State};

/// Limits the calls in flight to the inner service; made by
/// [`BulkheadLayer`](crate::BulkheadLayer).
///
/// A call that finds no free slot waits in the queue (up to `max_wait`) or, when the queue is
/// full, is rejected at once with [`Rejected`](seawall_core::Rejected) of kind `BulkheadFull`.
/// The slot is taken in `call`, never in `poll_ready`, so an idle clone holds nothing. A call
/// that has to wait takes a clone of the inner service with it (hence `S: Clone`) and readies
/// it once it has a slot.
pub struct Bulkhead<S, C = AnyError, K = Unpartitioned> {
    inner: S,
    shared: Arc<Shared<C>>,
    key: K,
}

impl<S, C, K> Bulkhead<S, C, K> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C>>, key: K) -> Self {
        Self { inner, shared, key }
    }

    seawall_core::define_inner_service_accessors!();
}

impl<S: Clone, C, K: Clone> Clone for Bulkhead<S, C, K> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.shared.clone(), self.key.clone())
    }
}

impl<S: fmt::Debug, C, K> fmt::Debug for Bulkhead<S, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("name", &self.shared.state.name)
            .field("limit", &self.shared.state.semaphore.limit())
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, K> Service<Req> for Bulkhead<S, C, K>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    K: PartitionKey<Req>,
{
    type Response = C::Response<Completion<C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let state = &self.shared.state;
        let partition = self
            .key
            .partition(&req)
            .and_then(|index| state.semaphore.partition_of(index));
        let mut acquired = state.semaphore.acquire(partition);
        if !matches!(acquired, Acquired::Now(_)) {
            acquired = retry_after_idle(state, partition, acquired);
        }
        match acquired {
            Acquired::Now(in_flight) => {
                tracing::trace!(name = %state.name, in_flight, "call admitted");
                let permit = Permit::held(self.shared.clone(), partition, in_flight);
                ResponseFuture::called(self.inner.call(req), permit)
            }
            Acquired::Queued(waiter) => {
                tracing::trace!(name = %state.name, "call queued");
                // The permit owns the place in the queue before anything that may panic (tokio's
                // timer, outside a runtime): unwinding then gives the place up.
                let permit = Permit::queued(self.shared.clone(), partition, waiter);
                // Never queued past the caller's deadline.
                let sleep = tokio::time::sleep(Deadline::bound(state.max_wait()));
                ResponseFuture::waiting(self.inner.clone(), req, permit, sleep)
            }
            Acquired::Full => {
                ResponseFuture::rejected(reject(&self.shared, partition, RejectReason::Full))
            }
        }
    }
}

/// A call found the bulkhead full: the slots of response bodies nobody reads go back first,
/// and a call that found no room in the queue asks again.
#[cold]
#[inline(never)]
fn retry_after_idle(state: &State, partition: Option<usize>, acquired: Acquired) -> Acquired {
    // A waiter already queued is served by the release itself.
    if state.release_idle() && matches!(acquired, Acquired::Full) {
        return state.semaphore.acquire(partition);
    }
    if matches!(acquired, Acquired::Full) && state.raise_for_full() {
        return state.semaphore.acquire(partition);
    }
    acquired
}
