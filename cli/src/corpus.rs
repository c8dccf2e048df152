//! The compatibility corpus (`tests/compat/`): apps and clusters in upstream KubeDirector's
//! shapes, read, validated and rendered exactly as `kdfed validate`, `kdfed convert` and
//! `kdfed render` do.

use std::path::{Path, PathBuf};

use kdfed_crds::validate::{is_dns_label, is_label_value};
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster, convert};
use serde_json::Value;

use crate::{manifest, offline};

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat").join(rel)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// Every object name `render` produces is a DNS label (StatefulSets, Services, PVC
/// templates) and every label value is valid.
fn assert_valid_names(objects: &[Value], cluster: &str) {
    for object in objects {
        let name = name(object);
        assert!(is_dns_label(name), "{cluster}: {} name {name:?} is not a DNS label", object["kind"]);
        let mut label_sets = vec![&object["metadata"]["labels"], &object["spec"]["template"]["metadata"]["labels"]];
        label_sets.extend(object["spec"]["volumeClaimTemplates"].as_array().into_iter().flatten().map(|t| {
            assert!(t["metadata"]["name"].as_str().is_some_and(is_dns_label), "{cluster}: claim template {t}");
            &t["metadata"]["labels"]
        }));
        for labels in label_sets {
            for (key, value) in labels.as_object().into_iter().flatten() {
                let value = value.as_str().unwrap_or_default();
                assert!(is_label_value(value), "{cluster}: {name}: label {key}={value:?} is not a label value");
            }
        }
        if object["kind"] == "StatefulSet" {
            let pod = format!("{name}-999");
            assert!(is_dns_label(&format!("s-{pod}")) && is_dns_label(&format!("p-{pod}")), "{cluster}: {pod}");
        }
    }
}

#[test]
fn every_corpus_app_and_cluster_validates_as_kdfed_validate_reads_them() {
    let docs = manifest::read_all(&[corpus("apps"), corpus("clusters")]).expect("read the corpus");
    assert_eq!(of_kind(&docs, "KubeDirectorApp").len(), 4, "JSON (with tabs) and YAML (with comments) apps");
    assert_eq!(of_kind(&docs, "KubeDirectorCluster").len(), 4);
    let report = offline::validate(&docs);
    assert!(!report.failed, "{:#?}", report.lines);
    assert_eq!(report.lines.iter().filter(|l| l.ends_with(": valid")).count(), 8, "{:#?}", report.lines);
}

#[test]
fn every_corpus_cluster_renders_objects_with_valid_names() {
    let docs = manifest::read_all(&[corpus("apps"), corpus("clusters")]).expect("read the corpus");
    let apps: Vec<KubeDirectorApp> = of_kind(&docs, "KubeDirectorApp")
        .into_iter()
        .map(|d| serde_json::from_value(d.clone()).expect("app"))
        .collect();
    for doc in of_kind(&docs, "KubeDirectorCluster") {
        let cluster: KubeDirectorCluster = serde_json::from_value(doc.clone()).expect("cluster");
        let app = apps.iter().find(|a| a.metadata.name.as_deref() == Some(cluster.spec.app.as_str())).expect("its app");
        for scheme in ["UID", "CrNameRole"] {
            let mut cluster = cluster.clone();
            cluster.spec.naming_scheme = Some(scheme.into());
            let objects = kdfed_spoke::director::render::render(app, &cluster, None)
                .unwrap_or_else(|e| panic!("{} ({scheme}): {e}", name(doc)));
            assert!(objects.iter().any(|o| o["kind"] == "StatefulSet"), "{}: no StatefulSet", name(doc));
            assert_valid_names(&objects, name(doc));
        }
    }
}

