//! Consecutive-failure ejection, the share cap, the early return of the ejected once an
//! endpoint the cap kept in recovers, and which failures are marked as their endpoint's own,
//! against a model, on tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use seawall_core::BoxError;
use seawall_core::classify::is_endpoint_fault;
use seawall_core::testing::paused_runtime;
use seawall_outlier::OutlierLayer;
use tower::Service;

const BASE: u64 = 30;
const MAX: u64 = 300;
const INTERVAL: u64 = 10;

#[derive(Clone)]
struct Backend(Arc<AtomicBool>);

impl Service<()> for Backend {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        std::future::ready(match self.0.load(Ordering::SeqCst) {
            true => Ok(()),
            false => Err("failed".into()),
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// A call to endpoint `i` that succeeds or fails, if the endpoint is ready.
    Call(usize, bool),
    /// Time passes.
    Advance(u64),
}

fn op(endpoints: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..endpoints, prop::bool::weighted(0.3)).prop_map(|(i, ok)| Op::Call(i, ok)),
        1 => (1u64..45).prop_map(Op::Advance),
    ]
}

/// The model's view of one endpoint.
#[derive(Debug, Clone, Copy, Default)]
struct Endpoint {
    /// Set while ejected, until the endpoint is next asked (or swept), even after its time.
    until: Option<u64>,
    ejections: u64,
    returned_at: u64,
    consecutive: u32,
    /// 0 unless the cap kept it in when it was due for ejection; then 1 plus its successes in
    /// a row since.
    held: u32,
    /// The end its ejection had when it was called back.
    resume: Option<u64>,
    /// Serving out an ejection resumed after a call back: not called back again.
    resumed: bool,
    /// Its latest outcome was a success, while it was in.
    succeeding: bool,
    /// A success since the set last aged its endpoints.
    fresh: bool,
}

struct Model {
    endpoints: Vec<Endpoint>,
    allowed: usize,
    threshold: u32,
    /// When the set next ages its endpoints' successes.
    next_aging: u64,
    /// When the set's latest failure came.
    last_failure: Option<u64>,
}

impl Model {
    fn restore(&mut self, i: usize, now: u64) {
        let e = &mut self.endpoints[i];
        e.until = None;
        e.returned_at = now;
        e.consecutive = 0;
        e.resume = None;
        e.resumed = false;
    }

    fn ejected(&self) -> usize {
        self.endpoints.iter().filter(|e| e.until.is_some()).count()
    }

    /// Whether a failure of `i` at `now` is its own: another endpoint, in, succeeds (its latest
    /// outcome a success, within an interval or two).
    fn own_failure(&mut self, i: usize, now: u64) -> bool {
        self.endpoints[i].succeeding = false;
        let last = self.last_failure.replace(now);
        if last.is_none_or(|last| now - last > INTERVAL) {
            // Perhaps the onset of a fault of every endpoint: earlier successes say nothing.
            for e in &mut self.endpoints {
                e.succeeding = false;
            }
            return false;
        }
        if now >= self.next_aging {
            self.next_aging = now + INTERVAL;
            for e in &mut self.endpoints {
                if !e.fresh || e.until.is_some() {
                    e.succeeding = false;
                }
                e.fresh = false;
            }
        }
        self.endpoints.iter().any(|e| e.succeeding)
    }

