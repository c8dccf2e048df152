//! The steps every kdfed controller takes the same way around its own logic: read the
//! latest object (reporting a malformed one without stalling the others), own it through a
//! finalizer, write its status conditionally on what the plan was made from, and retry
//! failures.

use std::collections::{HashMap, VecDeque};
use std::fmt::{Debug, Display};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::core::error_boundary::DeserializeGuard;
use kube::core::object::HasStatus;
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::events::Recorder;
use crate::{ApiError, Doing};

/// How long a failed reconcile waits before it runs again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The pause after a watch error of a controller's triggers: doubling from
/// [`TriggerBackoff::FIRST`] up to [`TriggerBackoff::MAX`], back to the first after any event.
///
/// kube-runtime pauses *all* of a controller's watches (its own and those of `owns` and
/// `watches`) after an error of any one of them, and its default pause grows to 30 s and only
/// shrinks after 120 s without errors. After an API server restart every watch fails a few
/// times (connection refused, then `410 Expired` as it resumes from a resource version the
/// new watch cache no longer has), so a controller with five watches saw nothing new for
/// minutes (found by the chaos suite: clusters created after the hub's API server came back
/// were not placed for 2–3 minutes). A short cap keeps that to seconds; a watch re-established
/// every few seconds costs the API server nothing worth saving.
#[derive(Clone, Debug)]
pub struct TriggerBackoff {
    next: Duration,
}

impl TriggerBackoff {
    /// The first pause.
    pub const FIRST: Duration = Duration::from_millis(250);
    /// The longest pause.
    pub const MAX: Duration = Duration::from_secs(3);
}

impl Default for TriggerBackoff {
    fn default() -> Self {
        TriggerBackoff { next: Self::FIRST }
    }
}

impl Iterator for TriggerBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (now * 2).min(Self::MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for TriggerBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

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
    let patch = finalizers_patch(object, finalizers);
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await.doing("add finalizer")?;
    Ok(true)
}

/// Removes `finalizer` from `object` (a compare-and-swap like [`add_finalizer`]); an object
/// already gone is fine.
pub async fn remove_finalizer<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<(), ApiError>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let finalizers = object.finalizers().iter().filter(|f| *f != finalizer).cloned().collect();
    let patch = finalizers_patch(object, finalizers);
    match api.patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(|_| ()).doing("remove finalizer"),
    }
}

/// A merge patch of metadata alone.
#[derive(Debug, Serialize)]
struct MetadataPatch {
    metadata: ObjectMeta,
}

/// The merge patch that sets `object`'s finalizers, conditional on its resourceVersion.
fn finalizers_patch<K: Resource>(object: &K, finalizers: Vec<String>) -> MetadataPatch {
    MetadataPatch {
        metadata: ObjectMeta {
            finalizers: Some(finalizers),
            resource_version: object.resource_version(),
            ..Default::default()
        },
    }
}

/// A server-side apply of an object's status alone (the status subresource ignores the
/// rest), conditional on the resourceVersion in `metadata`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusApply<'a, S> {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    status: &'a S,
}

// By hand: statuses need not be `Debug` for `write_status`, and a patch's Debug (in kube's
// logs) names the object, not the status it carries.
impl<S> Debug for StatusApply<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusApply")
            .field("kind", &self.kind)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
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
    write_status(api, object, status, field_manager).await.map(|_| ())
}

/// [`apply_status`], returning the object as written (for [`OwnWrites::record`]).
pub async fn write_status<K>(api: &Api<K>, object: &K, status: &K::Status, field_manager: &str) -> Result<K, ApiError>
where
    K: Resource<DynamicType = ()> + HasStatus + Clone + Debug + DeserializeOwned,
    K::Status: Serialize,
{
    let patch = StatusApply {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        metadata: ObjectMeta { resource_version: object.resource_version(), ..Default::default() },
        status,
    };
    api.patch_status(&object.name_any(), &PatchParams::apply(field_manager).force(), &Patch::Apply(patch))
        .await
        .doing("write status")
}

/// The key of an object in [`Backoff`] and [`OwnWrites`]: `namespace/name`.
pub fn key<K: Resource>(object: &K) -> String {
    format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any())
}

/// Per-object exponential backoff of failed reconciles: an object's first failure waits
/// `base`, each further one twice as long, up to `max`; a success starts it over. One
/// failing object never slows the others down.
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// A backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max, failures: Mutex::default() }
    }

    /// Records a failed reconcile of `key`; how long to wait before the next one.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let n = failures.entry(key.to_string()).or_insert(0);
        let delay = self.base.saturating_mul(2u32.saturating_pow(*n)).min(self.max);
        *n = n.saturating_add(1);
        delay
    }

    /// Records a successful reconcile of `key` (or that it is gone): the next failure
    /// waits `base` again.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

/// How many resourceVersions of one object [`OwnWrites`] remembers.
const OWN_WRITES_KEPT: usize = 8;

/// The resourceVersions a controller's own writes produced, per object. Its watch drops
/// the events of exactly those versions, so a reconcile's writes (status, annotations)
/// never wake that same reconcile; changes by anyone else still do. Only writes that were
/// conditional on the resourceVersion read may be recorded: such an event then carries
/// the controller's change and nothing else.
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<String, VecDeque<String>>>);

impl OwnWrites {
    /// Remembers `written`, an object as the API server returned it from this controller's write.
    pub fn record<K: Resource>(&self, written: &K) {
        let Some(version) = written.resource_version() else { return };
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let versions = map.entry(key(written)).or_default();
        versions.push_back(version);
        while versions.len() > OWN_WRITES_KEPT {
            versions.pop_front();
        }
    }

