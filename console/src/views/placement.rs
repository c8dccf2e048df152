//! Placement labels offered on the launch form: every `key=value` label of the registered
//! member clusters, with how many members carry it and how many of those are available to
//! take new clusters (`Available=True`, not cordoned); and for the labels chosen, how many
//! members match and how many of those have room for the cluster as the form describes it
//! (the hub's own scheduler filters, `kdfed_hub::placement::fits`, on the capacity members
//! report).

use std::collections::BTreeMap;

use kdfed_common::conditions::condition;
use kdfed_crds::cluster::KubeDirectorClusterSpec;
use kdfed_crds::federation::KubeDirectorMember;
use kdfed_hub::intents::place::member_views;
use kdfed_hub::placement::{IntentView, fits};

/// A member label the user may place by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelOffer {
    /// `key=value`.
    pub label: String,
    /// Members with the label.
    pub members: usize,
    /// Of those, members available for new clusters.
    pub available: usize,
}

/// Whether a member takes new clusters now.
pub fn takes_clusters(m: &KubeDirectorMember) -> bool {
    let available =
        m.status.as_ref().and_then(|s| condition(&s.conditions, "Available")).is_some_and(|c| c.status == "True");
    available && !m.spec.unschedulable
}

/// The labels of `members`, sorted, each with its counts. Kubernetes' own labels
/// (`*.kubernetes.io/...`) are not placement choices and are left out.
pub fn offers(members: &[KubeDirectorMember]) -> Vec<LabelOffer> {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for m in members {
        let room = takes_clusters(m);
        for (k, v) in m.metadata.labels.iter().flatten() {
            if k.contains("kubernetes.io/") {
                continue;
            }
            let entry = counts.entry(format!("{k}={v}")).or_default();
            entry.0 += 1;
            entry.1 += usize::from(room);
        }
    }
    counts.into_iter().map(|(label, (members, available))| LabelOffer { label, members, available }).collect()
}

/// How many of `members` carry every label of `wanted`, and how many of those take clusters.
pub fn matching(members: &[KubeDirectorMember], wanted: &BTreeMap<String, String>) -> (usize, usize) {
    let fits: Vec<&KubeDirectorMember> = members
        .iter()
        .filter(|m| wanted.iter().all(|(k, v)| m.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v)))
        .collect();
    (fits.len(), fits.iter().filter(|m| takes_clusters(m)).count())
}

/// How the members answer the placement the form asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Matching {
    /// Members carrying every label asked for.
    pub matching: usize,
    /// Of those, members available for new clusters.
    pub available: usize,
    /// Of those, members the hub's scheduler would accept the cluster on now (free CPU,
    /// memory and GPU against the cluster's requests, taints, storage classes); `None` when
    /// the form does not describe a cluster yet (a count that is not a number).
    pub room: Option<usize>,
}

