//! The status step: the cluster's conditions computed from the old ones (so transition
//! times survive), the one status write of a pass, its Events, the news for connecting
//! clusters, and when to come back. Also how an invalid spec and a refused apply are
//! reported on the cluster.

use std::time::Duration;

use kdfed_common::ApiError;
use kdfed_common::conditions::{condition, set_condition};
use kdfed_common::reconcile;
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::apply::FIELD_MANAGER;
use super::connections::{self, CONN_UPDATE_COUNTER};
use super::members::{self, PlannedEvent};
use super::reconcile::{Context, Error};

/// Condition type: whether the member's API server took every object the cluster needs.
pub const CONDITION_APPLIED: &str = "Applied";
/// Reason (condition and Warning Event) of an apply the member's API server refused.
pub const REASON_APPLY_FAILED: &str = "ApplyFailed";
/// Condition type: whether the spec can be built as asked.
pub const CONDITION_VALID: &str = "Valid";
/// Condition type: whether this copy is fenced.
pub const CONDITION_FENCED: &str = "Fenced";
/// Longest API server message kept in the `Applied` condition and its Event.
const MAX_APPLY_MESSAGE: usize = 1024;

/// Writes the cluster's whole status (see [`reconcile::write_status`]); its watch event
/// will not wake the director.
pub async fn write(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    cluster: &KubeDirectorCluster,
    status: &KubeDirectorClusterStatus,
) -> Result<KubeDirectorCluster, ApiError> {
    let written = reconcile::write_status(api, cluster, status, FIELD_MANAGER).await?;
    ctx.own_writes.record(&written);
    Ok(written)
}

/// The conditions of a pass that applied everything: `Valid` and `Applied` true, and a
/// fence that was on is recorded as lifted (history, not a current state).
pub fn conditions(old: &KubeDirectorClusterStatus, status: &mut KubeDirectorClusterStatus, generation: Option<i64>) {
    status.conditions = set_condition(&old.conditions, CONDITION_VALID, "True", "Valid", "spec is valid", generation);
    status.conditions = set_condition(
        &status.conditions,
        CONDITION_APPLIED,
        "True",
        "Applied",
        "the member's API server took every object",
        generation,
    );
    if condition(&status.conditions, CONDITION_FENCED).is_some_and(|c| c.status == "True") {
        status.conditions = set_condition(
            &status.conditions,
            CONDITION_FENCED,
            "False",
            "Lifted",
            "the fence was lifted: this copy runs again",
            generation,
        );
    }
}

/// When to reconcile again after a pass that applied everything.
pub fn next_action(written: bool, settled: bool, delivered: bool) -> Action {
    if written {
        // The next step plans from this status (even a settled plan may leave one, e.g. an
        // emptied role to remove); its own watch event no longer wakes the director, so ask
        // for that pass now, as soon as the event would have. A pass that changes nothing
        // does not come back before its timer.
        Action::requeue(Duration::from_millis(50))
    } else if settled && !delivered {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(2))
    }
}

/// Writes `status` if it changed, then records the pass's Events (an `Applied` Event when
/// the last pass had failed to apply) and tells connecting clusters when the cluster just
/// became `configured`. Returns whether the status was written.
pub async fn report(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    cluster: &KubeDirectorCluster,
    old: &KubeDirectorClusterStatus,
    status: &KubeDirectorClusterStatus,
    events: &[PlannedEvent],
) -> Result<bool, Error> {
    let written = status != old;
    if written {
        write(ctx, api, cluster, status).await.map_err(Error::Status)?;
    }
    let was_failing = condition(&old.conditions, CONDITION_APPLIED).is_some_and(|c| c.reason == REASON_APPLY_FAILED);
    if was_failing {
        ctx.recorder.publish(cluster, false, "Applied", "the member's API server took every object again").await;
    }
    for e in events {
        info!(reason = e.reason, "{}", e.message);
        ctx.recorder.publish(cluster, e.warning, e.reason, &e.message).await;
    }
    let configured = Some(members::CLUSTER_CONFIGURED);
    if status.state.as_deref() == configured && old.state.as_deref() != configured {
        announce_configured(ctx, cluster).await;
    }
    Ok(written)
}

/// Records that the spec cannot be built as asked: `Valid=False`, a Warning Event; nothing
/// already running is touched.
pub async fn invalid(
    ctx: &Context,
    cluster: &KubeDirectorCluster,
    api: &Api<KubeDirectorCluster>,
    field: &str,
    message: &str,
) -> Result<(), Error> {
    let old = cluster.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let generation = cluster.metadata.generation;
    status.conditions = set_condition(&old.conditions, CONDITION_VALID, "False", "InvalidSpec", message, generation);
    if status != old {
        write(ctx, api, cluster, &status).await.map_err(Error::Status)?;
        ctx.recorder.publish(cluster, true, "Cluster", &format!("{field}: {message}")).await;
    }
    warn!(field, "{message}");
    Ok(())
}

/// What the `Applied` condition says about a failed apply: what was being done (naming
/// the object) and the API server's own message, cut to [`MAX_APPLY_MESSAGE`].
pub fn apply_failure_message(error: &Error) -> String {
    let message = match error {
        Error::Apply(ApiError { action, source: kube::Error::Api(status) }) => format!("{action}: {}", status.message),
        other => other.to_string(),
    };
    kdfed_common::conditions::capped(message, MAX_APPLY_MESSAGE)
}

