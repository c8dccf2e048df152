//! Stray claims, pure: a claim the StatefulSet controller made for an ordinal after the
//! director had let that ordinal go, left behind because the StatefulSet was deleted (and
//! built again) before its controller processed the scale-down — whenDeleted is Retain on
//! purpose, so nothing else ever removes it, and a later grow would hand it, with a stale
//! member's data, to a new member. With whenScaled Delete the director deletes such a claim
//! itself; when in doubt it keeps it.

use std::collections::{BTreeMap, BTreeSet};

use kdfed_crds::cluster::{KubeDirectorClusterStatus, RoleStatus};

use super::members::{self, ClusterFacts, PlannedEvent, PodView, RoleWanted};
use super::{names, status};

/// What the director saw of one claim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimView {
    /// Claim name.
    pub name: String,
    /// Value of the cluster label (`kubedirector.hpe.com/kdcluster`), if it has one.
    pub cluster: Option<String>,
    /// The claim is being deleted.
    pub deleting: bool,
}

/// A claim that belongs to no member and is deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stray {
    /// Claim name.
    pub claim: String,
    /// The ordinal the name stands for.
    pub ordinal: usize,
}

impl Stray {
    /// The Normal Event that says what is deleted and why.
    pub fn event(&self) -> PlannedEvent {
        let message = format!(
            "claim {} of ordinal {} belongs to no member; whenScaled: Delete, so it is deleted",
            self.claim, self.ordinal
        );
        PlannedEvent { warning: false, reason: "Member", message }
    }
}

/// What the stray-claim rule looks at in one pass.
#[derive(Clone, Copy, Debug)]
pub struct Scene<'a> {
    /// The cluster's facts (name, whenScaled).
    pub facts: &'a ClusterFacts,
    /// The roles the spec asks for (a role not listed is wanted with no members).
    pub wanted: &'a [RoleWanted],
    /// The status this pass started from.
    pub old: &'a KubeDirectorClusterStatus,
    /// The status this pass plans.
    pub next: &'a KubeDirectorClusterStatus,
    /// Pods by name.
    pub pods: &'a BTreeMap<String, PodView>,
    /// StatefulSet names.
    pub statefulsets: &'a BTreeSet<String>,
    /// The cluster's claims.
    pub claims: &'a [ClaimView],
}

/// The claims to delete: labelled with this cluster, named `<template>-<statefulset>-<N>`
/// for a role StatefulSet that exists, `N` at or above the role's wanted member count, no
/// member (before or after this pass) and no pod `<statefulset>-<N>`, not being deleted;
/// only with whenScaled Delete. Nothing while the cluster is fenced or a live upgrade is
/// under way, nor in a role with a member that is not `configured` or `config error`.
pub fn strays(scene: Scene<'_>) -> Vec<Stray> {
    if scene.facts.retain_pvcs_when_scaled || fenced(scene.old) || upgrading(scene.old) || upgrading(scene.next) {
        return Vec::new();
    }
    let members: BTreeSet<&str> = [scene.old, scene.next]
        .iter()
        .flat_map(|s| &s.roles)
        .flat_map(|r| &r.members)
        .map(|m| m.pod.as_str())
        .collect();
    let roles: Vec<(&RoleStatus, usize)> = scene
        .next
        .roles
        .iter()
        .filter(|r| !r.stateful_set.is_empty() && scene.statefulsets.contains(&r.stateful_set))
        .filter(|r| at_rest(r) && scene.old.roles.iter().filter(|o| o.id == r.id).all(at_rest))
        .map(|r| (r, wanted_members(scene.wanted, &r.id)))
        .collect();
    let mut out = Vec::new();
    for claim in scene.claims {
        if claim.deleting || claim.cluster.as_deref() != Some(scene.facts.name.as_str()) {
            continue;
        }
        for (role, wanted) in &roles {
            let Some(ordinal) = ordinal_of(&claim.name, &role.stateful_set) else { continue };
            let pod = names::pod(&role.stateful_set, ordinal);
            if ordinal >= *wanted && !members.contains(pod.as_str()) && !scene.pods.contains_key(&pod) {
                out.push(Stray { claim: claim.name.clone(), ordinal });
            }
        }
    }
    out
}

