//! The products, orders and users services: axum routers behind the server stack, on
//! PostgreSQL through [`Db`].

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use seawall::BoxError;
use seawall::ServiceBuilderExt;
use seawall::bulkhead::BulkheadHandle;
use seawall::circuit_breaker::CircuitState;
use seawall::config::ConfigError;
use seawall::health::{ComponentConfig, HealthState, HealthTracker};
use seawall::rate_limit::RateLimitHandle;
use seawall::stack::{ServerStackConfig, ServerStackLayer};
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceBuilder;

use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use seawall::retry::HttpPolicy;
use tower::ServiceExt;

use super::config::{ServiceConfig, ShopConfigError};
use super::db::{Db, Reply, retry_wait};
use super::gateway::{StackHandles, Upstream, upstream};

/// The largest request body a service reads.
pub const MAX_BODY: usize = 16 * 1024;

/// A server stack's handles: what a reload changes while the stack serves.
#[derive(Debug, Clone)]
pub struct ServerHandles {
    /// Its bulkhead.
    pub bulkhead: BulkheadHandle,
    /// Its rate limit, when it has one: counted in this process or in the fleet's store.
    pub rate_limit: Option<RateLimitHandle>,
}

/// Checks the reload of a layer a stack has or lacks since it was built (a hedge, a rate
/// limit): `check` when both the live stack and `next` have it; otherwise the error that a
/// restart, never a reload, adds or removes it.
pub(crate) fn check_optional_layer<L, C>(
    field: &'static str,
    live: Option<&L>,
    next: Option<&C>,
    check: impl FnOnce(&L, &C) -> Result<(), ConfigError>,
) -> Result<(), ConfigError> {
    match (live, next) {
        (Some(live), Some(next)) => check(live, next).map_err(|e| e.within(field)),
        (None, None) => Ok(()),
        (Some(_), None) => Err(ConfigError::expected(
            field,
            "none",
            "one, as the live stack has one (a restart removes it)",
        )),
        (None, Some(_)) => Err(ConfigError::expected(
            field,
            "one",
            "none, as the live stack has none (a restart adds it)",
        )),
    }
}

impl ServerHandles {
    /// The handles of `stack`.
    pub fn new(stack: &ServerStackLayer) -> Self {
        Self {
            bulkhead: stack.bulkhead(),
            rate_limit: stack.rate_limit(),
        }
    }

    /// Whether [`reload`](Self::reload) would take `config`, changing nothing; an error names
    /// the field under `server`.
    pub fn check(&self, config: &ServerStackConfig) -> Result<(), ConfigError> {
        self.bulkhead
            .check_reload(config.bulkhead())
            .map_err(|e| e.within("bulkhead").within("server"))?;
        check_optional_layer(
            "rate_limit",
            self.rate_limit.as_ref(),
            config.rate_limit(),
            RateLimitHandle::check_reload,
        )
        .map_err(|e| e.within("server"))
    }

    /// Takes `config`'s bulkhead limits and rate limit quota while the stack serves (a fleet's
    /// too: its buckets in the store are kept).
    pub fn reload(&self, config: &ServerStackConfig) -> Result<(), ConfigError> {
        self.check(config)?;
        self.bulkhead
            .reload(config.bulkhead().clone())
            .map_err(|e| e.within("server.bulkhead"))?;
        if let (Some(live), Some(next)) = (&self.rate_limit, config.rate_limit()) {
            live.reload(next.clone())
                .map_err(|e| e.within("server.rate_limit"))?;
        }
        Ok(())
    }
}

/// One running service: its routes, health, database and server stack.
#[derive(Debug, Clone)]
pub struct Service {
    /// `products`, `orders` or `users`.
    pub name: &'static str,
    /// The routes to serve, `/health/*` included.
    pub router: Router,
    /// The health behind `/health/*`.
    pub health: HealthTracker,
    /// The database.
    pub db: Db,
    /// The server stack's handles.
    pub server: ServerHandles,
    /// The client stack to the search service (products).
    pub search: Option<StackHandles>,
}

