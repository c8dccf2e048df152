//! The intent controller: places each user `KubeDirectorCluster` on the hub onto one
//! member, writes its `KubeDirectorWork` into the member's namespace, folds the member's
//! report back into the cluster's status, and on deletion waits for the member's cleanup.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kdfed_common::Doing;
use kdfed_common::conditions::{condition, set_condition};
use kdfed_common::reconcile;
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterSpec, KubeDirectorClusterStatus, PlacementStatus};
use kdfed_crds::federation::{
    ANNOTATION_ORPHAN, FINALIZER_INTENT, FINALIZER_WORK, KubeDirectorMember, KubeDirectorWork, KubeDirectorWorkStatus,
    WORK_SECRET_DATA_KEY, WORK_SECRET_KEYS_KEY, WorkSecret, WorkSecretData, member_namespace, work_name,
};
use kdfed_crds::{defaults, validate};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::placement::{self, IntentView, MemberView, Resources};

/// Field manager of the hub's writes to intents and Works.
pub const FIELD_MANAGER: &str = "kdfed-hub";
/// Label on Works: the origin's namespace.
pub const LABEL_ORIGIN_NAMESPACE: &str = "federation.kubedirector.hpe.com/origin-namespace";
/// Label on Works: the origin's name.
pub const LABEL_ORIGIN_NAME: &str = "federation.kubedirector.hpe.com/origin-name";

/// How often an unschedulable cluster looks again by itself; member changes wake it at once.
pub const UNSCHEDULABLE_RECHECK: Duration = Duration::from_secs(300);

/// Errors of one reconcile (retried with backoff): the API call and what it was for.
pub type Error = kdfed_common::ApiError;

/// Shared state of the intent controller.
pub struct Context {
    /// Hub client.
    pub client: Client,
    /// Namespace of the system catalog.
    pub system_namespace: String,
    /// Heartbeat grace before a member is unavailable.
    pub grace: Duration,
    /// Extra wait of a failover beyond the grace and `afterSeconds` (clock skew).
    pub failover_margin: Duration,
    /// Event recorder.
    pub recorder: kdfed_common::events::Recorder,
    /// Metrics.
    pub metrics: Arc<crate::metrics::HubMetrics>,
}

/// Runs the intent controller until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let intents: Api<DeserializeGuard<KubeDirectorCluster>> = Api::all(client.clone());
    let works: Api<KubeDirectorWork> = Api::all(client.clone());
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::all(client.clone());
    let controller = Controller::new(intents, watcher::Config::default());
    let store = controller.store();
    // A connected ConfigMap or Secret (typed with upstream's label) changed: the clusters in
    // its namespace that connect to it get a fresh Work, so members hear --reconnect promptly.
    let connecting = |store: kube::runtime::reflector::Store<DeserializeGuard<KubeDirectorCluster>>,
                      configmap: bool| {
        move |ns: Option<String>, name: String| {
            store
                .state()
                .into_iter()
                .filter(|i| {
                    i.0.as_ref().is_ok_and(|c| {
                        c.namespace() == ns
                            && c.spec.connections.as_ref().is_some_and(|k| {
                                if configmap { k.configmaps.contains(&name) } else { k.secrets.contains(&name) }
                            })
                    })
                })
                .map(|i| ObjectRef::from_obj(&*i))
                .collect::<Vec<_>>()
        }
    };
    let by_configmap = connecting(store.clone(), true);
    let by_secret = connecting(store.clone(), false);
    controller
        .watches(works, watcher::Config::default().labels(LABEL_ORIGIN_NAME), |work: KubeDirectorWork| {
            Some(ObjectRef::new(&work.spec.origin.name).within(&work.spec.origin.namespace))
        })
        .watches(configmaps, watcher::Config::default().labels("kubedirector.hpe.com/cmType"), move |cm: ConfigMap| {
            by_configmap(cm.namespace(), cm.name_any())
        })
        .watches(secrets, watcher::Config::default().labels("kubedirector.hpe.com/secretType"), move |s: Secret| {
            by_secret(s.namespace(), s.name_any())
        })
        .watches(members, watcher::Config::default(), move |member: KubeDirectorMember| {
            // Any member change (joined, capacity, availability) may make unplaced clusters
            // fit; clusters placed on it whose status shows another availability are folded
            // again now, not at their next periodic pass.
            store
                .state()
                .into_iter()
                .filter(|i| {
                    i.0.as_ref().is_ok_and(|c| {
                        c.status.as_ref().and_then(|s| s.placement.as_ref()).is_none()
                            || availability_outdated(c, &member)
                    })
                })
                .map(|i| ObjectRef::from_obj(&*i))
                .collect::<Vec<_>>()
        })
        .trigger_backoff(reconcile::TriggerBackoff::default())
        .shutdown_on_signal()
        .run(timed_reconcile, reconcile::retry, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                reconcile::log_run_error("intents", &e);
            }
        })
        .await;
}