/// Records a failed apply on the cluster: `Applied=False, reason ApplyFailed` with the
/// API server's message, and a Warning Event when the message is new (a failure that
/// repeats writes nothing). A failure to record it is only logged: the apply error is
/// what the reconcile returns.
pub async fn apply_failed(
    ctx: &Context,
    cluster: &KubeDirectorCluster,
    api: &Api<KubeDirectorCluster>,
    old: &KubeDirectorClusterStatus,
    error: &Error,
) {
    let message = apply_failure_message(error);
    let mut status = old.clone();
    let generation = cluster.metadata.generation;
    status.conditions =
        set_condition(&old.conditions, CONDITION_APPLIED, "False", REASON_APPLY_FAILED, &message, generation);
    if status == *old {
        return;
    }
    if let Err(e) = write(ctx, api, cluster, &status).await {
        warn!("cannot record the failed apply: {e}");
        return;
    }
    let new_message = condition(&old.conditions, CONDITION_APPLIED)
        .is_none_or(|c| c.reason != REASON_APPLY_FAILED || c.message != message);
    if new_message {
        ctx.recorder.publish(cluster, true, REASON_APPLY_FAILED, &message).await;
    }
}

/// A cluster just became `configured`: bump `connUpdateCounter` on every cluster of its
/// namespace that connects to it, so they pick up its new shape (upstream; upstream looks
/// in every namespace, but connections name clusters of the same namespace).
async fn announce_configured(ctx: &Context, cluster: &KubeDirectorCluster) {
    let ns = cluster.namespace().unwrap_or_else(|| "default".into());
    let name = cluster.name_any();
    let api: Api<DeserializeGuard<KubeDirectorCluster>> = Api::namespaced(ctx.client.clone(), &ns);
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(e) => {
            warn!("cannot list clusters to tell those connected to {name}: {e}");
            return;
        }
    };
    for other in list.items.into_iter().filter_map(|g| g.0.ok()) {
        if !other.spec.connections.as_ref().is_some_and(|k| k.clusters.contains(&name)) {
            continue;
        }
        let other_name = other.name_any();
        ctx.recorder
            .publish(cluster, false, "Cluster", &format!("connected to cluster {{{other_name}}}; updating it"))
            .await;
        ctx.recorder.publish(&other, false, "Cluster", &format!("connected cluster {{{name}}} has changed")).await;
        bump_conn_update_counter(&ctx.client, &ns, other).await;
    }
}

/// Bumps `connUpdateCounter` on `other` (a compare-and-swap, retried a few times on
/// conflicts); a failure is only logged, the periodic pass is the safety net.
async fn bump_conn_update_counter(client: &Client, ns: &str, other: KubeDirectorCluster) {
    let typed: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), ns);
    let other_name = other.name_any();
    let mut current = other;
    for _ in 0..5 {
        let next = connections::next_counter(current.annotations(), CONN_UPDATE_COUNTER);
        let patch = json!({"metadata": {
            "resourceVersion": current.resource_version(),
            "annotations": {CONN_UPDATE_COUNTER: next.to_string()},
        }});
        match typed.patch(&other_name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => match typed.get_opt(&other_name).await {
                Ok(Some(c)) => current = c,
                _ => break,
            },
            Err(e) => {
                warn!("cannot bump {CONN_UPDATE_COUNTER} on {other_name}: {e}");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kdfed_common::conditions::set_condition;

    use super::*;

    #[test]
    fn a_good_pass_is_valid_applied_and_lifts_a_fence() {
        let mut old = KubeDirectorClusterStatus::default();
        old.conditions = set_condition(&old.conditions, CONDITION_FENCED, "True", "PlacementMoved", "moved", Some(1));
        let mut status = old.clone();
        conditions(&old, &mut status, Some(2));
        let summary: Vec<(&str, &str, &str)> =
            status.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str())).collect();
        assert!(summary.contains(&("Valid", "True", "Valid")), "{summary:?}");
        assert!(summary.contains(&("Applied", "True", "Applied")), "{summary:?}");
        assert!(summary.contains(&("Fenced", "False", "Lifted")), "{summary:?}");
        let mut again = status.clone();
        conditions(&status, &mut again, Some(2));
        assert_eq!(again, status, "nothing new: nothing to write");
        let mut unfenced = KubeDirectorClusterStatus::default();
        conditions(&KubeDirectorClusterStatus::default(), &mut unfenced, None);
        assert!(condition(&unfenced.conditions, CONDITION_FENCED).is_none(), "no fence, no history");
    }

    #[test]
    fn a_written_status_comes_back_at_once_a_settled_one_late() {
        assert_eq!(next_action(true, true, false), Action::requeue(Duration::from_millis(50)));
        assert_eq!(next_action(false, true, false), Action::requeue(Duration::from_secs(300)));
        assert_eq!(next_action(false, true, true), Action::requeue(Duration::from_secs(2)));
        assert_eq!(next_action(false, false, false), Action::requeue(Duration::from_secs(2)));
    }

    #[test]
    fn a_refused_apply_names_the_object_and_keeps_the_servers_words() {
        let refused = |message: &str| kube::core::Status::failure(message, "Invalid").with_code(422).boxed();
        let error = Error::Apply(ApiError {
            action: "apply statefulset x".into(),
            source: kube::Error::Api(refused("StatefulSet.apps \"x\" is invalid")),
        });
        assert_eq!(apply_failure_message(&error), "apply statefulset x: StatefulSet.apps \"x\" is invalid");
        let long = Error::Apply(ApiError {
            action: "apply statefulset y".into(),
            source: kube::Error::Api(refused(&"é".repeat(2000))),
        });
        let capped = apply_failure_message(&long);
        assert!(capped.len() <= MAX_APPLY_MESSAGE + '…'.len_utf8() && capped.ends_with('…'), "{}", capped.len());
    }
}
