//! Direct (unkeyed) rate limit behaviour on the paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use seawall_core::testing::{TestRecorder, paused_runtime};
use seawall_core::{BoxError, RejectionKind, rejected};
use seawall_rate_limit::{Quota, RateLimitLayer};
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, task};
use tower::{Layer, Service, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn layer(quota: Quota) -> RateLimitLayer {
    RateLimitLayer::builder()
        .name("api")
        .quota(quota)
        .build()
        .unwrap()
}

fn waiting_layer(quota: Quota, max_wait: Duration) -> RateLimitLayer {
    RateLimitLayer::builder()
        .name("api")
        .quota(quota)
        .max_wait(max_wait)
        .build()
        .unwrap()
}

type Echo = tower::util::ServiceFn<fn(u32) -> std::future::Ready<Result<u32, BoxError>>>;

fn echo() -> Echo {
    service_fn(|n| std::future::ready(Ok(n)))
}

/// The `retry_after` of a rate-limit rejection, or `None` when the call succeeded.
fn outcome(result: Result<u32, BoxError>) -> Option<Duration> {
    match result {
        Ok(_) => None,
        Err(err) => {
            let rejection = rejected(&*err).expect("a rate limit rejection");
            assert_eq!(rejection.kind(), RejectionKind::RateLimited);
            assert_eq!(rejection.name(), "api");
            Some(rejection.retry_after().expect("a rate limit knows when"))
        }
    }
}

async fn try_call<S>(svc: &mut S) -> Option<Duration>
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    outcome(svc.ready().await.unwrap().call(7).await)
}

fn calls(recorder: &TestRecorder, result: &str) -> u64 {
    recorder.counter(
        "seawall_rate_limit_calls_total",
        &[("name", "api"), ("result", result)],
    )
}

