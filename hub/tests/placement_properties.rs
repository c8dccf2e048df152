//! Properties of the scheduler over generated fleets and intents: it never picks a member
//! that fails a filter (checked by an oracle written here, independently of the scheduler's
//! own filter code), it finds a member whenever one passes every filter, and when it finds
//! none its reasons add up to the members considered.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kdfed_crds::cluster::Placement;
use kdfed_hub::placement::{IntentView, MemberView, Resources, schedule};
use proptest::prelude::*;

const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const CLASSES: [&str; 2] = ["standard", "fast"];

fn member(i: usize) -> impl Strategy<Value = MemberView> {
    (
        prop::sample::select(REGIONS.to_vec()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0.0_f64..64.0,
        0.0_f64..64.0,
        prop::sample::subsequence(CLASSES.to_vec(), 0..=2),
        0_usize..5,
    )
        .prop_map(move |(region, available, cordoned, tainted, alloc, used, classes, placed)| MemberView {
            name: format!("m{i}"),
            labels: BTreeMap::from([("region".to_string(), region.to_string())]),
            taints: if tainted {
                vec![Taint { key: "dedicated".into(), effect: "NoSchedule".into(), ..Default::default() }]
            } else {
                vec![]
            },
            available,
            cordoned,
            allocatable: Resources { cpu: alloc, memory: alloc * 1e9, gpu: 0.0 },
            requested: Resources { cpu: used.min(alloc), memory: used.min(alloc) * 1e9, gpu: 0.0 },
            storage_classes: classes.into_iter().map(String::from).collect(),
            placed,
        })
}

fn fleet() -> impl Strategy<Value = Vec<MemberView>> {
    (1_usize..12).prop_flat_map(|n| (0..n).map(member).collect::<Vec<_>>())
}

fn intent() -> impl Strategy<Value = IntentView> {
    (
        prop::option::of(prop::sample::select(REGIONS.to_vec())),
        prop::sample::subsequence((0..12).collect::<Vec<usize>>(), 0..=3),
        0.0_f64..32.0,
        prop::sample::subsequence(CLASSES.to_vec(), 0..=1),
        prop::option::of(0_usize..12),
    )
        .prop_map(|(region, members, cpu, classes, colocate)| IntentView {
            requests: Resources { cpu, memory: cpu * 1e9, gpu: 0.0 },
            storage_classes: classes.into_iter().map(String::from).collect(),
            placement: Placement {
                member_selector: region.map(|r| LabelSelector {
                    match_labels: Some(BTreeMap::from([("region".to_string(), r.to_string())])),
                    ..Default::default()
                }),
                members: members.into_iter().map(|i| format!("m{i}")).collect(),
                ..Default::default()
            },
            colocate: colocate.map(|i| format!("m{i}")),
        })
}

/// The oracle: every filter of docs/federation.md, checked from the views directly.
fn fits(intent: &IntentView, m: &MemberView) -> bool {
    let p = &intent.placement;
    let listed = p.members.is_empty() || p.members.contains(&m.name);
    let colocated = intent.colocate.as_ref().is_none_or(|c| c == &m.name);
    let selected = p
        .member_selector
        .as_ref()
        .is_none_or(|s| s.match_labels.iter().flatten().all(|(k, v)| m.labels.get(k) == Some(v)));
    // Generated intents tolerate nothing: any NoSchedule taint keeps them off.
    let untainted = m.taints.iter().all(|t| t.effect != "NoSchedule" && t.effect != "NoExecute");
    let classes = intent.storage_classes.iter().all(|c| m.storage_classes.contains(c));
    let free_cpu = m.allocatable.cpu - m.requested.cpu;
    let free_memory = m.allocatable.memory - m.requested.memory;
    let room = free_cpu + 1e-9 >= intent.requests.cpu && free_memory + 1e-3 >= intent.requests.memory;
    listed && colocated && selected && untainted && !m.cordoned && m.available && classes && room
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_scheduler_picks_only_members_that_pass_every_filter(members in fleet(), intent in intent()) {
        let any_fits = members.iter().any(|m| fits(&intent, m));
        match schedule(&intent, &members) {
            Ok(m) => prop_assert!(fits(&intent, m), "picked {} which fails a filter", m.name),
            Err(why) => {
                prop_assert!(!any_fits, "nothing picked although a member fits: {}", why);
                prop_assert_eq!(why.members, members.len());
                prop_assert_eq!(why.rejected.values().sum::<usize>(), members.len(), "{}", why);
            }
        }
    }
}
