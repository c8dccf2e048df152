//! Manifests in upstream KubeDirector's format deserialize, default, validate and
//! serialize without losing fields; v1alpha1 manifests convert and then validate.

use std::path::{Path, PathBuf};

use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster, convert, defaults, validate};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn load(rel: &str) -> Value {
    let text = std::fs::read_to_string(examples().join(rel)).expect("read example");
    serde_saphyr::from_str(&text).expect("parse example")
}

/// Typed round trip; returns the typed object and asserts no field was lost or changed.
fn round_trip<T: DeserializeOwned + Serialize>(original: &Value) -> T {
    let typed: T = serde_json::from_value(original.clone()).expect("deserialize");
    let back = serde_json::to_value(&typed).expect("serialize");
    let lost = validate::unknown_fields(original, &back);
    assert!(lost.is_empty(), "fields lost in round trip: {lost:?}");
    typed
}

fn app(rel: &str) -> KubeDirectorApp {
    let original = load(rel);
    let mut app: KubeDirectorApp = round_trip(&original);
    defaults::app(&mut app.spec);
    validate::app(&app.spec).unwrap_or_else(|e| panic!("{rel}: {e}"));
    // Defaulting adds; every field the author wrote is still there.
    let defaulted = serde_json::to_value(&app).expect("serialize");
    let lost = validate::unknown_fields(&original, &defaulted);
    assert!(lost.is_empty(), "{rel}: defaulting changed {lost:?}");
    app
}

fn cluster(rel: &str, app: &KubeDirectorApp) -> KubeDirectorCluster {
    let original = load(rel);
    let mut cluster: KubeDirectorCluster = round_trip(&original);
    defaults::cluster(&mut cluster.spec, &app.spec, None);
    validate::cluster(&cluster.spec, &cluster.spec.app, &app.spec).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let defaulted = serde_json::to_value(&cluster).expect("serialize");
    let lost = validate::unknown_fields(&original, &defaulted);
    assert!(lost.is_empty(), "{rel}: defaulting changed {lost:?}");
    cluster
}

#[test]
fn spark_app_with_four_roles_and_dashboards_round_trips() {
    let spark = app("apps/spark.yaml");
    assert_eq!(spark.spec.roles.len(), 4);
    let dashboards = spark
        .spec
        .services
        .iter()
        .filter(|s| s.endpoint.as_ref().is_some_and(|e| e.is_dashboard == Some(true)))
        .count();
    assert!(dashboards >= 3, "{dashboards} dashboards");
    // The gateway role's explicit `configPackage: null` survives defaulting; others inherit.
    let gateway = spark.spec.role("gateway").expect("gateway role");
    assert_eq!(gateway.config_package, Some(None));
    let worker = spark.spec.role("worker").expect("worker role");
    let url = worker.config_package.clone().flatten().map(|p| p.package_url);
    assert_eq!(url.as_deref(), Some("file:///opt/configscripts/appconfig.tgz"));
    assert_eq!(worker.image_repo_tag.as_deref(), Some("docker.io/kdfed-examples/spark:3.5.1"));
    let jupyter = spark.spec.role("jupyter").expect("jupyter role");
    assert_eq!(jupyter.image_repo_tag.as_deref(), Some("docker.io/kdfed-examples/spark-jupyter:3.5.1"));
    let c = cluster("clusters/spark.yaml", &spark);
    assert_eq!(c.spec.roles.iter().map(|r| r.members).collect::<Vec<_>>(), vec![Some(1), Some(3), Some(1)]);
    assert!(c.spec.placement.is_some());
}

#[test]
fn cassandra_app_with_two_plus_seeds_round_trips() {
    let cassandra = app("apps/cassandra.yaml");
    assert_eq!(cassandra.spec.role("seed").map(|r| r.cardinality.as_str()), Some("2+"));
    let c = cluster("clusters/cassandra.yaml", &cassandra);
    assert_eq!(c.spec.roles[0].members, Some(2));
}

#[test]
fn minimal_app_without_setup_package_round_trips() {
    let minimal = app("apps/minimal.yaml");
    assert_eq!(minimal.spec.default_config_package, Some(None));
    assert_eq!(minimal.spec.roles[0].config_package, Some(None));
    let c = cluster("clusters/minimal.yaml", &minimal);
    assert_eq!(c.spec.roles[0].members, Some(2));
    assert_eq!(c.spec.service_type.as_deref(), Some("LoadBalancer"), "upstream default service type");
}

#[test]
fn v1alpha1_manifests_convert_and_validate() {
    let text = std::fs::read_to_string(examples().join("v1alpha1/spark-app.yaml")).expect("read");
    let converted = convert::convert_yaml(&text).expect("convert");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&converted).expect("parse converted");
    assert_eq!(docs.len(), 2);
    assert!(!converted.contains("_id:") && !converted.contains("package_url"), "{converted}");
    let mut old_app: KubeDirectorApp = round_trip(&docs[0]);
    assert_eq!(old_app.spec.distro_id, "bluedata/spark221e2");
    assert_eq!(old_app.spec.config.role_services[0].service_ids, vec!["ssh", "spark"]);
    let url = old_app.spec.default_config_package.clone().flatten().map(|p| p.package_url);
    assert_eq!(url.as_deref(), Some("https://example.invalid/appconfig-2.7.tgz"));
    assert_eq!(old_app.metadata.labels.as_ref().and_then(|l| l.get("team_name")).map(String::as_str), Some("data"));
    let meta = old_app.spec.config.config_meta.as_ref().expect("configMeta");
    assert!(meta.contains_key("spark_executor_memory"), "free-form keys are data, not fields");
    defaults::app(&mut old_app.spec);
    validate::app(&old_app.spec).expect("converted app is valid");
    let mut old_cluster: KubeDirectorCluster = round_trip(&docs[1]);
    assert_eq!(old_cluster.spec.roles[0].id, "controller");
    assert_eq!(old_cluster.spec.roles[0].members, Some(1));
    assert_eq!(old_cluster.spec.service_type.as_deref(), Some("NodePort"));
    defaults::cluster(&mut old_cluster.spec, &old_app.spec, None);
    validate::cluster(&old_cluster.spec, "spark221e2", &old_app.spec).expect("converted cluster is valid");
}

#[test]
fn a_typo_is_reported_as_an_unknown_field() {
    let mut original = load("apps/minimal.yaml");
    original["spec"]["defaultImageRepTag"] = Value::String("x".into());
    let typed: KubeDirectorApp = serde_json::from_value(original.clone()).expect("deserialize");
    let back = serde_json::to_value(&typed).expect("serialize");
    assert_eq!(validate::unknown_fields(&original, &back), vec!["spec.defaultImageRepTag".to_string()]);
}
