//! The gateway: the public API, behind the server stack, calling each service over HTTP
//! through a client stack of its own.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request as AxumRequest, State};
use axum::routing::{any, get};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusHandle;
use seawall::bulkhead::BulkheadHandle;
use seawall::circuit_breaker::{CircuitBreakerHandle, CircuitState};
use seawall::classify::HttpStatus;
use seawall::config::ConfigError;
use seawall::health::{ComponentConfig, HealthState, HealthTracker};
use seawall::hedge::HedgeHandle;
use seawall::retry::{HttpPolicy, RetryHandle};
use seawall::stack::{ClientStackConfig, ClientStackLayer, ServerStackLayer};
use seawall::timeout::TimeoutHandle;
use seawall::{BoxError, ServiceBuilderExt};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use super::config::{GatewayConfig, ShopConfigError};
use super::services::{MAX_BODY, ServerHandles, check_optional_layer, json_error};

/// Calls to one service, as the gateway's handlers make them.
pub type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Body>, BoxError>;

/// Where the services listen, as `http://127.0.0.1:PORT`.
#[derive(Debug, Clone)]
pub struct Urls {
    /// The products service.
    pub products: String,
    /// The orders service.
    pub orders: String,
    /// The users service.
    pub users: String,
    /// The recommendations service.
    pub recommendations: String,
}

/// One client stack's handles.
#[derive(Debug, Clone)]
pub struct StackHandles {
    /// Its circuit breaker.
    pub breaker: CircuitBreakerHandle,
    /// Its bulkhead.
    pub bulkhead: BulkheadHandle,
    /// Its per-attempt timeout.
    pub attempt_timeout: TimeoutHandle,
    /// Its retry.
    pub retry: RetryHandle,
    /// Its hedging, if it hedges.
    pub hedge: Option<HedgeHandle>,
}

impl StackHandles {
    /// Whether [`reload`](Self::reload) would take `config`, changing nothing; an error names
    /// the field under the stack's name.
    pub fn check(&self, config: &ClientStackConfig) -> Result<(), ConfigError> {
        let within = |e: ConfigError| e.within(config.name());
        self.retry
            .check_reload(config.retry())
            .map_err(|e| within(e.within("retry")))?;
        self.breaker
            .check_reload(config.circuit_breaker())
            .map_err(|e| within(e.within("circuit_breaker")))?;
        self.bulkhead
            .check_reload(config.bulkhead())
            .map_err(|e| within(e.within("bulkhead")))?;
        self.attempt_timeout
            .check_reload(&config.attempt())
            .map_err(|e| within(e.within("attempt_timeout")))?;
        check_optional_layer(
            "hedge",
            self.hedge.as_ref(),
            config.hedge(),
            HedgeHandle::check_reload,
        )
        .map_err(within)
    }

    /// Takes `config`'s retry, breaker, bulkhead, attempt timeout and hedge settings while
    /// calls flow.
    pub fn reload(&self, config: &ClientStackConfig) -> Result<(), ConfigError> {
        self.retry.reload(config.retry().clone())?;
        self.breaker.reload(config.circuit_breaker().clone())?;
        self.bulkhead.reload(config.bulkhead().clone())?;
        self.attempt_timeout.reload(config.attempt())?;
        if let (Some(live), Some(next)) = (&self.hedge, config.hedge()) {
            live.reload(next.clone())?;
        }
        Ok(())
    }
}

/// The running gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The public routes, `/health/*` and `/metrics` included.
    pub router: Router,
    /// Its health: degraded, never unready, while a dependency is down.
    pub health: HealthTracker,
    /// The products stack.
    pub products: StackHandles,
    /// The orders stack.
    pub orders: StackHandles,
    /// The users stack.
    pub users: StackHandles,
    /// The recommendations stack.
    pub recommendations: StackHandles,
    /// The server stack's handles.
    pub server: ServerHandles,
}

