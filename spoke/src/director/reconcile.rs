//! The controller around the pure planner: watches, API calls, status and Events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus};
use kdfed_crds::config::{CONFIG_NAME, KubeDirectorConfig};
use kdfed_crds::federation::ANNOTATION_FENCED;
use kdfed_crds::{defaults, validate};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::build::{self, Inputs};
use super::members::{self, ClusterFacts, PodView, RoleWanted};
use super::names;

/// Field manager of everything the director writes.
pub const FIELD_MANAGER: &str = "kdfed-director";

/// Errors of one reconcile; each is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("{action}: {source}")]
    Kube {
        /// What the director was doing.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An object could not be built.
    #[error(transparent)]
    Build(#[from] build::BuildError),
}

trait Doing<T> {
    fn doing(self, action: impl Into<String>) -> Result<T, Error>;
}

impl<T> Doing<T> for Result<T, kube::Error> {
    fn doing(self, action: impl Into<String>) -> Result<T, Error> {
        self.map_err(|source| Error::Kube { action: action.into(), source })
    }
}

/// Shared state of the director's reconciles.
pub struct Context {
    /// Client of the member's API server.
    pub client: Client,
    /// Namespace of the system app catalog and the `KubeDirectorConfig`.
    pub system_namespace: String,
    /// Event recorder.
    pub recorder: kdfed_common::events::Recorder,
}

/// Runs the director until the stream ends (shutdown).
pub async fn run(client: Client, system_namespace: String) {
    let recorder = kdfed_common::events::Recorder::new(client.clone(), "kdfed-director");
    let ctx = Arc::new(Context { client: client.clone(), system_namespace, recorder });
    let clusters: Api<DeserializeGuard<KubeDirectorCluster>> = Api::all(client.clone());
    let owned = watcher::Config::default().labels(names::LABEL_CLUSTER);
    Controller::new(clusters, watcher::Config::default())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .watches(Api::<Pod>::all(client.clone()), owned, |pod: Pod| {
            let cluster = pod.labels().get(names::LABEL_CLUSTER)?.clone();
            Some(ObjectRef::new(&cluster).within(&pod.namespace()?))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!("director: {e}");
            }
        })
        .await;
}

fn error_policy(_: Arc<DeserializeGuard<KubeDirectorCluster>>, error: &Error, _: Arc<Context>) -> Action {
    warn!("reconcile failed: {error}");
    Action::requeue(Duration::from_secs(5))
}

async fn publish(ctx: &Context, cluster: &KubeDirectorCluster, warning: bool, reason: &str, note: String) {
    if let Err(e) = ctx.recorder.record(cluster, warning, reason, &note).await {
        warn!("cannot record event: {e}");
    }
}

