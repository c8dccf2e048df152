//! Placement throughput: 10,000 intents over 1,000 members.
//! Run with `cargo bench -p kdfed-hub --bench placement`.

use std::time::Instant;

use kdfed_crds::cluster::PlacementPreference;
use kdfed_hub::placement::{IntentView, MemberView, Resources, schedule};

fn main() {
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
