//! The shop against a real PostgreSQL, over 127.0.0.1 on the real clock.
//!
//! Each test gets a database of its own: a fresh one in the cluster `SEAWALL_PG_URL` names
//! (`.ci/run` starts one), else a throwaway cluster it starts itself (`initdb` and `pg_ctl`
//! from the PATH or `/usr/lib/postgresql/*/bin`, run as the `postgres` user when root). The
//! outage test always starts its own, to kill it. Without PostgreSQL the tests say so loudly
//! and pass, except in CI (`CI` set), where they fail.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusBuilder;
use seawall::circuit_breaker::CircuitState;
use seawall_examples::shop::config::{Source, builtin};
use seawall_examples::shop::{Ports, Shop};
use serde_json::{Value, json};

// ===== PostgreSQL =====

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A throwaway cluster in a temporary directory, stopped and removed when dropped.
struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SEAWALL_PG_BIN") {
        return Some(dir.into());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    });
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Runs `program` with `args`, as `postgres` when we are root (PostgreSQL refuses root).
fn run_pg(program: &Path, args: &[&str]) -> Result<(), String> {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let output = command
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start() -> Result<Self, String> {
        let bin = pg_bin().ok_or("no initdb found (apt-get install postgresql)")?;
        let dir = std::env::temp_dir().join(format!(
            "seawall-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("cannot chown the cluster directory to postgres".into());
            }
        }
        let cluster = Self {
            port: free_port(),
            bin,
            dir,
        };
        let data = cluster.dir.join("data");
        run_pg(
            &cluster.bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        cluster.resume()?;
        Ok(cluster)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (again) the server.
    fn resume(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        run_pg(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-o",
                &options,
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        )
    }

    /// Kills the server as a crash would.
    fn kill(&self) {
        let _ = run_pg(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A database for one test, and what must live as long as it.
struct Database {
    url: String,
    _cluster: Option<Cluster>,
}

fn unavailable(why: String) -> Option<Database> {
    if std::env::var_os("CI").is_some() {
        panic!("PostgreSQL is required in CI: {why}");
    }
    eprintln!("\n!!!!! SKIPPED: PostgreSQL could not be started: {why}\n");
    None
}

async fn database() -> Option<Database> {
    let Ok(server) = std::env::var("SEAWALL_PG_URL") else {
        return own_cluster();
    };
    let name = format!(
        "shop_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let created = async {
        let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
    };
    match created.await {
        Ok(()) => {
            let mut config: tokio_postgres::Config = server.parse().unwrap();
            config.dbname(&name);
            let url = format!(
                "postgres://{}@{}/{name}",
                config.get_user().unwrap_or("postgres"),
                server
                    .split('@')
                    .nth(1)
                    .and_then(|rest| rest.split('/').next())
                    .unwrap()
            );
            Some(Database {
                url,
                _cluster: None,
            })
        }
        Err(err) => unavailable(format!("SEAWALL_PG_URL: {err}")),
    }
}

fn own_cluster() -> Option<Database> {
    match Cluster::start() {
        Ok(cluster) => Some(Database {
            url: cluster.url(),
            _cluster: Some(cluster),
        }),
        Err(why) => unavailable(why),
    }
}

async fn sql_count(url: &str, query: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.query_one(query, &[]).await.unwrap().get(0)
}

// ===== HTTP =====

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

#[derive(Clone)]
struct Http(Client<HttpConnector, Full<Bytes>>);

impl Http {
    /// A client that opens a connection for each request: after refusing a body it did not
    /// read (413), a server closes the connection, and a pooled client may send the next
    /// request on it before it sees the close (hyper's `IncompleteMessage`).
    fn unpooled() -> Self {
        Self(
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http(),
        )
    }

    fn new() -> Self {
        Self(Client::builder(TokioExecutor::new()).build_http())
    }

    async fn send(&self, method: Method, url: String, key: Option<&str>, body: Bytes) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = self
            .0
            .request(request.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, url: String) -> Answer {
        self.send(Method::GET, url, None, Bytes::new()).await
    }

    async fn order(&self, shop: &Shop, key: &str, body: &Value) -> Answer {
        self.send(
            Method::POST,
            format!("http://{}/api/orders", shop.addrs.gateway),
            Some(key),
            Bytes::from(body.to_string()),
        )
        .await
    }
}

impl Http {
    /// Places an order as a client told 503 does: again, with the same key, a little later.
    async fn order_until_answered(&self, shop: &Shop, key: &str) -> Answer {
        for _ in 0..20 {
            let answer = self.order(shop, key, &an_order()).await;
            if answer.status != StatusCode::SERVICE_UNAVAILABLE {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("unavailable twenty times over");
    }
}

fn an_order() -> Value {
    json!({ "user_id": 3, "items": [{ "product_id": 7, "quantity": 2 }, { "product_id": 9, "quantity": 1 }] })
}

async fn start(url: &str, source: Source) -> Arc<Shop> {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let metrics = PrometheusBuilder::new().build_recorder().handle();
    Shop::start(url, source, Ports::default(), metrics)
        .await
        .expect("the shop starts")
}

/// The shop reading its configuration from the files in `dir`, and watching them.
async fn start_watching(url: &str, dir: &Path) -> Arc<Shop> {
    let source = Source {
        dir: Some(dir.to_path_buf()),
        env: Vec::new(),
    };
    let shop = start(url, source).await;
    shop.watch(Duration::from_millis(50));
    shop
}

// ===== the tests =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_products_create_orders_and_read_them_back() {
    let Some(db) = database().await else { return };
    let shop = start(&db.url, Source::default()).await;
    let http = Http::new();
    let gw = shop.addrs.gateway;

    let list = http.get(format!("http://{gw}/api/products")).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body.as_array().unwrap().len(), 50, "the seed data");
    let seven = http.get(format!("http://{gw}/api/products/7")).await;
    assert_eq!(seven.body["price_cents"], 799);
    let missing = http.get(format!("http://{gw}/api/products/999")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body["error"].is_string());
    let user = http.get(format!("http://{gw}/api/users/3")).await;
    assert_eq!(user.body["email"], "user3@example.com");

    let created = http.order(&shop, "browse-1", &an_order()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["total_cents"], 2 * 799 + 999);
    let id = created.body["id"].as_i64().unwrap();
    let read = http.get(format!("http://{gw}/api/orders/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, created.body, "read back as placed");
    assert_eq!(
        sql_count(&db.url, "SELECT count(*) FROM order_items").await,
        2
    );

    for service in [gw, shop.addrs.products, shop.addrs.orders, shop.addrs.users] {
        assert_eq!(
            http.get(format!("http://{service}/health/live"))
                .await
                .status,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_places_one_order() {
    let Some(db) = database().await else { return };
    let shop = start(&db.url, Source::default()).await;
    let http = Http::new();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (http, shop) = (http.clone(), shop.clone());
        tasks.push(tokio::spawn(async move {
            http.order_until_answered(&shop, "same-key").await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        ids.push(answer.body["id"].as_i64().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer names the one order");
    let again = http.order(&shop, "same-key", &an_order()).await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["id"].as_i64(), Some(ids[0]));
    assert_eq!(sql_count(&db.url, "SELECT count(*) FROM orders").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_4xx_and_writes_nothing() {
    let Some(db) = database().await else { return };
    let shop = start(&db.url, Source::default()).await;
    let http = Http::unpooled();
    let url = format!("http://{}/api/orders", shop.addrs.gateway);
    let huge = format!(
        "{{\"user_id\": 1, \"items\": [{}]}}",
        vec!["{\"product_id\": 1, \"quantity\": 1}"; 2000].join(",")
    );
    let cases: Vec<(&str, Option<&str>, String)> = vec![
        ("malformed JSON", Some("k1"), "{\"user_id\": ".into()),
        ("not an order", Some("k2"), "[1, 2]".into()),
        (
            "unknown product",
            Some("k3"),
            json!({"user_id": 1, "items": [{"product_id": 4242, "quantity": 1}]}).to_string(),
        ),
        (
            "negative quantity",
            Some("k4"),
            json!({"user_id": 1, "items": [{"product_id": 1, "quantity": -3}]}).to_string(),
        ),
        (
            "zero quantity",
            Some("k5"),
            json!({"user_id": 1, "items": [{"product_id": 1, "quantity": 0}]}).to_string(),
        ),
        (
            "no items",
            Some("k6"),
            json!({"user_id": 1, "items": []}).to_string(),
        ),
        (
            "unknown user",
            Some("k7"),
            json!({"user_id": 999, "items": [{"product_id": 1, "quantity": 1}]}).to_string(),
        ),
        ("oversized body", Some("k8"), huge),
        ("no Idempotency-Key", None, an_order().to_string()),
        (
            "a huge quantity",
            Some("k9"),
            json!({"user_id": 1, "items": [{"product_id": 1, "quantity": 1_000_000_000_000i64}]})
                .to_string(),
        ),
    ];
    for (what, key, body) in cases {
        let answer = http
            .send(Method::POST, url.clone(), key, Bytes::from(body))
            .await;
        assert!(answer.status.is_client_error(), "{what}: {}", answer.status);
        assert!(
            answer.body["error"].is_string(),
            "{what}: a JSON error, got {:?}",
            answer.body
        );
    }
    let bad_id = http
        .get(format!("http://{}/api/products/seven", shop.addrs.gateway))
        .await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert!(bad_id.body["error"].is_string());
    assert_eq!(
        sql_count(&db.url, "SELECT count(*) FROM orders").await,
        0,
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_and_search_fall_back_and_the_gateway_stays_ready() {
    let Some(db) = database().await else { return };
    let shop = start(&db.url, Source::default()).await;
    let http = Http::new();
    let gw = shop.addrs.gateway;
    let fine = http.get(format!("http://{gw}/api/recommendations")).await;
    assert_eq!(fine.status, StatusCode::OK);
    assert!(fine.headers.get("x-fallback").is_none());

    let switched = http
        .send(
            Method::POST,
            format!("http://{}/admin/chaos/recommendations/on", shop.addrs.admin),
            None,
            Bytes::new(),
        )
        .await;
    assert_eq!(switched.body["recommendations"]["faults"], true);
    assert_eq!(
        http.send(
            Method::POST,
            format!("http://{gw}/admin/chaos/recommendations/on"),
            None,
            Bytes::new()
        )
        .await
        .status,
        StatusCode::NOT_FOUND,
        "the admin endpoint is off the public router"
    );
    for _ in 0..20 {
        let answer = http.get(format!("http://{gw}/api/recommendations")).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.headers["x-fallback"], "popular");
        assert_eq!(answer.body["products"].as_array().unwrap().len(), 5);
    }
    assert_eq!(
        shop.gateway.recommendations.breaker.state(),
        CircuitState::Open
    );
    let ready = http.get(format!("http://{gw}/health/ready")).await;
    assert_eq!(ready.status, StatusCode::OK, "degraded, still ready");
    http.send(
        Method::POST,
        format!(
            "http://{}/admin/chaos/recommendations/off",
            shop.addrs.admin
        ),
        None,
        Bytes::new(),
    )
    .await;

    // Search: the search service while it answers, plain SQL while it fails.
    let search = |q: &'static str| {
        let http = http.clone();
        async move {
            http.get(format!("http://{gw}/api/products/search?q={q}"))
                .await
        }
    };
    let found = search("Product%2042").await;
    assert_eq!(found.status, StatusCode::OK);
    assert!(found.headers.get("x-fallback").is_none());
    assert_eq!(found.body["products"][0]["id"], 42);
    http.send(
        Method::POST,
        format!("http://{}/admin/chaos/search/on", shop.addrs.admin),
        None,
        Bytes::new(),
    )
    .await;
    for _ in 0..10 {
        let found = search("Product%2042").await;
        assert_eq!(found.status, StatusCode::OK);
        assert_eq!(found.headers["x-fallback"], "sql");
        assert_eq!(found.body["products"][0]["id"], 42);
    }
    let bad = search("%27%3B%20DROP").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["error"].is_string());
}

fn write(dir: &Path, service: &str, text: &str) {
    // Written whole and renamed, as an editor or a config map would.
    let tmp = dir.join(format!(".{service}.toml.new"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{service}.toml"))).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_traffic_takes_the_new_threshold_and_fails_no_call() {
    let Some(db) = database().await else { return };
    let dir = std::env::temp_dir().join(format!("seawall-shop-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir, "orders", builtin("orders"));
    let source = Source {
        dir: Some(dir.clone()),
        env: vec![("SHOP__ORDERS__RETRY__MAX_ATTEMPTS".into(), "2".into())],
    };
    let shop = start(&db.url, source).await;
    shop.watch(Duration::from_millis(50));
    assert_eq!(
        shop.orders.db.tx_retry().max_attempts,
        2,
        "the environment overrides the file"
    );
    let breaker = shop.orders.db.breaker().clone();
    assert_eq!(breaker.config().failure_rate_threshold(), Some(0.5));

    let http = Http::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut traffic = Vec::new();
    for worker in 0..4 {
        let (http, shop, stop) = (http.clone(), shop.clone(), stop.clone());
        traffic.push(tokio::spawn(async move {
            let mut n = 0;
            let mut failed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let answer = http
                    .order(&shop, &format!("reload-{worker}-{n}"), &an_order())
                    .await;
                if answer.status != StatusCode::CREATED {
                    failed.push((answer.status, answer.body));
                }
                n += 1;
            }
            (n, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls_before = breaker.counts().calls;

    let lowered = builtin("orders").replace(
        "failure_rate_threshold = 0.5",
        "failure_rate_threshold = 0.3",
    );
    write(&dir, "orders", &lowered);
    let deadline = Instant::now() + Duration::from_secs(10);
    while breaker.config().failure_rate_threshold() != Some(0.3) {
        assert!(
            Instant::now() < deadline,
            "the file change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        breaker.counts().calls >= calls_before,
        "the window survives the reload"
    );
    assert_eq!(
        shop.orders.db.tx_retry().max_attempts,
        2,
        "the override still holds"
    );

    let invalid = lowered.replace(
        "failure_rate_threshold = 0.3",
        "failure_rate_threshold = 1.5",
    );
    write(&dir, "orders", &invalid);
    let err = shop.reload().unwrap_err();
    assert!(
        err.to_string()
            .contains("database.circuit_breaker.failure_rate_threshold"),
        "the error names the field: {err}"
    );
    let other_window = lowered.replace("window = { count = 20 }", "window = { count = 30 }");
    write(&dir, "orders", &other_window);
    let err = shop.reload().unwrap_err();
    assert!(
        err.to_string().contains("window"),
        "a window needs a restart: {err}"
    );
    assert_eq!(
        breaker.config().failure_rate_threshold(),
        Some(0.3),
        "the old config stays"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for task in traffic {
        let (n, failed) = task.await.unwrap();
        assert!(
            failed.is_empty(),
            "no call fails because of a reload: {failed:?}"
        );
        total += n;
    }
    assert_eq!(
        sql_count(&db.url, "SELECT count(*) FROM orders").await,
        total as i64
    );
    assert_eq!(breaker.state(), CircuitState::Closed);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until `done` holds, as the watcher picks up a file change; panics after 10 s.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: the file change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A directory of config files for one test.
fn config_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seawall-shop-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_takes_new_retry_attempts_and_a_new_rate_limit() {
    let Some(db) = database().await else { return };
    let dir = config_dir("retry-rate-limit");
    // Recommendations: retries wait 1 ms and draw from a budget with credit to spare, and the
    // breaker judges no window of these few calls, so each request's attempts all reach the
    // breaker, whose window counts them.
    let gateway = builtin("gateway")
        .replace(
            "retry = { max_attempts = 1 }",
            r#"retry = { max_attempts = 1, backoff = { kind = "constant", base = "1ms", jitter = "none" }, budget = { ratio = 0.2, min_per_second = 1000 } }"#,
        )
        .replace(
            "window = { count = 20 }, minimum_calls = 5,",
            r#"window = { count = 100 }, minimum_calls = 100, consecutive_failures = "off","#,
        );
    write(&dir, "gateway", &gateway);
    let shop = start_watching(&db.url, &dir).await;
    let http = Http::new();
    let gw = shop.addrs.gateway;
    let recommendations = &shop.gateway.recommendations;
    let rate_limit = shop.gateway.server.rate_limit.clone().unwrap();
    shop.recommendations_chaos.enable();

    http.get(format!("http://{gw}/api/recommendations")).await;
    assert_eq!(recommendations.breaker.counts().calls, 1, "one attempt");
    for _ in 0..10 {
        let answer = http.get(format!("http://{gw}/api/products")).await;
        assert_eq!(answer.status, StatusCode::OK);
    }

    let edited = gateway
        .replace("max_attempts = 1,", "max_attempts = 3,")
        .replace(
            "rate_limit = { quota = { per_second = 2000, burst = 500 } }",
            "rate_limit = { quota = { per_minute = 3, burst = 3 } }",
        );
    write(&dir, "gateway", &edited);
    until("retry", || {
        recommendations.retry.config().max_attempts() == 3
    })
    .await;
    until("rate limit", || rate_limit.quota().burst() == 3).await;

    http.get(format!("http://{gw}/api/recommendations")).await;
    assert_eq!(
        recommendations.breaker.counts().calls,
        1 + 3,
        "three attempts now, in the window the breaker kept"
    );
    let mut limited = 0;
    for _ in 0..10 {
        let answer = http.get(format!("http://{gw}/api/products")).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert!(answer.headers.contains_key("retry-after"));
        } else {
            assert_eq!(answer.status, StatusCode::OK);
        }
    }
    // Three a minute, the recommendations call above one of them.
    assert_eq!(limited, 10 - 2, "the new quota answers 429");

    let unlimited = edited.replace("rate_limit = { quota = { per_minute = 3, burst = 3 } }", "");
    write(&dir, "gateway", &unlimited);
    let err = shop.reload().unwrap_err();
    assert!(
        err.to_string().contains("server.rate_limit"),
        "a rate limit is taken away by a restart: {err}"
    );
    assert_eq!(rate_limit.quota().burst(), 3, "the old config stays");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_takes_the_gateways_new_attempt_timeouts_and_fails_no_call() {
    let Some(db) = database().await else { return };
    let dir = config_dir("attempt-timeout");
    write(&dir, "gateway", builtin("gateway"));
    let shop = start_watching(&db.url, &dir).await;
    let orders = shop.gateway.orders.attempt_timeout.clone();
    let products = shop.gateway.products.attempt_timeout.clone();
    assert_eq!(orders.timeout(), Duration::from_secs(1));
    assert_eq!(products.timeout(), Duration::from_millis(500));

    let http = Http::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut traffic = Vec::new();
    for worker in 0..4 {
        let (http, shop, stop) = (http.clone(), shop.clone(), stop.clone());
        traffic.push(tokio::spawn(async move {
            let mut n = 0;
            let mut failed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let answer = http
                    .order(&shop, &format!("timeout-{worker}-{n}"), &an_order())
                    .await;
                if answer.status != StatusCode::CREATED {
                    failed.push((answer.status, answer.body));
                }
                n += 1;
            }
            (n, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let shorter = builtin("gateway")
        .replace(
            "total_timeout = \"2s\"\nattempt_timeout = \"1s\"",
            "total_timeout = \"2s\"\nattempt_timeout = \"700ms\"",
        )
        .replace("attempt_timeout = \"500ms\"", "attempt_timeout = \"250ms\"");
    assert_ne!(shorter, builtin("gateway"));
    write(&dir, "gateway", &shorter);
    until("orders", || orders.timeout() == Duration::from_millis(700)).await;
    assert_eq!(products.timeout(), Duration::from_millis(250));

    let longer_than_total =
        shorter.replace("attempt_timeout = \"700ms\"", "attempt_timeout = \"5s\"");
    write(&dir, "gateway", &longer_than_total);
    let err = shop.reload().unwrap_err();
    assert!(
        err.to_string().contains("orders.attempt_timeout"),
        "the error names the field: {err}"
    );
    let adaptive = shorter.replace(
        "attempt_timeout = \"700ms\"",
        "attempt_timeout = { multiplier = 3 }",
    );
    write(&dir, "gateway", &adaptive);
    let err = shop.reload().unwrap_err();
    assert!(
        err.to_string().contains("orders.attempt_timeout"),
        "a fixed timeout becomes adaptive by a restart: {err}"
    );
    assert_eq!(
        orders.timeout(),
        Duration::from_millis(700),
        "the old config stays"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for task in traffic {
        let (n, failed) = task.await.unwrap();
        assert!(
            failed.is_empty(),
            "no call fails because of a reload: {failed:?}"
        );
        total += n;
    }
    assert_eq!(
        sql_count(&db.url, "SELECT count(*) FROM orders").await,
        total as i64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_takes_a_new_hedge_delay_and_refuses_turning_hedging_on_or_off() {
    let Some(db) = database().await else { return };
    let dir = config_dir("hedge");
    let section = "[products]\nname = \"products\"\n";
    let hedged =
        |hedge: &str| builtin("gateway").replace(section, &format!("{section}hedge = {hedge}\n"));
    let gateway = hedged(r#"{ delay = "200ms" }"#);
    assert_ne!(gateway, builtin("gateway"));
    write(&dir, "gateway", &gateway);
    let shop = start_watching(&db.url, &dir).await;
    let hedge = shop.gateway.products.hedge.clone().expect("products hedge");
    assert!(shop.gateway.orders.hedge.is_none());
    assert_eq!(hedge.delay(), Some(Duration::from_millis(200)));
    assert_eq!(hedge.max_attempts(), 2);
    let http = Http::new();
    let products = format!("http://{}/api/products", shop.addrs.gateway);
    assert_eq!(http.get(products.clone()).await.status, StatusCode::OK);

    let sooner = hedged(r#"{ delay = "50ms", max_attempts = 3 }"#);
    write(&dir, "gateway", &sooner);
    until("hedge", || hedge.delay() == Some(Duration::from_millis(50))).await;
    assert_eq!(hedge.max_attempts(), 3);
    assert_eq!(http.get(products.clone()).await.status, StatusCode::OK);

    write(&dir, "gateway", &hedged("{}"));
    let err = shop.reload().unwrap_err();
    assert!(
        err.to_string().contains("products.hedge.delay"),
        "a fixed delay becomes a percentile by a restart: {err}"
    );
    write(&dir, "gateway", builtin("gateway"));
    let err = shop.reload().unwrap_err();
    assert!(
        err.to_string().contains("products.hedge") && err.to_string().contains("restart"),
        "hedging is turned off by a restart: {err}"
    );
    let orders_too = sooner.replace(
        "[orders]\nname = \"orders\"\n",
        "[orders]\nname = \"orders\"\nhedge = { delay = \"50ms\" }\n",
    );
    assert_ne!(orders_too, sooner);
    write(&dir, "gateway", &orders_too);
    let err = shop.reload().unwrap_err();
    assert!(
        err.to_string().contains("orders.hedge") && err.to_string().contains("restart"),
        "hedging is turned on by a restart: {err}"
    );
    assert_eq!(
        (hedge.delay(), hedge.max_attempts()),
        (Some(Duration::from_millis(50)), 3),
        "the old config stays"
    );
    assert_eq!(http.get(products).await.status, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

#[derive(Default)]
struct Tally {
    created: Vec<(String, i64)>,
    failed_keys: Vec<String>,
    statuses: std::collections::BTreeMap<u16, usize>,
    slowest: Duration,
    unavailable_without_retry_after: usize,
    products_from_cache: usize,
}

/// Kills PostgreSQL during a bounded load run and starts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_fails_fast_and_the_shop_recovers_without_a_restart() {
    let cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        Err(why) => {
            unavailable(why);
            return;
        }
    };
    let url = cluster.url();
    let shop = start(&url, Source::default()).await;
    let http = Http::new();
    let gw = shop.addrs.gateway;
    // The products list is cached while the database is up.
    assert_eq!(
        http.get(format!("http://{gw}/api/products")).await.status,
        StatusCode::OK
    );

    const WORKERS: usize = 16;
    const REQUESTS: usize = 3000;
    let sent = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (http, shop, sent) = (http.clone(), shop.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                if n >= REQUESTS {
                    return tally;
                }
                let started = Instant::now();
                let answer = if n % 3 == 0 {
                    let a = http
                        .get(format!("http://{}/api/products", shop.addrs.gateway))
                        .await;
                    if a.headers.get("x-fallback").is_some_and(|v| v == "cache") {
                        tally.products_from_cache += 1;
                    }
                    a
                } else {
                    let key = format!("load-{worker}-{n}");
                    let a = http.order(&shop, &key, &an_order()).await;
                    match a.status {
                        StatusCode::CREATED => {
                            tally.created.push((key, a.body["id"].as_i64().unwrap()))
                        }
                        _ => tally.failed_keys.push(key),
                    }
                    a
                };
                tally.slowest = tally.slowest.max(started.elapsed());
                *tally.statuses.entry(answer.status.as_u16()).or_default() += 1;
                if answer.status == StatusCode::SERVICE_UNAVAILABLE
                    && answer.headers.get("retry-after").is_none()
                {
                    tally.unavailable_without_retry_after += 1;
                }
                // A 504 is the gateway's attempt timeout ending a call to the orders service
                // that was waiting on the database when it died; counted below, and rare.
                assert!(
                    answer.status.is_success()
                        || answer.status == StatusCode::SERVICE_UNAVAILABLE
                        || answer.status == StatusCode::GATEWAY_TIMEOUT,
                    "only 2xx, 503 and 504 during an outage, got {} {:?}",
                    answer.status,
                    answer.body
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    while sent.load(Ordering::SeqCst) < REQUESTS / 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill();
    let killed_at = sent.load(Ordering::SeqCst);
    // Readiness follows the database down.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = http
            .get(format!("http://{}/health/ready", shop.addrs.orders))
            .await;
        if ready.status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the orders service never went unready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gateway_ready = http.get(format!("http://{gw}/health/ready")).await;
    assert_eq!(
        gateway_ready.status,
        StatusCode::OK,
        "the gateway is degraded, not unready"
    );
    let products = http.get(format!("http://{gw}/api/products")).await;
    assert_eq!(products.status, StatusCode::OK);
    assert_eq!(
        products.headers["x-fallback"], "cache",
        "products served from the cache"
    );
    while sent.load(Ordering::SeqCst) < killed_at + REQUESTS / 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.resume().expect("PostgreSQL starts again");

    let mut tally = Tally::default();
    for worker in workers {
        let t = worker.await.unwrap();
        tally.created.extend(t.created);
        tally.failed_keys.extend(t.failed_keys);
        for (status, n) in t.statuses {
            *tally.statuses.entry(status).or_default() += n;
        }
        tally.slowest = tally.slowest.max(t.slowest);
        tally.unavailable_without_retry_after += t.unavailable_without_retry_after;
        tally.products_from_cache += t.products_from_cache;
    }
    eprintln!(
        "statuses {:?}, slowest {:?}, products from the cache {}",
        tally.statuses, tally.slowest, tally.products_from_cache
    );
    assert!(
        tally.statuses.get(&503).copied().unwrap_or(0) > 0,
        "the outage was seen"
    );
    assert_eq!(
        tally.unavailable_without_retry_after, 0,
        "every 503 says when to come back"
    );
    // Only calls in flight when the database died can outlast the attempt timeout (a CI run sharing
    // its cores with four builds gave a few in 3000); the rest fail fast.
    let timed_out = tally.statuses.get(&504).copied().unwrap_or(0);
    assert!(
        timed_out <= REQUESTS / 100,
        "{timed_out} gateway timeouts: the outage is not failing fast"
    );
    // The gateway's own deadline is 3 s: no answer waits past it (1 s of slack for the
    // machine).
    assert!(
        tally.slowest < Duration::from_secs(4),
        "slowest answer {:?}",
        tally.slowest
    );

    // Recovery, without a restart of the shop.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        let answer = http.order(&shop, &format!("after-{n}"), &an_order()).await;
        n += 1;
        if answer.status == StatusCode::CREATED {
            tally.created.push((
                format!("after-{}", n - 1),
                answer.body["id"].as_i64().unwrap(),
            ));
            break;
        }
        tally.failed_keys.push(format!("after-{}", n - 1));
        assert!(
            Instant::now() < deadline,
            "the shop did not recover: {}",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let ready = http
            .get(format!("http://{}/health/ready", shop.addrs.orders))
            .await;
        if ready.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the orders service never became ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let products = http.get(format!("http://{gw}/api/products")).await;
    assert!(
        products.headers.get("x-fallback").is_none(),
        "products from the database again"
    );

    // Nothing lost, nothing duplicated: every 201 is one order. An order whose commit went
    // through while its answer did not (the server died, or a timeout cut the wait for the
    // commit's acknowledgement) was answered 503: it is in doubt, and the client's retry with
    // its key finds it. Once every client has retried, orders and 201s are one to one.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let count = |keys: Vec<String>| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM orders WHERE idempotency_key = ANY($1)",
                    &[&keys],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let created: Vec<String> = tally.created.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        count(created.clone()).await,
        created.len() as i64,
        "every 201 is in the database"
    );
    let in_doubt = count(tally.failed_keys.clone()).await;
    let total: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        total,
        created.len() as i64 + in_doubt,
        "no order without its request"
    );
    eprintln!(
        "{} orders answered 201; {in_doubt} of the {} answered otherwise were placed (in doubt)",
        created.len(),
        tally.failed_keys.len()
    );
    let mut retries = Vec::new();
    for keys in tally
        .failed_keys
        .chunks(tally.failed_keys.len().div_ceil(WORKERS).max(1))
    {
        let (http, shop, keys) = (http.clone(), shop.clone(), keys.to_vec());
        retries.push(tokio::spawn(async move {
            let mut replayed = 0;
            for key in keys {
                let retried = http.order_until_answered(&shop, &key).await;
                assert_eq!(
                    retried.status,
                    StatusCode::CREATED,
                    "a retry with the key succeeds"
                );
                replayed += usize::from(retried.headers.contains_key("idempotent-replayed"));
            }
            replayed
        }));
    }
    let mut replayed = 0;
    for retry in retries {
        replayed += retry.await.unwrap();
    }
    assert_eq!(
        replayed as i64, in_doubt,
        "the orders in doubt are found, not placed again"
    );
    let total: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        total,
        (created.len() + tally.failed_keys.len()) as i64,
        "one order per key after the retries"
    );
}

/// The Traefik file is well formed, leaves status-code retries and 5xx breaking to seawall,
/// and routes to paths the gateway serves.
#[tokio::test]
async fn the_traefik_configuration_points_at_routes_that_exist() {
    use seawall_examples::shop::config::GatewayConfig;
    use seawall_examples::shop::gateway::{Urls, gateway};
    use tower::ServiceExt;

    let traefik: toml::Table =
        toml::from_str(include_str!("../src/shop/traefik.toml")).expect("valid TOML");
    let http = traefik["http"].as_table().unwrap();
    let routers = http["routers"].as_table().unwrap();
    let services = http["services"].as_table().unwrap();
    let middlewares = http["middlewares"].as_table().unwrap();

    let gateway_config: GatewayConfig = Source::default().load("gateway").unwrap();
    let down = "http://127.0.0.1:9".to_owned();
    let urls = Urls {
        products: down.clone(),
        orders: down.clone(),
        users: down.clone(),
        recommendations: down,
    };
    let metrics = PrometheusBuilder::new().build_recorder().handle();
    let router = gateway(&gateway_config, &urls, metrics).router;
    let serves = |path: String| {
        let router = router.clone();
        async move {
            let request = Request::get(&path).body(axum::body::Body::empty()).unwrap();
            let status = router.oneshot(request).await.unwrap().status();
            status != StatusCode::NOT_FOUND
        }
    };

    assert!(!routers.is_empty());
    for (name, router) in routers {
        let service = router["service"].as_str().unwrap();
        assert!(
            services.contains_key(service),
            "{name}: no service {service}"
        );
        for m in router
            .get("middlewares")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
        {
            let m = m.as_str().unwrap();
            assert!(middlewares.contains_key(m), "{name}: no middleware {m}");
        }
        let rule = router["rule"].as_str().unwrap();
        let prefix = rule
            .strip_prefix("PathPrefix(`")
            .and_then(|r| r.strip_suffix("`)"))
            .unwrap_or_else(|| panic!("{name}: a PathPrefix rule, got {rule}"));
        let probe = match prefix {
            "/api" => "/api/products".to_owned(),
            "/health" => "/health/live".to_owned(),
            other => other.to_owned(),
        };
        assert!(
            serves(probe.clone()).await,
            "{name}: the gateway does not serve {probe}"
        );
        assert!(
            !prefix.starts_with("/admin"),
            "the admin endpoint stays off the edge"
        );
    }
    for (name, service) in services {
        let lb = service["loadBalancer"].as_table().unwrap();
        let check = lb["healthCheck"].as_table().unwrap();
        assert_eq!(check["path"].as_str(), Some("/health/ready"), "{name}");
        assert!(serves("/health/ready".into()).await);
        for server in lb["servers"].as_array().unwrap() {
            assert_eq!(
                server["url"].as_str(),
                Some("http://127.0.0.1:8080"),
                "the shop binary's gateway"
            );
        }
    }
    for (name, middleware) in middlewares {
        if let Some(retry) = middleware.get("retry") {
            assert!(
                retry["attempts"].as_integer().unwrap() <= 2,
                "{name}: attempts multiply"
            );
        }
        if let Some(breaker) = middleware.get("circuitBreaker") {
            let expression = breaker["expression"].as_str().unwrap();
            assert!(
                expression.contains("NetworkErrorRatio")
                    && !expression.contains("ResponseCodeRatio"),
                "{name}: the edge breaks on network errors only, got {expression}"
            );
        }
    }
}
