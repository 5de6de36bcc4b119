//! Holding the slot until an HTTP or gRPC response body ends.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use seawall_bulkhead::{BulkheadHandle, BulkheadLayer};
use seawall_core::classify::GrpcCodes;
use seawall_core::testing::paused_runtime;
use seawall_core::{RejectionKind, rejected};
use tokio::sync::mpsc;
use tokio::time::advance;
use tower::{Layer, ServiceExt, service_fn};

/// A response body fed frame by frame by the test; it ends when the sender is dropped.
#[derive(Debug)]
struct ChannelBody {
    frames: mpsc::UnboundedReceiver<Frame<Bytes>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.frames.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

fn layer() -> (BulkheadLayer, BulkheadHandle) {
    BulkheadLayer::builder()
        .name("api")
        .max_concurrent(1)
        .build()
        .unwrap()
        .pair()
}

/// A service answering with a streaming body, and the sender that feeds it.
fn streaming() -> (
    impl tower::Service<
        Request<()>,
        Response = Response<ChannelBody>,
        Error = Infallible,
        Future = impl Send,
    > + Clone,
    mpsc::UnboundedSender<Frame<Bytes>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let svc = service_fn(move |_req: Request<()>| {
        let frames = rx.lock().unwrap().take().expect("one call");
        async move { Ok::<_, Infallible>(Response::new(ChannelBody { frames })) }
    });
    (svc, tx)
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_held_until_the_body_ends() {
    let (layer, handle) = layer();
    let (svc, tx) = streaming();
    let svc = layer.release_on_body_end().layer(svc);
    let response = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(), 1, "the body still streams");
    let mut body = response.into_body();
    tx.send(Frame::data(Bytes::from_static(b"part"))).unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "part");
    assert_eq!(handle.in_flight(), 1);
    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(handle.in_flight(), 0, "released at the end of the body");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_body_releases_the_slot() {
    let (layer, handle) = layer();
    let (svc, _tx) = streaming();
    let svc = layer.release_on_body_end().layer(svc);
    let response = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    drop(response);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_empty_body_releases_the_slot_with_the_head() {
    let (layer, handle) = layer();
    let svc = layer
        .release_on_body_end()
        .layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
        }));
    let _response = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn by_default_the_slot_is_released_with_the_head() {
    let (layer, handle) = layer();
    let (svc, _tx) = streaming();
    let _response = layer.layer(svc).oneshot(Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn grpc_codes_hold_the_slot_until_the_trailers() {
    let (layer, handle) = layer();
    let (svc, tx) = streaming();
    let svc = layer.classify(GrpcCodes::new()).layer(svc);
    let response = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(), 1, "the status is still to come");
    let mut body = response.into_body();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    tx.send(Frame::trailers(trailers)).unwrap();
    assert!(body.frame().await.unwrap().unwrap().is_trailers());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_stream_that_ends_without_trailers_releases_the_slot_at_its_last_frame() {
    // A body that says it has ended after its last frame, as hyper reads it: never polled for
    // `None`, dropped later.
    let (layer, handle) = layer();
    let svc = layer
        .classify(GrpcCodes::new())
        .layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                Bytes::from_static(b"msg"),
            )))
        }));
    let response = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    assert!(body.is_end_stream());
    assert_eq!(handle.in_flight(), 0, "released with the last frame");
    drop(body);
    assert_eq!(handle.in_flight(), 0);
}

// ===== bodies whose readers stop reading =====

/// A bulkhead of one slot that gives back the slot of a body whose reader has been idle for
/// 1.6 s: time slices of 100 ms.
fn idle_layer(queue: usize) -> (BulkheadLayer, BulkheadHandle) {
    BulkheadLayer::builder()
        .name("api")
        .max_concurrent(1)
        .queue_limit(queue)
        .max_wait(Duration::from_secs(3))
        .max_reader_idle(Duration::from_millis(1600))
        .build()
        .unwrap()
        .pair()
}

/// A service whose every response has a body of one frame, nothing polled yet.
fn full_bodies() -> impl tower::Service<
    Request<()>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"data"))))
    })
}

