//! The shop: `cargo run -p seawall-examples --bin shop -- postgres://postgres@127.0.0.1:5432/postgres [CONFIG_DIR]`.
//!
//! The gateway answers on 127.0.0.1:8080 (`/api/products`, `/api/orders`, `/metrics`,
//! `/health/ready`), the admin endpoint on 127.0.0.1:8081, the services on 8091 to 8095.
//! Settings are read from `CONFIG_DIR/<service>.toml` (the built-in ones where missing) and
//! `SHOP__*` variables, and reloaded when a file changes or on SIGHUP. `SHOP_DATABASE_URL`
//! may name the database instead of the first argument.

use std::path::PathBuf;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use seawall_examples::shop::config::Source;
use seawall_examples::shop::{Ports, Shop};

#[tokio::main]
async fn main() -> Result<(), seawall::BoxError> {
    tracing_subscriber::fmt().init();
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("SHOP_DATABASE_URL").ok())
        .ok_or("usage: shop POSTGRES_URL [CONFIG_DIR]")?;
    let dir = args.next().map(PathBuf::from);
    let ports = Ports {
        gateway: 8080,
        admin: 8081,
        products: 8091,
        orders: 8092,
        users: 8093,
        recommendations: 8094,
        search: 8095,
    };
    let shop = Shop::start(&url, Source::from_env(dir), ports, metrics).await?;
    shop.watch(Duration::from_secs(1));
    tracing::info!(
        "shop on http://{}, admin on http://{}",
        shop.addrs.gateway,
        shop.addrs.admin
    );
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                if let Err(err) = shop.reload() {
                    tracing::error!(error = %err, "configuration refused; the old one stays");
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
