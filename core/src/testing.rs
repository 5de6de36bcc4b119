//! Test support: a metrics recorder whose values can be read back at any time, a layer that
//! slows calls down, and (feature `test-util`) serving an axum app on 127.0.0.1 and sending it
//! requests over real connections, a [`Gate`] that holds calls until the test lets them
//! through, and [`trace_init`] for tracing output in tests.
//!
//! `metrics-util`'s `DebuggingRecorder` resets counters and gauges on every snapshot, which
//! makes a gauge that was set once read 0 the second time. [`TestRecorder`] keeps them.
//!
//! ```
//! use seawall_core::metrics::MetricScope;
//! use seawall_core::testing::TestRecorder;
//!
//! let recorder = TestRecorder::new();
//! let counter = recorder.install_for(|| MetricScope::new("db").counter("seawall_x_total", &[("k", "v")]));
//! counter.increment(3);
//! assert_eq!(recorder.counter("seawall_x_total", &[("name", "db"), ("k", "v")]), 3);
//! assert_eq!(recorder.counter("seawall_x_total", &[("name", "db")]), 3);
//! ```

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// A metrics recorder for tests that keeps every value readable.
#[derive(Clone)]
pub struct TestRecorder {
    registry: Arc<Registry<Key, AtomicStorage>>,
    descriptions: Arc<Mutex<Descriptions>>,
}

type Descriptions = HashMap<String, (Option<Unit>, String)>;

impl std::fmt::Debug for TestRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRecorder").finish_non_exhaustive()
    }
}

impl Default for TestRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            registry: Arc::new(Registry::atomic()),
            descriptions: Arc::default(),
        }
    }

    /// Runs `f` (which builds layers and so registers their handles) with this recorder.
    ///
    /// A [`CallCounter`](crate::metrics::CallCounter) registered before finds this recorder
    /// on its first count in `f`, not up to [`LOOK_EVERY`](crate::metrics::LOOK_EVERY) counts
    /// later as it finds one installed otherwise.
    pub fn install_for<T>(&self, f: impl FnOnce() -> T) -> T {
        crate::metrics::look_on_next_count();
        metrics::with_local_recorder(self, f)
    }

    /// The sum of every counter named `name` whose labels include `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.registry
            .get_counter_handles()
            .into_iter()
            .filter(|(key, _)| matches(key, name, labels))
            .map(|(_, value)| value.load(Ordering::SeqCst))
            .sum()
    }

    /// The value of the gauge named `name` whose labels include `labels`; `None` when there is
    /// no such gauge or more than one.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self
            .registry
            .get_gauge_handles()
            .into_iter()
            .filter(|(key, _)| matches(key, name, labels));
        let (_, value) = found.next()?;
        if found.next().is_some() {
            return None;
        }
        Some(f64::from_bits(value.load(Ordering::SeqCst)))
    }

    /// The unit and help text `name` was described with, if it was.
    pub fn description(&self, name: &str) -> Option<(Option<Unit>, String)> {
        let descriptions = self.descriptions.lock().unwrap_or_else(|e| e.into_inner());
        descriptions.get(name).cloned()
    }

    fn describe(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        let mut descriptions = self.descriptions.lock().unwrap_or_else(|e| e.into_inner());
        descriptions.insert(name.as_str().to_owned(), (unit, help.into_owned()));
    }

    /// Every value recorded into histograms named `name` whose labels include `labels`.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let mut values = Vec::new();
        for (key, bucket) in self.registry.get_histogram_handles() {
            if matches(&key, name, labels) {
                bucket.data_with(|xs| values.extend_from_slice(xs));
            }
        }
        values
    }
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe(name, unit, help);
    }

    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe(name, unit, help);
    }

    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe(name, unit, help);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// Delays every call by a fixed time before the inner service sees it: a slow handler or a
/// slow dependency in tests.
#[derive(Debug, Clone, Copy)]
pub struct DelayLayer(pub std::time::Duration);

impl<S> tower::Layer<S> for DelayLayer {
    type Service = Delay<S>;

    fn layer(&self, inner: S) -> Delay<S> {
        Delay {
            inner,
            delay: self.0,
        }
    }
}

/// The service of a [`DelayLayer`].
#[derive(Debug, Clone)]
pub struct Delay<S> {
    inner: S,
    delay: std::time::Duration,
}

impl<S, Req> tower::Service<Req> for Delay<S>
where
    S: tower::Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let call = self.inner.call(req);
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            call.await
        })
    }
}

/// Serving an axum app on 127.0.0.1 and calling it over fresh HTTP/1 connections.
#[cfg(feature = "test-util")]
pub mod serve {
    use std::net::SocketAddr;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    use tokio::net::{TcpListener, TcpStream};

    /// Serves `app` on a port of its own on 127.0.0.1, on the current runtime, and returns its
    /// address.
    pub async fn serve(app: axum::Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the server runs") });
        addr
    }

