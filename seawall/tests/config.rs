//! Errors in a stack's configuration name the full path of the field and its allowed range,
//! whether the stack is read from TOML or from JSON.

use std::time::Duration;

use seawall::bulkhead::{BulkheadConfig, Limit, VegasConfig};
use seawall::stack::{ClientStackConfig, ClientStackLayer, ServerStackConfig, ServerStackLayer};
use seawall::timeout::AdaptiveTimeout;
use seawall_core::testing::config::assert_errors;

/// A valid client stack with `extra` lines added (a later key wins over none: keys here are
/// never repeated).
fn client(extra: &str) -> String {
    let mut doc = String::from("name = \"inventory\"\n");
    for (key, line) in [
        ("total_timeout", "total_timeout = \"2s\""),
        ("attempt_timeout", "attempt_timeout = \"500ms\""),
        ("bulkhead", "bulkhead = { max_concurrent = 8 }"),
    ] {
        if !extra.contains(key) {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    doc + extra
}

fn server(extra: &str) -> String {
    let mut doc = String::from("name = \"api\"\n");
    for (key, line) in [
        ("timeout", "timeout = \"2s\""),
        ("bulkhead", "bulkhead = { max_concurrent = 8 }"),
    ] {
        if !extra.contains(key) {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    doc + extra
}

#[test]
fn client_stack_errors_name_the_full_path() {
    let cases = [
        (
            "retry = { max_attempts = -1 }",
            "invalid `retry.max_attempts`: -1 is outside the allowed range [1, 100]",
        ),
        (
            "retry = { max_attempts = 0 }",
            "invalid `retry.max_attempts`: 0 is outside the allowed range [1, 100]",
        ),
        (
            r#"retry = { backoff = { kind = "exponential", base = "-5s" } }"#,
            r#"invalid `retry.backoff.base`: "-5s" is outside the allowed range (0s, 3600s]"#,
        ),
        (
            r#"retry = { budget = { ratio = 2.0, min_per_second = 1, ttl = "1s" } }"#,
            "invalid `retry.budget.ratio`: 2 is outside the allowed range [0, 1]",
        ),
        (
            "throttle = { multiplier = 0.5 }",
            "invalid `throttle.multiplier`: 0.5 is outside the allowed range [1, 100]",
        ),
        (
            "circuit_breaker = { window = { count = -1 } }",
            "invalid `circuit_breaker.window.count`: -1 is outside the allowed range [1, 100000]",
        ),
        (
            r#"circuit_breaker = { open_duration = "-5s" }"#,
            r#"invalid `circuit_breaker.open_duration`: "-5s" is outside the allowed range (0s, 86400s]"#,
        ),
        (
            "bulkhead = { adaptive = { aimd = { min = 0 } } }",
            "invalid `bulkhead.adaptive.aimd.min`: 0 is outside the allowed range [1, 1000000]",
        ),
        (
            "bulkhead = { adaptive = { vegas = { min = -1 } } }",
            "invalid `bulkhead.adaptive.vegas.min`: -1 is outside the allowed range [1, 1000000]",
        ),
        (
            "bulkhead = { max_concurrent = -1 }",
            "invalid `bulkhead.max_concurrent`: -1 is outside the allowed range [1, 1000000]",
        ),
        (
            r#"total_timeout = "-5s""#,
            r#"invalid `total_timeout`: "-5s" is outside the allowed range (0s, 86400s]"#,
        ),
        (
            r#"total_timeout = "90000s""#,
            "invalid `total_timeout`: 90000s is outside the allowed range (0s, 86400s]",
        ),
        (
            r#"attempt_timeout = "3s""#,
            "invalid `attempt_timeout`: 3s is outside the allowed range (0s, 2s]",
        ),
    ];
    let cases: Vec<(String, &str)> = cases.iter().map(|(e, m)| (client(e), *m)).collect();
    let cases: Vec<(&str, &str)> = cases.iter().map(|(d, m)| (d.as_str(), *m)).collect();
    assert_errors::<ClientStackConfig>(&cases);

    let empty = client("").replace("\"inventory\"", "\"\"");
    assert_errors::<ClientStackConfig>(&[(
        &empty,
        r#"invalid `name`: "", expected a non-empty name"#,
    )]);
}

/// The builder checks what a file is checked for, with the same message.
#[test]
fn the_client_stack_builder_refuses_what_a_file_would() {
    let from_toml = |extra: &str| {
        toml::from_str::<ClientStackConfig>(&client(extra))
            .unwrap_err()
            .message()
            .trim()
            .to_owned()
    };
    let secs = Duration::from_secs;
    let builder = || {
        ClientStackConfig::builder()
            .name("inventory")
            .total_timeout(secs(2))
            .attempt_timeout(Duration::from_millis(500))
    };
    let cases = [
        (
            builder().attempt_timeout(secs(3)).build().unwrap_err(),
            from_toml(r#"attempt_timeout = "3s""#),
        ),
        (
            builder().total_timeout(secs(100_000)).build().unwrap_err(),
            from_toml(r#"total_timeout = "100000s""#),
        ),
        (
            builder().name("").build().unwrap_err(),
            r#"invalid `name`: "", expected a non-empty name"#.to_owned(),
        ),
        (
            builder()
                .attempt_timeout(AdaptiveTimeout::default().ceiling(secs(3)))
                .build()
                .unwrap_err(),
            from_toml(r#"attempt_timeout = { ceiling = "3s" }"#),
        ),
    ];
    for (built, read) in &cases {
        assert_eq!(built.to_string(), *read);
    }
    assert_eq!(cases[0].0.field(), "attempt_timeout");
    assert_eq!(cases[3].0.field(), "attempt_timeout.ceiling");
}

#[test]
fn the_client_stack_builder_starts_from_the_defaults() {
    let built = ClientStackConfig::builder().build().unwrap();
    let default = ClientStackConfig::default();
    assert_eq!(
        serde_json::to_value(&built).unwrap(),
        serde_json::to_value(&default).unwrap()
    );
    assert_eq!(built.name(), "client");
    assert_eq!(
        built.bulkhead().limit(),
        &Limit::Adaptive(VegasConfig::new().max(10_000).into())
    );
    let layer = ClientStackLayer::builder().name("db").build().unwrap();
    assert_eq!(layer.bulkhead().limit(), 20, "Vegas's initial limit");
}

#[test]
fn the_server_stack_builder_refuses_what_a_file_would_and_wants_a_bulkhead_and_timeout() {
    let bulkhead = || BulkheadConfig::builder().max_concurrent(8).build().unwrap();
    let zero = ServerStackConfig::builder()
        .bulkhead(bulkhead())
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    let from_toml = toml::from_str::<ServerStackConfig>(&server(r#"timeout = "0s""#)).unwrap_err();
    assert_eq!(zero.to_string(), from_toml.message().trim());
    assert_eq!(zero.field(), "timeout");

    let no_bulkhead = ServerStackConfig::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(no_bulkhead.field(), "bulkhead");
    let no_timeout = ServerStackConfig::builder()
        .bulkhead(bulkhead())
        .build()
        .unwrap_err();
    assert_eq!(no_timeout.field(), "timeout");

    let config = ServerStackConfig::builder()
        .bulkhead(bulkhead())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(config.name(), "server");
    let layer = ServerStackLayer::builder()
        .name("api")
        .bulkhead(bulkhead())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(layer.bulkhead().limit(), 8);
}

#[test]
fn server_stack_errors_name_the_full_path() {
    let cases = [
        (
            "rate_limit = { quota = { per_second = -1 } }",
            "invalid `rate_limit.quota.per_second`: -1 is outside the allowed range [1, 1000000000]",
        ),
        (
            r#"rate_limit = { quota = { per_second = 1 }, max_wait = "-5s" }"#,
            r#"invalid `rate_limit.max_wait`: "-5s" is outside the allowed range (0s, 3600s]"#,
        ),
        (
            r#"bulkhead = { max_concurrent = 1, max_wait = "-5s" }"#,
            r#"invalid `bulkhead.max_wait`: "-5s" is outside the allowed range (0s, 86400s]"#,
        ),
        (
            r#"timeout = "-5s""#,
            r#"invalid `timeout`: "-5s" is outside the allowed range (0s, 86400s]"#,
        ),
        (
            r#"timeout = "90000s""#,
            "invalid `timeout`: 90000s is outside the allowed range (0s, 86400s]",
        ),
        (
            r#"deadlines = { header = "bad header" }"#,
            r#"invalid `deadlines.header`: "bad header", expected a valid HTTP header name"#,
        ),
    ];
    let cases: Vec<(String, &str)> = cases.iter().map(|(e, m)| (server(e), *m)).collect();
    let cases: Vec<(&str, &str)> = cases.iter().map(|(d, m)| (d.as_str(), *m)).collect();
    assert_errors::<ServerStackConfig>(&cases);
}

#[test]
fn the_retry_budget_switches_off_from_toml() {
    let config: ClientStackConfig =
        toml::from_str(&client(r#"retry = { budget = "off" }"#)).unwrap_or_else(|e| panic!("{e}"));
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["retry"]["budget"], "off", "{json}");
}

/// Every builder's `.name(..)` takes a plain string and refuses, at `build()`, a name that is
/// not safe as a metric label value and in a log line, with an error on the field `name`.
#[test]
fn every_builder_refuses_an_unsafe_name_at_build() {
    use seawall::chaos::ChaosConfig;
    use seawall::circuit_breaker::CircuitBreakerConfig;
    use seawall::fallback::FallbackLayer;
    use seawall::health::ComponentConfig;
    use seawall::hedge::HedgeConfig;
    use seawall::outlier::OutlierConfig;
    use seawall::rate_limit::{Quota, RateLimitConfig};
    use seawall::retry::RetryConfig;
    use seawall::throttle::ThrottleConfig;
    use seawall::timeout::TimeoutConfig;
    use seawall_core::config::ConfigError;

    let second = Duration::from_secs(1);
    let long = "x".repeat(129);
    for bad in ["orders db", "a\nb", "a\"b", "", long.as_str()] {
        let errors: Vec<(&str, ConfigError)> = vec![
            (
                "breaker",
                CircuitBreakerConfig::builder()
                    .name(bad)
                    .build()
                    .unwrap_err(),
            ),
            (
                "retry",
                RetryConfig::builder().name(bad).build().unwrap_err(),
            ),
            (
                "timeout",
                TimeoutConfig::builder()
                    .name(bad)
                    .timeout(second)
                    .build()
                    .unwrap_err(),
            ),
            (
                "bulkhead",
                BulkheadConfig::builder()
                    .name(bad)
                    .max_concurrent(1)
                    .build()
                    .unwrap_err(),
            ),
            (
                "rate limit",
                RateLimitConfig::builder()
                    .name(bad)
                    .quota(Quota::per_second(1))
                    .build()
                    .unwrap_err(),
            ),
            (
                "chaos",
                ChaosConfig::builder().name(bad).build().unwrap_err(),
            ),
            (
                "hedge",
                HedgeConfig::builder().name(bad).build().unwrap_err(),
            ),
            (
                "throttle",
                ThrottleConfig::builder().name(bad).build().unwrap_err(),
            ),
            (
                "outlier",
                OutlierConfig::builder().name(bad).build().unwrap_err(),
            ),
            ("health", ComponentConfig::new(bad).unwrap_err()),
            (
                "fallback",
                FallbackLayer::builder()
                    .name(bad)
                    .value(0u64)
                    .build()
                    .unwrap_err(),
            ),
            (
                "client stack",
                ClientStackConfig::builder().name(bad).build().unwrap_err(),
            ),
            (
                "server stack",
                ServerStackConfig::builder()
                    .name(bad)
                    .bulkhead(BulkheadConfig::builder().max_concurrent(1).build().unwrap())
                    .timeout(second)
                    .build()
                    .unwrap_err(),
            ),
        ];
        for (layer, err) in errors {
            assert_eq!(err.field(), "name", "{layer} with {bad:?}: {err}");
            assert!(!err.to_string().contains('\n'), "{layer}: {err}");
        }
    }
    let toml = client("").replace("\"inventory\"", "\"orders db\"");
    let err = toml::from_str::<ClientStackConfig>(&toml).unwrap_err();
    assert!(err.message().contains("invalid `name`"), "{err}");
    let longest = "x".repeat(121);
    let err = ClientStackConfig::builder()
        .name(longest)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "name", "room is kept for `.attempt`: {err}");
    ClientStackConfig::builder()
        .name("x".repeat(120))
        .build()
        .unwrap();
}
