//! How a client spreads its calls over the downstream's endpoints: round-robin (a client
//! without a balancer over a list of addresses) or tower's `p2c` by pending calls, with
//! seawall-outlier's ejection under it when the scenario asks for it.
//!
//! A downstream of one endpoint is handed on as it is, so that scenarios without endpoints
//! run exactly as before endpoints existed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use seawall::classify::HttpStatus;
use seawall_core::BoxError;
use seawall_outlier::{OutlierConfig, OutlierHandle, OutlierLayer};
use tower::balance::p2c::Balance as P2c;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::util::{BoxCloneService, Either};
use tower::{Layer, Service, ServiceExt};

use super::SharedRng;
use crate::lab::scenario::Balance;
use crate::lab::sim::{Downstream, DownstreamFuture, Request, Response};

/// A client's view of the downstream: the one endpoint itself, or its balancer over many.
pub type Spread = Either<BoxCloneService<Request, Response, BoxError>, Downstream>;

/// Calls queued for a client's balancer: more than any stack has in flight.
const BUFFER: usize = 1 << 16;

/// `downstream` spread over its endpoints by `balance` (`seed` for p2c's choices), and, with
/// `outlier` and p2c, each endpoint under seawall-outlier's ejection (5xx answers and errors
/// are failures), with the set's handle.
pub fn spread(
    downstream: Downstream,
    balance: Balance,
    outlier: Option<&OutlierConfig>,
    seed: u64,
) -> (Spread, Option<OutlierHandle<usize>>) {
    let n = downstream.endpoints();
    if n == 1 {
        return (Either::Right(downstream), None);
    }
    let endpoints: Vec<Downstream> = (0..n).map(|i| downstream.endpoint(i)).collect();
    match (balance, outlier) {
        (Balance::RoundRobin, _) => (Either::Left(RoundRobin::new(endpoints).boxed_clone()), None),
        (Balance::P2c, None) => {
            let list = ServiceList::new(endpoints.into_iter().map(pending));
            let p2c = P2c::from_rng(list, SharedRng::new(seed));
            (Either::Left(Buffer::new(p2c, BUFFER).boxed_clone()), None)
        }
        (Balance::P2c, Some(config)) => {
            let (layer, handle) = OutlierLayer::<usize>::new(config.clone())
                .classify(HttpStatus::server_errors())
                .pair();
            let list = layer.layer(ServiceList::new(endpoints.into_iter().map(pending)));
            let p2c = P2c::from_rng(list, SharedRng::new(seed));
            (
                Either::Left(Buffer::new(p2c, BUFFER).boxed_clone()),
                Some(handle),
            )
        }
    }
}

fn pending(endpoint: Downstream) -> PendingRequests<Downstream> {
    PendingRequests::new(endpoint, CompleteOnResponse::default())
}

/// Each endpoint in turn, whatever its state.
#[derive(Debug, Clone)]
struct RoundRobin {
    endpoints: Arc<[Downstream]>,
    next: Arc<AtomicUsize>,
}

impl RoundRobin {
    fn new(endpoints: Vec<Downstream>) -> Self {
        Self {
            endpoints: endpoints.into(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Service<Request> for RoundRobin {
    type Response = Response;
    type Error = BoxError;
    type Future = DownstreamFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> DownstreamFuture {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints[i].clone().call(req)
    }
}