    /// A call to `i` at `now`: `None` when the endpoint is not ready (still ejected), or
    /// whether the call's failure is marked as the endpoint's own.
    fn call(&mut self, i: usize, ok: bool, now: u64) -> Option<bool> {
        match self.endpoints[i].until {
            Some(until) if until > now => return None,
            Some(_) => self.restore(i, now),
            None => {}
        }
        let e = &mut self.endpoints[i];
        if ok {
            e.succeeding = true;
            e.fresh = true;
            e.consecutive = 0;
            if e.held != 0 {
                if e.held < self.threshold {
                    e.held += 1;
                } else {
                    // The fault was wider than the cap, and is over: the ejected come back.
                    e.held = 0;
                    for j in 0..self.endpoints.len() {
                        let other = self.endpoints[j];
                        if let Some(until) = other.until.filter(|&u| u > now && !other.resumed) {
                            self.restore(j, now);
                            self.endpoints[j].resume = Some(until);
                        }
                    }
                }
            }
            return Some(false);
        }
        let own = self.own_failure(i, now);
        let e = &mut self.endpoints[i];
        e.held = e.held.min(1);
        e.consecutive += 1;
        if e.consecutive < self.threshold {
            return Some(own);
        }
        if self.ejected() >= self.allowed {
            // Endpoints whose time is up give their places back first.
            for j in 0..self.endpoints.len() {
                if self.endpoints[j].until.is_some_and(|until| until <= now) {
                    self.restore(j, now);
                }
            }
            if self.ejected() >= self.allowed {
                self.endpoints[i].held = 1;
                return Some(own);
            }
        }
        let e = &mut self.endpoints[i];
        e.held = 0;
        e.consecutive = 0;
        if let Some(resume) = e.resume.take().filter(|&r| r > now) {
            e.until = Some(resume);
            e.resumed = true;
            return Some(own);
        }
        let kept = e.ejections.saturating_sub((now - e.returned_at) / INTERVAL);
        e.ejections = kept + 1;
        e.until = Some(now + (BASE * e.ejections).min(MAX));
        e.consecutive = 0;
        Some(own)
    }
}

fn check(
    endpoints: usize,
    share_pct: u32,
    threshold: u32,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let rt = paused_runtime();
    rt.block_on(async {
        let share = f64::from(share_pct) / 100.0;
        let (layer, handle) = OutlierLayer::<usize>::builder()
            .no_success_rate()
            .consecutive_failures(threshold)
            .base_ejection_time(Duration::from_secs(BASE))
            .max_ejection_time(Duration::from_secs(MAX))
            .interval(Duration::from_secs(INTERVAL))
            .max_ejected_share(share)
            .build()
            .unwrap()
            .pair();
        let switches: Vec<Arc<AtomicBool>> = (0..endpoints).map(|_| Arc::default()).collect();
        let mut services: Vec<_> = switches
            .iter()
            .enumerate()
            .map(|(i, s)| layer.endpoint(i, Backend(s.clone())))
            .collect();
        let allowed = ((share * endpoints as f64).floor() as usize).min(endpoints - 1);
        prop_assert_eq!(handle.max_ejected(), allowed);
        let mut model = Model {
            endpoints: vec![Endpoint::default(); endpoints],
            allowed,
            threshold,
            next_aging: INTERVAL,
            last_failure: None,
        };
        let mut now = 0;
        let mut task = tokio_test::task::spawn(());
        for op in ops {
            match op {
                Op::Advance(secs) => {
                    tokio::time::advance(Duration::from_secs(secs)).await;
                    now += secs;
                }
                Op::Call(i, ok) => {
                    let ready = task.enter(|cx, _| services[i].poll_ready(cx));
                    let expected = model.call(i, ok, now);
                    prop_assert_eq!(
                        ready.is_ready(),
                        expected.is_some(),
                        "ready {} at {}",
                        i,
                        now
                    );
                    if ready.is_ready() {
                        switches[i].store(ok, Ordering::SeqCst);
                        let marked = services[i]
                            .call(())
                            .await
                            .is_err_and(|err| is_endpoint_fault(&*err));
                        prop_assert_eq!(Some(marked), expected, "marked {} at {}", i, now);
                    }
                }
            }
            prop_assert!(
                handle.ejected() <= allowed,
                "{} ejected, {} allowed",
                handle.ejected(),
                allowed
            );
            prop_assert_eq!(handle.ejected(), model.ejected());
            for (i, service) in services.iter().enumerate() {
                prop_assert_eq!(
                    service.is_ejected(),
                    model.endpoints[i].until.is_some(),
                    "{}",
                    i
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #[test]
    fn ejections_follow_the_model_and_never_pass_the_share_cap(
        (endpoints, ops) in (1usize..8).prop_flat_map(|n| (Just(n), prop::collection::vec(op(n), 1..300))),
        share_pct in prop_oneof![Just(0u32), Just(20), Just(50), Just(75), Just(100), 0u32..=100],
        threshold in 1u32..4,
    ) {
        check(endpoints, share_pct, threshold, ops)?;
    }
}
