//! How a client spreads its calls over the downstream's endpoints: round-robin (a client
//! without a balancer over a list of addresses) or tower's `p2c` — by pending calls, or, with
//! seawall-outlier's ejection under it, by the endpoints' own load (latency, calls in flight,
//! recent failures), or by pending calls with tower-resilience's ejection for that stack,
//! when the scenario asks for it.
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
use tower_resilience::outlier::{
    FailureClassifier, OutlierDetectionLayer, OutlierDetectionServiceError, OutlierDetector,
};

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
            // Each endpoint ranks itself (seawall-outlier's own load).
            let list = layer.layer(ServiceList::new(endpoints));
            let p2c = P2c::from_rng(list, SharedRng::new(seed));
            (
                Either::Left(Buffer::new(p2c, BUFFER).boxed_clone()),
                Some(handle),
            )
        }
    }
}

fn pending<S>(endpoint: S) -> PendingRequests<S> {
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

// ===== tower-resilience's outlier ejection =====

/// `downstream` spread over its endpoints by `balance`, and, with `outlier` and p2c, each
/// endpoint under tower-resilience's outlier detection (one `OutlierDetector` for the set,
/// in its default backpressure mode: an ejected endpoint is not ready, so p2c routes around
/// it), set from `outlier` where it has the concept: failures in a row (it has no
/// success-rate detector), the base and longest ejection time, the largest share ejected.
/// 5xx answers and errors are failures, as for seawall-outlier.
///
/// It times ejections with `std::time::Instant`: on the lab's paused clock an ejected
/// endpoint stays out to the end of the run (a run takes seconds of wall time at most),
/// whatever its ejection time, and a row in which that matters is marked invalid. While
/// ejected, its `poll_ready` wakes its own task and answers `Pending`; that does not stall
/// the paused clock here, since p2c always has a ready endpoint (at most half are ejected and
/// the simulated ones are always ready): the balancer's task is polled once more, finds no
/// call waiting, and idles.
pub fn spread_tower_resilience(
    downstream: Downstream,
    balance: Balance,
    outlier: Option<&OutlierConfig>,
    seed: u64,
) -> (Spread, Option<OutlierDetector>) {
    let (Balance::P2c, Some(config), true) = (balance, outlier, downstream.endpoints() > 1) else {
        return (spread(downstream, balance, None, seed).0, None);
    };
    let detector = OutlierDetector::new()
        .name(config.name())
        .max_ejection_percent((config.max_ejected_share() * 100.0).round() as usize)
        .base_ejection_duration(config.base_ejection_time())
        .max_ejection_duration(config.max_ejection_time());
    let threshold = config
        .consecutive_failures()
        .map_or(usize::MAX, |n| n as usize);
    let endpoints: Vec<_> = (0..downstream.endpoints())
        .map(|i| {
            let name = format!("endpoint-{i}");
            detector.register(name.as_str(), threshold);
            let layer = OutlierDetectionLayer::builder()
                .detector(detector.clone())
                .instance_name(name.as_str())
                .failure_classifier_type(ServerErrors)
                .build()
                .expect("a detector is set");
            pending(
                layer
                    .layer(downstream.endpoint(i))
                    .map_err(inner_error as fn(_) -> BoxError),
            )
        })
        .collect();
    let p2c = P2c::from_rng(ServiceList::new(endpoints), SharedRng::new(seed));
    (
        Either::Left(Buffer::new(p2c, BUFFER).boxed_clone()),
        Some(detector),
    )
}

/// 5xx answers and errors, as `HttpStatus::server_errors()` judges them for seawall-outlier.
#[derive(Debug, Clone, Copy)]
struct ServerErrors;

impl FailureClassifier<Response, BoxError> for ServerErrors {
    fn classify(&self, result: &Result<Response, BoxError>) -> bool {
        result
            .as_ref()
            .map_or(true, |res| res.status().is_server_error())
    }
}

/// The endpoint's own error back out of tower-resilience's (whose `source()` hides it).
fn inner_error(err: OutlierDetectionServiceError<BoxError>) -> BoxError {
    match err {
        OutlierDetectionServiceError::Inner(err) => err,
        other => Box::new(other),
    }
}
