//! Golden files of `render` and `render_configmeta`: every object the director builds for the
//! example and compatibility manifests and for two clusters that use every option, as JSON.
//! A builder change that alters any field shows up as a diff here. After an intended change,
//! regenerate with `KDFED_BLESS=1 cargo test -p kdfed-spoke --lib golden` and review the diff.

use std::path::{Path, PathBuf};

use kdfed_crds::app::KubeDirectorApp;
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::config::KubeDirectorConfigSpec;
use serde_json::{Value, json};

use super::{render, render_configmeta};

fn manifest<T: serde::de::DeserializeOwned>(rel: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    serde_saphyr::from_str(&std::fs::read_to_string(&path).expect("read")).expect("parse")
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/director/testdata").join(format!("{name}.json"))
}

/// Compares `actual` with the committed golden file (or writes it under `KDFED_BLESS=1`).
fn check(name: &str, actual: &Value) {
    let path = golden_path(name);
    let text = format!("{}\n", serde_json::to_string_pretty(actual).expect("serialize"));
    if std::env::var_os("KDFED_BLESS").is_some() {
        std::fs::write(&path, text).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == text,
        "{name}: rendered objects differ from {}; regenerate with KDFED_BLESS=1 if intended",
        path.display()
    );
}

fn check_case(
    name: &str,
    app: &KubeDirectorApp,
    cluster: &KubeDirectorCluster,
    config: Option<&KubeDirectorConfigSpec>,
) {
    let objects = render(app, cluster, config).expect("render");
    check(name, &Value::Array(objects));
    let documents = render_configmeta(app, cluster, config).expect("render configmeta");
    check(&format!("{name}.configmeta"), &documents);
}

/// An app that uses every option the builders read.
fn everything_app() -> KubeDirectorApp {
    serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp", "metadata": {"name": "everything"},
        "spec": {
            "label": {"name": "Everything"}, "distroID": "kdfed/everything", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "img:default",
            "defaultConfigPackage": {"packageURL": "file:///opt/setup.tgz"},
            "capabilities": ["SYS_ADMIN", "NET_ADMIN"],
            "systemdRequired": true,
            "services": [
                {"id": "ssh", "label": {"name": "SSH"}, "endpoint": {"port": 22}},
                {"id": "ui", "label": {"name": "UI"}, "endpoint": {"urlScheme": "HTTP", "port": 8080}},
                {"id": "agent", "label": {"name": "Agent"}}
            ],
            "roles": [
                {"id": "head", "cardinality": "1", "imageRepoTag": "img:head",
                 "configPackage": {"packageURL": "file:///opt/new.tgz", "useNewSetupLayout": true},
                 "persistDirs": ["/data", "/opt/extra"], "containerSpec": {"stdin": true, "tty": true}},
                {"id": "worker", "cardinality": "0+", "containerSpec": {"stdin": true}},
                {"id": "plain", "cardinality": "0+", "configPackage": null}
            ],
            "config": {
                "selectedRoles": ["head", "worker", "plain"],
                "roleServices": [
                    {"roleID": "head", "serviceIDs": ["ssh", "ui"]},
                    {"roleID": "worker", "serviceIDs": ["agent", "ssh"]},
                    {"roleID": "plain", "serviceIDs": ["agent"]}
                ]
            }
        }
    }))
    .expect("app")
}

/// A cluster that uses every option the builders read.
fn everything_cluster() -> KubeDirectorCluster {
    serde_json::from_value(json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": "every", "namespace": "team", "uid": "0f6c1f7e-uid"},
        "spec": {
            "app": "everything", "serviceType": "LoadBalancer",
            "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Retain"},
            "defaultSecret": {"name": "dflt", "mountPath": "/etc/dflt", "defaultMode": 256, "readOnly": true},
            "roles": [
                {"id": "head", "members": 1,
                 "resources": {"limits": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1"}},
                 "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                     {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}},
                 "storage": {"size": "5Gi", "storageClassName": "fast"},
                 "blockStorage": {"storageClassName": "blk", "pathPrefix": "/dev/xb", "size": "2Gi", "numDevices": 2},
                 "podLabels": {"tier": "head"}, "podAnnotations": {"example.com/pod": "head"},
                 "serviceLabels": {"svc": "head"}, "serviceAnnotations": {"example.com/svc": "head"},
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "secret": {"name": "own", "mountPath": "/etc/own"},
                 "volumeProjections": [
                     {"pvcName": "shared", "mountPath": "/shared", "readOnly": true},
                     {"pvcName": "scratch", "mountPath": "/scratch"}
                 ]},
                {"id": "worker", "members": 2,
                 "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": "0"}},
                 "blockStorage": {}},
                {"id": "plain", "members": 1, "storage": {"size": "1Gi"}}
            ]
        }
    }))
    .expect("cluster")
}

fn everything_config() -> KubeDirectorConfigSpec {
    KubeDirectorConfigSpec {
        native_systemd_support: Some(false),
        pod_labels: Some([("cost-center".to_string(), "42".to_string())].into()),
        pod_annotations: Some([("example.com/config-pod".to_string(), "yes".to_string())].into()),
        service_labels: Some([("svc".to_string(), "from-config".to_string())].into()),
        service_annotations: Some([("example.com/config-svc".to_string(), "yes".to_string())].into()),
        cluster_svc_domain_base: Some(".svc.example".to_string()),
        ..KubeDirectorConfigSpec::default()
    }
}

#[test]
fn examples_render_as_the_golden_files() {
    for name in ["spark", "cassandra", "minimal"] {
        let app: KubeDirectorApp = manifest(&format!("examples/apps/{name}.yaml"));
        let cluster: KubeDirectorCluster = manifest(&format!("examples/clusters/{name}.yaml"));
        check_case(&format!("example-{name}"), &app, &cluster, None);
    }
}

#[test]
fn compatibility_corpus_renders_as_the_golden_files() {
    for file in ["bare.yaml", "centos.json", "nulls.yaml", "restserver.yaml"] {
        let app: KubeDirectorApp = manifest(&format!("tests/compat/apps/{file}"));
        let cluster: KubeDirectorCluster = manifest(&format!("tests/compat/clusters/{file}"));
        let name = file.split('.').next().unwrap_or(file);
        check_case(&format!("compat-{name}"), &app, &cluster, None);
    }
}

#[test]
fn a_cluster_using_every_option_renders_as_the_golden_files() {
    let (app, cluster) = (everything_app(), everything_cluster());
    check_case("everything", &app, &cluster, Some(&everything_config()));

    // The other side of each switch: native systemd, the default service type, the
    // CrNameRole scheme, claims deleted on scale-down, no config at all.
    let mut other = cluster.clone();
    other.spec.service_type = None;
    other.spec.naming_scheme = Some("CrNameRole".to_string());
    other.spec.persistent_volume_claim_retention_policy = None;
    other.spec.default_secret = None;
    other.metadata.uid = None;
    let native = KubeDirectorConfigSpec { native_systemd_support: Some(true), ..KubeDirectorConfigSpec::default() };
    check_case("everything-native-systemd", &app, &other, Some(&native));
    check_case("everything-no-config", &app, &other, None);
}