/// [`matching`] plus room: `spec` is the cluster the form describes (its placement holds the
/// labels); each matching member is checked by the hub's scheduler filters against the
/// capacity it reports. Clusters placed on a member but not yet running are not counted
/// against it here (the console's user may not list other namespaces' clusters); the hub
/// counts them when it places.
pub fn matching_with_room(
    members: &[KubeDirectorMember],
    wanted: &BTreeMap<String, String>,
    spec: Option<&KubeDirectorClusterSpec>,
) -> Matching {
    let (matching, available) = matching(members, wanted);
    let room = spec.map(|spec| {
        let intent = IntentView::of(spec);
        member_views(members, &[]).iter().filter(|m| fits(&intent, m)).count()
    });
    Matching { matching, available, room }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(name: &str, labels: serde_json::Value, available: &str) -> KubeDirectorMember {
        with_capacity(name, labels, available, json!({}))
    }

    fn with_capacity(
        name: &str,
        labels: serde_json::Value,
        available: &str,
        cap: serde_json::Value,
    ) -> KubeDirectorMember {
        serde_json::from_value(json!({
            "apiVersion": "federation.kubedirector.hpe.com/v1alpha1", "kind": "KubeDirectorMember",
            "metadata": {"name": name, "labels": labels},
            "spec": {},
            "status": {"capacity": cap, "conditions": [{"type": "Available", "status": available, "reason": "r", "message": "",
                "lastTransitionTime": "2026-12-01T09:00:00Z"}]}
        }))
        .expect("member")
    }

    #[test]
    fn labels_are_offered_with_how_many_members_match_and_have_room() {
        let fleet = [
            member("east", json!({"region": "eu", "provider": "onprem"}), "True"),
            member("west", json!({"region": "us", "provider": "cloud", "kubernetes.io/os": "linux"}), "True"),
            member("north", json!({"region": "eu"}), "Unknown"),
        ];
        let got = offers(&fleet);
        let eu = got.iter().find(|o| o.label == "region=eu").expect("region=eu");
        assert_eq!((eu.members, eu.available), (2, 1));
        assert!(!got.iter().any(|o| o.label.starts_with("kubernetes.io")));
        assert_eq!(got.len(), 4);
        let wanted = BTreeMap::from([("region".to_string(), "eu".to_string())]);
        assert_eq!(matching(&fleet, &wanted), (2, 1));
        let none = BTreeMap::from([("region".to_string(), "mars".to_string())]);
        assert_eq!(matching(&fleet, &none), (0, 0));
        assert_eq!(matching(&fleet, &BTreeMap::new()), (3, 2), "no labels: every member");
    }

    fn spec(workers: i32, cpu: &str, memory: &str, region: &str) -> KubeDirectorClusterSpec {
        serde_json::from_value(json!({
            "app": "spark",
            "roles": [
                {"id": "controller", "members": 1, "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"id": "worker", "members": workers, "resources": {"requests": {"cpu": cpu, "memory": memory}}}
            ],
            "placement": {"memberSelector": {"matchLabels": {"region": region}}}
        }))
        .expect("spec")
    }

    #[test]
    fn room_compares_each_matching_member_s_free_capacity_with_the_form_s_requests() {
        let fleet = [
            // 4 cores, 8Gi, 1 core and 2Gi in use: 3 cores and 6Gi free.
            with_capacity(
                "big",
                json!({"region": "eu"}),
                "True",
                json!({"allocatable": {"cpu": "4", "memory": "8Gi"}, "requested": {"cpu": "1", "memory": "2Gi"}}),
            ),
            // 1 core free.
            with_capacity(
                "small",
                json!({"region": "eu"}),
                "True",
                json!({"allocatable": {"cpu": "2", "memory": "8Gi"}, "requested": {"cpu": "1", "memory": "0"}}),
            ),
            // Plenty, but not available.
            with_capacity(
                "down",
                json!({"region": "eu"}),
                "False",
                json!({"allocatable": {"cpu": "64", "memory": "64Gi"}}),
            ),
            with_capacity(
                "far",
                json!({"region": "us"}),
                "True",
                json!({"allocatable": {"cpu": "64", "memory": "64Gi"}}),
            ),
        ];
        let eu = BTreeMap::from([("region".to_string(), "eu".to_string())]);
        // 0.5 + 1 × 0.25 cores, 1Gi + 1Gi: both available eu members have room.
        let got = matching_with_room(&fleet, &eu, Some(&spec(1, "250m", "1Gi", "eu")));
        assert_eq!(got, Matching { matching: 3, available: 2, room: Some(2) });
        // 0.5 + 4 × 0.5 = 2.5 cores: only big.
        let got = matching_with_room(&fleet, &eu, Some(&spec(4, "500m", "1Gi", "eu")));
        assert_eq!(got.room, Some(1));
        // 4 × 1Gi + 1Gi = 5Gi fits big's 6Gi free; 6 × 1Gi + 1Gi does not.
        assert_eq!(matching_with_room(&fleet, &eu, Some(&spec(6, "100m", "1Gi", "eu"))).room, Some(0));
        // More members, more requests: the count follows what the form says now.
        assert_eq!(matching_with_room(&fleet, &eu, Some(&spec(2, "100m", "1Gi", "eu"))).room, Some(2));
        // No cluster described (a count that is not a number): room unknown.
        assert_eq!(matching_with_room(&fleet, &eu, None), Matching { matching: 3, available: 2, room: None });
    }
}
