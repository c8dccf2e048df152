//! Place (pure): which member cluster runs an intent. The scheduler's views of the member
//! clusters, co-location with the clusters it connects to, the sticky first decision
//! ([`place`], through the scheduler in [`crate::placement`]), and the failover decisions
//! of a cluster whose member cluster has been unavailable too long.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kdfed_common::conditions::{condition, set_condition};
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterSpec, KubeDirectorClusterStatus, PlacementStatus};
use kdfed_crds::federation::KubeDirectorMember;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::dereference::Fleet;
use super::{Event, Settle, UNSCHEDULABLE_RECHECK};
use crate::placement::{self, IntentView, MemberView, Resources, Unschedulable};

/// How often a cluster waiting for the clusters it connects to looks again.
pub const CONNECTIONS_RECHECK: Duration = Duration::from_secs(5);

/// The outcome of placing an unplaced cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Placed: the status recording it (written before anything acts on it), the member
    /// cluster and what the Event says.
    Placed {
        /// The status with the placement (epoch 1) and `Placed=True`.
        status: KubeDirectorClusterStatus,
        /// The member cluster chosen.
        member_cluster: String,
        /// The message of the `Placed` condition and Event.
        message: String,
    },
    /// Not placed yet: waiting for connected clusters, or nothing fits.
    Wait(Settle),
}

/// What a placement decision reads: a snapshot of the fleet (from the hub's caches), the
/// scheduler's member views computed from it once (so a batch of decisions does not walk
/// every cluster each time), and the placements recorded since that the snapshot does not
/// show yet (the ledger's), counted on top so two decisions never take the same room.
#[derive(Clone, Debug, Default)]
pub struct FleetView {
    /// The snapshot.
    pub fleet: Arc<Fleet>,
    /// The member views with the pending placements counted (shared between the views of
    /// one snapshot; copied only when a placement is added while an older view is held).
    views: Arc<Vec<MemberView>>,
    /// Index of `views` by member name.
    index: Arc<BTreeMap<String, usize>>,
    pending: Arc<Vec<KubeDirectorCluster>>,
}

impl FleetView {
    /// The view of a snapshot, with nothing pending.
    pub fn new(fleet: Arc<Fleet>) -> FleetView {
        let views = member_views(&fleet.member_clusters, fleet.intents());
        let index = views.iter().enumerate().map(|(i, v)| (v.name.clone(), i)).collect();
        FleetView { fleet, views: Arc::new(views), index: Arc::new(index), pending: Arc::default() }
    }

    /// This view with `pending` placements (intents whose status names their member) on top.
    pub fn with_pending(&self, pending: Vec<KubeDirectorCluster>) -> FleetView {
        let mut view = self.clone();
        for intent in pending {
            view.add_pending(intent);
        }
        view
    }

    /// Counts one more pending placement (its cluster and requests on its member; pending
    /// clusters are not running yet): O(1) in the fleet's size, so a batch of decisions
    /// from one snapshot does not copy the fleet for each.
    pub fn add_pending(&mut self, intent: KubeDirectorCluster) {
        if let Some(p) = intent.status.as_ref().and_then(|s| s.placement.as_ref())
            && let Some(&i) = self.index.get(&p.member)
        {
            let r = placement::cluster_requests(&intent.spec);
            let v = &mut Arc::make_mut(&mut self.views)[i];
            v.placed += 1;
            v.requested = Resources {
                cpu: v.requested.cpu + r.cpu,
                memory: v.requested.memory + r.memory,
                gpu: v.requested.gpu + r.gpu,
            };
        }
        Arc::make_mut(&mut self.pending).push(intent);
    }

    /// The scheduler's member views: the snapshot's, plus each pending placement.
    pub fn member_views(&self) -> &[MemberView] {
        &self.views
    }

    /// Every intent, pending placements first (they are newer than the snapshot's copies).
    pub fn intents(&self) -> impl Iterator<Item = &KubeDirectorCluster> + Clone {
        self.pending.iter().chain(self.fleet.intents())
    }
}