/// Whether a cluster placed on `member` shows another availability of it than the member's
/// `Available` condition has now (its heartbeat stopped or came back since the cluster's
/// status was written). Without this, `Ready=True` would stay on a cluster until its next
/// periodic pass (30 s) although its member's heartbeat is gone.
pub fn availability_outdated(intent: &KubeDirectorCluster, member: &KubeDirectorMember) -> bool {
    let status = intent.status.as_ref();
    if status.and_then(|s| s.placement.as_ref()).is_none_or(|p| p.member != member.name_any()) {
        return false;
    }
    let now = member
        .status
        .as_ref()
        .and_then(|s| condition(&s.conditions, "Available"))
        .map_or("Unknown", |c| c.status.as_str());
    let shown = status.and_then(|s| condition(&s.conditions, "MemberAvailable")).map(|c| c.status.as_str());
    shown != Some(now)
}

/// Writes the intent's whole status (see [`reconcile::apply_status`]).
async fn write_status(
    api: &Api<KubeDirectorCluster>,
    intent: &KubeDirectorCluster,
    status: &KubeDirectorClusterStatus,
) -> Result<(), Error> {
    reconcile::apply_status(api, intent, status, FIELD_MANAGER).await
}

async fn timed_reconcile(
    guard: Arc<DeserializeGuard<KubeDirectorCluster>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile(guard, ctx.clone()).await;
    ctx.metrics.reconciles.observe("placement", started, result.is_err());
    result
}

fn seconds_since_creation(intent: &KubeDirectorCluster) -> Option<f64> {
    let created = intent.metadata.creation_timestamp.as_ref()?.0;
    Some(jiff::Timestamp::now().duration_since(created).as_secs_f64().max(0.0))
}

