//! The writes of Work sync on the member's API server: the objects [`super::build`] made,
//! applied with server-side apply as hub sync, and their removal when the Work goes.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kdfed_common::{ApiError, Doing};
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{ANNOTATION_FENCED, FINALIZER_WORK, KubeDirectorWork, LABEL_WORK};
use kdfed_crds::{KubeDirectorApp, KubeDirectorClusterSpec};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use super::keys::Material;
use super::{Error, FIELD_MANAGER, SyncContext, build};

/// How hub sync applies: as its own field manager, taking over fields it must own.
fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Objects of kind `K` in the copy's namespace that `work` made.
fn made_by<K>(ctx: &SyncContext, work: &KubeDirectorWork) -> (Api<K>, ListParams)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    let api = Api::namespaced(ctx.local.clone(), &work.spec.cluster.namespace);
    (api, ListParams::default().labels(&format!("{LABEL_WORK}={}", work.name_any())))
}

/// Deletes `name`; one that is already gone is fine.
async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    match api.delete(name, &DeleteParams::background()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// The namespace and the frozen app of the local copy.
pub(super) async fn namespace_and_app(ctx: &SyncContext, work: &KubeDirectorWork) -> Result<(), Error> {
    let namespace = &work.spec.cluster.namespace;
    let pp = apply_params();
    Api::<Namespace>::all(ctx.local.clone())
        .patch(namespace, &pp, &Patch::Apply(build::namespace(namespace)))
        .await
        .doing("apply namespace")
        .map_err(Error::ApplyInputs)?;
    Api::<KubeDirectorApp>::namespaced(ctx.local.clone(), namespace)
        .patch(&work.spec.app.name, &pp, &Patch::Apply(build::app(work)))
        .await
        .doing("apply app")
        .map_err(Error::ApplyInputs)?;
    Ok(())
}

/// The Secrets (with their data from `material`, or the Work's own) and ConfigMaps the
/// Work carries; those this Work made before and no longer carries are removed.
pub(super) async fn secrets_and_config_maps(
    ctx: &SyncContext,
    work: &KubeDirectorWork,
    material: &Material,
) -> Result<(), Error> {
    let pp = apply_params();
    let (secrets, ours) = made_by::<Secret>(ctx, work);
    for s in &work.spec.secrets {
        let secret = build::secret(work, s, material.secrets.get(&s.name).unwrap_or(&s.data))?;
        secrets.patch(&s.name, &pp, &Patch::Apply(secret)).await.doing("apply secret").map_err(Error::ApplyInputs)?;
    }
    let (config_maps, _) = made_by::<ConfigMap>(ctx, work);
    for c in &work.spec.config_maps {
        let config_map = build::config_map(work, c)?;
        config_maps
            .patch(&c.name, &pp, &Patch::Apply(config_map))
            .await
            .doing("apply configmap")
            .map_err(Error::ApplyInputs)?;
    }
    let carried: Vec<&str> = work.spec.secrets.iter().map(|s| s.name.as_str()).collect();
    prune(&secrets, &ours, &carried, "secret").await.map_err(Error::ApplyInputs)?;
    let carried: Vec<&str> = work.spec.config_maps.iter().map(|c| c.name.as_str()).collect();
    prune(&config_maps, &ours, &carried, "configmap").await.map_err(Error::ApplyInputs)
}

/// Deletes the objects listed by `ours` whose name is not in `carried` (only copies this
/// Work made, never the user's own objects).
async fn prune<K>(api: &Api<K>, ours: &ListParams, carried: &[&str], kind: &str) -> Result<(), ApiError>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    for object in api.list(ours).await.doing(format!("list {kind}s"))?.items {
        let name = object.name_any();
        if !carried.contains(&name.as_str()) {
            delete(api, &name).await.doing(format!("delete {kind}"))?;
        }
    }
    Ok(())
}