    /// Sends `GET path` to `addr` over a connection of its own and returns the response with its
    /// body read.
    pub async fn get(addr: SocketAddr, path: &str) -> Response<Bytes> {
        get_with(addr, path, &[]).await
    }

    /// Sends `GET path` with `headers` to `addr` over a connection of its own and returns the
    /// response with its body read.
    pub async fn get_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response<Bytes> {
        let stream = TcpStream::connect(addr).await.expect("a connection");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1 handshake");
        tokio::spawn(conn);
        let mut req = Request::get(path).header("host", "localhost");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Empty::<Bytes>::new()).expect("a valid request");
        let res = sender.send_request(req).await.expect("a response");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("a body").to_bytes();
        Response::from_parts(parts, body)
    }

    /// The body of `res` as text.
    pub fn text(res: &Response<Bytes>) -> &str {
        std::str::from_utf8(res.body()).expect("a UTF-8 body")
    }
}

/// Reading configurations from TOML and from JSON, for tests of their errors.
pub mod config {
    use std::fmt::Debug;

    use serde::de::DeserializeOwned;

    /// The errors reading `toml` as a `T` gives, from TOML and from the same document written
    /// as JSON.
    ///
    /// # Panics
    ///
    /// When `toml` is not a TOML document, or either read succeeds.
    pub fn read_errors<T: DeserializeOwned + Debug>(toml: &str) -> [String; 2] {
        let document: serde_json::Value =
            toml::from_str(toml).unwrap_or_else(|e| panic!("not TOML: {toml}: {e}"));
        let from_toml = toml::from_str::<T>(toml).expect_err(toml).to_string();
        let from_json = serde_json::from_str::<T>(&document.to_string())
            .expect_err(toml)
            .to_string();
        [from_toml, from_json]
    }

    /// Checks that reading each document of `cases` as a `T`, from TOML and from JSON, fails
    /// with an error saying what the case expects.
    ///
    /// # Panics
    ///
    /// On the first case whose error says something else.
    pub fn assert_errors<T: DeserializeOwned + Debug>(cases: &[(&str, &str)]) {
        for (toml, expected) in cases {
            for error in read_errors::<T>(toml) {
                assert!(
                    error.contains(expected),
                    "reading {toml:?}\n  expected: {expected}\n  got: {error}"
                );
            }
        }
    }
}

/// A current-thread runtime with the timer on tokio's paused clock, for a test (a property
/// test, say) that cannot be a `#[tokio::test(start_paused = true)]`: the clock moves only when
/// every task waits, by as much as the next timer needs.
#[cfg(feature = "test-util")]
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

/// Installs a tracing subscriber that writes through the test harness, so a failing test shows
/// what seawall's layers logged (state changes, rejections) and a passing one stays quiet.
/// Once per test binary; later calls do nothing.
///
/// seawall's events are shown from `debug` up, or from the level `RUST_LOG` names (`trace`,
/// `info`, ...); other crates' (hyper, h2, tonic) from `warn` up.
#[cfg(feature = "test-util")]
pub fn trace_init() {
    use tracing::Level;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let level = std::env::var("RUST_LOG")
            .ok()
            .and_then(|level| level.parse::<Level>().ok())
            .unwrap_or(Level::DEBUG);
        let filter = Targets::new()
            .with_target("seawall", level)
            .with_default(Level::WARN);
        // Another subscriber installed first (by the test itself) is left in place.
        let _ = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .with(filter)
            .try_init();
    });
}

/// Holds calls until the test lets them through, and tells the test when they have arrived: a
/// handler or a downstream that takes exactly as long as the test needs, with no sleeps and no
/// polling.
///
/// ```
/// use seawall_core::testing::Gate;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let gate = Gate::new();
/// let call = tokio::spawn({
///     let gate = gate.clone();
///     async move { gate.pass().await; "answered" }
/// });
/// gate.arrived(1).await; // the call is in, and held
/// gate.open(1);
/// assert_eq!(call.await.unwrap(), "answered");
/// # }
/// ```
#[cfg(feature = "test-util")]
#[derive(Debug, Clone)]
pub struct Gate {
    arrived: Arc<tokio::sync::Semaphore>,
    open: Arc<tokio::sync::Semaphore>,
}

#[cfg(feature = "test-util")]
impl Gate {
    /// A closed gate that no call has reached.
    pub fn new() -> Self {
        Self {
            arrived: Arc::new(tokio::sync::Semaphore::new(0)),
            open: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }

    /// What a held call runs: counts its arrival, then waits until the gate lets it through.
    pub async fn pass(&self) {
        self.arrived.add_permits(1);
        self.open.acquire().await.expect("never closed").forget();
    }

    /// Waits until `calls` more calls have arrived at the gate.
    pub async fn arrived(&self, calls: u32) {
        self.arrived
            .acquire_many(calls)
            .await
            .expect("never closed")
            .forget();
    }

    /// Lets `calls` held or future calls through.
    pub fn open(&self, calls: usize) {
        self.open.add_permits(calls);
    }

    /// A layer whose calls pass this gate before the inner service sees them.
    pub fn layer(&self) -> GateLayer {
        GateLayer(self.clone())
    }
}

/// Makes every call pass a [`Gate`] before the inner service sees it.
#[cfg(feature = "test-util")]
#[derive(Debug, Clone)]
pub struct GateLayer(Gate);

#[cfg(feature = "test-util")]
impl<S> tower::Layer<S> for GateLayer {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            gate: self.0.clone(),
        }
    }
}

