//! Properties of the pure parts, over generated apps and clusters in upstream's shapes
//! (valid and broken alike): defaulting and validation never panic and are idempotent;
//! every valid pair renders to well-formed objects and a configmeta in upstream's shape; and
//! (against a real API server) the rendered objects of many valid pairs pass a server-side
//! dry run.

use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster, defaults, validate};
use kdfed_spoke::director::render::{render, render_configmeta};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

const ROLE_IDS: [&str; 5] = ["controller", "worker", "seed", "edge-1", "gw"];

fn cardinality() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["1", "2", "0+", "1+", "3+", "0", "x", "", "1001"]).prop_map(String::from)
}

fn quantity() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["100m", "1", "2", "512Mi", "1Gi", "-1", "abc", "0"]).prop_map(String::from)
}

/// An app in upstream's shape, often valid, sometimes not.
fn app() -> impl Strategy<Value = Value> {
    (
        prop::sample::subsequence(ROLE_IDS.to_vec(), 1..=4),
        prop::collection::vec(cardinality(), 4),
        prop::sample::subsequence(vec!["ui", "api", "ssh"], 0..=3),
        prop::collection::vec(prop::sample::select(vec![22_i64, 8080, 0, 70_000]), 3),
        prop::collection::vec(any::<bool>(), 8),
        prop::sample::select(vec![
            None,
            Some("file:///opt/p.tgz"),
            Some("https://e.com/p.tgz"),
            Some("ftp://e.com/p.tgz"),
        ]),
        prop::sample::select(vec![vec![], vec!["/data"], vec!["/var/lib/x", "/data"], vec!["rel"], vec!["/"]]),
        6_i32..=9,
        prop::sample::select(vec!["1.0", "", "2.3.4"]),
    )
        .prop_map(|(roles, cards, services, ports, flags, package, persist, schema, version)| {
            let role_list: Vec<Value> =
                roles.iter().zip(&cards).map(|(id, c)| json!({"id": id, "cardinality": c})).collect();
            let service_list: Vec<Value> = services
                .iter()
                .zip(&ports)
                .map(|(id, port)| json!({"id": id, "endpoint": {"port": port, "urlScheme": "http"}}))
                .collect();
            // Selected: the roles a flag keeps (and a ghost now and then).
            let mut selected: Vec<&str> = roles.iter().zip(&flags).filter(|(_, f)| **f).map(|(r, _)| *r).collect();
            if selected.is_empty() {
                selected.push(roles[0]);
            }
            if flags[7] && flags[6] {
                selected.push("ghost");
            }
            let role_services: Vec<Value> = selected
                .iter()
                .filter(|r| **r != "ghost")
                .map(|r| json!({"roleID": r, "serviceIDs": if flags[5] { services.clone() } else { vec![] }}))
                .collect();
            json!({
                "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
                "metadata": {"name": "gen", "namespace": "default"},
                "spec": {
                    "label": {"name": "Generated"}, "distroID": "test/gen", "version": version,
                    "configSchemaVersion": schema, "defaultImageRepoTag": "example/gen:1",
                    "defaultConfigPackage": package.map(|u| json!({"packageURL": u})),
                    "defaultPersistDirs": persist,
                    "services": service_list, "roles": role_list,
                    "config": {"selectedRoles": selected, "roleServices": role_services},
                }
            })
        })
}