async fn reconcile(guard: Arc<DeserializeGuard<KubeDirectorCluster>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let cached = match &guard.0 {
        Ok(c) => c,
        Err(invalid) => {
            // A malformed object must not stall the others: report it and wait for a change.
            warn!(error = %invalid.error, "ignoring malformed KubeDirectorCluster");
            let message = format!("malformed KubeDirectorCluster: {}", invalid.error);
            if let Err(e) = ctx.recorder.record(guard.as_ref(), true, "Cluster", &message).await {
                warn!("cannot record event: {e}");
            }
            return Ok(Action::await_change());
        }
    };
    let ns = cached.namespace().unwrap_or_else(|| "default".into());
    let api: Api<KubeDirectorCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let name = cached.name_any();
    // The status is the director's memory (members, node ids); plan from the latest one,
    // not from a watch cache that may lag behind our own last write.
    let Some(fresh) = api.get_opt(&name).await.doing("read cluster")? else {
        return Ok(Action::await_change());
    };
    let cluster = &fresh;
    let span = tracing::info_span!("reconcile", cluster = %format!("{ns}/{name}"));
    let _enter = span.enter();

    if cluster.metadata.deletion_timestamp.is_some() {
        return cleanup(cluster, &api, &ctx).await;
    }
    if !cluster.finalizers().iter().any(|f| f == names::FINALIZER) {
        let mut finalizers = cluster.finalizers().to_vec();
        finalizers.push(names::FINALIZER.to_string());
        // resourceVersion makes this a compare-and-swap: a concurrent change retries.
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": cluster.resource_version()}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.doing("add finalizer")?;
        // The patch changed the resourceVersion; plan from the new object next time.
        return Ok(Action::requeue(Duration::from_millis(50)));
    }

    if cluster.annotations().get(ANNOTATION_FENCED).is_some_and(|v| v == "true") {
        return fence(cluster, &api, &ctx).await;
    }

    // Dereference: the app (local, then system catalog) and the global config.
    let found = kdfed_common::catalog::find_app(
        &ctx.client,
        &ns,
        &ctx.system_namespace,
        &cluster.spec.app,
        cluster.spec.app_catalog.as_deref(),
    )
    .await
    .doing("read app")?;
    let (app, catalog) = match found {
        Some(found) => found,
        None => {
            let message = format!("Invalid app({}). This app resource ID has not been registered.", cluster.spec.app);
            invalid(&ctx, cluster, &api, "spec.app", &message).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let config = Api::<KubeDirectorConfig>::namespaced(ctx.client.clone(), &ctx.system_namespace)
        .get_opt(CONFIG_NAME)
        .await
        .doing("read KubeDirectorConfig")?
        .map(|c| c.spec);

    // Validate against the app, with defaults applied.
    let mut app_spec = app.spec.clone();
    defaults::app(&mut app_spec);
    let mut spec = cluster.spec.clone();
    defaults::cluster(&mut spec, &app_spec, config.as_ref());
    if let Err(errors) = validate::app(&app_spec).and_then(|()| validate::cluster(&spec, &cluster.spec.app, &app_spec))
    {
        invalid(&ctx, cluster, &api, "spec", &errors.to_string()).await?;
        return Ok(Action::await_change());
    }

    // Observe pods and StatefulSets of this cluster.
    let selector = format!("{}={}", names::LABEL_CLUSTER, name);
    let lp = ListParams::default().labels(&selector);
    let pod_list = Api::<Pod>::namespaced(ctx.client.clone(), &ns).list(&lp).await.doing("list pods")?;
    let pods: BTreeMap<String, PodView> = pod_list.items.iter().map(|p| (p.name_any(), pod_view(p))).collect();
    let sts_list =
        Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns).list(&lp).await.doing("list statefulsets")?;
    let existing: BTreeSet<String> = sts_list.items.iter().map(ResourceExt::name_any).collect();

    let facts = ClusterFacts {
        name: name.clone(),
        uid: cluster.metadata.uid.clone().unwrap_or_default(),
        naming_scheme: spec.naming_scheme.clone().unwrap_or_default(),
        retain_pvcs_when_scaled: spec.retain_pvcs_when_scaled(),
        namespace: ns.clone(),
        domain_base: config
            .as_ref()
            .and_then(|c| c.cluster_svc_domain_base.clone())
            .unwrap_or_else(|| defaults::DEFAULT_SVC_DOMAIN_BASE.to_string()),
    };
    let wanted: Vec<RoleWanted> = spec
        .roles
        .iter()
        .map(|r| {
            let app_role = app_spec.role(&r.id);
            RoleWanted {
                id: r.id.clone(),
                members: build::desired_members(&spec, &app_spec, &r.id),
                storage: r.storage.is_some(),
                ports: !build::exposed_ports(&app_spec, &r.id).is_empty(),
                setup_package: app_role.is_some_and(build::has_setup_package),
            }
        })
        .collect();
    let old_status = cluster.status.clone().unwrap_or_default();
    let plan = members::plan(&facts, &wanted, &old_status, &pods, &existing);

    // Apply: headless Service, StatefulSets, member Services; then deletions.
    let headless = plan.status.cluster_service.clone().unwrap_or_default();
    let inputs = Inputs {
        cluster,
        spec: &spec,
        app_name: &cluster.spec.app,
        app: &app_spec,
        config: config.as_ref(),
        app_catalog: &catalog,
        headless: &headless,
    };
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    services.patch(&headless, &pp, &Patch::Apply(inputs.headless_service()?)).await.doing("apply headless service")?;
    for (sts_name, (role_id, replicas)) in &plan.statefulsets {
        let Some(role) = spec.roles.iter().find(|r| &r.id == role_id).cloned() else {
            // A role removed from the spec keeps its StatefulSet, scaled down, until its
            // members are gone.
            if existing.contains(sts_name) {
                let patch = json!({"spec": {"replicas": replicas}});
                statefulsets
                    .patch(sts_name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .doing("scale statefulset")?;
            }
            continue;
        };
        let sts = inputs.statefulset(&role, sts_name, *replicas)?;
        statefulsets.patch(sts_name, &pp, &Patch::Apply(sts)).await.doing(format!("apply statefulset {sts_name}"))?;
    }
    for (role_id, pod) in &plan.member_services {
        let Some(role) = spec.roles.iter().find(|r| &r.id == role_id) else { continue };
        if let Some(svc) = inputs.member_service(role, pod)? {
            services.patch(&names::member_service(pod), &pp, &Patch::Apply(svc)).await.doing("apply member service")?;
        }
    }
    for sts_name in &plan.delete_statefulsets {
        ignore_missing(statefulsets.delete(sts_name, &DeleteParams::background()).await).doing("delete statefulset")?;
    }
    for svc in &plan.delete_services {
        ignore_missing(services.delete(svc, &DeleteParams::background()).await).doing("delete member service")?;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for pvc in &plan.delete_pvcs {
        ignore_missing(pvcs.delete(pvc, &DeleteParams::background()).await).doing("delete member pvc")?;
    }

    // Status, with the Valid condition, then Events.
    let mut status = plan.status.clone();
    status.conditions = kdfed_common::conditions::set_condition(
        &old_status.conditions,
        "Valid",
        "True",
        "Valid",
        "spec is valid",
        cluster.metadata.generation,
    );
    if status != old_status {
        write_status(&api, cluster, &status).await?;
    }
    for e in &plan.events {
        info!(reason = e.reason, "{}", e.message);
        publish(&ctx, cluster, e.warning, e.reason, e.message.clone()).await;
    }
    Ok(if plan.settled { Action::requeue(Duration::from_secs(300)) } else { Action::requeue(Duration::from_secs(2)) })
}

fn ignore_missing<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn pod_view(pod: &Pod) -> PodView {
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

/// Writes the whole status with server-side apply, conditional on the resourceVersion the
/// plan was made from: a concurrent change makes this fail and the reconcile retry.
async fn write_status(
    api: &Api<KubeDirectorCluster>,
    cluster: &KubeDirectorCluster,
    status: &KubeDirectorClusterStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": kdfed_crds::KUBEDIRECTOR_API_VERSION,
        "kind": "KubeDirectorCluster",
        "metadata": {"resourceVersion": cluster.resource_version()},
        "status": status,
    });
    let name = cluster.name_any();
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch))
        .await
        .doing("write status")?;
    Ok(())
}

