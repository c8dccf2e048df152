//! The controller around the pure planner: watches, API calls, status and Events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kdfed_crds::app::KubeDirectorAppSpec;
use kdfed_crds::cluster::{Connections, KubeDirectorCluster, KubeDirectorClusterSpec, KubeDirectorClusterStatus};
use kdfed_crds::config::{CONFIG_NAME, KubeDirectorConfig};
use kdfed_crds::federation::{ANNOTATION_FENCED, ANNOTATION_SELF_FENCED};
use kdfed_crds::{defaults, validate};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::build::{self, Inputs};
use super::connections::{self, CONN_UPDATE_COUNTER, HASH_CHANGE_COUNTER};
use super::members::{self, ClusterFacts, PodView, RoleWanted, SetupOutcome};
use super::{configmeta, names, setup};
use crate::metrics::SpokeMetrics;
use kdfed_common::Doing;
use kdfed_common::reconcile;

/// Field manager of everything the director writes.
pub const FIELD_MANAGER: &str = "kdfed-director";

/// Wait after a cluster's first failed reconcile; it doubles with each further failure.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between failed reconciles of one cluster.
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// Condition type: whether the member's API server took every object the cluster needs.
pub const CONDITION_APPLIED: &str = "Applied";
/// Reason (condition and Warning Event) of an apply the member's API server refused.
pub const REASON_APPLY_FAILED: &str = "ApplyFailed";
/// Longest API server message kept in the `Applied` condition and its Event.
const MAX_APPLY_MESSAGE: usize = 1024;

/// Errors of one reconcile; each is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error(transparent)]
    Kube(#[from] kdfed_common::ApiError),
    /// An object could not be built.
    #[error(transparent)]
    Build(#[from] build::BuildError),
}

/// Shared state of the director's reconciles.
pub struct Context {
    /// Client of the member's API server.
    pub client: Client,
    /// Namespace of the system app catalog and the `KubeDirectorConfig`.
    pub system_namespace: String,
    /// Event recorder.
    pub recorder: kdfed_common::events::Recorder,
    /// The spoke's metrics (setup-script runs, reconciles).
    pub metrics: Arc<SpokeMetrics>,
    /// The configcli package installed in members of roles with a setup package, if any.
    pub configcli: Option<setup::ConfigcliPackage>,
    /// When this process saw each `--configure` start (`namespace/pod/container`), to time it.
    pub configure_started: Mutex<HashMap<String, Instant>>,
    /// Failed reconciles per cluster, for exponential backoff.
    pub backoff: reconcile::Backoff,
    /// The cluster versions the director wrote itself: their watch events are dropped.
    pub own_writes: reconcile::OwnWrites,
}

/// Label that makes a ConfigMap visible in configmeta's `connections.configmaps`.
pub const LABEL_CONFIGMAP_TYPE: &str = "kubedirector.hpe.com/cmType";
/// Label that makes a Secret visible in configmeta's `connections.secrets`.
pub const LABEL_SECRET_TYPE: &str = "kubedirector.hpe.com/secretType";

type ClusterStore = Store<DeserializeGuard<KubeDirectorCluster>>;

/// Clusters in `namespace` whose `spec.connections` list `name` under `pick`.
fn connecting(
    store: &ClusterStore,
    namespace: Option<String>,
    name: &str,
    pick: fn(&Connections) -> &Vec<String>,
) -> Vec<ObjectRef<DeserializeGuard<KubeDirectorCluster>>> {
    let Some(ns) = namespace else { return Vec::new() };
    store
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|c| c.namespace().as_deref() == Some(ns.as_str()))
        .filter(|c| c.spec.connections.as_ref().is_some_and(|k| pick(k).iter().any(|n| n == name)))
        .map(|c| ObjectRef::new(&c.name_any()).within(&ns))
        .collect()
}

