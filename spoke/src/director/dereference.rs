//! The dereference step: everything one reconcile of a cluster reads besides the cluster
//! itself — its app, the `KubeDirectorConfig`, its pods, StatefulSets and claims and the objects
//! its `spec.connections` names — each read once, with one error policy: a missing object
//! is a fact the later steps handle, any other API error fails the pass (a guess would,
//! for example, fake a connections change).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kdfed_common::{ApiError, Doing};
use kdfed_crds::app::KubeDirectorApp;
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::config::{CONFIG_NAME, KubeDirectorConfig, KubeDirectorConfigSpec};
use kube::api::{Api, ListParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::{Client, ResourceExt};

use super::claims::ClaimView;
use super::connections::{Connected, ConnectedCluster};
use super::members::PodView;
use super::names;

/// What the director read for one pass over a cluster.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The cluster's app (local catalog first, then the system one) and where it was found.
    pub app: Option<(KubeDirectorApp, String)>,
    /// The global `KubeDirectorConfig`, if there is one.
    pub config: Option<KubeDirectorConfigSpec>,
    /// The cluster's pods by name.
    pub pods: BTreeMap<String, PodView>,
    /// Names of the cluster's StatefulSets.
    pub statefulsets: BTreeSet<String>,
    /// The claims labelled with the cluster.
    pub claims: Vec<ClaimView>,
    /// What `spec.connections` names.
    pub connected: Connected,
    /// The `kdapp` label of the StatefulSets' selectors: the app the cluster was built
    /// with (a selector never changes), none before it has StatefulSets.
    pub selector_app: Option<String>,
    /// The resource versions of everything read (the cluster, its app and config, pods,
    /// StatefulSets, Services and claims), hashed: equal fingerprints mean nothing the
    /// pass reads or writes changed in between.
    pub fingerprint: u64,
}

/// Hashes the resource versions of `objects` (by name) into `hasher`.
fn versions<'a, K: ResourceExt + 'a>(hasher: &mut impl Hasher, kind: &str, objects: impl IntoIterator<Item = &'a K>) {
    for o in objects {
        (kind, o.name_any(), o.resource_version()).hash(hasher);
    }
}

/// Reads what one pass over `cluster` needs; `system_namespace` holds the system app
/// catalog and the `KubeDirectorConfig`.
pub async fn read(
    client: &Client,
    system_namespace: &str,
    cluster: &KubeDirectorCluster,
) -> Result<Observed, ApiError> {
    let ns = cluster.namespace().unwrap_or_else(|| "default".into());
    let app = find_app(client, &ns, system_namespace, cluster).await.doing("read app")?;
    let config = Api::<KubeDirectorConfig>::namespaced(client.clone(), system_namespace)
        .get_opt(CONFIG_NAME)
        .await
        .doing("read KubeDirectorConfig")?;
    let lp = ListParams::default().labels(&format!("{}={}", names::LABEL_CLUSTER, cluster.name_any()));
    let pod_list = Api::<Pod>::namespaced(client.clone(), &ns).list(&lp).await.doing("list pods")?;
    let pods = pod_list.items.iter().map(|p| (p.name_any(), pod_view(p))).collect();
    let sts_list = Api::<StatefulSet>::namespaced(client.clone(), &ns).list(&lp).await.doing("list statefulsets")?;
    let statefulsets = sts_list.items.iter().map(ResourceExt::name_any).collect();
    let selector_app = sts_list
        .items
        .iter()
        .filter_map(|s| s.spec.as_ref()?.selector.match_labels.as_ref()?.get(names::LABEL_APP).cloned())
        .min();
    let claim_list =
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).list(&lp).await.doing("list claims")?;
    let claims = claim_list.items.iter().map(claim_view).collect();
    let svc_list = Api::<Service>::namespaced(client.clone(), &ns).list(&lp).await.doing("list services")?;
    let connected = connected(client, system_namespace, &ns, cluster).await?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    versions(&mut hasher, "cluster", [cluster]);
    versions(&mut hasher, "app", app.iter().map(|(a, _)| a));
    versions(&mut hasher, "config", config.iter());
    versions(&mut hasher, "pod", &pod_list.items);
    versions(&mut hasher, "statefulset", &sts_list.items);
    versions(&mut hasher, "service", &svc_list.items);
    versions(&mut hasher, "claim", &claim_list.items);
    let fingerprint = hasher.finish();
    let config = config.map(|c| c.spec);
    Ok(Observed { app, config, pods, statefulsets, claims, connected, selector_app, fingerprint })
}

async fn find_app(
    client: &Client,
    ns: &str,
    system_namespace: &str,
    cluster: &KubeDirectorCluster,
) -> Result<Option<(KubeDirectorApp, String)>, kube::Error> {
    let (app, catalog) = (&cluster.spec.app, cluster.spec.app_catalog.as_deref());
    kdfed_common::catalog::find_app(client, ns, system_namespace, app, catalog).await
}

