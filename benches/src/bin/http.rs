//! Requests a second and latency percentiles over HTTP on 127.0.0.1: an axum app bare, behind
//! seawall's server stack and behind tower-resilience's equivalent, and with a handler that
//! calls a second local service through a plain hyper client, through seawall's client stack
//! and through tower-resilience's equivalent. A closed-loop load generator (a fixed number of
//! connections, each sending its next request when the last one answered) drives each variant
//! in turn, for several rounds, in one run.
//!
//! `cargo run --release -p seawall-bench --no-default-features --bin http -- [seconds] [rounds] [connections]`

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use seawall::stack::{ClientStackConfig, ClientStackLayer, ServerStackConfig, ServerStackLayer};
use seawall::{BoxError, ServiceBuilderExt};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

type Downstream = BoxCloneSyncService<Request<Empty<Bytes>>, Response<Body>, BoxError>;

fn bare() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

fn server_stack() -> Router {
    let config: ServerStackConfig = serde_json::from_value(serde_json::json!({
        "name": "api",
        "bulkhead": { "max_concurrent": 1000 },
        "timeout": "2s"
    }))
    .expect("a valid server stack");
    bare().layer(
        ServiceBuilder::new()
            .with_http_errors()
            .layer(ServerStackLayer::new(config)),
    )
}

// ===== tower-resilience =====

mod tr {
    pub(super) use tower_resilience::bulkhead::{BulkheadLayer, BulkheadServiceError};
    pub(super) use tower_resilience::circuitbreaker::{CircuitBreakerError, CircuitBreakerLayer};
    pub(super) use tower_resilience::retry::RetryLayer;
    pub(super) use tower_resilience::timelimiter::{TimeLimiterError, TimeLimiterLayer};
}

type TrServerError = tr::TimeLimiterError<tr::BulkheadServiceError<std::convert::Infallible>>;

/// tower-resilience's errors as the statuses seawall's HTTP adapter answers with: 504 for a
/// timeout, 503 for a full bulkhead. Its errors are not `Infallible`, so axum needs the
/// `HandleErrorLayer` a seawall stack does without.
async fn tr_status(err: TrServerError) -> StatusCode {
    match err {
        tr::TimeLimiterError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        tr::TimeLimiterError::Inner(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The server stack's equivalent in tower-resilience: a 2 s time limiter over a bulkhead of
/// 1000 that rejects when full.
fn tr_server_stack() -> Router {
    let bulkhead = tr::BulkheadLayer::builder()
        .name("api")
        .max_concurrent_calls(1000)
        .reject_when_full()
        .build()
        .expect("a valid bulkhead");
    bare().layer(
        ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(tr_status))
            .layer(
                tr::TimeLimiterLayer::builder()
                    .timeout_duration(Duration::from_secs(2))
                    .cancel_running_future(true)
                    .build(),
            )
            .layer(bulkhead),
    )
}

type TrAttemptError = tr::CircuitBreakerError<
    tr::BulkheadServiceError<tr::TimeLimiterError<hyper_util::client::legacy::Error>>,
>;

/// The client stack's equivalent in tower-resilience over `client`: a 10 s time limiter, 3
/// attempts, a count-based breaker of 100 calls, a bulkhead of 1000 and a 1 s time limiter per
/// attempt (the order of the lab's tower-resilience stack).
fn tr_client_stack(client: Client<HttpConnector, Empty<Bytes>>) -> Downstream {
    let breaker = tr::CircuitBreakerLayer::builder()
        .name("downstream")
        .sliding_window_size(100)
        .build()
        .expect("a valid breaker");
    let bulkhead = tr::BulkheadLayer::builder()
        .name("downstream")
        .max_concurrent_calls(1000)
        .reject_when_full()
        .build()
        .expect("a valid bulkhead");
    let retry = tr::RetryLayer::<
        Request<Empty<Bytes>>,
        Response<hyper::body::Incoming>,
        TrAttemptError,
    >::builder()
    .max_attempts(3)
    .build();
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .map_response(|res: Response<hyper::body::Incoming>| res.map(Body::new))
            .map_err(|_: tr::TimeLimiterError<TrAttemptError>| {
                BoxError::from("the downstream failed")
            })
            .layer(
                tr::TimeLimiterLayer::builder()
                    .timeout_duration(Duration::from_secs(10))
                    .cancel_running_future(true)
                    .build(),
            )
            .layer(retry)
            .layer(breaker)
            .layer(bulkhead)
            .layer(
                tr::TimeLimiterLayer::builder()
                    .timeout_duration(Duration::from_secs(1))
                    .cancel_running_future(true)
                    .build(),
            )
            .service(client),
    )
}

// ===== handlers =====

#[derive(Clone)]
struct Calling {
    downstream: Downstream,
    url: String,
}

async fn call_downstream(State(state): State<Calling>) -> Response<Body> {
    let request = Request::get(&state.url)
        .body(Empty::new())
        .expect("a valid request");
    match state.downstream.oneshot(request).await {
        Ok(response) => response,
        Err(_) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .expect("a valid response"),
    }
}

/// Which client stack a handler calls through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    None,
    Seawall,
    TowerResilience,
}