/// Runs the director until the stream ends (shutdown); `configcli`, when given, is
/// installed in every member of a role with a setup package.
pub async fn run(
    client: Client,
    system_namespace: String,
    metrics: Arc<SpokeMetrics>,
    configcli: Option<setup::ConfigcliPackage>,
) {
    let recorder = kdfed_common::events::Recorder::new(client.clone(), "kdfed-director");
    let ctx = Arc::new(Context {
        client: client.clone(),
        system_namespace,
        recorder,
        metrics,
        configcli,
        configure_started: Mutex::default(),
        backoff: reconcile::Backoff::new(RETRY_FIRST, RETRY_MAX),
        own_writes: reconcile::OwnWrites::default(),
    });
    let clusters: Api<DeserializeGuard<KubeDirectorCluster>> = Api::all(client.clone());
    let owned = watcher::Config::default().labels(names::LABEL_CLUSTER);
    // The director's own writes to a cluster (status, the connections counter) do not
    // trigger it again: a pass that needs another asks for it in its Action, and a failing
    // one waits for its backoff instead of waking itself up.
    let (reader, writer) = reflector::store();
    let own = ctx.clone();
    let changes = watcher(clusters.clone(), watcher::Config::default())
        .backoff(kdfed_common::reconcile::TriggerBackoff::default())
        .reflect(writer)
        .applied_objects()
        .try_filter(move |cluster| std::future::ready(!own.own_writes.is_own(cluster)));
    let controller = Controller::for_stream(changes, reader);
    // A change in a connected ConfigMap, Secret or cluster reconciles the clusters that
    // connect to it right away (the periodic requeue remains the safety net, and the only
    // trigger for connected objects without the type label that configmeta needs anyway).
    let (by_configmap, by_secret, by_cluster) = (controller.store(), controller.store(), controller.store());
    controller
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .watches(Api::<Pod>::all(client.clone()), owned, |pod: Pod| {
            let cluster = pod.labels().get(names::LABEL_CLUSTER)?.clone();
            Some(ObjectRef::new(&cluster).within(&pod.namespace()?))
        })
        .watches(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().labels(LABEL_CONFIGMAP_TYPE),
            move |cm: ConfigMap| connecting(&by_configmap, cm.namespace(), &cm.name_any(), |k| &k.configmaps),
        )
        .watches(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels(LABEL_SECRET_TYPE),
            move |secret: Secret| connecting(&by_secret, secret.namespace(), &secret.name_any(), |k| &k.secrets),
        )
        .watches(clusters, watcher::Config::default(), move |other: DeserializeGuard<KubeDirectorCluster>| {
            connecting(&by_cluster, other.namespace(), &other.name_any(), |k| &k.clusters)
        })
        .trigger_backoff(kdfed_common::reconcile::TriggerBackoff::default())
        .shutdown_on_signal()
        .run(reconcile, retry, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                reconcile::log_run_error("director", &e);
            }
        })
        .await;
}

