//! The shop's settings: the built-in files, overrides from the environment, field-path errors.
//! No database needed.

use std::time::Duration;

use seawall::bulkhead::Limit;
use seawall_examples::shop::config::{GatewayConfig, ServiceConfig, Source, builtin};
use seawall_examples::shop::db::Db;

fn env(pairs: &[(&str, &str)]) -> Source {
    Source {
        dir: None,
        env: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[test]
fn the_built_in_files_are_valid() {
    let source = Source::default();
    let _: GatewayConfig = source.load("gateway").unwrap();
    for service in ["products", "orders", "users"] {
        let config: ServiceConfig = source.load(service).unwrap();
        assert!(
            matches!(config.database.bulkhead.limit(), Limit::Fixed(n) if *n == config.database.pool_size),
            "{service}: the bulkhead is sized to the pool"
        );
    }
}

#[test]
fn the_environment_overrides_a_file_by_path() {
    let source = env(&[
        ("SHOP__ORDERS__RETRY__MAX_ATTEMPTS", "2"),
        ("SHOP__ORDERS__DATABASE__QUERY_TIMEOUT", "750ms"),
        ("SHOP__PRODUCTS__RETRY__MAX_ATTEMPTS", "7"),
    ]);
    let orders: ServiceConfig = source.load("orders").unwrap();
    assert_eq!(orders.retry.max_attempts, 2);
    assert_eq!(orders.database.query_timeout, Duration::from_millis(750));
    let users: ServiceConfig = source.load("users").unwrap();
    assert_eq!(
        users.retry.max_attempts, 4,
        "another service's variable changes nothing here"
    );
}

#[test]
fn an_invalid_value_names_its_field_path() {
    let cases = [
        (
            "SHOP__ORDERS__RETRY__MAX_ATTEMPTS",
            "0",
            "retry.max_attempts",
        ),
        (
            "SHOP__ORDERS__DATABASE__POOL_SIZE",
            "-1",
            "database.pool_size",
        ),
        (
            "SHOP__ORDERS__DATABASE__CIRCUIT_BREAKER__FAILURE_RATE_THRESHOLD",
            "1.5",
            "database.circuit_breaker.failure_rate_threshold",
        ),
        ("SHOP__ORDERS__SERVER__TIMEOUT", "0s", "server.timeout"),
    ];
    for (key, value, field) in cases {
        let err = env(&[(key, value)])
            .load::<ServiceConfig>("orders")
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("`{field}`")),
            "{key}={value}: {err}"
        );
    }
    let err = env(&[("SHOP__GATEWAY__ORDERS__RETRY__MAX_ATTEMPTS", "0")])
        .load::<GatewayConfig>("gateway")
        .unwrap_err();
    assert!(
        err.to_string().contains("`orders.retry.max_attempts`"),
        "{err}"
    );
}

#[test]
fn a_file_in_the_directory_replaces_the_built_in_one() {
    let dir = std::env::temp_dir().join(format!("seawall-shop-config-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = builtin("users").replace("pool_size = 8", "pool_size = 3");
    std::fs::write(dir.join("users.toml"), text).unwrap();
    let source = Source {
        dir: Some(dir.clone()),
        env: Vec::new(),
    };
    let users: ServiceConfig = source.load("users").unwrap();
    assert_eq!(users.database.pool_size, 3);
    let products: ServiceConfig = source.load("products").unwrap();
    assert_eq!(
        products.database.pool_size, 8,
        "the built-in file where none is given"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_database_reload_applies_thresholds_and_refuses_a_window_change() {
    let orders: ServiceConfig = Source::default().load("orders").unwrap();
    // Connects lazily: no server is needed to build and reload it.
    let db = Db::new(
        "postgres://nobody@127.0.0.1:9/none",
        &orders.database,
        orders.retry,
    )
    .unwrap();
    let changed: ServiceConfig = env(&[
        (
            "SHOP__ORDERS__DATABASE__CIRCUIT_BREAKER__FAILURE_RATE_THRESHOLD",
            "0.25",
        ),
        ("SHOP__ORDERS__DATABASE__QUERY_TIMEOUT", "2s"),
        ("SHOP__ORDERS__DATABASE__POOL_SIZE", "12"),
        ("SHOP__ORDERS__RETRY__MAX_ATTEMPTS", "6"),
    ])
    .load("orders")
    .unwrap();
    db.reload(&changed.database, changed.retry).unwrap();
    assert_eq!(db.breaker().config().failure_rate_threshold(), Some(0.25));
    assert_eq!(db.bulkhead().limit(), 12, "the bulkhead follows the pool");
    assert_eq!(db.query_timeout(), Duration::from_secs(2));
    assert_eq!(db.tx_retry().max_attempts, 6);

    let other_window: ServiceConfig = env(&[(
        "SHOP__ORDERS__DATABASE__CIRCUIT_BREAKER__WINDOW__COUNT",
        "99",
    )])
    .load("orders")
    .unwrap();
    let err = db
        .reload(&other_window.database, other_window.retry)
        .unwrap_err();
    assert!(
        err.to_string().contains("database.circuit_breaker.window"),
        "{err}"
    );
    assert_eq!(
        db.breaker().config().failure_rate_threshold(),
        Some(0.25),
        "the old config stays"
    );
    assert_eq!(db.query_timeout(), Duration::from_secs(2));
}

/// A server stack whose rate limit of 4 a minute is the fleet's (its Redis is never reached:
/// the store connects on the first call).
fn fleet_stack(per_minute: Option<u32>) -> seawall::stack::ServerStackConfig {
    fleet_stack_at("redis://127.0.0.1:1", per_minute)
}

fn fleet_stack_at(url: &str, per_minute: Option<u32>) -> seawall::stack::ServerStackConfig {
    let rate_limit = per_minute.map(|n| {
        format!(
            "[rate_limit]\nquota = {{ per_minute = {n}, burst = 4 }}\n\
             fleet = {{ redis_url = \"{url}\", on_failure = \"fail_closed\" }}\n"
        )
    });
    let file = format!(
        "name = \"products\"\ntimeout = \"1s\"\nbulkhead = {{ max_concurrent = 10 }}\n{}",
        rate_limit.unwrap_or_default()
    );
    toml::from_str(&file).unwrap()
}

#[tokio::test]
async fn a_fleet_rate_limit_reload_applies_a_changed_quota_and_refuses_what_needs_a_restart() {
    use seawall::rate_limit::Quota;
    use seawall::stack::ServerStackLayer;
    use seawall_examples::shop::services::ServerHandles;

    let live = fleet_stack(Some(4));
    let handles = ServerHandles::new(&ServerStackLayer::new(live.clone()));
    let rate_limit = handles
        .rate_limit
        .clone()
        .expect("a fleet's limit has a handle");
    handles.reload(&live).unwrap();

    handles.reload(&fleet_stack(Some(8))).unwrap();
    assert_eq!(
        rate_limit.quota(),
        Quota::per_minute(8).with_burst(4),
        "the handle shows the new quota"
    );

    let moved = fleet_stack_at("redis://127.0.0.1:2", Some(16));
    let err = handles.reload(&moved).unwrap_err();
    assert_eq!(err.field(), "server.rate_limit.fleet.redis_url", "{err}");
    assert!(err.to_string().contains("a restart changes it"), "{err}");
    assert_eq!(
        rate_limit.quota(),
        Quota::per_minute(8).with_burst(4),
        "a refused reload changes nothing"
    );

    let err = handles.check(&fleet_stack(None)).unwrap_err();
    assert_eq!(err.field(), "server.rate_limit");
    assert!(err.to_string().contains("a restart removes it"), "{err}");
}