/// Places an unplaced cluster: beside the clusters it connects to, on the member cluster
/// the scheduler picks from `fleet` at `now`.
pub fn place(
    intent: &KubeDirectorCluster,
    spec: &KubeDirectorClusterSpec,
    mut status: KubeDirectorClusterStatus,
    fleet: &FleetView,
    now: jiff::Timestamp,
) -> Decision {
    let generation = intent.metadata.generation;
    let views = fleet.member_views();
    let mut view = IntentView::of(spec);
    let ns = intent.namespace().unwrap_or_else(|| "default".into());
    match connected_member(fleet.intents(), &ns, &intent.name_any(), spec) {
        Ok(member_cluster) => view.colocate = member_cluster,
        Err(message) => {
            status.conditions =
                set_condition(&status.conditions, "Placed", "False", "WaitingForConnections", &message, generation);
            let event = Event::new(false, "WaitingForConnections", message);
            return Decision::Wait(Settle { status, event, then: Action::requeue(CONNECTIONS_RECHECK) });
        }
    }
    match placement::schedule(&view, views) {
        Ok(m) => {
            status.placement = Some(PlacementStatus { member: m.name.clone(), epoch: 1, time: Some(Time(now)) });
            let message = format!("placed on member {} (epoch 1)", m.name);
            status.conditions = set_condition(&status.conditions, "Placed", "True", "Scheduled", &message, generation);
            Decision::Placed { status, member_cluster: m.name.clone(), message }
        }
        Err(why) => {
            let message = why.to_string();
            status.conditions =
                set_condition(&status.conditions, "Placed", "False", "Unschedulable", &message, generation);
            // Waiting costs nothing: every member change (joined, cordoned, capacity,
            // availability) wakes unplaced clusters through the member watch; this is only
            // a backstop.
            let then = Action::requeue(UNSCHEDULABLE_RECHECK);
            Decision::Wait(Settle { status, event: Event::new(true, "Unschedulable", message), then })
        }
    }
}