/// A cluster of `app`'s roles (some left out, an unknown one now and then).
fn cluster_of(app: &Value) -> impl Strategy<Value = Value> + use<> {
    let ids: Vec<String> = app["spec"]["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(String::from))
        .collect();
    let n = ids.len();
    (
        prop::collection::vec(any::<bool>(), n),
        prop::collection::vec(prop::option::of(-1_i32..5), n),
        prop::collection::vec(quantity(), n),
        prop::collection::vec(quantity(), n),
        prop::collection::vec(prop::sample::select(vec![None, Some("1Gi"), Some("x")]), n),
        any::<bool>(),
    )
        .prop_map(move |(keep, members, cpu, memory, storage, ghost)| {
            let mut roles: Vec<Value> = Vec::new();
            for i in 0..n {
                if !keep[i] {
                    continue;
                }
                let mut role = json!({"id": ids[i], "resources": {"requests": {"cpu": cpu[i], "memory": memory[i]}}});
                if let Some(m) = members[i] {
                    role["members"] = json!(m);
                }
                if let Some(size) = storage[i] {
                    role["storage"] = json!({"size": size});
                }
                roles.push(role);
            }
            if ghost {
                roles.push(json!({"id": "ghost", "members": 1}));
            }
            json!({
                "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
                "metadata": {"name": "gen", "namespace": "default"},
                "spec": {"app": "gen", "roles": roles}
            })
        })
}

fn pair() -> impl Strategy<Value = (Value, Value)> {
    app().prop_flat_map(|a| {
        let c = cluster_of(&a);
        (Just(a), c)
    })
}

/// Members within a cardinality: exactly N, or N to N+3 for "N+".
fn members_for(cardinality: &str, pick: i32) -> i32 {
    match cardinality.strip_suffix('+') {
        Some(min) => min.parse::<i32>().unwrap_or(0) + pick % 4,
        None => cardinality.parse().unwrap_or(1),
    }
}

/// Pairs built to be valid (validation still decides): valid cardinalities, ports,
/// packages, quantities and member counts, in varied shapes.
fn valid_pair() -> impl Strategy<Value = (Value, Value)> {
    (
        prop::sample::subsequence(ROLE_IDS.to_vec(), 1..=4),
        prop::collection::vec(prop::sample::select(vec!["1", "2", "0+", "1+", "3+"]), 4),
        prop::sample::subsequence(vec!["ui", "api", "ssh"], 0..=3),
        prop::collection::vec(prop::sample::select(vec![22_i64, 8080, 443]), 3),
        prop::sample::select(vec![None, Some("file:///opt/p.tgz"), Some("https://e.com/p.tgz")]),
        prop::sample::select(vec![vec![], vec!["/data"], vec!["/var/lib/x", "/data"]]),
        7_i32..=9,
        prop::collection::vec(0_i32..4, 4),
        prop::collection::vec(prop::sample::select(vec![("100m", "512Mi"), ("1", "1Gi"), ("250m", "2Gi")]), 4),
        prop::collection::vec(prop::sample::select(vec![None, Some("1Gi")]), 4),
    )
        .prop_map(|(roles, cards, services, ports, package, persist, schema, picks, resources, storage)| {
            let role_list: Vec<Value> =
                roles.iter().zip(&cards).map(|(id, c)| json!({"id": id, "cardinality": c})).collect();
            let service_list: Vec<Value> = services
                .iter()
                .zip(&ports)
                .map(|(id, port)| json!({"id": id, "endpoint": {"port": port, "urlScheme": "http"}}))
                .collect();
            let role_services: Vec<Value> =
                roles.iter().map(|r| json!({"roleID": r, "serviceIDs": services.clone()})).collect();
            let app = json!({
                "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
                "metadata": {"name": "gen", "namespace": "default"},
                "spec": {
                    "label": {"name": "Generated"}, "distroID": "test/gen", "version": "1.0",
                    "configSchemaVersion": schema, "defaultImageRepoTag": "example/gen:1",
                    "defaultConfigPackage": package.map(|u| json!({"packageURL": u})),
                    "defaultPersistDirs": persist,
                    "services": service_list, "roles": role_list,
                    "config": {"selectedRoles": roles, "roleServices": role_services},
                }
            });
            let cluster_roles: Vec<Value> = roles
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let mut role = json!({"id": id, "members": members_for(cards[i], picks[i]),
                        "resources": {"requests": {"cpu": resources[i].0, "memory": resources[i].1}}});
                    if let Some(size) = storage[i] {
                        role["storage"] = json!({"size": size});
                    }
                    role
                })
                .collect();
            let cluster = json!({
                "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
                "metadata": {"name": "gen", "namespace": "default"},
                "spec": {"app": "gen", "roles": cluster_roles}
            });
            (app, cluster)
        })
}

fn typed(app: &Value, cluster: &Value) -> (KubeDirectorApp, KubeDirectorCluster) {
    (
        serde_json::from_value(app.clone()).expect("generated app decodes"),
        serde_json::from_value(cluster.clone()).expect("generated cluster decodes"),
    )
}

