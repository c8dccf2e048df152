//! Ledger: placement decisions read the fleet from the hub's watch caches, which lag behind
//! the hub's own writes. Every placement this leader records is kept here until a snapshot
//! of the caches shows it, and counted on top of the snapshot meanwhile, so two intents
//! placed back to back never both take the same room. The accounting is pure; the hub
//! keeps one [`Placer`] per leadership (a replica that loses the lease exits, so a new
//! leader starts with an empty ledger and reads everything from its own caches).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::KubeDirectorMember;
use kube::ResourceExt;

use super::dereference::Fleet;
use super::place::FleetView;

/// How long a snapshot of the caches serves decisions: a batch of intents arriving together
/// is decided from one snapshot (with the ledger on top) instead of copying the fleet each time.
pub const SNAPSHOT_AGE: Duration = Duration::from_millis(500);

/// How long a placement stays in the ledger at most: the caches show a recorded placement
/// within moments; one whose intent was deleted before they did must not count for ever.
pub const PENDING_AT_MOST: Duration = Duration::from_secs(60);

/// One recorded placement the caches may not show yet.
#[derive(Clone, Debug)]
struct Pending {
    /// The intent as recorded (its status names the member).
    intent: KubeDirectorCluster,
    /// When it was recorded.
    at: Instant,
}

/// Placements recorded by this leader that a snapshot does not show yet, by intent.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    pending: BTreeMap<(String, String), Pending>,
}

fn key(intent: &KubeDirectorCluster) -> (String, String) {
    (intent.namespace().unwrap_or_default(), intent.name_any())
}

impl Ledger {
    /// Records `intent` (its status carrying the new placement) as placed at `now`; whether
    /// it replaced an earlier record of the same intent.
    pub fn record(&mut self, intent: KubeDirectorCluster, now: Instant) -> bool {
        self.pending.insert(key(&intent), Pending { intent, at: now }).is_some()
    }

    /// Forgets the placement of `intent` (its write failed: nothing was placed).
    pub fn forget(&mut self, intent: &KubeDirectorCluster) {
        self.pending.remove(&key(intent));
    }

    /// Drops what `snapshot` shows placed (or shows as another object of the same name, or
    /// no longer at all once it had a moment to catch up), and whatever is older than
    /// [`PENDING_AT_MOST`].
    pub fn settle(&mut self, snapshot: &Fleet, now: Instant) {
        let shown: BTreeMap<(String, String), &KubeDirectorCluster> = snapshot.intents().map(|i| (key(i), i)).collect();
        self.pending.retain(|k, p| {
            if now.duration_since(p.at) > PENDING_AT_MOST {
                return false;
            }
            match shown.get(k) {
                Some(i) => {
                    i.metadata.uid == p.intent.metadata.uid
                        && i.status.as_ref().and_then(|s| s.placement.as_ref()).is_none()
                }
                None => true,
            }
        });
    }

    /// The recorded placements not shown yet.
    pub fn pending(&self) -> Vec<KubeDirectorCluster> {
        self.pending.values().map(|p| p.intent.clone()).collect()
    }

    /// How many placements are not shown yet.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether every recorded placement is shown.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The leader's placement state: the current snapshot of the caches and the ledger on top.
#[derive(Default)]
pub struct Placer {
    snapshot: Option<(Instant, FleetView)>,
    /// The snapshot with the ledger on top, kept up to date placement by placement.
    current: Option<FleetView>,
    /// Placements not shown by the snapshot yet (record and forget through the placer).
    ledger: Ledger,
    /// Members as the intent controller's own watch last saw them (it wakes the decisions
    /// a member change concerns, and may be ahead of the caches the snapshot is taken from).
    seen: BTreeMap<String, KubeDirectorMember>,
}

/// Whether `a` is a later version of an object than `b` (resourceVersions of one kind
/// from one API server; an unreadable one counts as later, so the newer event wins).
fn later(a: &KubeDirectorMember, b: &KubeDirectorMember) -> bool {
    let rv = |m: &KubeDirectorMember| m.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok());
    match (rv(a), rv(b)) {
        (Some(a), Some(b)) => a > b,
        _ => true,
    }
}

impl Placer {
    /// The view a decision at `now` reads: the snapshot (taken again from `take` once older
    /// than [`SNAPSHOT_AGE`], the ledger settled against the new one) with the ledger on top.
    pub fn view(&mut self, now: Instant, take: impl FnOnce() -> Fleet) -> FleetView {
        let fresh = self.snapshot.as_ref().is_some_and(|(at, _)| now.duration_since(*at) < SNAPSHOT_AGE);
        if !fresh {
            let mut fleet = take();
            for m in &mut fleet.member_clusters {
                if let Some(seen) = self.seen.get(&m.name_any())
                    && later(seen, m)
                {
                    *m = seen.clone();
                }
            }
            // What the caches have caught up with needs no overlay any more.
            let cached: BTreeMap<String, &KubeDirectorMember> =
                fleet.member_clusters.iter().map(|m| (m.name_any(), m)).collect();
            self.seen.retain(|name, seen| cached.get(name).is_some_and(|m| later(seen, m)));
            self.ledger.settle(&fleet, now);
            self.snapshot = Some((now, FleetView::new(Arc::new(fleet))));
            self.current = None;
        }
        if self.current.is_none() {
            let base = self.snapshot.as_ref().map(|(_, v)| v.clone()).unwrap_or_default();
            self.current = Some(base.with_pending(self.ledger.pending()));
        }
        self.current.clone().unwrap_or_default()
    }

