//! loom models of the breaker's lock-free core: the state word, the probe slots and the
//! generation checks, run over the crate's real code under every interleaving of two or three
//! threads (within a preemption bound, as tokio's own models).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p seawall-circuit-breaker --test
//! loom`. Under `--cfg loom` the breaker's atomics and locks are loom's (`seawall_core::sync`).
//! Time is tokio's paused clock: each model enters a paused runtime, so every interleaving reads
//! the same times and only [`advance`] moves them.
#![cfg(loom)]

mod invariants;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;
use seawall_circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer, CircuitState};
use seawall_core::BoxError;
use tower::{Layer, Service, ServiceExt, service_fn};

use invariants::*;

const OPEN: Duration = Duration::from_secs(1);

/// Runs `f` under every interleaving loom explores, on a paused clock.
fn model(preemptions: usize, f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(move || {
        // A runtime per execution: what it holds (a breaker's timer task, a queued call's
        // timer) goes with the execution's loom objects. loom runs the execution's threads on
        // this thread, so they all read this runtime's clock.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let _clock = runtime.enter();
        f();
    });
}

/// Moves the paused clock on.
fn advance(by: Duration) {
    tokio::runtime::Handle::current().block_on(tokio::time::advance(by));
}

fn block_on<F: Future>(f: F) -> F::Output {
    loom::future::block_on(f)
}

/// A downstream that counts its calls in flight and the most at once, and the breaker's
/// openings.
#[derive(Default)]
struct Downstream {
    calls: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    openings: AtomicU64,
}

impl Downstream {
    fn call(&self, fail: bool) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if fail { Err("down".into()) } else { Ok(()) }
    }
}

type Svc = tower::util::BoxCloneSyncService<bool, (), BoxError>;

/// A breaker over a [`Downstream`], its handle and the downstream.
fn breaker(
    build: impl FnOnce(
        seawall_circuit_breaker::CircuitBreakerConfigBuilder<CircuitBreakerLayer>,
    ) -> seawall_circuit_breaker::CircuitBreakerConfigBuilder<CircuitBreakerLayer>,
) -> (Svc, CircuitBreakerHandle, Arc<Downstream>) {
    // The models count calls and step to exact open ends: the rules they set, no adaptive run,
    // no open jitter, every probe needed to close.
    let builder = CircuitBreakerLayer::builder()
        .name("loom")
        .seed(7)
        .no_consecutive_failures()
        .open_jitter(0.0)
        .half_open_success_ratio(1.0);
    let downstream = Arc::new(Downstream::default());
    let d = downstream.clone();
    let (layer, handle) = build(builder)
        .build()
        .unwrap()
        .on_state_change(move |e| {
            if e.to == CircuitState::Open {
                d.openings.fetch_add(1, Ordering::SeqCst);
            }
        })
        .pair();
    let d = downstream.clone();
    let svc = layer.layer(service_fn(move |fail: bool| {
        std::future::ready(d.call(fail))
    }));
    let svc = tower::util::BoxCloneSyncService::new(svc.map_response(|_| ()));
    (svc, handle, downstream)
}

fn call(svc: &Svc, fail: bool) -> Result<(), BoxError> {
    block_on(svc.clone().oneshot(fail))
}

/// Opens the breaker with one failure and lets its open time run out.
fn open_and_expire(svc: &Svc, handle: &CircuitBreakerHandle) {
    call(svc, true).unwrap_err();
    assert_eq!(handle.state(), CircuitState::Open);
    advance(OPEN);
}

#[test]
fn the_move_to_half_open_never_hands_out_a_retry_after_beyond_the_open_time() {
    model(3, || {
        let (svc, handle, _) = breaker(|b| {
            b.consecutive_failures(1)
                .open_duration(OPEN)
                .half_open_probes(1)
        });
        open_and_expire(&svc, &handle);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let svc = svc.clone();
                let handle = handle.clone();
                thread::spawn(move || {
                    // A probe that fails opens the breaker again, racing the other thread.
                    if let Err(err) = call(&svc, true)
                        && seawall_core::rejected(&*err).is_some()
                    {
                        rejection_waits_at_most(&err, OPEN);
                    }
                    open_remaining_at_most(&handle, OPEN);
                })
            })
            .collect();
        open_remaining_at_most(&handle, OPEN);
        for t in threads {
            t.join().unwrap();
        }
        open_remaining_at_most(&handle, OPEN);
    });
}

