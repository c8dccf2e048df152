//! Smoke test of the API on a real control plane: the CRDs install, the example apps and
//! clusters apply and read back unchanged, and the API server itself rejects structurally
//! invalid objects. Also proves the test bed runs pods on its fake nodes.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster, KubeDirectorMember, KubeDirectorWork};
use kdfed_testbed::Testbed;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::Status;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn example(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(rel);
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read example")).expect("parse example")
}

async fn create_and_read_back<K>(api: &Api<K>, manifest: &Value) -> Value
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(manifest.clone()).expect("typed");
    let created = api.create(&PostParams::default(), &object).await.expect("create");
    let name = created.meta().name.clone().expect("name");
    serde_json::to_value(api.get(&name).await.expect("get")).expect("json")
}

fn rejection(result: Result<DynamicObject, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(e)) => *e,
        other => panic!("expected the API server to reject the object, got {other:?}"),
    }
}

async fn create_raw(client: &Client, plural: &str, manifest: Value) -> Result<DynamicObject, kube::Error> {
    let gvk =
        kube::api::GroupVersionKind::gvk("kubedirector.hpe.com", "v1beta1", manifest["kind"].as_str().unwrap_or(""));
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let object: DynamicObject = serde_json::from_value(manifest).expect("dynamic");
    api.create(&PostParams::default(), &object).await
}

#[tokio::test]
async fn crds_install_and_examples_round_trip_through_a_real_api_server() {
    let bed = Testbed::start(&["hub"]).await.expect("test bed");
    let client = bed.client("hub").await.expect("client");
    let installed = kdfed_common::crds::install(client.clone()).await.expect("install CRDs");
    assert_eq!(installed.len(), 5);

    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    for rel in ["apps/spark.yaml", "apps/cassandra.yaml", "apps/minimal.yaml"] {
        let manifest = example(rel);
        let stored = create_and_read_back(&apps, &manifest).await;
        assert_eq!(stored["spec"], manifest["spec"], "{rel}: the API server pruned or changed fields");
    }
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), "default");
    for rel in ["clusters/spark.yaml", "clusters/cassandra.yaml", "clusters/minimal.yaml"] {
        let manifest = example(rel);
        let stored = create_and_read_back(&clusters, &manifest).await;
        assert_eq!(stored["spec"], manifest["spec"], "{rel}: the API server pruned or changed fields");
    }

    // The federation kinds accept what the hub will write.
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    let member = json!({"apiVersion": "federation.kubedirector.hpe.com/v1alpha1", "kind": "KubeDirectorMember",
        "metadata": {"name": "east", "labels": {"region": "us"}},
        "spec": {"taints": [{"key": "maintenance", "effect": "NoSchedule"}]}});
    let stored = create_and_read_back(&members, &member).await;
    assert_eq!(stored["spec"], member["spec"]);
    let works: Api<KubeDirectorWork> = Api::namespaced(client.clone(), "default");
    let minimal_app = example("apps/minimal.yaml");
    let work = json!({"apiVersion": "federation.kubedirector.hpe.com/v1alpha1", "kind": "KubeDirectorWork",
        "metadata": {"name": "default.hello"},
        "spec": {"origin": {"namespace": "default", "name": "hello", "uid": "u-1", "generation": 1},
                 "placementEpoch": 1,
                 "app": {"name": "minimal", "spec": minimal_app["spec"].clone()},
                 "cluster": {"namespace": "default", "name": "hello", "spec": example("clusters/minimal.yaml")["spec"].clone()},
                 "secrets": [{"name": "s", "data": {"k": "dg=="}}]}});
    let stored = create_and_read_back(&works, &work).await;
    assert_eq!(stored["spec"], work["spec"]);

    // Structurally invalid input is rejected by the API server's schema, naming the field.
    let mut bad_app = example("apps/minimal.yaml");
    bad_app["metadata"]["name"] = json!("bad-cardinality");
    bad_app["spec"]["roles"][0]["cardinality"] = json!("two");
    let e = rejection(create_raw(&client, "kubedirectorapps", bad_app).await);
    assert_eq!(e.code, 422, "{e:?}");
    assert!(e.message.contains("spec.roles[0].cardinality"), "{}", e.message);

    let mut bad_cluster = example("clusters/minimal.yaml");
    bad_cluster["metadata"]["name"] = json!("bad-members");
    bad_cluster["spec"]["roles"][0]["members"] = json!(-1);
    bad_cluster["spec"]["serviceType"] = json!("Ingress");
    let e = rejection(create_raw(&client, "kubedirectorclusters", bad_cluster).await);
    assert_eq!(e.code, 422, "{e:?}");
    assert!(e.message.contains("spec.roles[0].members"), "{}", e.message);
    assert!(e.message.contains("spec.serviceType"), "{}", e.message);

    // Immutable fields are enforced by the API server itself (CEL transition rules); once
    // set, namingScheme stays. (spec.app may change for a live upgrade: the admission
    // webhooks and the director check that against the catalog.)
    let set = kube::api::Patch::Merge(json!({"spec": {"namingScheme": "UID"}}));
    clusters.patch("hello", &kube::api::PatchParams::default(), &set).await.expect("set namingScheme");
    let patch = kube::api::Patch::Merge(json!({"spec": {"namingScheme": "CrNameRole"}}));
    match clusters.patch("hello", &kube::api::PatchParams::default(), &patch).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("The namingScheme property is read-only."), "{}", e.message);
        }
        other => panic!("changing spec.namingScheme must be rejected, got {other:?}"),
    }

    let mut no_roles = example("clusters/minimal.yaml");
    no_roles["metadata"]["name"] = json!("no-roles");
    no_roles["spec"].as_object_mut().expect("spec").remove("roles");
    let e = rejection(create_raw(&client, "kubedirectorclusters", no_roles).await);
    assert!(e.message.contains("spec.roles"), "{}", e.message);
}

