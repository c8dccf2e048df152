//! Hostile and broken input on the fleet: a generated corpus of malformed and harmful apps
//! and clusters (wrong types, missing and null fields, unknown and duplicate ids, huge
//! counts, 1 MiB strings, deep nesting, unicode and invalid names, bad quantities,
//! selectors, placement and secret keys, bad packages) sent through the real API servers of
//! the hub (with the hub's webhook) and of a member (with the member's webhook). Each is
//! refused with a message naming its field; nothing panics; a good cluster created during
//! the flood becomes Ready.

use std::time::Duration;

use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};

mod support;
use support::*;

/// One hostile manifest: what it is, and the field its refusal must name.
struct Case {
    what: String,
    manifest: Value,
    field: String,
}

/// `base` with the value at JSON pointer `path` set (`None`: removed); objects on the way
/// are created.
fn with(base: &Value, path: &str, value: Option<Value>) -> Value {
    let mut out = base.clone();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut at = &mut out;
    for p in &parts[..parts.len() - 1] {
        at = match at {
            Value::Array(a) => &mut a[p.parse::<usize>().expect("index")],
            other => {
                if other.get(*p).is_none() {
                    other[*p] = json!({});
                }
                &mut other[*p]
            }
        };
    }
    let last = parts[parts.len() - 1];
    match (at, value) {
        (Value::Array(a), Some(v)) => {
            let i = last.parse::<usize>().expect("index");
            if i == a.len() { a.push(v) } else { a[i] = v }
        }
        (Value::Array(a), None) => {
            a.remove(last.parse::<usize>().expect("index"));
        }
        (Value::Object(o), Some(v)) => {
            o.insert(last.to_string(), v);
        }
        (Value::Object(o), None) => {
            o.remove(last);
        }
        _ => panic!("{path}: not a container"),
    }
    out
}

/// Values of every JSON type but the one a field has.
fn wrong_types(right: &str) -> Vec<Value> {
    let all = [
        ("integer", json!(7)),
        ("string", json!("seven")),
        ("array", json!([1])),
        ("object", json!({"a": 1})),
        ("boolean", json!(true)),
    ];
    all.into_iter().filter(|(t, _)| *t != right).map(|(_, v)| v).collect()
}

fn leaf(path: &str) -> String {
    path.rsplit('/').find(|p| p.parse::<usize>().is_err()).unwrap_or(path).to_string()
}

fn deep(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |v, _| json!({"d": v}))
}