/// Adds the deletion of each stray claim, with its Event, to `plan`.
pub fn sweep(plan: &mut members::Plan, strays: Vec<Stray>) {
    for stray in strays {
        if !plan.delete_pvcs.contains(&stray.claim) {
            plan.events.push(stray.event());
            plan.delete_pvcs.push(stray.claim);
        }
    }
}

/// The ordinal a claim named `<template>-<statefulset>-<N>` stands for; templates are
/// single words (`p`, `b0`), and `N` is written as the StatefulSet controller writes it.
fn ordinal_of(claim: &str, statefulset: &str) -> Option<usize> {
    let (head, n) = claim.rsplit_once('-')?;
    let ordinal: usize = n.parse().ok()?;
    if ordinal.to_string() != n {
        return None;
    }
    let template = head.strip_suffix(statefulset)?.strip_suffix('-')?;
    let word = !template.is_empty() && template.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    word.then_some(ordinal)
}

/// Members wanted in role `id`; a role the spec no longer lists wants none.
fn wanted_members(wanted: &[RoleWanted], id: &str) -> usize {
    wanted.iter().find(|w| w.id == id).map_or(0, |w| usize::try_from(w.members).unwrap_or(0))
}

/// Every member of the role is set up (or failed to be): nothing is being created,
/// removed or upgraded in it.
fn at_rest(role: &RoleStatus) -> bool {
    role.members.iter().all(|m| matches!(m.state.as_str(), members::CONFIGURED | members::CONFIG_ERROR))
}

fn fenced(status: &KubeDirectorClusterStatus) -> bool {
    status.conditions.iter().any(|c| c.type_ == status::CONDITION_FENCED && c.status == "True")
}

/// A live upgrade (or rollback) that has not finished, including one that stopped failed.
fn upgrading(status: &KubeDirectorClusterStatus) -> bool {
    status.upgrade.as_ref().is_some_and(|u| !matches!(u.phase.as_str(), "Completed" | "RolledBack"))
}

#[cfg(test)]
mod tests {
    use kdfed_crds::cluster::{MemberStatus, UpgradeStatus};

    use super::*;

    const STS: &str = "fragile-worker-x2b4q";

    fn facts(retain: bool) -> ClusterFacts {
        ClusterFacts {
            name: "fragile".into(),
            uid: "uid".into(),
            naming_scheme: "CrNameRole".into(),
            retain_pvcs_when_scaled: retain,
            namespace: "default".into(),
            domain_base: ".svc.cluster.local".into(),
        }
    }

    fn wanted(members: i32) -> Vec<RoleWanted> {
        vec![RoleWanted {
            id: "worker".into(),
            members,
            storage: true,
            ports: false,
            setup_package: false,
            file_injections: false,
            events: Vec::new(),
        }]
    }

    /// Two configured workers, ordinals 0 and 1, with their claims.
    fn status() -> KubeDirectorClusterStatus {
        let member = |i: usize| MemberStatus {
            pod: names::pod(STS, i),
            pvc: Some(names::member_pvc(&names::pod(STS, i))),
            state: members::CONFIGURED.into(),
            ..MemberStatus::default()
        };
        KubeDirectorClusterStatus {
            roles: vec![RoleStatus {
                id: "worker".into(),
                stateful_set: STS.into(),
                members: vec![member(0), member(1)],
                ..RoleStatus::default()
            }],
            ..KubeDirectorClusterStatus::default()
        }
    }

    fn pods() -> BTreeMap<String, PodView> {
        (0..2).map(|i| (names::pod(STS, i), PodView { ready: true, ..PodView::default() })).collect()
    }

    fn claim(name: &str) -> ClaimView {
        ClaimView { name: name.into(), cluster: Some("fragile".into()), deleting: false }
    }

