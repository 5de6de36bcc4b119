//! The gateway's JSON log lines carry the request id and, for a rejected call, the layer that
//! rejected it. A test file of its own: it installs the process-wide subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};

use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusBuilder;
use seawall::chaos::ChaosConfig;
use seawall_examples::gateway::{GatewayConfig, gateway};
use seawall_examples::inventory::inventory;
use seawall_examples::logging::subscriber;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// The log, shared by every writer the subscriber makes.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn a_json_log_line_names_the_request_id_and_the_rejecting_layer() {
    let log = Log::default();
    let writer = log.clone();
    let filter = EnvFilter::new("info,seawall=debug");
    tracing::subscriber::set_global_default(subscriber(true, filter, move || writer.clone()))
        .unwrap();

    let (inventory, _chaos) = inventory(ChaosConfig::builder().build().unwrap());
    let inventory = serve(inventory).await;
    // One call a minute: the second is rate limited.
    let server = toml::from_str(
        r#"
        name = "gateway"
        timeout = "2s"
        rate_limit = { quota = { per_minute = 1, burst = 1 } }
        bulkhead = { max_concurrent = 64 }
        "#,
    )
    .unwrap();
    let config = GatewayConfig {
        server,
        ..GatewayConfig::default()
    };
    let recorder = PrometheusBuilder::new().build_recorder();
    let gw = gateway(config, &format!("http://{inventory}"), recorder.handle());
    let addr = serve(gw.router).await;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let mut answers = Vec::new();
    for id in ["first-1", "second-2"] {
        let request = Request::get(format!("http://{addr}/products/1"))
            .header("x-request-id", id)
            .body(Empty::new())
            .unwrap();
        let res = client.request(request).await.unwrap();
        let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        answers.push((res.status().as_u16(), echoed));
        let _ = res.into_body().collect().await.unwrap();
    }
    assert_eq!(
        answers,
        [(200, "first-1".to_owned()), (429, "second-2".to_owned())],
        "the request id comes back on the response"
    );

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let rejection = lines
        .iter()
        .find(|line| line["fields"]["rejected_by"] == "gateway")
        .unwrap_or_else(|| panic!("no rejection logged in\n{text}"));
    assert_eq!(
        rejection["fields"]["rejection"], "rate_limited",
        "{rejection}"
    );
    assert_eq!(rejection["span"]["name"], "request", "{rejection}");
    assert_eq!(rejection["span"]["request_id"], "second-2", "{rejection}");
}