/// The corpus: apps and clusters, each refused for a reason its field names.
fn corpus() -> Vec<Case> {
    let app = spark_like();
    let mut good_cluster = cluster("x", 1, "100m", None);
    good_cluster["spec"]["roles"][0]["storage"] = json!({"size": "1Gi"});
    let mut cases = Vec::new();
    let mut add =
        |what: String, manifest: Value, field: &str| cases.push(Case { what, manifest, field: field.to_string() });

    // Wrong types, field by field.
    let app_fields = [
        ("/spec/label", "object"),
        ("/spec/label/name", "string"),
        ("/spec/distroID", "string"),
        ("/spec/version", "string"),
        ("/spec/configSchemaVersion", "integer"),
        ("/spec/defaultImageRepoTag", "string"),
        ("/spec/services", "array"),
        ("/spec/services/0/id", "string"),
        ("/spec/services/0/endpoint/port", "integer"),
        ("/spec/roles", "array"),
        ("/spec/roles/0/id", "string"),
        ("/spec/roles/0/cardinality", "string"),
        ("/spec/config", "object"),
        ("/spec/config/selectedRoles", "array"),
        ("/spec/config/roleServices", "array"),
        ("/spec/systemdRequired", "boolean"),
        ("/spec/defaultPersistDirs", "array"),
    ];
    for (path, right) in app_fields {
        for v in wrong_types(right) {
            add(format!("app {path} = {v}"), with(&app, path, Some(v)), &leaf(path));
        }
    }
    let cluster_fields = [
        ("/spec/app", "string"),
        ("/spec/roles", "array"),
        ("/spec/roles/0/id", "string"),
        ("/spec/roles/1/members", "integer"),
        ("/spec/roles/0/resources", "object"),
        ("/spec/roles/0/resources/requests", "object"),
        ("/spec/roles/0/storage", "object"),
        ("/spec/roles/0/storage/size", "string"),
        ("/spec/defaultSecret", "object"),
        ("/spec/connections", "object"),
        ("/spec/connections/secrets", "array"),
        ("/spec/placement", "object"),
        ("/spec/placement/memberSelector", "object"),
        ("/spec/placement/members", "array"),
        ("/spec/roles/0/secretKeys", "array"),
    ];
    for (path, right) in cluster_fields {
        for v in wrong_types(right) {
            // An integer or a string is a valid quantity; an object is a valid request map.
            if path.ends_with("/requests") && v.is_object() {
                continue;
            }
            add(format!("cluster {path} = {v}"), with(&good_cluster, path, Some(v)), &leaf(path));
        }
    }
    // Missing and null where a value is required.
    for path in [
        "/spec/label",
        "/spec/distroID",
        "/spec/version",
        "/spec/roles",
        "/spec/config",
        "/spec/roles/0/id",
        "/spec/roles/0/cardinality",
    ] {
        add(format!("app without {path}"), with(&app, path, None), &leaf(path));
        add(format!("app {path} = null"), with(&app, path, Some(Value::Null)), &leaf(path));
    }
    for path in ["/spec/app", "/spec/roles", "/spec/roles/0/id"] {
        add(format!("cluster without {path}"), with(&good_cluster, path, None), &leaf(path));
        add(format!("cluster {path} = null"), with(&good_cluster, path, Some(Value::Null)), &leaf(path));
    }
    // Values: counts, ids, names, strings.
    let mib = "a".repeat(1 << 20);
    for (what, path, v, field) in [
        ("negative members", "/spec/roles/1/members", json!(-1), "members"),
        ("huge members", "/spec/roles/1/members", json!(100_000), "members"),
        ("members over int32", "/spec/roles/1/members", json!(2_147_483_648_i64), "members"),
        ("members on a role of cardinality 1", "/spec/roles/0/members", json!(3), "members"),
        ("unknown role", "/spec/roles/0/id", json!("nosuchrole"), "roles"),
        ("unicode role id", "/spec/roles/0/id", json!("wörker"), "id"),
        ("empty role id", "/spec/roles/0/id", json!(""), "id"),
        ("unknown app", "/spec/app", json!("nosuchapp"), "app"),
        ("1 MiB app name", "/spec/app", json!(mib.clone()), "app"),
        ("unicode name", "/metadata/name", json!("clüster"), "metadata.name"),
        ("upper-case name", "/metadata/name", json!("Cluster"), "metadata.name"),
        ("300-character name", "/metadata/name", json!("a".repeat(300)), "metadata.name"),
        ("1 MiB label value", "/metadata/labels", json!({"big": mib.clone()}), "metadata.labels"),
        ("bad label key", "/metadata/labels", json!({"bad key!": "x"}), "metadata.labels"),
        ("deep nesting in a request", "/spec/roles/0/resources/requests/cpu", deep(300), "cpu"),
        ("space in a quantity", "/spec/roles/0/resources/requests/cpu", json!("5 Gi"), "cpu"),
        ("negative quantity", "/spec/roles/0/resources/limits", json!({"memory": "-5Gi"}), "memory"),
        ("word as a quantity", "/spec/roles/0/resources/requests/memory", json!("lots"), "memory"),
        ("requests above limits", "/spec/roles/0/resources/limits", json!({"cpu": "50m"}), "cpu"),
        ("bad storage size", "/spec/roles/0/storage/size", json!("big"), "size"),
        ("bad storage class", "/spec/roles/0/storage/storageClassName", json!("Bad_Class!"), "storageClassName"),
        ("missing default secret", "/spec/defaultSecret/name", json!("no-such-secret"), "defaultSecret"),
        (
            "bad selector operator",
            "/spec/placement/memberSelector",
            json!({"matchExpressions": [{"key": "region", "operator": "Near", "values": ["eu"]}]}),
            "memberSelector",
        ),
        (
            "bad selector key",
            "/spec/placement/memberSelector",
            json!({"matchLabels": {"bad key!": "eu"}}),
            "memberSelector",
        ),
        (
            "long selector value",
            "/spec/placement/memberSelector",
            json!({"matchLabels": {"region": "e".repeat(64)}}),
            "memberSelector",
        ),
        ("bad member name", "/spec/placement/members", json!(["Bad_Member"]), "members"),
        (
            "preference weight 0",
            "/spec/placement/preferences",
            json!([{"weight": 0, "preference": {"matchLabels": {"a": "b"}}}]),
            "weight",
        ),
        (
            "preference weight 101",
            "/spec/placement/preferences",
            json!([{"weight": 101, "preference": {"matchLabels": {"a": "b"}}}]),
            "weight",
        ),
        ("unknown failover policy", "/spec/placement/failover", json!({"policy": "Sometimes"}), "policy"),
        (
            "failover too soon",
            "/spec/placement/failover",
            json!({"policy": "Reschedule", "afterSeconds": 1}),
            "afterSeconds",
        ),
        (
            "hand-made secret-key ciphertext",
            "/spec/roles/0/secretKeys",
            json!([{"name": "pw", "encryptedValue": "00ff00ff00ff00ff00ff00ff00ff00ff"}]),
            "secretKeys",
        ),
        ("unnamed secret key", "/spec/roles/0/secretKeys", json!([{"value": "x"}]), "name"),
        ("duplicate role", "/spec/roles/2", json!({"id": "worker", "members": 1}), "roles"),
    ] {
        add(format!("cluster: {what}"), with(&good_cluster, path, Some(v)), field);
    }
    for (what, path, v, field) in [
        ("duplicate role ids", "/spec/roles/2", json!({"id": "worker", "cardinality": "1"}), "roles"),
        ("unicode role id", "/spec/roles/0/id", json!("contrôleur"), "id"),
        ("bad cardinality", "/spec/roles/1/cardinality", json!("many"), "cardinality"),
        ("cardinality with junk", "/spec/roles/1/cardinality", json!("0+x"), "cardinality"),
        ("unknown selected role", "/spec/config/selectedRoles", json!(["controller", "ghost"]), "selectedRoles"),
        (
            "unknown service of a role",
            "/spec/config/roleServices",
            json!([{"roleID": "controller", "serviceIDs": ["ghost"]}]),
            "serviceIDs",
        ),
        ("duplicate service ids", "/spec/services/1", json!({"id": "ui", "endpoint": {"port": 9090}}), "services"),
        ("port 0", "/spec/services/0/endpoint/port", json!(0), "port"),
        ("port 70000", "/spec/services/0/endpoint/port", json!(70_000), "port"),
        ("ftp package", "/spec/defaultConfigPackage", json!({"packageURL": "ftp://example.com/p.tgz"}), "packageURL"),
        ("zip package", "/spec/defaultConfigPackage", json!({"packageURL": "file:///opt/p.zip"}), "packageURL"),
        ("relative persist dir", "/spec/defaultPersistDirs", json!(["var/lib"]), "defaultPersistDirs"),
        ("root persist dir", "/spec/defaultPersistDirs", json!(["/"]), "defaultPersistDirs"),
        ("100,000-character version", "/spec/version", json!("1".repeat(100_000)), "version"),
        ("empty version", "/spec/version", json!(""), "version"),
        ("configSchemaVersion 0", "/spec/configSchemaVersion", json!(0), "configSchemaVersion"),
        ("unicode app name", "/metadata/name", json!("äpp"), "metadata.name"),
        ("1 MiB distro id", "/spec/distroID", json!(mib.clone()), "distroID"),
        ("deep nesting in a label", "/spec/label", deep(200), "label"),
        ("empty roles", "/spec/roles", json!([]), "roles"),
    ] {
        add(format!("app: {what}"), with(&app, path, Some(v)), field);
    }
    cases
}

