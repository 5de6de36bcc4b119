//! Runs of failures counted in admission order: calls held in flight and completed in any
//! order, against a reference model of the rule (its shed band included), and the cases that
//! motivated it.

use std::collections::VecDeque;

use futures::future::BoxFuture;
use proptest::prelude::*;
use seawall_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, CircuitState, NoRetryAfter};
use seawall_core::classify::AnyError;
use seawall_core::testing::paused_runtime;
use seawall_core::{BoxError, Rejected, RejectionKind};
use tokio::sync::oneshot;
use tower::util::ServiceFn;
use tower::{Layer, Service, ServiceExt, service_fn};

/// What the admission ring holds (`run::RING`): more calls in flight and the oldest lose their
/// slots.
const RING: usize = 1024;

#[derive(Debug, Clone, Copy)]
enum Rule {
    Fixed(u32),
    Adaptive { min: u32, one_in: u64 },
}

/// How a held call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Success,
    Failure,
    Ignored,
    /// Its future is dropped.
    Cancelled,
}

type Request = oneshot::Receiver<End>;

/// A downstream whose calls wait until the test tells each how it ends.
fn downstream(rx: Request) -> BoxFuture<'static, Result<(), BoxError>> {
    Box::pin(async move {
        match rx.await? {
            End::Success => Ok(()),
            End::Failure => Err("down".into()),
            // Shed further in: no evidence about the downstream.
            _ => Err(Rejected::new(RejectionKind::BulkheadFull, "inner").into()),
        }
    })
}

type Downstream = ServiceFn<fn(Request) -> BoxFuture<'static, Result<(), BoxError>>>;
type Svc = CircuitBreaker<Downstream, AnyError, NoRetryAfter>;

/// A call in flight and what ends it.
type HeldCall = (oneshot::Sender<End>, <Svc as Service<Request>>::Future);

/// A breaker and the calls it admitted, held in flight.
struct Bench {
    svc: Svc,
    held: Vec<Option<HeldCall>>,
}

fn layer(rule: Rule, window: u32) -> CircuitBreakerLayer {
    let builder = CircuitBreakerLayer::builder()
        .name("admission")
        .count_window(window)
        .no_failure_rate();
    let builder = match rule {
        Rule::Fixed(n) => builder.consecutive_failures(n),
        Rule::Adaptive { min, one_in } => builder.adaptive_consecutive_failures(min, one_in),
    };
    builder.build().unwrap()
}

fn bench(layer: &CircuitBreakerLayer) -> Bench {
    let f: fn(Request) -> _ = downstream;
    Bench {
        svc: layer.layer(service_fn(f)),
        held: Vec::new(),
    }
}

impl Bench {
    /// Admits a call and holds it in flight; its index.
    async fn admit(&mut self) -> usize {
        self.try_admit().await.expect("the call is admitted")
    }

    /// Sends a call: held in flight with its index if admitted, `None` if the breaker shed it
    /// (its future answered at once with the breaker's rejection).
    async fn try_admit(&mut self) -> Option<usize> {
        let (tx, rx) = oneshot::channel();
        let mut fut = self.svc.ready().await.unwrap().call(rx);
        let polled = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(std::pin::Pin::new(&mut fut), cx))
        })
        .await;
        if let std::task::Poll::Ready(result) = polled {
            let Err(err) = result else {
                panic!("only a rejection answers before the downstream");
            };
            let rejection = seawall_core::rejected(&*err).expect("the breaker's rejection");
            assert_eq!(rejection.kind(), RejectionKind::CircuitOpen);
            return None;
        }
        self.held.push(Some((tx, fut)));
        Some(self.held.len() - 1)
    }

    async fn end(&mut self, call: usize, end: End) {
        let (tx, fut) = self.held[call].take().expect("a call ends once");
        if end == End::Cancelled {
            return drop((tx, fut));
        }
        tx.send(end).unwrap();
        let _ = fut.await;
    }
}

// ===== the reference model =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    InFlight,
    Success,
    Failure,
    Skipped,
}

/// The rule as specified: a run is failures consecutive in admission order, calls ignored or
/// cancelled left out, ended by a success or a call in flight. An adaptive run's baseline is
/// the window's failure rate (the last `window` outcomes in completion order) without the run,
/// shrunk by ten successes and raised by two standard errors, or the failures among the last `min(10, window - 1)` completed
/// calls admitted before it over ten, whichever is higher.
///
/// An adaptive run sheds from the shortest run as rare as `1 / one_in` at that baseline (and
/// never shorter than `min`), and trips at the shortest as rare at the higher of the baseline
/// and 0.3 (the failure rate the breaker rides through). Each failure whose run sheds, and
/// each failure while the shedding lasts, owes the next first attempt a shed; a success
/// admitted after the latest such failure ends the shedding, unless more than 3 of the ten
/// outcomes recorded before it (in completion order, within the window) were failures.
struct Model {
    rule: Rule,
    window: usize,
    calls: Vec<Call>,
    completed: VecDeque<bool>,
    /// First attempts owed a shed, and whether the band is on.
    owed: u32,
    band: bool,
    /// The latest failure that fed the band.
    band_call: usize,
}