#[test]
fn half_open_admits_at_most_n_probes_and_a_dropped_probe_frees_its_slot() {
    const PROBES: u32 = 2;
    model(1, || {
        let (svc, handle, downstream) = breaker(|b| {
            b.consecutive_failures(1)
                .open_duration(OPEN)
                .half_open_probes(PROBES)
                .half_open_success_ratio(1.0)
        });
        open_and_expire(&svc, &handle);
        let probing: Vec<_> = (0..2)
            .map(|_| {
                let svc = svc.clone();
                thread::spawn(move || {
                    let _ = call(&svc, false);
                })
            })
            .collect();
        let dropping = {
            let mut svc = svc.clone();
            thread::spawn(move || {
                // Admitted (or not) and given up on before it ran.
                drop(svc.call(false));
            })
        };
        for t in probing {
            t.join().unwrap();
        }
        dropping.join().unwrap();
        probes_within_limit(downstream.max_in_flight.load(Ordering::SeqCst), PROBES);
        let successes: Vec<_> = (0..PROBES).map(|_| call(&svc, false)).collect();
        no_probe_slot_held(&successes, handle.state());
    });
}

#[test]
fn concurrent_failures_trip_the_breaker_once() {
    model(2, || {
        // Without a noise margin: each thread's failure, seen alone in a full window (1 of 2),
        // trips it, so the model checks that two such trips open it once. With the default
        // margin only 2 of 2 trips, and an interleaving where each thread counts its call
        // before the other's failure sees 1 of 2 in both: no opening until the next call.
        let (svc, handle, downstream) = breaker(|b| {
            b.count_window(2)
                .minimum_calls(2)
                .failure_rate_threshold(0.5)
                .noise_margin(0.0)
                .open_duration(OPEN)
        });
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let svc = svc.clone();
                thread::spawn(move || call(&svc, true).is_err())
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        assert_eq!(downstream.openings.load(Ordering::SeqCst), 1);
        every_call_accounted(2, downstream.calls.load(Ordering::SeqCst), 0);
        assert_eq!(handle.state(), CircuitState::Open);
        assert_eq!(handle.counts().calls, 2);
        open_remaining_at_most(&handle, OPEN);
        announced_state_is_current(&handle);
    });
}

#[test]
fn a_run_whose_failures_end_at_once_is_seen_by_one_of_them() {
    model(2, || {
        let (mut svc, handle, downstream) = breaker(|b| {
            b.no_failure_rate()
                .consecutive_failures(2)
                .open_duration(OPEN)
        });
        // Admitted one after the other; they end on two threads at once.
        let calls: Vec<_> = (0..2).map(|_| svc.call(true)).collect();
        let threads: Vec<_> = calls
            .into_iter()
            .map(|call| thread::spawn(move || block_on(call).is_err()))
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        assert_eq!(handle.state(), CircuitState::Open, "the run was missed");
        assert_eq!(downstream.openings.load(Ordering::SeqCst), 1);
        announced_state_is_current(&handle);
    });
}

#[test]
fn late_results_of_an_earlier_generation_are_not_counted() {
    model(3, || {
        let (mut svc, handle, _) = breaker(|b| b.consecutive_failures(1).open_duration(OPEN));
        // Admitted while closed; its failure comes back only after the breaker moved on.
        let late = svc.call(true);
        handle.force_open();
        let recording = thread::spawn(move || block_on(late).is_err());
        let closing = {
            let handle = handle.clone();
            thread::spawn(move || handle.force_closed())
        };
        assert!(recording.join().unwrap());
        closing.join().unwrap();
        assert_eq!(handle.state(), CircuitState::Closed);
        assert_eq!(handle.counts().calls, 0, "a late result was counted");
        announced_state_is_current(&handle);
    });
}