impl Service {
    /// Checks that `config` can replace the live one, changing nothing.
    pub fn check_reload(&self, config: &ServiceConfig) -> Result<(), ShopConfigError> {
        let named = |e: ShopConfigError| ShopConfigError {
            source: self.name.into(),
            ..e
        };
        let error = |e: ConfigError| ShopConfigError {
            source: self.name.into(),
            message: e.to_string(),
        };
        self.db.check_reload(&config.database).map_err(named)?;
        self.server.check(&config.server).map_err(error)?;
        match (&self.search, &config.search) {
            (Some(live), Some(next)) => live.check(next).map_err(|e| e.within("search")),
            (None, None) => Ok(()),
            _ => Err(ConfigError::expected(
                "search",
                "another search section",
                "a section as the live service has (a restart adds or removes it)",
            )),
        }
        .map_err(error)
    }

    /// Takes `config` while the service runs; on an error nothing changes.
    pub fn reload(&self, config: &ServiceConfig) -> Result<(), ShopConfigError> {
        self.check_reload(config)?;
        let error = |e: ConfigError| ShopConfigError {
            source: self.name.into(),
            message: e.to_string(),
        };
        self.db.reload(&config.database, config.retry)?;
        self.server.reload(&config.server).map_err(error)?;
        if let (Some(live), Some(next)) = (&self.search, &config.search) {
            live.reload(next).map_err(|e| error(e.within("search")))?;
        }
        Ok(())
    }
}

/// A JSON answer.
pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

/// `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// The answer to a database failure: 503 with a Retry-After, never the failure's text.
pub fn unavailable(err: &BoxError) -> Response<Body> {
    tracing::warn!(error = %err, "database unavailable");
    let after = seawall::rejected(&**err)
        .and_then(|r| r.retry_after())
        .map_or(1, |d| d.as_secs().max(1) + u64::from(d.subsec_nanos() > 0));
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable");
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(after));
    response
}

fn answer(result: Result<Reply, BoxError>) -> Response<Body> {
    match result {
        Ok(reply) => {
            let mut response = json_response(reply.status, &reply.body);
            if reply.replayed {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            response
        }
        Err(err) => unavailable(&err),
    }
}

fn build(
    name: &'static str,
    config: &ServiceConfig,
    db: Db,
    routes: Router,
    health: HealthTracker,
    search: Option<StackHandles>,
) -> Service {
    let stack = ServerStackLayer::new(config.server.clone());
    let server = ServerHandles::new(&stack);
    db.probe(&health);
    health.follow(
        ComponentConfig::new("database.breaker").expect("a valid name"),
        db.breaker().subscribe(),
        |state: &CircuitState| match state {
            CircuitState::Open | CircuitState::ForcedOpen => {
                (HealthState::Unhealthy, Some("database breaker open".into()))
            }
            CircuitState::HalfOpen => (
                HealthState::Degraded,
                Some("database breaker probing".into()),
            ),
            _ => (HealthState::Healthy, None),
        },
    );
    let router = routes
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(ServiceBuilder::new().with_http_errors().layer(stack))
        .merge(seawall::health::http::router(health.clone()));
    Service {
        name,
        router,
        health,
        db,
        server,
        search,
    }
}

fn bad_id(rejection: PathRejection) -> Response<Body> {
    json_error(
        StatusCode::BAD_REQUEST,
        &format!("invalid id: {}", rejection.body_text()),
    )
}

// ===== products =====

#[derive(Clone)]
struct ProductsState {
    db: Db,
    /// The last list read, served while the database is down.
    cached: Arc<ArcSwapOption<Value>>,
    /// The search service, if there is one.
    search: Option<(Upstream, Arc<str>)>,
}

/// The products service: `GET /products`, `/products/popular`, `/products/{id}` and
/// `/products/search?q=`. The list is served from the last one read, marked
/// `x-fallback: cache`, while the database is down. Search asks the search service at
/// `search_url` through a client stack (`config.search`) and falls back to a plain SQL query
/// (`x-fallback: sql`) while it fails.
pub fn products(config: &ServiceConfig, db: Db, search_url: Option<&str>) -> Service {
    let health = HealthTracker::new("products");
    let search = match (&config.search, search_url) {
        (Some(stack), Some(url)) => {
            let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            let (upstream, handles) = upstream(stack, HttpPolicy::new(), &client, &health);
            Some((upstream, Arc::from(url.trim_end_matches('/')), handles))
        }
        _ => None,
    };
    let (search, search_handles) = match search {
        Some((upstream, url, handles)) => (Some((upstream, url)), Some(handles)),
        None => (None, None),
    };
    let state = ProductsState {
        db: db.clone(),
        cached: Arc::default(),
        search,
    };
    let routes = Router::new()
        .route("/products", get(list_products))
        .route("/products/popular", get(popular_products))
        .route("/products/search", get(search_products))
        .route("/products/{id}", get(product))
        .with_state(state);
    build("products", config, db, routes, health, search_handles)
}

/// What a search takes: letters, digits and spaces, 1 to 64 of them.
fn search_terms(query: Option<&str>) -> Option<String> {
    let q = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("q="))?
        .replace("%20", " ")
        .replace('+', " ");
    let valid =
        (1..=64).contains(&q.len()) && q.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ');
    valid.then_some(q)
}

