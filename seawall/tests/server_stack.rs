//! The server stack on an axum app served over a real socket on 127.0.0.1, on the real clock: a
//! paused clock may jump ahead while the runtime waits on the socket.

use std::net::SocketAddr;

use axum::Router;
use axum::routing;
use http::StatusCode;
use seawall::ServiceBuilderExt;
use seawall::stack::{ServerStackConfig, ServerStackLayer};
use seawall_core::testing::serve::{get, serve, text};
use seawall_core::testing::{Gate, trace_init};
use tower::ServiceBuilder;

/// A rate limit of `quota` (as written in a config), `slots` bulkhead slots without a queue,
/// and a timeout of `timeout`.
fn stack(quota: serde_json::Value, slots: usize, timeout: &str) -> ServerStackLayer {
    let config: ServerStackConfig = serde_json::from_value(serde_json::json!({
        "name": "api",
        "rate_limit": { "quota": quota },
        "bulkhead": { "max_concurrent": slots, "queue_limit": 0 },
        "timeout": timeout,
    }))
    .unwrap();
    ServerStackLayer::new(config)
}

/// A quota no test here comes near.
fn plenty() -> serde_json::Value {
    serde_json::json!({ "per_second": 1000, "burst": 1000 })
}

/// `/api/*` behind the stack, `/health` outside it. `/api/hold` waits at `gate`.
fn app(stack: ServerStackLayer, gate: Gate) -> Router {
    let api = Router::new()
        .route("/fast", routing::get(|| async { "fast" }))
        .route("/slow", routing::get(std::future::pending::<&'static str>))
        .route(
            "/hold",
            routing::get(move || {
                let gate = gate.clone();
                async move {
                    gate.pass().await;
                    "held"
                }
            }),
        )
        .layer(ServiceBuilder::new().with_http_errors().layer(stack));
    Router::new()
        .nest("/api", api)
        .route("/health", routing::get(|| async { "up" }))
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

async fn get_path(addr: SocketAddr, path: &str) -> Answer {
    let res = get(addr, path).await;
    Answer {
        status: res.status(),
        retry_after: res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: text(&res).to_owned(),
    }
}

#[tokio::test]
async fn past_the_quota_is_429_with_retry_after_and_other_routes_are_unaffected() {
    trace_init();
    // Five at once, then one every 12 s: the real clock cannot refill it during the test.
    let quota = serde_json::json!({ "per_minute": 5, "burst": 5 });
    let addr = serve(app(stack(quota, 100, "1s"), Gate::new())).await;
    for _ in 0..5 {
        assert_eq!(get_path(addr, "/api/fast").await.status, StatusCode::OK);
    }
    let limited = get_path(addr, "/api/fast").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry_after), "{retry_after}");
    assert!(
        limited.body.starts_with("rate limited, retry after"),
        "{}",
        limited.body
    );
    assert_eq!(
        get_path(addr, "/health").await.body,
        "up",
        "outside the stack"
    );
}

#[tokio::test]
async fn the_rate_limit_handle_reloads_the_quota_while_the_stack_serves() {
    trace_init();
    let stack = stack(plenty(), 100, "1s");
    let handle = stack.rate_limit().expect("the stack has a rate limit");
    let addr = serve(app(stack, Gate::new())).await;
    for _ in 0..10 {
        assert_eq!(get_path(addr, "/api/fast").await.status, StatusCode::OK);
    }
    let config: ServerStackConfig = serde_json::from_value(serde_json::json!({
        "name": "api",
        "rate_limit": { "quota": { "per_minute": 2, "burst": 2 } },
        "bulkhead": { "max_concurrent": 100, "queue_limit": 0 },
        "timeout": "1s",
    }))
    .unwrap();
    handle.reload(config.rate_limit().unwrap().clone()).unwrap();
    for _ in 0..2 {
        assert_eq!(get_path(addr, "/api/fast").await.status, StatusCode::OK);
    }
    assert_eq!(
        get_path(addr, "/api/fast").await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the served stack limits by the new quota"
    );
}

#[test]
fn a_stack_without_a_rate_limit_has_no_rate_limit_handle() {
    let config: ServerStackConfig = serde_json::from_value(serde_json::json!({
        "name": "api",
        "bulkhead": { "max_concurrent": 1 },
        "timeout": "1s",
    }))
    .unwrap();
    assert!(ServerStackLayer::new(config).rate_limit().is_none());
}

#[tokio::test]
async fn a_full_bulkhead_is_503_and_frees_up_when_calls_end() {
    trace_init();
    let gate = Gate::new();
    let addr = serve(app(stack(plenty(), 2, "60s"), gate.clone())).await;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get_path(addr, "/api/hold").await.status }))
        .collect();
    gate.arrived(2).await;

    let full = get_path(addr, "/api/fast").await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.body, "bulkhead full");
    assert_eq!(get_path(addr, "/health").await.status, StatusCode::OK);

    gate.open(2);
    for call in held {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(get_path(addr, "/api/fast").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_handler_is_504_and_fast_ones_keep_working() {
    trace_init();
    let addr = serve(app(stack(plenty(), 10, "1s"), Gate::new())).await;
    let slow = get_path(addr, "/api/slow").await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.body, "timed out");
    assert_eq!(get_path(addr, "/api/fast").await.body, "fast");
}

#[test]
fn a_config_with_an_unknown_field_is_refused() {
    let err = serde_json::from_value::<ServerStackConfig>(serde_json::json!({
        "name": "api",
        "bulkhead": { "max_concurrent": 1 },
        "timeout": "1s",
        "timout": "2s",
    }))
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `timout`"), "{err}");
}

/// A stack config whose rate limit of 4 a minute is the fleet's, in the Redis at `url`.
fn fleet_config(url: &str, prefix: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "api",
        "rate_limit": {
            "quota": { "per_minute": 4, "burst": 4 },
            "fleet": {
                "redis_url": url,
                "key_prefix": prefix,
                "lease": 1,
                "on_failure": "fail_closed",
            },
        },
        "bulkhead": { "max_concurrent": 100, "queue_limit": 0 },
        "timeout": "1s",
    })
}