/// What a run calls for in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Shed,
    Trip,
}

impl Model {
    /// Whether the next call is admitted (false: shed).
    fn admits(&mut self) -> bool {
        if self.band && self.owed > 0 {
            self.owed -= 1;
            return false;
        }
        self.calls.push(Call::InFlight);
        true
    }

    fn end(&mut self, call: usize, end: End) -> bool {
        self.calls[call] = match end {
            End::Success => Call::Success,
            End::Failure => Call::Failure,
            End::Ignored | End::Cancelled => Call::Skipped,
        };
        if matches!(end, End::Success | End::Failure) {
            self.completed.push_back(end == End::Failure);
            if self.completed.len() > self.window {
                self.completed.pop_front();
            }
        }
        if end == End::Success && self.band && call > self.band_call {
            let before = self.completed.len() - 1;
            let recent = self
                .completed
                .iter()
                .take(before)
                .rev()
                .take(10.min(self.window - 1))
                .filter(|f| **f)
                .count();
            if recent as f64 / 10.0 <= 0.3 {
                self.band = false;
                self.owed = 0;
            }
        }
        if end != End::Failure {
            return false;
        }
        match self.verdict(call) {
            Verdict::Trip => true,
            Verdict::Pass if !self.band => false,
            Verdict::Shed | Verdict::Pass => {
                self.band = true;
                self.owed += 1;
                self.band_call = self.band_call.max(call);
                false
            }
        }
    }

