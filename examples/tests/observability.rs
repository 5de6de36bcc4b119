//! The dashboard's queries are valid PromQL, checked by Prometheus' own parser (promtool, from
//! Debian's `prometheus` package, which CI installs).

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
