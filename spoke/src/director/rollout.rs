//! The live-upgrade step of a reconcile, around the pure rollout of [`upgrade`]: reads the
//! other app of a rollout (the one the members leave, or go back to) and decides the
//! rollout before setup; runs the members' `--upgrade`/`--rollback` scripts with the
//! setup step; advances the rollout after the plan; and builds each role's StatefulSet from
//! the app its members run, with the selector it was created with and the partition that
//! lets exactly the planned pods be recreated.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus, UpgradeStatus};
use kdfed_crds::resolve::Resolved;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::apply::Change;
use super::build::{BuildError, Inputs};
use super::dereference::Observed;
use super::lifecycle::{self, SetupView};
use super::members::{self, PodView, SetupOutcome};
use super::plan::Desired;
use super::reconcile::{Context, Error};
use super::status;
use super::upgrade::{self, AppVersion, Begin, RoleFacts, Side, Template};

/// The rollout of one pass.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// `status.upgrade` as this pass continues it (a finished one is kept as it was).
    pub record: Option<UpgradeStatus>,
    /// The other app of a rollout under way, resolved against the cluster, and its name.
    pub other: Option<(String, Resolved)>,
    /// The `kdapp` label the StatefulSets' selectors carry.
    pub selector_app: String,
    /// Each role's template this pass.
    pub templates: BTreeMap<String, Template>,
}

/// The rollout step before setup: which app each role runs, and the rollout to advance.
/// An app change that no rollout can make, or a rollout whose other app is not in the
/// catalog, is recorded on the cluster (`Valid=False`) and the pass ends with the returned
/// action; nothing running is touched.
pub async fn prepare(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    cluster: &KubeDirectorCluster,
    observed: &Observed,
    resolved: &Resolved,
) -> Result<Result<Rollout, Action>, Error> {
    let status = cluster.status.clone().unwrap_or_default();
    let spec_app = cluster.spec.app.as_str();
    let selector_app = observed.selector_app.clone().unwrap_or_else(|| spec_app.to_string());
    let Some(other_name) = other_app(&status, observed.selector_app.as_deref(), spec_app) else {
        let record = status.upgrade.clone();
        let templates = upgrade::templates(record.as_ref(), &status);
        return Ok(Ok(Rollout { record, other: None, selector_app, templates }));
    };
    let other = match resolve_other(ctx, cluster, observed, &other_name, resolved, &status).await {
        Ok(other) => other,
        Err(message) => {
            status::invalid(ctx, cluster, api, "spec.app", &message).await?;
            return Ok(Err(Action::requeue(Duration::from_secs(30))));
        }
    };
    let to = AppVersion { name: spec_app, version: &resolved.app.version };
    let from = AppVersion { name: &other_name, version: &other.app.version };
    let order = kdfed_crds::upgrade::role_order(&resolved.app);
    let record = match upgrade::begin(to, Some(from), &status, &order, &observed.pods) {
        Begin::Steady => status.upgrade.clone(),
        Begin::Rollout(rec) => Some(rec),
        Begin::Refused(message) => {
            status::invalid(ctx, cluster, api, "spec.app", &message).await?;
            return Ok(Err(Action::await_change()));
        }
    };
    if let Some(rec) = record.as_ref().filter(|r| started(r, &status)) {
        let message = rec.message.clone().unwrap_or_default();
        ctx.recorder.publish(cluster, false, upgrade::EVENT_REASON, &message).await;
    }
    let templates = upgrade::templates(record.as_ref(), &status);
    Ok(Ok(Rollout { record, other: Some((other_name, other)), selector_app, templates }))
}

/// The app besides `spec.app` this pass needs: the other end of a rollout under way, or
/// the app the members run when `spec.app` names another.
fn other_app(status: &KubeDirectorClusterStatus, selector_app: Option<&str>, spec_app: &str) -> Option<String> {
    match status.upgrade.as_ref().filter(|u| u.in_progress()) {
        Some(u) if u.to == spec_app => Some(u.from.clone()),
        Some(u) => Some(u.to.clone()),
        None => upgrade::running_app(status, selector_app).filter(|r| *r != spec_app).map(str::to_string),
    }
}

/// Whether `rec` starts this pass (a new or reversed rollout).
fn started(rec: &UpgradeStatus, status: &KubeDirectorClusterStatus) -> bool {
    status.upgrade.as_ref().is_none_or(|old| old.from != rec.from || old.to != rec.to || !old.in_progress())
        && rec.in_progress()
}

