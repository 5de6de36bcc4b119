//! A real Prometheus scrapes the gateway example under an injected outage: every metric and
//! label the dashboard and the alert rules use has series, and the outage alerts are pending
//! or firing during the outage and not outside it.
//!
//! Runs when `SEAWALL_PROMETHEUS` is set (CI sets it once Debian's `prometheus` package is
//! installed): it takes the real clock, 20 to 40 s, bounded at 90 s. A test file of its own: it
//! installs the process-wide recorder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use seawall::chaos::{ChaosConfig, Faults};
use seawall_examples::gateway::{GatewayConfig, gateway, prometheus};
use seawall_examples::inventory::inventory;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::sleep;

mod support;

/// The whole test, from Prometheus' start to the last query.
const BOUND: Duration = Duration::from_secs(90);
/// The alerts an inventory outage sets off at once (their `for` keeps them pending).
const OUTAGE_ALERTS: [&str; 2] = ["SeawallCircuitOpen", "SeawallComponentDegraded"];

/// Prometheus on a free port with its own data directory; killed, and its directory removed,
/// on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let dir = std::env::temp_dir().join(format!("seawall-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("observability/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Self { child, dir, addr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Percent-encodes a query parameter.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn get(client: &HttpClient, url: &str) -> Option<(u16, String)> {
    let res = client.get(url.parse().unwrap()).await.ok()?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The series an instant query returns.
async fn query(client: &HttpClient, prometheus: SocketAddr, promql: &str) -> Vec<Value> {
    let url = format!("http://{prometheus}/api/v1/query?query={}", encode(promql));
    let (status, body) = get(client, &url).await.expect("prometheus answers");
    assert_eq!(status, 200, "{promql}: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    answer["data"]["result"].as_array().unwrap().clone()
}

/// The alerts pending or firing now, by name.
async fn active_alerts(client: &HttpClient, prometheus: SocketAddr) -> Vec<(String, String)> {
    let mut alerts: Vec<_> = query(client, prometheus, "ALERTS")
        .await
        .iter()
        .map(|series| {
            let metric = &series["metric"];
            (
                metric["alertname"].as_str().unwrap().to_owned(),
                metric["alertstate"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    alerts.sort();
    alerts.dedup();
    alerts
}

/// Polls `check` every second until it holds, or panics with `what` once `within` is over.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let until = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) if Instant::now() >= until => panic!("{what}, not within {within:?}: {last}"),
            Err(_) => sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Every selector of a seawall metric in `text` (`name` or `name{...}`).
fn selectors(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("seawall_") {
        let tail = &rest[at..];
        let name_len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let mut len = name_len;
        if tail[name_len..].starts_with('{') {
            len += tail[name_len..].find('}').unwrap() + 1;
        }
        found.push(tail[..len].to_owned());
        rest = &tail[len..];
    }
    found.sort();
    found.dedup();
    found
}

/// The dashboard's queries, its variables expanded to "every value".
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("observability/dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries.push(
                expr.replace("${name:regex}", ".*")
                    .replace("$job", ".*")
                    .replace("$instance", ".*"),
            );
        }
    }
    queries
}

#[test]
fn prometheus_scrapes_the_gateway_and_alerts_follow_an_outage() {
    if std::env::var_os("SEAWALL_PROMETHEUS").is_none() {
        eprintln!("SKIPPED: set SEAWALL_PROMETHEUS=1 to run Prometheus against the gateway");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(scrape());
}

async fn scrape() {
    let started = Instant::now();
    let recorder = prometheus().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    // The inventory answers until the chaos is switched on: then every call fails.
    let down = ChaosConfig::builder()
        .name("inventory")
        .faults(Faults {
            error: 1.0,
            ..Faults::default()
        })
        .build()
        .unwrap();
    let (inventory, chaos) = inventory(down);
    let inventory_addr = serve(inventory).await;
    let gw = gateway(
        GatewayConfig::default(),
        &format!("http://{inventory_addr}"),
        handle,
    );
    let gateway_addr = serve(gw.router).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // About 40 calls a second, well within the gateway's rate limit.
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                let url = format!("http://{gateway_addr}/products/{}", n % 50);
                let _ = get(&client, &url).await;
                sleep(Duration::from_millis(25)).await;
            }
        })
    };

    let (status, exposition) = get(&client, &format!("http://{gateway_addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        exposition.contains("seawall_circuit_breaker_call_duration_seconds_bucket{"),
        "histograms come with buckets:\n{exposition}"
    );
    support::promtool_check_metrics(&exposition);

    let prometheus = Prometheus::start(gateway_addr);
    let prom = prometheus.addr;
    eventually(
        "prometheus ready and scraping",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move {
                match get(&client, &format!("http://{prom}/-/ready")).await {
                    Some((200, _)) => {}
                    other => return Err(format!("not ready: {other:?}")),
                }
                let scrapes = "count_over_time(up{job=\"gateway\"}[1m]) >= 5 and up == 1";
                match query(&client, prom, scrapes).await.len() {
                    1 => Ok(()),
                    _ => Err("not up for five scrapes yet".to_owned()),
                }
            }
        },
    )
    .await;
    let log = prometheus.log();
    assert!(!log.contains("level=error"), "{log}");

    // Healthy: no alert at all.
    assert_eq!(active_alerts(&client, prom).await, [], "before the outage");

    chaos.enable();
    eventually(
        "the outage alerts pending or firing",
        Duration::from_secs(25),
        || {
            let client = client.clone();
            async move {
                let alerts = active_alerts(&client, prom).await;
                let missing: Vec<_> = OUTAGE_ALERTS
                    .iter()
                    .filter(|name| !alerts.iter().any(|(alert, _)| alert == *name))
                    .collect();
                match missing.is_empty() {
                    true => Ok(()),
                    false => Err(format!("missing {missing:?} in {alerts:?}")),
                }
            }
        },
    )
    .await;

    // Every metric and label the alerts and the dashboard use has series now.
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("observability/alerts.yml"),
    )
    .unwrap();
    let mut missing = Vec::new();
    for selector in selectors(&rules) {
        if query(&client, prom, &selector).await.is_empty() {
            missing.push(selector);
        }
    }
    for promql in dashboard_queries() {
        if query(&client, prom, &promql).await.is_empty() {
            missing.push(promql);
        }
    }
    assert_eq!(missing, Vec::<String>::new(), "queries without series");

    chaos.disable();
    eventually(
        "the outage alerts resolved",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move {
                let alerts = active_alerts(&client, prom).await;
                let left: Vec<_> = alerts
                    .iter()
                    .filter(|(alert, _)| OUTAGE_ALERTS.contains(&alert.as_str()))
                    .collect();
                match left.is_empty() {
                    true => Ok(()),
                    false => Err(format!("still {left:?}")),
                }
            }
        },
    )
    .await;
    load.abort();
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
