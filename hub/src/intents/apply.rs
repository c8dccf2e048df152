//! Apply: the writes of a pass over an intent. The Secret beside the Work, then the Work
//! (server-side apply with the hub's field manager), the intent's status, and the release
//! of a Work a failover leaves behind.

use k8s_openapi::api::core::v1::Secret;
use kdfed_common::{ApiError, Doing};
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus};
use kdfed_crds::federation::{ANNOTATION_DESIRED_DIGEST, KubeDirectorWork, WorkSecretData, member_namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::FIELD_MANAGER;
use super::build_work::Built;

/// The digest of a built Work and its Secret (hex SHA-256 of their serialized form; maps
/// are ordered, so equal content gives equal digests), kept in the Work's
/// [`ANNOTATION_DESIRED_DIGEST`]. A pass that would write the same again writes nothing: at
/// 10,000 clusters, a Work and a Secret applied on every pass were most of the hub's
/// requests, and a restarted hub rewrote them all.
pub fn digest(work: &KubeDirectorWork, secret: Option<&Secret>) -> String {
    let value = serde_json::json!({
        "spec": work.spec,
        "labels": work.metadata.labels,
        "finalizers": work.metadata.finalizers,
        "secret": secret.map(|s| (&s.data, &s.metadata.labels)),
    });
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    let hash = ring::digest::digest(&ring::digest::SHA256, &bytes);
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `existing` already carries what `built` (of `digest`, with or without secret
/// material) would write. The stored spec is compared too: a Work edited by hand on the hub
/// keeps the digest annotation of what the hub wrote, and must still be put back.
pub fn unchanged(
    existing: Option<&KubeDirectorWork>,
    built: &KubeDirectorWork,
    digest: &str,
    has_material: bool,
) -> bool {
    existing.is_some_and(|w| {
        w.annotations().get(ANNOTATION_DESIRED_DIGEST).map(String::as_str) == Some(digest)
            && w.spec.secret_data.is_some() == has_material
            && w.metadata.deletion_timestamp.is_none()
            && same_spec(w, built)
    })
}

/// Whether the stored Work's spec is the built one (the Secret's name and version, set
/// when the Secret is written, aside).
fn same_spec(stored: &KubeDirectorWork, built: &KubeDirectorWork) -> bool {
    let mut spec = stored.spec.clone();
    spec.secret_data = built.spec.secret_data.clone();
    spec == built.spec
}

/// Applies a built Work and the Secret beside it, unless `existing` carries them already
/// (see [`ANNOTATION_DESIRED_DIGEST`]); returns the Work as it is now.
pub async fn work_if_changed(
    client: &Client,
    mut built: Built,
    existing: Option<KubeDirectorWork>,
) -> Result<KubeDirectorWork, ApiError> {
    let digest = digest(&built.work, built.secret.as_ref());
    let had_material = existing.as_ref().is_some_and(|w| w.spec.secret_data.is_some());
    if let Some(existing) = existing.filter(|w| unchanged(Some(w), &built.work, &digest, built.secret.is_some())) {
        return Ok(existing);
    }
    built.work.annotations_mut().insert(ANNOTATION_DESIRED_DIGEST.to_string(), digest);
    work(client, built, had_material).await
}

/// Applies a built Work and the Secret beside it (first, so the Work can name the Secret's
/// `resourceVersion`: a changed value then reaches the member cluster as a new Work
/// generation). Without secret material, a Secret an earlier Work had (`had_material`) is
/// deleted. Returns the Work as applied.
pub async fn work(client: &Client, built: Built, had_material: bool) -> Result<KubeDirectorWork, ApiError> {
    let Built { mut work, secret, .. } = built;
    let member_ns = work.namespace().unwrap_or_default();
    let wname = work.name_any();
    work.spec.secret_data = match secret {
        Some(secret) => {
            let applied = Api::<Secret>::namespaced(client.clone(), &member_ns)
                .patch(&wname, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(secret))
                .await
                .doing("apply the Work's secret material")?;
            Some(WorkSecretData {
                name: wname.clone(),
                resource_version: applied.resource_version().unwrap_or_default(),
            })
        }
        None => {
            if had_material {
                delete_work_secret(client, &member_ns, &wname).await?;
            }
            None
        }
    };
    Api::<KubeDirectorWork>::namespaced(client.clone(), &member_ns)
        .patch(&wname, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(work))
        .await
        .doing("apply work")
}

/// Deletes the Secret beside Work `wname` (gone already is fine).
pub async fn delete_work_secret(client: &Client, member_ns: &str, wname: &str) -> Result<(), ApiError> {
    match Api::<Secret>::namespaced(client.clone(), member_ns).delete(wname, &DeleteParams::background()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(|_| ()).doing("delete the Work's secret material"),
    }
}

/// Writes the intent's whole status (see [`kdfed_common::reconcile::apply_status`]).
pub async fn status(
    api: &Api<KubeDirectorCluster>,
    intent: &KubeDirectorCluster,
    status: &KubeDirectorClusterStatus,
) -> Result<(), ApiError> {
    kdfed_common::reconcile::apply_status(api, intent, status, FIELD_MANAGER).await
}

/// Lets the Work `wname` on a member cluster go without that member's cleanup: its
/// finalizer removed, then the Work and its Secret deleted (gone already is fine).
pub async fn release_work(client: &Client, member_cluster: &str, wname: &str) -> Result<(), ApiError> {
    let member_ns = member_namespace(member_cluster);
    let works: Api<KubeDirectorWork> = Api::namespaced(client.clone(), &member_ns);
    if works.get_opt(wname).await.doing("read work")?.is_none() {
        return Ok(());
    }
    release_finalizer(&works, wname, "release old work").await?;
    match works.delete(wname, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(source) => return Err(ApiError { action: "delete old work".into(), source }),
    }
    delete_work_secret(client, &member_ns, wname).await
}

/// Removes every finalizer of Work `wname` (the member's cleanup will not be awaited).
pub async fn release_finalizer(works: &Api<KubeDirectorWork>, wname: &str, action: &str) -> Result<(), ApiError> {
    // A merge patch with null clears the list whoever added its entries.
    let release = json!({"metadata": {"finalizers": null}});
    works.patch(wname, &PatchParams::default(), &Patch::Merge(release)).await.doing(action).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn built_work() -> KubeDirectorWork {
        let mut w = KubeDirectorWork::new("default.db", Default::default());
        w.metadata.labels = Some([("origin".to_string(), "db".to_string())].into());
        w.spec.origin.name = "db".into();
        w.spec.placement_epoch = 1;
        w
    }

    fn secret(value: &str) -> Secret {
        Secret { data: Some([("k".to_string(), ByteString(value.as_bytes().to_vec()))].into()), ..Secret::default() }
    }

    #[test]
    fn a_work_written_before_with_the_same_content_is_not_written_again() {
        let work = built_work();
        let d = digest(&work, None);
        assert_eq!(d, digest(&built_work(), None), "equal content, equal digest");
        let mut stored = work.clone();
        stored.annotations_mut().insert(ANNOTATION_DESIRED_DIGEST.into(), d.clone());
        stored.metadata.resource_version = Some("42".into());
        assert!(unchanged(Some(&stored), &work, &d, false));
        assert!(!unchanged(None, &work, &d, false), "no Work yet");

        let mut next = built_work();
        next.spec.placement_epoch = 2;
        assert!(!unchanged(Some(&stored), &next, &digest(&next, None), false), "a new epoch is written");
        assert!(!unchanged(Some(&stored), &work, &digest(&work, Some(&secret("a"))), true), "new secret material");
        assert_ne!(digest(&work, Some(&secret("a"))), digest(&work, Some(&secret("b"))), "a changed secret value");
        let mut deleting = stored.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::from_second(1).expect("time")));
        assert!(!unchanged(Some(&deleting), &work, &d, false));
        let mut edited = stored.clone();
        edited.spec.placement_epoch = 7;
        assert!(!unchanged(Some(&edited), &work, &d, false), "a spec edited by hand on the hub is put back");
        let mut unannotated = stored;
        unannotated.metadata.annotations = None;
        assert!(!unchanged(Some(&unannotated), &work, &d, false), "written by an earlier hub: written once more");
    }
}