async fn reconcile(guard: Arc<DeserializeGuard<KubeDirectorCluster>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = reconcile::key(guard.as_ref());
    let result = reconcile_cluster(guard, ctx.clone()).await;
    ctx.metrics.reconciles.observe("director", started, result.is_err());
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// The director's error policy: try the cluster again after its exponential backoff.
fn retry(guard: Arc<DeserializeGuard<KubeDirectorCluster>>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.failed(&reconcile::key(guard.as_ref()));
    warn!(retry_in = ?delay, "reconcile failed: {error}");
    Action::requeue(delay)
}

async fn reconcile_cluster(
    guard: Arc<DeserializeGuard<KubeDirectorCluster>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    // The status is the director's memory (members, node ids): plan from the latest one.
    let Some((api, mut fresh)) = reconcile::latest(&guard, &ctx.client, &ctx.recorder, "Cluster").await? else {
        return Ok(Action::await_change());
    };
    let ns = fresh.namespace().unwrap_or_else(|| "default".into());
    let name = fresh.name_any();
    let cluster = &fresh;
    // kube-runtime already wraps each reconcile in a span naming the object; a span
    // entered here would be held across awaits and leak into other tasks.

    if cluster.metadata.deletion_timestamp.is_some() {
        return cleanup(cluster, &api, &ctx).await;
    }
    if reconcile::add_finalizer(&api, cluster, names::FINALIZER).await? {
        // The patch changed the resourceVersion; plan from the new object next time.
        return Ok(Action::requeue(Duration::from_millis(50)));
    }

    if let Some(why) = fence_reason(cluster) {
        return fence(cluster, &api, &ctx, &why).await;
    }

    // Connections: a new hash bumps the connection version (annotation), and the status
    // records the hash (with the new spec generation a change means) right away, before
    // anything can fail: each hash bumps the counter once, however many passes fail after
    // it. A crash between the two writes only bumps it once more.
    let connections_hash = connections::hash(&observe_connections(&ctx, &ns, cluster).await?);
    let previous_hash = cluster.status.as_ref().and_then(|s| s.last_connection_hash.clone());
    let mut connection_version = connections::counter(cluster.annotations(), HASH_CHANGE_COUNTER).unwrap_or(0);
    // The first hash only initialises the counter; later ones are changes to announce.
    let connections_changed = previous_hash.as_ref().is_some_and(|h| h != &connections_hash);
    if previous_hash.as_ref() != Some(&connections_hash) {
        let next = connections::next_counter(cluster.annotations(), HASH_CHANGE_COUNTER);
        let patch = json!({"metadata": {
            "resourceVersion": cluster.resource_version(),
            "annotations": {HASH_CHANGE_COUNTER: next.to_string()},
        }});
        fresh = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .doing("bump the connections counter")?;
        ctx.own_writes.record(&fresh);
        connection_version = next;
        info!(counter = next, changed = connections_changed, "connections hash {connections_hash}");
        let mut status = fresh.status.clone().unwrap_or_default();
        status.last_connection_hash = Some(connections_hash.clone());
        if connections_changed {
            // Upstream: a connection change is a new spec generation, so configured
            // members get fresh configmeta and `--reconnect`.
            status.spec_generation_to_process = Some(status.spec_generation_to_process.unwrap_or(0) + 1);
            if status.state.as_deref() != Some(members::CLUSTER_CREATING) {
                status.state = Some(members::CLUSTER_UPDATING.to_string());
            }
        }
        fresh = write_status(&ctx, &api, &fresh, &status).await?;
    }
    let cluster = &fresh;

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
                file_injections: !r.file_injections.is_empty(),
                // No list means every event (upstream's default).
                events: app_role
                    .and_then(|a| a.event_list.clone())
                    .unwrap_or_else(|| kdfed_crds::validate::EVENTS.iter().map(|e| e.to_string()).collect()),
            }
        })
        .collect();
    let token_roles: BTreeSet<String> = spec
        .roles
        .iter()
        .filter(|r| {
            app_spec
                .role_services(&r.id)
                .iter()
                .any(|s| s.endpoint.as_ref().is_some_and(|e| e.has_auth_token == Some(true)))
        })
        .map(|r| r.id.clone())
        .collect();
    let old_status = cluster.status.clone().unwrap_or_default();
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let master_key = config.as_ref().and_then(|c| c.master_encryption_key.clone());
    let setup_view = SetupView {
        cluster,
        spec: &spec,
        app: &app_spec,
        facts: &facts,
        wanted: &wanted,
        master_key: master_key.as_deref(),
    };
    let outcomes = run_setups(&ctx, &pod_api, &setup_view, &old_status, &pods).await;
    let mut plan = members::plan_with_setup(&facts, &wanted, &old_status, &pods, &existing, &outcomes);
    plan.status.last_connection_hash = Some(connections_hash);
    if connections_changed {
        // The new spec generation is already in the status (above); this pass announces it.
        plan.settled = false;
        plan.events.retain(|e| !(e.reason == "Cluster" && e.message == "stable"));
        if plan.status.state.as_deref() != Some(members::CLUSTER_CREATING) {
            plan.status.state = Some(members::CLUSTER_UPDATING.to_string());
        }
    }
    // Members configured from now on start at the current connection version.
    for m in plan.status.roles.iter_mut().flat_map(|r| r.members.iter_mut()) {
        if m.state == members::CONFIGURED && m.state_detail.last_connection_version.is_none() {
            m.state_detail.last_connection_version = Some(connection_version);
        }
    }
    let generated = connections::assign_auth_tokens(&mut plan.status, &token_roles, || {
        connections::new_auth_token().unwrap_or_else(|e| {
            // Left empty, the token is generated on a later pass.
            warn!("cannot generate an auth token: {e}");
            String::new()
        })
    });
    if generated > 0 {
        info!(generated, "auth tokens generated");
    }

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
    if let Err(e) = apply_objects(&ctx, &ns, &inputs, &plan, &existing, &token_roles).await {
        // Whatever the member's API server refused (an invalid object, a full Service IP
        // range, a policy) is the user's to see: on the cluster, not only in the log.
        apply_failed(&ctx, cluster, &api, &old_status, &e).await;
        return Err(e);
    }

    // Lifecycle notifications (with fresh configmeta first), then status, with the Valid
    // and Applied conditions, then Events.
    let mut status = plan.status.clone();
    let delivered = deliver_notifications(&ctx, &pod_api, &setup_view, &mut status, &pods, connection_version).await;
    status.conditions = kdfed_common::conditions::set_condition(
        &old_status.conditions,
        "Valid",
        "True",
        "Valid",
        "spec is valid",
        cluster.metadata.generation,
    );
    status.conditions = kdfed_common::conditions::set_condition(
        &status.conditions,
        CONDITION_APPLIED,
        "True",
        "Applied",
        "the member's API server took every object",
        cluster.metadata.generation,
    );
    // A lifted fence is history, not a current state.
    if kdfed_common::conditions::condition(&status.conditions, "Fenced").is_some_and(|c| c.status == "True") {
        status.conditions = kdfed_common::conditions::set_condition(
            &status.conditions,
            "Fenced",
            "False",
            "Lifted",
            "the fence was lifted: this copy runs again",
            cluster.metadata.generation,
        );
    }
    let written = status != old_status;
    if written {
        write_status(&ctx, &api, cluster, &status).await?;
    }
    let was_failing = kdfed_common::conditions::condition(&old_status.conditions, CONDITION_APPLIED)
        .is_some_and(|c| c.reason == REASON_APPLY_FAILED);
    if was_failing {
        ctx.recorder.publish(cluster, false, "Applied", "the member's API server took every object again").await;
    }
    for e in &plan.events {
        info!(reason = e.reason, "{}", e.message);
        ctx.recorder.publish(cluster, e.warning, e.reason, &e.message).await;
    }
    let configured = Some(members::CLUSTER_CONFIGURED);
    if status.state.as_deref() == configured && old_status.state.as_deref() != configured {
        announce_configured(&ctx, cluster).await;
    }
    Ok(if written {
        // The next step plans from this status (even a settled plan may leave one, e.g. an
        // emptied role to remove); its own watch event no longer wakes the director, so ask
        // for that pass now, as soon as the event would have. A pass that changes nothing
        // does not come back before its timer.
        Action::requeue(Duration::from_millis(50))
    } else if plan.settled && !delivered {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(2))
    })
}

