//! Half-open admission against a reference model: probes held in flight and ended in any
//! order, with slow start on and off; every admission and state must agree.

use futures::future::BoxFuture;
use proptest::prelude::*;
use seawall_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, CircuitState, NoRetryAfter};
use seawall_core::classify::AnyError;
use seawall_core::testing::paused_runtime;
use seawall_core::{BoxError, RejectionKind, rejected};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_test::task::{self, Spawn};
use tower::util::ServiceFn;
use tower::{Layer, Service, ServiceExt, service_fn};

const OPEN: Duration = Duration::from_secs(10);

/// How a held probe ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Success,
    Failure,
    /// Its future is dropped.
    Cancelled,
}

type Request = oneshot::Receiver<bool>;

/// A downstream whose calls wait until the test tells each whether it succeeds.
fn downstream(rx: Request) -> BoxFuture<'static, Result<(), BoxError>> {
    Box::pin(async move {
        match rx.await? {
            true => Ok(()),
            false => Err("down".into()),
        }
    })
}

type Downstream = ServiceFn<fn(Request) -> BoxFuture<'static, Result<(), BoxError>>>;
type Svc = CircuitBreaker<Downstream, AnyError, NoRetryAfter>;
type Held = (
    oneshot::Sender<bool>,
    Spawn<<Svc as Service<Request>>::Future>,
);

/// Half-open as documented: at most `probes` in all; with slow start, at most one more in
/// flight than the phase's successes; closes at `needed` successes, opens again past
/// `probes - needed` failures; a cancelled probe frees its place and counts for nothing.
struct Model {
    probes: u32,
    needed: u32,
    slow_start: bool,
    in_flight: u32,
    ok: u32,
    bad: u32,
}

impl Model {
    fn admits(&self) -> bool {
        let taken = self.in_flight + self.ok + self.bad;
        taken < self.probes && !(self.slow_start && self.in_flight > self.ok)
    }

    fn end(&mut self, end: End) -> CircuitState {
        self.in_flight -= 1;
        match end {
            End::Success => self.ok += 1,
            End::Failure => self.bad += 1,
            End::Cancelled => {}
        }
        if self.ok >= self.needed {
            CircuitState::Closed
        } else if self.bad > self.probes - self.needed {
            CircuitState::Open
        } else {
            CircuitState::HalfOpen
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Call,
    /// Ends the held probe at this index (modulo the probes held).
    End(usize, End),
}

fn op() -> impl Strategy<Value = Op> {
    let end = prop_oneof![
        4 => Just(End::Success),
        3 => Just(End::Failure),
        1 => Just(End::Cancelled),
    ];
    prop_oneof![
        3 => Just(Op::Call),
        2 => (any::<usize>(), end).prop_map(|(i, end)| Op::End(i, end)),
    ]
}

async fn check(
    probes: u32,
    ratio: f64,
    slow_start: bool,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let (layer, handle) = CircuitBreakerLayer::builder()
        .name("probes")
        .consecutive_failures(1)
        .open_duration(OPEN)
        .open_jitter(0.0)
        .half_open_probes(probes)
        .half_open_success_ratio(ratio)
        .half_open_slow_start(slow_start)
        .build()
        .unwrap()
        .pair();
    let f: fn(Request) -> _ = downstream;
    let mut svc: Svc = layer.layer(service_fn(f));
    let needed = ((ratio * f64::from(probes)).ceil() as u32).clamp(1, probes);
    // One failure opens it; the open duration later it is half-open.
    let (tx, rx) = oneshot::channel();
    let first = svc.ready().await.unwrap().call(rx);
    tx.send(false).unwrap();
    let _ = first.await;
    tokio::time::advance(OPEN).await;
    prop_assert_eq!(handle.state(), CircuitState::HalfOpen);

    let mut model = Model {
        probes,
        needed,
        slow_start,
        in_flight: 0,
        ok: 0,
        bad: 0,
    };
    let mut held: Vec<Held> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let state = match op {
            Op::Call => {
                let (tx, rx) = oneshot::channel();
                let mut fut = task::spawn(svc.ready().await.unwrap().call(rx));
                let admitted = match fut.poll() {
                    std::task::Poll::Pending => true,
                    std::task::Poll::Ready(Err(e)) => {
                        let kind = rejected(&*e).map(|r| r.kind());
                        prop_assert_eq!(kind, Some(RejectionKind::CircuitOpen));
                        false
                    }
                    std::task::Poll::Ready(Ok(())) => {
                        return Err(TestCaseError::fail("a held call ended by itself"));
                    }
                };
                prop_assert_eq!(admitted, model.admits(), "op {}: {:?}", i, op);
                if admitted {
                    model.in_flight += 1;
                    held.push((tx, fut));
                }
                CircuitState::HalfOpen
            }
            Op::End(pick, end) => {
                if held.is_empty() {
                    continue;
                }
                let (tx, fut) = held.swap_remove(pick % held.len());
                if end == End::Cancelled {
                    drop((tx, fut));
                } else {
                    tx.send(end == End::Success).unwrap();
                    let _ = fut.await;
                }
                model.end(end)
            }
        };
        prop_assert_eq!(handle.state(), state, "op {}: {:?}", i, op);
        if state != CircuitState::HalfOpen {
            return Ok(());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn half_open_admission_agrees_with_the_reference_model(
        probes in 1u32..=12,
        ratio in prop_oneof![Just(0.1), Just(0.5), Just(0.8), Just(1.0)],
        slow_start in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let rt = paused_runtime();
        rt.block_on(check(probes, ratio, slow_start, ops))?;
    }
}