async fn search_products(State(state): State<ProductsState>, uri: http::Uri) -> Response<Body> {
    let Some(terms) = search_terms(uri.query()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "q is 1 to 64 letters, digits and spaces",
        );
    };
    if let Some((search, base)) = &state.search {
        let request = http::Request::get(format!("{base}/search?q={}", terms.replace(' ', "%20")))
            .body(Full::default())
            .expect("a valid request");
        match search.clone().oneshot(request).await {
            Ok(response) if response.status().is_success() => return response,
            Ok(response) => tracing::warn!(status = %response.status(), "search failed"),
            Err(err) => tracing::warn!(error = %err, "search failed"),
        }
    }
    let pattern = format!("%{terms}%");
    let mut response = answer(
        state
            .db
            .run(move |client, _| async move {
                let rows = client
                    .query(
                        "SELECT id, name, price_cents FROM products WHERE name ILIKE $1 \
                         ORDER BY id LIMIT 20",
                        &[&pattern],
                    )
                    .await?;
                Ok(Reply::new(
                    StatusCode::OK,
                    json!({ "products": rows.iter().map(product_json).collect::<Vec<_>>() }),
                ))
            })
            .await,
    );
    if state.search.is_some() && response.status().is_success() {
        response
            .headers_mut()
            .insert("x-fallback", HeaderValue::from_static("sql"));
    }
    response
}

/// The simulated search service: `GET /search?q=` over the seed products' names.
pub fn search_service() -> Router {
    Router::new().route(
        "/search",
        get(|uri: http::Uri| async move {
            let Some(terms) = search_terms(uri.query()) else {
                return json_error(StatusCode::BAD_REQUEST, "bad query");
            };
            let terms = terms.to_lowercase();
            let found: Vec<Value> = (1..=50i64)
                .map(|n| (n, format!("Product {n}")))
                .filter(|(_, name)| name.to_lowercase().contains(&terms))
                .take(20)
                .map(|(id, name)| json!({ "id": id, "name": name, "price_cents": 100 * id + 99 }))
                .collect();
            json_response(StatusCode::OK, &json!({ "products": found }))
        }),
    )
}

fn product_json(row: &tokio_postgres::Row) -> Value {
    json!({
        "id": row.get::<_, i64>("id"),
        "name": row.get::<_, String>("name"),
        "price_cents": row.get::<_, i64>("price_cents"),
    })
}

async fn list_products(State(state): State<ProductsState>) -> Response<Body> {
    let result = state
        .db
        .run(|client, _| async move {
            let rows = client
                .query(
                    "SELECT id, name, price_cents FROM products ORDER BY id LIMIT 100",
                    &[],
                )
                .await?;
            let list: Vec<Value> = rows.iter().map(product_json).collect();
            Ok(Reply::new(StatusCode::OK, Value::Array(list)))
        })
        .await;
    match result {
        Ok(reply) => {
            state.cached.store(Some(Arc::new(reply.body.clone())));
            answer(Ok(reply))
        }
        Err(err) => match state.cached.load_full() {
            Some(list) => {
                tracing::warn!(error = %err, "products served from the cache");
                let mut response = json_response(StatusCode::OK, &list);
                response
                    .headers_mut()
                    .insert("x-fallback", HeaderValue::from_static("cache"));
                response
            }
            None => unavailable(&err),
        },
    }
}