async fn reconcile(guard: Arc<DeserializeGuard<KubeDirectorCluster>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some((api, intent)) = reconcile::latest(&guard, &ctx.client, &ctx.recorder, "Invalid").await? else {
        return Ok(Action::await_change());
    };
    let ns = intent.namespace().unwrap_or_else(|| "default".into());
    let name = intent.name_any();
    // kube-runtime already wraps each reconcile in a span naming the object; a span
    // entered here would be held across awaits and leak into other tasks.

    if intent.metadata.deletion_timestamp.is_some() {
        return delete(&ctx, &api, &intent).await;
    }
    if reconcile::add_finalizer(&api, &intent, FINALIZER_INTENT).await? {
        return Ok(Action::requeue(Duration::from_millis(50)));
    }
    let old = intent.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let generation = intent.metadata.generation;

    // Catalog and validation.
    let found = kdfed_common::catalog::find_app(
        &ctx.client,
        &ns,
        &ctx.system_namespace,
        &intent.spec.app,
        intent.spec.app_catalog.as_deref(),
    )
    .await
    .doing("read app")?;
    let Some((app, catalog)) = found else {
        let message = format!("Invalid app({}). This app resource ID has not been registered.", intent.spec.app);
        status.conditions = set_condition(&status.conditions, "Valid", "False", "AppNotFound", &message, generation);
        if status != old {
            write_status(&api, &intent, &status).await?;
            ctx.recorder.publish(&intent, true, "Invalid", &format!("spec.app: {message}")).await;
        }
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let mut app_spec = app.spec.clone();
    defaults::app(&mut app_spec);
    let mut spec = intent.spec.clone();
    defaults::cluster(&mut spec, &app_spec, None);
    spec.app_catalog = Some("local".to_string());
    if let Err(errors) = validate::app(&app_spec).and_then(|()| validate::cluster(&spec, &intent.spec.app, &app_spec)) {
        status.conditions =
            set_condition(&status.conditions, "Valid", "False", "InvalidSpec", &errors.to_string(), generation);
        if status != old {
            write_status(&api, &intent, &status).await?;
            ctx.recorder.publish(&intent, true, "Invalid", &errors.to_string()).await;
        }
        return Ok(Action::await_change());
    }
    status.conditions = set_condition(
        &status.conditions,
        "Valid",
        "True",
        "Valid",
        &format!("app found in the {catalog} catalog"),
        generation,
    );

    // Placement: sticky once decided.
    let members: Api<KubeDirectorMember> = Api::all(ctx.client.clone());
    let placement = match status.placement.clone() {
        Some(p) => p,
        None => {
            let all_members = members.list(&Default::default()).await.doing("list members")?.items;
            let intents = api_all(&ctx.client).list(&Default::default()).await.doing("list clusters")?.items;
            let views = member_views(&all_members, &intents);
            let mut view = IntentView::of(&spec);
            match connected_member(&intents, &ns, &name, &spec) {
                Ok(member) => view.colocate = member,
                Err(message) => {
                    status.conditions = set_condition(
                        &status.conditions,
                        "Placed",
                        "False",
                        "WaitingForConnections",
                        &message,
                        generation,
                    );
                    if status != old {
                        write_status(&api, &intent, &status).await?;
                        ctx.recorder.publish(&intent, false, "WaitingForConnections", &message).await;
                    }
                    return Ok(Action::requeue(Duration::from_secs(5)));
                }
            }
            match placement::schedule(&view, &views) {
                Ok(m) => {
                    let p =
                        PlacementStatus { member: m.name.clone(), epoch: 1, time: Some(Time(jiff::Timestamp::now())) };
                    status.placement = Some(p.clone());
                    let message = format!("placed on member {} (epoch 1)", m.name);
                    status.conditions =
                        set_condition(&status.conditions, "Placed", "True", "Scheduled", &message, generation);
                    // Record the decision before acting on it, so a restart never places twice.
                    write_status(&api, &intent, &status).await?;
                    if let Some(s) = seconds_since_creation(&intent) {
                        ctx.metrics.placement_latency.observe(s);
                    }
                    info!(member = %m.name, "placed");
                    ctx.recorder.publish(&intent, false, "Placed", &message).await;
                    return Ok(Action::requeue(Duration::from_millis(50)));
                }
                Err(why) => {
                    status.conditions = set_condition(
                        &status.conditions,
                        "Placed",
                        "False",
                        "Unschedulable",
                        &why.to_string(),
                        generation,
                    );
                    if status != old {
                        write_status(&api, &intent, &status).await?;
                        ctx.recorder.publish(&intent, true, "Unschedulable", &why.to_string()).await;
                    }
                    // Waiting costs nothing: every member change (joined, cordoned,
                    // capacity, availability) wakes unplaced clusters through the member
                    // watch; this is only a backstop.
                    return Ok(Action::requeue(UNSCHEDULABLE_RECHECK));
                }
            }
        }
    };

    // Failover (opt-in): a member unavailable for longer than allowed loses the cluster.
    let member = members.get_opt(&placement.member).await.doing("read member")?;
    // Unavailable since: the member's own Available condition, or (member gone) when this
    // cluster last saw it available.
    let unavailable_since = match &member {
        Some(m) => m
            .status
            .as_ref()
            .and_then(|s| condition(&s.conditions, "Available"))
            .filter(|c| c.status != "True")
            .map(|c| c.last_transition_time.0),
        None => condition(&old.conditions, "MemberAvailable")
            .filter(|c| c.status != "True")
            .map(|c| c.last_transition_time.0),
    };
    if let Some(after) = intent.spec.placement.as_ref().and_then(|p| p.failover_after())
        && let Some(since) = unavailable_since
        && may_fail_over(since, jiff::Timestamp::now(), after, ctx.failover_margin)
    {
        return fail_over(&ctx, &api, &intent, status, &placement, after, &spec).await;
    }

    // The Work: a frozen snapshot of everything the member needs.
    let member_ns = member_namespace(&placement.member);
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.client.clone(), &member_ns);
    let wname = work_name(&ns, &name);
    let existing = works.get_opt(&wname).await.doing("read work")?;
    if member.is_some() && existing.as_ref().is_none_or(|w| w.metadata.deletion_timestamp.is_none()) {
        let (secrets, mut material) = referenced_secrets(&ctx.client, &ns, &spec).await?;
        let config_maps = connected_configmaps(&ctx.client, &ns, &spec).await?;
        // Secret keys are encrypted with the hub's master key; the member has its own. Their
        // values travel, with the referenced Secrets' data, in a Secret beside the Work
        // (readable only by that member), never in the Work; the member seals them again
        // under its own key.
        let mut spec = spec.clone();
        if spec.roles.iter().any(|r| !r.secret_keys.is_empty()) {
            let master = if spec.roles.iter().any(|r| r.secret_keys.iter().any(|k| k.encrypted_value.is_some())) {
                kdfed_common::secretkeys::master_key(&ctx.client, &ctx.system_namespace).await?
            } else {
                None
            };
            for role in &spec.roles {
                let (values, unreadable) = kdfed_common::secretkeys::plain_values(&role.secret_keys, master.as_deref());
                for e in unreadable {
                    ctx.recorder.publish(&intent, true, "SecretKeys", &format!("role {}: {e}", role.id)).await;
                }
                if !values.is_empty() {
                    material.secret_keys.insert(role.id.clone(), values);
                }
            }
        }
        for role in &mut spec.roles {
            for key in &mut role.secret_keys {
                key.value = None;
                key.encrypted_value = None;
            }
        }
        let labels = BTreeMap::from([
            (LABEL_ORIGIN_NAMESPACE.to_string(), ns.clone()),
            (LABEL_ORIGIN_NAME.to_string(), name.clone()),
        ]);
        let had_material = existing.as_ref().is_some_and(|w| w.spec.secret_data.is_some());
        let secret_data = apply_work_secret(&ctx.client, &member_ns, &wname, &labels, &material, had_material).await?;
        let work = json!({
            "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorWork",
            "metadata": {
                "name": wname, "namespace": member_ns,
                "labels": labels,
                "finalizers": [FINALIZER_WORK],
            },
            "spec": {
                "origin": {"namespace": ns, "name": name, "uid": intent.metadata.uid, "generation": generation.unwrap_or(0)},
                "placementEpoch": placement.epoch,
                "app": {"name": intent.spec.app, "spec": app_spec},
                "cluster": {"namespace": ns, "name": name, "labels": intent.labels(), "spec": spec},
                "secrets": secrets,
                "secretData": secret_data,
                "configMaps": config_maps,
            }
        });
        works
            .patch(&wname, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(work))
            .await
            .doing("apply work")?;
    }

    // Fold the member's report into the status, never showing stale data as current.
    let work = works.get_opt(&wname).await.doing("read work")?;
    let available =
        member.as_ref().and_then(|m| m.status.as_ref()).and_then(|s| condition(&s.conditions, "Available")).cloned();
    let member_ok = available.as_ref().is_some_and(|c| c.status == "True");
    let report = work.as_ref().and_then(|w| w.status.clone()).unwrap_or_default();
    if let Some(cs) = report.cluster_status.clone() {
        status.state = cs.state;
        status.member_state_rollup = cs.member_state_rollup;
        status.roles = cs.roles;
        status.members_ready = cs.members_ready;
        status.cluster_service = cs.cluster_service;
        status.last_node_id = cs.last_node_id;
        status.spec_generation_to_process = cs.spec_generation_to_process;
        status.generation_uid = cs.generation_uid;
        status.last_connection_hash = cs.last_connection_hash;
    }
    status.member_status_time = report.report_time.clone();
    status.observed_generation = generation;
    let (ms, mr, mm) = match (&member, &available) {
        (None, _) => ("False", "MemberGone", format!("member {} is not registered", placement.member)),
        (Some(_), Some(c)) => {
            (c.status.as_str(), c.reason.as_str(), format!("member {}: {}", placement.member, c.message))
        }
        (Some(_), None) => ("Unknown", "NotJoined", format!("member {} has not joined yet", placement.member)),
    };
    status.conditions = set_condition(&status.conditions, "MemberAvailable", ms, mr, &mm, generation);
    let work_generation = work.as_ref().and_then(|w| w.metadata.generation);
    let applied = report.observed_generation.is_some()
        && report.observed_generation == work_generation
        && report.applied_epoch == Some(placement.epoch);
    let (a_status, a_reason, a_message) =
        applied_condition(&placement.member, generation, applied, &report, work_generation);
    let was_failed =
        condition(&old.conditions, "Applied").is_some_and(|c| c.reason == "ApplyFailed" && c.message == a_message);
    status.conditions = set_condition(&status.conditions, "Applied", a_status, a_reason, &a_message, generation);
    if a_reason == "ApplyFailed" && !was_failed {
        ctx.recorder.publish(&intent, true, "ApplyFailed", &a_message).await;
    }
    let seen = report.report_time.as_ref().map(|t| t.0.to_string()).unwrap_or_else(|| "never".into());
    let (r_status, r_reason, r_message) = if !member_ok {
        (
            "Unknown",
            "MemberUnavailable",
            format!("member {} is unavailable; member data last seen at {seen}", placement.member),
        )
    } else if applied && status.state.as_deref() == Some("configured") {
        ("True", "Configured", "every member is configured".to_string())
    } else {
        ("False", "Reconciling", format!("state {}", status.state.clone().unwrap_or_else(|| "pending".into())))
    };
    status.conditions = set_condition(&status.conditions, "Ready", r_status, r_reason, &r_message, generation);
    if status != old {
        write_status(&api, &intent, &status).await?;
        let was_ready = condition(&old.conditions, "Ready").map(|c| c.status.clone());
        if was_ready.as_deref() != Some(r_status) {
            ctx.recorder.publish(&intent, r_status == "Unknown", r_reason, &r_message).await;
            if r_status == "True"
                && was_ready.is_none_or(|s| s == "False")
                && let Some(s) = seconds_since_creation(&intent)
            {
                ctx.metrics.configured_latency.observe(s);
            }
        }
    }
    Ok(Action::requeue(Duration::from_secs(if member_ok && applied { 30 } else { 3 })))
}