#[cfg(feature = "test-util")]
impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

/// The service of a [`GateLayer`].
#[cfg(feature = "test-util")]
#[derive(Debug, Clone)]
pub struct Gated<S> {
    inner: S,
    gate: Gate,
}

#[cfg(feature = "test-util")]
impl<S, Req> tower::Service<Req> for Gated<S>
where
    S: tower::Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let call = self.inner.call(req);
        let gate = self.gate.clone();
        Box::pin(async move {
            gate.pass().await;
            call.await
        })
    }
}

/// A `redis-server` of the test's own, on a free port of 127.0.0.1 in a temporary directory,
/// with no persistence, for tests of the stores that share quotas across a fleet.
///
/// Tests that need Redis call [`RedisServer::start`](redis::RedisServer::start) (a server they
/// may stop and restart) or [`redis_url`](redis::redis_url) (`SEAWALL_REDIS_URL` when CI
/// exported one, else a server of their own). Where no server can be started, they skip with a
/// loud message, except in CI (`CI` set), where
/// they fail: CI installs and starts Redis, so a missing one is a broken CI.
#[cfg(feature = "test-util")]
pub mod redis {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    /// The environment variable that names a running Redis for tests (`redis://127.0.0.1:6379`).
    pub const URL_VAR: &str = "SEAWALL_REDIS_URL";

    /// A `redis-server` process this test started; killed and its directory removed on drop.
    #[derive(Debug)]
    pub struct RedisServer {
        child: Option<Child>,
        port: u16,
        dir: PathBuf,
    }

    /// Says why Redis tests cannot run: a panic in CI, a loud message elsewhere.
    pub fn unavailable(why: &str) {
        if std::env::var_os("CI").is_some() {
            panic!("Redis is required in CI but {why}");
        }
        eprintln!(
            "\n!!!!! SKIPPED: a Redis test did not run: {why}. Install `redis-server` \
             (apt-get install redis-server) or set {URL_VAR}. !!!!!\n"
        );
    }

    /// The URL of a Redis for this test: `SEAWALL_REDIS_URL` if set, else a server of the
    /// test's own, returned with it so that it lives as long as the test needs it. `None`
    /// (after a loud message) when neither is to be had outside CI.
    pub async fn redis_url() -> Option<(String, Option<RedisServer>)> {
        if let Ok(url) = std::env::var(URL_VAR)
            && !url.is_empty()
        {
            return Some((url, None));
        }
        let server = RedisServer::start().await?;
        Some((server.url(), Some(server)))
    }

    impl RedisServer {
        /// Starts `redis-server` on a free port; `None` (after a loud message) outside CI when
        /// it cannot be started.
        pub async fn start() -> Option<Self> {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let dir =
                std::env::temp_dir().join(format!("seawall-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            let mut server = Self {
                child: None,
                port,
                dir,
            };
            match server.spawn().await {
                Ok(()) => Some(server),
                Err(why) => {
                    unavailable(&why);
                    None
                }
            }
        }

        async fn spawn(&mut self) -> Result<(), String> {
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--enable-debug-command", "yes"])
                .arg("--dir")
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("`redis-server` could not be started ({e})"))?;
            self.child = Some(child);
            for _ in 0..500 {
                if ping(self.port) {
                    return Ok(());
                }
                if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                    return Err(format!("`redis-server` exited at once ({status})"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err("`redis-server` did not answer PING within 5 s".into())
        }

        /// Its URL, `redis://127.0.0.1:<port>`.
        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        /// Its port.
        pub fn port(&self) -> u16 {
            self.port
        }

        /// Kills it at once (SIGKILL), as a crash would.
        pub fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Starts it again on the same port, empty (no persistence).
        ///
        /// # Panics
        ///
        /// When it does not come back.
        pub async fn restart(&mut self) {
            self.kill();
            self.spawn().await.expect("redis-server restarts");
        }

        /// Sends one command (inline syntax, such as `SET k v`) and returns the raw reply.
        pub fn command(&self, line: &str) -> String {
            command(self.port, line)
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn ping(port: u16) -> bool {
        command(port, "PING").starts_with("+PONG")
    }

    /// Sends one inline command to the Redis on `port` of 127.0.0.1 and returns the first
    /// chunk of its reply (empty when it cannot be reached).
    pub fn command(port: u16, line: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream.write_all(format!("{line}\r\n").as_bytes()).is_err() {
            return String::new();
        }
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}
