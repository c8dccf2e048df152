//! Fencing of local copies whose Work is gone from the hub: their placement moved to
//! another member (a failover) or was released without the member's cleanup. The copy is
//! annotated [`ANNOTATION_FENCED`], so the director scales it to zero and keeps its PVCs;
//! it never runs beside the new placement. Work sync lifts the fence when a newer epoch
//! brings the placement back. (Self-fencing while the hub cannot be reached is
//! [`crate::fencing`], which needs no answer from the hub.)

use kdfed_common::{ApiError, Doing};
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{ANNOTATION_FENCED, KubeDirectorWork, LABEL_WORK};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tracing::warn;

use super::{Error, SyncContext};

/// Whether a copy still to be fenced: not fenced yet and not being deleted.
pub fn needs_fence(copy: &KubeDirectorCluster) -> bool {
    let fenced = copy.annotations().get(ANNOTATION_FENCED).is_some_and(|v| v == "true");
    !fenced && copy.metadata.deletion_timestamp.is_none()
}

/// Fences those of the member's federated `copies` (the report pass lists them once for this
/// and for the count by state) whose Work no longer exists on the hub and returns all such
/// copies (`namespace/name`), fenced now or before. A Work in Work sync's cache exists; only
/// one missing there is read from the hub, and only a definite "not found" fences; errors
/// change nothing. So a member whose Works are all in place asks the hub nothing here.
pub(super) async fn fence_orphans(ctx: &SyncContext, copies: &[KubeDirectorCluster]) -> Result<Vec<String>, Error> {
    orphans(ctx, copies).await.map_err(Error::Fence)
}

async fn orphans(ctx: &SyncContext, copies: &[KubeDirectorCluster]) -> Result<Vec<String>, ApiError> {
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let mut fenced = Vec::new();
    for c in copies {
        let Some(work) = c.labels().get(LABEL_WORK).cloned() else { continue };
        let cached = ctx.works.get().is_some_and(|store| {
            store.get(&kube::runtime::reflector::ObjectRef::new(&work).within(&ctx.namespace())).is_some()
        });
        if cached || works.get_opt(&work).await.doing("read work")?.is_some() {
            continue;
        }
        let key = format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any());
        if needs_fence(c) {
            let api: Api<KubeDirectorCluster> = Api::namespaced(ctx.local.clone(), &c.namespace().unwrap_or_default());
            let patch = crate::fencing::annotation(ANNOTATION_FENCED, Some("true"));
            match api.patch(&c.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
                // Listed from the API server's cache, the copy was already gone.
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                other => other.doing("fence local copy")?,
            };
            warn!(cluster = %key, work = %work, "its Work is gone from the hub: fenced (scaled to zero, PVCs kept)");
        }
        fenced.push(key);
    }
    Ok(fenced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_fenced_once_and_never_while_it_is_deleted() {
        let mut copy = KubeDirectorCluster::new("db", Default::default());
        assert!(needs_fence(&copy));
        copy.annotations_mut().insert(ANNOTATION_FENCED.into(), "true".into());
        assert!(!needs_fence(&copy), "already fenced");
        copy.annotations_mut().clear();
        copy.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(1_000_000).expect("time"),
        ));
        assert!(!needs_fence(&copy), "being deleted");
    }
}