/// A handler that calls `url` through a hyper client, behind a client stack or not.
fn calling(url: String, stack: Stack) -> Router {
    let client =
        Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(HttpConnector::new());
    let downstream = if stack == Stack::TowerResilience {
        tr_client_stack(client)
    } else if stack == Stack::Seawall {
        let config: ClientStackConfig = serde_json::from_value(serde_json::json!({
            "name": "downstream",
            "total_timeout": "10s",
            "attempt_timeout": "1s",
            "retry": { "max_attempts": 3 },
            "circuit_breaker": { "window": { "count": 100 } },
            "bulkhead": { "max_concurrent": 1000 }
        }))
        .expect("a valid client stack");
        BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_response(|res: Response<_>| res.map(Body::new))
                .layer(ClientStackLayer::new(config))
                .service(client),
        )
    } else {
        BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_response(|res: Response<hyper::body::Incoming>| res.map(Body::new))
                .map_err(BoxError::from)
                .service(client),
        )
    };
    Router::new()
        .route("/", get(call_downstream))
        .with_state(Calling { downstream, url })
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

/// One connection's loop: the latency of each request answered before `until`, in µs.
async fn connection(url: String, warm_up: Instant, until: Instant) -> (Vec<u32>, u64) {
    let authority = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("a connection");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("a handshake");
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut errors = 0;
    loop {
        let start = Instant::now();
        if start >= until {
            return (latencies, errors);
        }
        sender.ready().await.expect("a ready connection");
        let request = Request::get("/")
            .header("host", &authority)
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let response = sender.send_request(request).await.expect("a response");
        let ok = response.status().is_success();
        let _ = response.into_body().collect().await;
        if start >= warm_up {
            if ok {
                latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
            } else {
                errors += 1;
            }
        }
    }
}

struct Run {
    rps: f64,
    p50: u32,
    p99: u32,
    p999: u32,
    errors: u64,
}

async fn drive(url: &str, connections: usize, seconds: f64) -> Run {
    let warm_up = Instant::now() + Duration::from_millis(500);
    let until = warm_up + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(url.to_owned(), warm_up, until)))
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.expect("a load task");
        all.extend(latencies);
        errors += e;
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Run {
        rps: all.len() as f64 / seconds,
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        errors,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let connections: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let downstream = serve(bare()).await;
        let variants = [
            ("bare", serve(bare()).await),
            ("server stack", serve(server_stack()).await),
            ("server, tower-resilience", serve(tr_server_stack()).await),
            (
                "handler, plain client",
                serve(calling(downstream.clone(), Stack::None)).await,
            ),
            (
                "handler, client stack",
                serve(calling(downstream.clone(), Stack::Seawall)).await,
            ),
            (
                "handler, tower-resilience",
                serve(calling(downstream.clone(), Stack::TowerResilience)).await,
            ),
        ];
        println!(
            "{connections} connections, closed loop, {seconds} s a variant after 0.5 s of warm-up"
        );
        for round in 1..=rounds {
            println!("round {round}");
            println!(
                "  {:<24} {:>10} {:>8} {:>8} {:>8} {:>7}",
                "variant", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "errors"
            );
            for (name, url) in &variants {
                let run = drive(url, connections, seconds).await;
                println!(
                    "  {:<24} {:>10.0} {:>8} {:>8} {:>8} {:>7}",
                    name, run.rps, run.p50, run.p99, run.p999, run.errors
                );
            }
        }
    });
}