impl Gateway {
    /// Takes `config` while the gateway runs; on an error nothing changes.
    pub fn reload(&self, config: &GatewayConfig) -> Result<(), ShopConfigError> {
        let error = |e: ConfigError| ShopConfigError {
            source: "gateway".into(),
            message: e.to_string(),
        };
        let pairs = [
            (&self.products, &config.products),
            (&self.orders, &config.orders),
            (&self.users, &config.users),
            (&self.recommendations, &config.recommendations),
        ];
        for (handles, stack) in pairs {
            handles.check(stack).map_err(error)?;
        }
        self.server.check(&config.server).map_err(error)?;
        for (handles, stack) in pairs {
            handles.reload(stack).map_err(error)?;
        }
        self.server.reload(&config.server).map_err(error)
    }
}

#[derive(Clone)]
struct Route {
    upstream: Upstream,
    base: Arc<str>,
}

#[derive(Clone)]
struct AppState {
    products: Route,
    orders: Route,
    users: Route,
    recommendations: Route,
    popular: Arc<ArcSwapOption<Bytes>>,
}

/// A client stack over `client` as `config` says, retrying what `policy` allows, its breaker
/// followed by `health` as a non-critical component.
pub fn upstream(
    config: &ClientStackConfig,
    policy: HttpPolicy,
    client: &Client<HttpConnector, Full<Bytes>>,
    health: &HealthTracker,
) -> (Upstream, StackHandles) {
    let stack = ClientStackLayer::new(config.clone())
        .retry_policy(policy)
        .classify(HttpStatus::server_errors());
    let handles = StackHandles {
        breaker: stack.circuit_breaker(),
        bulkhead: stack.bulkhead(),
        attempt_timeout: stack.attempt_timeout(),
        retry: stack.retry(),
        hedge: stack.hedge(),
    };
    let name = config.name().to_owned();
    // A dependency that is down makes the gateway degraded, never unready: the other routes
    // still answer, and taking the gateway out would turn one outage into a full one.
    health.follow(
        ComponentConfig::new(name.clone())
            .expect("a valid name")
            .non_critical(),
        handles.breaker.subscribe(),
        move |state: &CircuitState| match state {
            CircuitState::Open | CircuitState::ForcedOpen => {
                (HealthState::Degraded, Some(format!("{name} breaker open")))
            }
            CircuitState::HalfOpen => (HealthState::Degraded, Some(format!("{name} probing"))),
            _ => (HealthState::Healthy, None),
        },
    );
    let service = ServiceBuilder::new()
        .map_response(|res: Response<hyper::body::Incoming>| res.map(Body::new))
        .layer(stack)
        .service(client.clone());
    (BoxCloneSyncService::new(service), handles)
}

/// Builds the gateway over the services at `urls`, serving `metrics` at `/metrics`.
pub fn gateway(config: &GatewayConfig, urls: &Urls, metrics: PrometheusHandle) -> Gateway {
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build::<_, Full<Bytes>>(HttpConnector::new());
    let health = HealthTracker::new("gateway");
    let (products, products_h) = upstream(&config.products, HttpPolicy::new(), &client, &health);
    // Every order carries an Idempotency-Key: sending it twice places it once.
    let (orders, orders_h) = upstream(
        &config.orders,
        HttpPolicy::new().with_method(Method::POST),
        &client,
        &health,
    );
    let (users, users_h) = upstream(&config.users, HttpPolicy::new(), &client, &health);
    let (recommendations, recommendations_h) =
        upstream(&config.recommendations, HttpPolicy::new(), &client, &health);
    let route = |upstream: Upstream, base: &str| Route {
        upstream,
        base: base.trim_end_matches('/').into(),
    };
    let state = AppState {
        products: route(products, &urls.products),
        orders: route(orders, &urls.orders),
        users: route(users, &urls.users),
        recommendations: route(recommendations, &urls.recommendations),
        popular: Arc::default(),
    };
    refresh_popular(state.clone());
    let stack = ServerStackLayer::new(config.server.clone());
    let server = ServerHandles::new(&stack);
    let api = Router::new()
        .route("/api/products", get(to_products))
        .route("/api/products/{*rest}", get(to_products))
        .route("/api/orders", any(to_orders))
        .route("/api/orders/{*rest}", any(to_orders))
        .route("/api/users/{*rest}", get(to_users))
        .route("/api/recommendations", get(recommend))
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(ServiceBuilder::new().with_http_errors().layer(stack));
    let router = Router::new()
        .merge(api)
        .merge(seawall::health::http::router(health.clone()))
        .route("/metrics", get(move || async move { metrics.render() }));
    Gateway {
        router,
        health,
        products: products_h,
        orders: orders_h,
        users: users_h,
        recommendations: recommendations_h,
        server,
    }
}

