//! loom models of the keyed rate limit's sharded map: first calls of one key racing to create
//! its bucket, and insertions racing with the eviction a full map makes, run over the crate's
//! real code under every interleaving of two or three threads (within a preemption bound).
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p seawall-rate-limit --test loom`.
//! Under `--cfg loom` the map's locks and counters are loom's (`seawall_core::sync`). Time is
//! tokio's paused clock, so every interleaving reads the same time. The buckets themselves are
//! governor's single compare-and-swap, not modelled here.
#![cfg(loom)]

mod invariants;

use std::sync::Arc;

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;
use seawall_core::BoxError;
use seawall_rate_limit::{KeyFn, Keyed, Quota, RateLimitLayer, key_fn};
use tower::{Layer, ServiceExt, service_fn};

use invariants::*;

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

type Svc = tower::util::BoxCloneSyncService<u64, u64, BoxError>;

type ByRequest = KeyFn<fn(&u64) -> u64, u64, u64>;

/// A keyed limit of one call a minute per key, at most `max_keys` keys.
fn limited(max_keys: usize) -> (Svc, RateLimitLayer<Keyed<ByRequest>>) {
    let by_request: ByRequest = key_fn(|n: &u64| *n);
    let layer = RateLimitLayer::builder()
        .name("loom")
        .quota(Quota::per_minute(1))
        .max_keys(max_keys)
        .build()
        .unwrap()
        .keyed(by_request);
    let svc = layer.layer(service_fn(|n: u64| {
        std::future::ready(Ok::<_, BoxError>(n))
    }));
    (tower::util::BoxCloneSyncService::new(svc), layer)
}

#[test]
fn first_calls_of_one_key_racing_share_one_bucket() {
    model(2, || {
        let (svc, layer) = limited(8);
        let permitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (svc, permitted) = (svc.clone(), permitted.clone());
                thread::spawn(move || {
                    if loom::future::block_on(svc.oneshot(1)).is_ok() {
                        permitted.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let permitted = permitted.load(Ordering::SeqCst);
        no_more_than_the_bursts(permitted, 1, 1);
        assert_eq!(permitted, 1, "the key's one permit was lost");
        key_count_bounded_and_true(layer.tracked_keys(), 1, 8);
    });
}

#[test]
fn insertions_racing_with_eviction_keep_the_map_bounded_and_its_count_true() {
    model(2, || {
        let (svc, layer) = limited(1);
        loom::future::block_on(svc.clone().oneshot(1)).unwrap();
        // Two new keys into a full map of one: each evicts, and one evicts the other.
        let threads: Vec<_> = [2, 3]
            .into_iter()
            .map(|key| {
                let svc = svc.clone();
                thread::spawn(move || loom::future::block_on(svc.oneshot(key)).unwrap())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        key_count_bounded_and_true(layer.tracked_keys(), 1, 1);
    });
}
