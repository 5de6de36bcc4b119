//! What more than one test file needs.

use std::io::Write;
use std::process::{Command, Stdio};

/// `promtool check metrics` (from Debian's `prometheus` package, which CI installs) finds no
/// problem in `exposition`: every metric described, counters ending in `_total`, units in the
/// names.
pub(crate) fn promtool_check_metrics(exposition: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing, and CI installs it"
        );
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
