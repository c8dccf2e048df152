//! The objects Work sync writes, built from a Work without any API call: the namespace,
//! app, Secrets and ConfigMaps the local copy needs, the local copy itself, and the Work's
//! status. Typed, so what is written is what the kinds define.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kdfed_common::conditions::set_condition;
use kdfed_crds::cluster::{KubeDirectorClusterSpec, KubeDirectorClusterStatus};
use kdfed_crds::federation::{
    ANNOTATION_EPOCH, ANNOTATION_ORIGIN, KubeDirectorWork, KubeDirectorWorkStatus, LABEL_WORK, WorkConfigMap,
    WorkSecret,
};
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use super::Error;

/// Label on the local app copy: kdfed manages it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Metadata of an object hub sync writes in `namespace`.
fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

/// `labels` plus the label that says which Work made the object.
fn work_labels(labels: &BTreeMap<String, String>, work: &KubeDirectorWork) -> BTreeMap<String, String> {
    let mut labels = labels.clone();
    labels.insert(LABEL_WORK.to_string(), work.name_any());
    labels
}

/// Base64 values (as the Work carries them) as bytes; `what` names the object in errors.
fn decoded(
    values: &BTreeMap<String, String>,
    what: impl Fn() -> String,
) -> Result<BTreeMap<String, ByteString>, Error> {
    let engine = base64::engine::general_purpose::STANDARD;
    values
        .iter()
        .map(|(k, v)| match engine.decode(v) {
            Ok(bytes) => Ok((k.clone(), ByteString(bytes))),
            Err(e) => Err(Error::Build { object: what(), message: format!("the value of {k} is not base64: {e}") }),
        })
        .collect()
}

/// The namespace of the local copy.
pub fn namespace(name: &str) -> Namespace {
    Namespace { metadata: ObjectMeta { name: Some(name.to_string()), ..ObjectMeta::default() }, ..Namespace::default() }
}

/// The app the Work froze, beside the local copy.
pub fn app(work: &KubeDirectorWork) -> KubeDirectorApp {
    let labels = BTreeMap::from([(LABEL_MANAGED_BY.to_string(), "kdfed".to_string())]);
    let mut app = KubeDirectorApp::new(&work.spec.app.name, work.spec.app.spec.clone());
    app.metadata = meta(&work.spec.app.name, &work.spec.cluster.namespace, labels);
    app
}

/// A Secret the cluster references, with `data` (base64, from the Work's secret material
/// or the Work itself).
pub fn secret(work: &KubeDirectorWork, s: &WorkSecret, data: &BTreeMap<String, String>) -> Result<Secret, Error> {
    let namespace = &work.spec.cluster.namespace;
    let data = decoded(data, || format!("Secret {namespace}/{}", s.name))?;
    let mut metadata = meta(&s.name, namespace, work_labels(&s.labels, work));
    metadata.annotations = Some(s.annotations.clone());
    Ok(Secret { metadata, type_: s.type_.clone(), data: Some(data), ..Secret::default() })
}

/// A ConfigMap the cluster connects to, with its type label, so the director sees it as a
/// connection.
pub fn config_map(work: &KubeDirectorWork, c: &WorkConfigMap) -> Result<ConfigMap, Error> {
    let namespace = &work.spec.cluster.namespace;
    let binary_data = decoded(&c.binary_data, || format!("ConfigMap {namespace}/{}", c.name))?;
    let mut metadata = meta(&c.name, namespace, work_labels(&c.labels, work));
    metadata.annotations = Some(c.annotations.clone());
    Ok(ConfigMap { metadata, data: Some(c.data.clone()), binary_data: Some(binary_data), ..ConfigMap::default() })
}

/// The local copy the director runs: the Work's cluster with `spec` (secret keys filled in
/// and sealed), labelled with the Work and annotated with its epoch and origin.
pub fn local_copy(work: &KubeDirectorWork, spec: KubeDirectorClusterSpec) -> KubeDirectorCluster {
    let cluster = &work.spec.cluster;
    let origin = format!("{}/{}", work.spec.origin.namespace, work.spec.origin.name);
    let mut copy = KubeDirectorCluster::new(&cluster.name, spec);
    copy.metadata = meta(&cluster.name, &cluster.namespace, work_labels(&cluster.labels, work));
    copy.metadata.annotations = Some(BTreeMap::from([
        (ANNOTATION_EPOCH.to_string(), work.spec.placement_epoch.to_string()),
        (ANNOTATION_ORIGIN.to_string(), origin),
    ]));
    copy
}

