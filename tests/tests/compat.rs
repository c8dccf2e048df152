//! Upstream-shaped manifests across the fleet: apps and clusters of the compatibility
//! corpus (`tests/compat/`), created on the hub exactly as written (JSON with tabs, nulls,
//! role ids with capitals, underscores and dots), pass the hub's webhook, are placed, and are
//! built on a member as on a single cluster: on east (whose spoke serves its own webhook) and
//! on west (without).

use std::path::Path;

use k8s_openapi::api::apps::v1::StatefulSet;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

mod support;
use support::*;

fn corpus(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat").join(rel);
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse")
}

/// Creates `manifest` on the hub as written (a typed round trip would drop its nulls).
async fn create_raw<K: kube::Resource<DynamicType = ()>>(hub: &Client, manifest: Value) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(hub.clone(), "default", &kube::api::ApiResource::erase::<K>(&()));
    let object: DynamicObject = serde_json::from_value(manifest).expect("object");
    api.create(&PostParams::default(), &object).await.expect("the hub admits the manifest as written");
}

fn placed_on(mut cluster: Value, region: &str) -> Value {
    cluster["spec"]["placement"] =
        json!({"memberSelector": {"matchLabels": {"region": region}}, "preferences": null, "tolerations": null});
    cluster
}

#[tokio::test]
async fn upstream_shaped_manifests_are_placed_and_built_on_members_as_on_one_cluster() {
    let fleet = fleet().await;
    let hub = fleet.hub.clone();
    wait_admission(&hub).await;
    for app in ["apps/centos.json", "apps/restserver.yaml", "apps/nulls.yaml"] {
        create_raw::<KubeDirectorApp>(&hub, corpus(app)).await;
    }
    create_raw::<KubeDirectorCluster>(&hub, placed_on(corpus("clusters/centos.json"), "east")).await;
    create_raw::<KubeDirectorCluster>(&hub, placed_on(corpus("clusters/nulls.yaml"), "east")).await;
    let rest = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": "rest-live"},
        "spec": {
            "app": "restserver-compat", "namingScheme": "CrNameRole", "connections": {"secrets": null},
            "roles": [
                {"id": "LoadBalancer", "members": 1, "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}},
                {"id": "RESTServer", "members": 2, "resources": {"limits": {"cpu": "1", "memory": "256Mi"}}, "env": null},
                {"id": "spark.worker", "members": 1, "resources": {"requests": null, "limits": {"cpu": "1", "memory": "256Mi"}}}
            ]
        }
    });
    create_raw::<KubeDirectorCluster>(&hub, placed_on(rest, "west")).await;

    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    for (name, members, member) in
        [("centos-compat", "2/2", "east"), ("nulls", "1/1", "east"), ("rest-live", "4/4", "west")]
    {
        let c = wait_cluster(&clusters, name, "ready", |c| ready_with(c, members)).await;
        assert_eq!(member_of(&c).as_deref(), Some(member), "{name}");
    }

    // On west, the StatefulSets carry upstream's munged names and the ids as label values.
    let west = fleet.bed.client("west").await.expect("west");
    let statefulsets: Api<StatefulSet> = Api::namespaced(west, "default");
    let lp = ListParams::default().labels("kubedirector.hpe.com/kdcluster=rest-live");
    let mut built: Vec<(String, String)> = statefulsets
        .list(&lp)
        .await
        .expect("list")
        .items
        .iter()
        .map(|s| (s.labels().get("kubedirector.hpe.com/role").cloned().unwrap_or_default(), s.name_any()))
        .collect();
    built.sort();
    let roles: Vec<&str> = built.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, vec!["LoadBalancer", "RESTServer", "spark.worker"], "{built:?}");
    for ((_, name), prefix) in
        built.iter().zip(["rest-live-loadbalancer-", "rest-live-restserver-", "rest-live-spark-worker-"])
    {
        assert!(name.starts_with(prefix) && name.len() == prefix.len() + 5, "{name}");
    }
}
