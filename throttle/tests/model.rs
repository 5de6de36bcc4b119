//! The throttle against a reference model of its window and of the SRE book's formula, on
//! random sequences of calls, outcomes and pauses.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::prelude::*;
use seawall_core::classify::HttpStatus;
use seawall_core::testing::paused_runtime;
use seawall_core::{BoxError, Rejected, RejectionKind, rejected};
use seawall_throttle::{ThrottleCounts, ThrottleHandle, ThrottleLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

/// What the downstream does with one call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    /// Time passes, in milliseconds.
    Wait(u64),
    Success,
    Failure,
    Overload,
    /// A 404: ignored by the classifier.
    Ignored,
    /// An open circuit further in.
    InnerRejection,
    /// The call is made and dropped before it ends.
    Dropped,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..1500).prop_map(Op::Wait),
        4 => Just(Op::Success),
        1 => Just(Op::Failure),
        4 => Just(Op::Overload),
        1 => Just(Op::Ignored),
        1 => Just(Op::InnerRejection),
        1 => Just(Op::Dropped),
    ]
}

#[derive(Debug, Clone)]
struct Settings {
    multiplier: f64,
    window_ms: u64,
    min_requests: u32,
    max_window_ms: u64,
    accept_failures: bool,
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![Just(1.0), Just(1.5), Just(2.0), Just(4.0)],
        prop_oneof![Just(50u64), Just(500), Just(1000)],
        1u32..30,
        1u64..40,
        any::<bool>(),
    )
        .prop_map(
            |(multiplier, window_ms, min_requests, stretch, accept)| Settings {
                multiplier,
                window_ms,
                min_requests,
                max_window_ms: window_ms * stretch,
                accept_failures: accept,
            },
        )
}

/// The window as the crate documents it, in exact arithmetic.
#[derive(Clone)]
struct Model {
    settings: Settings,
    tick_ns: u64,
    requests: f64,
    accepts: f64,
    base: f64,
    tick: u64,
    /// The tick of the last call let through and not accepted.
    refused: Option<u64>,
}

impl Model {
    fn new(settings: Settings) -> Self {
        // The largest power of two nanoseconds within a sixteenth of the window.
        let sixteenth = settings.window_ms * 1_000_000 / 16;
        let tick_ns = 1 << (63 - sixteenth.leading_zeros());
        Self {
            settings,
            tick_ns,
            requests: 0.0,
            accepts: 0.0,
            base: 0.0,
            tick: 0,
            refused: None,
        }
    }

    /// Whether a call let through was refused within the longest window before `now_ns`: the
    /// formula applies only then.
    fn refused_lately(&self, now_ns: u64) -> bool {
        let max_window_ticks =
            (self.settings.max_window_ms * 1_000_000) as f64 / self.tick_ns as f64;
        self.refused
            .is_some_and(|tick| ((now_ns / self.tick_ns - tick) as f64) <= max_window_ticks)
    }

    fn roll(&mut self, now_ns: u64) {
        let tick = now_ns / self.tick_ns;
        if tick <= self.tick {
            return;
        }
        let gap_ns = ((tick - self.tick) * self.tick_ns) as f64;
        let by_time = gap_ns / (self.settings.window_ms as f64 * 1e6);
        let by_count = ((self.requests - self.base) / f64::from(self.settings.min_requests))
            .max(gap_ns / (self.settings.max_window_ms as f64 * 1e6));
        let factor = (-by_time.min(by_count)).exp();
        self.requests *= factor;
        self.accepts *= factor;
        self.base = self.requests;
        self.tick = tick;
    }

    /// The model as it would read at `now_ns`.
    fn at(&self, now_ns: u64) -> Self {
        let mut ahead = self.clone();
        ahead.roll(now_ns);
        ahead
    }

    /// The SRE book's formula; an excess within the rounding of the crate's fixed-point counts
    /// counts as none.
    fn probability(&self) -> f64 {
        let k = self.settings.multiplier;
        let excess = self.requests - k * self.accepts;
        // The formula engages only beyond two standard deviations of the excess a downstream
        // accepting 1/K of the calls gives by chance, √((K − 1) R), past the counts' rounding.
        let rounding = (k + 1.0) / 4096.0;
        if excess <= rounding || excess - rounding <= 2.0 * ((k - 1.0) * self.requests).sqrt() {
            return 0.0;
        }
        excess / (self.requests + 1.0)
    }

    /// Whether the excess lies within the fixed-point counts' rounding of the noise bound, where
    /// the crate may read either side of it: then its probability is 0 or the formula.
    fn at_noise_edge(&self) -> bool {
        let k = self.settings.multiplier;
        let rounding = (k + 1.0) / 4096.0;
        let past = self.requests - k * self.accepts - rounding;
        (past - 2.0 * ((k - 1.0) * self.requests).sqrt()).abs() <= rounding
    }

