//! Offline defaulting and validation of app and cluster manifests.

use std::collections::BTreeMap;

use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster, KubeDirectorConfig, validate};
use serde_json::Value;

/// What `kdfed validate` prints.
pub struct Report {
    /// One line per object or error.
    pub lines: Vec<String>,
    /// Whether anything was invalid.
    pub failed: bool,
}

fn kind_of(doc: &Value) -> (&str, &str) {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    (kind, name)
}

/// `doc` as the API type `T`; a type error names its field, as the admission webhooks do:
/// `spec.roles[0].members: invalid type: string "seven", expected i32 (rule: type)`.
pub fn typed<T: serde::de::DeserializeOwned>(doc: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(doc.clone()).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {} (rule: type)", e.into_inner())
    })
}

/// Validates every app, cluster and config among `docs`.
pub fn validate(docs: &[Value]) -> Report {
    let mut lines = Vec::new();
    let mut failed = false;
    let mut apps = BTreeMap::new();
    let mut config = None;
    for doc in docs {
        let (kind, name) = kind_of(doc);
        match kind {
            "KubeDirectorApp" => match typed::<KubeDirectorApp>(doc) {
                Ok(app) => {
                    match validate::app_name(name).and_then(|()| kdfed_crds::resolve::resolve_app(&app.spec).map(drop))
                    {
                        Ok(()) => lines.push(format!("kubedirectorapp/{name}: valid")),
                        Err(e) => {
                            failed = true;
                            lines.extend(e.0.iter().map(|e| format!("kubedirectorapp/{name}: {e}")));
                        }
                    }
                    apps.insert(name.to_string(), app);
                }
                Err(e) => {
                    failed = true;
                    lines.push(format!("kubedirectorapp/{name}: {e}"));
                }
            },
            "KubeDirectorConfig" => match typed::<KubeDirectorConfig>(doc) {
                Ok(c) => {
                    if let Err(e) = validate::config_name(name).and_then(|()| validate::config(&c.spec)) {
                        failed = true;
                        lines.extend(e.0.iter().map(|e| format!("kubedirectorconfig/{name}: {e}")));
                    } else {
                        lines.push(format!("kubedirectorconfig/{name}: valid"));
                    }
                    config = Some(c.spec);
                }
                Err(e) => {
                    failed = true;
                    lines.push(format!("kubedirectorconfig/{name}: {e}"));
                }
            },
            "KubeDirectorCluster" => {}
            other => {
                let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
                let ours = api_version.starts_with("kubedirector.hpe.com/")
                    || api_version.starts_with("federation.kubedirector.hpe.com/");
                if ours && !matches!(other, "KubeDirectorMember" | "KubeDirectorWork") {
                    failed = true;
                    lines.push(format!(
                        "{}/{name}: kind: unknown kind {other:?} of {api_version} (rule: known-kind); kdfed validates KubeDirectorApp, KubeDirectorCluster and KubeDirectorConfig",
                        other.to_lowercase()
                    ));
                } else if api_version.starts_with("kubedirector.bluedata.io/") {
                    lines.push(format!(
                        "{}/{name}: skipped: {api_version} is upstream's first format; run `kdfed convert` first",
                        other.to_lowercase()
                    ));
                } else {
                    lines
                        .push(format!("{}/{name}: skipped (kdfed validates only its own kinds)", other.to_lowercase()));
                }
            }
        }
    }
    for doc in docs {
        let (kind, name) = kind_of(doc);
        if kind != "KubeDirectorCluster" {
            continue;
        }
        let cluster = match typed::<KubeDirectorCluster>(doc) {
            Ok(c) => c,
            Err(e) => {
                failed = true;
                lines.push(format!("kubedirectorcluster/{name}: {e}"));
                continue;
            }
        };
        let Some(app) = apps.get(&cluster.spec.app) else {
            failed = true;
            lines.push(format!(
                "kubedirectorcluster/{name}: spec.app: Invalid app({}). This app resource ID has not been registered. (rule: known-app)",
                cluster.spec.app
            ));
            continue;
        };
        match kdfed_crds::resolve(&app.spec, &cluster.spec, config.as_ref()) {
            Ok(_) => lines.push(format!("kubedirectorcluster/{name}: valid")),
            Err(e) => {
                failed = true;
                lines.extend(e.0.iter().map(|e| format!("kubedirectorcluster/{name}: {e}")));
            }
        }
    }
    Report { lines, failed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_misspelt_kind_of_kdfed_s_api_fails_and_other_kinds_are_said_to_be_skipped() {
        let docs = vec![
            json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorClustr", "metadata": {"name": "typo"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}),
        ];
        let report = validate(&docs);
        assert!(report.failed);
        assert!(
            report.lines[0].contains("unknown kind \"KubeDirectorClustr\"")
                && report.lines[0].contains("(rule: known-kind)")
        );
        assert_eq!(report.lines[1], "configmap/cm: skipped (kdfed validates only its own kinds)");
        let report = validate(&docs[1..]);
        assert!(!report.failed);
    }
}
