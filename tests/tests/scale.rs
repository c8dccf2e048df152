//! The fleet simulator (tests/benches/scale.rs, docs/benchmarks.md) at its smallest size,
//! so that it cannot rot: the hub (debug build) with 10 virtual members running the real
//! hub-sync code and 100 clusters. Only outcomes are asserted — every cluster placed on a
//! member of the zone it selected, Ready, every figure measured — never timings.

mod simulator;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kdfed_crds::KubeDirectorCluster;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use simulator::{Sim, SimSettings};

/// The member the run silences last (the highest index).
const LOST: &str = "sim-0009";
/// Clusters created one at a time after the idle window, besides the burst of 100.
const STEADY: usize = 5;

#[tokio::test]
async fn ten_virtual_members_place_and_build_a_hundred_clusters() {
    let _serial = support::ONE_FLEET_AT_A_TIME.lock().await;
    let mut settings = SimSettings::new(10, 100);
    settings.idle = Duration::from_secs(15);
    settings.director_delay = Duration::from_millis(200);
    settings.grace_seconds = 10;
    settings.lease_interval = Duration::from_secs(2);
    settings.timeout = Duration::from_secs(600);
    settings.steady = STEADY;
    let sim = Sim::run_all(settings).await.expect("simulator run");
    let f = &sim.figures;
    println!("{}", f.table());

    // Every cluster Placed, seen on its member, Ready.
    assert_eq!((f.placed.count, f.propagated.count, f.ready.count), (100, 100, 100), "{}", f.table());
    let steady = (f.steady_placed.count, f.steady_propagated.count, f.steady_ready.count);
    assert_eq!(steady, (STEADY, STEADY, STEADY), "{}", f.table());
    let clusters = Api::<KubeDirectorCluster>::namespaced(sim.hub().clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("clusters");
    assert_eq!(clusters.items.len(), 100 + STEADY);
    let mut per_member: BTreeMap<String, usize> = BTreeMap::new();
    for c in &clusters.items {
        let member = support::member_of(c).unwrap_or_else(|| panic!("{} not placed", c.name_any()));
        // Cluster i selects zone z(i % 10) and member sim-000k carries zone z(k % 10).
        let i: usize = c.name_any().trim_start_matches("sim-").parse().expect("index");
        let k: usize = member.trim_start_matches("sim-").parse().expect("member index");
        assert_eq!(i % 10, k % 10, "{} placed on {member}, outside the zone it selected", c.name_any());
        // The last member was silenced at the end (the member-loss figure); its clusters are
        // checked below. Every other one is Ready.
        if member != LOST {
            assert!(support::cond(c, "Ready").is_some_and(|k| k.status == "True"), "{} not Ready", c.name_any());
        }
        *per_member.entry(member).or_default() += 1;
    }
    assert_eq!(per_member.len(), 10, "every member got clusters: {per_member:?}");
    // The lost member's clusters turn Ready=Unknown (the hub folds them one by one).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let list = Api::<KubeDirectorCluster>::namespaced(sim.hub().clone(), "default")
            .list(&ListParams::default())
            .await
            .expect("clusters");
        let on_lost: Vec<_> = list.items.iter().filter(|c| support::member_of(c).as_deref() == Some(LOST)).collect();
        let unknown = on_lost.iter().filter(|c| support::cond(c, "Ready").is_some_and(|k| k.status == "Unknown"));
        if !on_lost.is_empty() && unknown.count() == on_lost.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "clusters on {LOST} not all Ready=Unknown");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Each copy exists once, on the shared member API server, tagged with its member.
    let copies =
        Api::<KubeDirectorCluster>::all(sim.local().clone()).list(&ListParams::default()).await.expect("copies");
    assert_eq!(copies.items.len(), 100 + STEADY);
    for copy in &copies.items {
        let tag = copy.labels().get(kdfed_spoke::hubsync::LABEL_SHARED_LOCAL).cloned();
        let on_hub = clusters.items.iter().find(|c| c.name_any() == copy.name_any()).and_then(support::member_of);
        assert_eq!(tag, on_hub, "{}: tagged with the member it was placed on", copy.name_any());
        assert!(copy.annotations().get(kdfed_crds::federation::ANNOTATION_FENCED).is_none(), "no copy fenced");
    }

    // Every figure was measured.
    assert!(f.placement_passes >= 100.0, "{}", f.table());
    assert!(f.placement_pass_ms.is_finite() && f.hub_peak_rss_mib > 0.0 && f.hub_after_load.cpu_seconds > 0.0);
    assert!(f.apiserver_load_cpu_seconds > 0.0 && f.idle_member_requests_per_member_minute > 0.0, "{}", f.table());
    assert!(f.restart_caught_up_seconds.is_some() && f.restart_hub_writes.is_some(), "{}", f.table());
    assert!(f.member_loss_seconds.is_some_and(|s| s > 0.0), "{}", f.table());
    let row = f.csv_row();
    assert_eq!(row.split(',').count(), simulator::CSV_HEADER.split(',').count(), "{row}");
}
