//! The gateway's `/metrics` when its layers are built before the recorder is installed: every
//! seawall metric still reaches it, and each one is described, as `promtool check metrics`
//! wants. A test file of its own: it installs the process-wide recorder.

use std::collections::BTreeSet;

use metrics_exporter_prometheus::PrometheusBuilder;
use seawall::chaos::ChaosConfig;
use seawall_core::testing::serve::{get, serve, text};
use seawall_examples::gateway::{GatewayConfig, gateway};
use seawall_examples::inventory::inventory;
use support::promtool_check_metrics;

mod support;

/// The metric names in `exposition` that have a `# TYPE` line but no `# HELP` line.
fn undescribed(exposition: &str) -> BTreeSet<&str> {
    let named = |prefix: &str| -> BTreeSet<&str> {
        exposition
            .lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect()
    };
    let helped = named("# HELP ");
    named("# TYPE ")
        .into_iter()
        .filter(|name| !helped.contains(name))
        .collect()
}

#[tokio::test]
async fn metrics_of_layers_built_before_the_recorder_are_exported_and_described() {
    let (inventory, _chaos) = inventory(ChaosConfig::builder().build().unwrap());
    let inventory = serve(inventory).await;

    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let gw = gateway(
        GatewayConfig::default(),
        &format!("http://{inventory}"),
        handle,
    );
    metrics::set_global_recorder(recorder).unwrap();
    let addr = serve(gw.router).await;

    for id in 0..3 {
        assert_eq!(get(addr, &format!("/products/{id}")).await.status(), 200);
    }
    assert_eq!(get(addr, "/health/ready").await.status(), 200);
    let res = get(addr, "/metrics").await;
    let exposition = text(&res);
    for sample in [
        r#"seawall_rate_limit_calls_total{name="gateway",result="permitted"} 3"#,
        r#"seawall_timeout_calls_total{name="inventory.total",result="completed"} 3"#,
        r#"seawall_circuit_breaker_state{name="inventory",state="closed"} 1"#,
        r#"seawall_bulkhead_limit{name="gateway"} 64"#,
        r#"seawall_health_state{name="gateway",component="overall",state="healthy"} 1"#,
    ] {
        assert!(exposition.contains(sample), "{sample} in\n{exposition}");
    }
    assert!(
        exposition.contains("# HELP seawall_bulkhead_wait_seconds "),
        "{exposition}"
    );
    assert_eq!(undescribed(exposition), BTreeSet::new(), "{exposition}");
    // The exporter's default: histograms as summaries.
    assert!(
        exposition.contains(
            "seawall_timeout_remaining_seconds{name=\"inventory.total\",quantile=\"0.99\"}"
        ),
        "{exposition}"
    );
    promtool_check_metrics(exposition);
}
