//! An axum gateway in front of a flaky inventory service.
//!
//! - Inbound, every `/products` route is behind seawall's server stack (rate limit, bulkhead,
//!   timeout), whose rejections become 429, 503 and 504 answers.
//! - Outbound, the inventory is called over HTTP through the client stack (total timeout, retry
//!   of idempotent requests on 5xx and 429 with a retry budget, circuit breaker on 5xx,
//!   per-attempt timeout, bulkhead), and a fallback answers "stock unknown" while the breaker
//!   is open or the call times out.
//! - Every request gets an id and a span (see [`logging`](crate::logging)), so that its logs
//!   say which layer rejected it.
//! - `/metrics` serves every seawall metric for Prometheus, latency histograms with buckets
//!   (see [`prometheus`]); `/health/live` and `/health/ready`
//!   serve the health tracker, which calls the gateway degraded while the inventory breaker is
//!   open (the fallback still answers) — never unready for it, so Kubernetes does not take the
//!   gateway out for a dependency's outage.
//! - The rate limit is this process's own by default. With a `fleet` section in
//!   `server.rate_limit` (see `gateway.toml`), every replica of the gateway shares one quota
//!   in Redis instead, with the failure policy the section chooses.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use seawall::circuit_breaker::{CircuitBreakerHandle, CircuitState};
use seawall::classify::HttpStatus;
use seawall::fallback::{Failed, FallbackLayer};
use seawall::health::{ComponentConfig, HealthState, HealthTracker};
use seawall::retry::HttpPolicy;
use seawall::stack::{ClientStackConfig, ClientStackLayer, ServerStackConfig, ServerStackLayer};
use seawall::{BoxError, RejectionKind, ServiceBuilderExt};
use serde::Deserialize;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// The gateway's settings: its own server stack and the client stack to the inventory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Inbound. A `fleet` section in its rate limit shares the quota through Redis.
    #[serde(deserialize_with = "server_within")]
    pub server: ServerStackConfig,
    /// Outbound, to the inventory service.
    #[serde(deserialize_with = "inventory_within")]
    pub inventory: ClientStackConfig,
}

fn server_within<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ServerStackConfig, D::Error> {
    seawall::config::within("server", d)
}

fn inventory_within<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ClientStackConfig, D::Error> {
    seawall::config::within("inventory", d)
}

impl Default for GatewayConfig {
    fn default() -> Self {
        toml::from_str(include_str!("gateway.toml")).expect("the built-in settings are valid")
    }
}

/// Calls to the inventory service, as the handlers see them.
pub type Inventory = BoxCloneSyncService<Request<Empty<Bytes>>, Response<Body>, BoxError>;

/// The running pieces of a gateway.
#[derive(Debug)]
pub struct Gateway {
    /// The routes to serve.
    pub router: Router,
    /// The health tracker behind `/health/*`.
    pub health: HealthTracker,
    /// The inventory circuit breaker.
    pub breaker: CircuitBreakerHandle,
}

#[derive(Clone)]
struct AppState {
    inventory: Inventory,
    inventory_url: String,
}

/// Builds the gateway for the inventory service at `inventory_url` (say
/// `http://127.0.0.1:3001`), serving `metrics` at `/metrics`.
///
/// Build it inside the tokio runtime. The metrics recorder may be installed before or after:
/// handles registered before it bind to it on their first use. A Redis for a shared quota is
/// connected to lazily: while it cannot answer, the quota's failure policy decides.
pub fn gateway(config: GatewayConfig, inventory_url: &str, metrics: PrometheusHandle) -> Gateway {
    let client =
        Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(HttpConnector::new());
    let stack = ClientStackLayer::new(config.inventory)
        .retry_policy(HttpPolicy::new())
        .classify(HttpStatus::server_errors());
    let breaker = stack.circuit_breaker();
    let fallback = FallbackLayer::builder()
        .name("inventory")
        .on_rejections([RejectionKind::CircuitOpen, RejectionKind::TimedOut])
        .with(|_: Failed<Response<Body>>| {
            Response::builder()
                .header("x-fallback", "inventory")
                .body(Body::from("stock unknown"))
                .expect("a valid response")
        })
        .build()
        .expect("a valid fallback");
    let inventory: Inventory = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .with_fallback(fallback)
            .map_response(|res: Response<_>| res.map(Body::new))
            .layer(stack)
            .service(client),
    );

    let health = HealthTracker::new("gateway");
    // The fallback keeps answering while the breaker is open: degraded, still ready.
    health.follow(
        ComponentConfig::new("inventory")
            .expect("a valid name")
            .non_critical(),
        breaker.subscribe(),
        |state: &CircuitState| match state {
            CircuitState::Closed | CircuitState::Disabled | CircuitState::MetricsOnly => {
                (HealthState::Healthy, None)
            }
            CircuitState::HalfOpen => (
                HealthState::Degraded,
                Some("inventory breaker probing".into()),
            ),
            CircuitState::Open | CircuitState::ForcedOpen => (
                HealthState::Degraded,
                Some("inventory breaker open, answering from the fallback".into()),
            ),
        },
    );

    // With a `fleet` section the stack's rate limit is a quota shared with the other replicas,
    // in Redis.
    let server = config.server;
    let products = Router::new()
        .route("/products/{id}", get(product))
        .with_state(AppState {
            inventory,
            inventory_url: inventory_url.trim_end_matches('/').to_owned(),
        })
        .layer(
            ServiceBuilder::new()
                .with_http_errors()
                .layer(ServerStackLayer::new(server)),
        );
    let router = Router::new()
        .merge(products)
        .merge(seawall::health::http::router(health.clone()))
        .route("/metrics", get(move || async move { metrics.render() }));
    let router = crate::logging::traced(router);
    Gateway {
        router,
        health,
        breaker,
    }
}

/// The Prometheus exporter as the gateway sets it up: seawall's latency histograms with their
/// default buckets, which dashboards aggregate across replicas (without buckets, the exporter
/// writes each histogram as a summary of quantiles).
pub fn prometheus() -> PrometheusBuilder {
    seawall::metrics::HISTOGRAMS.iter().fold(
        PrometheusBuilder::new(),
        |builder, &(metric, buckets)| {
            builder
                .set_buckets_for_metric(Matcher::Full(metric.to_owned()), buckets)
                .expect("buckets are never empty")
        },
    )
}

async fn product(State(state): State<AppState>, Path(id): Path<u32>) -> Response<Body> {
    let request = Request::get(format!("{}/stock/{id}", state.inventory_url))
        .body(Empty::new())
        .expect("a valid request");
    match state.inventory.oneshot(request).await {
        Ok(response) if response.status().is_server_error() => {
            tracing::warn!(status = %response.status(), "inventory failed");
            Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from("inventory unavailable"))
                .expect("a valid response")
        }
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(error = %err, "inventory call failed");
            let status = match seawall::rejected(&*err).map(|r| r.kind()) {
                Some(RejectionKind::BulkheadFull | RejectionKind::RateLimited) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::BAD_GATEWAY,
            };
            Response::builder()
                .status(status)
                .body(Body::from("inventory unavailable"))
                .expect("a valid response")
        }
    }
}
