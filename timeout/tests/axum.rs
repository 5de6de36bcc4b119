//! A timeout on an axum router, served over a real socket on 127.0.0.1.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use seawall_core::http::ErrorResponseLayer;
use seawall_timeout::TimeoutLayer;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn get_path(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn app() -> Router {
    let timeout = TimeoutLayer::builder()
        .name("api")
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "slow"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(timeout),
        )
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_answers_504_and_the_server_keeps_serving() {
    let addr = serve(app()).await;

    assert_eq!(
        get_path(addr, "/fast").await,
        (StatusCode::OK, "fast".into())
    );
    let (status, body) = get_path(addr, "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "timed out (api)");
    for _ in 0..3 {
        assert_eq!(
            get_path(addr, "/fast").await,
            (StatusCode::OK, "fast".into())
        );
    }
}
