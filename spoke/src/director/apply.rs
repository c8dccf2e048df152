//! The apply step: an applier over the changes the plan step built, in the spirit of
//! stackable operator-rs's cluster resources. Objects are written with server-side apply
//! as the director's one field manager; the first refused change stops the pass, and the
//! cluster is tried again after its backoff (the controller's error policy).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use kdfed_common::{ApiError, Doing};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

/// Field manager of everything the director writes.
pub const FIELD_MANAGER: &str = "kdfed-director";

/// One change to the objects of a cluster (with the object's name), in the order the plan
/// lists them.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The cluster's headless Service, applied.
    HeadlessService(String, Service),
    /// A role's StatefulSet, applied (boxed: it is by far the largest change).
    StatefulSet(String, Box<StatefulSet>),
    /// A StatefulSet whose role left the spec, scaled (a merge patch: the director no longer
    /// builds it, and it keeps running until its members are gone).
    Scale {
        /// StatefulSet name.
        name: String,
        /// Replicas to keep.
        replicas: i32,
    },
    /// A member's Service, applied.
    MemberService(String, Service),
    /// A StatefulSet to delete.
    DeleteStatefulSet(String),
    /// A member Service to delete.
    DeleteService(String),
    /// A member PVC to delete.
    DeletePvc(String),
}

/// Applies a cluster's changes in one namespace.
pub struct Applier {
    services: Api<Service>,
    statefulsets: Api<StatefulSet>,
    pvcs: Api<PersistentVolumeClaim>,
}

impl Applier {
    /// An applier for the objects of namespace `ns`.
    pub fn new(client: &Client, ns: &str) -> Applier {
        Applier {
            services: Api::namespaced(client.clone(), ns),
            statefulsets: Api::namespaced(client.clone(), ns),
            pvcs: Api::namespaced(client.clone(), ns),
        }
    }

    /// Makes every change in order; stops at the first the API server refuses, naming it.
    /// Deleting an object already gone succeeds.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), ApiError> {
        for change in changes {
            self.apply_one(change).await?;
        }
        Ok(())
    }

    async fn apply_one(&self, change: &Change) -> Result<(), ApiError> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let background = DeleteParams::background();
        match change {
            Change::HeadlessService(name, svc) => {
                let applied = self.services.patch(name, &pp, &Patch::Apply(svc)).await;
                applied.map(drop).doing(format!("apply headless service {name}"))
            }
            Change::StatefulSet(name, sts) => {
                let applied = self.statefulsets.patch(name, &pp, &Patch::Apply(sts)).await;
                applied.map(drop).doing(format!("apply statefulset {name}"))
            }
            Change::Scale { name, replicas } => {
                let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
                self.statefulsets
                    .patch(name, &PatchParams::default(), &patch)
                    .await
                    .map(drop)
                    .doing("scale statefulset")
            }
            Change::MemberService(name, svc) => {
                let applied = self.services.patch(name, &pp, &Patch::Apply(svc)).await;
                applied.map(drop).doing(format!("apply member service {name}"))
            }
            Change::DeleteStatefulSet(name) => {
                ignore_missing(self.statefulsets.delete(name, &background).await).doing("delete statefulset")
            }
            Change::DeleteService(name) => {
                ignore_missing(self.services.delete(name, &background).await).doing("delete member service")
            }
            Change::DeletePvc(name) => {
                ignore_missing(self.pvcs.delete(name, &background).await).doing("delete member pvc")
            }
        }
    }
}

/// A delete's result, with "already gone" counted as done.
pub fn ignore_missing<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