#[test]
fn role_ids_in_upstreams_form_name_objects_as_upstream_munges_them() {
    let docs = manifest::read_all(&[corpus("apps/restserver.yaml"), corpus("clusters/restserver.yaml")])
        .expect("read the corpus");
    let app: KubeDirectorApp = serde_json::from_value(docs[0].clone()).expect("app");
    let cluster: KubeDirectorCluster = serde_json::from_value(docs[1].clone()).expect("cluster");
    let objects = kdfed_spoke::director::render::render(&app, &cluster, None).expect("render");
    let statefulsets: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "StatefulSet").collect();
    let names: Vec<&str> = statefulsets.iter().map(|o| name(o)).collect();
    // CrNameRole: `<cluster>-<role>` lowercased, '.' and '_' as '-', then a 5-character suffix.
    for prefix in ["rest-loadbalancer-", "rest-restserver-", "rest-spark-worker-"] {
        assert!(names.iter().any(|n| n.starts_with(prefix) && n.len() == prefix.len() + 5), "{prefix} in {names:?}");
    }
    // The role label keeps the id as it is (a valid label value), as upstream's does.
    let roles: Vec<&str> = statefulsets
        .iter()
        .filter_map(|o| o["spec"]["template"]["metadata"]["labels"]["kubedirector.hpe.com/role"].as_str())
        .collect();
    assert_eq!(roles, vec!["LoadBalancer", "RESTServer", "spark.worker"]);
}

#[test]
fn nulls_read_as_absent_offline() {
    let docs = manifest::read_all(&[corpus("clusters/nulls.yaml"), corpus("clusters/centos.json")]).expect("read");
    for doc in &docs {
        let cluster: KubeDirectorCluster = serde_json::from_value(doc.clone()).expect("nulls deserialize");
        let connections = cluster.spec.connections.unwrap_or_default();
        assert!(connections.secrets.is_empty() && connections.configmaps.is_empty() && connections.clusters.is_empty());
    }
    let cluster: KubeDirectorCluster = serde_json::from_value(docs[0].clone()).expect("nulls");
    let role = &cluster.spec.roles[0];
    assert!(role.env.is_empty() && role.file_injections.is_empty() && role.secret_keys.is_empty());
    assert!(role.pod_labels.is_none() && role.storage.is_none() && role.resources.requests.is_none());
    let docs = manifest::read_all(&[corpus("apps/nulls.yaml")]).expect("read");
    let app: KubeDirectorApp = serde_json::from_value(docs[0].clone()).expect("app nulls deserialize");
    assert!(app.spec.capabilities.is_empty() && app.spec.default_persist_dirs.is_none());
    assert_eq!(app.spec.roles[0].config_package, Some(None), "null setup package stays explicit");
}

#[test]
fn v1alpha1_forms_convert_then_validate_and_render() {
    let text = manifest::read_input(&corpus("v1alpha1/centos.yaml")).expect("read");
    let converted = convert::convert_yaml(&text).expect("convert");
    let docs = manifest::documents(&converted, "converted").expect("converted YAML");
    assert!(docs.iter().all(|d| d["apiVersion"] == kdfed_crds::KUBEDIRECTOR_API_VERSION), "{converted}");
    let report = offline::validate(&docs);
    assert!(!report.failed, "{:#?}\n{converted}", report.lines);
    let app: KubeDirectorApp = serde_json::from_value(docs[0].clone()).expect("app");
    let cluster: KubeDirectorCluster = serde_json::from_value(docs[1].clone()).expect("cluster");
    assert_eq!(cluster.spec.roles[0].id, "vanilla_centos", "values are not renamed, only keys");
    assert_eq!(cluster.spec.roles[0].members, Some(2));
    let objects = kdfed_spoke::director::render::render(&app, &cluster, None).expect("render");
    assert_valid_names(&objects, "centos-v1alpha1");
}

#[test]
fn type_errors_name_their_field_offline() {
    let mut docs = manifest::read_all(&[corpus("apps/bare.yaml"), corpus("clusters/bare.yaml")]).expect("read");
    docs[1]["spec"]["roles"][0]["members"] = serde_json::json!("seven");
    let report = offline::validate(&docs);
    assert!(report.failed);
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with("kubedirectorcluster/bare: spec.roles[0].members: invalid type: string \"seven\"")
                && l.ends_with("(rule: type)")),
        "{:#?}",
        report.lines
    );
}