/// Reads what `cluster`'s `spec.connections` names, and the app of each connected cluster
/// other than `cluster` itself (configmeta describes it).
async fn connected(
    client: &Client,
    system_namespace: &str,
    ns: &str,
    cluster: &KubeDirectorCluster,
) -> Result<Connected, ApiError> {
    let mut out = Connected::default();
    let Some(wanted) = &cluster.spec.connections else { return Ok(out) };
    let clusters: Api<DeserializeGuard<KubeDirectorCluster>> = Api::namespaced(client.clone(), ns);
    for name in &wanted.clusters {
        let Some(found) = clusters.get_opt(name).await.doing("read connected cluster")? else {
            out.clusters.push((name.clone(), None));
            continue;
        };
        let other = found.0.ok();
        let app = match &other {
            Some(other) if other.name_any() != cluster.name_any() => {
                find_app(client, ns, system_namespace, other).await.doing("read connected cluster's app")?
            }
            _ => None,
        };
        out.clusters.push((name.clone(), Some(ConnectedCluster { cluster: other, app: app.map(|(a, _)| a.spec) })));
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in &wanted.configmaps {
        out.configmaps.push((name.clone(), configmaps.get_opt(name).await.doing("read connected configmap")?));
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in &wanted.secrets {
        out.secrets.push((name.clone(), secrets.get_opt(name).await.doing("read connected secret")?));
    }
    Ok(out)
}

/// What the stray-claim rule needs of a claim.
pub fn claim_view(claim: &PersistentVolumeClaim) -> ClaimView {
    ClaimView {
        name: claim.name_any(),
        cluster: claim.labels().get(names::LABEL_CLUSTER).cloned(),
        deleting: claim.metadata.deletion_timestamp.is_some(),
    }
}

/// What the member planner needs of a pod.
pub fn pod_view(pod: &Pod) -> PodView {
    let status = pod.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    let ready = conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
    let unschedulable = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| c.message.clone().unwrap_or_else(|| c.reason.clone().unwrap_or_default()));
    let app = status.container_statuses.unwrap_or_default().into_iter().find(|c| c.name == names::APP_CONTAINER);
    let app_state = app.as_ref().and_then(|c| c.state.as_ref()).map(|s| {
        if s.running.is_some() {
            "running"
        } else if s.terminated.is_some() {
            "terminated"
        } else {
            "waiting"
        }
        .to_string()
    });
    let initializing = status
        .init_container_statuses
        .unwrap_or_default()
        .iter()
        .any(|c| c.state.as_ref().is_none_or(|s| s.terminated.is_none()));
    PodView {
        phase: status.phase.unwrap_or_default(),
        ready,
        app_container_id: app.and_then(|c| c.container_id).filter(|id| !id.is_empty()),
        app_state,
        initializing,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        unschedulable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(objects: &[(&str, &str)], claims: &[(&str, &str)]) -> u64 {
        let meta = |name: &str, version: &str| kube::api::ObjectMeta {
            name: Some(name.into()),
            resource_version: Some(version.into()),
            ..Default::default()
        };
        let pods: Vec<Pod> = objects.iter().map(|(n, v)| Pod { metadata: meta(n, v), ..Pod::default() }).collect();
        let claims: Vec<PersistentVolumeClaim> =
            claims.iter().map(|(n, v)| PersistentVolumeClaim { metadata: meta(n, v), ..Default::default() }).collect();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        versions(&mut hasher, "pod", &pods);
        versions(&mut hasher, "claim", &claims);
        hasher.finish()
    }

    #[test]
    fn the_fingerprint_changes_with_any_version_name_or_kind() {
        let base = fingerprint(&[("p-0", "10"), ("p-1", "11")], &[("p-p-0", "12")]);
        assert_eq!(base, fingerprint(&[("p-0", "10"), ("p-1", "11")], &[("p-p-0", "12")]));
        assert_ne!(base, fingerprint(&[("p-0", "10"), ("p-1", "13")], &[("p-p-0", "12")]), "a newer pod");
        assert_ne!(base, fingerprint(&[("p-0", "10")], &[("p-p-0", "12")]), "a pod gone");
        assert_ne!(base, fingerprint(&[("p-0", "10"), ("p-1", "11")], &[]), "a claim gone");
        assert_ne!(base, fingerprint(&[("p-0", "10"), ("p-1", "11"), ("p-p-0", "12")], &[]), "a claim is no pod");
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p-0"}, "status": status})).expect("pod")
    }

    #[test]
    fn a_running_ready_pod_shows_its_app_container() {
        let view = pod_view(&pod(serde_json::json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "sidecar", "containerID": "containerd://x", "ready": true, "restartCount": 0,
                 "image": "i", "imageID": "", "state": {"running": {}}},
                {"name": "app", "containerID": "containerd://a", "ready": true, "restartCount": 0,
                 "image": "i", "imageID": "", "state": {"running": {}}}
            ],
            "initContainerStatuses": [{"name": "init", "ready": false, "restartCount": 0, "image": "i",
                                       "imageID": "", "state": {"terminated": {"exitCode": 0}}}]
        })));
        assert_eq!(
            view,
            PodView {
                phase: "Running".into(),
                ready: true,
                app_container_id: Some("containerd://a".into()),
                app_state: Some("running".into()),
                ..PodView::default()
            }
        );
    }

    #[test]
    fn an_unscheduled_pod_says_why_and_is_still_initializing() {
        let view = pod_view(&pod(serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
            "initContainerStatuses": [{"name": "init", "ready": false, "restartCount": 0, "image": "i",
                                       "imageID": "", "state": {"waiting": {}}}]
        })));
        assert_eq!(view.unschedulable.as_deref(), Some("Unschedulable"), "no message: the reason");
        assert!(view.initializing && !view.ready && view.app_container_id.is_none() && view.app_state.is_none());
        let empty = pod_view(&pod(serde_json::json!({"containerStatuses": [
            {"name": "app", "containerID": "", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
             "state": {"terminated": {"exitCode": 1}}}]})));
        assert_eq!(empty.app_container_id, None, "an empty id is no id");
        assert_eq!(empty.app_state.as_deref(), Some("terminated"));
    }
}
