//! Bad links between a member and the hub, on the fleet: a link cut and restored every few
//! seconds for a minute, and a hub that answers slowly. Nothing runs twice, nothing is
//! restarted, no data is lost, and the member's clusters end Ready on the hub.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kdfed_crds::KubeDirectorCluster;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

mod support;
use support::*;

async fn uids<K>(client: &Client, cluster: &str) -> BTreeMap<String, String>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let lp = ListParams::default().labels(&format!("kubedirector.hpe.com/kdcluster={cluster}"));
    Api::<K>::namespaced(client.clone(), "default")
        .list(&lp)
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|o| (o.name_any(), o.meta().uid.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_flapping_link_and_a_slow_hub_run_nothing_twice_and_restart_nothing() {
    let mut fleet = fleet().await;
    let hub = fleet.hub.clone();
    let link = fleet.route_through_link("west").await;
    seed_catalog(&hub).await;
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let mut flappy = cluster("flappy", 1, "100m", Some(("region", "west")));
    flappy["spec"]["placement"]["failover"] = json!({"policy": "Reschedule", "afterSeconds": 30});
    flappy["spec"]["roles"][1]["storage"] = json!({"size": "1Gi"});
    let sturdy = cluster("sturdy", 1, "100m", Some(("region", "west")));
    for c in [flappy, sturdy] {
        clusters.create(&PostParams::default(), &serde_json::from_value(c).expect("c")).await.expect("create");
    }
    for name in ["flappy", "sturdy"] {
        wait_cluster(&clusters, name, "ready on west", |c| ready_with(c, "2/2")).await;
    }
    let west = fleet.bed.client("west").await.expect("west");
    let east = fleet.bed.client("east").await.expect("east");
    let pods_before = [uids::<Pod>(&west, "flappy").await, uids::<Pod>(&west, "sturdy").await];
    let claims_before = uids::<PersistentVolumeClaim>(&west, "flappy").await;
    assert_eq!(claims_before.len(), 1);

    // A minute of a link that drops for 3 s every 6 s (shorter than the grace and far
    // shorter than the failover's 30 s): sampled all along, never a copy on east.
    let started = tokio::time::Instant::now();
    let mut cuts = 0;
    while started.elapsed() < Duration::from_secs(60) {
        link.cut();
        cuts += 1;
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert!(uids::<Pod>(&east, "flappy").await.is_empty(), "flappy runs on east during the flapping");
        }
        link.heal();
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert!(uids::<Pod>(&east, "flappy").await.is_empty(), "flappy runs on east during the flapping");
        }
    }
    eprintln!("{cuts} cuts in {:.0}s", started.elapsed().as_secs_f64());
    for name in ["flappy", "sturdy"] {
        let c = wait_cluster(&clusters, name, "ready after the flapping", |c| ready_with(c, "2/2")).await;
        let p = c.status.as_ref().and_then(|s| s.placement.clone()).expect("placement");
        assert_eq!((p.member.as_str(), p.epoch), ("west", 1), "{name} moved");
    }
    let pods_after = [uids::<Pod>(&west, "flappy").await, uids::<Pod>(&west, "sturdy").await];
    assert_eq!(pods_after, pods_before, "the flapping restarted pods");
    assert_eq!(uids::<PersistentVolumeClaim>(&west, "flappy").await, claims_before);

    // A slow hub (every chunk between west and the hub delayed 300 ms): a new cluster is
    // still built on west, once, and the hub sees it Ready.
    link.slow(Duration::from_millis(300));
    clusters
        .create(
            &PostParams::default(),
            &serde_json::from_value(cluster("slowpoke", 1, "100m", Some(("region", "west")))).expect("c"),
        )
        .await
        .expect("create slowpoke");
    wait_cluster(&clusters, "slowpoke", "ready through a slow link", |c| ready_with(c, "2/2")).await;
    assert_eq!(uids::<Pod>(&west, "slowpoke").await.len(), 2);
    assert!(uids::<Pod>(&east, "slowpoke").await.is_empty());
    link.slow(Duration::ZERO);
    for d in fleet.hubs.iter_mut().chain(fleet.spokes.values_mut()) {
        assert!(d.running(), "{} exited", d.log.display());
    }
}
