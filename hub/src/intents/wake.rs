//! Wake: which intents a member's change concerns, without walking every intent. The intent
//! controller records where each intent is after each pass (placed on a member, or
//! waiting); a member event then wakes only the intents placed on it (when the availability
//! they show is outdated) and, when something placement looks at changed (labels, taints,
//! cordon, availability, capacity, storage classes), the waiting intents that member may
//! now let in. A status write that changes none of that (a capacity report with the same
//! figures, a placed-cluster count) wakes nothing.

use std::collections::{BTreeMap, BTreeSet};

use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::KubeDirectorMember;
use kube::ResourceExt;

use super::fold::availability_outdated;
use super::place::member_views;
use crate::placement::{self, IntentView, MemberView, Resources};

/// An intent's key: namespace and name.
pub type Key = (String, String);

/// Where each intent is, and what placement last saw of each member.
#[derive(Debug, Default)]
pub struct Wakes {
    members: BTreeMap<String, MemberView>,
    placed: BTreeMap<String, BTreeSet<Key>>,
    placed_on: BTreeMap<Key, String>,
    waiting: BTreeSet<Key>,
}

/// The intent's key.
pub fn key(intent: &KubeDirectorCluster) -> Key {
    (intent.namespace().unwrap_or_default(), intent.name_any())
}

impl Wakes {
    /// Records where `intent` is after a pass: placed on `member`, or waiting (`None`).
    pub fn intent_at(&mut self, key: Key, member: Option<&str>) {
        self.forget(&key);
        match member {
            Some(m) => {
                self.placed.entry(m.to_string()).or_default().insert(key.clone());
                self.placed_on.insert(key, m.to_string());
            }
            None => {
                self.waiting.insert(key);
            }
        }
    }

    /// Forgets an intent (deleted).
    pub fn forget(&mut self, key: &Key) {
        self.waiting.remove(key);
        if let Some(m) = self.placed_on.remove(key)
            && let Some(set) = self.placed.get_mut(&m)
        {
            set.remove(key);
        }
    }

    /// The intents `member`'s new state concerns; `get` reads an intent from the cache.
    /// Returns also whether anything placement looks at changed (then decisions must not
    /// use an older snapshot of the fleet).
    pub fn member_changed(
        &mut self,
        member: &KubeDirectorMember,
        get: impl Fn(&Key) -> Option<KubeDirectorCluster>,
    ) -> (Vec<Key>, bool) {
        let name = member.name_any();
        let mut view = member_views(std::slice::from_ref(member), &[]).remove(0);
        view.placed = 0;
        let changed = self.members.get(&name) != Some(&view);
        let mut out: Vec<Key> = self
            .placed
            .get(&name)
            .into_iter()
            .flatten()
            .filter(|k| get(k).is_some_and(|i| availability_outdated(&i, member)))
            .cloned()
            .collect();
        if changed {
            out.extend(self.waiting.iter().filter(|k| get(k).is_some_and(|i| may_fit(&i, &view))).cloned());
            self.members.insert(name, view);
        }
        (out, changed)
    }
}

/// Whether `member` may let `intent` in: every filter but the ones that need the resolved
/// spec (requests and storage classes come from the app's defaults too; the decision itself
/// checks them).
pub fn may_fit(intent: &KubeDirectorCluster, member: &MemberView) -> bool {
    let view = IntentView {
        requests: Resources::default(),
        storage_classes: Vec::new(),
        colocate: None,
        ..IntentView::of(&intent.spec)
    };
    placement::fits(&view, member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intents::fixtures::{at, intent, member_cluster, web_intent};

    fn by_key(all: &[KubeDirectorCluster]) -> impl Fn(&Key) -> Option<KubeDirectorCluster> + '_ {
        move |k| all.iter().find(|i| &key(i) == k).cloned()
    }

    #[test]
    fn a_member_change_wakes_only_what_it_can_affect() {
        let mut waiting_eu = web_intent("eu-job", 1, "1");
        waiting_eu.spec.placement =
            serde_json::from_value(serde_json::json!({"memberSelector": {"matchLabels": {"region": "eu"}}}))
                .expect("placement");
        let waiting_any = web_intent("any-job", 1, "1");
        let on_east = intent("on-east", Some("east"), &[]);
        let on_west = intent("on-west", Some("west"), &[]);
        let all = vec![waiting_eu.clone(), waiting_any.clone(), on_east.clone(), on_west.clone()];
        let mut wakes = Wakes::default();
        for i in [&waiting_eu, &waiting_any] {
            wakes.intent_at(key(i), None);
        }
        wakes.intent_at(key(&on_east), Some("east"));
        wakes.intent_at(key(&on_west), Some("west"));

        // east becomes available (labelled region=us): the waiting cluster without a
        // selector may fit, the eu one may not; the cluster on east shows no availability yet.
        let mut east = member_cluster("east", Some("True"), at(0), "4");
        east.metadata.labels = Some([("region".to_string(), "us".to_string())].into());
        let (woken, changed) = wakes.member_changed(&east, by_key(&all));
        assert!(changed);
        let names: BTreeSet<&str> = woken.iter().map(|k| k.1.as_str()).collect();
        assert_eq!(names, BTreeSet::from(["any-job", "on-east"]));

        // The same state again (a report with the same figures): only the placed cluster
        // whose shown availability is still outdated.
        let (woken, changed) = wakes.member_changed(&east, by_key(&all));
        assert!(!changed);
        assert_eq!(woken.iter().map(|k| k.1.as_str()).collect::<Vec<_>>(), ["on-east"]);

        // A member that never heartbeats wakes no waiting cluster at all.
        let silent = member_cluster("silent", None, at(0), "4");
        let (woken, changed) = wakes.member_changed(&silent, by_key(&all));
        assert!(changed && woken.is_empty(), "{woken:?}");

        // Once placed, a cluster is no longer woken as waiting; a deleted one not at all.
        wakes.intent_at(key(&waiting_any), Some("east"));
        wakes.forget(&key(&on_east));
        east.metadata.labels = Some([("region".to_string(), "eu".to_string())].into());
        let (woken, _) = wakes.member_changed(&east, by_key(&all));
        let names: BTreeSet<&str> = woken.iter().map(|k| k.1.as_str()).collect();
        assert_eq!(names, BTreeSet::from(["eu-job"]), "any-job shows no placement in this cache copy");
    }
}
