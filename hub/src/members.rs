//! Member availability: a member is `Available=True` while its spoke renews its Lease
//! within the grace period, `Unknown` after that (or before it ever joined).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kdfed_crds::federation::{KubeDirectorMember, KubeDirectorMemberStatus, MEMBER_LEASE, member_namespace};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use kdfed_common::conditions::{condition, set_condition};

/// Field manager of the hub's writes to member status.
pub const FIELD_MANAGER: &str = "kdfed-hub";

/// A member's heartbeat as the hub saw it: the Lease's `renewTime` (written on the
/// member's clock, so only ever compared with itself) and when the hub first saw that value,
/// on the hub's clock. Availability and failover are timed from `seen`, so a member whose
/// wall clock is off neither looks dead while it renews nor alive while it does not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seen {
    /// The Lease's `renewTime` (member clock).
    pub renew_time: jiff::Timestamp,
    /// When the hub first read that `renewTime` (hub clock).
    pub at: jiff::Timestamp,
}

/// Folds one read of a member's Lease (`renewed`, at hub time `now`) into what the hub saw
/// before. A value seen for the first time since this hub started counts from `now`, unless
/// the member was already marked as having missed its heartbeat (`old_available`): then it
/// counts from when that previous decision says the hub last saw a renewal, so a hub
/// restart neither revives a silent member nor delays or hastens its failover.
pub fn observe(
    previous: Option<&Seen>,
    renewed: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    old_available: Option<&Condition>,
    grace: Duration,
) -> Option<Seen> {
    let renew_time = renewed?;
    match previous {
        Some(p) if p.renew_time == renew_time => Some(*p),
        Some(_) => Some(Seen { renew_time, at: now }),
        None => {
            let missed = old_available.filter(|c| c.status != "True" && c.reason == "HeartbeatMissed");
            let at = missed
                .and_then(|c| c.last_transition_time.0.checked_sub(jiff::SignedDuration::try_from(grace).ok()?).ok())
                .map_or(now, |t| t.min(now));
            Some(Seen { renew_time, at })
        }
    }
}

/// The availability a member's last renewal implies (`renewed`: when the hub saw it). The
/// messages name no age: every cluster placed on the member shows this message, and one
/// that changed with each renewal rewrote them all whenever they were folded (after a hub
/// restart, every cluster's status, with nothing changed). When the heartbeat was missed
/// is the condition's `lastTransitionTime`.
pub fn availability(
    renewed: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    grace: Duration,
) -> (&'static str, &'static str, String) {
    match renewed {
        None => ("Unknown", "NotJoined", "the member's spoke has not renewed its heartbeat yet".to_string()),
        Some(t) => {
            let age = now.duration_since(t).as_secs_f64().max(0.0);
            if age <= grace.as_secs_f64() {
                ("True", "HeartbeatRenewed", format!("heartbeat renewed within its grace of {}s", grace.as_secs()))
            } else {
                ("Unknown", "HeartbeatMissed", format!("no heartbeat renewal within its grace of {}s", grace.as_secs()))
            }
        }
    }
}

/// The heartbeat grace of `member`: its own `spec.heartbeatGraceSeconds`, else the hub's.
pub fn member_grace(member: &KubeDirectorMember, hub_default: Duration) -> Duration {
    member
        .spec
        .heartbeat_grace_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(hub_default, Duration::from_secs)
}

/// When a member's Lease was last renewed.
pub async fn last_renewal(client: &Client, member: &str) -> Result<Option<jiff::Timestamp>, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &member_namespace(member));
    Ok(leases.get_opt(MEMBER_LEASE).await?.and_then(|l| l.spec).and_then(|s| s.renew_time).map(|t| t.0))
}

/// Each member's heartbeat as the availability loop last folded it, shared with the
/// intent controller.
#[derive(Clone, Debug, Default)]
pub struct Heartbeats(std::sync::Arc<std::sync::Mutex<BTreeMap<String, Seen>>>);

