//! Objects corrupted behind kdfed's back, on the fleet: a Work edited by hand on the hub, a
//! member's local copy edited on the member, a StatefulSet deleted, an owner reference
//! removed. Each is repaired (or reported), the cluster ends as its spec says, its PVCs are
//! the same ones, and no binary crashes.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kdfed_crds::KubeDirectorCluster;
use kdfed_crds::federation::KubeDirectorWork;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

mod support;
use support::*;

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not repaired: {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn claims(east: &Client) -> BTreeSet<String> {
    let lp = ListParams::default().labels("kubedirector.hpe.com/kdcluster=fragile");
    Api::<PersistentVolumeClaim>::namespaced(east.clone(), "default")
        .list(&lp)
        .await
        .expect("claims")
        .items
        .iter()
        .filter_map(|c| c.metadata.uid.clone())
        .collect()
}

async fn worker_statefulset(east: &Client) -> StatefulSet {
    let lp = ListParams::default().labels("kubedirector.hpe.com/kdcluster=fragile,kubedirector.hpe.com/role=worker");
    let list = Api::<StatefulSet>::namespaced(east.clone(), "default").list(&lp).await.expect("statefulsets").items;
    assert_eq!(list.len(), 1, "one worker StatefulSet");
    list.into_iter().next().expect("worker statefulset")
}

#[tokio::test]
async fn objects_corrupted_behind_kdfed_s_back_are_repaired_and_no_data_is_lost() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let mut c = cluster("fragile", 2, "100m", Some(("region", "east")));
    c["spec"]["roles"][1]["storage"] = json!({"size": "1Gi"});
    clusters.create(&PostParams::default(), &serde_json::from_value(c).expect("c")).await.expect("create");
    wait_cluster(&clusters, "fragile", "ready on east", |c| ready_with(c, "3/3")).await;
    let east = fleet.bed.client("east").await.expect("east");
    let before = claims(&east).await;
    assert_eq!(before.len(), 2, "a claim per worker");
    let workers = |c: &KubeDirectorCluster| c.spec.roles.iter().find(|r| r.id == "worker").and_then(|r| r.members);

    // 1. The Work edited by hand on the hub: the hub puts its spec back.
    let works: Api<KubeDirectorWork> = Api::namespaced(hub.clone(), "kdfed-member-east");
    let tamper = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/cluster/spec/roles/1/members", "value": 5}]))
            .expect("patch"),
    );
    works.patch("default.fragile", &PatchParams::default(), &tamper).await.expect("tamper with the Work");
    wait_for("the Work edited on the hub", || async {
        works.get("default.fragile").await.is_ok_and(|w| {
            w.spec.cluster.spec.roles.iter().find(|r| r.id == "worker").and_then(|r| r.members) == Some(2)
        })
    })
    .await;

    let now = claims(&east).await;
    assert!(before.is_subset(&now), "a claim of the cluster was deleted: before {before:?}, now {now:?}");
    // 2. The member's local copy edited on the member: hub sync puts it back.
    let local: Api<KubeDirectorCluster> = Api::namespaced(east.clone(), "default");
    let tamper = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/roles/1/members", "value": 4}])).expect("patch"),
    );
    local.patch("fragile", &PatchParams::default(), &tamper).await.expect("tamper with the local copy");
    wait_for("the local copy edited on the member", || async {
        local.get("fragile").await.is_ok_and(|c| workers(&c) == Some(2))
    })
    .await;

    let now = claims(&east).await;
    assert!(before.is_subset(&now), "a claim of the cluster was deleted: before {before:?}, now {now:?}");
    // 3. A StatefulSet deleted: the director builds it again, on the same claims.
    let sts = worker_statefulset(&east).await;
    let statefulsets: Api<StatefulSet> = Api::namespaced(east.clone(), "default");
    statefulsets.delete(&sts.name_any(), &DeleteParams::default()).await.expect("delete statefulset");
    wait_for("the deleted StatefulSet", || async {
        statefulsets.get_opt(&sts.name_any()).await.ok().flatten().is_some_and(|s| s.metadata.uid != sts.metadata.uid)
    })
    .await;

    let now = claims(&east).await;
    assert!(before.is_subset(&now), "a claim of the cluster was deleted: before {before:?}, now {now:?}");
    // 4. The owner reference removed: the director owns it again.
    let strip = Patch::Json::<()>(
        serde_json::from_value(json!([{"op": "remove", "path": "/metadata/ownerReferences"}])).expect("patch"),
    );
    statefulsets.patch(&sts.name_any(), &PatchParams::default(), &strip).await.expect("strip owner");
    wait_for("the removed owner reference", || async {
        statefulsets
            .get(&sts.name_any())
            .await
            .is_ok_and(|s| s.owner_references().iter().any(|o| o.kind == "KubeDirectorCluster"))
    })
    .await;

    // The cluster ends as its spec says, on the same claims, and nothing crashed.
    let c = wait_cluster(&clusters, "fragile", "ready again", |c| ready_with(c, "3/3")).await;
    assert_eq!(workers(&c), Some(2));
    // The claims of the members the tampered Work added go (the shrink back deletes them,
    // as the default whenScaled policy says); the original ones were never touched.
    wait_for("the original claims, and only those", || async { claims(&east).await == before }).await;
    for d in fleet.hubs.iter_mut().chain(fleet.spokes.values_mut()) {
        assert!(d.running(), "{} exited", d.log.display());
    }
    for log in std::fs::read_dir(&fleet.dir).expect("fleet dir").flatten().map(|e| e.path()) {
        if log.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(!text.contains("panicked"), "{} panicked", log.display());
        }
    }
}
