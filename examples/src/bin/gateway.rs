//! The gateway example: `cargo run -p seawall-examples --bin gateway`, then
//! `curl localhost:3000/products/7`, `curl localhost:3000/metrics`,
//! `curl localhost:3000/health/ready`. The inventory it calls (on port 3001) fails 10 % of
//! calls and goes down for 20 s every minute, from 30 s after start.

use metrics_exporter_prometheus::PrometheusBuilder;
use seawall_examples::gateway::{GatewayConfig, gateway};
use seawall_examples::inventory::{flaky, inventory};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    let (inventory, _chaos) = inventory(flaky());
    let inventory_listener = TcpListener::bind("127.0.0.1:3001").await?;
    tokio::spawn(async move { axum::serve(inventory_listener, inventory).await });

    let gateway = gateway(GatewayConfig::default(), "http://127.0.0.1:3001", metrics);
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    tracing::info!("gateway on http://127.0.0.1:3000, inventory on http://127.0.0.1:3001");
    axum::serve(listener, gateway.router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
