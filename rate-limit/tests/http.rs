//! Rate limits under axum: 429 with Retry-After through seawall-core's adapter, keyed by client
//! IP, header and route, and one limiter shared by every connection.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::header::RETRY_AFTER;
use http::{Request, StatusCode};
use seawall_core::http::ErrorResponseLayer;
use seawall_rate_limit::{ClientIp, Header, Limiter, Quota, RateLimitLayer, Route};
use tower::{ServiceBuilder, ServiceExt};

fn limit(quota: Quota) -> RateLimitLayer {
    RateLimitLayer::builder()
        .name("api")
        .quota(quota)
        .build()
        .unwrap()
}

fn app<L>(layer: RateLimitLayer<L>) -> Router
where
    L: Limiter<Request<Body>>,
{
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/users/{id}", get(|| async { "user" }))
        .route("/health", get(|| async { "ok" }))
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(layer),
        )
}

async fn status(app: &Router, req: Request<Body>) -> (StatusCode, Option<String>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let retry = res
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    (res.status(), retry)
}

fn get_path(path: &str) -> Request<Body> {
    Request::builder().uri(path).body(Body::empty()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_is_429_with_retry_after() {
    let app = app(limit(Quota::per_second(1).with_burst(2)));
    assert_eq!(status(&app, get_path("/")).await, (StatusCode::OK, None));
    assert_eq!(status(&app, get_path("/")).await, (StatusCode::OK, None));
    assert_eq!(
        status(&app, get_path("/")).await,
        (StatusCode::TOO_MANY_REQUESTS, Some("1".to_owned()))
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_rounded_up_to_whole_seconds() {
    let app = app(limit(Quota::per_minute(1).with_burst(1)));
    assert_eq!(status(&app, get_path("/")).await.0, StatusCode::OK);
    tokio::time::advance(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        status(&app, get_path("/")).await,
        (StatusCode::TOO_MANY_REQUESTS, Some("60".to_owned()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiting_limit_delays_instead_of_answering_429() {
    let layer = RateLimitLayer::builder()
        .name("api")
        .quota(Quota::per_second(10).with_burst(1))
        .max_wait(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let app = app(layer);
    let start = tokio::time::Instant::now();
    assert_eq!(status(&app, get_path("/")).await.0, StatusCode::OK);
    assert_eq!(status(&app, get_path("/")).await.0, StatusCode::OK);
    assert_eq!(start.elapsed(), std::time::Duration::from_millis(100));
}

fn from_peer(peer: &str) -> Request<Body> {
    let mut req = get_path("/");
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    req
}

#[tokio::test(start_paused = true)]
async fn client_ips_have_independent_limits() {
    let app = app(limit(Quota::per_minute(1).with_burst(1)).keyed(ClientIp::peer()));
    assert_eq!(
        status(&app, from_peer("192.0.2.1:1000")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, from_peer("192.0.2.1:2000")).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the port does not make a new client"
    );
    assert_eq!(
        status(&app, from_peer("192.0.2.2:1000")).await.0,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn forwarded_clients_behind_a_proxy_have_independent_limits() {
    let app = app(limit(Quota::per_minute(1).with_burst(1)).keyed(ClientIp::forwarded_for(1)));
    let via_proxy = |client: &'static str| {
        let mut req = from_peer("10.0.0.1:443");
        req.headers_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        req
    };
    assert_eq!(
        status(&app, via_proxy("203.0.113.1")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, via_proxy("203.0.113.2")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, via_proxy("203.0.113.1")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        status(&app, via_proxy("6.6.6.6, 203.0.113.1")).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "a forged entry on the left changes nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn api_keys_have_independent_limits() {
    let header = Header::new(http::HeaderName::from_static("x-api-key"));
    let app = app(limit(Quota::per_minute(1).with_burst(1)).keyed(header));
    let with_key = |key: &'static str| {
        let mut req = get_path("/");
        req.headers_mut().insert("x-api-key", key.parse().unwrap());
        req
    };
    assert_eq!(status(&app, with_key("alice")).await.0, StatusCode::OK);
    assert_eq!(status(&app, with_key("bob")).await.0, StatusCode::OK);
    assert_eq!(
        status(&app, with_key("alice")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        status(&app, get_path("/")).await.0,
        StatusCode::OK,
        "no key"
    );
    assert_eq!(
        status(&app, get_path("/")).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "calls without a key share one bucket"
    );
}

#[tokio::test(start_paused = true)]
async fn routes_are_limited_by_their_matched_path() {
    let app = app(limit(Quota::per_minute(1).with_burst(1)).keyed(Route::new()));
    assert_eq!(status(&app, get_path("/users/1")).await.0, StatusCode::OK);
    assert_eq!(
        status(&app, get_path("/users/2")).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "/users/1 and /users/2 are one route"
    );
    assert_eq!(status(&app, get_path("/health")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn every_connection_shares_one_limiter() {
    // One permit a minute: only the burst of two can be spent within the test.
    let app = app(limit(Quota::per_minute(1).with_burst(2)).keyed(ClientIp::peer()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(seawall_core::testing::serve::get(addr, "/").await.status());
    }
    server.abort();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}
