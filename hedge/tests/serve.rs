//! Hedging HTTP calls to an axum server on 127.0.0.1, over real connections and the real clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::put;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use seawall_core::body::{ReplayBody, ReplayBodyLayer};
use seawall_core::testing::TestRecorder;
use seawall_core::testing::serve::serve;
use seawall_hedge::{BudgetConfig, HedgeLayer, HttpPolicy};
use tower::{ServiceBuilder, ServiceExt};

/// Echoes the body of every request; the 11th hangs for a minute (its hedge answers first).
fn echo(hits: Arc<AtomicU32>, posts: Arc<AtomicU32>) -> Router {
    let handler = move |method: Method, body: Bytes| {
        let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
        if method == Method::POST {
            posts.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            if n == 11 || method == Method::POST {
                tokio::time::sleep(Duration::from_millis(if n == 11 { 60_000 } else { 300 })).await;
            }
            format!("{n}: {}", String::from_utf8_lossy(&body))
        }
    };
    Router::new().route("/echo", put(handler.clone()).post(handler))
}

#[tokio::test]
async fn a_hung_put_is_answered_by_its_hedge_with_the_same_body() {
    let (hits, posts) = (Arc::default(), Arc::default());
    let addr = serve(echo(Arc::clone(&hits), Arc::clone(&posts))).await;
    let recorder = TestRecorder::new();
    let hedge = recorder.install_for(|| {
        HedgeLayer::builder()
            .name("echo")
            .delay(Duration::from_millis(100))
            // Budget enough to hedge every call: only the policy keeps the POST from it.
            .budget(BudgetConfig::new(1.0, Duration::from_secs(10)).unwrap())
            .build()
            .unwrap()
            .policy(HttpPolicy::new())
    });
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>();
    let svc = ServiceBuilder::new()
        .layer(ReplayBodyLayer::default())
        .layer(hedge)
        .service(client);
    let call = |method: Method, body: &'static str| {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}/echo"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let svc = svc.clone();
        async move {
            let res = svc.oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        }
    };

    for i in 1..=10 {
        assert_eq!(call(Method::PUT, "warm").await, format!("{i}: warm"));
    }
    assert_eq!(call(Method::PUT, "payload").await, "12: payload");
    let labels = [("name", "echo")];
    assert_eq!(recorder.counter("seawall_hedge_sent_total", &labels), 1);
    assert_eq!(recorder.counter("seawall_hedge_won_total", &labels), 1);

    // A POST is sent once, however long it takes.
    assert_eq!(call(Method::POST, "order").await, "13: order");
    assert_eq!(posts.load(Ordering::SeqCst), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 13);
    assert_eq!(recorder.counter("seawall_hedge_sent_total", &labels), 1);
}
