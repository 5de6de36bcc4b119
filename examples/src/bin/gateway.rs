//! The gateway example: `cargo run -p seawall-examples --bin gateway`, then
//! `curl localhost:3000/products/7`, `curl localhost:3000/metrics`,
//! `curl localhost:3000/health/ready`. The inventory it calls (on port 3001) fails 10 % of
//! calls and goes down for 20 s every minute, from 30 s after start.
//!
//! `RUST_LOG` filters the logs (`RUST_LOG=info,seawall=debug` shows every rejection),
//! `LOG_FORMAT=json` writes them as JSON lines; `GATEWAY_ADDR` and `INVENTORY_ADDR` move the
//! two services off their default ports.

use seawall_examples::gateway::{GatewayConfig, gateway, prometheus};
use seawall_examples::inventory::{flaky, inventory};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    seawall_examples::logging::init();
    let recorder = prometheus().build_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    let addr = |var, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let gateway_addr = addr("GATEWAY_ADDR", "127.0.0.1:3000");
    let inventory_addr = addr("INVENTORY_ADDR", "127.0.0.1:3001");

    let (inventory, _chaos) = inventory(flaky());
    let inventory_listener = TcpListener::bind(&inventory_addr).await?;
    tokio::spawn(async move { axum::serve(inventory_listener, inventory).await });

    let gateway = gateway(
        GatewayConfig::default(),
        &format!("http://{inventory_addr}"),
        metrics,
    );
    let listener = TcpListener::bind(&gateway_addr).await?;
    tracing::info!("gateway on http://{gateway_addr}, inventory on http://{inventory_addr}");
    axum::serve(listener, gateway.router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