/// Scheduler views of the member clusters: reported capacity, plus the requests of
/// clusters placed on each that it has not reported as fully running yet.
pub fn member_views<'a>(
    member_clusters: &[KubeDirectorMember],
    intents: impl IntoIterator<Item = &'a KubeDirectorCluster>,
) -> Vec<MemberView> {
    let mut in_flight: BTreeMap<String, Resources> = BTreeMap::new();
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    for intent in intents {
        let Some(status) = &intent.status else { continue };
        let Some(p) = &status.placement else { continue };
        *placed.entry(p.member.clone()).or_default() += 1;
        let running =
            status.members_ready.as_deref().is_some_and(|r| r.split_once('/').is_some_and(|(a, b)| a == b && a != "0"));
        if !running {
            let r = placement::cluster_requests(&intent.spec);
            let e = in_flight.entry(p.member.clone()).or_default();
            *e = Resources { cpu: e.cpu + r.cpu, memory: e.memory + r.memory, gpu: e.gpu + r.gpu };
        }
    }
    member_clusters
        .iter()
        .map(|m| {
            let status = m.status.clone().unwrap_or_default();
            let capacity = status.capacity.clone().unwrap_or_default();
            let allocatable = Resources::from_map(capacity.allocatable.iter().map(|(k, v)| (k, v.0.as_str())));
            let mut requested = Resources::from_map(capacity.requested.iter().map(|(k, v)| (k, v.0.as_str())));
            if let Some(extra) = in_flight.get(&m.name_any()) {
                requested = Resources {
                    cpu: requested.cpu + extra.cpu,
                    memory: requested.memory + extra.memory,
                    gpu: requested.gpu + extra.gpu,
                };
            }
            MemberView {
                name: m.name_any(),
                labels: m.labels().clone(),
                taints: m.spec.taints.clone(),
                available: is_available(m),
                cordoned: m.spec.unschedulable,
                allocatable,
                requested,
                storage_classes: status.storage_classes.clone(),
                placed: placed.get(&m.name_any()).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// Whether a member cluster is `Available=True`.
pub fn is_available(member_cluster: &KubeDirectorMember) -> bool {
    member_cluster
        .status
        .as_ref()
        .is_some_and(|s| condition(&s.conditions, "Available").is_some_and(|c| c.status == "True"))
}

/// Where the clusters a cluster connects to run: connections are resolved on the member
/// cluster, so it must run there too. `Ok(None)` without (existing) connected clusters;
/// missing ones are skipped, as configmeta skips them. `Err` says why placement must wait:
/// a connected cluster not placed yet, or connected clusters on different member clusters.
pub fn connected_member<'a, I>(
    intents: I,
    ns: &str,
    name: &str,
    spec: &KubeDirectorClusterSpec,
) -> Result<Option<String>, String>
where
    I: IntoIterator<Item = &'a KubeDirectorCluster> + Clone,
{
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for wanted in spec.connections.iter().flat_map(|c| &c.clusters) {
        if wanted == name {
            continue;
        }
        let Some(other) =
            intents.clone().into_iter().find(|i| i.namespace().as_deref() == Some(ns) && &i.name_any() == wanted)
        else {
            continue;
        };
        match other.status.as_ref().and_then(|s| s.placement.as_ref()) {
            Some(p) => found.entry(p.member.clone()).or_default().push(wanted.clone()),
            None => return Err(format!("waiting for connected cluster {wanted} to be placed")),
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.into_keys().next()),
        _ => {
            let parts: Vec<String> = found.iter().map(|(m, cs)| format!("{} on {m}", cs.join(", "))).collect();
            Err(format!(
                "connected clusters run on different members ({}); a cluster can only run beside the clusters it connects to",
                parts.join("; ")
            ))
        }
    }
}

/// Since when the member cluster has been unavailable: its own `Available` condition, or
/// (member cluster gone) when this cluster's status last saw it available.
pub fn unavailable_since(
    member_cluster: Option<&KubeDirectorMember>,
    old: &KubeDirectorClusterStatus,
) -> Option<jiff::Timestamp> {
    let shown = match member_cluster {
        Some(m) => m.status.as_ref().and_then(|s| condition(&s.conditions, "Available")),
        None => condition(&old.conditions, "MemberAvailable"),
    };
    shown.filter(|c| c.status != "True").map(|c| c.last_transition_time.0)
}

/// `afterSeconds` of an opted-in cluster (`failover.policy: Reschedule`) whose member
/// cluster has been unavailable long enough to move it at `now` (see [`may_fail_over`]).
pub fn failover_due(
    intent: &KubeDirectorCluster,
    member_cluster: Option<&KubeDirectorMember>,
    old: &KubeDirectorClusterStatus,
    now: jiff::Timestamp,
    margin: Duration,
) -> Option<i64> {
    let after = intent.spec.placement.as_ref().and_then(|p| p.failover_after())?;
    let since = unavailable_since(member_cluster, old)?;
    may_fail_over(since, now, after, margin).then_some(after)
}

/// Whether a cluster may leave a member that has been unavailable since `since`: only
/// `after_seconds` plus `margin` later, on the hub's clock alone. The hub marks a member
/// unavailable a heartbeat grace after it last saw the member's Lease change (also on its
/// own clock; the member's renewTime is never compared with the hub's time), and the
/// member's spoke fences a failover-enabled copy on its own monotonic clock
/// `afterSeconds - self_fence_margin_seconds` after its last renewal, so the old copy is
/// down before the new one is placed, whatever the two wall clocks say.
pub fn may_fail_over(since: jiff::Timestamp, now: jiff::Timestamp, after_seconds: i64, margin: Duration) -> bool {
    let waited = now.duration_since(since);
    let needed = jiff::SignedDuration::from_secs(after_seconds.max(0))
        .saturating_add(jiff::SignedDuration::try_from(margin).unwrap_or(jiff::SignedDuration::MAX));
    waited >= needed
}

/// Where a cluster fails over to: the scheduler's pick among the other member clusters,
/// beside the clusters it connects to where they are placed.
pub fn failover_target(
    intent: &KubeDirectorCluster,
    spec: &KubeDirectorClusterSpec,
    current: &str,
    fleet: &FleetView,
) -> Result<String, Unschedulable> {
    let views: Vec<MemberView> = fleet.member_views().iter().filter(|v| v.name != current).cloned().collect();
    let mut view = IntentView::of(spec);
    let ns = intent.namespace().unwrap_or_default();
    view.colocate = connected_member(fleet.intents(), &ns, &intent.name_any(), spec).ok().flatten();
    placement::schedule(&view, &views).map(|m| m.name.clone())
}

/// What a failover that found no other member cluster says.
pub fn failover_blocked(current: &str, after: i64, why: &Unschedulable) -> String {
    format!("member {current} unavailable for over {after}s but no other member fits: {why}")
}

/// The status of a cluster failed over to `target` at `now` (the next epoch) and its
/// message. Nothing reported so far describes the new placement, so it is cleared.
pub fn failed_over(
    mut status: KubeDirectorClusterStatus,
    placement: &PlacementStatus,
    target: &str,
    after: i64,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> (KubeDirectorClusterStatus, String) {
    let epoch = placement.epoch + 1;
    let message =
        format!("failed over from {} (unavailable for over {after}s) to {target} (epoch {epoch})", placement.member);
    status.placement = Some(PlacementStatus { member: target.to_string(), epoch, time: Some(Time(now)) });
    status.state = None;
    status.roles.clear();
    status.member_state_rollup = None;
    status.members_ready = None;
    status.member_status_time = None;
    status.cluster_service = None;
    status.conditions.retain(|c| !matches!(c.type_.as_str(), "MemberAvailable" | "Applied" | "Ready"));
    status.conditions = set_condition(&status.conditions, "Placed", "True", "FailedOver", &message, generation);
    (status, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intents::fixtures::{at, condition_since, intent, member_cluster, web_intent};

    #[test]
    fn a_cluster_fails_over_only_after_after_seconds_plus_the_margin_on_the_hub_s_clock() {
        let since = jiff::Timestamp::from_second(1_000_000).expect("time");
        let at = |s: i64| since.checked_add(jiff::SignedDuration::from_secs(s)).expect("time");
        let margin = Duration::from_secs(10);
        assert!(!may_fail_over(since, at(0), 10, margin));
        assert!(!may_fail_over(since, at(19), 10, margin));
        assert!(may_fail_over(since, at(20), 10, margin));
        assert!(may_fail_over(since, at(300), 10, margin));
        // A hub clock that went backwards since never fails over early.
        assert!(!may_fail_over(since, at(-60), 10, margin));
        assert!(may_fail_over(since, at(10), 10, Duration::ZERO));
    }

    #[test]
    fn connected_clusters_decide_the_member() {
        let all = vec![
            intent("db", Some("west"), &[]),
            intent("cache", Some("west"), &[]),
            intent("queue", Some("east"), &[]),
            intent("fresh", None, &[]),
        ];
        let me = |connects: &[&str]| connected_member(&all, "default", "me", &intent("me", None, connects).spec);
        assert_eq!(me(&[]), Ok(None));
        assert_eq!(me(&["db", "cache"]), Ok(Some("west".into())));
        // Missing connected clusters are skipped (configmeta skips them too); itself as well.
        assert_eq!(me(&["db", "gone", "me"]), Ok(Some("west".into())));
        assert_eq!(me(&["db", "fresh"]), Err("waiting for connected cluster fresh to be placed".into()));
        let split = me(&["db", "queue"]).expect_err("split");
        assert!(
            split.starts_with("connected clusters run on different members (queue on east; db on west)"),
            "{split}"
        );
        // Other namespaces do not count.
        assert_eq!(connected_member(&all, "other", "me", &intent("me", None, &["db"]).spec), Ok(None));
    }

    fn view(fleet: Fleet) -> FleetView {
        FleetView::new(Arc::new(fleet))
    }

    #[test]
    fn a_pending_placement_takes_its_room_before_the_snapshot_shows_it() {
        // Room for one 2-CPU cluster on each member; the snapshot shows neither placement.
        let snapshot = view(Fleet::new(
            vec![member_cluster("east", Some("True"), at(0), "2"), member_cluster("west", Some("True"), at(0), "2")],
            vec![web_intent("first", 1, "2"), web_intent("second", 1, "2"), web_intent("third", 1, "2")],
        ));
        let intents: Vec<&KubeDirectorCluster> = snapshot.fleet.intents().collect();
        let first = intents[0];
        let Decision::Placed { status, member_cluster: m1, .. } =
            place(first, &first.spec, Default::default(), &snapshot, at(1))
        else {
            panic!("first not placed")
        };
        let mut recorded = first.clone();
        recorded.status = Some(status);
        let after_one = snapshot.with_pending(vec![recorded.clone()]);
        let second = intents[1];
        let Decision::Placed { status, member_cluster: m2, .. } =
            place(second, &second.spec, Default::default(), &after_one, at(2))
        else {
            panic!("second not placed")
        };
        assert_ne!(m1, m2, "the second cluster went where the first one's room was");
        let mut recorded_too = second.clone();
        recorded_too.status = Some(status);
        let full = snapshot.with_pending(vec![recorded, recorded_too]);
        let third = intents[2];
        let Decision::Wait(wait) = place(third, &third.spec, Default::default(), &full, at(3)) else {
            panic!("a third cluster took room that was taken")
        };
        assert!(wait.event.message.contains("2 had insufficient free CPU"), "{}", wait.event.message);
    }

    fn placed(name: &str, on: &str, cpu: &str, ready: Option<&str>) -> KubeDirectorCluster {
        let mut c = web_intent(name, 1, cpu);
        c.status = Some(KubeDirectorClusterStatus {
            placement: Some(PlacementStatus { member: on.into(), epoch: 1, time: None }),
            members_ready: ready.map(String::from),
            ..KubeDirectorClusterStatus::default()
        });
        c
    }

    #[test]
    fn a_member_s_view_counts_the_clusters_placed_there_and_the_requests_not_yet_running() {
        let members = [member_cluster("east", Some("True"), at(0), "4"), member_cluster("west", None, at(0), "8")];
        let intents = [
            placed("starting", "east", "1", None),
            placed("scaling", "east", "500m", Some("0/1")),
            placed("running", "east", "2", Some("1/1")),
            placed("elsewhere", "gone", "3", None),
            web_intent("unplaced", 1, "5"),
        ];
        let views = member_views(&members, &intents);
        let east = &views[0];
        assert_eq!((east.name.as_str(), east.available, east.placed), ("east", true, 3));
        assert!((east.requested.cpu - 1.5).abs() < 1e-9, "running clusters are in the member's own report");
        assert!((east.allocatable.cpu - 4.0).abs() < 1e-9);
        let west = &views[1];
        assert_eq!((west.available, west.placed), (false, 0), "never joined: not available");
        assert!(west.requested.cpu.abs() < 1e-9);
    }

    #[test]
    fn an_unplaced_cluster_is_placed_once_with_epoch_1_on_a_member_that_fits() {
        let fleet = view(Fleet::new(
            vec![member_cluster("east", Some("True"), at(0), "1"), member_cluster("west", Some("True"), at(0), "4")],
            vec![],
        ));
        let db = web_intent("db", 1, "2");
        match place(&db, &db.spec, Default::default(), &fleet, at(5)) {
            Decision::Placed { status, member_cluster, message } => {
                assert_eq!(member_cluster, "west");
                assert_eq!(message, "placed on member west (epoch 1)");
                assert_eq!(
                    status.placement,
                    Some(PlacementStatus { member: "west".into(), epoch: 1, time: Some(Time(at(5))) })
                );
                let placed = condition(&status.conditions, "Placed").map(|c| (c.status.as_str(), c.reason.as_str()));
                assert_eq!(placed, Some(("True", "Scheduled")));
            }
            other => panic!("not placed: {other:?}"),
        }
    }

    #[test]
    fn a_cluster_nothing_fits_waits_for_a_member_change() {
        let fleet = view(Fleet::new(vec![member_cluster("east", Some("True"), at(0), "1")], vec![]));
        let db = web_intent("db", 1, "2");
        let Decision::Wait(wait) = place(&db, &db.spec, Default::default(), &fleet, at(5)) else { panic!("placed") };
        assert_eq!(wait.status.placement, None);
        assert_eq!(condition(&wait.status.conditions, "Placed").map(|c| c.reason.as_str()), Some("Unschedulable"));
        assert_eq!((wait.event.warning, wait.event.reason.as_str()), (true, "Unschedulable"));
        assert!(wait.event.message.starts_with("0/1 members fit"), "{}", wait.event.message);
        assert_eq!(wait.then, Action::requeue(UNSCHEDULABLE_RECHECK));
    }

    #[test]
    fn a_cluster_waits_for_the_clusters_it_connects_to_be_placed() {
        let mut db = web_intent("db", 1, "1");
        db.spec.connections = intent("x", None, &["cache"]).spec.connections;
        let fleet =
            view(Fleet::new(vec![member_cluster("east", Some("True"), at(0), "4")], vec![intent("cache", None, &[])]));
        let Decision::Wait(wait) = place(&db, &db.spec, Default::default(), &fleet, at(5)) else { panic!("placed") };
        assert_eq!((wait.event.warning, wait.event.reason.as_str()), (false, "WaitingForConnections"));
        assert_eq!(wait.then, Action::requeue(CONNECTIONS_RECHECK));
    }

    fn opted_in(after: i64) -> KubeDirectorCluster {
        let mut db = intent("db", Some("east"), &[]);
        db.spec.placement = serde_json::from_value(serde_json::json!({
            "failover": {"policy": "Reschedule", "afterSeconds": after}
        }))
        .expect("placement");
        db
    }

    #[test]
    fn failover_is_due_only_for_opted_in_clusters_whose_member_stayed_unavailable_long_enough() {
        let margin = Duration::from_secs(10);
        let old = KubeDirectorClusterStatus::default();
        let lost = member_cluster("east", Some("Unknown"), at(0), "4");
        assert_eq!(failover_due(&opted_in(60), Some(&lost), &old, at(70), margin), Some(60));
        assert_eq!(failover_due(&opted_in(60), Some(&lost), &old, at(69), margin), None, "not yet");
        let fine = member_cluster("east", Some("True"), at(0), "4");
        assert_eq!(failover_due(&opted_in(60), Some(&fine), &old, at(700), margin), None, "available");
        let never_joined = member_cluster("east", None, at(0), "4");
        assert_eq!(failover_due(&opted_in(60), Some(&never_joined), &old, at(700), margin), None);
        let not_opted_in = intent("db", Some("east"), &[]);
        assert_eq!(failover_due(&not_opted_in, Some(&lost), &old, at(700), margin), None);
    }

    #[test]
    fn a_gone_member_counts_as_unavailable_since_the_cluster_last_saw_it_available() {
        let margin = Duration::ZERO;
        let last_seen = KubeDirectorClusterStatus {
            conditions: vec![condition_since("MemberAvailable", "Unknown", "HeartbeatMissed", at(100))],
            ..Default::default()
        };
        assert_eq!(unavailable_since(None, &last_seen), Some(at(100)));
        assert_eq!(failover_due(&opted_in(60), None, &last_seen, at(160), margin), Some(60));
        assert_eq!(failover_due(&opted_in(60), None, &last_seen, at(159), margin), None);
        let shown_available = KubeDirectorClusterStatus {
            conditions: vec![condition_since("MemberAvailable", "True", "HeartbeatRenewed", at(100))],
            ..Default::default()
        };
        assert_eq!(failover_due(&opted_in(60), None, &shown_available, at(1000), margin), None);
    }

    #[test]
    fn a_failover_goes_to_another_member_with_the_next_epoch_and_forgets_the_old_report() {
        let fleet = view(Fleet::new(
            vec![
                member_cluster("east", Some("Unknown"), at(0), "64"),
                member_cluster("west", Some("True"), at(0), "4"),
            ],
            vec![],
        ));
        let db = opted_in(60);
        assert_eq!(failover_target(&db, &db.spec, "east", &fleet), Ok("west".to_string()));
        let only_east = view(Fleet::new(vec![fleet.fleet.member_clusters[0].clone()], vec![]));
        let why = failover_target(&db, &db.spec, "east", &only_east).expect_err("nowhere to go");
        assert_eq!(
            failover_blocked("east", 60, &why),
            "member east unavailable for over 60s but no other member fits: 0/0 members fit"
        );

        let before = KubeDirectorClusterStatus {
            state: Some("configured".into()),
            members_ready: Some("1/1".into()),
            placement: Some(PlacementStatus { member: "east".into(), epoch: 3, time: None }),
            conditions: ["MemberAvailable", "Applied", "Ready", "Valid"]
                .iter()
                .map(|t| condition_since(t, "True", "Fine", at(0)))
                .collect(),
            ..Default::default()
        };
        let placement = before.placement.clone().expect("placed");
        let (after, message) = failed_over(before, &placement, "west", 60, Some(2), at(90));
        assert_eq!(message, "failed over from east (unavailable for over 60s) to west (epoch 4)");
        assert_eq!(
            after.placement,
            Some(PlacementStatus { member: "west".into(), epoch: 4, time: Some(Time(at(90))) })
        );
        assert_eq!((after.state.as_deref(), after.members_ready.as_deref()), (None, None));
        let types: Vec<&str> = after.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Placed", "Valid"], "nothing the old member reported survives");
    }
}
