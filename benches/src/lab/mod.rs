//! The failure-behaviour lab: whole stacks against a simulated failing downstream, on a paused
//! clock, with numbers.
//!
//! `cargo run --release -p seawall-bench --bin lab` runs the built-in suite of
//! `shared/LAB.md`; see [`cli`] for the options and `lab --help-scenario` ([`help`]) for the
//! scenario format. A run of one scenario cell against one stack:
//!
//! 1. a current-thread tokio runtime with the clock paused, so timers fire in order as soon as
//!    nothing else can run, and a minute of virtual time takes a fraction of a second;
//! 2. the downstream ([`sim`]) with its own seeds;
//! 3. one stack per client ([`stacks`]) built over it;
//! 4. open-loop arrivals or closed-loop callers ([`workload`]), every outcome recorded into a
//!    [`metrics::Trace`];
//! 5. the trace reduced to a [`metrics::Summary`], per-second [`metrics::Series`] and
//!    [`metrics::Verdict`]s, then printed, written as JSON ([`report`]) and drawn ([`svg`]).
//!
//! Every random stream (arrivals, downstream, faults, jitter) is a `ChaCha8Rng` seeded from
//! one master seed, so the same seed gives the same report, byte for byte. Runs are
//! independent, so the command spreads them over threads without changing a number.

pub mod cli;
pub mod help;
pub mod metrics;
pub mod report;
pub mod scenario;
pub mod sim;
pub mod stacks;
pub mod svg;
pub mod workload;

use std::sync::Arc;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use self::metrics::Trace;
use self::scenario::Scenario;
use self::stacks::{Built, Settings, StackKind};
use self::workload::drive;

/// The seeds of a run's random streams, all drawn from the master seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeds {
    /// Arrival times (Poisson arrivals, client offsets, callers' starts).
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

    /// The jitter seed of client `client`.
    pub fn client(&self, client: u32) -> u64 {
        self.jitter
            .wrapping_add(u64::from(client).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// Runs `scenario` (one cell) against one of the built-in stacks on a fresh paused-clock
/// runtime and returns its trace. `settings` should already carry the cell's deadline
/// ([`Settings::with_deadline`]).
pub fn run(scenario: &Scenario, stack: StackKind, settings: &Settings, seed: u64) -> Trace {
    let deadline = scenario.workload.deadline;
    let options = &scenario.stacks;
    let balance = options.balance(stack.name());
    // Each client balances with its own choices, seeded apart from its jitter.
    let spread = |ds, client, seeds: Seeds| {
        stacks::balance::spread(ds, balance, None, !seeds.client(client)).0
    };
    match stack {
        StackKind::Unprotected => run_stack(scenario, seed, |ds, client, seeds| {
            stacks::unprotected(spread(ds, client, seeds), deadline)
        }),
        StackKind::Naive => run_stack(scenario, seed, |ds, client, seeds| {
            stacks::naive(spread(ds, client, seeds), deadline)
        }),
        StackKind::Tower => run_stack(scenario, seed, |ds, client, seeds| {
            stacks::tower(
                spread(ds, client, seeds),
                &settings.tower,
                options.hedge.as_ref(),
                seeds.client(client),
            )
        }),
        StackKind::TowerResilience => run_stack(scenario, seed, |ds, client, seeds| {
            let (ds, outlier) = stacks::balance::spread_tower_resilience(
                ds,
                balance,
                options.outlier.as_ref(),
                !seeds.client(client),
            );
            let ejected = outlier.map(|detector| {
                Arc::new(move || detector.ejected_count() as u32) as workload::EjectedProbe
            });
            stacks::tower_resilience(
                ds,
                &settings.tower_resilience,
                options.hedge.as_ref(),
                ejected,
                seeds.client(client),
            )
        }),
        StackKind::Seawall => run_stack(scenario, seed, |ds, client, seeds| {
            let (ds, outlier) = stacks::balance::spread(
                ds,
                balance,
                options.outlier.as_ref(),
                !seeds.client(client),
            );
            let ejected = outlier
                .map(|handle| Arc::new(move || handle.ejected() as u32) as workload::EjectedProbe);
            stacks::seawall(
                ds,
                &settings.seawall,
                options.hedge.as_ref(),
                options.circuit_breaker_key,
                ejected,
                seeds.client(client),
            )
        }),
    }
}

/// Runs `scenario` against the stacks `build` makes over the simulated downstream, one per
/// client (given the client's index and the run's seeds, for its jitter), on a fresh
/// paused-clock runtime, and returns its trace.
///
/// This is how a stack of your own goes into the lab: any tower service over
/// [`sim::Downstream`] whose errors are sorted into [`metrics::Failure`]s (see
/// [`stacks::classify`]).
pub fn run_stack<S, F>(scenario: &Scenario, seed: u64, mut build: F) -> Trace
where
    F: FnMut(sim::Downstream, u32, Seeds) -> Built<S>,
    S: tower::Service<sim::Request, Response = sim::Response, Error = metrics::Failure>,
{
    let seeds = Seeds::derive(seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let seconds = (scenario.duration + sim::drain(scenario)).as_secs() as usize + 1;
        let expected = (scenario.workload.rate * scenario.duration.as_secs_f64()) as usize;
        let (downstream, tap) = sim::downstream(
            scenario,
            [seeds.downstream, seeds.faults],
            expected,
            seconds,
        );
        let clients = (0..scenario.workload.clients)
            .map(|client| build(downstream.clone(), client, seeds))
            .collect();
        drive(clients, scenario, seeds.arrivals, &tap).await
    })
}