/// The apply step: headless Service, StatefulSets, member Services; then deletions.
async fn apply_objects(
    ctx: &Context,
    ns: &str,
    inputs: &Inputs<'_>,
    plan: &members::Plan,
    existing: &BTreeSet<String>,
    token_roles: &BTreeSet<String>,
) -> Result<(), Error> {
    let spec = inputs.spec;
    let headless = plan.status.cluster_service.clone().unwrap_or_default();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    services
        .patch(&headless, &pp, &Patch::Apply(inputs.headless_service()?))
        .await
        .doing(format!("apply headless service {headless}"))?;
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
        if let Some(mut svc) = inputs.member_service(role, pod)? {
            if token_roles.contains(role_id)
                && let Some(token) = member_token(&plan.status, pod)
            {
                svc.metadata.annotations.get_or_insert_default().insert(names::ANNOTATION_AUTH_TOKEN.into(), token);
            }
            let svc_name = names::member_service(pod);
            services
                .patch(&svc_name, &pp, &Patch::Apply(svc))
                .await
                .doing(format!("apply member service {svc_name}"))?;
        }
    }
    for sts_name in &plan.delete_statefulsets {
        ignore_missing(statefulsets.delete(sts_name, &DeleteParams::background()).await).doing("delete statefulset")?;
    }
    for svc in &plan.delete_services {
        ignore_missing(services.delete(svc, &DeleteParams::background()).await).doing("delete member service")?;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    for pvc in &plan.delete_pvcs {
        ignore_missing(pvcs.delete(pvc, &DeleteParams::background()).await).doing("delete member pvc")?;
    }
    Ok(())
}

/// What the `Applied` condition says about a failed apply: what was being done (naming
/// the object) and the API server's own message, cut to [`MAX_APPLY_MESSAGE`].
fn apply_failure_message(error: &Error) -> String {
    let message = match error {
        Error::Kube(kdfed_common::ApiError { action, source: kube::Error::Api(status) }) => {
            format!("{action}: {}", status.message)
        }
        other => other.to_string(),
    };
    kdfed_common::conditions::capped(message, MAX_APPLY_MESSAGE)
}

/// Records a failed apply on the cluster: `Applied=False, reason ApplyFailed` with the
/// API server's message, and a Warning Event when the message is new (a failure that
/// repeats writes nothing). A failure to record it is only logged: the apply error is
/// what the reconcile returns.
async fn apply_failed(
    ctx: &Context,
    cluster: &KubeDirectorCluster,
    api: &Api<KubeDirectorCluster>,
    old_status: &KubeDirectorClusterStatus,
    error: &Error,
) {
    let message = apply_failure_message(error);
    let mut status = old_status.clone();
    status.conditions = kdfed_common::conditions::set_condition(
        &old_status.conditions,
        CONDITION_APPLIED,
        "False",
        REASON_APPLY_FAILED,
        &message,
        cluster.metadata.generation,
    );
    if status == *old_status {
        return;
    }
    if let Err(e) = write_status(ctx, api, cluster, &status).await {
        warn!("cannot record the failed apply: {e}");
        return;
    }
    let new_message = kdfed_common::conditions::condition(&old_status.conditions, CONDITION_APPLIED)
        .is_none_or(|c| c.reason != REASON_APPLY_FAILED || c.message != message);
    if new_message {
        ctx.recorder.publish(cluster, true, REASON_APPLY_FAILED, &message).await;
    }
}

/// The auth token recorded for a member, if any.
fn member_token(status: &KubeDirectorClusterStatus, pod: &str) -> Option<String> {
    status
        .roles
        .iter()
        .flat_map(|r| &r.members)
        .find(|m| m.pod == pod)
        .and_then(|m| m.auth_token.clone())
        .filter(|t| !t.is_empty())
}

