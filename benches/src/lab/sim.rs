//! The simulated downstream: seawall-chaos over a service that answers at once, and a tap that
//! counts what reaches it.
//!
//! Two chaos layers make it: the healthy downstream (latency, workers and queue, for every
//! call) and, outside it, the scenario's faults (for the keys they hit), so that an injected
//! error or hang never takes a worker, as a connection refused or a lost packet would not.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use seawall_chaos::{Chaos, ChaosConfig, ChaosLayer, Everything, NoResponse, Target};
use seawall_core::BoxError;
use tokio::time::Instant;
use tower::util::ServiceFn;
use tower::{Layer, Service, service_fn};

use crate::lab::scenario::Scenario;

/// One client request: its index in the run and the key (shard) it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Its index, in order of intended send time.
    pub id: u32,
    /// The key it is for.
    pub key: u32,
}

/// The simulated calls are reads: any of them may be sent again.
impl seawall_retry::Idempotent for Request {}

/// What the downstream answers: the request's id.
pub type Response = u32;

/// What a stack's fallback answers with, so that the lab tells fallback answers from the
/// downstream's (success with and without fallback).
pub const FALLBACK: Response = Response::MAX;

type Echo = ServiceFn<fn(Request) -> Ready<Result<Response, BoxError>>>;

/// The keys a fault hits, as a bit set.
#[derive(Debug, Clone, Copy)]
pub struct Keys(u64);

impl Target<Request> for Keys {
    fn matches(&self, req: &Request) -> bool {
        self.0 & (1 << req.key) != 0
    }
}

/// The simulated downstream service.
pub type Downstream = Tapped<Chaos<Chaos<Echo, Everything, NoResponse>, Keys, NoResponse>>;

/// Counts every attempt that reaches the downstream and the calls in flight there.
#[derive(Debug)]
pub struct Tap {
    epoch: Instant,
    attempts: Box<[AtomicU16]>,
    per_second: Box<[AtomicU32]>,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
}

impl Tap {
    fn new(requests: usize, seconds: usize, epoch: Instant) -> Self {
        Self {
            epoch,
            attempts: (0..requests).map(|_| AtomicU16::new(0)).collect(),
            per_second: (0..seconds).map(|_| AtomicU32::new(0)).collect(),
            in_flight: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
        }
    }

    fn record(&self, req: &Request) {
        if let Some(n) = self.attempts.get(req.id as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let second = Instant::now().duration_since(self.epoch).as_secs() as usize;
        if let Some(n) = self.per_second.get(second) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
    }

    /// Attempts that reached the downstream for request `id`.
    pub fn attempts(&self, id: u32) -> u16 {
        self.attempts[id as usize].load(Ordering::Relaxed)
    }

    /// Attempts per second of the run, by the time they reached the downstream.
    pub fn per_second(&self) -> Vec<u32> {
        self.per_second
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// The most calls in flight at the downstream at once.
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight.load(Ordering::Relaxed)
    }
}

/// Builds the downstream of `scenario` with its own seeds, and the tap that watches it.
///
/// `requests` is how many requests the run sends, `seconds` how long it lasts, drain included.
pub fn downstream(
    scenario: &Scenario,
    seeds: [u64; 2],
    requests: usize,
    seconds: usize,
) -> (Downstream, Arc<Tap>) {
    let epoch = Instant::now();
    let base = ChaosLayer::new(
        scenario
            .downstream
            .chaos_config()
            .seed(seeds[0])
            .build()
            .expect("validated when the scenario was read"),
    )
    .starting_at(epoch);
    let mut faults = ChaosConfig::builder()
        .name("faults")
        .enabled(true)
        .seed(seeds[1]);
    for fault in &scenario.faults {
        for (start, end) in fault.windows() {
            faults = faults.window(start, end, fault.faults);
        }
    }
    let keys = scenario
        .faults
        .iter()
        .find_map(|f| f.keys.as_ref())
        .map_or(Keys(u64::MAX), |keys| {
            Keys(keys.iter().fold(0, |bits, k| bits | 1 << k))
        });
    let faults = ChaosLayer::new(
        faults
            .build()
            .expect("validated when the scenario was read"),
    )
    .starting_at(epoch)
    .targeting(keys);
    let echo: Echo = service_fn(|req: Request| ready(Ok(req.id)));
    let tap = Arc::new(Tap::new(requests, seconds, epoch));
    let service = Tapped {
        inner: faults.layer(base.layer(echo)),
        tap: tap.clone(),
    };
    (service, tap)
}

/// Counts the calls that pass through it into a [`Tap`].
#[derive(Debug, Clone)]
pub struct Tapped<S> {
    inner: S,
    tap: Arc<Tap>,
}

impl<S: Service<Request>> Service<Request> for Tapped<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = TappedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.tap.record(&req);
        TappedFuture {
            inner: self.inner.call(req),
            _guard: InFlight(self.tap.clone()),
        }
    }
}

/// Leaves the in-flight count when the call ends or is dropped.
#[derive(Debug)]
struct InFlight(Arc<Tap>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// A call to the downstream, counted in flight until it ends or is dropped.
    #[derive(Debug)]
    pub struct TappedFuture<F> {
        #[pin]
        inner: F,
        _guard: InFlight,
    }
}

impl<F: Future> Future for TappedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// How long after the last arrival the run waits for answers before calling the rest
/// unanswered: longer than any stack's worst case (the naive stack's four 1 s attempts).
pub const DRAIN: Duration = Duration::from_secs(5);