    /// The claims of ordinals 0..=3: two of members, two left behind.
    fn claims() -> Vec<ClaimView> {
        (0..4).map(|i| claim(&names::member_pvc(&names::pod(STS, i)))).collect()
    }

    struct World {
        facts: ClusterFacts,
        wanted: Vec<RoleWanted>,
        old: KubeDirectorClusterStatus,
        next: KubeDirectorClusterStatus,
        pods: BTreeMap<String, PodView>,
        statefulsets: BTreeSet<String>,
        claims: Vec<ClaimView>,
    }

    impl World {
        fn new() -> World {
            World {
                facts: facts(false),
                wanted: wanted(2),
                old: status(),
                next: status(),
                pods: pods(),
                statefulsets: BTreeSet::from([STS.to_string()]),
                claims: claims(),
            }
        }

        fn strays(&self) -> Vec<String> {
            let scene = Scene {
                facts: &self.facts,
                wanted: &self.wanted,
                old: &self.old,
                next: &self.next,
                pods: &self.pods,
                statefulsets: &self.statefulsets,
                claims: &self.claims,
            };
            strays(scene).into_iter().map(|s| s.claim).collect()
        }
    }

    fn pvc(ordinal: usize) -> String {
        names::member_pvc(&names::pod(STS, ordinal))
    }

    #[test]
    fn claims_of_ordinals_no_member_has_go_with_when_scaled_delete() {
        let world = World::new();
        assert_eq!(world.strays(), vec![pvc(2), pvc(3)], "the members' claims stay");
        let found = strays(Scene {
            facts: &world.facts,
            wanted: &world.wanted,
            old: &world.old,
            next: &world.next,
            pods: &world.pods,
            statefulsets: &world.statefulsets,
            claims: &world.claims,
        });
        assert_eq!(found[0].ordinal, 2);
        assert_eq!(
            found[0].event().message,
            format!("claim {} of ordinal 2 belongs to no member; whenScaled: Delete, so it is deleted", pvc(2))
        );
        assert!(!found[0].event().warning);
        // A block device's claim of such an ordinal goes as well.
        let mut block = World::new();
        block.claims = vec![claim(&format!("b0-{STS}-2"))];
        assert_eq!(block.strays(), vec![format!("b0-{STS}-2")]);
    }

    #[test]
    fn when_scaled_retain_keeps_every_claim() {
        let mut world = World::new();
        world.facts = facts(true);
        assert!(world.strays().is_empty());
    }

    #[test]
    fn a_claim_of_an_ordinal_the_spec_still_wants_stays() {
        let mut world = World::new();
        world.wanted = wanted(3);
        assert_eq!(world.strays(), vec![pvc(3)], "ordinal 2 is wanted: a grow will use it");
    }

    #[test]
    fn a_claim_whose_pod_exists_stays() {
        let mut world = World::new();
        world.pods.insert(names::pod(STS, 2), PodView { deleting: true, ..PodView::default() });
        assert_eq!(world.strays(), vec![pvc(3)], "even a pod being deleted keeps its claim");
    }

    #[test]
    fn a_claim_of_a_member_before_or_after_this_pass_stays() {
        let mut world = World::new();
        let leaving = MemberStatus { pod: names::pod(STS, 2), state: members::CONFIGURED.into(), ..Default::default() };
        world.old.roles[0].members.push(leaving.clone());
        assert_eq!(world.strays(), vec![pvc(3)], "a member of the old status");
        let mut world = World::new();
        world.next.roles[0].members.push(leaving);
        assert_eq!(world.strays(), vec![pvc(3)], "a member of the planned status");
    }

