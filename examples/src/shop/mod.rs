//! The shop: the architecture's e-commerce system on PostgreSQL.
//!
//! A gateway routes `/api/*` to the products, orders and users services and to a simulated
//! recommendations service; each hop is an HTTP call on 127.0.0.1 through a client stack.
//! Every service sits behind a server stack; each one's PostgreSQL pool behind a breaker, a
//! bulkhead sized to the pool and a timeout ([`db`]). Orders are idempotent by their
//! `Idempotency-Key`, and serialization failures are retried inside the orders service.
//! Recommendations fall back to a cached list of popular products while they fail (flip their
//! faults on the admin port). Settings come from one TOML file per service, overridden by
//! `SHOP__<SERVICE>__<PATH>` variables ([`config`]), and are reloaded while the shop runs
//! ([`Shop::reload`], [`Shop::watch`]): the live breakers, bulkheads, retries, hedges, rate
//! limits, pools and timeouts take new values without losing their state or the calls in
//! flight.
//!
//! Run it with `cargo run -p seawall-examples --bin shop -- postgres://...` (see the README).

pub mod config;
pub mod db;
pub mod gateway;
pub mod services;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use seawall::chaos::{ChaosConfig, ChaosHandle, ChaosLayer, Faults};
use seawall::{BoxError, ServiceBuilderExt};
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

use self::config::{GatewayConfig, ServiceConfig, ShopConfigError, Source};
use self::db::Db;
use self::gateway::{Gateway, Urls};
use self::services::{Service, json_error, json_response};

/// The ports to listen on, 127.0.0.1 each; 0 picks a free one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    /// The public gateway.
    pub gateway: u16,
    /// The admin endpoint, off the public router.
    pub admin: u16,
    /// The products service.
    pub products: u16,
    /// The orders service.
    pub orders: u16,
    /// The users service.
    pub users: u16,
    /// The recommendations service.
    pub recommendations: u16,
    /// The search service.
    pub search: u16,
}

/// Where the running shop listens.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// The public gateway.
    pub gateway: SocketAddr,
    /// The admin endpoint.
    pub admin: SocketAddr,
    /// The products service.
    pub products: SocketAddr,
    /// The orders service.
    pub orders: SocketAddr,
    /// The users service.
    pub users: SocketAddr,
    /// The recommendations service.
    pub recommendations: SocketAddr,
}

/// The running shop.
#[derive(Debug)]
pub struct Shop {
    /// Where it listens.
    pub addrs: Addrs,
    /// The gateway's handles.
    pub gateway: Gateway,
    /// The products service.
    pub products: Service,
    /// The orders service.
    pub orders: Service,
    /// The users service.
    pub users: Service,
    /// Turns the recommendations' faults on and off.
    pub recommendations_chaos: ChaosHandle,
    /// Turns the search service's faults on and off.
    pub search_chaos: ChaosHandle,
    source: Source,
}

async fn bind(port: u16) -> Result<TcpListener, BoxError> {
    Ok(TcpListener::bind(("127.0.0.1", port)).await?)
}

fn serve(listener: TcpListener, router: Router) {
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(error = %err, "server stopped");
        }
    });
}

/// `router` with faults (every call an error) switchable at run time, off to begin with.
fn chaotic(name: &str, router: Router) -> (Router, ChaosHandle) {
    let chaos = ChaosLayer::new(
        ChaosConfig::builder()
            .name(name)
            .enabled(false)
            .faults(Faults::errors(1.0))
            .build()
            .expect("a valid chaos config"),
    );
    let handle = chaos.handle();
    let router = router.layer(ServiceBuilder::new().with_http_errors().layer(chaos));
    (router, handle)
}

/// The simulated recommendations service: a fixed pick.
fn recommendations() -> Router {
    Router::new().route(
        "/recommendations",
        get(|| async {
            json_response(
                http::StatusCode::OK,
                &json!({ "products": [{ "id": 7 }, { "id": 3 }, { "id": 12 }] }),
            )
        }),
    )
}