#[tokio::test(start_paused = true)]
async fn admits_the_rate_plus_the_burst_over_ten_virtual_seconds() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| layer(Quota::per_second(100).with_burst(10)));
    let mut svc = layer.layer(echo());
    let mut permitted = 0;
    // Three calls every millisecond, from 0 s to 10 s inclusive: far more than the quota.
    for tick in 0..=10_000 {
        for _ in 0..3 {
            if try_call(&mut svc).await.is_none() {
                permitted += 1;
            }
        }
        if tick < 10_000 {
            advance(ms(1)).await;
        }
    }
    assert!(
        (1009..=1011).contains(&permitted),
        "1000 + 10 (± 1) permitted, got {permitted}"
    );
    assert_eq!(calls(&recorder, "permitted"), permitted);
    assert_eq!(calls(&recorder, "rejected"), 3 * 10_001 - permitted);
    assert_eq!(calls(&recorder, "waited"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_burst_passes_at_once_then_one_permit_per_interval() {
    let mut svc = layer(Quota::per_second(10).with_burst(3)).layer(echo());
    for _ in 0..3 {
        assert_eq!(try_call(&mut svc).await, None);
    }
    assert_eq!(try_call(&mut svc).await, Some(ms(100)));
    advance(ms(99)).await;
    assert_eq!(try_call(&mut svc).await, Some(ms(1)));
    advance(ms(1)).await;
    assert_eq!(try_call(&mut svc).await, None);
    assert_eq!(try_call(&mut svc).await, Some(ms(100)));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_the_time_until_the_next_permit() {
    let mut svc = layer(Quota::per_minute(2).with_burst(1)).layer(echo());
    assert_eq!(try_call(&mut svc).await, None);
    assert_eq!(try_call(&mut svc).await, Some(Duration::from_secs(30)));
    advance(Duration::from_secs(12)).await;
    assert_eq!(try_call(&mut svc).await, Some(Duration::from_secs(18)));
    advance(Duration::from_secs(18)).await;
    assert_eq!(try_call(&mut svc).await, None);
}

#[tokio::test(start_paused = true)]
async fn every_service_and_clone_of_a_layer_shares_one_bucket() {
    let layer = layer(Quota::per_second(1).with_burst(2));
    let mut a = layer.layer(echo());
    let mut b = layer.clone().layer(echo());
    let mut c = a.clone();
    assert_eq!(try_call(&mut a).await, None);
    assert_eq!(try_call(&mut b).await, None);
    assert!(try_call(&mut c).await.is_some());
}

#[tokio::test(start_paused = true)]
async fn waits_for_a_permit_up_to_max_wait() {
    let recorder = TestRecorder::new();
    let layer =
        recorder.install_for(|| waiting_layer(Quota::per_second(10).with_burst(1), ms(250)));
    let mut svc = layer.layer(echo());
    assert_eq!(try_call(&mut svc).await, None);

    let mut call = task::spawn(svc.ready().await.unwrap().call(1));
    assert_pending!(call.poll());
    advance(ms(99)).await;
    assert_pending!(call.poll());
    advance(ms(1)).await;
    assert!(call.is_woken());
    assert_eq!(assert_ready!(call.poll()).unwrap(), 1);
    assert_eq!(calls(&recorder, "permitted"), 1);
    assert_eq!(calls(&recorder, "waited"), 1);
}

#[tokio::test(start_paused = true)]
async fn rejects_at_once_when_the_wait_would_pass_max_wait() {
    let recorder = TestRecorder::new();
    let layer = recorder.install_for(|| waiting_layer(Quota::per_second(1).with_burst(1), ms(250)));
    let mut svc = layer.layer(echo());
    assert_eq!(try_call(&mut svc).await, None);
    let mut call = task::spawn(svc.ready().await.unwrap().call(1));
    assert_eq!(
        outcome(assert_ready!(call.poll())),
        Some(Duration::from_secs(1))
    );
    assert_eq!(calls(&recorder, "rejected"), 1);
    assert_eq!(calls(&recorder, "waited"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_loses_its_permit_waits_again_within_max_wait() {
    let layer = waiting_layer(Quota::per_second(10).with_burst(1), ms(250));
    let mut svc = layer.layer(echo());
    let mut other = layer.layer(echo());
    assert_eq!(try_call(&mut svc).await, None);
    let mut call = task::spawn(svc.ready().await.unwrap().call(1));
    assert_pending!(call.poll());
    advance(ms(100)).await;
    // Another caller takes the permit before the waiter is polled.
    assert_eq!(try_call(&mut other).await, None);
    assert_pending!(call.poll());
    advance(ms(99)).await;
    assert_pending!(call.poll());
    advance(ms(1)).await;
    assert_eq!(assert_ready!(call.poll()).unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_loses_its_permit_gives_up_at_max_wait() {
    let recorder = TestRecorder::new();
    let layer =
        recorder.install_for(|| waiting_layer(Quota::per_second(10).with_burst(1), ms(150)));
    let mut svc = layer.layer(echo());
    let mut other = layer.layer(echo());
    assert_eq!(try_call(&mut svc).await, None);
    let mut call = task::spawn(svc.ready().await.unwrap().call(1));
    assert_pending!(call.poll());
    advance(ms(100)).await;
    assert_eq!(try_call(&mut other).await, None);
    assert_eq!(outcome(assert_ready!(call.poll())), Some(ms(100)));
    assert_eq!(calls(&recorder, "permitted"), 2);
    assert_eq!(calls(&recorder, "rejected"), 1);
    assert_eq!(calls(&recorder, "waited"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiting_call_takes_no_permit_and_records_nothing() {
    let recorder = TestRecorder::new();
    let layer =
        recorder.install_for(|| waiting_layer(Quota::per_second(10).with_burst(1), ms(250)));
    let mut svc = layer.layer(echo());
    assert_eq!(try_call(&mut svc).await, None);
    let mut call = task::spawn(svc.ready().await.unwrap().call(1));
    assert_pending!(call.poll());
    drop(call);
    advance(ms(100)).await;
    let mut probe = layer.layer(echo());
    assert_eq!(
        try_call(&mut probe).await,
        None,
        "the permit the dropped call waited for is still there"
    );
    assert_eq!(calls(&recorder, "permitted"), 2);
    assert_eq!(calls(&recorder, "waited"), 0);
    assert_eq!(calls(&recorder, "rejected"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_reaches_the_inner_service_only_with_its_permit() {
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    let layer = waiting_layer(Quota::per_second(10).with_burst(1), ms(250));
    let mut svc = layer.layer(mock);
    handle.allow(2);

    let first = svc.ready().await.unwrap().call(1);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, 1);
    send.send_response(10);
    assert_eq!(first.await.unwrap(), 10);

    let mut second = task::spawn(svc.ready().await.unwrap().call(2));
    assert_pending!(second.poll());
    let mut next = task::spawn(handle.next_request());
    assert_pending!(next.poll(), "the inner service has not been called");
    advance(ms(100)).await;
    assert_pending!(second.poll());
    let (req, send) = assert_ready!(next.poll()).unwrap();
    assert_eq!(req, 2);
    send.send_response(20);
    assert_eq!(assert_ready!(second.poll()).unwrap(), 20);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_waits_for_the_inner_service_never_for_the_limit() {
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    let mut svc = layer(Quota::per_minute(1).with_burst(1)).layer(mock);
    handle.allow(0);
    let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_pending!(ready.poll());
    handle.allow(3);
    assert!(assert_ready!(ready.poll()).is_ok());
    drop(ready);
    let _first = svc.call(1);
    // The quota is spent, and the service is still ready: the rejection comes from `call`.
    let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert!(assert_ready!(ready.poll()).is_ok());
    drop(ready);
    let err = svc.call(2).await.unwrap_err();
    assert_eq!(
        rejected(&*err).map(|r| r.kind()),
        Some(RejectionKind::RateLimited)
    );
}

#[derive(Debug, PartialEq)]
struct DownstreamError(&'static str);

impl std::fmt::Display for DownstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DownstreamError {}

#[tokio::test(start_paused = true)]
async fn the_inner_error_passes_through_downcastable() {
    let svc = layer(Quota::per_second(1)).layer(service_fn(|()| async {
        Err::<(), _>(DownstreamError("refused"))
    }));
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(rejected(&*err).is_none());
    assert_eq!(
        err.downcast_ref::<DownstreamError>(),
        Some(&DownstreamError("refused"))
    );
}

#[tokio::test(start_paused = true)]
async fn hooks_hear_rejections_and_waits() {
    let rejections = Arc::new(Mutex::new(Vec::new()));
    let waits = Arc::new(AtomicUsize::new(0));
    let (heard, counted) = (rejections.clone(), waits.clone());
    let layer = waiting_layer(Quota::per_second(10).with_burst(1), ms(100))
        .on_rejected(move |event| {
            assert_eq!(event.name, "api");
            heard.lock().unwrap().push(event.retry_after);
        })
        .on_waited(move |event| {
            assert_eq!(event.waited, ms(100));
            counted.fetch_add(1, Ordering::SeqCst);
        });
    let mut svc = layer.layer(echo());
    assert_eq!(try_call(&mut svc).await, None);
    assert_eq!(try_call(&mut svc).await, None, "waited 100 ms");
    let mut second = layer.layer(echo());
    assert_eq!(try_call(&mut second).await, None, "waited 100 ms");
    // Waiting reserves nothing: whoever checks first once the permit is back takes it, and a
    // waiter left without one gives up when its deadline is near.
    let mut a = task::spawn(svc.ready().await.unwrap().call(1));
    assert_pending!(a.poll());
    assert_eq!(try_call(&mut second).await, None, "waited 100 ms");
    assert_eq!(outcome(assert_ready!(a.poll())), Some(ms(100)));
    assert_eq!(*rejections.lock().unwrap(), vec![ms(100)]);
    assert_eq!(waits.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn per_minute_quotas_spread_permits_over_the_minute() {
    let mut svc = layer(Quota::per_minute(6).with_burst(1)).layer(echo());
    let mut permitted = 0;
    for _ in 0..60 {
        if try_call(&mut svc).await.is_none() {
            permitted += 1;
        }
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(permitted, 6, "one every ten seconds");
}

#[tokio::test(start_paused = true)]
async fn deserialized_config_builds_the_same_limit() {
    let config: seawall_rate_limit::RateLimitConfig = serde_json::from_str(
        r#"{"name": "api", "quota": {"per_second": 10, "burst": 2}, "max_wait": "50ms"}"#,
    )
    .unwrap();
    let layer = RateLimitLayer::from(config);
    assert_eq!(layer.quota(), Quota::per_second(10).with_burst(2));
    let mut svc = layer.layer(echo());
    assert_eq!(try_call(&mut svc).await, None);
    assert_eq!(try_call(&mut svc).await, None);
    // The third waits 100 ms, past max_wait: rejected at once.
    assert_eq!(try_call(&mut svc).await, Some(ms(100)));
}

/// GCRA seen as a token bucket counted in nanoseconds of credit: an independent model.
struct Model {
    interval: u64,
    capacity: u64,
    credit: u64,
    at: u64,
}

impl Model {
    fn new(quota: Quota) -> Self {
        let interval = u64::try_from(quota.replenish_interval().as_nanos()).unwrap();
        let capacity = interval * u64::from(quota.burst());
        Self {
            interval,
            capacity,
            credit: capacity,
            at: 0,
        }
    }

    fn call(&mut self, now: u64) -> Option<Duration> {
        self.credit = (self.credit + (now - self.at)).min(self.capacity);
        self.at = now;
        if self.credit >= self.interval {
            self.credit -= self.interval;
            None
        } else {
            Some(Duration::from_nanos(self.interval - self.credit))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_a_token_bucket_model(
        rate in 1u32..2_000,
        burst in 1u32..50,
        steps in proptest::collection::vec((0u64..50_000_000, 0usize..5), 1..100),
    ) {
        let rt = paused_runtime();
        rt.block_on(async {
            let quota = Quota::per_second(rate).with_burst(burst);
            let mut svc = layer(quota).layer(echo());
            let mut model = Model::new(quota);
            let mut now = 0;
            for (gap, calls) in steps {
                advance(Duration::from_nanos(gap)).await;
                now += gap;
                for _ in 0..calls {
                    prop_assert_eq!(try_call(&mut svc).await, model.call(now));
                }
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_quota_that_validates_works_without_overflow(
        rate in 1u32..=1_000_000_000,
        burst in 1u32..=1_000_000_000,
        per_minute in any::<bool>(),
        gap_secs in 0u64..1_000_000,
    ) {
        let quota = if per_minute { Quota::per_minute(rate) } else { Quota::per_second(rate) };
        let Ok(layer) = RateLimitLayer::builder().name("api").quota(quota.with_burst(burst)).build()
        else {
            // Rejected by validation: nothing to run.
            return Ok(());
        };
        let rt = paused_runtime();
        rt.block_on(async {
            let mut svc = layer.layer(echo());
            prop_assert_eq!(try_call(&mut svc).await, None, "the first call always passes");
            for _ in 0..3 {
                try_call(&mut svc).await;
            }
            advance(Duration::from_secs(gap_secs)).await;
            try_call(&mut svc).await;
            Ok(())
        })?;
    }
}

/// Threads calling one limiter far below its quota: a thread that read the clock before another
/// thread's last admission (preempted between the two, say) must not be refused for it. At one
/// call a nanosecond with a burst of one, such a stale reading finds the bucket's next arrival
/// ahead of it, and a fresh reading finds it passed (a refusal with `retry_after` zero). More
/// threads than cores, so that threads are preempted mid-call.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn contention_refuses_nothing_far_below_the_quota() {
    const TASKS: usize = 8;
    const CALLS: usize = 50_000;
    let echo = service_fn(|n: u32| std::future::ready(Ok::<u32, std::convert::Infallible>(n)));
    let svc = layer(Quota::per_second(1_000_000_000).with_burst(1)).layer(echo);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let mut svc = svc.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let mut refused = Vec::new();
                for _ in 0..CALLS {
                    if let Err(err) = svc.ready().await.unwrap().call(7).await {
                        refused.push(rejected(&*err).and_then(|r| r.retry_after()));
                    }
                }
                refused
            })
        })
        .collect();
    for task in tasks {
        let refused = task.await.unwrap();
        assert!(
            refused.is_empty(),
            "{} of {CALLS} calls refused, retry_after {:?}",
            refused.len(),
            &refused[..refused.len().min(5)]
        );
    }
}