    #[test]
    fn a_role_with_a_member_in_motion_keeps_its_claims() {
        for state in [
            members::CREATE_PENDING,
            members::CREATING,
            members::DELETE_PENDING,
            members::DELETING,
            members::UPGRADING,
            members::UPGRADE_ERROR,
        ] {
            let mut world = World::new();
            world.next.roles[0].members[1].state = state.into();
            assert!(world.strays().is_empty(), "{state} in the planned status");
            let mut world = World::new();
            world.old.roles[0].members[1].state = state.into();
            assert!(world.strays().is_empty(), "{state} in the old status");
        }
        let mut world = World::new();
        world.next.roles[0].members[1].state = members::CONFIG_ERROR.into();
        assert_eq!(world.strays(), vec![pvc(2), pvc(3)], "a failed setup is at rest");
    }

    #[test]
    fn a_live_upgrade_or_a_fence_keeps_every_claim() {
        for phase in ["Upgrading", "RollingBack", "Failed", "RollbackFailed"] {
            let upgrade = UpgradeStatus { phase: phase.into(), ..UpgradeStatus::default() };
            let mut world = World::new();
            world.old.upgrade = Some(upgrade.clone());
            assert!(world.strays().is_empty(), "{phase} in the old status");
            let mut world = World::new();
            world.next.upgrade = Some(upgrade);
            assert!(world.strays().is_empty(), "{phase} in the planned status");
        }
        let mut done = World::new();
        done.old.upgrade = Some(UpgradeStatus { phase: "Completed".into(), ..UpgradeStatus::default() });
        assert_eq!(done.strays().len(), 2, "a finished upgrade is no doubt");
        let mut fenced = World::new();
        fenced.old.conditions = kdfed_common::conditions::set_condition(
            &fenced.old.conditions,
            status::CONDITION_FENCED,
            "True",
            "PlacementMoved",
            "moved",
            Some(1),
        );
        assert!(fenced.strays().is_empty());
    }

    #[test]
    fn claims_of_other_clusters_unlabelled_or_being_deleted_stay() {
        let mut world = World::new();
        world.claims = vec![
            ClaimView { cluster: Some("other".into()), ..claim(&pvc(2)) },
            ClaimView { cluster: None, ..claim(&pvc(3)) },
            ClaimView { deleting: true, ..claim(&pvc(4)) },
            claim(&pvc(5)),
        ];
        assert_eq!(world.strays(), vec![pvc(5)]);
    }

    #[test]
    fn claims_of_statefulsets_that_do_not_exist_or_other_names_stay() {
        let mut world = World::new();
        world.statefulsets.clear();
        assert!(world.strays().is_empty(), "no StatefulSet (deleted, not built again yet)");
        let mut world = World::new();
        world.claims = [
            format!("p-{STS}-02"),
            format!("p-{STS}-x"),
            format!("{STS}-2"),
            format!("p-q-{STS}-2"),
            format!("p-other-{STS}2-2"),
            format!("data-{STS}-7"),
            "p-fragile-controller-abcde-3".to_string(),
        ]
        .iter()
        .map(|n| claim(n))
        .collect();
        assert_eq!(world.strays(), vec![format!("data-{STS}-7")], "only <template>-<statefulset>-<N>");
    }

    #[test]
    fn a_role_the_spec_dropped_wants_no_members() {
        let mut world = World::new();
        world.wanted.clear();
        world.old.roles[0].members.clear();
        world.next.roles[0].members.clear();
        world.pods.clear();
        assert_eq!(world.strays().len(), 4, "every ordinal of an emptied role that is still there");
    }

    #[test]
    fn sweep_deletes_each_stray_once_with_its_event() {
        let mut plan = members::Plan { delete_pvcs: vec![pvc(2)], ..members::Plan::default() };
        sweep(&mut plan, vec![Stray { claim: pvc(2), ordinal: 2 }, Stray { claim: pvc(3), ordinal: 3 }]);
        assert_eq!(plan.delete_pvcs, vec![pvc(2), pvc(3)]);
        assert_eq!(plan.events.len(), 1, "a claim the plan already deletes gets no second Event");
        assert!(plan.events[0].message.starts_with(&format!("claim {} of ordinal 3", pvc(3))));
    }
}
