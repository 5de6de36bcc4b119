//! The chaos layer on the paused clock: each fault kind, schedules, targeting, seeding and the
//! capacity model.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::Duration;

use seawall_chaos::{Capacity, ChaosLayer, Faults, Flapping, Latency};
use seawall_core::testing::TestRecorder;
use seawall_core::{BoxError, RejectionKind, rejected};
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, task};
use tower::util::ServiceFn;
use tower::{Layer, Service, ServiceExt, service_fn};

type Echo = ServiceFn<fn(u32) -> Ready<Result<u32, Infallible>>>;

fn echo() -> Echo {
    service_fn(|x| ready(Ok(x)))
}

const MS: Duration = Duration::from_millis(1);

fn is_injected(result: &Result<u32, BoxError>) -> bool {
    matches!(result, Err(err) if rejected(&**err).map(|r| r.kind()) == Some(RejectionKind::Injected))
}

async fn call<S: Service<u32, Response = u32, Error = BoxError>>(
    svc: &mut S,
    x: u32,
) -> Result<u32, BoxError> {
    svc.ready().await?.call(x).await
}

#[tokio::test(start_paused = true)]
async fn disabled_layer_passes_every_call_until_enabled() {
    let layer = ChaosLayer::builder()
        .faults(Faults::errors(1.0))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(echo());
    assert_eq!(call(&mut svc, 1).await.unwrap(), 1);
    handle.enable();
    assert!(is_injected(&call(&mut svc, 2).await));
    handle.disable();
    assert_eq!(call(&mut svc, 3).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn injected_errors_are_rejections_and_are_counted() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| {
        ChaosLayer::builder()
            .name("db")
            .enabled(true)
            .faults(Faults::errors(1.0))
            .build()
            .unwrap()
    });
    let mut svc = layer.layer(echo());
    for i in 0..3 {
        let err = call(&mut svc, i).await.unwrap_err();
        let rejection = rejected(&*err).unwrap();
        assert_eq!(rejection.kind(), RejectionKind::Injected);
        assert_eq!(rejection.name(), "db");
    }
    let labels = [("name", "db"), ("fault", "error")];
    assert_eq!(recorder.counter("seawall_chaos_injected_total", &labels), 3);
}

