//! Build (pure): the `KubeDirectorWork` an intent's member cluster receives, a frozen
//! snapshot of everything it needs, and the Secret beside it with the secret material.
//!
//! Secret keys are encrypted with the hub's master key; the member cluster has its own.
//! Their values travel, with the referenced Secrets' data, in the Secret beside the Work
//! (readable only by that member cluster), never in the Work; the member seals them again
//! under its own key.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kdfed_crds::Resolved;
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterSpec, PlacementStatus};
use kdfed_crds::federation::{
    FINALIZER_WORK, KubeDirectorWork, KubeDirectorWorkSpec, WORK_SECRET_DATA_KEY, WORK_SECRET_KEYS_KEY, WorkApp,
    WorkCluster, WorkConfigMap, WorkOrigin, WorkSecret, member_namespace, work_name,
};
use kube::ResourceExt;

use super::dereference::Connected;
use super::{LABEL_ORIGIN_NAME, LABEL_ORIGIN_NAMESPACE};

/// The secret material of a Work: what travels in the Secret beside it.
#[derive(Debug, Default, PartialEq)]
pub struct WorkMaterial {
    /// Referenced Secrets' data: secret name → key → base64 value.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Secret-key values: role id → key name → value.
    pub secret_keys: BTreeMap<String, BTreeMap<String, String>>,
}

impl WorkMaterial {
    /// Whether there is nothing to carry (then the Work has no Secret beside it).
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.secret_keys.is_empty()
    }
}

/// A built Work, with what goes beside it.
#[derive(Debug)]
pub struct Built {
    /// The Work. Its `secretData` is left for the apply step to fill in: it names the
    /// `resourceVersion` of the Secret, known only once that is applied.
    pub work: KubeDirectorWork,
    /// The Secret with the Work's secret material; `None` when there is none.
    pub secret: Option<Secret>,
    /// Secret keys that could not be read, one message each (`role <id>: ...`).
    pub unreadable: Vec<String>,
}

/// The Work of `intent` placed per `placement`, from its resolved spec and the objects it
/// connects to, and the Secret beside it.
pub fn build_work(
    intent: &KubeDirectorCluster,
    resolved: &Resolved,
    placement: &PlacementStatus,
    connected: &Connected,
) -> Built {
    let ns = intent.namespace().unwrap_or_else(|| "default".into());
    let name = intent.name_any();
    let member_ns = member_namespace(&placement.member);
    let wname = work_name(&ns, &name);
    let labels = origin_labels(&ns, &name);
    let (secret_keys, unreadable) = secret_key_values(&resolved.cluster, connected.master_key.as_deref());
    let material = WorkMaterial { secrets: secret_data(&connected.secrets), secret_keys };
    let secret = (!material.is_empty()).then(|| work_secret(&member_ns, &wname, &labels, &material));
    let spec = KubeDirectorWorkSpec {
        origin: WorkOrigin {
            namespace: ns.clone(),
            name: name.clone(),
            uid: intent.metadata.uid.clone().unwrap_or_default(),
            generation: intent.metadata.generation.unwrap_or(0),
        },
        placement_epoch: placement.epoch,
        app: WorkApp { name: intent.spec.app.clone(), spec: resolved.app.clone() },
        cluster: WorkCluster {
            namespace: ns,
            name,
            labels: intent.labels().clone(),
            spec: without_secret_key_values(&resolved.cluster),
        },
        secrets: connected.secrets.iter().map(work_secret_entry).collect(),
        secret_data: None,
        config_maps: connected.config_maps.iter().map(work_config_map).collect(),
    };
    let mut work = KubeDirectorWork::new(&wname, spec);
    work.metadata.namespace = Some(member_ns);
    work.metadata.labels = Some(labels);
    work.metadata.finalizers = Some(vec![FINALIZER_WORK.to_string()]);
    Built { work, secret, unreadable }
}

/// The labels that tie a Work (and its Secret) to its origin.
pub fn origin_labels(ns: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_ORIGIN_NAMESPACE.to_string(), ns.to_string()),
        (LABEL_ORIGIN_NAME.to_string(), name.to_string()),
    ])
}

/// The plain values of the cluster's secret keys per role (`value`, else `encryptedValue`
/// decrypted with the master key), and a message per key that could not be read.
pub fn secret_key_values(
    spec: &KubeDirectorClusterSpec,
    master_key: Option<&str>,
) -> (BTreeMap<String, BTreeMap<String, String>>, Vec<String>) {
    let mut values = BTreeMap::new();
    let mut unreadable = Vec::new();
    for role in &spec.roles {
        let (role_values, errors) = kdfed_common::secretkeys::plain_values(&role.secret_keys, master_key);
        unreadable.extend(errors.into_iter().map(|e| format!("role {}: {e}", role.id)));
        if !role_values.is_empty() {
            values.insert(role.id.clone(), role_values);
        }
    }
    (values, unreadable)
}

