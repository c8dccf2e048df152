//! Member availability: a member is `Available=True` while its spoke renews its Lease
//! within the grace period, `Unknown` after that (or before it ever joined).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{KubeDirectorMember, MEMBER_LEASE, member_namespace};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use kdfed_common::conditions::set_condition;

/// Field manager of the hub's writes to member status.
pub const FIELD_MANAGER: &str = "kdfed-hub";

/// The availability a member's last renewal implies.
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
                ("True", "HeartbeatRenewed", format!("heartbeat renewed {age:.0}s ago"))
            } else {
                ("Unknown", "HeartbeatMissed", format!("no heartbeat for {age:.0}s (grace {}s)", grace.as_secs()))
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

/// Updates every member's `Available` condition and placed-cluster count, every `period`,
/// with an Event on the member when its availability changes.
pub async fn run(client: Client, grace: Duration, period: Duration) {
    let recorder = kdfed_common::events::Recorder::new(client.clone(), "kdfed-hub");
    loop {
        if let Err(e) = sync_once(&client, &recorder, grace).await {
            warn!("member availability: {e}");
        }
        tokio::time::sleep(period).await;
    }
}

async fn sync_once(
    client: &Client,
    recorder: &kdfed_common::events::Recorder,
    grace: Duration,
) -> Result<(), kube::Error> {
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    let intents: Api<KubeDirectorCluster> = Api::all(client.clone());
    let mut placed: BTreeMap<String, i64> = BTreeMap::new();
    for intent in intents.list(&Default::default()).await?.items {
        if let Some(p) = intent.status.and_then(|s| s.placement) {
            *placed.entry(p.member).or_default() += 1;
        }
    }
    let now = jiff::Timestamp::now();
    for member in members.list(&Default::default()).await?.items {
        let name = member.name_any();
        let renewed = last_renewal(client, &name).await?;
        let (status, reason, message) = availability(renewed, now, member_grace(&member, grace));
        let old = member.status.clone().unwrap_or_default();
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
            let available: Vec<&Condition> = conditions.iter().filter(|c| c.type_ == "Available").collect();
            let patch = json!({
                "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember",
                "status": {"conditions": available, "clustersPlaced": count}
            });
            members.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch)).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_follows_the_heartbeat() {
        let now = jiff::Timestamp::from_second(1_000_000).expect("time");
        let grace = Duration::from_secs(30);
        assert_eq!(availability(None, now, grace).1, "NotJoined");
        let fresh = now.checked_sub(jiff::SignedDuration::from_secs(10)).expect("time");
        assert_eq!(availability(Some(fresh), now, grace).0, "True");
        let stale = now.checked_sub(jiff::SignedDuration::from_secs(31)).expect("time");
        let (status, reason, message) = availability(Some(stale), now, grace);
        assert_eq!((status, reason), ("Unknown", "HeartbeatMissed"));
        assert!(message.contains("31s"), "{message}");
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
