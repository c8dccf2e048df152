//! Work sync: a controller over the Works in this member's namespace on the hub (and the
//! local copies they made). Each pass reads as its steps: read the Work, release it if it
//! is being deleted, otherwise apply what the copy needs, read its secret material, apply
//! Secrets and ConfigMaps, seal secret keys, apply the copy, report the director's status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kdfed_common::Doing;
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{KubeDirectorWork, LABEL_WORK};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::warn;

use super::{Error, FIELD_MANAGER, SyncContext, apply, build, confirm, keys, memo};

/// Longest failure message reported into a Work's status.
const MAX_FAILURE_MESSAGE: usize = 1024;

/// How often an applied Work is synced again without any change: its copy's status is read
/// and reported if it changed (changes of the copy wake a pass anyway); everything is applied
/// again every [`memo::FULL_EVERY`].
const RESYNC: Duration = Duration::from_secs(5 * 60);

/// Runs Work sync until the process stops: a change of a Work, or of a local copy a Work
/// made, syncs that Work.
pub(super) async fn run(ctx: Arc<SyncContext>) {
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let local_clusters: Api<KubeDirectorCluster> = Api::all(ctx.local.clone());
    let ns = ctx.namespace();
    let copies = watcher::Config::default().labels(&ctx.opts.copies_selector());
    let (store, writer) = kube::runtime::reflector::store();
    // A Work deleted on the hub (its cluster failed over, or released without this member's
    // cleanup) wakes the fencing check at once rather than at the next report.
    let gone = ctx.clone();
    let changes = watcher(works, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::Delete(_))) {
                gone.works_gone.notify_one();
            }
        })
        .applied_objects();
    // The fencing check reads which Works exist from this cache instead of the hub.
    let _ = ctx.works.set(store.clone());
    let controller = Controller::for_stream(changes, store);
    controller
        .watches(local_clusters, copies, move |c: KubeDirectorCluster| {
            let work = c.labels().get(LABEL_WORK)?.clone();
            Some(ObjectRef::new(&work).within(&ns))
        })
        .trigger_backoff(kdfed_common::reconcile::TriggerBackoff::default())
        .shutdown_on_signal()
        .run(reconcile, retry, ctx.clone())
        .for_each(|r| {
            let ctx = ctx.clone();
            async move {
                if let Err(e) = r {
                    // While the hub refuses the credentials, that was said once already.
                    let text = e.to_string();
                    if !(ctx.access.is_refused() && crate::hubaccess::text_is_refusal(&text)) {
                        kdfed_common::reconcile::log_run_error("work sync", &e);
                    }
                }
            }
        })
        .await;
}

/// The error policy of Work sync: [`kdfed_common::reconcile::retry`], except while the hub
/// refuses this member's credentials (a 401): then quietly, backing off.
fn retry(work: Arc<KubeDirectorWork>, error: &Error, ctx: Arc<SyncContext>) -> Action {
    if error.is_refusal() {
        ctx.access.refused(&ctx.opts.member, "work sync");
        return Action::requeue(ctx.access.pause(kdfed_common::reconcile::RETRY_AFTER));
    }
    kdfed_common::reconcile::retry(work, error, ctx)
}

/// One pass, timed, with a failure reported into the Work (unless it is being deleted or
/// the hub refuses the credentials, when the report could not land anyway).
async fn reconcile(cached: Arc<KubeDirectorWork>, ctx: Arc<SyncContext>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = sync(&cached, &ctx).await;
    if let Some(m) = &ctx.opts.metrics {
        m.reconciles.finished("works", started, result.as_ref().err().map(Error::step));
    }
    if let Err(e) = &result
        && cached.metadata.deletion_timestamp.is_none()
        && !ctx.access.is_refused()
    {
        report_failure(&ctx, &cached, &e.to_string()).await;
    }
    result
}

/// The steps of one pass over a Work, as the watch cache holds it (a newer version wakes
/// another pass). When the last complete pass applied this content and the copy is as it
/// left it, the pass only reports the copy's status ([`memo::only_report`]).
async fn sync(work: &KubeDirectorWork, ctx: &SyncContext) -> Result<Action, Error> {
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    if work.metadata.deletion_timestamp.is_some() {
        return apply::release(ctx, &works, work).await;
    }
    let name = work.name_any();
    let last = ctx.memo.applied(&name);
    if last.is_some() {
        let cluster = &work.spec.cluster;
        let copies: Api<KubeDirectorCluster> = Api::namespaced(ctx.local.clone(), &cluster.namespace);
        let copy = copies.get_opt(&cluster.name).await.doing("read local cluster").map_err(Error::ApplyCopy)?;
        if memo::only_report(last.as_ref(), work, copy.as_ref(), Instant::now())
            && let Some(copy) = copy
        {
            report_status(&works, work, &copy).await?;
            return Ok(Action::requeue(RESYNC));
        }
    }
    if let Some(wait) = confirm::before_start(ctx, work).await? {
        return Ok(Action::requeue(wait));
    }
    apply::namespace_and_app(ctx, work).await?;
    let material = keys::work_material(ctx, work).await?;
    apply::secrets_and_config_maps(ctx, work, &material).await?;
    let mut spec = work.spec.cluster.spec.clone();
    material.fill_secret_keys(&mut spec);
    let spec = keys::sealed_spec(ctx, work, spec).await?;
    let (local, complete) = apply::local_copy(ctx, work, spec).await?;
    let applied = memo::content_name(work).filter(|_| complete).map(|content| memo::Applied {
        content,
        copy_generation: local.metadata.generation,
        at: Instant::now(),
    });
    ctx.memo.set_applied(&name, applied);
    report_status(&works, work, &local).await?;
    Ok(Action::requeue(RESYNC))
}

/// Writes the director's status of `local` into the Work, unless it already says so.
async fn report_status(
    works: &Api<KubeDirectorWork>,
    work: &KubeDirectorWork,
    local: &KubeDirectorCluster,
) -> Result<(), Error> {
    if build::already_reported(work, local.status.as_ref()) {
        return Ok(());
    }
    let status = build::work_status(work, local.status.as_ref(), Time(jiff::Timestamp::now()));
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    works
        .patch_status(&work.name_any(), &pp, &Patch::Apply(build::status_apply(&status)))
        .await
        .doing("report work status")
        .map_err(Error::ReportStatus)?;
    Ok(())
}

/// Tells the hub why this member could not apply a Work (the member's webhook refused the
/// copy, a missing permission, secret keys that cannot be sealed, ...): `Applied=False,
/// reason ApplyFailed` in the Work's status, which the hub shows on the user's cluster.
/// Written only when the message changes, so a failure that repeats does not rewrite it;
/// the next successful pass replaces it. A failure to report is only logged.
async fn report_failure(ctx: &SyncContext, cached: &KubeDirectorWork, message: &str) {
    let message = kdfed_common::conditions::capped(message.to_string(), MAX_FAILURE_MESSAGE);
    let Some(conditions) = build::failure_conditions(cached, &message) else {
        return;
    };
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let patch = build::conditions_patch(conditions);
    if let Err(e) = works.patch_status(&cached.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        warn!(work = %cached.name_any(), "cannot report the failure to the hub: {e}");
    }
}