/// Whether defaulting and validation accept the pair.
fn valid(app: &KubeDirectorApp, cluster: &KubeDirectorCluster) -> bool {
    let mut a = app.spec.clone();
    defaults::app(&mut a);
    let mut c = cluster.spec.clone();
    defaults::cluster(&mut c, &a, None);
    validate::app(&a).is_ok() && validate::cluster(&c, "gen", &a).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn defaulting_and_validation_never_panic_and_are_idempotent((app, cluster) in pair()) {
        let (app, cluster) = typed(&app, &cluster);
        let mut a = app.spec.clone();
        defaults::app(&mut a);
        let mut again = a.clone();
        defaults::app(&mut again);
        prop_assert_eq!(&again, &a);
        let mut c = cluster.spec.clone();
        defaults::cluster(&mut c, &a, None);
        let mut c_again = c.clone();
        defaults::cluster(&mut c_again, &a, None);
        prop_assert_eq!(&c_again, &c);
        let first = validate::app(&a).and_then(|()| validate::cluster(&c, "gen", &a)).map_err(|e| e.to_string());
        let second = validate::app(&again).and_then(|()| validate::cluster(&c_again, "gen", &again)).map_err(|e| e.to_string());
        prop_assert_eq!(first.clone(), second);
        // Every error names a field path.
        if let Err(text) = first {
            for line in text.lines() {
                prop_assert!(line.starts_with("spec.") || line.starts_with("metadata."), "no path: {}", line);
            }
        }
    }

    #[test]
    fn every_valid_pair_renders_well_formed_objects_and_upstream_shaped_configmeta((app, cluster) in valid_pair()) {
        let (app, cluster) = typed(&app, &cluster);
        prop_assume!(valid(&app, &cluster));
        let objects = render(&app, &cluster, None).expect("a valid pair renders");
        prop_assert!(!objects.is_empty());
        for o in &objects {
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            prop_assert!(o["apiVersion"].is_string() && o["kind"].is_string(), "{}", o);
            prop_assert!(!name.is_empty() && name.len() <= 63, "name {:?}", name);
            prop_assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'), "name {:?}", name);
        }
        let configmeta = render_configmeta(&app, &cluster, None).expect("configmeta");
        let text = serde_json::to_string(&configmeta).expect("JSON");
        let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
        for (pod, doc) in parsed.as_object().expect("pod → document").iter() {
            for key in ["version", "services", "nodegroups", "distros", "cluster", "node"] {
                prop_assert!(doc.get(key).is_some(), "{}: configmeta lacks {}", pod, key);
            }
        }
    }
}

/// Many valid generated pairs, deterministic (a fixed seed), for the dry run below.
fn valid_pairs(count: usize) -> Vec<(KubeDirectorApp, KubeDirectorCluster)> {
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let strategy = valid_pair();
    let mut out = Vec::new();
    for _ in 0..20 * count {
        let (a, c) = strategy.new_tree(&mut runner).expect("generate").current();
        let (a, c) = typed(&a, &c);
        if valid(&a, &c) {
            out.push((a, c));
            if out.len() == count {
                break;
            }
        }
    }
    out
}

#[tokio::test]
async fn rendered_objects_of_generated_clusters_pass_a_server_side_dry_run() {
    let pairs = valid_pairs(60);
    assert!(pairs.len() >= 40, "only {} valid pairs generated", pairs.len());
    let bed = kdfed_testbed::Testbed::start(&["dry"]).await.expect("test bed");
    let client = bed.client("dry").await.expect("client");
    let mut refused = Vec::new();
    let mut applied = 0;
    for (i, (app, mut cluster)) in pairs.into_iter().enumerate() {
        cluster.metadata.name = Some(format!("gen-{i}"));
        let objects = render(&app, &cluster, None).expect("render");
        for o in objects {
            let kind = o["kind"].as_str().unwrap_or_default().to_string();
            let resource = match kind.as_str() {
                "Service" => kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&()),
                "StatefulSet" => kube::api::ApiResource::erase::<k8s_openapi::api::apps::v1::StatefulSet>(&()),
                other => panic!("unexpected kind {other}"),
            };
            let api: kube::Api<kube::api::DynamicObject> =
                kube::Api::namespaced_with(client.clone(), "default", &resource);
            let obj: kube::api::DynamicObject = serde_json::from_value(o.clone()).expect("object");
            let pp = kube::api::PostParams { dry_run: true, ..Default::default() };
            match api.create(&pp, &obj).await {
                Ok(_) => applied += 1,
                Err(e) => refused.push(format!("{kind} {}: {e}", o["metadata"]["name"])),
            }
        }
    }
    eprintln!("{applied} rendered objects passed the dry run");
    assert!(refused.is_empty(), "{} refused:\n{}", refused.len(), refused.join("\n"));
}
