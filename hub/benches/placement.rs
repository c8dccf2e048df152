//! Placement throughput: 10,000 intents over 1,000 members, first through the scheduler
//! alone, then through the hub's decision path (`intents::place::place` on one fleet
//! snapshot with the leader's ledger on top, each placement recorded before the next
//! decision, as `intents::decide` does when a batch of intents arrives at once).
//! Run with `cargo bench -p kdfed-hub --bench placement`.

use std::time::Instant;

use kdfed_crds::cluster::PlacementPreference;
use kdfed_hub::placement::{IntentView, MemberView, Resources, schedule};

fn main() {
    scheduler_alone();
    decision_path();
}

fn scheduler_alone() {
    let regions = ["eu", "us", "ap", "sa"];
    let members: Vec<MemberView> = (0..1000)
        .map(|i| MemberView {
            name: format!("member-{i:04}"),
            labels: [("region".to_string(), regions[i % 4].to_string()), ("tier".to_string(), format!("t{}", i % 3))]
                .into(),
            available: i % 50 != 0,
            allocatable: Resources { cpu: 64.0, memory: 256e9, gpu: (i % 10) as f64 },
            requested: Resources { cpu: (i % 64) as f64, memory: ((i * 7) % 256) as f64 * 1e9, gpu: 0.0 },
            storage_classes: vec!["standard".into()],
            ..MemberView::default()
        })
        .collect();
    let intents: Vec<IntentView> = (0..10_000)
        .map(|i| {
            let mut v = IntentView {
                requests: Resources {
                    cpu: (i % 8 + 1) as f64,
                    memory: ((i % 16) + 1) as f64 * 1e9,
                    gpu: (i % 3 == 0) as u8 as f64,
                },
                ..IntentView::default()
            };
            if i % 2 == 0 {
                v.placement.member_selector = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some([("region".to_string(), regions[i % 4].to_string())].into()),
                    ..Default::default()
                });
            }
            v.placement.preferences = vec![PlacementPreference {
                weight: 10,
                preference: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some([("tier".to_string(), "t1".to_string())].into()),
                    ..Default::default()
                },
            }];
            v
        })
        .collect();
    let mut placed = 0usize;
    let start = Instant::now();
    for intent in &intents {
        if schedule(intent, &members).is_ok() {
            placed += 1;
        }
    }
    let elapsed = start.elapsed();
    let per_second = intents.len() as f64 / elapsed.as_secs_f64();
    println!(
        "placement: {} intents over {} members in {:.3} s: {:.0} decisions/s ({placed} placed)",
        intents.len(),
        members.len(),
        elapsed.as_secs_f64(),
        per_second
    );
}

/// A member cluster of the decision path: available, `zone` label, room for 1,000 CPUs.
fn member_cluster(i: usize) -> kdfed_crds::federation::KubeDirectorMember {
    serde_json::from_value(serde_json::json!({
        "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember",
        "metadata": {"name": format!("member-{i:04}"), "labels": {"zone": format!("z{}", i % 10)}},
        "spec": {},
        "status": {
            "conditions": [{"type": "Available", "status": "True", "reason": "HeartbeatRenewed", "message": "",
                            "lastTransitionTime": "2026-12-01T00:00:00Z"}],
            "capacity": {"allocatable": {"cpu": "1000", "memory": "4000Gi"}, "requested": {}, "nodes": 10},
        }
    }))
    .expect("member")
}

/// An unplaced cluster of one 10m member that selects one zone.
fn intent(i: usize) -> kdfed_crds::cluster::KubeDirectorCluster {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": format!("c-{i:05}"), "namespace": "default", "uid": format!("uid-{i}"), "generation": 1},
        "spec": {
            "app": "a",
            "roles": [{"id": "web", "members": 1, "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}}}],
            "placement": {"memberSelector": {"matchLabels": {"zone": format!("z{}", i % 10)}}},
        }
    }))
    .expect("intent")
}

fn decision_path() {
    use kdfed_hub::intents::dereference::Fleet;
    use kdfed_hub::intents::ledger::Placer;
    use kdfed_hub::intents::place::{Decision, place};

    let fleet = Fleet::new((0..1000).map(member_cluster).collect(), Vec::new());
    let intents: Vec<_> = (0..10_000).map(intent).collect();
    let mut placer = Placer::default();
    let mut each = Vec::with_capacity(intents.len());
    let mut placed = 0usize;
    let start = Instant::now();
    for i in &intents {
        let t = Instant::now();
        let view = placer.view(t, || fleet.clone());
        let decision = place(i, &i.spec, Default::default(), &view, jiff::Timestamp::now());
        drop(view);
        if let Decision::Placed { status, .. } = decision {
            let mut recorded = i.clone();
            recorded.status = Some(status);
            placer.record(recorded, Instant::now());
            placed += 1;
        }
        each.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let elapsed = start.elapsed().as_secs_f64();
    each.sort_by(f64::total_cmp);
    let pct = |p: f64| each[((each.len() as f64 * p) as usize).min(each.len() - 1)];
    println!(
        "decision path: {} intents over {} members in {elapsed:.3} s ({placed} placed); per decision p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        intents.len(),
        fleet.member_clusters.len(),
        pct(0.5),
        pct(0.99),
        each.last().copied().unwrap_or_default()
    );
}