    fn add(&mut self, accepted: bool) {
        self.requests += 1.0;
        if accepted {
            self.accepts += 1.0;
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 0.01 + 1e-3 * b.abs()
}

fn is_throttled(err: &BoxError) -> bool {
    rejected(&**err).map(Rejected::kind) == Some(RejectionKind::Throttled)
}

async fn run(settings: Settings, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (layer, handle): (_, ThrottleHandle) = ThrottleLayer::builder()
        .name("model")
        .multiplier(settings.multiplier)
        .window(Duration::from_millis(settings.window_ms))
        .min_requests(settings.min_requests)
        .max_window(Duration::from_millis(settings.max_window_ms))
        .accept_failures(settings.accept_failures)
        .seed(11)
        .build()
        .unwrap()
        .pair();
    let start = tokio::time::Instant::now();
    let svc = layer
        .classify(HttpStatus::default().ignoring(http::StatusCode::NOT_FOUND))
        .layer(service_fn(|op: Op| async move {
            let status = match op {
                Op::Success => 200,
                Op::Failure => 500,
                Op::Overload => 503,
                Op::Ignored => 404,
                Op::InnerRejection => {
                    return Err(Rejected::new(RejectionKind::CircuitOpen, "breaker").into());
                }
                Op::Dropped => std::future::pending().await,
                Op::Wait(_) => unreachable!(),
            };
            Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
        }));
    let mut model = Model::new(settings.clone());
    for op in ops {
        if let Op::Wait(ms) = op {
            tokio::time::advance(Duration::from_millis(ms)).await;
            continue;
        }
        let now_ns = u64::try_from(start.elapsed().as_nanos()).unwrap();
        let before = handle.rejection_probability();
        let read = model.at(now_ns);
        let lately = model.refused_lately(now_ns);
        let expected = if lately { read.probability() } else { 0.0 };
        let formula =
            (read.requests - read.settings.multiplier * read.accepts) / (read.requests + 1.0);
        prop_assert!(
            close(before, expected)
                || lately && read.at_noise_edge() && (before == 0.0 || close(before, formula)),
            "probability {before} vs the model's {expected}"
        );
        // A call reads the clock, and so decays the window, where requests may exceed K ×
        // accepts and where its outcome is counted (the window stays under 256 requests).
        if model.probability() > 0.0 {
            model.roll(now_ns);
        }
        let mut svc = svc.clone();
        let result = if op == Op::Dropped {
            let ready = svc.ready().await.unwrap();
            let mut call = pin!(ready.call(op));
            match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(result) => result.map(|_| ()),
                Poll::Pending => Ok(()),
            }
        } else {
            svc.oneshot(op).await.map(|_| ())
        };
        match result {
            Err(err) if is_throttled(&err) => {
                prop_assert!(before > 0.0, "rejected with probability 0");
                model.add(false);
            }
            _ => {
                let accepted = match op {
                    Op::Success => Some(true),
                    Op::Failure => Some(settings.accept_failures),
                    Op::Overload => Some(false),
                    _ => None,
                };
                if let Some(accepted) = accepted {
                    model.roll(now_ns);
                    model.add(accepted);
                    if !accepted {
                        model.refused = Some(now_ns / model.tick_ns);
                    }
                }
            }
        }
        let counts = handle.counts();
        let view = model.at(now_ns);
        prop_assert!(
            close(counts.requests, view.requests) && close(counts.accepts, view.accepts),
            "{counts:?} vs the model's {} requests, {} accepts",
            view.requests,
            view.accepts
        );
        prop_assert!(counts.accepts <= counts.requests);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_window_and_the_probability_follow_the_model(
        settings in settings(),
        // Under 256 calls: the window never reaches the size from which the clock is sampled.
        ops in proptest::collection::vec(op(), 1..250),
    ) {
        let rt = paused_runtime();
        rt.block_on(run(settings, ops))?;
    }
}

proptest! {
    #[test]
    fn the_probability_is_the_formula_beyond_noise_and_zero_within_it(
        requests in 0u32..20_000,
        accepted_share in 0.0f64..=1.0,
        multiplier in prop_oneof![Just(1.0), Just(1.5), Just(2.0), Just(4.0), 1.0f64..100.0],
    ) {
        let requests = f64::from(requests);
        let accepts = (requests * accepted_share).floor();
        let counts = ThrottleCounts { requests, accepts };
        let p = counts.rejection_probability(multiplier);
        let excess = requests - multiplier * accepts;
        let formula = (excess / (requests + 1.0)).max(0.0);
        let noise = 2.0 * ((multiplier - 1.0) * requests).sqrt() + (multiplier + 1.0) / 4096.0;
        if excess > noise + 1e-9 {
            prop_assert!((p - formula).abs() < 1e-12, "{p} vs the formula's {formula}");
        } else if excess < noise - 1e-9 {
            prop_assert_eq!(p, 0.0);
        }
        prop_assert!((0.0..1.0).contains(&p));
    }
}