impl Shop {
    /// Starts the shop on PostgreSQL at `database_url`, with settings from `source`: migrates
    /// the schema, then serves every service on 127.0.0.1.
    pub async fn start(
        database_url: &str,
        source: Source,
        ports: Ports,
        metrics: PrometheusHandle,
    ) -> Result<Arc<Self>, BoxError> {
        let gateway_config: GatewayConfig = source.load("gateway")?;
        let configs: [ServiceConfig; 3] = [
            source.load("products")?,
            source.load("orders")?,
            source.load("users")?,
        ];
        let dbs = configs
            .iter()
            .map(|c| Db::new(database_url, &c.database, c.retry))
            .collect::<Result<Vec<_>, _>>()?;
        dbs[0].migrate().await?;
        let search_listener = bind(ports.search).await?;
        let search_url = format!("http://{}", search_listener.local_addr()?);
        let (search_router, search_chaos) = chaotic("search", services::search_service());
        serve(search_listener, search_router);
        let products = services::products(&configs[0], dbs[0].clone(), Some(&search_url));
        let orders = services::orders(&configs[1], dbs[1].clone());
        let users = services::users(&configs[2], dbs[2].clone());
        let (recommendations_router, recommendations_chaos) =
            chaotic("recommendations", recommendations());

        let listeners = [
            bind(ports.products).await?,
            bind(ports.orders).await?,
            bind(ports.users).await?,
            bind(ports.recommendations).await?,
        ];
        let url = |l: &TcpListener| l.local_addr().map(|a| format!("http://{a}"));
        let urls = Urls {
            products: url(&listeners[0])?,
            orders: url(&listeners[1])?,
            users: url(&listeners[2])?,
            recommendations: url(&listeners[3])?,
        };
        let gateway = gateway::gateway(&gateway_config, &urls, metrics);
        let gateway_listener = bind(ports.gateway).await?;
        let admin_listener = bind(ports.admin).await?;
        let addrs = Addrs {
            gateway: gateway_listener.local_addr()?,
            admin: admin_listener.local_addr()?,
            products: listeners[0].local_addr()?,
            orders: listeners[1].local_addr()?,
            users: listeners[2].local_addr()?,
            recommendations: listeners[3].local_addr()?,
        };
        let [l_products, l_orders, l_users, l_recommendations] = listeners;
        serve(l_products, products.router.clone());
        serve(l_orders, orders.router.clone());
        serve(l_users, users.router.clone());
        serve(l_recommendations, recommendations_router);
        serve(gateway_listener, gateway.router.clone());
        let shop = Arc::new(Self {
            addrs,
            gateway,
            products,
            orders,
            users,
            recommendations_chaos,
            search_chaos,
            source,
        });
        serve(admin_listener, admin(shop.clone()));
        Ok(shop)
    }

    /// Reads every service's settings again and applies them to the live layers. Nothing
    /// changes unless every file is valid and every change can be made live (an error names
    /// the service and the field).
    pub fn reload(&self) -> Result<(), ShopConfigError> {
        let gateway: GatewayConfig = self.source.load("gateway")?;
        let products: ServiceConfig = self.source.load("products")?;
        let orders: ServiceConfig = self.source.load("orders")?;
        let users: ServiceConfig = self.source.load("users")?;
        let pairs = [
            (&self.products, &products),
            (&self.orders, &orders),
            (&self.users, &users),
        ];
        for (service, config) in pairs {
            service.check_reload(config)?;
        }
        self.gateway.reload(&gateway)?;
        for (service, config) in pairs {
            service.reload(config)?;
        }
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Reloads whenever a settings file changes, checking every `every`.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let shop = Arc::downgrade(self);
        let paths: Vec<PathBuf> = ["gateway", "products", "orders", "users"]
            .into_iter()
            .filter_map(|s| self.source.path(s))
            .collect();
        tokio::spawn(async move {
            let stamps = |paths: &[PathBuf]| -> Vec<Option<SystemTime>> {
                paths.iter().map(|p| config::modified(p)).collect()
            };
            let mut seen = stamps(&paths);
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let Some(shop) = shop.upgrade() else { return };
                let now = stamps(&paths);
                if now != seen {
                    seen = now;
                    if let Err(err) = shop.reload() {
                        tracing::error!(error = %err, "configuration refused; the old one stays");
                    }
                }
            }
        });
    }
}

/// The admin endpoint: flips the dependencies' faults and reloads the settings. It listens on
/// its own port, never on the public one.
fn admin(shop: Arc<Shop>) -> Router {
    Router::new()
        .route("/admin/chaos/{dependency}/{switch}", post(chaos))
        .route("/admin/reload", post(reload))
        .merge(seawall::health::http::router_with_details(
            shop.gateway.health.clone(),
        ))
        .with_state(shop)
}

async fn chaos(
    State(shop): State<Arc<Shop>>,
    Path((dependency, switch)): Path<(String, String)>,
) -> axum::response::Response {
    let handle = match dependency.as_str() {
        "recommendations" => &shop.recommendations_chaos,
        "search" => &shop.search_chaos,
        _ => return json_error(http::StatusCode::NOT_FOUND, "no such dependency"),
    };
    match switch.as_str() {
        "on" => handle.enable(),
        "off" => handle.disable(),
        _ => return json_error(http::StatusCode::BAD_REQUEST, "switch is on or off"),
    }
    json_response(
        http::StatusCode::OK,
        &json!({ dependency: { "faults": handle.is_enabled() } }),
    )
}

async fn reload(State(shop): State<Arc<Shop>>) -> axum::response::Response {
    match shop.reload() {
        Ok(()) => json_response(http::StatusCode::OK, &json!({ "reloaded": true })),
        Err(err) => json_error(http::StatusCode::UNPROCESSABLE_ENTITY, &err.to_string()),
    }
}