/// The `Applied` condition from a member's report (status, reason, message): the Work's
/// generation applied, unless the member's director says its API server refused an object
/// of the cluster; or the member's report of why it could not apply the Work; or pending.
fn applied_condition(
    member: &str,
    generation: Option<i64>,
    applied: bool,
    report: &KubeDirectorWorkStatus,
    work_generation: Option<i64>,
) -> (&'static str, &'static str, String) {
    // Hub sync's report of why it could not apply this Work's generation, if it did.
    let failed = condition(&report.conditions, "Applied")
        .filter(|c| c.status == "False" && c.reason == "ApplyFailed" && c.observed_generation == work_generation);
    // The director's: the local copy is there, but an object it needs was refused.
    let refused = report
        .cluster_status
        .as_ref()
        .and_then(|s| condition(&s.conditions, "Applied"))
        .filter(|c| c.status == "False" && c.reason == "ApplyFailed");
    match (applied, refused, failed) {
        (true, Some(r), _) => ("False", "ApplyFailed", format!("member {member} cannot apply it: {}", r.message)),
        (true, None, _) => {
            ("True", "Applied", format!("member {member} applied generation {}", generation.unwrap_or(0)))
        }
        (false, _, Some(f)) => ("False", "ApplyFailed", format!("member {member} cannot apply it: {}", f.message)),
        (false, _, None) => ("False", "Pending", format!("waiting for member {member} to apply the latest spec")),
    }
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

/// Moves a cluster off a member that has been unavailable too long: the old Work is
/// released without that member's cleanup (its spoke fences its copy when it returns), and
/// the cluster is placed elsewhere with the next epoch.
async fn fail_over(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    intent: &KubeDirectorCluster,
    mut status: KubeDirectorClusterStatus,
    placement: &PlacementStatus,
    after: i64,
    spec: &KubeDirectorClusterSpec,
) -> Result<Action, Error> {
    let members: Api<KubeDirectorMember> = Api::all(ctx.client.clone());
    let all_members = members.list(&Default::default()).await.doing("list members")?.items;
    let intents = api_all(&ctx.client).list(&Default::default()).await.doing("list clusters")?.items;
    let mut views = member_views(&all_members, &intents);
    views.retain(|v| v.name != placement.member);
    let mut view = IntentView::of(spec);
    view.colocate =
        connected_member(&intents, &intent.namespace().unwrap_or_default(), &intent.name_any(), spec).ok().flatten();
    let target = match placement::schedule(&view, &views) {
        Ok(m) => m.name.clone(),
        Err(why) => {
            let message =
                format!("member {} unavailable for over {after}s but no other member fits: {why}", placement.member);
            warn!("{message}");
            ctx.recorder.publish(intent, true, "FailoverBlocked", &message).await;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    // The member may have come back since this pass read it: a member that renews again
    // keeps its cluster (its spoke lifts its self-fence only once the hub shows it available).
    let back = members.get_opt(&placement.member).await.doing("read member")?.is_some_and(|m| {
        m.status.is_some_and(|s| condition(&s.conditions, "Available").is_some_and(|c| c.status == "True"))
    });
    if back {
        info!(member = %placement.member, "member available again; no failover");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let ns = intent.namespace().unwrap_or_default();
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.client.clone(), &member_namespace(&placement.member));
    let wname = work_name(&ns, &intent.name_any());
    if works.get_opt(&wname).await.doing("read work")?.is_some() {
        let release = json!({"metadata": {"finalizers": null}});
        works.patch(&wname, &PatchParams::default(), &Patch::Merge(release)).await.doing("release old work")?;
        match works.delete(&wname, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error { action: "delete old work".into(), source }),
        }
        delete_work_secret(&ctx.client, &member_namespace(&placement.member), &wname).await?;
    }
    let epoch = placement.epoch + 1;
    let message =
        format!("failed over from {} (unavailable for over {after}s) to {target} (epoch {epoch})", placement.member);
    status.placement =
        Some(PlacementStatus { member: target.clone(), epoch, time: Some(Time(jiff::Timestamp::now())) });
    // Nothing reported so far describes the new placement.
    status.state = None;
    status.roles.clear();
    status.member_state_rollup = None;
    status.members_ready = None;
    status.member_status_time = None;
    status.cluster_service = None;
    status.conditions.retain(|c| !matches!(c.type_.as_str(), "MemberAvailable" | "Applied" | "Ready"));
    status.conditions =
        set_condition(&status.conditions, "Placed", "True", "FailedOver", &message, intent.metadata.generation);
    write_status(api, intent, &status).await?;
    warn!("{message}");
    ctx.recorder.publish(intent, true, "FailedOver", &message).await;
    Ok(Action::requeue(Duration::from_millis(50)))
}

fn api_all(client: &Client) -> Api<KubeDirectorCluster> {
    Api::all(client.clone())
}

/// Scheduler views of the members: reported capacity, plus the requests of clusters placed
/// on each member that it has not reported as fully running yet.
pub fn member_views(members: &[KubeDirectorMember], intents: &[KubeDirectorCluster]) -> Vec<MemberView> {
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
    members
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
            let available = condition(&status.conditions, "Available").is_some_and(|c| c.status == "True");
            MemberView {
                name: m.name_any(),
                labels: m.labels().clone(),
                taints: m.spec.taints.clone(),
                available,
                cordoned: m.spec.unschedulable,
                allocatable,
                requested,
                storage_classes: status.storage_classes.clone(),
                placed: placed.get(&m.name_any()).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// Where the clusters a cluster connects to run: connections are resolved on the member, so
/// it must run there too. `Ok(None)` without (existing) connected clusters; missing ones
/// are skipped, as configmeta skips them. `Err` says why placement must wait: a connected
/// cluster not placed yet, or connected clusters on different members.
pub fn connected_member(
    intents: &[KubeDirectorCluster],
    ns: &str,
    name: &str,
    spec: &KubeDirectorClusterSpec,
) -> Result<Option<String>, String> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for wanted in spec.connections.iter().flat_map(|c| &c.clusters) {
        if wanted == name {
            continue;
        }
        let Some(other) = intents.iter().find(|i| i.namespace().as_deref() == Some(ns) && &i.name_any() == wanted)
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

/// Labels and annotations worth copying with a connected object: not kubectl's bookkeeping.
fn carried(map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.into_iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with("kubectl.kubernetes.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The ConfigMaps a cluster connects to, for the Work (missing ones are skipped).
async fn connected_configmaps(
    client: &Client,
    ns: &str,
    spec: &KubeDirectorClusterSpec,
) -> Result<Vec<serde_json::Value>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let mut names: Vec<String> = spec.connections.iter().flat_map(|c| c.configmaps.clone()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        if let Some(cm) = api.get_opt(&name).await.doing("read configmap")? {
            let binary: BTreeMap<String, String> = cm
                .binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v.0)))
                .collect();
            out.push(json!({
                "name": name,
                "labels": carried(cm.metadata.labels.as_ref()),
                "annotations": carried(cm.metadata.annotations.as_ref()),
                "data": cm.data.unwrap_or_default(),
                "binaryData": binary,
            }));
        }
    }
    Ok(out)
}

/// The secret material of a Work: what travels in the Secret beside it.
#[derive(Debug, Default, PartialEq)]
pub struct WorkMaterial {
    /// Referenced Secrets' data: secret name → key → base64 value.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Secret-key values: role id → key name → value.
    pub secret_keys: BTreeMap<String, BTreeMap<String, String>>,
}

impl WorkMaterial {
    fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.secret_keys.is_empty()
    }
}

/// The Secret that carries a Work's secret material (see [`WorkMaterial`]), as applied.
pub fn work_secret(
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    material: &WorkMaterial,
) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "data": {
            WORK_SECRET_DATA_KEY: base64_json(&material.secrets),
            WORK_SECRET_KEYS_KEY: base64_json(&material.secret_keys),
        }
    })
}