/// The director's condition that it processed a generation of the copy's spec.
const CONDITION_VALID: &str = crate::director::status::CONDITION_VALID;

/// The spec to apply to the local copy this pass, given the copy as stored (if any). The
/// member's admission takes a change of `spec.app` only alone (rule `upgrade-alone`) and no
/// other change while the app's rollout runs (`upgrade-in-progress`), but a Work can carry
/// both at once: the user changed the app on the hub and then, before this member applied
/// it (its spoke down, say), another field; applying both was refused on every pass and the
/// cluster stayed as it was. So an app change goes first, alone, on the stored spec, and the
/// rest of `wanted` waits until the rollout has finished (each change of the copy wakes Work
/// sync). The end state is the Work's spec either way. The rest also waits while the
/// director has not processed the copy's last spec (its `Valid` condition is of an older
/// generation): a rollout is recorded in the status only by that pass, and until then the
/// member's admission cannot tell that one is coming (a shrink slipped in there and removed
/// a member the rollout had planned).
pub fn staged_spec(stored: Option<&KubeDirectorCluster>, wanted: KubeDirectorClusterSpec) -> KubeDirectorClusterSpec {
    let Some(stored) = stored.filter(|c| c.metadata.deletion_timestamp.is_none()) else { return wanted };
    let status = stored.status.as_ref();
    let rollout = status.and_then(|s| s.upgrade.as_ref()).is_some_and(|u| u.in_progress());
    let valid = status.and_then(|s| kdfed_common::conditions::condition(&s.conditions, CONDITION_VALID));
    let processed = valid.is_some_and(|c| c.observed_generation == stored.metadata.generation);
    if stored.spec.app == wanted.app && !rollout && processed {
        return wanted;
    }
    let mut app_alone = stored.spec.clone();
    app_alone.app = wanted.app;
    app_alone
}

/// Whether the Work already reports `local` for its generation and epoch, as applied. A
/// reported failure is replaced as soon as a pass succeeds.
pub fn already_reported(work: &KubeDirectorWork, local: Option<&KubeDirectorClusterStatus>) -> bool {
    work.status.as_ref().is_some_and(|s| {
        s.observed_generation == work.metadata.generation
            && s.applied_epoch == Some(work.spec.placement_epoch)
            && s.cluster_status.as_ref() == local
            && s.conditions.iter().any(|c| c.type_ == "Applied" && c.status == "True")
    })
}

/// The Work's status once its local copy is applied: the director's status of the copy,
/// `Applied=True`, and `Ready` from the copy's state. Conditions keep their transition time
/// while their status stays the same.
pub fn work_status(
    work: &KubeDirectorWork,
    local: Option<&KubeDirectorClusterStatus>,
    now: Time,
) -> KubeDirectorWorkStatus {
    let generation = work.metadata.generation;
    let state = local.and_then(|s| s.state.as_deref());
    let ready = state == Some("configured");
    let old = work.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = set_condition(old, "Applied", "True", "Applied", "local copy applied", generation);
    let (status, reason) = if ready { ("True", "Configured") } else { ("False", "Reconciling") };
    let message = format!("local state {}", state.unwrap_or("pending"));
    let conditions = set_condition(&conditions, "Ready", status, reason, &message, generation);
    KubeDirectorWorkStatus {
        observed_generation: generation,
        applied_epoch: Some(work.spec.placement_epoch),
        cluster_status: local.cloned(),
        report_time: Some(now),
        conditions,
    }
}

/// The Work's conditions after a failed pass (`Applied=False`, reason `ApplyFailed`, with
/// `message`), or `None` when they already say exactly that for this generation, so a
/// failure that repeats is not written again.
pub fn failure_conditions(work: &KubeDirectorWork, message: &str) -> Option<Vec<Condition>> {
    let generation = work.metadata.generation;
    let old = work.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let same = old.iter().any(|c| {
        c.type_ == "Applied"
            && c.status == "False"
            && c.reason == "ApplyFailed"
            && c.message == message
            && c.observed_generation == generation
    });
    (!same).then(|| set_condition(old, "Applied", "False", "ApplyFailed", message, generation))
}

/// A server-side apply of a Work's status alone (the spec is the hub's).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusApply<'a> {
    api_version: String,
    kind: String,
    status: &'a KubeDirectorWorkStatus,
}

