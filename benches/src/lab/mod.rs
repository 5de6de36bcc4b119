//! The failure-behaviour lab: whole stacks against a simulated failing downstream, on a paused
//! clock, with numbers.
//!
//! `cargo run --release -p seawall-bench --bin lab` runs the built-in suite of
//! `shared/LAB.md`; see [`cli`] for the options. A run of one scenario against one stack:
//!
//! 1. a current-thread tokio runtime with the clock paused, so timers fire in order as soon as
//!    nothing else can run, and a minute of virtual time takes a fraction of a second;
//! 2. the downstream ([`sim`]) built from seawall-chaos with its own seeds;
//! 3. the stack ([`stacks`]) built over it;
//! 4. open-loop arrivals ([`workload`]) sent at their intended times, every outcome recorded
//!    into a [`metrics::Trace`];
//! 5. the trace reduced to a [`metrics::Summary`], per-second [`metrics::Series`] and
//!    [`metrics::Verdict`]s, then printed, written as JSON ([`report`]) and drawn ([`svg`]).
//!
//! Every random stream (arrivals, downstream, faults, jitter) is a `ChaCha8Rng` seeded from
//! one master seed, so the same seed gives the same report, byte for byte.

pub mod cli;
pub mod metrics;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod stacks;
pub mod svg;
pub mod workload;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use self::metrics::Trace;
use self::scenario::Scenario;
use self::sim::DRAIN;
use self::stacks::{Settings, StackKind};
use self::workload::drive;

/// The seeds of a run's random streams, all drawn from the master seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeds {
    /// Arrival times (Poisson arrivals).
    pub arrivals: u64,
    /// The healthy downstream's latency.
    pub downstream: u64,
    /// The faults' dice.
    pub faults: u64,
    /// The stacks' backoff jitter.
    pub jitter: u64,
}

impl Seeds {
    /// The streams of master seed `seed`.
    pub fn derive(seed: u64) -> Self {
        let mut master = ChaCha8Rng::seed_from_u64(seed);
        Self {
            arrivals: master.next_u64(),
            downstream: master.next_u64(),
            faults: master.next_u64(),
            jitter: master.next_u64(),
        }
    }
}

/// Runs `scenario` against one of the built-in stacks on a fresh paused-clock runtime and
/// returns its trace.
pub fn run(scenario: &Scenario, stack: StackKind, settings: &Settings, seed: u64) -> Trace {
    match stack {
        StackKind::Unprotected => run_stack(scenario, seed, |ds, _| stacks::unprotected(ds)),
        StackKind::Naive => run_stack(scenario, seed, |ds, _| stacks::naive(ds)),
        StackKind::Tower => run_stack(scenario, seed, |ds, seeds| {
            stacks::tower(ds, settings, seeds.jitter)
        }),
        StackKind::TowerResilience => run_stack(scenario, seed, |ds, seeds| {
            stacks::tower_resilience(ds, settings, seeds.jitter)
        }),
        StackKind::Seawall => run_stack(scenario, seed, |ds, seeds| {
            stacks::seawall(ds, settings, seeds.jitter)
        }),
    }
}

/// Runs `scenario` against the stack `build` makes over the simulated downstream (given the
/// run's seeds, for its jitter), on a fresh paused-clock runtime, and returns its trace.
///
/// This is how a stack of your own goes into the lab: any tower service over
/// [`sim::Downstream`] whose errors are sorted into [`metrics::Failure`]s (see
/// [`stacks::classify`]).
pub fn run_stack<S, F>(scenario: &Scenario, seed: u64, build: F) -> Trace
where
    F: FnOnce(sim::Downstream, Seeds) -> stacks::Built<S>,
    S: tower::Service<sim::Request, Response = sim::Response, Error = metrics::Failure>,
{
    let seeds = Seeds::derive(seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let plan = workload::arrivals(scenario, seeds.arrivals);
        let seconds = (scenario.duration + DRAIN).as_secs() as usize + 1;
        let (downstream, tap) = sim::downstream(
            scenario,
            [seeds.downstream, seeds.faults],
            plan.len(),
            seconds,
        );
        let built = build(downstream, seeds);
        drive(built.service, built.breaker, scenario, &plan, &tap).await
    })
}