/// `value` as JSON, base64-encoded (a Secret's `data`).
fn base64_json(value: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text)
}

/// Applies the Secret beside Work `wname` when there is secret material (deleting one a
/// previous Work had when there is none), and returns what the Work records of it.
async fn apply_work_secret(
    client: &Client,
    member_ns: &str,
    wname: &str,
    labels: &BTreeMap<String, String>,
    material: &WorkMaterial,
    had_material: bool,
) -> Result<Option<WorkSecretData>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), member_ns);
    if material.is_empty() {
        if had_material {
            delete_work_secret(client, member_ns, wname).await?;
        }
        return Ok(None);
    }
    let applied = secrets
        .patch(
            wname,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(work_secret(member_ns, wname, labels, material)),
        )
        .await
        .doing("apply the Work's secret material")?;
    Ok(Some(WorkSecretData {
        name: wname.to_string(),
        resource_version: applied.resource_version().unwrap_or_default(),
    }))
}

/// Deletes the Secret beside Work `wname` (gone already is fine).
async fn delete_work_secret(client: &Client, member_ns: &str, wname: &str) -> Result<(), Error> {
    match Api::<Secret>::namespaced(client.clone(), member_ns).delete(wname, &DeleteParams::background()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(|_| ()).doing("delete the Work's secret material"),
    }
}