#[tokio::test(start_paused = true)]
async fn fixed_latency_holds_the_answer_for_exactly_that_long() {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .latency(Latency::Fixed { value: 10 * MS })
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let mut fut = task::spawn(svc.call(7));
    assert_pending!(fut.poll());
    advance(9 * MS).await;
    assert_pending!(fut.poll());
    advance(MS).await;
    assert_eq!(assert_ready!(fut.poll()).unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn uniform_and_long_tail_latencies_stay_in_their_bounds() {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .latency(Latency::Uniform {
            min: 8 * MS,
            max: 12 * MS,
        })
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    for i in 0..50 {
        let start = tokio::time::Instant::now();
        call(&mut svc, i).await.unwrap();
        let took = start.elapsed();
        assert!(took >= 8 * MS && took <= 13 * MS, "{took:?}");
    }
    let layer = ChaosLayer::builder()
        .enabled(true)
        .latency(Latency::LongTail {
            median: 10 * MS,
            p99: 100 * MS,
        })
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let start = tokio::time::Instant::now();
    call(&mut svc, 1).await.unwrap();
    assert!(start.elapsed() > Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_hang_never_returns() {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .faults(Faults::hangs(1.0))
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let mut fut = task::spawn(svc.call(1));
    assert_pending!(fut.poll());
    advance(Duration::from_secs(3600)).await;
    assert_pending!(fut.poll());
}

#[tokio::test(start_paused = true)]
async fn outage_phase_follows_the_virtual_clock() {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .outage(Duration::from_secs(20), Duration::from_secs(30))
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    assert!(call(&mut svc, 1).await.is_ok());
    advance(Duration::from_secs(20)).await;
    assert!(is_injected(&call(&mut svc, 2).await));
    advance(Duration::from_millis(9_999)).await;
    assert!(is_injected(&call(&mut svc, 3).await));
    advance(MS).await;
    assert!(call(&mut svc, 4).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn flapping_goes_down_and_up_on_its_cycle() {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .flapping(Flapping {
            start: Duration::from_secs(1),
            down: Duration::from_secs(5),
            up: Duration::from_secs(5),
            cycles: 2,
            faults: Faults::errors(1.0),
        })
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let mut seen = Vec::new();
    for _ in 0..24 {
        seen.push(call(&mut svc, 0).await.is_ok());
        advance(Duration::from_secs(1)).await;
    }
    // t = 0: up; 1..6 down; 6..11 up; 11..16 down; then up for good.
    let down: Vec<usize> = (0..24).filter(|&t| !seen[t]).collect();
    assert_eq!(down, [1, 2, 3, 4, 5, 11, 12, 13, 14, 15]);
}

#[tokio::test(start_paused = true)]
async fn chosen_responses_replace_the_inner_answer() {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .faults(Faults::responses(1.0))
        .build()
        .unwrap()
        .respond_with(|x: &u32| x + 1000);
    let mut svc = layer.layer(echo());
    assert_eq!(call(&mut svc, 5).await.unwrap(), 1005);
}

#[tokio::test(start_paused = true)]
async fn a_predicate_targets_only_the_calls_it_picks() {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .faults(Faults::errors(1.0))
        .build()
        .unwrap()
        .target(|x: &u32| x.is_multiple_of(3));
    let mut svc = layer.layer(echo());
    for x in 0..9 {
        assert_eq!(
            call(&mut svc, x).await.is_err(),
            x.is_multiple_of(3),
            "call {x}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn slow_calls_get_their_extra_delay() {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .faults(Faults::slow(1.0, Latency::Fixed { value: 2000 * MS }))
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let mut fut = task::spawn(svc.call(1));
    assert_pending!(fut.poll());
    advance(1999 * MS).await;
    assert_pending!(fut.poll());
    advance(MS).await;
    assert!(assert_ready!(fut.poll()).is_ok());
}

async fn outcomes(seed: u64) -> Vec<bool> {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .seed(seed)
        .faults(Faults::errors(0.5))
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let mut seen = Vec::new();
    for i in 0..64 {
        seen.push(call(&mut svc, i).await.is_ok());
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_injects_the_same_faults() {
    let a = outcomes(9).await;
    assert_eq!(a, outcomes(9).await);
    assert_ne!(a, outcomes(10).await);
    let failures = a.iter().filter(|ok| !**ok).count();
    assert!((16..48).contains(&failures), "{failures}");
}

#[tokio::test(start_paused = true)]
async fn the_capacity_model_queues_calls_in_order() {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .latency(Latency::Fixed { value: 10 * MS })
        .capacity(Capacity::workers(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(echo());
    let mut calls: Vec<_> = (0..3).map(|i| task::spawn(svc.call(i))).collect();
    assert_eq!(handle.queued(), 2);
    for (i, fut) in calls.iter_mut().enumerate() {
        assert_pending!(fut.poll());
        advance(10 * MS).await;
        assert_eq!(assert_ready!(fut.poll()).unwrap(), i as u32);
    }
    assert_eq!(handle.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_and_a_long_queue_degrades() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| {
        ChaosLayer::builder()
            .name("sim")
            .enabled(true)
            .latency(Latency::Fixed { value: 10 * MS })
            .capacity(Capacity::workers(1).queue_limit(2).degrade_above(0, 0.5))
            .build()
            .unwrap()
    });
    let mut svc = layer.layer(echo());
    let mut first = task::spawn(svc.call(0));
    let mut second = task::spawn(svc.call(1));
    let mut third = task::spawn(svc.call(2));
    let fourth = svc.call(3).await;
    assert!(is_injected(&fourth));
    assert_eq!(
        recorder.counter(
            "seawall_chaos_injected_total",
            &[("name", "sim"), ("fault", "queue_full")]
        ),
        1
    );
    assert_pending!(first.poll());
    advance(10 * MS).await;
    assert!(assert_ready!(first.poll()).is_ok());
    advance(10 * MS).await;
    assert!(assert_ready!(second.poll()).is_ok());
    // The third arrived with one call waiting, more than `degrade_above`: half speed.
    advance(10 * MS).await;
    assert_pending!(third.poll());
    advance(10 * MS).await;
    assert!(assert_ready!(third.poll()).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_still_holds_its_worker_as_a_real_server_would() {
    let layer = ChaosLayer::builder()
        .enabled(true)
        .latency(Latency::Fixed { value: 10 * MS })
        .capacity(Capacity::workers(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(echo());
    drop(svc.call(0));
    // The server never learns that its caller gave up: the next call waits for the first.
    let mut second = task::spawn(svc.call(1));
    assert_eq!(handle.queued(), 1);
    advance(19 * MS).await;
    assert_pending!(second.poll());
    advance(MS).await;
    assert!(assert_ready!(second.poll()).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clones_on_many_threads_share_one_injector() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| {
        ChaosLayer::builder()
            .name("stress")
            .enabled(true)
            .faults(Faults::errors(0.5))
            .build()
            .unwrap()
    });
    let svc = layer.layer(echo());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                let mut failed = 0u64;
                for i in 0..500 {
                    failed += u64::from(call(&mut svc, i).await.is_err());
                }
                failed
            })
        })
        .collect();
    let mut failed = 0;
    for task in tasks {
        failed += task.await.unwrap();
    }
    let labels = [("name", "stress"), ("fault", "error")];
    assert_eq!(
        recorder.counter("seawall_chaos_injected_total", &labels),
        failed
    );
    assert!((1000..3000).contains(&failed), "{failed}");
}

#[tokio::test(start_paused = true)]
async fn the_hook_hears_every_injection_and_phases_count_from_the_epoch_given() {
    use std::sync::{Arc, Mutex};

    use seawall_chaos::Fault;

    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let epoch = tokio::time::Instant::now() + Duration::from_secs(5);
    let layer = ChaosLayer::builder()
        .name("hooked")
        .enabled(true)
        .outage(Duration::ZERO, Duration::from_secs(1))
        .build()
        .unwrap()
        .starting_at(epoch)
        .on_injected(move |event| {
            log.lock()
                .unwrap()
                .push((event.name.to_owned(), event.fault))
        });
    let mut svc = layer.layer(echo());
    // Before the epoch nothing is due; from it, the outage runs for a second.
    assert!(call(&mut svc, 1).await.is_ok());
    advance(Duration::from_secs(5)).await;
    assert!(is_injected(&call(&mut svc, 2).await));
    advance(Duration::from_secs(1)).await;
    assert!(call(&mut svc, 3).await.is_ok());
    assert_eq!(
        *heard.lock().unwrap(),
        [("hooked".to_owned(), Fault::Error)]
    );
}
