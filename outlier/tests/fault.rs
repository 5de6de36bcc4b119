//! The set marks a failure as its endpoint's own while another endpoint succeeds, on tokio's
//! paused clock, with real `http::Response`s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use seawall_core::BoxError;
use seawall_core::classify::{EndpointFault, EndpointFaultError, HttpStatus, is_endpoint_fault};
use seawall_outlier::{Endpoint, NoProbe, OutlierLayer};
use tower::{Service, ServiceExt};

/// A backend that answers with its current status; `0` makes it fail with a transport error.
#[derive(Clone)]
struct Backend(Arc<AtomicU16>);

impl Backend {
    fn answering(status: u16) -> Self {
        Self(Arc::new(AtomicU16::new(status)))
    }

    fn answer(&self, status: u16) {
        self.0.store(status, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset")
    }
}

impl std::error::Error for Reset {}

impl Service<()> for Backend {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<()>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        std::future::ready(match self.0.load(Ordering::SeqCst) {
            0 => Err(Box::new(Reset)),
            status => Ok(Response::builder().status(status).body(()).unwrap()),
        })
    }
}

type Ep = Endpoint<Backend, usize, HttpStatus, NoProbe>;

fn layer() -> OutlierLayer<usize, HttpStatus> {
    OutlierLayer::builder()
        .name("backends")
        .no_success_rate()
        .consecutive_failures(1000)
        .build()
        .unwrap()
        .classify(HttpStatus::server_errors())
}

/// Calls `endpoint` once: whether its answer or error is marked as the endpoint's own.
async fn marked(endpoint: &mut Ep) -> bool {
    match endpoint.ready().await.unwrap().call(()).await {
        Ok(response) => response.extensions().get::<EndpointFault>().is_some(),
        Err(err) => is_endpoint_fault(&*err),
    }
}

/// Endpoints 0, failing, and 1, succeeding, of `layer`'s set, each called once: the set's
/// first failure is never marked, and a success never is.
async fn failing_and_succeeding(layer: &OutlierLayer<usize, HttpStatus>) -> (Ep, Ep) {
    let mut a = layer.endpoint(0, Backend::answering(500));
    let mut b = layer.endpoint(1, Backend::answering(200));
    assert!(!marked(&mut a).await, "the set's first failure");
    assert!(!marked(&mut b).await);
    (a, b)
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_marked_only_while_another_endpoint_succeeds() {
    let layer = layer();
    let bad = Backend::answering(500);
    let mut a = layer.endpoint(0, bad.clone());
    let mut b = layer.endpoint(1, Backend::answering(200));
    assert!(!marked(&mut a).await, "no other endpoint has succeeded yet");
    assert!(!marked(&mut b).await, "a success is never marked");
    assert!(marked(&mut a).await, "b succeeds: a's 500 is a's own");
    bad.answer(0);
    assert!(marked(&mut a).await, "an error is marked too");
    bad.answer(200);
    assert!(!marked(&mut a).await);
    bad.answer(429);
    assert!(!marked(&mut a).await, "overload is no failure");
    bad.answer(500);
    assert!(marked(&mut a).await);
}

#[tokio::test(start_paused = true)]
async fn a_marked_error_keeps_the_endpoint_error_as_its_source() {
    let layer = layer();
    let mut a = layer.endpoint(0, Backend::answering(0));
    let mut b = layer.endpoint(1, Backend::answering(200));
    assert!(
        !marked(&mut a).await,
        "the set's first failure is never marked"
    );
    b.ready().await.unwrap().call(()).await.unwrap();
    let err = a.ready().await.unwrap().call(()).await.unwrap_err();
    let fault = err.downcast_ref::<EndpointFaultError>().expect("marked");
    assert!(fault.get_ref().is::<Reset>());
    assert_eq!(
        err.to_string(),
        "endpoint failed while others of its set succeed"
    );
}

#[tokio::test(start_paused = true)]
async fn marking_stops_after_one_failure_of_each_endpoint_once_every_one_fails() {
    let layer = layer();
    let backends: Vec<Backend> = (0..3).map(|_| Backend::answering(200)).collect();
    let mut endpoints: Vec<Ep> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| layer.endpoint(i, b.clone()))
        .collect();
    backends[0].answer(500);
    assert!(!marked(&mut endpoints[0]).await, "the set's first failure");
    backends[0].answer(200);
    for endpoint in &mut endpoints {
        assert!(!marked(endpoint).await);
    }
    for backend in &backends {
        backend.answer(500);
    }
    assert!(marked(&mut endpoints[0]).await, "1 and 2 still succeed");
    assert!(
        marked(&mut endpoints[0]).await,
        "0's own failures do not count"
    );
    assert!(marked(&mut endpoints[1]).await, "2 still succeeds");
    assert!(!marked(&mut endpoints[2]).await, "every endpoint now fails");
    for endpoint in &mut endpoints {
        assert!(!marked(endpoint).await);
    }
    backends[1].answer(200);
    assert!(!marked(&mut endpoints[1]).await);
    assert!(marked(&mut endpoints[0]).await, "1 succeeds again");
}

