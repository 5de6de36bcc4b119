//! Holding the slot until an HTTP or gRPC response body ends.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use seawall_bulkhead::{BulkheadHandle, BulkheadLayer};
use seawall_core::classify::GrpcCodes;
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt, service_fn};

/// A response body fed frame by frame by the test; it ends when the sender is dropped.
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
