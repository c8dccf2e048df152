//! The alert rules and every dashboard query are valid PromQL (checked by Debian's
//! `promtool`), and every dashboard takes its data source from a variable and uses only
//! kdfed's documented metrics.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool is missing: run scripts/test.sh, which installs Debian's prometheus package");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dashboards_dir()).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read");
            out.push((
                path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
                serde_json::from_str(&text).expect("json"),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every (dashboard, panel title, expr).
fn queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (name, d) in dashboards() {
        for panel in d["panels"].as_array().expect("panels") {
            for t in panel["targets"].as_array().expect("targets") {
                out.push((
                    name.clone(),
                    panel["title"].as_str().unwrap_or("").to_string(),
                    t["expr"].as_str().expect("expr").to_string(),
                ));
            }
        }
    }
    out
}

#[test]
fn alert_rules_pass_promtool() {
    let (ok, output) = promtool(&["check", "rules", &dashboards_dir().join("alerts.yaml").display().to_string()]);
    assert!(ok, "{output}");
    assert!(output.contains("SUCCESS: 10 rules found"), "{output}");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let queries = queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    // promtool parses rule expressions: turn each query into a recording rule.
    let mut rules = String::from("groups:\n- name: dashboards\n  rules:\n");
    for (i, (_, _, expr)) in queries.iter().enumerate() {
        let concrete = expr.replace("$__rate_interval", "5m").replace("$member", "east");
        rules.push_str(&format!(
            "  - record: kdfed:dashboard_query:{i}\n    expr: {}\n",
            serde_json::to_string(&concrete).expect("quote")
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("queries.yaml");
    std::fs::write(&file, rules).expect("write");
    let (ok, output) = promtool(&["check", "rules", &file.display().to_string()]);
    assert!(ok, "{output}");
}

#[test]
fn dashboards_use_a_datasource_variable_and_documented_metrics() {
    let reference =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md")).expect("metrics doc");
    for (name, d) in dashboards() {
        let vars = d["templating"]["list"].as_array().expect("templating");
        assert!(vars.iter().any(|v| v["type"] == "datasource"), "{name}: no datasource variable");
        for panel in d["panels"].as_array().expect("panels") {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{name}: {}", panel["title"]);
        }
    }
    for (name, title, expr) in queries() {
        let metrics: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("kdfed_"))
            .collect();
        assert!(!metrics.is_empty(), "{name} / {title}: no kdfed metric in {expr}");
        for m in metrics {
            let base = m.trim_end_matches("_bucket");
            assert!(reference.contains(&format!("`{base}`")), "{name} / {title}: {m} is not in docs/metrics.md");
        }
    }
}