    fn verdict(&self, call: usize) -> Verdict {
        let part = |c: &Call| matches!(c, Call::Failure | Call::Skipped);
        let first = (0..=call)
            .rev()
            .take_while(|&i| part(&self.calls[i]))
            .last()
            .unwrap();
        let last = (call..self.calls.len())
            .take_while(|&i| part(&self.calls[i]))
            .last()
            .unwrap();
        let run = self.calls[first..=last]
            .iter()
            .filter(|c| **c == Call::Failure)
            .count();
        let (min, one_in) = match self.rule {
            Rule::Fixed(n) if run as u32 >= n => return Verdict::Trip,
            Rule::Fixed(_) => return Verdict::Pass,
            Rule::Adaptive { min, one_in } => (min, one_in as f64),
        };
        let failures = self.completed.iter().filter(|f| **f).count();
        let n = self.completed.len().saturating_sub(run) as f64 + 10.0;
        let window = failures.saturating_sub(run) as f64 / n;
        let window = window + 2.0 * (window * (1.0 - window) / n).sqrt();
        let recent: Vec<bool> = self.calls[..first]
            .iter()
            .rev()
            .filter_map(|c| match c {
                Call::Success => Some(false),
                Call::Failure => Some(true),
                _ => None,
            })
            .take(10.min(self.window - 1))
            .collect();
        let recent = recent.iter().filter(|f| **f).count() as f64 / 10.0;
        let p = window.max(recent).max(one_in.powf(-1.0 / f64::from(min)));
        let shortest = |p: f64| {
            if p >= 1.0 {
                return u32::MAX;
            }
            let mut k = min;
            while p.powi(k as i32) > 1.0 / one_in * (1.0 + 1e-9) {
                k += 1;
            }
            k
        };
        if run as u32 >= shortest(p.max(0.3)) {
            Verdict::Trip
        } else if run as u32 >= shortest(p) {
            Verdict::Shed
        } else {
            Verdict::Pass
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Admit,
    /// Ends the held call at this index (modulo the calls held).
    End(usize, End),
}

fn rule() -> impl Strategy<Value = Rule> {
    prop_oneof![
        (1u32..=5).prop_map(Rule::Fixed),
        (
            1u32..=4,
            prop_oneof![Just(10u64), Just(100), Just(10_000_000)]
        )
            .prop_map(|(min, one_in)| Rule::Adaptive { min, one_in }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let end = prop_oneof![
        3 => Just(End::Success),
        5 => Just(End::Failure),
        1 => Just(End::Ignored),
        1 => Just(End::Cancelled),
    ];
    prop_oneof![
        2 => Just(Op::Admit),
        3 => (any::<usize>(), end).prop_map(|(i, end)| Op::End(i, end)),
    ]
}

async fn check(rule: Rule, window: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (layer, handle) = layer(rule, window).pair();
    let mut bench = bench(&layer);
    let mut model = Model {
        rule,
        window: window as usize,
        calls: Vec::new(),
        completed: VecDeque::new(),
        owed: 0,
        band: false,
        band_call: 0,
    };
    for (i, op) in ops.into_iter().enumerate() {
        let trips = match op {
            Op::Admit => {
                let call = bench.try_admit().await;
                let admitted = model.admits();
                prop_assert_eq!(call.is_some(), admitted, "op {}: shed", i);
                if let Some(call) = call {
                    prop_assert_eq!(call, model.calls.len() - 1);
                }
                false
            }
            Op::End(pick, end) => {
                let held: Vec<usize> = (0..model.calls.len())
                    .filter(|&c| model.calls[c] == Call::InFlight)
                    .collect();
                if held.is_empty() {
                    continue;
                }
                let call = held[pick % held.len()];
                bench.end(call, end).await;
                model.end(call, end)
            }
        };
        let expected = if trips {
            CircuitState::Open
        } else {
            CircuitState::Closed
        };
        prop_assert_eq!(handle.state(), expected, "op {}: {:?}", i, op);
        if trips {
            return Ok(());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn runs_in_admission_order_agree_with_the_reference_model(
        rule in rule(),
        window in 1u32..=16,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let rt = paused_runtime();
        rt.block_on(check(rule, window, ops))?;
    }
}

// ===== the cases behind the rule =====

#[tokio::test(start_paused = true)]
async fn successes_of_calls_in_flight_at_an_outages_onset_do_not_end_its_run() {
    let (layer, handle) = layer(Rule::Fixed(5), 100).pair();
    let mut bench = bench(&layer);
    // Calls sent before the outage, answered after the first new calls failed.
    let before: Vec<usize> = futures_admit(&mut bench, 4).await;
    let after: Vec<usize> = futures_admit(&mut bench, 5).await;
    for i in 0..4 {
        bench.end(after[i], End::Failure).await;
        bench.end(before[i], End::Success).await;
        assert_eq!(handle.state(), CircuitState::Closed);
    }
    bench.end(after[4], End::Failure).await;
    assert_eq!(
        handle.state(),
        CircuitState::Open,
        "five calls in a row in admission order failed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_in_flight_between_failures_keeps_them_apart_until_it_ends() {
    let (layer, handle) = layer(Rule::Fixed(5), 100).pair();
    let mut bench = bench(&layer);
    // Instant errors around a slow answer, as in a brownout: five failures come back in a
    // row, but the call between them may still succeed.
    let calls = futures_admit(&mut bench, 6).await;
    for &call in [0, 1, 3, 4, 5].iter().map(|i| &calls[*i]) {
        bench.end(call, End::Failure).await;
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(
        handle.consecutive_failures(),
        5,
        "in completion order, a run of five"
    );
    bench.end(calls[2], End::Success).await;
    assert_eq!(handle.state(), CircuitState::Closed);

    // After a success, the same, and the call between fails: one run of six.
    let success = bench.admit().await;
    bench.end(success, End::Success).await;
    let calls = futures_admit(&mut bench, 6).await;
    for &call in [0, 1, 3, 4, 5].iter().map(|i| &calls[*i]) {
        bench.end(call, End::Failure).await;
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    bench.end(calls[2], End::Failure).await;
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_or_ignored_call_is_no_part_of_a_run_and_does_not_end_it() {
    let (layer, handle) = layer(Rule::Fixed(3), 100).pair();
    let mut bench = bench(&layer);
    let calls = futures_admit(&mut bench, 5).await;
    bench.end(calls[1], End::Cancelled).await;
    bench.end(calls[3], End::Ignored).await;
    bench.end(calls[0], End::Failure).await;
    bench.end(calls[2], End::Failure).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    bench.end(calls[4], End::Failure).await;
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn calls_beyond_the_ring_are_judged_in_completion_order() {
    let (layer, handle) = layer(Rule::Fixed(3), 100).pair();
    let mut bench = bench(&layer);
    // The first ten lose their slots to the calls admitted after them.
    let calls = futures_admit(&mut bench, RING + 10).await;
    // In completion order, a success between every two failures: no run.
    for (i, &call) in calls[..5].iter().enumerate() {
        let end = if i % 2 == 0 {
            End::Failure
        } else {
            End::Success
        };
        bench.end(call, end).await;
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    // Three failures in completion order, their slots gone: the completion-order rule.
    for &call in &calls[5..8] {
        bench.end(call, End::Failure).await;
    }
    assert_eq!(handle.state(), CircuitState::Open);
}

async fn futures_admit(bench: &mut Bench, n: usize) -> Vec<usize> {
    let mut calls = Vec::with_capacity(n);
    for _ in 0..n {
        calls.push(bench.admit().await);
    }
    calls
}