impl Heartbeats {
    /// The `renewTime` of `member`'s Lease that the last availability pass judged by.
    pub fn renew_time(&self, member: &str) -> Option<jiff::Timestamp> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(member).map(|s| s.renew_time)
    }

    fn set(&self, seen: &BTreeMap<String, Seen>) {
        seen.clone_into(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// Updates every member's `Available` condition and placed-cluster count, every `period`,
/// with an Event on the member when its availability changes; what it judged by goes into
/// `heartbeats`.
pub async fn run(
    client: Client,
    cache: std::sync::Arc<crate::cache::FleetCache>,
    grace: Duration,
    period: Duration,
    heartbeats: Heartbeats,
) {
    let recorder = kdfed_common::events::Recorder::new(client.clone(), "kdfed-hub");
    let mut seen = BTreeMap::new();
    cache.ready().await;
    loop {
        if let Err(e) = sync_once(&client, &cache, &recorder, grace, &mut seen).await {
            warn!("member availability: {e}");
        }
        heartbeats.set(&seen);
        tokio::time::sleep(period).await;
    }
}

async fn sync_once(
    client: &Client,
    cache: &crate::cache::FleetCache,
    recorder: &kdfed_common::events::Recorder,
    grace: Duration,
    seen: &mut BTreeMap<String, Seen>,
) -> Result<(), kube::Error> {
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    let mut placed: BTreeMap<String, i64> = BTreeMap::new();
    for guard in cache.intents.state() {
        if let Some(p) = guard.0.as_ref().ok().and_then(|i| i.status.as_ref()).and_then(|s| s.placement.as_ref()) {
            *placed.entry(p.member.clone()).or_default() += 1;
        }
    }
    let all: Vec<KubeDirectorMember> = cache.members.state().iter().map(|m| (**m).clone()).collect();
    seen.retain(|name, _| all.iter().any(|m| &m.name_any() == name));
    for member in all {
        let name = member.name_any();
        let renewed = cache.last_renewal(&name);
        let now = jiff::Timestamp::now();
        let old = member.status.clone().unwrap_or_default();
        let grace = member_grace(&member, grace);
        let observed = observe(seen.get(&name), renewed, now, condition(&old.conditions, "Available"), grace);
        match observed {
            Some(o) => seen.insert(name.clone(), o),
            None => seen.remove(&name),
        };
        let (status, reason, message) = availability(observed.map(|o| o.at), now, grace);
        let conditions =
            set_condition(&old.conditions, "Available", status, reason, &message, member.metadata.generation);
        let count = placed.get(&name).copied().unwrap_or(0);
        let changed_status = old.conditions.iter().find(|c| c.type_ == "Available").map(|c| (&c.status, &c.reason))
            != conditions.iter().find(|c| c.type_ == "Available").map(|c| (&c.status, &c.reason));
        if changed_status || old.clusters_placed != Some(count) {
            if changed_status {
                info!(member = %name, status, reason, "member availability changed");
                // Becoming unavailable after having been available is what operators must see.
                let was_available = old.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True");
                let (warning, event_reason) = match (status, was_available) {
                    ("True", _) => (false, "MemberAvailable"),
                    (_, true) => (true, "MemberUnavailable"),
                    _ => (false, reason),
                };
                recorder.publish(&member, warning, event_reason, &message).await;
            }
            // Only the fields this loop owns: the spoke and the registry own the rest.
            let status = KubeDirectorMemberStatus {
                conditions: conditions.iter().filter(|c| c.type_ == "Available").cloned().collect(),
                clusters_placed: Some(count),
                ..KubeDirectorMemberStatus::default()
            };
            let patch = json!({"apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember", "status": status});
            members.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn available(status: &str, reason: &str, since: jiff::Timestamp) -> Condition {
        Condition {
            type_: "Available".into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(since),
            observed_generation: None,
        }
    }

    #[test]
    fn availability_follows_the_heartbeat() {
        let now = jiff::Timestamp::from_second(1_000_000).expect("time");
        let grace = Duration::from_secs(30);
        assert_eq!(availability(None, now, grace).1, "NotJoined");
        let fresh = now.checked_sub(jiff::SignedDuration::from_secs(10)).expect("time");
        let renewed = availability(Some(fresh), now, grace);
        assert_eq!(renewed.0, "True");
        let later = now.checked_add(jiff::SignedDuration::from_secs(9)).expect("time");
        assert_eq!(
            availability(Some(fresh), later, grace),
            renewed,
            "the same message while it holds: nothing to rewrite"
        );
        let stale = now.checked_sub(jiff::SignedDuration::from_secs(31)).expect("time");
        let (status, reason, message) = availability(Some(stale), now, grace);
        assert_eq!((status, reason), ("Unknown", "HeartbeatMissed"));
        assert!(message.contains("grace of 30s"), "{message}");
    }

    #[test]
    fn the_hub_times_heartbeats_on_its_own_clock_whatever_the_member_s_clock_says() {
        let grace = Duration::from_secs(5);
        let hub_start = jiff::Timestamp::from_second(1_000_000).expect("time");
        let at = |s: i64| hub_start.checked_add(jiff::SignedDuration::from_secs(s)).expect("time");
        for skew in [-600, -30, 0, 30, 600] {
            // The member renews every second, writing its own (skewed) clock into renewTime,
            // until a partition at hub time 100; the hub reads the Lease every 2 s.
            let mut seen: Option<Seen> = None;
            let mut available: Option<Condition> = None;
            let mut unavailable_since = None;
            for t in (0..200).step_by(2) {
                let renewed = at(t.min(100) + skew);
                seen = observe(seen.as_ref(), Some(renewed), at(t), available.as_ref(), grace);
                let (status, reason, message) = availability(seen.map(|s| s.at), at(t), grace);
                if t <= 100 {
                    assert_eq!(status, "True", "skew {skew}s at {t}: {message}");
                }
                if status != "True" && unavailable_since.is_none() {
                    unavailable_since = Some(t);
                }
                available = Some(self::available(status, reason, at(t)));
            }
            // Unavailable one grace after the last renewal the hub saw, never sooner.
            assert_eq!(unavailable_since, Some(106), "skew {skew}s");
        }
    }

    #[test]
    fn a_restarted_hub_neither_revives_a_silent_member_nor_forgets_when_it_went_silent() {
        let grace = Duration::from_secs(5);
        let now = jiff::Timestamp::from_second(1_000_000).expect("time");
        let renewed = Some(jiff::Timestamp::from_second(42).expect("member clock"));
        let ago = |s: i64| now.checked_sub(jiff::SignedDuration::from_secs(s)).expect("time");
        let missed = available("Unknown", "HeartbeatMissed", ago(60));
        let first = observe(None, renewed, now, Some(&missed), grace).expect("seen");
        assert_eq!(first.at, ago(65), "last seen a grace before it was marked unavailable");
        assert_eq!(availability(Some(first.at), now, grace).0, "Unknown");
        // The member renews again: available from that moment.
        let later = now.checked_add(jiff::SignedDuration::from_secs(2)).expect("time");
        let next = jiff::Timestamp::from_second(43).ok();
        let again = observe(Some(&first), next, later, Some(&missed), grace).expect("seen");
        assert_eq!(again.at, later);
        assert_eq!(availability(Some(again.at), later, grace).0, "True");
        // A member that was available counts from the first read, as does a new one.
        let ok = available("True", "HeartbeatRenewed", ago(60));
        assert_eq!(observe(None, renewed, now, Some(&ok), grace).map(|s| s.at), Some(now));
        assert_eq!(observe(None, renewed, now, None, grace).map(|s| s.at), Some(now));
        assert_eq!(observe(Some(&first), None, now, None, grace), None);
    }

    #[test]
    fn a_member_s_own_grace_wins_over_the_hub_s() {
        let hub = Duration::from_secs(30);
        let mut member = KubeDirectorMember::new("edge", Default::default());
        assert_eq!(member_grace(&member, hub), hub);
        member.spec.heartbeat_grace_seconds = Some(120);
        assert_eq!(member_grace(&member, hub), Duration::from_secs(120));
        let now = jiff::Timestamp::from_second(1_000_000).expect("time");
        let a_minute_ago = now.checked_sub(jiff::SignedDuration::from_secs(60)).expect("time");
        assert_eq!(availability(Some(a_minute_ago), now, member_grace(&member, hub)).0, "True");
        assert_eq!(availability(Some(a_minute_ago), now, hub).0, "Unknown");
    }
}
