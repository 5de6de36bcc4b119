//! Outlier ejection on tokio's paused clock.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use seawall_core::testing::TestRecorder;
use seawall_core::{BoxError, Rejected, RejectionKind};
use seawall_outlier::{EjectionReason, Endpoint, NoProbe, OutlierLayer, SuccessRateConfig};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::Constant;
use tower::{Service, ServiceExt};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A backend whose calls fail while `failing` is set, and that counts its calls.
#[derive(Clone, Default)]
struct Backend {
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

impl Backend {
    fn failing() -> Self {
        let backend = Self::default();
        backend.fail(true);
        backend
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<u32> for Backend {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(match self.failing.load(Ordering::SeqCst) {
            true => Err("backend failed".into()),
            false => Ok(req),
        })
    }
}

type Ep = Endpoint<Backend, usize, seawall_core::classify::AnyError, NoProbe>;

fn layer() -> OutlierLayer<usize> {
    OutlierLayer::builder()
        .name("backends")
        .no_success_rate()
        .build()
        .unwrap()
}

/// Calls `endpoint` once, whatever it answers.
async fn call(endpoint: &mut Ep) -> Result<u32, BoxError> {
    endpoint.ready().await?.call(1).await
}

fn poll_ready(endpoint: &mut Ep) -> Poll<Result<(), BoxError>> {
    let mut task = tokio_test::task::spawn(());
    task.enter(|cx, _| endpoint.poll_ready(cx))
}

#[tokio::test(start_paused = true)]
async fn five_failures_in_a_row_eject_and_the_endpoint_returns_after_the_base_time() {
    let returned = Arc::new(Mutex::new(Vec::new()));
    let (layer, handle) = {
        let returned = returned.clone();
        layer()
            .on_returned(move |e| returned.lock().unwrap().push((*e.key, e.probed)))
            .pair()
    };
    let backend = Backend::failing();
    let mut bad = layer.endpoint(0, backend.clone());
    let _good = layer.endpoint(1, Backend::default());
    for _ in 0..4 {
        assert!(call(&mut bad).await.is_err());
    }
    assert!(!bad.is_ejected(), "four failures are not five");
    assert!(call(&mut bad).await.is_err());
    assert!(bad.is_ejected());
    assert_eq!(handle.ejected(), 1);
    assert_pending!(poll_ready(&mut bad));

    tokio::time::sleep(secs(29)).await;
    assert_pending!(poll_ready(&mut bad));
    tokio::time::sleep(secs(1)).await;
    assert_ready_ok!(poll_ready(&mut bad));
    assert_eq!(handle.ejected(), 0);
    assert_eq!(*returned.lock().unwrap(), [(0, false)]);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_count_of_failures_in_a_row() {
    let layer = layer();
    let backend = Backend::failing();
    let mut bad = layer.endpoint(0, backend.clone());
    let _good = layer.endpoint(1, Backend::default());
    for _ in 0..4 {
        let _ = call(&mut bad).await;
    }
    backend.fail(false);
    call(&mut bad).await.unwrap();
    backend.fail(true);
    for _ in 0..4 {
        let _ = call(&mut bad).await;
    }
    assert!(!bad.is_ejected());
}

#[tokio::test(start_paused = true)]
async fn repeated_ejections_last_longer_up_to_the_max_and_decay_while_in() {
    let durations = Arc::new(Mutex::new(Vec::new()));
    let layer = {
        let durations = durations.clone();
        OutlierLayer::builder()
            .no_success_rate()
            .consecutive_failures(1)
            .base_ejection_time(secs(30))
            .max_ejection_time(secs(70))
            .interval(secs(10))
            .build()
            .unwrap()
            .on_ejected(move |e| durations.lock().unwrap().push((e.duration, e.ejections)))
    };
    let mut bad = layer.endpoint(0, Backend::failing());
    let _good = layer.endpoint(1, Backend::default());
    let eject_and_return = async |bad: &mut Ep| {
        let _ = call(bad).await;
        assert!(bad.is_ejected());
        bad.ready().await.unwrap();
    };
    eject_and_return(&mut bad).await;
    eject_and_return(&mut bad).await;
    eject_and_return(&mut bad).await;
    // Two intervals in take two ejections off: the next is the second in a row again.
    tokio::time::sleep(secs(25)).await;
    eject_and_return(&mut bad).await;
    assert_eq!(
        *durations.lock().unwrap(),
        [(secs(30), 1), (secs(60), 2), (secs(70), 3), (secs(60), 2)]
    );
}

#[tokio::test(start_paused = true)]
async fn success_rate_ejects_the_endpoint_far_below_its_peers() {
    let recorder = TestRecorder::new();
    let (layer, handle) = recorder.install_for(|| {
        OutlierLayer::<usize>::builder()
            .name("backends")
            .no_consecutive_failures()
            .success_rate(SuccessRateConfig::new())
            .build()
            .unwrap()
            .pair()
    });
    let flaky = Backend::default();
    let mut endpoints: Vec<Ep> = (0..6)
        .map(|i| {
            layer.endpoint(
                i,
                if i == 0 {
                    flaky.clone()
                } else {
                    Backend::default()
                },
            )
        })
        .collect();
    // 120 calls to each in the first interval; every other one to the first fails.
    for round in 0..120 {
        flaky.fail(round % 2 == 0);
        for endpoint in endpoints.iter_mut() {
            let _ = call(endpoint).await;
        }
    }
    assert_eq!(
        handle.ejected(),
        0,
        "compared only once the interval is over"
    );
    tokio::time::sleep(secs(10)).await;
    flaky.fail(true);
    let _ = call(&mut endpoints[0]).await;
    assert!(endpoints[0].is_ejected());
    assert_eq!(handle.ejected(), 1);
    let labels = [("name", "backends"), ("reason", "success_rate")];
    assert_eq!(
        recorder.counter("seawall_outlier_ejections_total", &labels),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn success_rates_are_not_compared_with_too_few_endpoints_or_calls() {
    let (layer, handle) = OutlierLayer::<usize>::builder()
        .no_consecutive_failures()
        .build()
        .unwrap()
        .pair();
    let flaky = Backend::failing();
    // Four endpoints: fewer than the five a comparison needs.
    let mut endpoints: Vec<Ep> = (0..4)
        .map(|i| {
            layer.endpoint(
                i,
                if i == 0 {
                    flaky.clone()
                } else {
                    Backend::default()
                },
            )
        })
        .collect();
    for _ in 0..200 {
        for endpoint in endpoints.iter_mut() {
            let _ = call(endpoint).await;
        }
    }
    tokio::time::sleep(secs(10)).await;
    let _ = call(&mut endpoints[0]).await;
    assert_eq!(handle.ejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn at_most_the_share_cap_is_ejected_and_the_rest_is_skipped() {
    let recorder = TestRecorder::new();
    let skipped = Arc::new(AtomicU32::new(0));
    let (layer, handle) = recorder.install_for(|| {
        let skipped = skipped.clone();
        layer()
            .on_skipped(move |e| {
                assert_eq!(e.reason, EjectionReason::ConsecutiveFailures);
                skipped.fetch_add(1, Ordering::SeqCst);
            })
            .pair()
    });
    let mut endpoints: Vec<Ep> = (0..5)
        .map(|i| layer.endpoint(i, Backend::failing()))
        .collect();
    for _ in 0..5 {
        for endpoint in endpoints.iter_mut() {
            if !endpoint.is_ejected() {
                let _ = call(endpoint).await;
            }
        }
    }
    assert_eq!(handle.max_ejected(), 2);
    assert_eq!(handle.ejected(), 2);
    assert_eq!(endpoints.iter().filter(|e| e.is_ejected()).count(), 2);
    assert_eq!(skipped.load(Ordering::SeqCst), 3);
    let labels = [("name", "backends")];
    assert_eq!(
        recorder.counter("seawall_outlier_ejections_skipped_total", &labels),
        3
    );
    assert_eq!(
        recorder.gauge("seawall_outlier_ejected", &labels),
        Some(2.0)
    );
    assert_eq!(
        recorder.gauge("seawall_outlier_endpoints", &labels),
        Some(5.0)
    );
}

/// Five endpoints, the first four failing: the cap ejects two and keeps the other two in.
async fn four_of_five_failing(layer: &OutlierLayer<usize>) -> (Vec<Ep>, Vec<Backend>) {
    let backends: Vec<Backend> = (0..5)
        .map(|i| {
            if i < 4 {
                Backend::failing()
            } else {
                Backend::default()
            }
        })
        .collect();
    let mut endpoints: Vec<Ep> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| layer.endpoint(i, b.clone()))
        .collect();
    for _ in 0..5 {
        for endpoint in endpoints.iter_mut().take(4) {
            if !endpoint.is_ejected() {
                let _ = call(endpoint).await;
            }
        }
    }
    let ejected: Vec<bool> = endpoints.iter().map(Ep::is_ejected).collect();
    assert_eq!(ejected, [true, true, false, false, false]);
    (endpoints, backends)
}

#[tokio::test(start_paused = true)]
async fn the_ejected_return_once_an_endpoint_the_cap_kept_in_recovers() {
    let (layer, handle) = layer().pair();
    let (mut endpoints, backends) = four_of_five_failing(&layer).await;
    tokio::time::sleep(secs(10)).await;
    // The fault ends everywhere; endpoint 2, kept in by the cap, answers again.
    for backend in &backends {
        backend.fail(false);
    }
    for _ in 0..4 {
        call(&mut endpoints[2]).await.unwrap();
    }
    assert_pending!(
        poll_ready(&mut endpoints[0]),
        "four successes are not yet a run"
    );
    call(&mut endpoints[2]).await.unwrap();
    // Five in a row, the run that ejects: the two ejected 20 s before their time.
    assert_ready_ok!(poll_ready(&mut endpoints[0]));
    assert_ready_ok!(poll_ready(&mut endpoints[1]));
    assert_eq!(handle.ejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn one_called_back_while_still_failing_serves_out_its_ejection_no_longer() {
    let (layer, handle) = layer().pair();
    let (mut endpoints, backends) = four_of_five_failing(&layer).await;
    tokio::time::sleep(secs(10)).await;
    // Endpoint 2 recovers; 0 and 1, called back, still fail.
    backends[2].fail(false);
    for _ in 0..5 {
        call(&mut endpoints[2]).await.unwrap();
    }
    assert_eq!(handle.ejected(), 0);
    for _ in 0..5 {
        let _ = call(&mut endpoints[0]).await;
    }
    // Out again until the end its first ejection had, 20 s from now, not for a second one.
    assert_eq!(handle.endpoints()[0].ejected_for, Some(secs(20)));
    assert_eq!(handle.endpoints()[0].ejections, 1);
    // Endpoint 3, kept in, recovers too: endpoint 0 is not called back a second time.
    backends[3].fail(false);
    for _ in 0..5 {
        call(&mut endpoints[3]).await.unwrap();
    }
    assert!(endpoints[0].is_ejected());
    tokio::time::sleep(secs(20)).await;
    assert_ready_ok!(poll_ready(&mut endpoints[0]));
}

#[tokio::test(start_paused = true)]
async fn a_failure_breaks_the_run_and_a_forced_ejection_is_not_called_back() {
    let (layer, handle) = layer().pair();
    let (mut endpoints, backends) = four_of_five_failing(&layer).await;
    assert!(handle.eject(&4));
    backends[2].fail(false);
    for _ in 0..4 {
        call(&mut endpoints[2]).await.unwrap();
    }
    backends[2].fail(true);
    let _ = call(&mut endpoints[2]).await;
    backends[2].fail(false);
    for _ in 0..4 {
        call(&mut endpoints[2]).await.unwrap();
    }
    assert_pending!(
        poll_ready(&mut endpoints[0]),
        "a failure starts the run again"
    );
    call(&mut endpoints[2]).await.unwrap();
    assert_ready_ok!(poll_ready(&mut endpoints[0]));
    assert_ready_ok!(poll_ready(&mut endpoints[1]));
    assert!(endpoints[4].is_ejected(), "a handle's ejection stays");
    assert_eq!(handle.ejected(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_ejection_whose_time_is_up_frees_its_place_under_the_cap() {
    let (layer, handle) = layer().pair();
    let mut a = layer.endpoint(0, Backend::failing());
    let mut b = layer.endpoint(1, Backend::failing());
    let _c = layer.endpoint(2, Backend::default());
    for _ in 0..5 {
        let _ = call(&mut a).await;
    }
    assert_eq!(handle.ejected(), 1, "one of three at most");
    tokio::time::sleep(secs(30)).await;
    // Nobody asked `a` whether it is ready, yet its place is free.
    for _ in 0..5 {
        let _ = call(&mut b).await;
    }
    assert!(b.is_ejected());
    assert!(!a.is_ejected());
}

#[tokio::test(start_paused = true)]
async fn p2c_never_picks_an_ejected_endpoint_while_another_is_ready() {
    let (layer, handle) = OutlierLayer::<usize>::builder()
        .max_ejected_share(0.6)
        .build()
        .unwrap()
        .pair();
    let backends: Vec<Backend> = (0..5).map(|_| Backend::default()).collect();
    let list = ServiceList::new(backends.iter().map(|b| Constant::new(b.clone(), 0)));
    let mut balance = Balance::new(tower::Layer::layer(&layer, list));
    balance.ready().await.unwrap();
    assert_eq!(handle.len(), 5);
    assert!(handle.eject(&1));
    assert!(handle.eject(&3));
    for n in 0..1000 {
        assert_eq!(balance.ready().await.unwrap().call(n).await.unwrap(), n);
    }
    assert_eq!((backends[1].calls(), backends[3].calls()), (0, 0));
    for i in [0, 2, 4] {
        assert!(backends[i].calls() > 200, "{i}: {}", backends[i].calls());
    }
    assert!(handle.restore(&1));
    for n in 0..200 {
        balance.ready().await.unwrap().call(n).await.unwrap();
    }
    assert!(backends[1].calls() > 0, "back in the rotation");
    assert_eq!(backends[3].calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_probe_decides_whether_an_ejected_endpoint_returns() {
    let probes = Arc::new(AtomicU32::new(0));
    let returned = Arc::new(Mutex::new(Vec::new()));
    let (layer, handle) = {
        let probes = probes.clone();
        let returned = returned.clone();
        layer()
            .probe(move |key: &usize| {
                probes.fetch_add(1, Ordering::SeqCst);
                1000 + *key as u32
            })
            .on_returned(move |e| returned.lock().unwrap().push(e.probed))
            .pair()
    };
    let backend = Backend::failing();
    let mut bad = layer.endpoint(0, backend.clone());
    let _good = layer.endpoint(1, Backend::default());
    for _ in 0..5 {
        let _ = bad.ready().await.unwrap().call(1).await;
    }
    assert!(bad.is_ejected());
    // The time is up, the probe fails: ejected again, for twice as long.
    tokio::time::sleep(secs(30)).await;
    assert_pending!(poll_ready_probed(&mut bad));
    assert_eq!(probes.load(Ordering::SeqCst), 1);
    assert!(bad.is_ejected());
    let status = &handle.endpoints()[0];
    assert_eq!(status.ejections, 2);
    assert_eq!(status.ejected_for, Some(secs(60)));
    // Then the backend recovers and the next probe passes.
    backend.fail(false);
    tokio::time::sleep(secs(60)).await;
    assert!(matches!(poll_ready_probed(&mut bad), Poll::Ready(Ok(()))));
    assert_eq!(probes.load(Ordering::SeqCst), 2);
    assert!(!bad.is_ejected());
    assert_eq!(*returned.lock().unwrap(), [true]);
}

fn poll_ready_probed<S: Service<u32>>(endpoint: &mut S) -> Poll<Result<(), S::Error>> {
    let mut task = tokio_test::task::spawn(());
    task.enter(|cx, _| endpoint.poll_ready(cx))
}

/// Fails every call with a rejection of `kind`, as a full bulkhead further in would.
#[derive(Clone)]
struct Rejecting(RejectionKind);

impl Service<u32> for Rejecting {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        std::future::ready(Err(Rejected::new(self.0, "inner").into()))
    }
}

#[tokio::test(start_paused = true)]
async fn rejections_from_further_in_are_no_failures_of_the_endpoint_but_timeouts_are() {
    let (layer, handle) = layer().pair();
    let mut shedding = layer.endpoint(0, Rejecting(RejectionKind::BulkheadFull));
    let mut slow = layer.endpoint(1, Rejecting(RejectionKind::TimedOut));
    let _good = layer.endpoint(2, Backend::default());
    for _ in 0..10 {
        let _ = shedding.ready().await.unwrap().call(1).await;
    }
    assert!(!shedding.is_ejected());
    for _ in 0..5 {
        let _ = slow.ready().await.unwrap().call(1).await;
    }
    assert!(slow.is_ejected());
    assert_eq!(handle.ejected(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_endpoint_leaves_the_set_and_frees_its_place() {
    let recorder = TestRecorder::new();
    let (layer, handle) = recorder.install_for(|| layer().pair());
    let mut a = layer.endpoint(0, Backend::failing());
    let b = layer.endpoint(1, Backend::default());
    let _c = layer.endpoint(2, Backend::default());
    for _ in 0..5 {
        let _ = call(&mut a).await;
    }
    assert_eq!((handle.len(), handle.ejected()), (3, 1));
    drop(a);
    drop(b);
    assert_eq!((handle.len(), handle.ejected()), (1, 0));
    let labels = [("name", "backends")];
    assert_eq!(
        recorder.gauge("seawall_outlier_endpoints", &labels),
        Some(1.0)
    );
    assert_eq!(
        recorder.gauge("seawall_outlier_ejected", &labels),
        Some(0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn the_handle_lists_endpoints_and_forces_ejections_past_the_cap() {
    let ejected = Arc::new(Mutex::new(Vec::new()));
    let (layer, handle) = {
        let ejected = ejected.clone();
        layer()
            .on_ejected(move |e| ejected.lock().unwrap().push((*e.key, e.reason)))
            .pair()
    };
    let mut a = layer.endpoint(0, Backend::failing());
    let _b = layer.endpoint(1, Backend::default());
    for _ in 0..3 {
        let _ = call(&mut a).await;
    }
    let statuses = handle.endpoints();
    assert_eq!(statuses.len(), 2);
    assert_eq!((statuses[0].key, statuses[0].consecutive_failures), (0, 3));
    assert_eq!((statuses[0].successes, statuses[0].failures), (0, 3));
    assert_eq!(statuses[1].ejected_for, None);
    // One of two may be ejected by the detectors; a handle may eject both.
    assert!(handle.eject(&0));
    assert!(handle.eject(&1));
    assert!(!handle.eject(&1), "already out");
    assert!(!handle.eject(&7), "no such endpoint");
    assert_eq!(handle.ejected(), 2);
    assert_eq!(handle.endpoints()[1].ejected_for, Some(secs(30)));
    assert!(handle.restore(&0) && handle.restore(&1));
    assert_eq!(handle.ejected(), 0);
    assert_eq!(
        *ejected.lock().unwrap(),
        [(0, EjectionReason::Forced), (1, EjectionReason::Forced)]
    );
}

#[tokio::test(start_paused = true)]
async fn endpoint_labels_are_opt_in() {
    let recorder = TestRecorder::new();
    let labelled = recorder.install_for(|| {
        OutlierLayer::<&'static str>::builder()
            .name("labelled")
            .endpoint_labels(true)
            .build()
            .unwrap()
    });
    let _a = recorder.install_for(|| labelled.endpoint("10.0.0.1", Backend::default()));
    assert_eq!(
        recorder.gauge(
            "seawall_outlier_endpoint_ejected",
            &[("name", "labelled"), ("endpoint", "\"10.0.0.1\"")]
        ),
        Some(0.0)
    );
    let plain = recorder.install_for(|| {
        OutlierLayer::<&'static str>::builder()
            .name("plain")
            .build()
            .unwrap()
    });
    let _b = recorder.install_for(|| plain.endpoint("10.0.0.2", Backend::default()));
    assert_eq!(
        recorder.gauge("seawall_outlier_endpoint_ejected", &[("name", "plain")]),
        None
    );
    assert!(recorder.description("seawall_outlier_ejected").is_some());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_records_nothing() {
    let (layer, handle) = layer().pair();
    let mut slow = layer.endpoint(
        0,
        tower::service_fn(|_: u32| async {
            tokio::time::sleep(secs(60)).await;
            Err::<u32, BoxError>("late".into())
        }),
    );
    let _good = layer.endpoint(1, Backend::default());
    for _ in 0..10 {
        let call = slow.ready().await.unwrap().call(1);
        assert!(tokio::time::timeout(secs(1), call).await.is_err());
    }
    assert_eq!(handle.endpoints()[0].failures, 0);
    assert_eq!(handle.ejected(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_reload_applies_to_endpoints_made_before_it() {
    let (layer, handle) = layer().pair();
    let backend = Backend::failing();
    let mut bad = layer.endpoint(0, backend.clone());
    let _good = layer.endpoint(1, Backend::default());
    for _ in 0..2 {
        assert!(call(&mut bad).await.is_err());
    }
    assert!(!bad.is_ejected());

    let stricter = seawall_outlier::OutlierConfig::builder()
        .name("backends")
        .no_success_rate()
        .consecutive_failures(3)
        .base_ejection_time(secs(5))
        .build()
        .unwrap();
    handle.reload(stricter.clone()).unwrap();
    assert_eq!(handle.config(), stricter);
    assert!(call(&mut bad).await.is_err());
    assert!(bad.is_ejected(), "three failures in a row now eject");
    tokio::time::sleep(secs(5)).await;
    assert_ready_ok!(poll_ready(&mut bad));
    assert_eq!(handle.ejected(), 0, "back after the new base time");
}

#[tokio::test(start_paused = true)]
async fn a_reload_of_what_the_set_was_built_with_is_refused_and_changes_nothing() {
    let (_layer, handle) = layer().pair();
    let live = handle.config();
    let config = || {
        seawall_outlier::OutlierConfig::builder()
            .name("backends")
            .consecutive_failures(2)
    };
    let cases = [
        (config().name("others").build(), "name"),
        (config().endpoint_labels(true).build(), "endpoint_labels"),
    ];
    for (config, field) in cases {
        let config = config.unwrap();
        assert_eq!(handle.check_reload(&config).unwrap_err().field(), field);
        assert_eq!(handle.reload(config).unwrap_err().field(), field);
        assert_eq!(handle.config(), live);
    }
}
