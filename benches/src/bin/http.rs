//! Requests a second, latency percentiles and server CPU per request over HTTP on 127.0.0.1: an
//! axum app bare, behind seawall's server stack and behind tower-resilience's equivalent, and
//! with a handler that calls a second local service through a plain hyper client, through
//! seawall's client stack and through tower-resilience's equivalent.
//!
//! The servers run in a child process (`http serve`) on a current-thread runtime pinned to core
//! 1 with util-linux's `taskset`; the closed-loop load generator (a fixed number of connections
//! a variant, each sending its next request when the last one answered) runs on core 0. Many
//! short rounds run every variant once each, in a shuffled order and then its reverse (ABBA),
//! and each variant is compared with its baseline round by round: the median of the per-round
//! ratios (throughput, server CPU per request) and differences (p50, p99), with 95 % intervals.
//!
//! ```sh
//! cargo run --release -p seawall-bench --no-default-features --bin http -- [SECONDS [ROUNDS [CONNECTIONS]]] [--settle S] [--seed N] [--only KEY,..] [--no-pin] [--each]
//! cargo run --release -p seawall-bench --no-default-features --bin http -- instructions [FEW [MANY [CONNECTIONS]]] [--only KEY,..] [--keep DIR]
//! ```
//!
//! The second form counts each variant's server instructions per request under callgrind (needs
//! valgrind). Keys: bare, layered, server, server-tr, handler, handler-stack, handler-tr.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seawall::stack::{ClientStackConfig, ClientStackLayer, ServerStackConfig, ServerStackLayer};
use seawall::{BoxError, ServiceBuilderExt};
use seawall_bench::paired::{Interval, balanced_orders};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

// ===== the server process =====

/// What the bench serves, by key: its name in the report, and the variant its paired ratios
/// are taken against.
const VARIANTS: [(&str, &str, Option<&str>); 7] = [
    ("bare", "bare", None),
    ("layered", "bare, a layer that does nothing", Some("bare")),
    ("server", "server stack", Some("bare")),
    ("server-tr", "server, tower-resilience", Some("bare")),
    ("handler", "handler, plain client", None),
    ("handler-stack", "handler, client stack", Some("handler")),
    ("handler-tr", "handler, tower-resilience", Some("handler")),
];

/// Pairs compared besides each variant against its baseline: the server stack against what any
/// layer costs through axum's `Router::layer`, and tower-resilience against seawall.
const PEERS: [(&str, &str); 3] = [
    ("server", "layered"),
    ("server-tr", "server"),
    ("handler-tr", "handler-stack"),
];

fn app(key: &str, downstream: &str) -> Router {
    match key {
        "bare" => bare(),
        "layered" => bare().layer(tower::layer::util::Identity::new()),
        "server" => server_stack(),
        "server-tr" => tr_server_stack(),
        "handler" => calling(downstream.to_owned(), Stack::None),
        "handler-stack" => calling(downstream.to_owned(), Stack::Seawall),
        "handler-tr" => calling(downstream.to_owned(), Stack::TowerResilience),
        _ => panic!("no variant {key:?}; the variants: {}", keys().join(", ")),
    }
}

/// Each variant against its baseline, then the other pairs compared.
fn pairs() -> impl Iterator<Item = (&'static str, &'static str)> {
    VARIANTS
        .iter()
        .filter_map(|(key, _, against)| Some((*key, (*against)?)))
        .chain(PEERS)
}

fn keys() -> Vec<&'static str> {
    VARIANTS.iter().map(|(key, _, _)| *key).collect()
}

async fn bind(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

/// `http serve KEY...`: serves each variant (and the local downstream the handlers call) on one
/// current-thread runtime, prints `KEY URL` lines and `ready`, and exits when stdin closes.
fn serve(keys: &[String]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let downstream = bind(bare()).await;
        let mut out = std::io::stdout().lock();
        for key in keys {
            let url = bind(app(key, &downstream)).await;
            writeln!(out, "{key} {url}").expect("stdout");
        }
        writeln!(out, "ready").expect("stdout");
        out.flush().expect("stdout");
        drop(out);
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
        std::future::pending::<()>().await
    });
}

/// A server process, started by the generator with `http serve` behind `prefix` (`taskset`,
/// `valgrind`, or nothing).
struct Server {
    child: Child,
    urls: Vec<(String, String)>,
}

