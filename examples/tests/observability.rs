//! The dashboard's queries are valid PromQL and the shop's Prometheus configuration is valid,
//! checked by Prometheus' own tools (promtool, from Debian's `prometheus` package, which CI
//! installs).

use std::path::Path;
use std::process::Command;

/// Every query of the dashboard, with its Grafana variables replaced by what they expand to
/// when every value is chosen.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("observability/dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("${name:regex}", ".*")
                .replace("$job", ".*")
                .replace("$instance", ".*");
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    queries
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() > 10, "the dashboard has its panels");
    for (title, expr) in &queries {
        assert!(!expr.contains('$'), "{title}: a variable is left in {expr}");
    }
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing, and CI installs it"
        );
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
        return;
    }
    // promtool parses the queries as recording rules.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (_, expr)) in queries.iter().enumerate() {
        let expr = serde_json::to_string(expr).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard_query_{n}\n        expr: {expr}\n"
        ));
    }
    let file = std::env::temp_dir().join(format!("seawall-dashboard-{}.yml", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(
        out.status.success(),
        "promtool rejects a dashboard query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shop's Prometheus configuration is valid, loads the alert rules and scrapes the port the
/// `shop` binary's gateway listens on.
#[test]
fn the_shop_prometheus_config_is_valid_and_scrapes_the_gateway() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config_path = dir.join("src/shop/prometheus.yml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let bin = std::fs::read_to_string(dir.join("src/bin/shop.rs")).unwrap();
    let port = bin
        .split("gateway: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("the shop binary sets its gateway port");
    assert!(
        config.contains(&format!("\"127.0.0.1:{port}\"")),
        "the scrape target is the gateway's port {port}"
    );
    let rules = config
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("- ")
                .filter(|l| l.ends_with(".yml"))
        })
        .expect("a rule file");
    assert!(
        config_path.parent().unwrap().join(rules).is_file(),
        "the rule file {rules} exists next to the config"
    );
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing, and CI installs it"
        );
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
        return;
    }
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool rejects the shop's config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