/// Records that the spec cannot be built as asked: `Valid=False`, a Warning Event; nothing
/// already running is touched.
async fn invalid(
    ctx: &Context,
    cluster: &KubeDirectorCluster,
    api: &Api<KubeDirectorCluster>,
    field: &str,
    message: &str,
) -> Result<(), Error> {
    let old = cluster.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.conditions = kdfed_common::conditions::set_condition(
        &old.conditions,
        "Valid",
        "False",
        "InvalidSpec",
        message,
        cluster.metadata.generation,
    );
    if status != old {
        write_status(api, cluster, &status).await?;
        publish(ctx, cluster, true, "Cluster", format!("{field}: {message}")).await;
    }
    warn!(field, "{message}");
    Ok(())
}

/// A fenced copy (its placement moved to another member): every StatefulSet goes to zero
/// replicas with its PVCs retained, and nothing else happens until the fence is lifted.
async fn fence(cluster: &KubeDirectorCluster, api: &Api<KubeDirectorCluster>, ctx: &Context) -> Result<Action, Error> {
    let ns = cluster.namespace().unwrap_or_else(|| "default".into());
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = ListParams::default().labels(&format!("{}={}", names::LABEL_CLUSTER, cluster.name_any()));
    for sts in statefulsets.list(&lp).await.doing("list statefulsets")?.items {
        let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let retained =
            sts.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref()).is_some_and(|p| {
                p.when_scaled.as_deref() == Some("Retain") && p.when_deleted.as_deref() == Some("Retain")
            });
        if replicas != 0 || !retained {
            // Retain first (same patch): scaling down must never take PVCs with it.
            let patch = json!({"spec": {"replicas": 0,
                "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Retain", "whenDeleted": "Retain"}}});
            statefulsets
                .patch(&sts.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                .await
                .doing("fence statefulset")?;
            info!(statefulset = %sts.name_any(), "fenced: scaled to zero, PVCs retained");
        }
    }
    let old = cluster.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.state = Some("fenced".to_string());
    status.conditions = kdfed_common::conditions::set_condition(
        &old.conditions,
        "Fenced",
        "True",
        "PlacementMoved",
        "this copy's placement moved to another member: scaled to zero, PVCs kept",
        cluster.metadata.generation,
    );
    if status != old {
        write_status(api, cluster, &status).await?;
        publish(
            ctx,
            cluster,
            true,
            "Cluster",
            "fenced: placement moved to another member; scaled to zero, PVCs kept".into(),
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// Deletion: remove StatefulSets, Services and (unless retained) PVCs, wait until the pods
/// are gone, then release the finalizer.
async fn cleanup(
    cluster: &KubeDirectorCluster,
    api: &Api<KubeDirectorCluster>,
    ctx: &Context,
) -> Result<Action, Error> {
    if !cluster.finalizers().iter().any(|f| f == names::FINALIZER) {
        return Ok(Action::await_change());
    }
    let ns = cluster.namespace().unwrap_or_else(|| "default".into());
    let name = cluster.name_any();
    let lp = ListParams::default().labels(&format!("{}={}", names::LABEL_CLUSTER, name));
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams::background();
    let mut remaining = 0;
    for sts in statefulsets.list(&lp).await.doing("list statefulsets")?.items {
        remaining += 1;
        ignore_missing(statefulsets.delete(&sts.name_any(), &dp).await).doing("delete statefulset")?;
    }
    for svc in services.list(&lp).await.doing("list services")?.items {
        ignore_missing(services.delete(&svc.name_any(), &dp).await).doing("delete service")?;
    }
    remaining += pods.list(&lp).await.doing("list pods")?.items.len();
    if !cluster.spec.retain_pvcs_when_deleted() {
        for pvc in pvcs.list(&lp).await.doing("list pvcs")?.items {
            if pvc.metadata.deletion_timestamp.is_none() {
                ignore_missing(pvcs.delete(&pvc.name_any(), &dp).await).doing("delete pvc")?;
            }
        }
    }
    if remaining > 0 {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    publish(ctx, cluster, false, "Cluster", "greenlighting for deletion".into()).await;
    let finalizers: Vec<String> = cluster.finalizers().iter().filter(|f| *f != names::FINALIZER).cloned().collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": cluster.resource_version()}});
    ignore_missing(api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await).doing("remove finalizer")?;
    info!("cleanup done");
    Ok(Action::await_change())
}
