//! Placement labels offered on the launch form: every `key=value` label of the registered
//! member clusters, with how many members carry it and how many of those are available to
//! take new clusters (`Available=True`, not cordoned).

use std::collections::BTreeMap;

use kdfed_common::conditions::condition;
use kdfed_crds::federation::KubeDirectorMember;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(name: &str, labels: serde_json::Value, available: &str) -> KubeDirectorMember {
        serde_json::from_value(json!({
            "apiVersion": "federation.kubedirector.hpe.com/v1alpha1", "kind": "KubeDirectorMember",
            "metadata": {"name": name, "labels": labels},
            "spec": {},
            "status": {"conditions": [{"type": "Available", "status": available, "reason": "r", "message": "",
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
}