/// The cluster spec as the Work carries it: secret keys by name only (their values travel
/// in the Secret beside the Work).
pub fn without_secret_key_values(spec: &KubeDirectorClusterSpec) -> KubeDirectorClusterSpec {
    let mut spec = spec.clone();
    for key in spec.roles.iter_mut().flat_map(|r| r.secret_keys.iter_mut()) {
        key.value = None;
        key.encrypted_value = None;
    }
    spec
}

/// The referenced Secrets' data: secret name → key → base64 value.
fn secret_data(secrets: &[Secret]) -> BTreeMap<String, BTreeMap<String, String>> {
    secrets
        .iter()
        .map(|s| {
            let data = s.data.iter().flatten().map(|(k, v)| (k.clone(), base64(&v.0))).collect();
            (s.name_any(), data)
        })
        .collect()
}

/// A referenced Secret as the Work lists it: without its data.
fn work_secret_entry(secret: &Secret) -> WorkSecret {
    WorkSecret {
        name: secret.name_any(),
        type_: secret.type_.clone(),
        data: BTreeMap::new(),
        labels: carried(secret.metadata.labels.as_ref()),
        annotations: carried(secret.metadata.annotations.as_ref()),
    }
}

/// A connected ConfigMap as the Work carries it.
fn work_config_map(cm: &ConfigMap) -> WorkConfigMap {
    WorkConfigMap {
        name: cm.name_any(),
        labels: carried(cm.metadata.labels.as_ref()),
        annotations: carried(cm.metadata.annotations.as_ref()),
        data: cm.data.clone().unwrap_or_default(),
        binary_data: cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), base64(&v.0))).collect(),
    }
}

/// Labels and annotations worth copying with a connected object: not kubectl's bookkeeping.
fn carried(map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with("kubectl.kubernetes.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The Secret that carries a Work's secret material (see [`WorkMaterial`]), as applied.
pub fn work_secret(namespace: &str, name: &str, labels: &BTreeMap<String, String>, material: &WorkMaterial) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([
            (WORK_SECRET_DATA_KEY.to_string(), json_bytes(&material.secrets)),
            (WORK_SECRET_KEYS_KEY.to_string(), json_bytes(&material.secret_keys)),
        ])),
        ..Secret::default()
    }
}