/// Reads what `spec.connections` names, for the connections hash. Missing objects count
/// as missing; any other API error fails the pass (a guess would fake a change).
async fn observe_connections(
    ctx: &Context,
    ns: &str,
    cluster: &KubeDirectorCluster,
) -> Result<connections::Observed, Error> {
    let mut observed = connections::Observed::default();
    let Some(wanted) = &cluster.spec.connections else { return Ok(observed) };
    let clusters: Api<DeserializeGuard<KubeDirectorCluster>> = Api::namespaced(ctx.client.clone(), ns);
    for name in &wanted.clusters {
        let found = clusters.get_opt(name).await.doing("read connected cluster")?;
        let generation = found.map(|g| g.0.ok().and_then(|c| c.status).and_then(|s| s.spec_generation_to_process));
        observed.clusters.push((name.clone(), generation));
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    for name in &wanted.configmaps {
        let found = configmaps.get_opt(name).await.doing("read connected configmap")?;
        observed.configmaps.push((name.clone(), found.and_then(|c| c.metadata.resource_version)));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for name in &wanted.secrets {
        let found = secrets.get_opt(name).await.doing("read connected secret")?;
        observed.secrets.push((name.clone(), found.and_then(|s| s.metadata.resource_version)));
    }
    Ok(observed)
}

/// A cluster just became `configured`: bump `connUpdateCounter` on every cluster of its
/// namespace that connects to it, so they pick up its new shape (upstream; upstream looks
/// in every namespace, but connections name clusters of the same namespace).
async fn announce_configured(ctx: &Context, cluster: &KubeDirectorCluster) {
    let ns = cluster.namespace().unwrap_or_else(|| "default".into());
    let name = cluster.name_any();
    let api: Api<DeserializeGuard<KubeDirectorCluster>> = Api::namespaced(ctx.client.clone(), &ns);
    let list = match api.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(e) => {
            warn!("cannot list clusters to tell those connected to {name}: {e}");
            return;
        }
    };
    for other in list.items.into_iter().filter_map(|g| g.0.ok()) {
        if !other.spec.connections.as_ref().is_some_and(|k| k.clusters.contains(&name)) {
            continue;
        }
        let other_name = other.name_any();
        ctx.recorder
            .publish(cluster, false, "Cluster", &format!("connected to cluster {{{other_name}}}; updating it"))
            .await;
        ctx.recorder.publish(&other, false, "Cluster", &format!("connected cluster {{{name}}} has changed")).await;
        let typed: Api<KubeDirectorCluster> = Api::namespaced(ctx.client.clone(), &ns);
        let mut current = other;
        for _ in 0..5 {
            let next = connections::next_counter(current.annotations(), CONN_UPDATE_COUNTER);
            let patch = json!({"metadata": {
                "resourceVersion": current.resource_version(),
                "annotations": {CONN_UPDATE_COUNTER: next.to_string()},
            }});
            match typed.patch(&other_name, &PatchParams::default(), &Patch::Merge(patch)).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 => match typed.get_opt(&other_name).await {
                    Ok(Some(c)) => current = c,
                    _ => break,
                },
                Err(e) => {
                    warn!("cannot bump {CONN_UPDATE_COUNTER} on {other_name}: {e}");
                    break;
                }
            }
        }
    }
}

/// What setup and notifications need to know about the cluster being reconciled.
struct SetupView<'a> {
    cluster: &'a KubeDirectorCluster,
    spec: &'a KubeDirectorClusterSpec,
    app: &'a KubeDirectorAppSpec,
    facts: &'a ClusterFacts,
    wanted: &'a [RoleWanted],
    /// Master key of `KubeDirectorConfig`, to decrypt secret keys into configmeta only.
    master_key: Option<&'a str>,
}

impl SetupView<'_> {
    fn wanted(&self, role: &str) -> Option<&RoleWanted> {
        self.wanted.iter().find(|w| w.id == role)
    }

    /// Per-member configmeta documents of the cluster as `status` describes it.
    async fn configmeta(&self, ctx: &Context, status: &KubeDirectorClusterStatus) -> BTreeMap<String, String> {
        let headless = status.cluster_service.clone().unwrap_or_default();
        let roles: Vec<configmeta::RoleMembers<'_>> = self
            .spec
            .roles
            .iter()
            .filter_map(|spec| {
                let role = status.roles.iter().find(|r| r.id == spec.id)?;
                let members: Vec<_> = role
                    .members
                    .iter()
                    .filter(|m| !matches!(m.state.as_str(), members::DELETE_PENDING | members::DELETING))
                    .collect();
                let (secret_keys, unreadable) =
                    kdfed_common::secretkeys::plain_values(&spec.secret_keys, self.master_key);
                for e in unreadable {
                    warn!(role = %spec.id, "{e}");
                }
                (!members.is_empty()).then_some(configmeta::RoleMembers { spec, members, secret_keys })
            })
            .collect();
        let view = configmeta::ClusterView {
            name: &self.facts.name,
            uid: &self.facts.uid,
            app: self.app,
            domain: configmeta::domain(&headless, &self.facts.namespace, &self.facts.domain_base),
            roles,
        };
        let connections =
            connections(ctx, self.cluster, self.spec, &self.facts.namespace, &self.facts.domain_base).await;
        let base = configmeta::with_connections(configmeta::cluster_document(&view, None), &connections);
        view.roles
            .iter()
            .flat_map(|r| &r.members)
            .filter_map(|m| Some((m.pod.clone(), configmeta::for_member(&view, &base, &m.pod)?.to_string())))
            .collect()
    }
}

