//! A fleet of five axum servers on 127.0.0.1 behind p2c, over real connections and the real
//! clock.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_core::classify::HttpStatus;
use seawall_core::testing::serve::serve;
use seawall_outlier::{OutlierHandle, OutlierLayer};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::{Layer, Service, ServiceExt};

/// A server that answers every request with 200, or with 500 when `failing`.
async fn backend(failing: bool) -> SocketAddr {
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    serve(Router::new().route("/", get(move || async move { (status, "hello") }))).await
}

/// A balancer over `fleet` with outlier ejection on 5xx, and the set's handle.
fn balance(
    fleet: &[SocketAddr],
) -> (
    impl Service<
        Request<Empty<Bytes>>,
        Response = http::Response<hyper::body::Incoming>,
        Error = seawall_core::BoxError,
    >,
    OutlierHandle<usize>,
) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let endpoints = fleet.iter().map(|&addr| {
        let client = client.clone();
        tower::service_fn(move |mut req: Request<Empty<Bytes>>| {
            *req.uri_mut() = format!("http://{addr}/").parse().unwrap();
            client.request(req)
        })
    });
    let (outlier, handle) = OutlierLayer::builder()
        .name("fleet")
        // Longer than the test runs, however slow the machine.
        .base_ejection_time(Duration::from_secs(600))
        .max_ejection_time(Duration::from_secs(600))
        .build()
        .unwrap()
        .classify(HttpStatus::server_errors())
        .pair();
    (
        Balance::new(outlier.layer(ServiceList::new(endpoints.collect::<Vec<_>>()))),
        handle,
    )
}

async fn get_status<S>(svc: &mut S) -> StatusCode
where
    S: Service<
            Request<Empty<Bytes>>,
            Response = http::Response<hyper::body::Incoming>,
            Error = seawall_core::BoxError,
        >,
{
    let req = Request::get("/").body(Empty::new()).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = res.status();
    res.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn one_failing_server_of_five_is_ejected_and_then_calls_succeed() {
    let mut fleet = vec![backend(true).await];
    for _ in 0..4 {
        fleet.push(backend(false).await);
    }
    let (mut svc, handle) = balance(&fleet);
    // The balancer passes the failing server by after each failure (its load), and tries it
    // again as the failure fades: it is ejected after its run of 5, and no call fails besides.
    let mut failed = 0;
    let started = std::time::Instant::now();
    while handle.ejected() == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "never ejected");
        failed += u32::from(get_status(&mut svc).await != StatusCode::OK);
    }
    assert_eq!(failed, 5);
    assert_eq!(handle.ejected(), 1);
    assert!(
        handle.endpoints()[0].ejected_for.is_some(),
        "the failing one"
    );
    let mut ok = 0;
    for _ in 0..1000 {
        ok += u32::from(get_status(&mut svc).await == StatusCode::OK);
    }
    assert!(ok >= 990, "{ok} of 1000");
}

#[tokio::test]
async fn with_four_of_five_failing_at_most_half_are_ejected() {
    let mut fleet = vec![backend(false).await];
    for _ in 0..4 {
        fleet.push(backend(true).await);
    }
    let (mut svc, handle) = balance(&fleet);
    let mut ok = 0;
    for _ in 0..1000 {
        ok += u32::from(get_status(&mut svc).await == StatusCode::OK);
        assert!(handle.ejected() <= 2, "{} ejected", handle.ejected());
    }
    assert_eq!(handle.ejected(), 2);
    assert!(
        handle.endpoints()[0].ejected_for.is_none(),
        "the healthy one stays in"
    );
    assert!(ok > 0);
}
