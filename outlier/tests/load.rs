//! p2c over real endpoints ranked by their own load, on tokio's paused clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use seawall_core::BoxError;
use seawall_core::classify::AnyError;
use seawall_outlier::{NoProbe, OutlierLayer};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::util::rng::Rng;
use tower::{Layer, Service, ServiceExt};

/// A backend that answers after its latency (or fails at once while `failing`), and counts
/// its calls.
#[derive(Clone, Default)]
struct Backend {
    latency_ms: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
}

impl Backend {
    fn answering_in(ms: u64) -> Self {
        let backend = Self::default();
        backend.latency_ms.store(ms, Ordering::SeqCst);
        backend
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<()> for Backend {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Box::pin(async { Err("backend failed".into()) });
        }
        let latency = Duration::from_millis(self.latency_ms.load(Ordering::SeqCst));
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            Ok(())
        })
    }
}

/// p2c's choices, the same every run.
struct XorShift(u64);

impl Rng for XorShift {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

type Balancer = Balance<
    seawall_outlier::OutlierDiscover<ServiceList<Vec<Backend>>, usize, AnyError, NoProbe>,
    (),
>;

/// A balancer over `backends` that never ejects (as when the share cap keeps an endpoint in).
fn balancer(backends: &[Backend], seed: u64) -> Balancer {
    let outlier = OutlierLayer::<usize>::builder()
        .no_consecutive_failures()
        .no_success_rate()
        .build()
        .unwrap();
    Balance::from_rng(
        outlier.layer(ServiceList::new(backends.to_vec())),
        XorShift(seed),
    )
}

/// Sends a call every `every` for `span` through each balancer in turn (open loop: calls run
/// in their own tasks), and returns each backend's calls in that span.
async fn drive(
    balancers: &mut [Balancer],
    backends: &[Backend],
    every: Duration,
    span: Duration,
) -> Vec<u32> {
    let before: Vec<u32> = backends.iter().map(Backend::calls).collect();
    let end = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < end {
        for balance in balancers.iter_mut() {
            let call = balance.ready().await.unwrap().call(());
            tokio::spawn(call);
        }
        tokio::time::sleep(every).await;
    }
    backends
        .iter()
        .zip(before)
        .map(|(b, before)| b.calls() - before)
        .collect()
}

fn share(calls: &[u32], i: usize) -> f64 {
    f64::from(calls[i]) / f64::from(calls.iter().sum::<u32>())
}

#[tokio::test(start_paused = true)]
async fn p2c_prefers_a_healthy_endpoint_to_one_that_fails_fast_and_tries_it_again_later() {
    let backends = [Backend::answering_in(10), Backend::answering_in(10)];
    let mut balance = [balancer(&backends, 7)];
    let ms = Duration::from_millis;
    drive(&mut balance, &backends, ms(10), ms(1000)).await;
    backends[0].failing.store(true, Ordering::SeqCst);
    let calls = drive(&mut balance, &backends, ms(10), ms(2000)).await;
    // By calls in flight alone the failing endpoint (never one in flight) would get at least
    // half; ranked by its failures, it gets a call only when the healthy one is busy.
    assert!(share(&calls, 0) < 0.1, "{calls:?}");
    backends[0].failing.store(false, Ordering::SeqCst);
    let calls = drive(&mut balance, &backends, ms(10), ms(5000)).await;
    assert!(share(&calls, 0) > 0.3, "not tried again: {calls:?}");
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_whose_latency_rises_sheds_its_calls_and_gets_them_back() {
    let backends: Vec<Backend> = (0..3).map(|_| Backend::answering_in(10)).collect();
    let mut balance = [balancer(&backends, 11)];
    let ms = Duration::from_millis;
    let calls = drive(&mut balance, &backends, ms(10), ms(2000)).await;
    assert!(share(&calls, 0) > 0.2, "{calls:?}");
    backends[0].latency_ms.store(50, Ordering::SeqCst);
    let calls = drive(&mut balance, &backends, ms(10), ms(3000)).await;
    assert!(share(&calls, 0) < 0.1, "not shed: {calls:?}");
    backends[0].latency_ms.store(10, Ordering::SeqCst);
    let calls = drive(&mut balance, &backends, ms(10), ms(5000)).await;
    assert!(share(&calls, 0) > 0.2, "starved: {calls:?}");
}

/// Equal endpoints get equal shares, from one client calling often and from a hundred each
/// calling seldom (each with its own balancer and its own view of the endpoints).
#[tokio::test(start_paused = true)]
async fn equal_endpoints_share_evenly_at_one_client_and_at_a_hundred() {
    let ms = Duration::from_millis;
    for (clients, every) in [(1, ms(1)), (100, ms(100))] {
        let backends: Vec<Backend> = (0..5).map(|_| Backend::answering_in(10)).collect();
        let mut balancers: Vec<Balancer> =
            (0..clients).map(|c| balancer(&backends, 3 + c)).collect();
        let calls = drive(&mut balancers, &backends, every, ms(10_000)).await;
        for i in 0..5 {
            let share = share(&calls, i);
            assert!(
                (0.17..0.23).contains(&share),
                "{clients} clients: {calls:?}"
            );
        }
    }
}

/// Three endpoints of five fail every call from the start, the cap (half) ejects two and keeps
/// the third in: ranked by the latency of its fast failures alone it would take most calls for
/// as long as it fails; held, it weighs its failures against the set's latency.
#[tokio::test(start_paused = true)]
async fn p2c_passes_by_an_endpoint_the_cap_keeps_in_while_it_fails_from_its_first_call() {
    let backends: Vec<Backend> = (0..5).map(|_| Backend::answering_in(10)).collect();
    for backend in &backends[..3] {
        backend.failing.store(true, Ordering::SeqCst);
    }
    let outlier = OutlierLayer::<usize>::builder()
        .consecutive_failures(5)
        .no_success_rate()
        .max_ejected_share(0.5)
        .build()
        .unwrap();
    let mut balance = [Balance::from_rng(
        outlier.layer(ServiceList::new(backends.clone())),
        XorShift(5),
    )];
    let ms = Duration::from_millis;
    let first = drive(&mut balance, &backends, ms(10), ms(500)).await;
    // Each failing endpoint was tried until its run of five: two ejected, one held.
    assert!(first[..3].iter().all(|&calls| calls >= 5), "{first:?}");
    let calls = drive(&mut balance, &backends, ms(10), ms(3000)).await;
    let held = calls[..3].iter().sum::<u32>();
    assert_eq!(
        calls[..3].iter().filter(|&&c| c > 0).count(),
        1,
        "{calls:?}"
    );
    assert!(
        f64::from(held) < 0.1 * f64::from(calls.iter().sum::<u32>()),
        "{calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_inner_call_that_panics_leaves_no_call_in_flight() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use tower::load::Load;

    let layer = OutlierLayer::<usize>::builder().build().unwrap();
    let mut endpoint = layer.endpoint(
        0,
        tower::service_fn(|(): ()| -> std::future::Ready<Result<(), BoxError>> {
            panic!("the inner call panicked")
        }),
    );
    let call = catch_unwind(AssertUnwindSafe(|| endpoint.call(())));
    assert!(call.is_err());
    // Nothing in flight and no answer yet: an idle new endpoint, not one with a call at work.
    assert_eq!(endpoint.load().get(), 0.0);
}

/// Ten clients, each with its own balancer and ejection, share five endpoints; after a healthy
/// spell one endpoint fails every call. Its run of failures starts from a clean history with
/// room under the cap, so no penalty makes p2c pass it by: each client ejects it after its
/// run of five, in a fraction of a second (passed by, the run took seconds).
#[tokio::test(start_paused = true)]
async fn an_endpoint_that_starts_failing_after_a_healthy_spell_is_ejected_within_its_run() {
    let backends: Vec<Backend> = (0..5).map(|_| Backend::answering_in(10)).collect();
    let ejected = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut balancers: Vec<Balancer> = (0..10)
        .map(|client| {
            let ejected = ejected.clone();
            let outlier = OutlierLayer::<usize>::builder()
                .consecutive_failures(5)
                .no_success_rate()
                .build()
                .unwrap()
                .on_ejected(move |e| {
                    ejected
                        .lock()
                        .unwrap()
                        .push((*e.key, tokio::time::Instant::now()));
                });
            Balance::from_rng(
                outlier.layer(ServiceList::new(backends.clone())),
                XorShift(13 + client),
            )
        })
        .collect();
    let ms = Duration::from_millis;
    drive(&mut balancers, &backends, ms(10), ms(2000)).await;
    backends[0].failing.store(true, Ordering::SeqCst);
    let onset = tokio::time::Instant::now();
    let calls = drive(&mut balancers, &backends, ms(10), ms(3000)).await;
    let ejected = ejected.lock().unwrap();
    assert_eq!(ejected.len(), 10, "{ejected:?}");
    assert!(ejected.iter().all(|&(key, _)| key == 0), "{ejected:?}");
    // Five failures a client and no more: each run ended in its ejection.
    assert_eq!(calls[0], 50, "{calls:?}");
    let slowest = ejected.iter().map(|&(_, at)| at - onset).max().unwrap();
    // Passed by, each client took 1.3-1.7 s.
    assert!(slowest < ms(400), "ejected {slowest:?} after the onset");
}

/// A gRPC answer whose status comes in its trailers: its head gives a latency, and the end of
/// its body tells whether it failed, which moves the endpoint's load from then on (no run of
/// failures ejects here, so the first weighs).
#[tokio::test(start_paused = true)]
async fn a_grpc_failure_told_by_the_trailers_weighs_in_the_load() {
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue};
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use seawall_core::classify::GrpcCodes;
    use tower::load::Load;

    let layer = OutlierLayer::<usize>::builder()
        .no_consecutive_failures()
        .build()
        .unwrap()
        .classify(GrpcCodes::new());
    let svc = tower::service_fn(|code: &'static str| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static(code));
        let frames: Vec<Result<_, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"msg"))),
            Ok(Frame::trailers(trailers)),
        ];
        Ok::<_, BoxError>(
            http::Response::builder()
                .header("content-type", "application/grpc")
                .body(StreamBody::new(futures::stream::iter(frames)))
                .unwrap(),
        )
    });
    let mut ok = layer.endpoint(0, svc);
    let mut unavailable = layer.endpoint(1, svc);
    let (first, second) = tokio::join!(
        ok.ready().await.unwrap().call("0"),
        unavailable.ready().await.unwrap().call("14"),
    );
    assert_eq!(
        ok.load(),
        unavailable.load(),
        "not told before the trailers"
    );
    first.unwrap().into_body().collect().await.unwrap();
    second.unwrap().into_body().collect().await.unwrap();
    let ratio = unavailable.load().get() / ok.load().get();
    assert!(ratio > 2.0, "{ratio}");
}
