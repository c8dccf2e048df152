//! A live upgrade across the fleet: a cluster placed by the hub on a member changes its app
//! on the hub; the Work carries the new app, the member upgrades the cluster in place
//! (same member, same placement epoch, same PVC-less members recreated one at a time), and
//! the hub shows the progress in `status.upgrade` and in `kdfed cluster list`
//! (`Upgrading n/3`). An app change to an app that does not upgrade from the running one is
//! refused by the hub's admission webhook, naming the allowed apps.

use std::process::Command;

use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::workspace_binary;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

mod support;
use support::*;

/// The next version of the Spark-like app: same distro, upgrades from `spark-lite`.
fn spark_lite_2() -> KubeDirectorApp {
    let mut app = spark_like();
    app["metadata"]["name"] = json!("spark-lite-2");
    app["spec"]["version"] = json!("2");
    app["spec"]["defaultImageRepoTag"] = json!("example/spark:2");
    app["spec"]["upgradeFrom"] = json!(["spark-lite"]);
    serde_json::from_value(app).expect("app")
}

#[tokio::test]
async fn a_placed_cluster_is_upgraded_in_place_with_progress_on_the_hub() {
    let fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let apps: Api<KubeDirectorApp> = Api::namespaced(hub.clone(), "default");
    apps.create(&PostParams::default(), &spark_lite_2()).await.expect("app v2");
    // Names spark-lite in upgradeFrom, but is another distro: not an upgrade target.
    let mut other = spark_like();
    other["metadata"]["name"] = json!("spark-fork");
    other["spec"]["distroID"] = json!("test/spark-fork");
    other["spec"]["upgradeFrom"] = json!(["spark-lite"]);
    apps.create(&PostParams::default(), &serde_json::from_value(other).expect("app")).await.expect("fork");
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let c: KubeDirectorCluster =
        serde_json::from_value(cluster("analytics", 2, "1", Some(("region", "east")))).expect("c");
    clusters.create(&PostParams::default(), &c).await.expect("create");
    let c = wait_cluster(&clusters, "analytics", "ready on east", |c| ready_with(c, "3/3")).await;
    let placement = c.status.as_ref().and_then(|s| s.placement.clone()).expect("placed");
    assert_eq!(placement.member, "east");

    // The hub's webhook names what the cluster may change to.
    let patch = |app: &str| Patch::Merge(json!({"spec": {"app": app}}));
    let refused =
        clusters.patch("analytics", &PatchParams::default(), &patch("spark-fork")).await.expect_err("refused");
    assert!(refused.to_string().contains("Allowed: spark-lite-2."), "{refused}");

    clusters.patch("analytics", &PatchParams::default(), &patch("spark-lite-2")).await.expect("upgrade accepted");
    // Progress shows on the hub while the member works through the members.
    let hub_kubeconfig = fleet.bed.cluster("hub").kubeconfig.clone();
    let kdfed = workspace_binary("kdfed").expect("kdfed");
    let mut listed = None;
    let c = wait_cluster(&clusters, "analytics", "upgraded", |c| {
        let upgrade = c.status.as_ref().and_then(|s| s.upgrade.as_ref());
        if listed.is_none() && upgrade.is_some_and(|u| u.phase == "Upgrading") {
            let out = Command::new(&kdfed)
                .args(["--kubeconfig"])
                .arg(&hub_kubeconfig)
                .args(["cluster", "list", "-n", "default"])
                .output()
                .expect("kdfed");
            listed = Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        upgrade.is_some_and(|u| u.phase == "Completed") && ready_with(c, "3/3")
    })
    .await;
    let listed = listed.expect("the hub showed the upgrade under way");
    let row = listed.lines().find(|l| l.contains("analytics")).unwrap_or_default().to_string();
    assert!(row.contains("Upgrading ") && row.contains("/3"), "kdfed cluster list: {listed}");
    let u = c.status.as_ref().and_then(|s| s.upgrade.clone()).expect("upgrade on the hub");
    assert_eq!((u.from.as_str(), u.to.as_str()), ("spark-lite", "spark-lite-2"));
    assert_eq!(u.upgraded_members.len(), 3);
    // In place: same member, same placement epoch; the member's copy runs the new app.
    let after = c.status.as_ref().and_then(|s| s.placement.clone()).expect("placed");
    assert_eq!((after.member.as_str(), after.epoch), (placement.member.as_str(), placement.epoch));
    let east = fleet.bed.client("east").await.expect("east");
    let local: Api<KubeDirectorCluster> = Api::namespaced(east.clone(), "default");
    let copy = local.get("analytics").await.expect("local copy");
    assert_eq!(copy.spec.app, "spark-lite-2");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(east, "default");
    let lp = kube::api::ListParams::default().labels("kubedirector.hpe.com/kdcluster=analytics");
    let images: Vec<String> = pods
        .list(&lp)
        .await
        .expect("pods")
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
        .collect();
    assert_eq!(images, vec!["example/spark:2".to_string(); 3], "every member runs the new image");
}

/// An app change and a resize made on the hub while the member's spoke is down reach the
/// member in one Work; the member's admission takes an app change only alone, so the spoke
/// applies the upgrade first and the resize once the rollout has finished. Before, the
/// combined change was refused on every pass and the cluster stayed on its old app and
/// size (chaos suite, seed 13987469361830639158, round 19).
#[tokio::test]
async fn an_upgrade_and_a_resize_made_while_the_spoke_is_down_both_happen_when_it_returns() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    seed_catalog(&hub).await;
    let apps: Api<KubeDirectorApp> = Api::namespaced(hub.clone(), "default");
    apps.create(&PostParams::default(), &spark_lite_2()).await.expect("app v2");
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let c: KubeDirectorCluster =
        serde_json::from_value(cluster("resized", 2, "1", Some(("region", "east")))).expect("c");
    clusters.create(&PostParams::default(), &c).await.expect("create");
    wait_cluster(&clusters, "resized", "ready on east", |c| ready_with(c, "3/3")).await;

    fleet.spokes.get_mut("east").expect("east").kill();
    let pp = PatchParams::default();
    clusters.patch("resized", &pp, &Patch::Merge(json!({"spec": {"app": "spark-lite-2"}}))).await.expect("upgrade");
    let shrink = json!([{"op": "replace", "path": "/spec/roles/1/members", "value": 1}]);
    let shrink = Patch::Json::<()>(serde_json::from_value(shrink).expect("patch"));
    clusters.patch("resized", &pp, &shrink).await.expect("the hub takes the shrink: it has seen no rollout yet");
    fleet.start_spoke("east");

    let c = wait_cluster(&clusters, "resized", "upgraded and shrunk", |c| {
        let upgraded = c.status.as_ref().and_then(|s| s.upgrade.as_ref()).is_some_and(|u| u.phase == "Completed");
        upgraded && ready_with(c, "2/2")
    })
    .await;
    let u = c.status.as_ref().and_then(|s| s.upgrade.clone()).expect("upgrade on the hub");
    assert_eq!(u.upgraded_members.len(), 3, "the three members of the time moved, then one went: {u:?}");
    let east = fleet.bed.client("east").await.expect("east");
    let copy = Api::<KubeDirectorCluster>::namespaced(east.clone(), "default").get("resized").await.expect("copy");
    assert_eq!(copy.spec.app, "spark-lite-2");
    assert_eq!(copy.spec.roles.iter().find(|r| r.id == "worker").and_then(|r| r.members), Some(1));
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(east, "default");
    let lp = kube::api::ListParams::default().labels("kubedirector.hpe.com/kdcluster=resized");
    let images: Vec<String> = pods
        .list(&lp)
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
        .collect();
    assert_eq!(images, vec!["example/spark:2".to_string(); 2], "both members left run the new image");
}