/// Two replicas of a service, each its own server stack from the same config, hold one quota
/// between them: 4 calls pass of 8, where two stacks counting apart would pass all 8.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_section_makes_the_rate_limit_the_fleets_in_redis() {
    trace_init();
    let Some((url, _server)) = seawall_core::testing::redis::redis_url().await else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("seawall-test:server-stack:{}:{nanos}", std::process::id());
    let config: ServerStackConfig = serde_json::from_value(fleet_config(&url, &prefix)).unwrap();
    let replicas = [
        serve(app(ServerStackLayer::new(config.clone()), Gate::new())).await,
        serve(app(ServerStackLayer::new(config), Gate::new())).await,
    ];
    let mut passed = 0;
    for _ in 0..4 {
        for addr in replicas {
            let answer = get_path(addr, "/api/fast").await;
            match answer.status {
                StatusCode::OK => passed += 1,
                StatusCode::TOO_MANY_REQUESTS => assert!(answer.retry_after.is_some()),
                other => panic!("{other}: {}", answer.body),
            }
        }
    }
    assert_eq!(passed, 4, "the fleet's quota, not 4 per replica");
}

/// A fleet's rate limit reloads through the stack's one handle: from 4 to 8 a minute, the
/// bucket in Redis kept, so 4 more calls pass in the window where 4 a minute passed none.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_handle_reloads_a_fleets_quota_while_the_stack_serves() {
    trace_init();
    let Some((url, _server)) = seawall_core::testing::redis::redis_url().await else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("seawall-test:server-stack:{}:{nanos}", std::process::id());
    let config: ServerStackConfig = serde_json::from_value(fleet_config(&url, &prefix)).unwrap();
    let stack = ServerStackLayer::new(config);
    let handle = stack
        .rate_limit()
        .expect("a fleet's limit has a handle too");
    let addr = serve(app(stack, Gate::new())).await;
    let mut passed = 0;
    for _ in 0..2 {
        passed += u32::from(get_path(addr, "/api/fast").await.status == StatusCode::OK);
    }
    assert_eq!(passed, 2);

    let mut faster = fleet_config(&url, &prefix);
    faster["rate_limit"]["quota"] = serde_json::json!({ "per_minute": 8, "burst": 8 });
    let faster: ServerStackConfig = serde_json::from_value(faster).unwrap();
    handle.reload(faster.rate_limit().unwrap().clone()).unwrap();
    let mut passed = 0;
    for _ in 0..6 {
        passed += u32::from(get_path(addr, "/api/fast").await.status == StatusCode::OK);
    }
    assert_eq!(
        passed, 4,
        "half the window of 8 a minute, where 4 a minute left 2"
    );

    let mut moved = fleet_config(&url, &format!("{prefix}-moved"));
    moved["rate_limit"]["quota"] = serde_json::json!({ "per_minute": 8, "burst": 8 });
    let moved: ServerStackConfig = serde_json::from_value(moved).unwrap();
    let err = handle
        .reload(moved.rate_limit().unwrap().clone())
        .unwrap_err();
    assert_eq!(err.field(), "fleet.key_prefix", "{err}");
}

#[cfg(feature = "redis")]
#[test]
fn a_fleet_section_without_a_redis_url_is_refused_with_its_path() {
    let mut config = fleet_config("redis://127.0.0.1:1", "p");
    config["rate_limit"]["fleet"]
        .as_object_mut()
        .unwrap()
        .remove("redis_url");
    let err = serde_json::from_value::<ServerStackConfig>(config).unwrap_err();
    assert!(
        err.to_string().contains("rate_limit.fleet.redis_url"),
        "{err}"
    );
}

#[cfg(not(feature = "redis"))]
#[test]
fn a_fleet_section_is_refused_without_the_redis_feature() {
    let err = serde_json::from_value::<ServerStackConfig>(fleet_config("redis://127.0.0.1:1", "p"))
        .unwrap_err();
    assert!(err.to_string().contains("rate_limit.fleet"), "{err}");
}