impl Server {
    fn start(prefix: &[String], keys: &[&str]) -> Self {
        let exe = std::env::current_exe().expect("this binary's path");
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command
            .arg("serve")
            .args(keys)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the server with {prefix:?}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().expect("a piped stdout")).lines();
        let mut urls = Vec::new();
        loop {
            let line = lines
                .next()
                .expect("the server's `ready` line")
                .expect("the server's stdout");
            if line == "ready" {
                break;
            }
            let (key, url) = line.split_once(' ').expect("a `KEY URL` line");
            urls.push((key.to_owned(), url.to_owned()));
        }
        Server { child, urls }
    }

    fn cpu_ns(&self) -> u64 {
        cpu_ns(self.child.id())
    }

    /// Closes the server's stdin and waits for it to exit.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        self.child.wait().expect("the server's exit");
    }
}

// ===== the load generator =====

/// One keep-alive HTTP/1.1 connection of the generator, written by hand rather than through
/// hyper's client so that the generator spends less CPU a request than the server it drives
/// (with hyper's client on both sides the generator's core saturated first).
struct Connection {
    stream: TcpStream,
    request: Vec<u8>,
    buffer: Vec<u8>,
}

async fn connect(url: &str) -> Connection {
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    let stream = TcpStream::connect(authority).await.expect("a connection");
    stream.set_nodelay(true).expect("nodelay");
    Connection {
        stream,
        request: format!("GET / HTTP/1.1\r\nhost: {authority}\r\n\r\n").into_bytes(),
        buffer: Vec::with_capacity(4096),
    }
}

impl Connection {
    /// Sends one request and reads the whole answer: whether it was a success.
    async fn request(&mut self) -> bool {
        self.stream
            .write_all(&self.request)
            .await
            .expect("a request sent");
        self.buffer.clear();
        loop {
            if let Some(status) = complete_response(&self.buffer) {
                return (200..300).contains(&status);
            }
            let read = self
                .stream
                .read_buf(&mut self.buffer)
                .await
                .expect("a response");
            assert!(read > 0, "the server closed a connection");
        }
    }
}

/// The status of the response in `buffer` once all of it (head and body) is there.
fn complete_response(buffer: &[u8]) -> Option<u16> {
    let head_end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buffer[..head_end]).expect("an ASCII head");
    let status = head.get(9..12)?.parse().expect("a status code");
    let body = &buffer[head_end..];
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    };
    let complete = match header("content-length") {
        Some(length) => body.len() >= length.parse::<usize>().expect("a length"),
        None if header("transfer-encoding").is_some() => body.ends_with(b"0\r\n\r\n"),
        None => true,
    };
    complete.then_some(status)
}

/// What one connection saw in a round: the latency in µs of each success that ended inside the
/// measured window, the failures that did, and every request it sent.
struct Seen {
    latencies: Vec<u32>,
    errors: u64,
    sent: u64,
}

async fn closed_loop(mut conn: Connection, from: Instant, until: Instant) -> (Connection, Seen) {
    let mut seen = Seen {
        latencies: Vec::with_capacity(1 << 14),
        errors: 0,
        sent: 0,
    };
    loop {
        let start = Instant::now();
        if start >= until {
            return (conn, seen);
        }
        let ok = conn.request().await;
        seen.sent += 1;
        let end = Instant::now();
        if end >= from && end < until {
            if ok {
                let micros = (end - start).as_micros();
                seen.latencies.push(micros.min(u32::MAX as u128) as u32);
            } else {
                seen.errors += 1;
            }
        }
    }
}

/// One variant's figures in one round.
#[derive(Debug, Clone, Copy)]
struct Round {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    /// Server CPU per request, µs: all the server's CPU time in the round over every request
    /// sent in it (the connections are idle before and after).
    cpu_us: f64,
    /// The server's CPU time over the round's wall time.
    busy: f64,
    /// The generator's CPU time over the round's wall time: near 100 %, the generator and not
    /// the server may be what limits the rate.
    generator_busy: f64,
}