    /// Records a placement (`intent` with its status naming the member) decided at `now`:
    /// every later view counts it until a snapshot shows it. Drop the view the decision read
    /// first, so the next view is updated in place rather than copied.
    pub fn record(&mut self, intent: KubeDirectorCluster, now: Instant) {
        if self.ledger.record(intent.clone(), now) {
            self.current = None;
        } else if let Some(current) = &mut self.current {
            current.add_pending(intent);
        }
    }

    /// Forgets the placement of `intent` (its write failed: nothing was placed).
    pub fn forget(&mut self, intent: &KubeDirectorCluster) {
        self.ledger.forget(intent);
        self.current = None;
    }

    /// How many placements no snapshot shows yet.
    pub fn pending(&self) -> usize {
        self.ledger.len()
    }

    /// A member as the intent controller's watch saw it change: the next decision takes a
    /// new snapshot with it.
    pub fn member_seen(&mut self, member: KubeDirectorMember) {
        self.seen.insert(member.name_any(), member);
        self.snapshot = None;
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intents::fixtures::{at, member_cluster, web_intent};
    use crate::intents::place::{Decision, place};

    fn placed_on(mut intent: KubeDirectorCluster, member: &str) -> KubeDirectorCluster {
        intent.status = Some(kdfed_crds::cluster::KubeDirectorClusterStatus {
            placement: Some(kdfed_crds::cluster::PlacementStatus { member: member.into(), epoch: 1, time: None }),
            ..Default::default()
        });
        intent
    }

    #[test]
    fn a_recorded_placement_stays_until_a_snapshot_shows_it() {
        let t0 = Instant::now();
        let mut ledger = Ledger::default();
        ledger.record(placed_on(web_intent("db", 1, "1"), "east"), t0);
        let lagging = Fleet::new(vec![], vec![web_intent("db", 1, "1")]);
        ledger.settle(&lagging, t0 + Duration::from_secs(1));
        assert_eq!(ledger.len(), 1, "the snapshot still shows db unplaced");
        let not_there_yet = Fleet::default();
        ledger.settle(&not_there_yet, t0 + Duration::from_secs(2));
        assert_eq!(ledger.len(), 1, "a snapshot that lacks db does not show its placement either");
        let caught_up = Fleet::new(vec![], vec![placed_on(web_intent("db", 1, "1"), "east")]);
        ledger.settle(&caught_up, t0 + Duration::from_secs(3));
        assert!(ledger.is_empty());
    }

    #[test]
    fn a_placement_of_an_intent_deleted_or_replaced_meanwhile_stops_counting() {
        let t0 = Instant::now();
        let mut ledger = Ledger::default();
        ledger.record(placed_on(web_intent("db", 1, "1"), "east"), t0);
        let mut replaced = web_intent("db", 1, "1");
        replaced.metadata.uid = Some("another".into());
        ledger.settle(&Fleet::new(vec![], vec![replaced]), t0);
        assert!(ledger.is_empty(), "a new object of that name was never placed by this decision");
        ledger.record(placed_on(web_intent("db", 1, "1"), "east"), t0);
        ledger.settle(&Fleet::default(), t0 + PENDING_AT_MOST + Duration::from_secs(1));
        assert!(ledger.is_empty(), "deleted before the caches showed it");
        ledger.record(placed_on(web_intent("db", 1, "1"), "east"), t0);
        ledger.forget(&web_intent("db", 1, "1"));
        assert!(ledger.is_empty(), "a failed write placed nothing");
    }

    #[test]
    fn back_to_back_placements_from_one_snapshot_never_share_room() {
        // Three members with room for one 2-CPU cluster each, four clusters, and caches that
        // show none of the placements until the snapshot is taken again.
        let members = ["a", "b", "c"].map(|m| member_cluster(m, Some("True"), at(0), "2")).to_vec();
        let intents: Vec<KubeDirectorCluster> = (0..4).map(|i| web_intent(&format!("c{i}"), 1, "2")).collect();
        let lagging = Fleet::new(members.clone(), intents.clone());
        let mut placer = Placer::default();
        let t0 = Instant::now();
        let mut chosen = Vec::new();
        for (i, intent) in intents.iter().enumerate() {
            let now = t0 + Duration::from_millis(10 * i as u64);
            let view = placer.view(now, || lagging.clone());
            match place(intent, &intent.spec, Default::default(), &view, at(1)) {
                Decision::Placed { status, member_cluster, .. } => {
                    let mut recorded = intent.clone();
                    recorded.status = Some(status);
                    drop(view);
                    placer.record(recorded, now);
                    chosen.push(member_cluster);
                }
                Decision::Wait(_) => chosen.push("-".into()),
            }
        }
        assert_eq!(chosen, ["a", "b", "c", "-"]);
        // A later snapshot that still lags keeps counting them; one that shows them clears
        // the ledger without counting anything twice.
        let view = placer.view(t0 + SNAPSHOT_AGE * 2, || lagging.clone());
        assert_eq!(view.member_views().iter().map(|v| v.placed).sum::<usize>(), 3);
        let shown: Vec<KubeDirectorCluster> = intents
            .iter()
            .zip(&chosen)
            .map(|(i, m)| if m == "-" { i.clone() } else { placed_on(i.clone(), m) })
            .collect();
        let caught_up = Fleet::new(members, shown);
        let view = placer.view(t0 + SNAPSHOT_AGE * 4, || caught_up.clone());
        assert_eq!(placer.pending(), 0);
        assert_eq!(view.member_views().iter().map(|v| v.placed).collect::<Vec<_>>(), [1, 1, 1]);
    }
}