async fn popular_products(State(state): State<ProductsState>) -> Response<Body> {
    answer(
        state
            .db
            .run(|client, _| async move {
                let rows = client
                    .query(
                        "SELECT id, name, price_cents FROM products \
                         ORDER BY popularity DESC, id LIMIT 5",
                        &[],
                    )
                    .await?;
                Ok(Reply::new(
                    StatusCode::OK,
                    Value::Array(rows.iter().map(product_json).collect()),
                ))
            })
            .await,
    )
}

async fn product(
    State(state): State<ProductsState>,
    id: Result<Path<i64>, PathRejection>,
) -> Response<Body> {
    let Path(id) = match id {
        Ok(id) => id,
        Err(rejection) => return bad_id(rejection),
    };
    answer(
        state
            .db
            .run(move |client, _| async move {
                let row = client
                    .query_opt(
                        "SELECT id, name, price_cents FROM products WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                Ok(match row {
                    Some(row) => Reply::new(StatusCode::OK, product_json(&row)),
                    None => Reply::error(StatusCode::NOT_FOUND, "no such product"),
                })
            })
            .await,
    )
}

// ===== users =====

/// The users service: `GET /users/{id}`.
pub fn users(config: &ServiceConfig, db: Db) -> Service {
    let routes = Router::new()
        .route("/users/{id}", get(user))
        .with_state(db.clone());
    build(
        "users",
        config,
        db,
        routes,
        HealthTracker::new("users"),
        None,
    )
}

async fn user(State(db): State<Db>, id: Result<Path<i64>, PathRejection>) -> Response<Body> {
    let Path(id) = match id {
        Ok(id) => id,
        Err(rejection) => return bad_id(rejection),
    };
    answer(
        db.run(move |client, _| async move {
            let row = client
                .query_opt("SELECT id, name, email FROM users WHERE id = $1", &[&id])
                .await?;
            Ok(match row {
                Some(row) => Reply::new(
                    StatusCode::OK,
                    json!({
                        "id": row.get::<_, i64>("id"),
                        "name": row.get::<_, String>("name"),
                        "email": row.get::<_, String>("email"),
                    }),
                ),
                None => Reply::error(StatusCode::NOT_FOUND, "no such user"),
            })
        })
        .await,
    )
}

// ===== orders =====

/// The orders service: `POST /orders` (with an `Idempotency-Key` header) and
/// `GET /orders/{id}`.
pub fn orders(config: &ServiceConfig, db: Db) -> Service {
    let routes = Router::new()
        .route("/orders", post(create_order))
        .route("/orders/{id}", get(order))
        .with_state(db.clone());
    build(
        "orders",
        config,
        db,
        routes,
        HealthTracker::new("orders"),
        None,
    )
}

/// An order as a client sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// Who orders.
    pub user_id: i64,
    /// What, at least one line.
    pub items: Vec<NewItem>,
}

/// One line of an order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// The product.
    pub product_id: i64,
    /// How many, 1 to 1000.
    pub quantity: i32,
}

/// The longest Idempotency-Key taken.
const MAX_KEY: usize = 200;

async fn create_order(
    State(db): State<Db>,
    headers: HeaderMap,
    body: Result<Json<NewOrder>, JsonRejection>,
) -> Response<Body> {
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        Some(Ok(key)) if !key.is_empty() && key.len() <= MAX_KEY => key.to_owned(),
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key must be 1 to 200 visible characters",
            );
        }
        None => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "an Idempotency-Key header is required",
            );
        }
    };
    let order = match body {
        Ok(Json(order)) => order,
        Err(rejection) => return json_error(rejection.status(), &rejection.body_text()),
    };
    if order.items.is_empty() || order.items.len() > 100 {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "an order has 1 to 100 items",
        );
    }
    if order
        .items
        .iter()
        .any(|i| !(1..=1000).contains(&i.quantity))
    {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, "quantities are 1 to 1000");
    }
    let mut ids: Vec<i64> = order.items.iter().map(|i| i.product_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != order.items.len() {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "each product appears once",
        );
    }
    let order = Arc::new(order);
    answer(
        db.run(move |mut client, retry| async move {
            let mut attempt = 1;
            loop {
                match place(&mut client, &key, &order).await {
                    Err(err) => match retry_wait(retry, attempt, &err) {
                        Some(wait) => {
                            tracing::debug!(attempt, "order transaction retried: {err}");
                            tokio::time::sleep(wait).await;
                            attempt += 1;
                        }
                        None => return Err(err.into()),
                    },
                    Ok(reply) => return Ok(reply),
                }
            }
        })
        .await,
    )
}