#[tokio::test(start_paused = true)]
async fn an_ejected_endpoint_success_does_not_count() {
    let (layer, handle) = layer().pair();
    let mut a = layer.endpoint(0, Backend::answering(500));
    let mut b = layer.endpoint(1, Backend::answering(200));
    let mut c = layer.endpoint(2, Backend::answering(500));
    assert!(!marked(&mut c).await, "the set's first failure");
    assert!(!marked(&mut b).await);
    assert!(marked(&mut a).await);
    // A call to b in flight when b is ejected comes back a success afterwards.
    let late = b.ready().await.unwrap().call(());
    assert!(handle.eject(&1));
    assert!(!marked(&mut a).await, "b is out: no endpoint in succeeds");
    late.await.unwrap();
    assert!(!marked(&mut c).await, "b's late success does not count");
    assert!(handle.restore(&1));
    assert!(!marked(&mut a).await, "back in, b has not succeeded since");
    assert!(!marked(&mut b).await);
    assert!(marked(&mut a).await);
}

#[tokio::test(start_paused = true)]
async fn a_success_older_than_the_interval_stops_counting() {
    let layer = layer();
    let (mut a, _b) = failing_and_succeeding(&layer).await;
    // a keeps failing while b gets no call: b's success ages out within two intervals (10 s).
    let mut marks = Vec::new();
    for _ in 0..25 {
        marks.push(marked(&mut a).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(marks[0]);
    let stopped = marks.iter().position(|m| !m).expect("marks stop");
    assert!((10..=20).contains(&stopped), "stopped after {stopped} s");
    assert!(marks[stopped..].iter().all(|m| !m));
}

#[tokio::test(start_paused = true)]
async fn the_first_failure_after_an_interval_without_one_is_judged_by_later_successes() {
    let layer = layer();
    let (mut a, mut b) = failing_and_succeeding(&layer).await;
    assert!(marked(&mut a).await);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(!marked(&mut b).await);
    assert!(marked(&mut a).await, "9 s since the last failure");
    // Perhaps every endpoint fails from now on: b's success before says nothing of that.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(!marked(&mut b).await);
    assert!(!marked(&mut a).await, "11 s since the last failure");
    assert!(!marked(&mut a).await);
    assert!(!marked(&mut b).await);
    assert!(marked(&mut a).await, "b succeeded since");
}

#[tokio::test(start_paused = true)]
async fn a_single_endpoint_never_marks() {
    let layer = layer();
    let backend = Backend::answering(200);
    let mut only = layer.endpoint(0, backend.clone());
    assert!(!marked(&mut only).await);
    backend.answer(500);
    assert!(!marked(&mut only).await);
    backend.answer(0);
    assert!(!marked(&mut only).await);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_endpoint_stops_counting() {
    let layer = layer();
    let (mut a, b) = failing_and_succeeding(&layer).await;
    assert!(marked(&mut a).await);
    drop(b);
    assert!(!marked(&mut a).await);
}
