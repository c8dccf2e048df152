//! The steps every kdfed controller takes the same way around its own logic: read the
//! latest object (reporting a malformed one without stalling the others), own it through a
//! finalizer, write its status conditionally on what the plan was made from, and retry
//! failures.

use std::fmt::{Debug, Display};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::core::error_boundary::DeserializeGuard;
use kube::core::object::HasStatus;
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use crate::events::Recorder;
use crate::{ApiError, Doing};

/// How long a failed reconcile waits before it runs again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The object a reconcile was triggered for, read fresh from the API server, with the API
/// of its namespace; `None` when it is gone or malformed.
///
/// Status is a controller's memory (members, node ids, placements): planning from a watch
/// cache that lags behind the controller's own last write would repeat work. A malformed
/// object (one that does not decode into `K`) gets a Warning Event with `reason` and is
/// left until it changes, so it never stalls the others.
pub async fn latest<K>(
    guard: &DeserializeGuard<K>,
    client: &Client,
    recorder: &Recorder,
    reason: &str,
) -> Result<Option<(Api<K>, K)>, ApiError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
{
    let cached = match &guard.0 {
        Ok(object) => object,
        Err(invalid) => {
            warn!(error = %invalid.error, "ignoring malformed {}", K::kind(&()));
            let message = format!("malformed {}: {}", K::kind(&()), invalid.error);
            recorder.publish(guard, true, reason, &message).await;
            return Ok(None);
        }
    };
    let ns = cached.namespace().unwrap_or_else(|| "default".into());
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let name = cached.name_any();
    let what = format!("read {} {ns}/{name}", K::kind(&()));
    Ok(api.get_opt(&name).await.doing(what)?.map(|object| (api, object)))
}

/// Adds `finalizer` to `object` unless it has it; true when it was added, after which the
/// caller should plan from the new object (its resourceVersion changed). The patch carries
/// the resourceVersion read, so it is a compare-and-swap: a concurrent change fails it and
/// the reconcile retries.
pub async fn add_finalizer<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<bool, ApiError>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    if object.finalizers().iter().any(|f| f == finalizer) {
        return Ok(false);
    }
    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(finalizer.to_string());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": object.resource_version()}});
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await.doing("add finalizer")?;
    Ok(true)
}

/// Removes `finalizer` from `object` (a compare-and-swap like [`add_finalizer`]); an object
/// already gone is fine.
pub async fn remove_finalizer<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<(), ApiError>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let finalizers: Vec<&String> = object.finalizers().iter().filter(|f| *f != finalizer).collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": object.resource_version()}});
    match api.patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(|_| ()).doing("remove finalizer"),
    }
}

/// Writes `object`'s whole status with server-side apply as `field_manager`, conditional
/// on the resourceVersion the plan was made from: a concurrent change makes this fail and
/// the reconcile retry from the new object.
pub async fn apply_status<K>(api: &Api<K>, object: &K, status: &K::Status, field_manager: &str) -> Result<(), ApiError>
where
    K: Resource<DynamicType = ()> + HasStatus + Clone + Debug + DeserializeOwned,
    K::Status: Serialize,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"resourceVersion": object.resource_version()},
        "status": status,
    });
    api.patch_status(&object.name_any(), &PatchParams::apply(field_manager).force(), &Patch::Apply(patch))
        .await
        .doing("write status")?;
    Ok(())
}

/// The error policy of kdfed's controllers: log and try again after [`RETRY_AFTER`].
pub fn retry<K, E: Display, C>(_: Arc<K>, error: &E, _: Arc<C>) -> Action {
    warn!("reconcile failed: {error}");
    Action::requeue(RETRY_AFTER)
}