/// One try of placing an order, in a repeatable-read transaction.
///
/// Two tries with one key race on the unique index: the loser's insert meets a row its
/// snapshot cannot see and fails with a serialization failure (40001); its next try sees the
/// winner's order and answers it.
async fn place(
    client: &mut deadpool_postgres::Object,
    key: &str,
    order: &NewOrder,
) -> Result<Reply, tokio_postgres::Error> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;
    if let Some(row) = tx
        .query_opt("SELECT id FROM orders WHERE idempotency_key = $1", &[&key])
        .await?
    {
        let id: i64 = row.get(0);
        let mut reply = read_order(&tx, id).await?;
        reply.replayed = true;
        reply.status = StatusCode::CREATED;
        return Ok(reply);
    }
    let user = tx
        .query_opt("SELECT 1 FROM users WHERE id = $1", &[&order.user_id])
        .await?;
    if user.is_none() {
        return Ok(Reply::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no such user",
        ));
    }
    let ids: Vec<i64> = order.items.iter().map(|i| i.product_id).collect();
    let prices = tx
        .query(
            "SELECT id, price_cents FROM products WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    if prices.len() != ids.len() {
        return Ok(Reply::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown product id",
        ));
    }
    let price = |id: i64| -> i64 {
        prices
            .iter()
            .find(|r| r.get::<_, i64>(0) == id)
            .map_or(0, |r| r.get(1))
    };
    let total: i64 = order
        .items
        .iter()
        .map(|i| price(i.product_id) * i64::from(i.quantity))
        .sum();
    let row = tx
        .query_opt(
            "INSERT INTO orders (user_id, idempotency_key, total_cents) VALUES ($1, $2, $3) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            &[&order.user_id, &key, &total],
        )
        .await?;
    let Some(row) = row else {
        // Taken since the check above by a transaction this one can see: answer its order.
        let row = tx
            .query_one("SELECT id FROM orders WHERE idempotency_key = $1", &[&key])
            .await?;
        let mut reply = read_order(&tx, row.get(0)).await?;
        reply.replayed = true;
        reply.status = StatusCode::CREATED;
        return Ok(reply);
    };
    let id: i64 = row.get(0);
    for item in &order.items {
        tx.execute(
            "INSERT INTO order_items (order_id, product_id, quantity, price_cents) \
             VALUES ($1, $2, $3, $4)",
            &[
                &id,
                &item.product_id,
                &item.quantity,
                &price(item.product_id),
            ],
        )
        .await?;
    }
    let mut reply = read_order(&tx, id).await?;
    tx.commit().await?;
    reply.status = StatusCode::CREATED;
    Ok(reply)
}

async fn read_order(
    client: &impl deadpool_postgres::GenericClient,
    id: i64,
) -> Result<Reply, tokio_postgres::Error> {
    let Some(row) = client
        .query_opt(
            "SELECT id, user_id, idempotency_key, total_cents FROM orders WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(Reply::error(StatusCode::NOT_FOUND, "no such order"));
    };
    let items = client
        .query(
            "SELECT product_id, quantity, price_cents FROM order_items \
             WHERE order_id = $1 ORDER BY product_id",
            &[&id],
        )
        .await?;
    Ok(Reply::new(
        StatusCode::OK,
        json!({
            "id": row.get::<_, i64>(0),
            "user_id": row.get::<_, i64>(1),
            "idempotency_key": row.get::<_, String>(2),
            "total_cents": row.get::<_, i64>(3),
            "items": items.iter().map(|i| json!({
                "product_id": i.get::<_, i64>(0),
                "quantity": i.get::<_, i32>(1),
                "price_cents": i.get::<_, i64>(2),
            })).collect::<Vec<_>>(),
        }),
    ))
}

async fn order(State(db): State<Db>, id: Result<Path<i64>, PathRejection>) -> Response<Body> {
    let Path(id) = match id {
        Ok(id) => id,
        Err(rejection) => return bad_id(rejection),
    };
    answer(
        db.run(move |client, _| async move { Ok(read_order(&client, id).await?) })
            .await,
    )
}