    /// Whether `seen` (from a watch) is a version this controller wrote; it is then
    /// forgotten, with any older one.
    pub fn is_own<K: Resource>(&self, seen: &K) -> bool {
        let Some(version) = seen.resource_version() else { return false };
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let k = key(seen);
        let Some(versions) = map.get_mut(&k) else { return false };
        let Some(at) = versions.iter().position(|v| *v == version) else { return false };
        versions.drain(..=at);
        if versions.is_empty() {
            map.remove(&k);
        }
        true
    }

    /// Forgets an object (it is gone).
    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

/// Logs what a controller's run reports: an object deleted while it waited in the queue
/// (`ObjectNotFound`) is expected and only a debug line; anything else is a warning.
pub fn log_run_error<RE, QE>(controller: &str, error: &kube::runtime::controller::Error<RE, QE>)
where
    RE: std::error::Error + 'static,
    QE: std::error::Error + 'static,
{
    match error {
        kube::runtime::controller::Error::ObjectNotFound(object) => {
            tracing::debug!("{controller}: {object} was deleted while queued")
        }
        other => warn!("{controller}: {other}"),
    }
}

/// The error policy of kdfed's controllers: log and try again after [`RETRY_AFTER`].
pub fn retry<K, E: Display, C>(_: Arc<K>, error: &E, _: Arc<C>) -> Action {
    warn!("reconcile failed: {error}");
    Action::requeue(RETRY_AFTER)
}

/// Whether `actual` holds every field `desired` sets, with the same value (objects may have
/// more fields, lists must match element by element; a null sets nothing). What a
/// server-side apply of `desired` would not change, so it need not be sent.
pub fn covers(actual: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (actual, desired) {
        (_, Value::Null) => true,
        (Value::Object(a), Value::Object(d)) => d.iter().all(|(k, v)| covers(a.get(k).unwrap_or(&Value::Null), v)),
        (Value::Array(a), Value::Array(d)) => a.len() == d.len() && a.iter().zip(d).all(|(a, d)| covers(a, d)),
        (a, d) => a == d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizer_and_status_patches_are_conditional_on_the_resource_version() {
        let mut cm = k8s_openapi::api::core::v1::ConfigMap::default();
        cm.metadata.resource_version = Some("42".into());
        let patch = serde_json::to_value(finalizers_patch(&cm, vec!["a/b".into()])).expect("json");
        assert_eq!(patch, serde_json::json!({"metadata": {"finalizers": ["a/b"], "resourceVersion": "42"}}));
        // The last finalizer removed: an empty list, not an absent one.
        let patch = serde_json::to_value(finalizers_patch(&cm, Vec::new())).expect("json");
        assert_eq!(patch, serde_json::json!({"metadata": {"finalizers": [], "resourceVersion": "42"}}));
        let status = serde_json::json!({"state": "configured"});
        let apply = StatusApply {
            api_version: "kubedirector.hpe.com/v1beta1".into(),
            kind: "KubeDirectorCluster".into(),
            metadata: ObjectMeta { resource_version: Some("42".into()), ..Default::default() },
            status: &status,
        };
        assert_eq!(
            serde_json::to_value(apply).expect("json"),
            serde_json::json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
                "metadata": {"resourceVersion": "42"}, "status": {"state": "configured"}})
        );
    }

    #[test]
    fn watch_errors_pause_the_triggers_briefly_and_never_for_long() {
        use kube::runtime::utils::Backoff;
        let mut b = TriggerBackoff::default();
        let pauses: Vec<Duration> = b.by_ref().take(8).collect();
        assert_eq!(pauses[0], TriggerBackoff::FIRST);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(pauses[7], TriggerBackoff::MAX, "capped: {pauses:?}");
        b.reset();
        assert_eq!(b.next(), Some(TriggerBackoff::FIRST), "an event resets it");
    }
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn version(name: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn backoff_doubles_per_object_up_to_the_maximum_and_starts_over_after_a_success() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = (0..6).map(|_| backoff.failed("default/a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff.failed("default/b"), Duration::from_secs(1), "per object");
        backoff.succeeded("default/a");
        assert_eq!(backoff.failed("default/a"), Duration::from_secs(1));
        for _ in 0..100 {
            backoff.failed("default/c");
        }
        assert_eq!(backoff.failed("default/c"), Duration::from_secs(10), "no overflow");
    }

    #[test]
    fn own_writes_are_recognised_once_and_others_pass() {
        let own = OwnWrites::default();
        own.record(&version("a", "10"));
        own.record(&version("a", "12"));
        assert!(!own.is_own(&version("a", "9")), "someone else's change");
        assert!(!own.is_own(&version("b", "10")), "another object");
        assert!(own.is_own(&version("a", "10")));
        assert!(!own.is_own(&version("a", "10")), "each event is consumed once");
        assert!(!own.is_own(&version("a", "11")), "a change between two own writes");
        assert!(own.is_own(&version("a", "12")));
        own.record(&version("a", "20"));
        own.forget("default/a");
        assert!(!own.is_own(&version("a", "20")));
        for rv in 0..20 {
            own.record(&version("c", &rv.to_string()));
        }
        assert!(!own.is_own(&version("c", "0")), "only the latest versions are kept");
        assert!(own.is_own(&version("c", "19")));
    }
}