#[tokio::test(start_paused = true)]
async fn the_slot_of_a_body_nobody_reads_goes_back_after_max_reader_idle() {
    let (layer, handle) = idle_layer(0);
    let svc = layer.release_on_body_end().layer(full_bodies());
    let unread = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    advance(Duration::from_millis(1500)).await;
    let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(
        rejected(&*err).unwrap().kind(),
        RejectionKind::BulkheadFull,
        "within the max, the slot is held"
    );
    advance(Duration::from_millis(300)).await;
    let read = svc.clone().oneshot(Request::new(())).await;
    let read = read.expect("the slot of the unread body went back");
    assert_eq!(handle.in_flight(), 1);
    drop(unread);
    assert_eq!(
        handle.in_flight(),
        1,
        "the unread body gives nothing back twice"
    );
    assert_eq!(read.into_body().collect().await.unwrap().to_bytes(), "data");
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gets_the_slot_of_a_body_nobody_reads() {
    let (layer, handle) = idle_layer(1);
    let svc = layer.release_on_body_end().layer(full_bodies());
    let _unread = svc.clone().oneshot(Request::new(())).await.unwrap();
    let mut waiter = tokio_test::task::spawn(svc.clone().oneshot(Request::new(())));
    tokio_test::assert_pending!(waiter.poll());
    // Nothing else arrives: the waiter gives the slot back itself when its wait runs out.
    advance(Duration::from_secs(3)).await;
    let response = tokio_test::assert_ready_ok!(waiter.poll());
    assert_eq!(handle.in_flight(), 1);
    drop(response);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_read_steadily_or_waiting_for_its_producer_keeps_its_slot() {
    let (layer, handle) = idle_layer(0);
    let (svc, tx) = streaming();
    let svc = layer.release_on_body_end().layer(svc);
    let response = svc.clone().oneshot(Request::new(())).await.unwrap();
    let mut body = response.into_body();
    let competitor = || async {
        let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(rejected(&*err).unwrap().kind(), RejectionKind::BulkheadFull);
    };
    // The reader asks for a frame every second, for ten seconds.
    for _ in 0..10 {
        advance(Duration::from_secs(1)).await;
        tx.send(Frame::data(Bytes::from_static(b"part"))).unwrap();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        competitor().await;
    }
    // The reader waits for the next frame, which takes ten seconds to come.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
    advance(Duration::from_secs(10)).await;
    competitor().await;
    assert_eq!(handle.in_flight(), 1);
    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(handle.in_flight(), 0);
}

/// What the reference model knows of one response body.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Turn {
    /// Waits for its reader since this 100 ms slice, holding its slot.
    Reader(u64),
    /// Waits for its producer, holding its slot.
    Producer,
    /// Its slot was given back.
    GivenBack,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Call,
    Advance(u64),
    Read(usize),
    AskForNext(usize),
    Drop(usize),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        2 => Just(Step::Call),
        2 => (1..25u64).prop_map(Step::Advance),
        2 => (0..8usize).prop_map(Step::Read),
        1 => (0..8usize).prop_map(Step::AskForNext),
        1 => (0..8usize).prop_map(Step::Drop),
    ]
}

/// Whether a body waited for its reader more than 16 slices.
fn overdue(turn: Turn, slice: u64) -> bool {
    matches!(turn, Turn::Reader(since) if slice - since > 16)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Against a model: a body that waited for its reader more than 16 slices (1.6 s) may lose
    /// its slot at any time and loses it when a call finds the bulkhead full; no other body
    /// ever does, and no slot is given back twice.
    #[test]
    fn slots_go_back_exactly_when_readers_idle_too_long(
        limit in 1usize..4,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let rt = paused_runtime();
        rt.block_on(async {
            let (layer, handle) = BulkheadLayer::builder()
                .max_concurrent(limit)
                .max_reader_idle(Duration::from_millis(1600))
                .build()
                .unwrap()
                .pair();
            let senders = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let made = senders.clone();
            let svc = layer.release_on_body_end().layer(service_fn(move |_req: Request<()>| {
                let (tx, frames) = mpsc::unbounded_channel();
                made.lock().unwrap().push(tx);
                async move { Ok::<_, Infallible>(Response::new(ChannelBody { frames })) }
            }));
            let mut bodies: Vec<(Option<_>, Turn)> = Vec::new();
            let mut slice = 0u64;
            let mut cx = Context::from_waker(std::task::Waker::noop());
            for step in steps {
                // An overdue body may or may not have lost its slot yet: the model only drops it.
                let step = match step {
                    Step::Read(i) | Step::AskForNext(i)
                        if bodies.get(i).is_some_and(|(_, turn)| overdue(*turn, slice)) =>
                    {
                        Step::Drop(i)
                    }
                    step => step,
                };
                match step {
                    Step::Call => {
                        let holding = bodies
                            .iter()
                            .filter(|(body, turn)| {
                                body.is_some() && (*turn == Turn::Producer || matches!(turn, Turn::Reader(_)) && !overdue(*turn, slice))
                            })
                            .count();
                        let result = svc.clone().oneshot(Request::new(())).await;
                        proptest::prop_assert_eq!(result.is_ok(), holding < limit, "admission");
                        match result {
                            Ok(response) => bodies.push((Some(response.into_body()), Turn::Reader(slice))),
                            Err(_) => {
                                for (_, turn) in &mut bodies {
                                    if overdue(*turn, slice) {
                                        *turn = Turn::GivenBack;
                                    }
                                }
                            }
                        }
                    }
                    Step::Advance(slices) => {
                        advance(Duration::from_millis(100 * slices)).await;
                        slice += slices;
                    }
                    Step::Read(i) => {
                        if let Some((Some(body), turn)) = bodies.get_mut(i) {
                            senders.lock().unwrap()[i].send(Frame::data(Bytes::from_static(b"x"))).unwrap();
                            proptest::prop_assert!(Pin::new(body).poll_frame(&mut cx).is_ready());
                            if *turn != Turn::GivenBack {
                                *turn = Turn::Reader(slice);
                            }
                        }
                    }
                    Step::AskForNext(i) => {
                        if let Some((Some(body), turn)) = bodies.get_mut(i) {
                            proptest::prop_assert!(Pin::new(body).poll_frame(&mut cx).is_pending());
                            if *turn != Turn::GivenBack {
                                *turn = Turn::Producer;
                            }
                        }
                    }
                    Step::Drop(i) => {
                        if let Some((body, _)) = bodies.get_mut(i) {
                            *body = None;
                        }
                    }
                }
                let live = bodies.iter().filter(|(body, _)| body.is_some());
                let sure = live.clone().filter(|(_, turn)| *turn == Turn::Producer || matches!(turn, Turn::Reader(_)) && !overdue(*turn, slice)).count();
                let maybe = live.filter(|(_, turn)| overdue(*turn, slice)).count();
                let in_flight = handle.in_flight();
                proptest::prop_assert!(
                    (sure..=sure + maybe).contains(&in_flight) && in_flight <= limit,
                    "{in_flight} in flight, {sure} sure and {maybe} overdue"
                );
            }
            Ok(())
        })?;
    }
}