/// Applies the local copy with `spec` (an app change first alone, see
/// [`build::staged_spec`]) and returns it as stored, and whether all of `spec` was applied
/// (nothing held back). A copy fenced because its Work was gone gets its fence lifted: the
/// placement is back on this member (a newer epoch).
pub(super) async fn local_copy(
    ctx: &SyncContext,
    work: &KubeDirectorWork,
    spec: KubeDirectorClusterSpec,
) -> Result<(KubeDirectorCluster, bool), Error> {
    let cluster = &work.spec.cluster;
    let copies: Api<KubeDirectorCluster> = Api::namespaced(ctx.local.clone(), &cluster.namespace);
    let stored = copies.get_opt(&cluster.name).await.doing("read local cluster").map_err(Error::ApplyCopy)?;
    let staged = build::staged_spec(stored.as_ref(), spec.clone());
    let complete = staged == spec;
    let mut copy = build::local_copy(work, staged);
    if let Some(tag) = &ctx.opts.shared_local {
        copy.labels_mut().insert(super::LABEL_SHARED_LOCAL.to_string(), tag.clone());
    }
    let stored = copies
        .patch(&cluster.name, &apply_params(), &Patch::Apply(copy))
        .await
        .doing("apply local cluster")
        .map_err(Error::ApplyCopy)?;
    if !stored.annotations().contains_key(ANNOTATION_FENCED) {
        return Ok((stored, complete));
    }
    let patch = crate::fencing::annotation(ANNOTATION_FENCED, None);
    let lifted = copies
        .patch(&cluster.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .doing("lift fence")
        .map_err(Error::ApplyCopy)?;
    info!(cluster = %cluster.name, epoch = work.spec.placement_epoch, "placement is back: fence lifted");
    Ok((lifted, complete))
}

/// Releases a Work being deleted: deletes the local copy and waits (requeueing) for the
/// director's cleanup, then removes the Secrets and ConfigMaps this Work made and the
/// Work's finalizer. A removal that fails is logged and the Work kept, so the next pass
/// tries again; nothing is left behind unnoticed.
pub(super) async fn release(
    ctx: &SyncContext,
    works: &Api<KubeDirectorWork>,
    work: &KubeDirectorWork,
) -> Result<Action, Error> {
    let cluster = &work.spec.cluster;
    let copies: Api<KubeDirectorCluster> = Api::namespaced(ctx.local.clone(), &cluster.namespace);
    if let Some(local) = copies.get_opt(&cluster.name).await.doing("read local cluster").map_err(Error::Release)? {
        if local.metadata.deletion_timestamp.is_none() {
            copies
                .delete(&cluster.name, &DeleteParams::background())
                .await
                .doing("delete local cluster")
                .map_err(Error::Release)?;
            info!(work = %work.name_any(), "deleting the local cluster");
        }
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let (secrets, ours) = made_by::<Secret>(ctx, work);
    let (config_maps, _) = made_by::<ConfigMap>(ctx, work);
    let secrets_left = remove_all(&secrets, &ours, work, "secret").await;
    let config_maps_left = remove_all(&config_maps, &ours, work, "configmap").await;
    secrets_left.and(config_maps_left).map_err(Error::Release)?;
    kdfed_common::reconcile::remove_finalizer(works, work, FINALIZER_WORK).await.map_err(Error::Release)?;
    ctx.memo.forget(&work.name_any());
    info!(work = %work.name_any(), "local cleanup done; work released");
    Ok(Action::await_change())
}

/// Deletes every object listed by `ours`; each failure is logged, and the first returned
/// once all were tried.
async fn remove_all<K>(api: &Api<K>, ours: &ListParams, work: &KubeDirectorWork, kind: &str) -> Result<(), ApiError>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let mut first = None;
    for object in api.list(ours).await.doing(format!("list {kind}s"))?.items {
        let name = object.name_any();
        if let Err(e) = delete(api, &name).await.doing(format!("delete {kind} {name}")) {
            warn!(work = %work.name_any(), "cannot remove a {kind} of the released Work (retrying): {e}");
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