#[test]
fn forced_states_racing_with_calls_settle_on_the_last_one() {
    model(2, || {
        let (svc, handle, downstream) = breaker(|b| b.consecutive_failures(1).open_duration(OPEN));
        let forcing = {
            let handle = handle.clone();
            thread::spawn(move || {
                handle.force_open();
                handle.force_closed();
            })
        };
        let calling = {
            let svc = svc.clone();
            thread::spawn(move || match call(&svc, false) {
                Ok(()) => (1, 0),
                Err(err) => {
                    assert_eq!(rejection_waits_at_most(&err, OPEN), None);
                    (0, 1)
                }
            })
        };
        forcing.join().unwrap();
        let (admitted, rejected) = calling.join().unwrap();
        every_call_accounted(1, admitted, rejected);
        assert_eq!(downstream.calls.load(Ordering::SeqCst), admitted);
        assert_eq!(handle.state(), CircuitState::Closed);
        announced_state_is_current(&handle);
    });
}

type KeyedSvc = tower::util::BoxCloneSyncService<(u64, bool), (), BoxError>;
/// The keyed layer's key: the request's first field.
type KeyOf = seawall_core::key::KeyFn<fn(&(u64, bool)) -> u64, (u64, bool), u64>;

/// A keyed breaker of at most `max_keys` keys over a downstream that fails when told to.
fn keyed(
    max_keys: usize,
) -> (
    KeyedSvc,
    seawall_circuit_breaker::KeyedCircuitBreakerLayer<u64, KeyOf>,
) {
    let config = seawall_circuit_breaker::CircuitBreakerConfig::builder()
        .name("loom")
        .seed(7)
        .consecutive_failures(1)
        .open_jitter(0.0)
        .half_open_success_ratio(1.0)
        .open_duration(OPEN)
        .max_keys(max_keys)
        .build()
        .unwrap();
    let key: fn(&(u64, bool)) -> u64 = |req| req.0;
    let layer = seawall_circuit_breaker::KeyedCircuitBreakerLayer::new(
        config,
        seawall_core::key::key_fn(key),
    );
    let svc = layer.layer(service_fn(|(_, fail): (u64, bool)| {
        std::future::ready(if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        })
    }));
    let svc = tower::util::BoxCloneSyncService::new(svc.map_response(|_| ()));
    (svc, layer)
}

#[test]
fn an_insertion_that_evicts_never_loses_a_breaker_in_use() {
    model(2, || {
        let (svc, layer) = keyed(2);
        for key in [1, 2] {
            block_on(svc.clone().oneshot((key, false))).unwrap();
        }
        // A call to key 1, the least recently used, is admitted while a new key needs room:
        // the breaker the call holds must not be evicted under it, or the failure that trips
        // it would trip a breaker no longer in the map.
        let admitting = {
            let mut svc = svc.clone();
            thread::spawn(move || svc.call((1, true)))
        };
        let inserting = {
            let svc = svc.clone();
            thread::spawn(move || block_on(svc.oneshot((3, false))))
        };
        let in_flight = admitting.join().unwrap();
        let _ = inserting.join().unwrap();
        block_on(in_flight).unwrap_err();
        assert!(layer.len() <= 2);
        let handle = layer
            .handle(&1)
            .expect("the breaker a call tripped was evicted");
        assert_eq!(handle.state(), CircuitState::Open);
    });
}

#[test]
fn concurrent_first_calls_of_a_key_share_one_breaker() {
    model(2, || {
        let (svc, layer) = keyed(2);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let svc = svc.clone();
                thread::spawn(move || block_on(svc.oneshot((1, true))).unwrap_err())
            })
            .collect();
        for t in threads {
            let err = t.join().unwrap();
            // The downstream's own failure, or the open breaker the other call tripped.
            if seawall_core::rejected(&*err).is_some() {
                rejection_waits_at_most(&err, OPEN);
            }
        }
        assert_eq!(layer.len(), 1);
        assert_eq!(layer.handle(&1).unwrap().state(), CircuitState::Open);
    });
}