/// Sends every case to `client`'s API server; returns the failures (admitted, or refused
/// without naming the field).
async fn flood(client: &Client, cases: &[Case], prefix: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut manifest = case.manifest.clone();
        let kind = manifest["kind"].as_str().unwrap_or_default().to_string();
        if manifest["metadata"]["name"] == "x" || manifest["metadata"]["name"] == "spark-lite" {
            manifest["metadata"]["name"] = json!(format!("{prefix}-{i}"));
        }
        let resource = if kind == "KubeDirectorApp" {
            kube::api::ApiResource::erase::<KubeDirectorApp>(&())
        } else {
            kube::api::ApiResource::erase::<KubeDirectorCluster>(&())
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
        let object: DynamicObject = match serde_json::from_value(manifest) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{}: not even an object: {e}", case.what));
                continue;
            }
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => failures.push(format!("{prefix}: admitted: {}", case.what)),
            Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                if !e.message.contains(&case.field) {
                    let shown: String = e.message.chars().take(300).collect();
                    failures.push(format!("{prefix}: {}: refused without naming {}: {shown}", case.what, case.field));
                }
            }
            Err(e) => failures.push(format!("{prefix}: {}: {e}", case.what)),
        }
    }
    failures
}

#[tokio::test]
async fn hundreds_of_hostile_manifests_are_refused_by_name_and_nothing_stalls() {
    let cases = corpus();
    let fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    // East serves the member webhook: the same corpus goes to its API server directly.
    let east = fleet.bed.client("east").await.expect("east");
    seed_catalog(&east).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let calm: KubeDirectorCluster = serde_json::from_value(cluster("calm", 1, "100m", None)).expect("calm");
    clusters.create(&PostParams::default(), &calm).await.expect("a good cluster during the flood");
    let started = std::time::Instant::now();
    let mut failures = flood(&hub, &cases, "hub").await;
    failures.extend(flood(&east, &cases, "east").await);
    eprintln!("{} manifests refused in {:.1}s", cases.len() * 2, started.elapsed().as_secs_f64());
    assert!(cases.len() * 2 >= 300, "only {} manifests", cases.len() * 2);
    assert!(failures.is_empty(), "{} of {}:\n{}", failures.len(), cases.len() * 2, failures.join("\n"));

    wait_cluster(&clusters, "calm", "ready despite the flood", |c| ready_with(c, "2/2")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for log in std::fs::read_dir(&fleet.dir).expect("fleet dir").flatten().map(|e| e.path()) {
        if log.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(!text.contains("panicked"), "{} panicked", log.display());
        }
    }
    assert_eq!(http_get(fleet.hub_admin, "/readyz").await.trim(), "ok");
}