/// Drives `conns` for `settle` (not counted) and then `window`.
async fn round(
    conns: Vec<Connection>,
    settle: Duration,
    window: Duration,
    server: &Server,
) -> (Vec<Connection>, Round) {
    let cpu_before = server.cpu_ns();
    let generator_before = cpu_ns(std::process::id());
    let started = Instant::now();
    let from = started + settle;
    let until = from + window;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(closed_loop(conn, from, until)))
        .collect();
    let mut conns = Vec::with_capacity(tasks.len());
    let mut all = Vec::new();
    let (mut errors, mut sent) = (0, 0);
    for task in tasks {
        let (conn, seen) = task.await.expect("a load task");
        conns.push(conn);
        all.extend(seen.latencies);
        errors += seen.errors;
        sent += seen.sent;
    }
    let cpu = server.cpu_ns() - cpu_before;
    let generator = cpu_ns(std::process::id()) - generator_before;
    let wall = started.elapsed();
    all.sort_unstable();
    let at = |q: f64| match all.len() {
        0 => f64::NAN,
        n => f64::from(all[((n as f64 * q) as usize).min(n - 1)]),
    };
    let figures = Round {
        rps: all.len() as f64 / window.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        errors,
        cpu_us: cpu as f64 / 1e3 / sent.max(1) as f64,
        busy: cpu as f64 / wall.as_nanos() as f64,
        generator_busy: generator as f64 / wall.as_nanos() as f64,
    };
    (conns, figures)
}

/// Nanoseconds the threads of process `pid` have run on a CPU, from `/proc/PID/task/*/schedstat`.
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("a /proc entry")
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Pins this process (its only thread so far) to `core` with util-linux's `taskset`.
fn pin_self(core: usize) {
    let status = Command::new("taskset")
        .args([
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux) to pin the generator; --no-pin runs without it");
    assert!(status.success(), "taskset could not pin to core {core}");
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

struct Options {
    seconds: f64,
    rounds: usize,
    connections: usize,
    settle: f64,
    pin: bool,
    each: bool,
    seed: u64,
    only: Vec<String>,
}

fn options(mut args: impl Iterator<Item = String>) -> Options {
    let mut options = Options {
        seconds: 0.5,
        rounds: 40,
        connections: 16,
        settle: 0.1,
        pin: true,
        each: false,
        seed: 1,
        only: keys().iter().map(|k| (*k).to_owned()).collect(),
    };
    let mut positional = 0;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--no-pin" => options.pin = false,
            "--each" => options.each = true,
            "--settle" => options.settle = value("--settle").parse().expect("seconds"),
            "--seed" => options.seed = value("--seed").parse().expect("a seed"),
            "--only" => {
                options.only = value("--only").split(',').map(str::to_owned).collect();
            }
            number => {
                match positional {
                    0 => options.seconds = number.parse().expect("SECONDS"),
                    1 => options.rounds = number.parse().expect("ROUNDS"),
                    2 => options.connections = number.parse().expect("CONNECTIONS"),
                    _ => panic!("unexpected argument {number:?}"),
                }
                positional += 1;
            }
        }
    }
    options
}

fn show(interval: &Interval, digits: usize) -> String {
    match (interval.low, interval.high) {
        (Some(low), Some(high)) => format!(
            "{:.digits$} [{:.digits$}, {:.digits$}]",
            interval.median, low, high
        ),
        _ => format!("{:.digits$} [n/a]", interval.median),
    }
}

fn name(key: &str) -> &'static str {
    VARIANTS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, name, _)| *name)
        .expect("a known variant")
}

/// `http [SECONDS [ROUNDS [CONNECTIONS]]]`: interleaved, paired rounds against a pinned server.
fn measure(options: &Options) {
    if options.pin {
        pin_self(0);
    }
    let prefix: Vec<String> = if options.pin {
        ["taskset", "-c", "1"].map(str::to_owned).to_vec()
    } else {
        Vec::new()
    };
    let only: Vec<&str> = options.only.iter().map(String::as_str).collect();
    let server = Server::start(&prefix, &only);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let load_before = load_average();
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let orders = balanced_orders(server.urls.len(), options.rounds, || rng.next_u64());
    let figures = rt.block_on(async {
        let mut pools = Vec::new();
        for (_, url) in &server.urls {
            let mut conns = Vec::with_capacity(options.connections);
            for _ in 0..options.connections {
                conns.push(connect(url).await);
            }
            pools.push(conns);
        }
        let mut figures = vec![Vec::with_capacity(options.rounds); server.urls.len()];
        for order in &orders {
            for &variant in order {
                let conns = std::mem::take(&mut pools[variant]);
                let (conns, run) = round(
                    conns,
                    Duration::from_secs_f64(options.settle),
                    Duration::from_secs_f64(options.seconds),
                    &server,
                )
                .await;
                pools[variant] = conns;
                figures[variant].push(run);
            }
        }
        figures
    });
    let elapsed = started.elapsed();
    let load_after = load_average();
    server.stop();
    report(options, &only, &figures, elapsed, [load_before, load_after]);
}