/// Keeps the popular products the recommendations fallback serves fresh, every 5 s.
fn refresh_popular(state: AppState) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticks.tick().await;
            fetch_popular(&state).await;
        }
    });
}

/// Reads the popular products into the cache; `None` if they could not be read.
async fn fetch_popular(state: &AppState) -> Option<Arc<Bytes>> {
    let request = Request::get(format!("{}/products/popular", state.products.base))
        .body(Full::default())
        .expect("a valid request");
    let response = state.products.upstream.clone().oneshot(request).await;
    let response = match response {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            tracing::warn!(status = %response.status(), "popular products not read");
            return None;
        }
        Err(err) => {
            tracing::warn!(error = %err, "popular products not read");
            return None;
        }
    };
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .ok()?;
    let popular = Arc::new(body.to_bytes());
    state.popular.store(Some(popular.clone()));
    Some(popular)
}

async fn forward(route: &Route, request: AxumRequest) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large or unreadable",
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .trim_start_matches("/api");
    let mut builder = Request::builder()
        .method(parts.method)
        .uri(format!("{}{path}", route.base));
    for name in [CONTENT_TYPE.as_str(), "idempotency-key"] {
        if let Some(value) = parts.headers.get(name) {
            builder = builder.header(name, value);
        }
    }
    let request = builder.body(Full::new(body)).expect("a valid request");
    match route.upstream.clone().oneshot(request).await {
        Ok(response) => response,
        Err(err) => failed(&err),
    }
}

/// The answer to a call that failed in the client stack: a rejection's status with its
/// Retry-After, else 502; never the error's text.
fn failed(err: &BoxError) -> Response<Body> {
    tracing::warn!(error = %err, "upstream call failed");
    match seawall::rejected(&**err) {
        Some(rejection) => {
            let status = seawall::http::status_of(rejection.kind());
            let mut response = json_error(status, "temporarily unavailable");
            if status != StatusCode::GATEWAY_TIMEOUT {
                let after = rejection
                    .retry_after()
                    .map_or(1, |d| d.as_secs().max(1) + u64::from(d.subsec_nanos() > 0));
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(after));
            }
            response
        }
        None => json_error(StatusCode::BAD_GATEWAY, "upstream unavailable"),
    }
}

async fn to_products(State(state): State<AppState>, request: AxumRequest) -> Response<Body> {
    forward(&state.products, request).await
}

async fn to_orders(State(state): State<AppState>, request: AxumRequest) -> Response<Body> {
    forward(&state.orders, request).await
}

async fn to_users(State(state): State<AppState>, request: AxumRequest) -> Response<Body> {
    forward(&state.users, request).await
}

/// Recommendations, or the cached popular products while they fail.
async fn recommend(State(state): State<AppState>, request: AxumRequest) -> Response<Body> {
    let response = forward(&state.recommendations, request).await;
    if response.status().is_success() {
        return response;
    }
    let popular = match state.popular.load_full() {
        Some(popular) => Some(popular),
        None => fetch_popular(&state).await,
    };
    match popular {
        Some(popular) => Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .header("x-fallback", "popular")
            .body(Body::from(format!(
                "{{\"products\":{}}}",
                String::from_utf8_lossy(&popular)
            )))
            .expect("a valid response"),
        None => response,
    }
}