/// The apply that writes `status` into a Work.
pub fn status_apply(status: &KubeDirectorWorkStatus) -> StatusApply<'_> {
    StatusApply {
        api_version: KubeDirectorWork::api_version(&()).into_owned(),
        kind: KubeDirectorWork::kind(&()).into_owned(),
        status,
    }
}

/// A merge patch of a Work's conditions alone.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConditionsPatch {
    status: ConditionsOnly,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct ConditionsOnly {
    conditions: Vec<Condition>,
}

/// The merge patch that replaces a Work's conditions with `conditions`.
pub fn conditions_patch(conditions: Vec<Condition>) -> ConditionsPatch {
    ConditionsPatch { status: ConditionsOnly { conditions } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdfed_crds::cluster::Role;
    use kdfed_crds::federation::{KubeDirectorWorkSpec, WorkApp, WorkCluster, WorkOrigin};
    use serde_json::json;

    fn work() -> KubeDirectorWork {
        let role = Role { id: "worker".into(), members: Some(2), ..Role::default() };
        let spec = KubeDirectorWorkSpec {
            origin: WorkOrigin { namespace: "team".into(), name: "db".into(), uid: "u1".into(), generation: 3 },
            placement_epoch: 4,
            app: WorkApp { name: "spark".into(), spec: Default::default() },
            cluster: WorkCluster {
                namespace: "team".into(),
                name: "db".into(),
                labels: BTreeMap::from([("tier".to_string(), "data".to_string())]),
                spec: KubeDirectorClusterSpec { app: "spark".into(), roles: vec![role], ..Default::default() },
            },
            ..KubeDirectorWorkSpec::default()
        };
        let mut work = KubeDirectorWork::new("team.db", spec);
        work.metadata.namespace = Some("kdfed-member-east".into());
        work.metadata.generation = Some(7);
        work
    }

    fn state(state: &str) -> KubeDirectorClusterStatus {
        KubeDirectorClusterStatus { state: Some(state.into()), ..Default::default() }
    }

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(second).expect("time"))
    }

    fn condition<'a>(status: &'a KubeDirectorWorkStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).expect("condition")
    }

    fn spec(app: &str, workers: i32) -> KubeDirectorClusterSpec {
        let role = Role { id: "worker".into(), members: Some(workers), ..Role::default() };
        KubeDirectorClusterSpec { app: app.into(), roles: vec![role], ..Default::default() }
    }

    /// A stored copy at generation 5 whose director processed it, with a rollout's phase.
    fn stored(app: &str, workers: i32, rollout_phase: Option<&str>) -> KubeDirectorCluster {
        let mut copy = KubeDirectorCluster::new("db", spec(app, workers));
        copy.metadata.generation = Some(5);
        copy.status = Some(KubeDirectorClusterStatus {
            upgrade: rollout_phase.map(|phase| kdfed_crds::cluster::UpgradeStatus {
                from: "spark".into(),
                to: "spark-2".into(),
                phase: phase.into(),
                ..Default::default()
            }),
            conditions: set_condition(&[], CONDITION_VALID, "True", "Valid", "spec is valid", Some(5)),
            ..Default::default()
        });
        copy
    }

    #[test]
    fn an_app_change_carried_with_a_resize_is_applied_alone_first_and_the_resize_after_the_rollout() {
        // Seed 13987469361830639158, round 19: upgrade on the hub, east's spoke down, then a
        // shrink on the hub; the member refused app + shrink together on every pass.
        let wanted = spec("spark-2", 1);
        let first = staged_spec(Some(&stored("spark", 4, None)), wanted.clone());
        assert_eq!(first, spec("spark-2", 4), "the app change alone, on the stored spec");
        let during = staged_spec(Some(&stored("spark-2", 4, Some("Upgrading"))), wanted.clone());
        assert_eq!(during, spec("spark-2", 4), "nothing else while the rollout runs");
        let failed = staged_spec(Some(&stored("spark-2", 4, Some("Failed"))), wanted.clone());
        assert_eq!(failed, spec("spark-2", 4), "a failed rollout still runs: only the app may change");
        // The app change applied, the director not yet past it: no rollout in the status yet.
        let mut unprocessed = stored("spark-2", 4, None);
        unprocessed.metadata.generation = Some(6);
        assert_eq!(
            staged_spec(Some(&unprocessed), wanted.clone()),
            spec("spark-2", 4),
            "nothing before the director saw it"
        );
        let after = staged_spec(Some(&stored("spark-2", 4, Some("Completed"))), wanted.clone());
        assert_eq!(after, wanted, "the rest once the rollout finished");
    }

    #[test]
    fn a_rollback_during_a_rollout_goes_alone_and_plain_changes_pass_unchanged() {
        let back = staged_spec(Some(&stored("spark-2", 4, Some("Upgrading"))), spec("spark", 2));
        assert_eq!(back, spec("spark", 4));
        assert_eq!(staged_spec(None, spec("spark-2", 3)), spec("spark-2", 3), "a new copy is built as asked");
        assert_eq!(staged_spec(Some(&stored("spark", 4, None)), spec("spark", 2)), spec("spark", 2));
        let mut deleting = stored("spark", 4, None);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(staged_spec(Some(&deleting), spec("spark-2", 2)), spec("spark-2", 2));
    }

    #[test]
    fn the_local_copy_carries_the_work_label_epoch_and_origin() {
        let work = work();
        let spec = work.spec.cluster.spec.clone();
        let copy = serde_json::to_value(local_copy(&work, spec)).expect("json");
        assert_eq!(
            copy,
            json!({
                "apiVersion": kdfed_crds::KUBEDIRECTOR_API_VERSION, "kind": "KubeDirectorCluster",
                "metadata": {
                    "name": "db", "namespace": "team",
                    "labels": {"tier": "data", LABEL_WORK: "team.db"},
                    "annotations": {ANNOTATION_EPOCH: "4", ANNOTATION_ORIGIN: "team/db"},
                },
                "spec": serde_json::to_value(&work.spec.cluster.spec).expect("spec"),
            }),
            "the Work's own annotations are not copied, and no status is sent"
        );
    }

    #[test]
    fn the_app_and_namespace_are_plain_copies() {
        let app = serde_json::to_value(app(&work())).expect("json");
        assert_eq!(app["kind"], "KubeDirectorApp");
        assert_eq!(
            app["metadata"],
            json!({"name": "spark", "namespace": "team", "labels": {LABEL_MANAGED_BY: "kdfed"}})
        );
        assert!(app.get("status").is_none());
        let ns = serde_json::to_value(namespace("team")).expect("json");
        assert_eq!(ns, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}));
    }

    #[test]
    fn secrets_and_config_maps_keep_their_data_and_are_labelled_with_the_work() {
        let work = work();
        let s = WorkSecret {
            name: "creds".into(),
            type_: Some("Opaque".into()),
            labels: BTreeMap::from([("kubedirector.hpe.com/secretType".to_string(), "x".to_string())]),
            ..WorkSecret::default()
        };
        let data = BTreeMap::from([("password".to_string(), "aHVudGVyMg==".to_string())]);
        let built = serde_json::to_value(secret(&work, &s, &data).expect("secret")).expect("json");
        assert_eq!(
            built,
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "creds", "namespace": "team", "annotations": {},
                             "labels": {"kubedirector.hpe.com/secretType": "x", LABEL_WORK: "team.db"}},
                "data": {"password": "aHVudGVyMg=="},
            })
        );
        let c = WorkConfigMap {
            name: "settings".into(),
            data: BTreeMap::from([("a".to_string(), "b".to_string())]),
            binary_data: BTreeMap::from([("bin".to_string(), "AAEC".to_string())]),
            ..WorkConfigMap::default()
        };
        let cm = serde_json::to_value(config_map(&work, &c).expect("configmap")).expect("json");
        assert_eq!(cm["data"], json!({"a": "b"}));
        assert_eq!(cm["binaryData"], json!({"bin": "AAEC"}));
        assert_eq!(cm["metadata"]["labels"], json!({LABEL_WORK: "team.db"}));

        let bad = BTreeMap::from([("password".to_string(), "not base64!".to_string())]);
        let e = secret(&work, &s, &bad).expect_err("not base64");
        assert_eq!(e.step(), "build");
        assert!(e.to_string().starts_with("Secret team/creds: the value of password is not base64"), "{e}");
    }

    #[test]
    fn the_work_status_reports_the_copy_applied_and_ready_once_configured() {
        let work = work();
        let status = work_status(&work, Some(&state("configured")), at(100));
        assert_eq!(status.observed_generation, Some(7));
        assert_eq!(status.applied_epoch, Some(4));
        assert_eq!(status.cluster_status, Some(state("configured")));
        assert_eq!(status.report_time, Some(at(100)));
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Applied", "Ready"]);
        let applied = condition(&status, "Applied");
        assert_eq!((applied.status.as_str(), applied.reason.as_str()), ("True", "Applied"));
        assert_eq!((applied.message.as_str(), applied.observed_generation), ("local copy applied", Some(7)));
        let ready = condition(&status, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Configured"));
        assert_eq!(ready.message, "local state configured");

        let pending = work_status(&work, None, at(100));
        let ready = condition(&pending, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Reconciling"));
        assert_eq!(ready.message, "local state pending");
        assert_eq!(pending.cluster_status, None);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut work = work();
        let mut status = work_status(&work, Some(&state("creating")), at(100));
        for c in &mut status.conditions {
            c.last_transition_time = at(1_000);
        }
        work.status = Some(status);

        // Still not ready (another state): neither condition changes status, so both keep
        // the time they last changed.
        let same = work_status(&work, Some(&state("updating")), at(200));
        assert_eq!(condition(&same, "Ready").message, "local state updating");
        assert_eq!(condition(&same, "Ready").last_transition_time, at(1_000));
        assert_eq!(condition(&same, "Applied").last_transition_time, at(1_000));

        // Ready now: that condition moves on, Applied (still True) does not.
        let ready = work_status(&work, Some(&state("configured")), at(300));
        assert_eq!(condition(&ready, "Ready").status, "True");
        assert!(condition(&ready, "Ready").last_transition_time.0 > at(1_000).0);
        assert_eq!(condition(&ready, "Applied").last_transition_time, at(1_000));
    }

    #[test]
    fn a_status_already_reported_is_not_written_again() {
        let mut work = work();
        assert!(!already_reported(&work, None), "nothing reported yet");
        work.status = Some(work_status(&work, Some(&state("configured")), at(100)));
        assert!(already_reported(&work, Some(&state("configured"))));
        assert!(!already_reported(&work, Some(&state("updating"))), "the copy's status changed");
        assert!(!already_reported(&work, None));
        work.metadata.generation = Some(8);
        assert!(!already_reported(&work, Some(&state("configured"))), "a new generation");
        work.metadata.generation = Some(7);
        work.spec.placement_epoch = 5;
        assert!(!already_reported(&work, Some(&state("configured"))), "a new epoch");
        work.spec.placement_epoch = 4;
        let failed = failure_conditions(&work, "refused").expect("a new failure");
        work.status.as_mut().expect("status").conditions = failed;
        assert!(!already_reported(&work, Some(&state("configured"))), "a reported failure is replaced");
    }

    #[test]
    fn a_failure_is_written_once_per_message_and_generation() {
        let mut work = work();
        work.status = Some(work_status(&work, Some(&state("configured")), at(100)));
        let conditions = failure_conditions(&work, "webhook refused").expect("first failure");
        let applied = conditions.iter().find(|c| c.type_ == "Applied").expect("applied");
        assert_eq!((applied.status.as_str(), applied.reason.as_str()), ("False", "ApplyFailed"));
        assert_eq!((applied.message.as_str(), applied.observed_generation), ("webhook refused", Some(7)));
        assert!(conditions.iter().any(|c| c.type_ == "Ready"), "Ready is kept");
        work.status.as_mut().expect("status").conditions = conditions;
        assert_eq!(failure_conditions(&work, "webhook refused"), None, "the same failure again");
        assert!(failure_conditions(&work, "another reason").is_some());
        work.metadata.generation = Some(8);
        assert!(failure_conditions(&work, "webhook refused").is_some(), "a new generation");
    }

    #[test]
    fn status_writes_carry_the_status_alone() {
        let work = work();
        let status = work_status(&work, None, at(100));
        let apply = serde_json::to_value(status_apply(&status)).expect("json");
        assert_eq!(apply["apiVersion"], "federation.kubedirector.hpe.com/v1alpha1");
        assert_eq!(apply["kind"], "KubeDirectorWork");
        assert_eq!(apply["status"], serde_json::to_value(&status).expect("status"));
        assert!(apply.get("spec").is_none() && apply.get("metadata").is_none());
        let patch = serde_json::to_value(conditions_patch(status.conditions.clone())).expect("json");
        assert_eq!(patch, json!({"status": {"conditions": serde_json::to_value(&status.conditions).expect("c")}}));
    }
}
