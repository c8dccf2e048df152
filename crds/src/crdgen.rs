//! CRD generation. The committed YAML under `crds/yaml/` is what these functions
//! produce; a test fails when it is stale.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSONSchemaProps};
use kube::CustomResourceExt;
use serde_json::json;

use crate::config::CONFIG_NAME;

use crate::{KubeDirectorApp, KubeDirectorCluster, KubeDirectorConfig, KubeDirectorMember, KubeDirectorWork};

/// Every CRD kdfed installs, with the file name it is committed under.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("kubedirectorapp.yaml", with_name_rule(KubeDirectorApp::crd(), json!({"maxLength": 63}))),
        ("kubedirectorcluster.yaml", KubeDirectorCluster::crd()),
        (
            "kubedirectorconfig.yaml",
            with_name_rule(KubeDirectorConfig::crd(), json!({"pattern": format!("^{CONFIG_NAME}$")})),
        ),
        ("kubedirectormember.yaml", KubeDirectorMember::crd()),
        ("kubedirectorwork.yaml", KubeDirectorWork::crd()),
    ]
}

/// Adds upstream's rule for `metadata.name` (the only metadata a CRD schema may
/// constrain): an app's name becomes the value of the `kubedirector.hpe.com/kdapp` label, so
/// at most 63 characters; the one `KubeDirectorConfig` is `kd-global-config`.
fn with_name_rule(mut crd: CustomResourceDefinition, rule: serde_json::Value) -> CustomResourceDefinition {
    let mut name = json!({"type": "string"});
    if let (Some(name), Some(rule)) = (name.as_object_mut(), rule.as_object()) {
        name.extend(rule.clone());
    }
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) else { continue };
        let metadata = JSONSchemaProps {
            type_: Some("object".into()),
            properties: serde_json::from_value(json!({"name": name})).ok(),
            ..Default::default()
        };
        schema.properties.get_or_insert_with(Default::default).insert("metadata".into(), metadata);
    }
    crd
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    // serde-saphyr cannot fail on a plain data tree of strings, numbers, lists and maps.
    serde_saphyr::to_string(crd).unwrap_or_else(|e| format!("# cannot render CRD: {e}\n"))
}

/// All CRDs as one YAML stream.
pub fn all_yaml() -> String {
    all().iter().map(|(_, crd)| format!("---\n{}", to_yaml(crd))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the generated CRDs are committed: beside the types (the kustomize bases use
    /// them) and in the Helm chart (helm installs a chart's `crds/` folder as it is).
    fn committed_dirs() -> [std::path::PathBuf; 2] {
        let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        [crate_dir.join("yaml"), crate_dir.join("../deploy/helm/kdfed/crds")]
    }

    /// Regenerate with `KDFED_UPDATE_CRDS=1 cargo test -p kdfed-crds`.
    #[test]
    fn committed_crd_yaml_matches_the_types() {
        let update = std::env::var_os("KDFED_UPDATE_CRDS").is_some();
        let mut stale = Vec::new();
        for dir in committed_dirs() {
            for (file, crd) in all() {
                let path = dir.join(file);
                let generated = to_yaml(&crd);
                if update {
                    std::fs::create_dir_all(&dir).expect("create the CRD folder");
                    // Replace, not write through: an old checkout may hold a symlink here.
                    let _ = std::fs::remove_file(&path);
                    std::fs::write(&path, &generated).expect("write CRD");
                    continue;
                }
                let committed = std::fs::read_to_string(&path).unwrap_or_default();
                if committed != generated {
                    stale.push(path.display().to_string());
                }
            }
        }
        assert!(stale.is_empty(), "stale CRD YAML {stale:?}; run KDFED_UPDATE_CRDS=1 cargo test -p kdfed-crds");
    }

    #[test]
    fn crds_have_short_names_categories_and_status() {
        let expected =
            [("kdapp", false), ("kdcluster", true), ("kdconfig", true), ("kdmember", true), ("kdwork", true)];
        for ((_, crd), (short, has_status)) in all().into_iter().zip(expected) {
            let names = &crd.spec.names;
            assert_eq!(names.short_names.as_deref(), Some(&[short.to_string()][..]));
            assert_eq!(names.categories.as_deref(), Some(&["kubedirector".to_string()][..]));
            let version = &crd.spec.versions[0];
            assert_eq!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), has_status, "{short}");
            assert!(!version.additional_printer_columns.as_deref().unwrap_or_default().is_empty(), "{short}");
        }
    }

    #[test]
    fn cardinality_schema_requires_n_or_n_plus() {
        let yaml = to_yaml(&KubeDirectorApp::crd());
        assert!(yaml.contains(r"^\d+\+?$") || yaml.contains(r"^\\d+\\+?$"), "cardinality pattern missing");
    }
}