/// `value` as JSON text, the bytes of a Secret's data entry.
fn json_bytes(value: &BTreeMap<String, BTreeMap<String, String>>) -> ByteString {
    ByteString(serde_json::to_vec(value).unwrap_or_default())
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intents::fixtures::{app, web_intent};

    fn resolved(intent: &KubeDirectorCluster) -> Resolved {
        let mut spec = intent.spec.clone();
        spec.app_catalog = Some("local".into());
        kdfed_crds::resolve(&app().spec, &spec, None).expect("valid")
    }

    fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
        serde_json::from_value(value).expect("object")
    }

    fn on_east(epoch: i64) -> PlacementStatus {
        PlacementStatus { member: "east".into(), epoch, time: None }
    }

    #[test]
    fn a_work_is_a_frozen_snapshot_named_after_its_origin_in_the_member_s_namespace() {
        let mut db = web_intent("db", 2, "1");
        db.metadata.labels = Some(BTreeMap::from([("team".into(), "blue".into())]));
        let built = build_work(&db, &resolved(&db), &on_east(3), &Connected::default());
        let work = &built.work;
        assert_eq!(work.metadata.name.as_deref(), Some("default.db"));
        assert_eq!(work.metadata.namespace.as_deref(), Some("kdfed-member-east"));
        assert_eq!(work.metadata.finalizers, Some(vec![FINALIZER_WORK.to_string()]));
        assert_eq!(work.labels().get(LABEL_ORIGIN_NAME).map(String::as_str), Some("db"));
        assert_eq!(work.labels().get(LABEL_ORIGIN_NAMESPACE).map(String::as_str), Some("default"));
        let origin = &work.spec.origin;
        assert_eq!((origin.namespace.as_str(), origin.name.as_str(), origin.uid.as_str()), ("default", "db", "uid-db"));
        assert_eq!((origin.generation, work.spec.placement_epoch), (2, 3));
        assert_eq!(work.spec.app.name, "a");
        assert_eq!(work.spec.cluster.labels.get("team").map(String::as_str), Some("blue"));
        assert_eq!(work.spec.cluster.spec.app_catalog.as_deref(), Some("local"));
        assert_eq!(work.spec.cluster.spec.roles[0].members, Some(2));
        assert_eq!((built.secret, built.unreadable.len(), work.status.clone()), (None, 0, None));
        // What goes over the wire: kind and apiVersion, no status, no empty lists.
        let wire = serde_json::to_value(work).expect("json");
        assert_eq!(wire["kind"], "KubeDirectorWork");
        assert_eq!(wire["apiVersion"], kdfed_crds::FEDERATION_API_VERSION);
        assert!(wire.get("status").is_none() && wire["spec"].get("secrets").is_none(), "{wire}");
    }

    #[test]
    fn the_work_carries_the_app_s_choices_as_written_and_the_cluster_s_chosen_values() {
        let mut chooser = app();
        chooser.spec.config_choices = vec![object(serde_json::json!(
            {"id": "tier", "label": {"name": "Tier"}, "values": ["small", "large"], "mutable": true}))];
        chooser.spec.config.conditional = vec![object(serde_json::json!(
            {"when": {"tier": "large"}, "configMeta": {"size": "large"}}))];
        let mut db = web_intent("db", 1, "1");
        db.spec.app_catalog = Some("local".into());
        db.spec.config_choices = BTreeMap::from([("tier".into(), "large".into())]);
        let resolved = kdfed_crds::resolve(&chooser.spec, &db.spec, None).expect("valid");
        let work = build_work(&db, &resolved, &on_east(1), &Connected::default()).work;
        assert_eq!(work.spec.app.spec.config_choices, chooser.spec.config_choices);
        assert_eq!(work.spec.app.spec.config.conditional, chooser.spec.config.conditional, "not merged away");
        assert_eq!(work.spec.cluster.spec.config_choices, db.spec.config_choices);
    }

    #[test]
    fn secret_values_travel_in_the_secret_beside_the_work_never_in_the_work() {
        let mut db = web_intent("db", 1, "1");
        db.spec.roles[0].secret_keys = vec![
            object(serde_json::json!({"name": "password", "value": "hunter2"})),
            object(serde_json::json!({"name": "sealed", "encryptedValue": "00"})),
        ];
        let connected = Connected {
            secrets: vec![object(serde_json::json!({
                "metadata": {"name": "creds", "labels": {"kubedirector.hpe.com/secretType": "x"},
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "note": "kept"}},
                "type": "Opaque", "data": {"user": "YWRtaW4="},
            }))],
            config_maps: vec![object(serde_json::json!({
                "metadata": {"name": "conf"}, "data": {"a": "b"}, "binaryData": {"bin": "AAE="},
            }))],
            master_key: None,
        };
        let built = build_work(&db, &resolved(&db), &on_east(1), &connected);
        let keys = &built.work.spec.cluster.spec.roles[0].secret_keys;
        assert!(keys.iter().all(|k| k.value.is_none() && k.encrypted_value.is_none()), "{keys:?}");
        assert_eq!(built.unreadable, ["role web: secret key sealed: no masterEncryptionKey to decrypt it"]);
        let entry = &built.work.spec.secrets[0];
        assert_eq!((entry.name.as_str(), entry.type_.as_deref(), entry.data.len()), ("creds", Some("Opaque"), 0));
        assert_eq!(
            entry.annotations,
            BTreeMap::from([("note".to_string(), "kept".to_string())]),
            "no kubectl bookkeeping"
        );
        let cm = &built.work.spec.config_maps[0];
        assert_eq!((cm.data.get("a"), cm.binary_data.get("bin")), (Some(&"b".to_string()), Some(&"AAE=".to_string())));

        let secret = built.secret.expect("material");
        assert_eq!(secret.metadata.name.as_deref(), Some("default.db"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("kdfed-member-east"));
        let data = secret.data.expect("data");
        let secrets: serde_json::Value = serde_json::from_slice(&data[WORK_SECRET_DATA_KEY].0).expect("json");
        assert_eq!(secrets, serde_json::json!({"creds": {"user": "YWRtaW4="}}));
        let values: serde_json::Value = serde_json::from_slice(&data[WORK_SECRET_KEYS_KEY].0).expect("json");
        assert_eq!(values, serde_json::json!({"web": {"password": "hunter2"}}));
    }

    #[test]
    fn the_work_s_secret_is_base64_json_on_the_wire() {
        let material = WorkMaterial {
            secrets: BTreeMap::new(),
            secret_keys: BTreeMap::from([("r".into(), BTreeMap::from([("k".into(), "v".into())]))]),
        };
        let secret = work_secret("ns", "n", &BTreeMap::new(), &material);
        let wire = serde_json::to_value(&secret).expect("json");
        assert_eq!((wire["kind"].as_str(), wire["type"].as_str()), (Some("Secret"), Some("Opaque")));
        assert_eq!(wire["data"][WORK_SECRET_KEYS_KEY], base64(br#"{"r":{"k":"v"}}"#));
        assert_eq!(wire["data"][WORK_SECRET_DATA_KEY], base64(b"{}"));
    }
}
