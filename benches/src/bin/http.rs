//! Requests a second and latency percentiles over HTTP on 127.0.0.1: an axum app bare, behind
//! seawall's server stack, and with a handler that calls a second local service through a
//! plain hyper client and through seawall's client stack. A closed-loop load generator (a
//! fixed number of connections, each sending its next request when the last one answered)
//! drives each variant in turn, for several rounds, in one run.
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

/// A handler that calls `url` through a hyper client, behind seawall's client stack or not.
fn calling(url: String, with_stack: bool) -> Router {
    let client =
        Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(HttpConnector::new());
    let downstream = if with_stack {
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
            (
                "handler, plain client",
                serve(calling(downstream.clone(), false)).await,
            ),
            (
                "handler, client stack",
                serve(calling(downstream.clone(), true)).await,
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