fn report(
    options: &Options,
    only: &[&str],
    figures: &[Vec<Round>],
    elapsed: Duration,
    load: [String; 2],
) {
    println!(
        "{} connections a variant, closed loop; {} rounds of {} s a variant after {} s not counted, \
         in ABBA order (seed {}); {}; {:.0} s, load average {} before, {} after",
        options.connections,
        options.rounds,
        options.seconds,
        options.settle,
        options.seed,
        if options.pin {
            "server on core 1 (one thread), generator on core 0 (one thread)"
        } else {
            "not pinned"
        },
        elapsed.as_secs_f64(),
        load[0],
        load[1],
    );
    let column = |variant: usize, field: fn(&Round) -> f64| -> Vec<f64> {
        figures[variant].iter().map(field).collect()
    };
    if options.each {
        for (variant, rounds) in figures.iter().enumerate() {
            println!("{}", name(only[variant]));
            for (i, r) in rounds.iter().enumerate() {
                println!(
                    "  round {:>3}: {:>7.0} req/s  p50 {:>6.0}  p99 {:>6.0}  p99.9 {:>6.0} µs  \
                     {:>6.2} µs CPU a request  busy {:>3.0} %  generator busy {:>3.0} %",
                    i + 1,
                    r.rps,
                    r.p50,
                    r.p99,
                    r.p999,
                    r.cpu_us,
                    r.busy * 100.0,
                    r.generator_busy * 100.0
                );
            }
        }
    }
    println!("medians over rounds, with their 95 % intervals (order statistics)");
    println!(
        "  {:<32} {:>24} {:>8} {:>20} {:>9} {:>22} {:>7} {:>10} {:>7}",
        "variant",
        "req/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "server CPU µs/request",
        "busy %",
        "generator %",
        "errors"
    );
    for (variant, key) in only.iter().enumerate() {
        let errors: u64 = figures[variant].iter().map(|r| r.errors).sum();
        println!(
            "  {:<32} {:>24} {:>8.0} {:>20} {:>9.0} {:>22} {:>7.0} {:>10.0} {:>7}",
            name(key),
            show(&Interval::of(&column(variant, |r| r.rps)), 0),
            Interval::of(&column(variant, |r| r.p50)).median,
            show(&Interval::of(&column(variant, |r| r.p99)), 0),
            Interval::of(&column(variant, |r| r.p999)).median,
            show(&Interval::of(&column(variant, |r| r.cpu_us)), 2),
            Interval::of(&column(variant, |r| r.busy)).median * 100.0,
            Interval::of(&column(variant, |r| r.generator_busy)).median * 100.0,
            errors,
        );
    }
    println!("paired by round: the median of the per-round figures, with its 95 % interval");
    println!(
        "  {:<60} {:>26} {:>20} {:>24} {:>26}",
        "variant / against",
        "req/s ratio",
        "p50 difference µs",
        "p99 difference µs",
        "CPU µs/request ratio"
    );
    for (key, against) in pairs() {
        let (Some(a), Some(b)) = (
            only.iter().position(|k| *k == key),
            only.iter().position(|k| *k == against),
        ) else {
            continue;
        };
        let paired = |f: fn(&Round, &Round) -> f64| -> Interval {
            let per_round: Vec<f64> = figures[a]
                .iter()
                .zip(&figures[b])
                .map(|(x, y)| f(x, y))
                .collect();
            Interval::of(&per_round)
        };
        println!(
            "  {:<60} {:>26} {:>20} {:>24} {:>26}",
            format!("{} / {}", name(key), name(against)),
            show(&paired(|x, y| x.rps / y.rps), 3),
            show(&paired(|x, y| x.p50 - y.p50), 0),
            show(&paired(|x, y| x.p99 - y.p99), 0),
            show(&paired(|x, y| x.cpu_us / y.cpu_us), 3),
        );
    }
}

