//! Cleanup: a deleted intent's Work is deleted, the member cluster's cleanup awaited (the
//! spoke releases the Work's finalizer once its copy is gone), then the intent let go. An
//! admin's orphan annotation lets it go without that cleanup.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kdfed_common::conditions::{condition, set_condition};
use kdfed_common::{Doing, reconcile};
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus};
use kdfed_crds::federation::{
    ANNOTATION_ORPHAN, FINALIZER_INTENT, KubeDirectorMember, KubeDirectorWork, member_namespace, work_name,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use tracing::info;

use super::{Context, Error, Event, apply, dereference};

/// How often a deleted intent looks again while it waits for its member's cleanup.
pub const CLEANUP_RECHECK: Duration = Duration::from_secs(2);

/// Deletion: delete the Work, wait for the member cluster to release it, then let the
/// intent go.
pub async fn delete(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    intent: &KubeDirectorCluster,
) -> Result<Action, Error> {
    if !intent.finalizers().iter().any(|f| f == FINALIZER_INTENT) {
        return Ok(Action::await_change());
    }
    let ns = intent.namespace().unwrap_or_default();
    let old = intent.status.clone().unwrap_or_default();
    if let Some(p) = &old.placement {
        let member_ns = member_namespace(&p.member);
        let works: Api<KubeDirectorWork> = Api::namespaced(ctx.client.clone(), &member_ns);
        let wname = work_name(&ns, &intent.name_any());
        if let Some(work) = dereference::work(&ctx.client, &p.member, &wname).await? {
            if work.metadata.deletion_timestamp.is_none() {
                works.delete(&wname, &DeleteParams::background()).await.doing("delete work").map_err(Error::Cleanup)?;
                apply::delete_work_secret(&ctx.client, &member_ns, &wname).await.map_err(Error::Cleanup)?;
            }
            let member_cluster = dereference::member_cluster(&ctx.client, &p.member).await?;
            if orphaned(intent) {
                apply::release_finalizer(&works, &wname, "orphan work").await.map_err(Error::Cleanup)?;
                let message =
                    format!("released without cleanup on member {} (annotation {ANNOTATION_ORPHAN})", p.member);
                ctx.publish(intent, true, "Orphaned", &message).await;
            } else {
                let (status, event) = waiting(&old, &p.member, member_cluster.as_ref(), intent.metadata.generation);
                if status != old {
                    apply::status(api, intent, &status).await.map_err(Error::Status)?;
                    ctx.publish(intent, event.warning, &event.reason, &event.message).await;
                }
                return Ok(Action::requeue(CLEANUP_RECHECK));
            }
        }
    }
    reconcile::remove_finalizer(api, intent, FINALIZER_INTENT).await.map_err(Error::Cleanup)?;
    info!("intent released");
    Ok(Action::await_change())
}

/// Whether an admin let the intent go without its member's cleanup.
pub fn orphaned(intent: &KubeDirectorCluster) -> bool {
    intent.annotations().get(ANNOTATION_ORPHAN).is_some_and(|v| v == "true")
}

/// The status of an intent waiting for `member`'s cleanup (`Deleting=True`, and never
/// `Ready` on data the member cluster can no longer confirm), with its Event.
pub fn waiting(
    old: &KubeDirectorClusterStatus,
    member: &str,
    member_cluster: Option<&KubeDirectorMember>,
    generation: Option<i64>,
) -> (KubeDirectorClusterStatus, Event) {
    let exists = member_cluster.is_some();
    let message = if exists {
        format!("waiting for member {member} to clean up")
    } else {
        format!(
            "member {member} is gone; its cleanup cannot be confirmed. Set the annotation {ANNOTATION_ORPHAN}=true to delete anyway"
        )
    };
    let mut status = old.clone();
    let reason = if exists { "WaitingForMember" } else { "MemberGone" };
    status.conditions = set_condition(&status.conditions, "Deleting", "True", reason, &message, generation);
    // While it waits, the cluster still runs there.
    let available = member_cluster.and_then(|m| m.status.as_ref()).and_then(|s| condition(&s.conditions, "Available"));
    status.conditions = unavailable_while_deleting(&status.conditions, member, exists, available, generation);
    (status, Event::new(!exists, "Deleting", message))
}

/// The conditions of a cluster waiting for its member's cleanup: while the member is not
/// `Available=True` (or is gone), `MemberAvailable` says so and `Ready` turns `Unknown`, as for
/// a cluster that is not being deleted (found by the chaos suite: a cluster deleted while its
/// spoke was dead stayed `Ready=True` until the spoke returned).
pub fn unavailable_while_deleting(
    conditions: &[Condition],
    member: &str,
    member_exists: bool,
    available: Option<&Condition>,
    generation: Option<i64>,
) -> Vec<Condition> {
    let (status, reason, message) = match (member_exists, available) {
        (false, _) => ("False", "MemberGone", format!("member {member} is not registered")),
        (true, Some(c)) if c.status == "True" => return conditions.to_vec(),
        (true, Some(c)) => (c.status.as_str(), c.reason.as_str(), format!("member {member}: {}", c.message)),
        (true, None) => ("Unknown", "NotJoined", format!("member {member} has not joined yet")),
    };
    let conditions = set_condition(conditions, "MemberAvailable", status, reason, &message, generation);
    let unknown = format!("member {member} is unavailable; waiting for it to clean up");
    set_condition(&conditions, "Ready", "Unknown", "MemberUnavailable", &unknown, generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intents::fixtures::{at, intent, member_cluster};

    #[test]
    fn a_cluster_waiting_for_a_dead_member_s_cleanup_is_not_shown_ready() {
        let ready = set_condition(&[], "Ready", "True", "Configured", "every member is configured", Some(1));
        let ready = set_condition(&ready, "MemberAvailable", "True", "HeartbeatRenewed", "", Some(1));
        let lost = set_condition(&[], "Available", "Unknown", "HeartbeatMissed", "no heartbeat for 9s", None);
        let after = unavailable_while_deleting(&ready, "east", true, lost.first(), Some(1));
        let status = |t: &str| condition(&after, t).map(|c| (c.status.clone(), c.reason.clone()));
        assert_eq!(status("Ready"), Some(("Unknown".into(), "MemberUnavailable".into())));
        assert_eq!(status("MemberAvailable"), Some(("Unknown".into(), "HeartbeatMissed".into())));
        let fine = set_condition(&[], "Available", "True", "HeartbeatRenewed", "", None);
        assert_eq!(unavailable_while_deleting(&ready, "east", true, fine.first(), Some(1)), ready, "member fine");
        let gone = unavailable_while_deleting(&ready, "east", false, None, Some(1));
        assert_eq!(condition(&gone, "Ready").map(|c| c.status.as_str()), Some("Unknown"));
        assert_eq!(condition(&gone, "MemberAvailable").map(|c| c.reason.as_str()), Some("MemberGone"));
    }

    #[test]
    fn a_deleted_cluster_says_whose_cleanup_it_waits_for() {
        let old = KubeDirectorClusterStatus::default();
        let east = member_cluster("east", Some("True"), at(0), "4");
        let (status, event) = waiting(&old, "east", Some(&east), Some(3));
        let deleting = condition(&status.conditions, "Deleting").expect("deleting");
        assert_eq!((deleting.status.as_str(), deleting.reason.as_str()), ("True", "WaitingForMember"));
        assert_eq!(event, Event::new(false, "Deleting", "waiting for member east to clean up"));
        assert!(condition(&status.conditions, "Ready").is_none(), "an available member changes nothing else");

        let (gone, event) = waiting(&old, "east", None, Some(3));
        assert_eq!(condition(&gone.conditions, "Deleting").map(|c| c.reason.as_str()), Some("MemberGone"));
        assert!(event.warning && event.message.contains("=true to delete anyway"), "{event:?}");
        assert_eq!(condition(&gone.conditions, "Ready").map(|c| c.status.as_str()), Some("Unknown"));
    }

    #[test]
    fn only_the_orphan_annotation_set_to_true_skips_the_member_s_cleanup() {
        let mut db = intent("db", Some("east"), &[]);
        assert!(!orphaned(&db));
        db.metadata.annotations = Some([(ANNOTATION_ORPHAN.to_string(), "yes".to_string())].into());
        assert!(!orphaned(&db));
        db.metadata.annotations = Some([(ANNOTATION_ORPHAN.to_string(), "true".to_string())].into());
        assert!(orphaned(&db));
    }
}
