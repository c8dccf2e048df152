//! `null` in any optional field reads as if the field were absent, as upstream's Go types
//! read it (nil pointers, slices and maps; zero values). Each optional field of the
//! corpus's fullest app and cluster is set to null in turn, and the object must read the
//! same as with the field removed. Required fields stay required: the API server refuses
//! their nulls too.

use std::path::Path;

use kdfed_crds::crdgen;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster, KubeDirectorConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn corpus(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat").join(rel);
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse")
}

/// JSON pointers of every field in `value` that the schema does not require.
fn optional_fields(value: &Value, schema: &Value, pointer: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let required: Vec<&str> =
                schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            for (key, child) in map {
                let child_schema = match schema["properties"].get(key) {
                    Some(s) => s,
                    // Free-form maps (labels, configMeta, resources): their entries are data.
                    None => continue,
                };
                let p = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                if !required.contains(&key.as_str()) {
                    out.push(p.clone());
                }
                optional_fields(child, child_schema, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                optional_fields(item, &schema["items"], &format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn set(doc: &Value, pointer: &str, to: Option<Value>) -> Value {
    let mut doc = doc.clone();
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let key = key.replace("~1", "/").replace("~0", "~");
    let parent = doc.pointer_mut(parent).and_then(Value::as_object_mut).expect("parent object");
    match to {
        Some(v) => parent.insert(key, v),
        None => parent.remove(&key),
    };
    doc
}

fn schema_of(file: &str) -> Value {
    let (_, crd) = crdgen::all().into_iter().find(|(f, _)| *f == file).expect("crd");
    serde_json::to_value(&crd.spec.versions[0].schema).expect("schema")["openAPIV3Schema"].clone()
}

fn every_optional_null_reads_as_absent<K: DeserializeOwned + Serialize>(
    doc: &Value,
    file: &str,
    explicit: &[&str],
) -> usize {
    let schema = schema_of(file);
    let mut fields = Vec::new();
    optional_fields(&doc["spec"], &schema["properties"]["spec"], "/spec", &mut fields);
    for pointer in &fields {
        let with_null: Result<K, _> = serde_json::from_value(set(doc, pointer, Some(Value::Null)));
        let with_null = with_null.unwrap_or_else(|e| panic!("{pointer}: null refused: {e}"));
        let absent: K = serde_json::from_value(set(doc, pointer, None)).expect("absent");
        if explicit.iter().any(|e| pointer.ends_with(e)) {
            continue; // null means "explicitly none" here, as upstream's own unmarshalling says
        }
        let (with_null, absent) =
            (serde_json::to_value(&with_null).expect("json"), serde_json::to_value(&absent).expect("json"));
        assert_eq!(with_null, absent, "{pointer}: null must read as absent");
    }
    fields.len()
}

#[test]
fn nulls_in_optional_app_fields_read_as_absent() {
    let n = every_optional_null_reads_as_absent::<KubeDirectorApp>(
        &corpus("apps/restserver.yaml"),
        "kubedirectorapp.yaml",
        &["/configPackage", "/defaultConfigPackage"],
    );
    assert!(n > 30, "only {n} optional fields tried");
}

#[test]
fn nulls_in_optional_cluster_fields_read_as_absent() {
    let n = every_optional_null_reads_as_absent::<KubeDirectorCluster>(
        &corpus("clusters/restserver.yaml"),
        "kubedirectorcluster.yaml",
        &[],
    );
    assert!(n > 40, "only {n} optional fields tried");
}

#[test]
fn nulls_in_optional_config_fields_read_as_absent() {
    let config: Value = serde_json::json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
        "metadata": {"name": "kd-global-config"},
        "spec": {
            "defaultStorageClassName": "standard", "defaultServiceType": "NodePort", "nativeSystemdSupport": true,
            "requiredSecretPrefix": "kd-", "clusterSvcDomainBase": ".svc.cluster.local", "defaultNamingScheme": "UID",
            "masterEncryptionKey": "00112233445566778899aabbccddeeff", "backupClusterStatus": false,
            "podLabels": {"a": "b"}, "podAnnotations": {"a": "b"}, "serviceLabels": {"a": "b"}, "serviceAnnotations": {"a": "b"}
        }
    });
    let n = every_optional_null_reads_as_absent::<KubeDirectorConfig>(&config, "kubedirectorconfig.yaml", &[]);
    assert_eq!(n, 12);
}

#[test]
fn nulls_in_status_lists_read_as_empty() {
    let cluster: KubeDirectorCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": "c"},
        "spec": {"app": "a", "roles": []},
        "status": {"roles": [{"id": "r", "statefulSet": null, "members": [
            {"pod": "p", "service": null, "state": "configured", "nodeID": 1, "blockDevicePaths": null,
             "stateDetail": {"pendingNotifyCmds": null}}
        ]}], "conditions": null}
    }))
    .expect("status nulls");
    let status = cluster.status.expect("status");
    assert!(status.conditions.is_empty());
    assert!(status.roles[0].stateful_set.is_empty() && status.roles[0].members[0].service.is_empty());
    assert!(status.roles[0].members[0].state_detail.pending_notify_cmds.is_empty());
}
