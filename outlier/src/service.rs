use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use seawall_core::BoxError;
use seawall_core::classify::{Classified, Classify, Outcome};
use seawall_core::time::call_now;
use tokio::time::{Instant, Sleep};
use tower::Service;
use tower::load::Load;

use crate::future::{Binding, EndpointReport, ResponseFuture};
use crate::load::EndpointCost;
use crate::probe::Probe;

/// How long a service waits before it asks again when another service of the same endpoint
/// is sending its probe.
const PROBE_WAIT: Duration = Duration::from_millis(100);

/// One endpoint of a set: the inner service, which a balancer sees as not ready while the
/// endpoint is ejected; made by [`OutlierLayer`](crate::OutlierLayer).
///
/// `poll_ready` is `Pending` while the endpoint is ejected (and wakes the task when the
/// ejection ends), so `tower::balance::p2c` leaves it in its set of pending services and
/// picks among the others; otherwise it is the inner service's. Every call's outcome goes to
/// the set's detectors. Its `Load` is its own ([`EndpointCost`]), not the inner service's.
///
/// The inner service's futures must be `Send + 'static`: a probe is held, boxed, by the
/// endpoint while it runs.
pub struct Endpoint<S, K, C, P> {
    inner: S,
    binding: Arc<Binding<K, C, P>>,
    /// Wakes the task when the ejection ends; made on the first ejection and reused.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The probe this service sent, which answers whether it passed.
    probe: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
    /// Whether this service holds the endpoint's probe.
    probing: bool,
}

impl<S, K, C, P> Endpoint<S, K, C, P> {
    pub(crate) fn new(inner: S, binding: Arc<Binding<K, C, P>>) -> Self {
        Self {
            inner,
            binding,
            sleep: None,
            probe: None,
            probing: false,
        }
    }

    /// The endpoint's key.
    pub fn key(&self) -> &K {
        &self.binding.member.key
    }

    /// Whether the endpoint is ejected now (or waits for its probe).
    pub fn is_ejected(&self) -> bool {
        self.binding.member.until() != 0
    }

    // `Endpoint` implements `Drop`, so `into_inner` could not move `inner` out.
    seawall_core::define_inner_service_accessors!(ref);

    /// Waits for the ejection, ending `until` (nanoseconds from the set's origin): `Ready`
    /// once the sleep is over.
    fn sleep_until(&mut self, until: u64, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.binding.member.set.instant(until);
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.sleep.as_mut().expect("set above").as_mut().poll(cx)
    }

    fn release_probe(&mut self) {
        self.probe = None;
        if std::mem::take(&mut self.probing) {
            let member = &self.binding.member;
            member.probing.store(false, Ordering::Release);
            member.waker.wake();
        }
    }
}

impl<S, K, C, P> Endpoint<S, K, C, P> {
    /// Sends and follows the probe of an endpoint whose ejection ending `until` is up:
    /// `Ready(true)` once the endpoint is back in, `Ready(false)` when it was ejected again or
    /// changed meanwhile (ask again), `Pending` while the probe runs or another service sends
    /// it.
    fn poll_probe<Req>(&mut self, until: u64, request: Req, cx: &mut Context<'_>) -> Poll<bool>
    where
        S: Service<Req>,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        K: fmt::Debug + Send + Sync + 'static,
        C: Classify<S::Response, BoxError>,
        P: Send + Sync + 'static,
    {
        let member = self.binding.member.clone();
        let set = &member.set;
        if !self.probing {
            if member
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                member.waker.register(cx.waker());
                let later = set.nanos(Instant::now()) + PROBE_WAIT.as_nanos() as u64;
                return self.sleep_until(later, cx).map(|()| false);
            }
            self.probing = true;
        }
        if self.probe.is_none() {
            match self.inner.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    let call = self.inner.call(request);
                    let binding = self.binding.clone();
                    self.probe = Some(Box::pin(async move {
                        let result = call.await.map_err(Into::into);
                        match binding.classify.classify(result.as_ref()) {
                            // Only the end of the body would tell; the head came back.
                            Classified::AtEndOfStream => true,
                            Classified::Now(outcome) => outcome_passes(outcome),
                        }
                    }));
                }
                Poll::Ready(Err(_)) => {
                    self.release_probe();
                    set.reject_probe(&member, Instant::now());
                    return Poll::Ready(false);
                }
            }
        }
        let probe = self.probe.as_mut().expect("sent above");
        let Poll::Ready(passed) = probe.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        self.release_probe();
        let now = Instant::now();
        if passed {
            Poll::Ready(set.restore(&member, until, now, true))
        } else {
            set.reject_probe(&member, now);
            Poll::Ready(false)
        }
    }
}

/// Whether a probe with `outcome` lets its endpoint back in.
fn outcome_passes(outcome: Outcome) -> bool {
    match outcome {
        Outcome::Success => true,
        Outcome::Failure | Outcome::Overload | Outcome::Ignored => false,
    }
}

impl<S, K, C, P> Drop for Endpoint<S, K, C, P> {
    fn drop(&mut self) {
        self.release_probe();
    }
}

impl<S, Req, K, C, P> Service<Req> for Endpoint<S, K, C, P>
where
    S: Service<Req>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    K: fmt::Debug + Send + Sync + 'static,
    C: Classify<S::Response, BoxError>,
    P: Probe<K, Req>,
{
    type Response = C::Response<EndpointReport<K>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, K, C, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            let member = &self.binding.member;
            let until = member.until();
            if until == 0 {
                return self.inner.poll_ready(cx).map_err(Into::into);
            }
            let set = &member.set;
            let now = Instant::now();
            if set.nanos(now) < until {
                member.waker.register(cx.waker());
                if member.until() != until {
                    // Returned (or ejected anew) while we registered.
                    continue;
                }
                if self.sleep_until(until, cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            // The ejection is over: back in, or after a probe.
            match self.binding.probe.request(&member.key) {
                None => {
                    set.restore(member, until, now, false);
                }
                Some(request) => {
                    if self.poll_probe(until, request, cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let sent = self.binding.member.set.nanos(call_now());
        let inner = self.inner.call(req);
        // Counted once the inner call returned: one that panics leaves no call in flight.
        self.binding.member.load.started();
        ResponseFuture::new(inner, self.binding.clone(), sent)
    }
}

/// The endpoint's own load, whatever the inner service's: its latency, calls in flight and
/// recent failures, as [`load`](crate::load) describes.
impl<S, K, C, P> Load for Endpoint<S, K, C, P> {
    type Metric = EndpointCost;

    fn load(&self) -> EndpointCost {
        let member = &self.binding.member;
        let set = &member.set;
        let floor = if member.held_failing() {
            set.latency.get()
        } else {
            0.0
        };
        // A run of failures from a clean history is ejected within that run while the cap has
        // room: nothing to shy away from.
        let penalized = !member.load.in_clean_run() || !set.ejects_a_run();
        member
            .load
            .cost(set.nanos(Instant::now()), floor, penalized)
    }
}

impl<S: fmt::Debug, K: fmt::Debug, C, P> fmt::Debug for Endpoint<S, K, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("inner", &self.inner)
            .field("key", &self.binding.member.key)
            .field("ejected", &self.is_ejected())
            .finish_non_exhaustive()
    }
}