/// The Secrets a cluster references (default secret, role secrets, connected secrets), for
/// the Work without their data, and their data as secret material.
async fn referenced_secrets(
    client: &Client,
    ns: &str,
    spec: &KubeDirectorClusterSpec,
) -> Result<(Vec<WorkSecret>, WorkMaterial), Error> {
    let mut names: Vec<String> = spec.default_secret.iter().map(|s| s.name.clone()).collect();
    names.extend(spec.roles.iter().filter_map(|r| r.secret.as_ref().map(|s| s.name.clone())));
    names.extend(spec.connections.iter().flat_map(|c| c.secrets.clone()));
    names.sort();
    names.dedup();
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    let mut material = WorkMaterial::default();
    for name in names {
        if let Some(secret) = api.get_opt(&name).await.doing("read secret")? {
            let data: BTreeMap<String, String> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v.0)))
                .collect();
            material.secrets.insert(name.clone(), data);
            out.push(WorkSecret {
                name,
                type_: secret.type_,
                data: BTreeMap::new(),
                labels: carried(secret.metadata.labels.as_ref()),
                annotations: carried(secret.metadata.annotations.as_ref()),
            });
        }
    }
    Ok((out, material))
}

/// The conditions of a cluster waiting for its member's cleanup: while the member is not
/// `Available=True` (or is gone), `MemberAvailable` says so and `Ready` turns `Unknown`, as for
/// a cluster that is not being deleted (found by the chaos suite: a cluster deleted while its
/// spoke was dead stayed `Ready=True` until the spoke returned).
pub fn unavailable_while_deleting(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    member: &str,
    member_exists: bool,
    available: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    generation: Option<i64>,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
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

/// Deletion: delete the Work, wait for the member to release it, then let the intent go.
async fn delete(ctx: &Context, api: &Api<KubeDirectorCluster>, intent: &KubeDirectorCluster) -> Result<Action, Error> {
    if !intent.finalizers().iter().any(|f| f == FINALIZER_INTENT) {
        return Ok(Action::await_change());
    }
    let ns = intent.namespace().unwrap_or_default();
    let name = intent.name_any();
    let old = intent.status.clone().unwrap_or_default();
    if let Some(p) = &old.placement {
        let works: Api<KubeDirectorWork> = Api::namespaced(ctx.client.clone(), &member_namespace(&p.member));
        let wname = work_name(&ns, &name);
        if let Some(work) = works.get_opt(&wname).await.doing("read work")? {
            if work.metadata.deletion_timestamp.is_none() {
                works.delete(&wname, &DeleteParams::background()).await.doing("delete work")?;
                delete_work_secret(&ctx.client, &member_namespace(&p.member), &wname).await?;
            }
            let orphan = intent.annotations().get(ANNOTATION_ORPHAN).is_some_and(|v| v == "true");
            let member =
                Api::<KubeDirectorMember>::all(ctx.client.clone()).get_opt(&p.member).await.doing("read member")?;
            let member_exists = member.is_some();
            if orphan {
                let patch = json!({"metadata": {"finalizers": null}});
                works.patch(&wname, &PatchParams::default(), &Patch::Merge(patch)).await.doing("orphan work")?;
                ctx.recorder
                    .publish(
                        intent,
                        true,
                        "Orphaned",
                        &format!("released without cleanup on member {} (annotation {ANNOTATION_ORPHAN})", p.member),
                    )
                    .await;
            } else {
                let message = if member_exists {
                    format!("waiting for member {} to clean up", p.member)
                } else {
                    format!(
                        "member {} is gone; its cleanup cannot be confirmed. Set the annotation {ANNOTATION_ORPHAN}=true to delete anyway",
                        p.member
                    )
                };
                let mut status = old.clone();
                status.conditions = set_condition(
                    &status.conditions,
                    "Deleting",
                    "True",
                    if member_exists { "WaitingForMember" } else { "MemberGone" },
                    &message,
                    intent.metadata.generation,
                );
                // While it waits, the cluster still runs there: never show it Ready on data
                // the member can no longer confirm.
                let available =
                    member.as_ref().and_then(|m| m.status.as_ref()).and_then(|s| condition(&s.conditions, "Available"));
                status.conditions = unavailable_while_deleting(
                    &status.conditions,
                    &p.member,
                    member_exists,
                    available,
                    intent.metadata.generation,
                );
                if status != old {
                    write_status(api, intent, &status).await?;
                    ctx.recorder.publish(intent, !member_exists, "Deleting", &message).await;
                }
                return Ok(Action::requeue(Duration::from_secs(2)));
            }
        }
    }
    reconcile::remove_finalizer(api, intent, FINALIZER_INTENT).await?;
    info!("intent released");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied_report(work: Option<(&str, &str)>, director: Option<(&str, &str)>) -> KubeDirectorWorkStatus {
        let c = |(status, reason): (&str, &str), generation| {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>(json!({
                "type": "Applied", "status": status, "reason": reason, "message": format!("{reason} here"),
                "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": generation,
            }))
            .expect("condition")
        };
        KubeDirectorWorkStatus {
            conditions: work.map(|w| c(w, 3)).into_iter().collect(),
            cluster_status: Some(KubeDirectorClusterStatus {
                conditions: director.map(|d| c(d, 1)).into_iter().collect(),
                ..KubeDirectorClusterStatus::default()
            }),
            ..KubeDirectorWorkStatus::default()
        }
    }

    #[test]
    fn a_refusal_by_the_members_api_server_shows_as_apply_failed_on_the_hub() {
        let refused = applied_report(Some(("True", "Applied")), Some(("False", "ApplyFailed")));
        assert_eq!(
            applied_condition("east", Some(2), true, &refused, Some(3)),
            ("False", "ApplyFailed", "member east cannot apply it: ApplyFailed here".to_string())
        );
        let fine = applied_report(Some(("True", "Applied")), Some(("True", "Applied")));
        assert_eq!(
            applied_condition("east", Some(2), true, &fine, Some(3)),
            ("True", "Applied", "member east applied generation 2".to_string())
        );
        let copy_refused = applied_report(Some(("False", "ApplyFailed")), None);
        assert_eq!(applied_condition("east", Some(2), false, &copy_refused, Some(3)).1, "ApplyFailed");
        assert_eq!(applied_condition("east", Some(2), false, &copy_refused, Some(4)).1, "Pending", "older generation");
    }

    #[test]
    fn a_member_s_lost_heartbeat_wakes_the_clusters_that_still_show_it_available() {
        let member_with = |available: &str| -> KubeDirectorMember {
            serde_json::from_value(json!({
                "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember",
                "metadata": {"name": "east"}, "spec": {},
                "status": {"conditions": [{"type": "Available", "status": available, "reason": "r", "message": "",
                    "lastTransitionTime": "2026-12-01T00:00:00Z"}]}
            }))
            .expect("member")
        };
        let mut shown_available = intent("db", Some("east"), &[]);
        if let Some(s) = shown_available.status.as_mut() {
            s.conditions = set_condition(&[], "MemberAvailable", "True", "HeartbeatRenewed", "", Some(1));
        }
        assert!(availability_outdated(&shown_available, &member_with("Unknown")), "heartbeat lost: fold again");
        assert!(!availability_outdated(&shown_available, &member_with("True")), "nothing changed");
        let never_folded = intent("db", Some("east"), &[]);
        assert!(availability_outdated(&never_folded, &member_with("True")));
        assert!(!availability_outdated(&intent("db", Some("west"), &[]), &member_with("Unknown")), "another member");
        assert!(!availability_outdated(&intent("db", None, &[]), &member_with("Unknown")), "not placed");
    }

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

    fn intent(name: &str, member: Option<&str>, connects_to: &[&str]) -> KubeDirectorCluster {
        let mut c: KubeDirectorCluster = serde_json::from_value(json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"app": "a", "roles": [], "connections": {"clusters": connects_to}}
        }))
        .expect("cluster");
        if let Some(m) = member {
            c.status = Some(KubeDirectorClusterStatus {
                placement: Some(PlacementStatus { member: m.into(), epoch: 1, time: None }),
                ..KubeDirectorClusterStatus::default()
            });
        }
        c
    }

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
}