#[tokio::test]
async fn pods_on_the_fake_nodes_become_running_and_ready() {
    let bed = Testbed::start(&["east"]).await.expect("test bed");
    let client = bed.client("east").await.expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "main", "image": "example/probe:1"}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &pod).await.expect("create pod");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = pods.get("probe").await.expect("get pod");
        let status = p.status.unwrap_or_default();
        let ready = status.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
        if status.phase.as_deref() == Some("Running") && ready {
            assert!(p.spec.and_then(|s| s.node_name).is_some_and(|n| n.starts_with("east-node-")));
            let uid = p.metadata.uid.unwrap_or_default();
            let id = status.container_statuses.unwrap_or_default().first().and_then(|c| c.container_id.clone());
            assert_eq!(id, Some(format!("kwok://{uid}-main")), "container ids identify the pod incarnation");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "pod not Running/Ready after 60s: {:?}", status.phase);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn claims_of_the_default_storage_class_are_provisioned_and_bound() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let bed = Testbed::start(&["west"]).await.expect("test bed");
    let client = bed.client("west").await.expect("client");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client, "default");
    let pvc: PersistentVolumeClaim =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
        .expect("pvc");
    pvcs.create(&PostParams::default(), &pvc).await.expect("create pvc");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = pvcs.get("data").await.expect("get pvc");
        let phase = p.status.and_then(|s| s.phase);
        if phase.as_deref() == Some("Bound") {
            assert_eq!(p.spec.and_then(|s| s.storage_class_name).as_deref(), Some(kdfed_testbed::STORAGE_CLASS));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "claim not Bound after 60s: {phase:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_member_holds_more_services_than_a_slash_24_has_addresses() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Service;
    // 100 kdfed clusters need ~300 ClusterIPs (headless Services take none, member
    // Services one each); a /24 has 254. Ask for more than that.
    const SERVICES: usize = 300;
    let bed = Testbed::start(&["east"]).await.expect("test bed");
    let client = bed.client("east").await.expect("client");
    let services: Api<Service> = Api::namespaced(client, "default");
    let created: Vec<Result<Service, kube::Error>> = futures::stream::iter(0..SERVICES)
        .map(|i| {
            let services = services.clone();
            async move {
                let svc: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {"ports": [{"port": 22}]}}))
                .expect("service");
                services.create(&PostParams::default(), &svc).await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let failed: Vec<String> = created.iter().filter_map(|r| r.as_ref().err()).map(ToString::to_string).collect();
    assert!(failed.is_empty(), "{} of {SERVICES} Services refused, e.g. {:?}", failed.len(), failed.first());
    let ips: std::collections::BTreeSet<String> = created
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|s| s.spec.and_then(|s| s.cluster_ip))
        .filter(|ip| ip != "None")
        .collect();
    assert_eq!(ips.len(), SERVICES, "every Service has its own ClusterIP");
    assert!(ips.iter().all(|ip| ip.starts_with("10.0.")), "{ips:?}");
}
