//! The hub's fleet cache on a real API server: every loop that waits for it is let go once
//! its watches have listed (a kube-runtime store wakes only one waiter; the metrics loop once
//! waited forever beside the availability loop), and it sees what is created afterwards.

use std::time::Duration;

use kdfed_crds::federation::KubeDirectorMember;
use kdfed_hub::cache::FleetCache;
use kube::api::{Api, PostParams};

#[tokio::test]
async fn every_waiter_is_released_and_the_cache_follows_the_api_server() {
    let bed = kdfed_testbed::Testbed::start(&["hub"]).await.expect("test bed");
    let client = bed.client("hub").await.expect("client");
    kdfed_common::crds::install(client.clone()).await.expect("CRDs");
    let (cache, driver) = FleetCache::start(&client);
    // The waiters start before the watches run, as the hub's loops do.
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { c.ready().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::spawn(driver);
    for w in waiters {
        tokio::time::timeout(Duration::from_secs(60), w).await.expect("a waiter was never released").expect("join");
    }
    let member: KubeDirectorMember = serde_json::from_value(serde_json::json!({
        "apiVersion": "federation.kubedirector.hpe.com/v1alpha1", "kind": "KubeDirectorMember",
        "metadata": {"name": "east"}, "spec": {}
    }))
    .expect("member");
    Api::<KubeDirectorMember>::all(client).create(&PostParams::default(), &member).await.expect("create");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while cache.members.state().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the cache never saw the new member");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