// ===== instructions per request =====

/// `http instructions [FEW [MANY [CONNECTIONS]]]`: each variant's server under callgrind, sent
/// FEW and then MANY requests in two runs; the difference of the two runs' instructions over
/// MANY − FEW is its instructions per request, with start-up and connection set-up cancelled.
/// With `keep`, callgrind's files stay there (`KEY-FEW`, `KEY-MANY`) for `callgrind_annotate`.
fn instructions(args: impl Iterator<Item = String>, only: &[String], keep: Option<PathBuf>) {
    let mut args = args.map(|a| a.parse::<u64>().expect("a count"));
    let few = args.next().unwrap_or(2_000);
    let many = args.next().unwrap_or(12_000);
    let connections = args.next().unwrap_or(16);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("seawall-http-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "server instructions per request (callgrind, user space), {few} and {many} requests on \
         {connections} connections"
    );
    let mut counted: Vec<(&str, f64)> = Vec::new();
    for key in only {
        let mut totals = [0u64; 2];
        for (total, requests) in totals.iter_mut().zip([few, many]) {
            let out = dir.join(format!("{key}-{requests}"));
            let prefix = [
                "valgrind".to_owned(),
                "-q".to_owned(),
                "--tool=callgrind".to_owned(),
                format!("--callgrind-out-file={}", out.display()),
            ];
            let server = Server::start(&prefix, &[key.as_str()]);
            let url = server.urls[0].1.clone();
            rt.block_on(async {
                let mut tasks = Vec::new();
                for i in 0..connections {
                    let mut conn = connect(&url).await;
                    let share = requests / connections + u64::from(i < requests % connections);
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..share {
                            assert!(conn.request().await, "a success");
                        }
                    }));
                }
                for task in tasks {
                    task.await.expect("a load task");
                }
            });
            server.stop();
            *total = callgrind_total(&out);
        }
        let per_request = (totals[1] - totals[0]) as f64 / (many - few) as f64;
        println!("  {:<32} {:>10.0}", name(key), per_request);
        counted.push((key.as_str(), per_request));
    }
    for (key, against) in pairs() {
        let count = |key: &str| counted.iter().find(|(k, _)| *k == key).map(|(_, c)| *c);
        if let (Some(a), Some(b)) = (count(key), count(against)) {
            println!(
                "  {:<60} {:>+8.0} ({:+.2} %)",
                format!("{} / {}", name(key), name(against)),
                a - b,
                (a / b - 1.0) * 100.0
            );
        }
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The total of a callgrind output file's events (its `summary:` or `totals:` line).
fn callgrind_total(file: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(file).expect("callgrind's output");
    text.lines()
        .find_map(|line| {
            let rest = line
                .strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .expect("a summary line in callgrind's output")
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("serve") => {
            let keys: Vec<String> = args.skip(1).collect();
            serve(&keys);
        }
        Some("instructions") => {
            args.next();
            let mut counts = Vec::new();
            let mut only: Vec<String> = keys().iter().map(|k| (*k).to_owned()).collect();
            let mut keep = None;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--only" => {
                        let list = args.next().expect("--only needs a list");
                        only = list.split(',').map(str::to_owned).collect();
                    }
                    "--keep" => {
                        keep = Some(PathBuf::from(
                            args.next().expect("--keep needs a directory"),
                        ))
                    }
                    _ => counts.push(arg),
                }
            }
            instructions(counts.into_iter(), &only, keep);
        }
        _ => measure(&options(args)),
    }
}

#[cfg(test)]
mod tests {
    use super::complete_response;

    #[test]
    fn a_response_is_complete_once_its_body_is() {
        let whole = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        for cut in 0..whole.len() {
            assert_eq!(complete_response(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(complete_response(whole), Some(200));
        let empty = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(complete_response(empty), Some(502));
    }

    #[test]
    fn a_chunked_response_is_complete_at_its_last_chunk() {
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        let mut partial = head.clone();
        partial.extend_from_slice(b"2\r\nok\r\n");
        assert_eq!(complete_response(&partial), None);
        partial.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(complete_response(&partial), Some(200));
    }
}