/// Reads and resolves the other app; when a new upgrade starts, `spec.app` must list it in
/// `upgradeFrom` with the same `distroID`. The error is the message for the cluster.
async fn resolve_other(
    ctx: &Context,
    cluster: &KubeDirectorCluster,
    observed: &Observed,
    name: &str,
    resolved: &Resolved,
    status: &KubeDirectorClusterStatus,
) -> Result<Resolved, String> {
    let ns = cluster.namespace().unwrap_or_else(|| "default".into());
    let catalog = cluster.spec.app_catalog.as_deref();
    let found = kdfed_common::catalog::find_app(&ctx.client, &ns, &ctx.system_namespace, name, catalog)
        .await
        .map_err(|e| format!("cannot read app({name}) of the rollout: {e}"))?;
    let Some((other, _)) = found else {
        return Err(format!(
            "app({name}), which members of this cluster run, is not in the catalog: the app change from or back to it cannot go on"
        ));
    };
    let under_way = status.upgrade.as_ref().is_some_and(|u| u.rollback_allowed(name) && u.from == cluster.spec.app)
        || status.upgrade.as_ref().is_some_and(UpgradeStatus::in_progress);
    let listed = resolved.app.upgrade_from.iter().any(|f| f == name) && resolved.app.distro_id == other.spec.distro_id;
    if !under_way && !listed {
        return Err(format!(
            "The app property can change only to an app that upgrades from app({name}): app({}) does not list it in upgradeFrom (or has another distroID).",
            cluster.spec.app
        ));
    }
    let mut spec = cluster.spec.clone();
    spec.app = name.to_string();
    kdfed_crds::resolve(&other.spec, &spec, observed.config.as_ref())
        .map_err(|e| format!("app({name}) of the rollout does not fit this cluster: {e}"))
}

/// Runs the scripts of the members whose pods were recreated for the rollout.
pub async fn run_steps(
    pods_api: &Api<Pod>,
    view: &SetupView<'_>,
    status: &KubeDirectorClusterStatus,
    pods: &BTreeMap<String, PodView>,
    rollout: &Rollout,
) -> BTreeMap<String, SetupOutcome> {
    let Some(rec) = rollout.record.as_ref().filter(|r| r.in_progress()) else { return BTreeMap::new() };
    let steps = upgrade::steps(rec, status, pods);
    lifecycle::run_upgrade_steps(pods_api, view, status, &steps).await
}

/// Advances the rollout in the planned status; a rollout under way keeps the cluster
/// `updating`.
pub fn advance(
    rollout: &mut Rollout,
    plan: &mut members::Plan,
    desired: &Desired,
    pods: &BTreeMap<String, PodView>,
    outcomes: &BTreeMap<String, SetupOutcome>,
) {
    let Some(rec) = rollout.record.as_mut() else { return };
    let roles =
        RoleFacts { setup_package: desired.roles.iter().filter(|w| w.setup_package).map(|w| w.id.clone()).collect() };
    upgrade::advance(rec, plan, &roles, pods, outcomes);
    if rec.in_progress() {
        plan.settled = false;
        plan.events.retain(|e| !(e.reason == "Cluster" && e.message == "stable"));
        if plan.status.state.as_deref() != Some(members::CLUSTER_CREATING) {
            plan.status.state = Some(members::CLUSTER_UPDATING.to_string());
        }
    }
    plan.status.upgrade = Some(rec.clone());
}

/// Builds each StatefulSet from the app its role runs this pass (`other_inputs` for roles
/// still on the other app), with its creation-time selector and the rollout's partition.
pub fn adjust(
    changes: &mut [Change],
    rollout: &Rollout,
    plan: &members::Plan,
    other_inputs: Option<&Inputs<'_>>,
) -> Result<(), BuildError> {
    let steady = Template { side: Side::To, partition: None };
    for change in changes.iter_mut() {
        let Change::StatefulSet(name, sts) = change else { continue };
        let Some((role_id, replicas)) = plan.statefulsets.get(name.as_str()) else { continue };
        let template = rollout.templates.get(role_id).copied().unwrap_or(steady);
        if template.side == Side::From
            && let Some(inputs) = other_inputs
            && let Some(role) = inputs.spec.roles.iter().find(|r| &r.id == role_id)
        {
            **sts = inputs.statefulset(role, name, *replicas)?;
        }
        upgrade::pin_statefulset(sts, &rollout.selector_app, template.partition);
    }
    Ok(())
}