/// The objects named in `spec.connections`, as configmeta shows them. Missing ones are
/// skipped (as upstream), and so are ConfigMaps and Secrets without a type label.
async fn connections(
    ctx: &Context,
    cluster: &KubeDirectorCluster,
    spec: &KubeDirectorClusterSpec,
    ns: &str,
    domain_base: &str,
) -> configmeta::Connections {
    let mut out = configmeta::Connections::default();
    let Some(wanted) = &spec.connections else { return out };
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    for name in &wanted.configmaps {
        let Ok(Some(cm)) = configmaps.get_opt(name).await else { continue };
        let Some(kind) = cm.labels().get("kubedirector.hpe.com/cmType").cloned() else { continue };
        out.configmaps.push(configmeta::ConnectedObject {
            kind,
            name: name.clone(),
            data: cm.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
            labels: cm.labels().clone(),
            annotations: cm.annotations().clone(),
        });
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for name in &wanted.secrets {
        let Ok(Some(secret)) = secrets.get_opt(name).await else { continue };
        let Some(kind) = secret.labels().get("kubedirector.hpe.com/secretType").cloned() else { continue };
        out.secrets.push(configmeta::ConnectedObject {
            kind,
            name: name.clone(),
            data: secret.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect(),
            labels: secret.labels().clone(),
            annotations: secret.annotations().clone(),
        });
    }
    let clusters: Api<KubeDirectorCluster> = Api::namespaced(ctx.client.clone(), ns);
    for name in &wanted.clusters {
        if name == &cluster.name_any() {
            continue;
        }
        let Ok(Some(other)) = clusters.get_opt(name).await else { continue };
        let found = kdfed_common::catalog::find_app(
            &ctx.client,
            ns,
            &ctx.system_namespace,
            &other.spec.app,
            other.spec.app_catalog.as_deref(),
        )
        .await;
        let Ok(Some((app, _))) = found else { continue };
        let mut app_spec = app.spec.clone();
        defaults::app(&mut app_spec);
        let status = other.status.clone().unwrap_or_default();
        let headless = status.cluster_service.clone().unwrap_or_default();
        let roles = other
            .spec
            .roles
            .iter()
            .filter_map(|spec| {
                let role = status.roles.iter().find(|r| r.id == spec.id)?;
                Some(configmeta::RoleMembers {
                    spec,
                    members: role.members.iter().collect(),
                    secret_keys: BTreeMap::new(),
                })
            })
            .collect();
        let uid = other.metadata.uid.clone().unwrap_or_default();
        let view = configmeta::ClusterView {
            name,
            uid: &uid,
            app: &app_spec,
            domain: configmeta::domain(&headless, ns, domain_base),
            roles,
        };
        out.clusters.insert(name.clone(), configmeta::cluster_document(&view, Some(name)));
    }
    out
}

/// Takes every member in `creating` whose role needs exec steps one step further, all at
/// once; each exec is time-bound, so a slow member delays this cluster's pass by at most a
/// few exec timeouts and never blocks other clusters (reconciles run concurrently).
async fn run_setups(
    ctx: &Context,
    pods_api: &Api<Pod>,
    view: &SetupView<'_>,
    status: &KubeDirectorClusterStatus,
    pods: &BTreeMap<String, PodView>,
) -> BTreeMap<String, SetupOutcome> {
    let mut work = Vec::new();
    for role in &status.roles {
        let Some(want) = view.wanted(&role.id).filter(|w| w.needs_exec()) else { continue };
        let Some(spec_role) = view.spec.roles.iter().find(|r| r.id == role.id) else { continue };
        let app_role = view.app.role(&role.id);
        for m in role.members.iter().filter(|m| m.state == members::CREATING) {
            let Some(container) = m.state_detail.configuring_container.clone() else { continue };
            if pods.get(&m.pod).and_then(|p| p.app_container_id.as_ref()) != Some(&container) {
                continue;
            }
            let package_url = if want.setup_package {
                app_role.and_then(|r| r.config_package.clone()).flatten().map(|p| p.package_url)
            } else {
                None
            };
            let injections = spec_role
                .file_injections
                .iter()
                .map(|f| setup::Injection {
                    src_url: f.src_url.clone(),
                    dest_dir: f.dest_dir.clone(),
                    mode: f.permissions.as_ref().and_then(|p| p.file_mode),
                    owner: f.permissions.as_ref().and_then(|p| p.file_owner.clone()),
                    group: f.permissions.as_ref().and_then(|p| p.file_group.clone()),
                })
                .collect();
            let max_log = app_role.and_then(|r| r.max_log_size_dump).unwrap_or(setup::DEFAULT_MAX_LOG_SIZE_DUMP);
            // Upstream: a role that lists its events and leaves out `configure` gets its
            // package and configmeta but no `--configure` run.
            let run_configure = app_role
                .and_then(|r| r.event_list.as_ref())
                .is_none_or(|events| events.iter().any(|e| e == "configure"));
            work.push(setup::MemberSetup {
                pod: m.pod.clone(),
                container_id: container,
                injections,
                package_url,
                configmeta: String::new(),
                max_log_size_dump: usize::try_from(max_log.max(0)).unwrap_or(0),
                systemd_required: view.app.systemd_required == Some(true),
                run_configure,
                configcli: ctx.configcli.clone(),
            });
        }
    }
    if work.is_empty() {
        return BTreeMap::new();
    }
    let documents = view.configmeta(ctx, status).await;
    for w in &mut work {
        w.configmeta = documents.get(&w.pod).cloned().unwrap_or_default();
    }
    let results = futures::future::join_all(work.iter().map(|w| setup::advance(pods_api, w))).await;
    for (w, outcome) in work.iter().zip(&results) {
        observe_configure(ctx, &view.facts.namespace, w, outcome);
    }
    work.into_iter().map(|w| w.pod).zip(results).collect()
}

/// Counts and times initial setups (`configure` step): a run is timed from the pass that
/// saw it running in this process to the pass that saw it finish.
fn observe_configure(ctx: &Context, ns: &str, setup: &setup::MemberSetup, outcome: &SetupOutcome) {
    let key = format!("{ns}/{}/{}", setup.pod, setup.container_id);
    let Ok(mut started) = ctx.configure_started.lock() else { return };
    match outcome {
        SetupOutcome::Running => {
            started.entry(key).or_insert_with(Instant::now);
        }
        SetupOutcome::Done => {
            // A run this process never saw start (finished before a restart) is not counted.
            if let Some(t) = started.remove(&key) {
                ctx.metrics.observe_setup("configure", false, Some(t.elapsed().as_secs_f64()));
            } else if setup.package_url.is_none() {
                ctx.metrics.observe_setup("configure", false, None);
            }
        }
        SetupOutcome::Failed(_) => {
            let seconds = started.remove(&key).map(|t| t.elapsed().as_secs_f64());
            ctx.metrics.observe_setup("configure", true, seconds);
        }
        SetupOutcome::Interrupted => {
            started.remove(&key);
        }
        SetupOutcome::Waiting(_) | SetupOutcome::Retrying(_) => {}
    }
}

/// Brings configured members of roles with a setup package up to date, each in order:
/// fresh configmeta when the spec generation moved; then `startscript --reconnect` when the
/// connection version moved past the member's (upstream: whatever the role's `eventList`);
/// then its pending `--addnodes`/`--delnodes`. A failed step is reported and retried on a
/// later pass (configmeta counts as written only once `--reconnect` succeeded; a failed
/// notification stays queued and blocks the ones after it). Returns whether any member was
/// worked on.
async fn deliver_notifications(
    ctx: &Context,
    pods_api: &Api<Pod>,
    view: &SetupView<'_>,
    status: &mut KubeDirectorClusterStatus,
    pods: &BTreeMap<String, PodView>,
    connection_version: i64,
) -> bool {
    struct Target {
        pod: String,
        role: String,
        stale: bool,
        reconnect: bool,
        cmds: Vec<kdfed_crds::cluster::NotificationDesc>,
    }
    #[derive(Default)]
    struct Result {
        written: bool,
        reconnected: bool,
        delivered: usize,
        problems: Vec<String>,
    }
    let generation = status.spec_generation_to_process.unwrap_or(0);
    let mut targets = Vec::new();
    for role in &status.roles {
        if !view.wanted(&role.id).is_some_and(|w| w.setup_package) {
            continue;
        }
        for m in role.members.iter().filter(|m| m.state == members::CONFIGURED) {
            let stale = m.state_detail.last_config_data_generation.is_some_and(|g| g != generation);
            if !stale && m.state_detail.pending_notify_cmds.is_empty() {
                continue;
            }
            let live = pods.get(&m.pod).and_then(|p| p.app_container_id.as_ref());
            if live.is_none() || live != m.state_detail.last_configured_container.as_ref() {
                continue;
            }
            let behind = m.state_detail.last_connection_version.is_some_and(|v| v < connection_version);
            targets.push(Target {
                pod: m.pod.clone(),
                role: role.id.clone(),
                stale,
                reconnect: stale && behind,
                cmds: m.state_detail.pending_notify_cmds.clone(),
            });
        }
    }
    if targets.is_empty() {
        return false;
    }
    let documents = view.configmeta(ctx, status).await;
    let work = targets.iter().map(|t| {
        let document = documents.get(&t.pod).cloned();
        async move {
            let mut result = Result::default();
            let pod = t.pod.as_str();
            if t.stale
                && let Some(document) = document
            {
                match setup::write_file(pods_api, pod, configmeta::PATH, &document).await {
                    Ok(out) if setup::succeeded(&out) => {}
                    Ok(_) | Err(_) => {
                        result
                            .problems
                            .push(format!("failed to update config in member{{{pod}}} in role{{{}}}", t.role));
                        return result;
                    }
                }
                if t.reconnect {
                    info!(member = %pod, "--reconnect will be called for pod : {pod}");
                    if !notify_timed(ctx, pods_api, pod, &["--reconnect".to_string()]).await {
                        result.problems.push(format!(
                            "failed to run startscript with --reconnect in member{{{pod}}} in role{{{}}}",
                            t.role
                        ));
                        return result;
                    }
                    result.reconnected = true;
                }
                result.written = true;
            }
            for cmd in &t.cmds {
                info!(member = %pod, "will notify member{{{pod}}}: {}", cmd.arguments.join(" "));
                if !notify_timed(ctx, pods_api, pod, &cmd.arguments).await {
                    result.problems.push(format!("failed to notify member{{{pod}}} about member changes"));
                    break;
                }
                result.delivered += 1;
            }
            result
        }
    });
    let results = futures::future::join_all(work).await;
    for (t, result) in targets.iter().zip(results) {
        if result.written {
            members::configmeta_written(status, &t.pod, generation);
        }
        if result.reconnected
            && let Some(m) = status.roles.iter_mut().flat_map(|r| r.members.iter_mut()).find(|m| m.pod == t.pod)
        {
            m.state_detail.last_connection_version = Some(connection_version);
        }
        members::notifications_delivered(status, &t.pod, result.delivered);
        for message in result.problems {
            warn!("{message}");
            ctx.recorder.publish(view.cluster, true, "Member", &message).await;
        }
    }
    true
}

/// Runs one notification and records it in the metrics; whether it succeeded.
async fn notify_timed(ctx: &Context, pods_api: &Api<Pod>, pod: &str, arguments: &[String]) -> bool {
    let started = Instant::now();
    let result = setup::notify(pods_api, pod, arguments).await;
    let ok = matches!(&result, Ok(out) if setup::succeeded(out));
    if let Err(e) = &result {
        warn!(member = %pod, "notification not delivered: {e}");
    }
    let step = arguments.first().map(|a| a.trim_start_matches('-')).unwrap_or_default();
    if crate::metrics::SETUP_STEPS.contains(&step) {
        ctx.metrics.observe_setup(step, !ok, Some(started.elapsed().as_secs_f64()));
    }
    ok
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

/// Writes the cluster's whole status (see [`reconcile::write_status`]); its watch event
/// will not wake the director.
async fn write_status(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    cluster: &KubeDirectorCluster,
    status: &KubeDirectorClusterStatus,
) -> Result<KubeDirectorCluster, Error> {
    let written = reconcile::write_status(api, cluster, status, FIELD_MANAGER).await?;
    ctx.own_writes.record(&written);
    Ok(written)
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
        write_status(ctx, api, cluster, &status).await?;
        ctx.recorder.publish(cluster, true, "Cluster", &format!("{field}: {message}")).await;
    }
    warn!(field, "{message}");
    Ok(())
}

/// Why a copy must not run, if it must not.
#[derive(Clone, Debug, PartialEq)]
pub struct FenceReason {
    /// Reason of the `Fenced` condition and of the Event.
    pub reason: &'static str,
    /// Message of the `Fenced` condition and of the Event.
    pub message: String,
}

/// Whether hub sync fenced this copy: its placement moved to another member (it stays down
/// for good), or its spoke went too long without a heartbeat renewal while the cluster may
/// fail over (until the spoke lifts it).
pub fn fence_reason(cluster: &KubeDirectorCluster) -> Option<FenceReason> {
    if cluster.annotations().get(ANNOTATION_FENCED).is_some_and(|v| v == "true") {
        return Some(FenceReason {
            reason: "PlacementMoved",
            message: "this copy's placement moved to another member: scaled to zero, PVCs kept".into(),
        });
    }
    cluster.annotations().get(ANNOTATION_SELF_FENCED).map(|why| FenceReason {
        reason: "HubUnreachable",
        message: format!("{why}: scaled to zero, PVCs kept, until the hub is reachable again"),
    })
}

/// A fenced copy (its placement moved to another member, or its member lost the hub for
/// too long): every StatefulSet goes to zero replicas with its PVCs retained, and nothing
/// else happens until the fence is lifted.
async fn fence(
    cluster: &KubeDirectorCluster,
    api: &Api<KubeDirectorCluster>,
    ctx: &Context,
    why: &FenceReason,
) -> Result<Action, Error> {
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
        why.reason,
        &why.message,
        cluster.metadata.generation,
    );
    if status != old {
        write_status(ctx, api, cluster, &status).await?;
        warn!(reason = why.reason, "fenced: {}", why.message);
        let event = if why.reason == "PlacementMoved" { "Cluster" } else { "SelfFenced" };
        ctx.recorder.publish(cluster, true, event, &format!("fenced: {}", why.message)).await;
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
    ctx.recorder.publish(cluster, false, "Cluster", "greenlighting for deletion").await;
    reconcile::remove_finalizer(api, cluster, names::FINALIZER).await?;
    ctx.own_writes.forget(&reconcile::key(cluster));
    info!("cleanup done");
    Ok(Action::await_change())
}

#[cfg(test)]
mod fence_tests {
    use super::*;

    #[test]
    fn a_moved_placement_outranks_a_self_fence_and_both_say_why() {
        let mut copy = KubeDirectorCluster::new("db", Default::default());
        assert_eq!(fence_reason(&copy), None);
        let annotations = copy.metadata.annotations.get_or_insert_default();
        annotations.insert(ANNOTATION_SELF_FENCED.into(), "no heartbeat renewal on the hub for 5s".into());
        let why = fence_reason(&copy).expect("self-fenced");
        assert_eq!(why.reason, "HubUnreachable");
        assert!(why.message.starts_with("no heartbeat renewal on the hub for 5s: scaled to zero, PVCs kept"));
        let annotations = copy.metadata.annotations.get_or_insert_default();
        annotations.insert(ANNOTATION_FENCED.into(), "true".into());
        assert_eq!(fence_reason(&copy).expect("fenced").reason, "PlacementMoved");
        let annotations = copy.metadata.annotations.get_or_insert_default();
        annotations.remove(ANNOTATION_SELF_FENCED);
        annotations.insert(ANNOTATION_FENCED.into(), "false".into());
        assert_eq!(fence_reason(&copy), None);
    }
}
