//! HTTP retries: idempotent methods, Retry-After, and replayable bodies.
#![cfg(feature = "http")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::any;
use bytes::Bytes;
use futures::channel::mpsc;
use http::header::RETRY_AFTER;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use seawall_core::BoxError;
use seawall_core::backoff::{Backoff, Jitter};
use seawall_retry::{HttpPolicy, ReplayBody, ReplayBodyLayer, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn layer() -> RetryLayer<HttpPolicy> {
    RetryLayer::builder()
        .name("http")
        .max_attempts(3)
        .backoff(
            Backoff::constant(ms(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .max_delay(Duration::from_secs(10))
        .no_budget()
        .build()
        .unwrap()
        .policy(HttpPolicy::new())
}

/// What the downstream saw: when each attempt came and the body it carried.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(Instant, Bytes)>>>);

impl Seen {
    fn times(&self) -> Vec<Duration> {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .map(|(t, _)| t.duration_since(seen[0].0))
            .collect()
    }

    fn bodies(&self) -> Vec<Bytes> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// A downstream that reads each request body and answers attempt `n` with `respond(n)`.
fn downstream<B>(
    seen: &Seen,
    respond: impl Fn(usize) -> Response<()> + Send + Sync + 'static,
) -> impl Service<Request<B>, Response = Response<()>, Error = BoxError, Future = impl Send> + Clone
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let seen = seen.clone();
    let respond = Arc::new(respond);
    service_fn(move |req: Request<B>| {
        let (seen, respond) = (seen.clone(), respond.clone());
        async move {
            let at = Instant::now();
            let body = req
                .into_body()
                .collect()
                .await
                .map_err(Into::into)?
                .to_bytes();
            let n = {
                let mut seen = seen.0.lock().unwrap();
                seen.push((at, body));
                seen.len() - 1
            };
            Ok::<_, BoxError>(respond(n))
        }
    })
}

fn status(code: u16) -> Response<()> {
    Response::builder().status(code).body(()).unwrap()
}

fn with_retry_after(code: u16, value: &str) -> Response<()> {
    let mut res = status(code);
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
    res
}

fn request(method: Method) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/orders")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn idempotent_requests_are_retried_on_server_errors() {
    let seen = Seen::default();
    let svc = layer().layer(downstream(&seen, |n| status(if n < 2 { 503 } else { 200 })));
    let res = svc.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(seen.times().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_are_not_retried() {
    for method in [Method::POST, Method::PATCH] {
        let seen = Seen::default();
        let svc = layer().layer(downstream(&seen, |_| status(503)));
        let res = svc.oneshot(request(method.clone())).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(seen.times().len(), 1, "{method}");
    }
    let seen = Seen::default();
    let svc = layer()
        .policy(HttpPolicy::new().with_method(Method::POST))
        .layer(downstream(&seen, |_| status(503)));
    let _ = svc.oneshot(request(Method::POST)).await.unwrap();
    assert_eq!(seen.times().len(), 3, "POST once allowed");
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_501_are_not_retried() {
    for code in [400, 404, 501] {
        let seen = Seen::default();
        let svc = layer().layer(downstream(&seen, move |_| status(code)));
        let _ = svc.oneshot(request(Method::GET)).await.unwrap();
        assert_eq!(seen.times().len(), 1, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_sets_the_next_delay() {
    for code in [429, 503] {
        let seen = Seen::default();
        let svc = layer().layer(downstream(&seen, move |n| {
            if n == 0 {
                with_retry_after(code, "2")
            } else {
                status(200)
            }
        }));
        let res = svc.oneshot(request(Method::GET)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(seen.times(), [ms(0), Duration::from_secs(2)], "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date_sets_the_next_delay() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let seen = Seen::default();
    let svc = layer().layer(downstream(&seen, move |n| {
        if n == 0 {
            with_retry_after(503, &date)
        } else {
            status(200)
        }
    }));
    let _ = svc.oneshot(request(Method::GET)).await.unwrap();
    let wait = seen.times()[1];
    // The date is in whole seconds: up to one second is lost in writing it.
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(3),
        "{wait:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_max_delay_returns_the_response_at_once() {
    let seen = Seen::default();
    let svc = layer().layer(downstream(&seen, |_| with_retry_after(503, "120")));
    let start = Instant::now();
    let res = svc.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.times().len(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn headers_and_extensions_are_copied_to_each_retry() {
    #[derive(Clone, Debug, PartialEq)]
    struct Tenant(&'static str);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let svc = layer().layer(service_fn(move |req: Request<Empty<Bytes>>| {
        sink.lock().unwrap().push((
            req.uri().clone(),
            req.headers().get("x-id").cloned(),
            req.extensions().get::<Tenant>().cloned(),
        ));
        let n = sink.lock().unwrap().len();
        std::future::ready(Ok::<_, BoxError>(status(if n < 2 { 502 } else { 200 })))
    }));
    let mut req = request(Method::GET);
    req.headers_mut()
        .insert("x-id", HeaderValue::from_static("42"));
    req.extensions_mut().insert(Tenant("acme"));
    let _ = svc.oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1].2, Some(Tenant("acme")));
}

fn replaying<B>(
    limit: usize,
    seen: &Seen,
) -> impl Service<Request<B>, Response = Response<()>, Error = BoxError>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    ServiceBuilder::new()
        .layer(ReplayBodyLayer::new(limit))
        .layer(layer())
        .service(downstream::<ReplayBody<B>>(seen, |_| status(503)))
}

fn put(body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::PUT)
        .body(Full::new(body.into()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_body_within_the_limit_is_replayed_on_every_attempt() {
    let seen = Seen::default();
    let _ = replaying(64, &seen).oneshot(put("hello")).await.unwrap();
    assert_eq!(seen.bodies(), ["hello", "hello", "hello"]);
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_sent_once_and_whole() {
    let seen = Seen::default();
    let res = replaying(4, &seen)
        .oneshot(put("hello world"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.bodies(), ["hello world"]);
}

type Chunks = StreamBody<mpsc::UnboundedReceiver<Result<Frame<Bytes>, Infallible>>>;

fn chunked() -> (
    mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>,
    Chunks,
) {
    let (tx, rx) = mpsc::unbounded();
    (tx, StreamBody::new(rx))
}

#[tokio::test(start_paused = true)]
async fn a_body_of_unknown_length_that_is_all_there_is_replayed() {
    let (tx, body) = chunked();
    for chunk in ["ab", "cd"] {
        tx.unbounded_send(Ok(Frame::data(Bytes::from(chunk))))
            .unwrap();
    }
    drop(tx);
    let req = Request::builder().method(Method::GET).body(body).unwrap();
    let seen = Seen::default();
    let _ = replaying(64, &seen).oneshot(req).await.unwrap();
    assert_eq!(seen.bodies(), ["abcd", "abcd", "abcd"]);
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_that_would_wait_is_sent_once_and_whole() {
    let (tx, body) = chunked();
    tx.unbounded_send(Ok(Frame::data(Bytes::from("first "))))
        .unwrap();
    let req = Request::builder().method(Method::GET).body(body).unwrap();
    let seen = Seen::default();
    let rest = async move {
        tokio::task::yield_now().await;
        tx.unbounded_send(Ok(Frame::data(Bytes::from("second"))))
            .unwrap();
    };
    let (res, ()) = tokio::join!(replaying(64, &seen).oneshot(req), rest);
    let res = res.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.bodies(), ["first second"]);
}

#[tokio::test(start_paused = true)]
async fn works_with_axum_bodies_and_routers() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let sink = attempts.clone();
    let router = Router::new().route(
        "/orders",
        any(move |body: String| {
            let sink = sink.clone();
            async move {
                let mut seen = sink.lock().unwrap();
                seen.push(body);
                if seen.len() < 3 {
                    StatusCode::BAD_GATEWAY
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let svc = ServiceBuilder::new()
        .layer(ReplayBodyLayer::default())
        .layer(layer())
        .service(router);
    let req = Request::builder()
        .method(Method::PUT)
        .uri("/orders")
        .body(axum::body::Body::from("order 7"))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(*attempts.lock().unwrap(), ["order 7", "order 7", "order 7"]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_holds_back_the_retries_of_every_request_until_it_expires() {
    for code in [429, 503] {
        let seen = Seen::default();
        // The first request is refused for 2 s; the second, sent 100 ms later, is refused
        // without a hint.
        let svc = layer().layer(downstream(&seen, move |n| match n {
            0 => with_retry_after(code, "2"),
            1 => status(503),
            _ => status(200),
        }));
        let (first, second) = tokio::join!(svc.clone().oneshot(request(Method::GET)), async {
            tokio::time::sleep(ms(100)).await;
            svc.clone().oneshot(request(Method::GET)).await
        });
        assert_eq!(first.unwrap().status(), StatusCode::OK);
        assert_eq!(second.unwrap().status(), StatusCode::OK);
        let times = seen.times();
        assert_eq!(
            times[..2],
            [ms(0), ms(100)],
            "{code}: first attempts go at once"
        );
        assert!(
            times[2..].iter().all(|t| *t >= Duration::from_secs(2)),
            "{code}: a retry went before the Retry-After expired: {times:?}"
        );
        // Once it has expired, a retry waits on its backoff alone.
        let seen = Seen::default();
        let svc = layer().layer(downstream(&seen, |n| match n {
            0 => with_retry_after(503, "1"),
            1 => status(200),
            2 => status(503),
            _ => status(200),
        }));
        svc.clone().oneshot(request(Method::GET)).await.unwrap();
        let start = Instant::now();
        svc.oneshot(request(Method::GET)).await.unwrap();
        assert_eq!(start.elapsed(), ms(10), "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_inner_layers_retry_after_holds_back_only_its_own_request() {
    use seawall_core::{Rejected, RejectionKind};
    let seen = Seen::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let inner = {
        let calls = calls.clone();
        let seen = seen.clone();
        service_fn(move |_: Request<Empty<Bytes>>| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            seen.0.lock().unwrap().push((Instant::now(), Bytes::new()));
            async move {
                match n {
                    // A keyed rate limit below refuses this request's key for 2 s.
                    0 => Err::<Response<()>, BoxError>(
                        Rejected::new(RejectionKind::RateLimited, "per-tenant")
                            .with_retry_after(Duration::from_secs(2))
                            .into(),
                    ),
                    1 => Ok(status(503)),
                    _ => Ok(status(200)),
                }
            }
        })
    };
    let svc = layer().layer(inner);
    let (first, second) = tokio::join!(svc.clone().oneshot(request(Method::GET)), async {
        tokio::time::sleep(ms(100)).await;
        svc.clone().oneshot(request(Method::GET)).await
    });
    first.unwrap();
    second.unwrap();
    let times = seen.times();
    assert_eq!(
        times[..3],
        [ms(0), ms(100), ms(110)],
        "the other request retried on its backoff"
    );
    assert_eq!(times[3], Duration::from_secs(2));
}

/// The retry times of 100 requests sent at once through a layer with the default backoff
/// (100 ms, full jitter) and a 1 s limit, whose first attempts are all answered `code`.
async fn retries_of_a_burst(code: u16) -> Vec<Duration> {
    let seen = Seen::default();
    let svc = RetryLayer::builder()
        .name("burst")
        .max_attempts(2)
        .max_elapsed(Duration::from_secs(1))
        .no_budget()
        .seed(7)
        .build()
        .unwrap()
        .layer(downstream(&seen, move |n| {
            status(if n < 100 { code } else { 200 })
        }));
    let calls = (0..100).map(|_| svc.clone().oneshot(request(Method::GET)));
    for res in futures::future::join_all(calls).await {
        assert_eq!(res.unwrap().status(), StatusCode::OK);
    }
    seen.times()[100..].to_vec()
}

#[tokio::test(start_paused = true)]
async fn the_retries_of_a_burst_of_overload_refusals_spread_over_half_the_time_left() {
    for code in [429, 503] {
        let retries = retries_of_a_burst(code).await;
        assert!(
            retries.iter().all(|t| *t <= ms(500)),
            "{code}: the call keeps half its time: {retries:?}"
        );
        // Uniform over 500 ms: about half after 250 ms (the backoff alone: none after 100 ms).
        let late = retries.iter().filter(|t| **t > ms(250)).count();
        assert!(
            (25..=75).contains(&late),
            "{code}: {late} of 100 retries after 250 ms: {retries:?}"
        );
    }
    let failures = retries_of_a_burst(502).await;
    assert!(
        failures.iter().all(|t| *t <= ms(100)),
        "a failure that is not overload waits on the backoff alone: {failures:?}"
    );
}

fn to(authority: &str, method: Method) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://{authority}/orders"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_holds_back_only_the_retries_to_its_authority() {
    // `a` refuses for 2 s; 100 ms later `b` and `a` again refuse without a hint.
    let seen = Seen::default();
    let svc = layer().layer(downstream(&seen, |n| match n {
        0 => with_retry_after(503, "2"),
        1 | 2 => status(503),
        _ => status(200),
    }));
    let later = |authority: &'static str| {
        let svc = svc.clone();
        async move {
            tokio::time::sleep(ms(100)).await;
            svc.oneshot(to(authority, Method::GET)).await
        }
    };
    let (a, b, again) = tokio::join!(
        svc.clone().oneshot(to("a.example", Method::GET)),
        later("b.example"),
        async {
            tokio::task::yield_now().await;
            later("A.Example").await
        },
    );
    for res in [a, b, again] {
        assert_eq!(res.unwrap().status(), StatusCode::OK);
    }
    let times = seen.times();
    assert_eq!(
        times[..3],
        [ms(0), ms(100), ms(100)],
        "first attempts go at once"
    );
    assert_eq!(
        times[3],
        ms(110),
        "the other host's retry waits on its backoff alone"
    );
    assert_eq!(
        times[4..],
        [Duration::from_secs(2), Duration::from_secs(2)],
        "the retries to the host that asked wait for its Retry-After"
    );
}

#[tokio::test(start_paused = true)]
async fn hosts_cycled_by_the_thousand_neither_hold_other_hosts_nor_lose_their_own_hint() {
    // 1000 hosts each refuse once for 60 s, then a new host refuses once without a hint.
    let seen = Seen::default();
    let patient = RetryLayer::builder()
        .name("hosts")
        .max_attempts(2)
        .backoff(
            Backoff::constant(ms(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .max_delay(Duration::from_secs(120))
        .no_budget()
        .build()
        .unwrap()
        .policy(HttpPolicy::new());
    let svc = patient.layer(downstream(&seen, |n| match n {
        0..1000 => with_retry_after(503, "60"),
        1000 => status(503),
        _ => status(200),
    }));
    let cycled = (0..1000).map(|i| {
        let svc = svc.clone();
        async move {
            tokio::time::sleep(ms(i)).await;
            svc.oneshot(to(&format!("host-{i}.example"), Method::GET))
                .await
        }
    });
    let (cycled, fresh) = tokio::join!(futures::future::join_all(cycled), async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = Instant::now();
        let res = svc.clone().oneshot(to("fresh.example", Method::GET)).await;
        (res, start.elapsed())
    });
    let (res, took) = fresh;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    assert_eq!(
        took,
        ms(10),
        "a host nobody held back retries on its backoff"
    );
    for res in cycled {
        assert_eq!(res.unwrap().status(), StatusCode::OK);
    }
    let times = seen.times();
    assert!(
        times[1002..].iter().all(|t| *t >= Duration::from_secs(60)),
        "every host's own hint still holds its request, evicted from the table or not"
    );
}
