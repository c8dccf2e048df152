//! The controller around the director's steps: watches, the error policy, and one
//! reconcile of a cluster as a list of named steps —
//! dereference ([`dereference`](super::dereference)) → connections (record the hash) →
//! validate (`kdfed_crds::resolve`) → setup ([`lifecycle`](super::lifecycle)) →
//! plan ([`plan`](super::plan), pure) → apply ([`apply`](super::apply)) → notify
//! ([`lifecycle`](super::lifecycle)) → status ([`status`](super::status)); deletion
//! (cleanup) and fencing leave the list early.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kdfed_common::{ApiError, Doing};
use kdfed_crds::cluster::{Connections, KubeDirectorCluster};
use kdfed_crds::federation::{ANNOTATION_FENCED, ANNOTATION_SELF_FENCED};
use kdfed_crds::resolve::Resolved;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::apply::{Applier, ignore_missing};
use super::build::{self, Inputs};
use super::connections::{self, Connected, HASH_CHANGE_COUNTER};
use super::dereference::{self, Observed};
use super::lifecycle::{self, SetupView};
use super::plan::{self, ClusterPlan, ConnectionState, Desired, Seen};
use super::rollout::{self, Rollout};
use super::{names, setup, status};
use crate::metrics::SpokeMetrics;
use kdfed_common::reconcile;

/// Wait after a cluster's first failed reconcile; it doubles with each further failure.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between failed reconciles of one cluster.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Errors of one reconcile, one variant per step that can fail; each is retried with
/// backoff. The display is the underlying error's, unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the cluster or what it refers to (app, config, pods, StatefulSets,
    /// connected objects) failed.
    #[error(transparent)]
    Dereference(ApiError),
    /// Adding the finalizer failed.
    #[error(transparent)]
    Finalizer(ApiError),
    /// Recording a new connections hash (counter annotation, status) failed.
    #[error(transparent)]
    Connections(ApiError),
    /// Scaling a fenced copy down or recording the fence failed.
    #[error(transparent)]
    Fence(ApiError),
    /// An object could not be built.
    #[error(transparent)]
    Build(#[from] build::BuildError),
    /// The member's API server refused a change.
    #[error(transparent)]
    Apply(ApiError),
    /// Writing the status failed.
    #[error(transparent)]
    Status(ApiError),
    /// Deleting the cluster's objects or releasing the finalizer failed.
    #[error(transparent)]
    Cleanup(ApiError),
}

impl Error {
    /// The step that failed, as a bounded label for metrics.
    pub fn step(&self) -> &'static str {
        match self {
            Error::Dereference(_) => "dereference",
            Error::Finalizer(_) => "finalizer",
            Error::Connections(_) => "connections",
            Error::Fence(_) => "fence",
            Error::Build(_) => "build",
            Error::Apply(_) => "apply",
            Error::Status(_) => "status",
            Error::Cleanup(_) => "cleanup",
        }
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
    /// Per cluster, the fingerprint ([`Observed::fingerprint`]) of the last settled pass
    /// that applied every object and wrote nothing: a pass that sees it again has nothing
    /// to apply (its timer pass then only reads).
    pub applied: Mutex<HashMap<String, u64>>,
    /// A federated spoke's heartbeat silence: failover-enabled copies are held at zero once
    /// self-fencing is due, before their annotation lands. `None` standalone.
    pub fence_clock: Option<crate::fencing::FenceClock>,
}

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
    fence_clock: Option<crate::fencing::FenceClock>,
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
        applied: Mutex::default(),
        fence_clock,
    });
    let clusters: Api<DeserializeGuard<KubeDirectorCluster>> = Api::all(client.clone());
    let owned = watcher::Config::default().labels(names::LABEL_CLUSTER);
    // One watch of the clusters serves the controller, the metrics and the clusters that
    // connect to a changed one. The store keeps what triggers need (name, spec, resource
    // version): each pass reads its cluster afresh, so managed fields are dropped.
    let (reader, writer) = reflector::store();
    let (changed_tx, changed_rx) = futures::channel::mpsc::unbounded();
    let own = ctx.clone();
    let changes = watcher(clusters, watcher::Config::default())
        .backoff(kdfed_common::reconcile::TriggerBackoff::default())
        .modify(|guard: &mut DeserializeGuard<KubeDirectorCluster>| {
            if let Ok(cluster) = guard.0.as_mut() {
                cluster.metadata.managed_fields = None;
            }
        })
        .reflect(writer)
        // Every change of a cluster, its deletion included (and its own writes: becoming
        // `configured` matters to the clusters connected to it), reconciles the clusters
        // that connect to it.
        .inspect_ok(move |event| {
            if let watcher::Event::Apply(other) | watcher::Event::InitApply(other) | watcher::Event::Delete(other) =
                event
            {
                let _ = changed_tx.unbounded_send(Ok::<_, watcher::Error>(other.clone()));
            }
        })
        .applied_objects()
        // The director's own writes to a cluster (status, the connections counter) do not
        // trigger it again: a pass that needs another asks for it in its Action, and a
        // failing one waits for its backoff instead of waking itself up.
        .try_filter(move |cluster| std::future::ready(!own.own_writes.is_own(cluster)));
    tokio::spawn(crate::metrics::collect(reader.clone(), ctx.metrics.clone(), Duration::from_secs(5)));
    let controller = Controller::for_stream(changes, reader);
    // A change in a connected ConfigMap or Secret reconciles the clusters that connect to
    // it right away (the periodic requeue remains the safety net, and the only trigger for
    // connected objects without the type label that configmeta needs anyway). Owned
    // objects and pods only trigger: their metadata is all the watches decode.
    let (by_configmap, by_secret, by_cluster) = (controller.store(), controller.store(), controller.store());
    controller
        .owns_stream(metadata::<StatefulSet>(&client, owned.clone()))
        .owns_stream(metadata::<Service>(&client, owned.clone()))
        .watches_stream(metadata::<Pod>(&client, owned), |pod: PartialObjectMeta<Pod>| {
            let cluster = pod.labels().get(names::LABEL_CLUSTER)?.clone();
            Some(ObjectRef::new(&cluster).within(&pod.namespace()?))
        })
        .watches(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().labels(names::LABEL_CONFIGMAP_TYPE),
            move |cm: ConfigMap| connecting(&by_configmap, cm.namespace(), &cm.name_any(), |k| &k.configmaps),
        )
        .watches(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels(names::LABEL_SECRET_TYPE),
            move |secret: Secret| connecting(&by_secret, secret.namespace(), &secret.name_any(), |k| &k.secrets),
        )
        .watches_stream(changed_rx, move |other: DeserializeGuard<KubeDirectorCluster>| {
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

/// Changes of the `K`s `config` selects, metadata only (the watches that only trigger).
fn metadata<K>(
    client: &Client,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + use<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config).default_backoff().touched_objects()
}

async fn reconcile(guard: Arc<DeserializeGuard<KubeDirectorCluster>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = reconcile::key(guard.as_ref());
    let result = reconcile_cluster(guard, ctx.clone()).await;
    ctx.metrics.reconciles.finished("director", started, result.as_ref().err().map(Error::step));
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

/// One pass over a cluster, as a list of steps (see the module header).
async fn reconcile_cluster(
    guard: Arc<DeserializeGuard<KubeDirectorCluster>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    // kube-runtime already wraps each reconcile in a span naming the object; a span
    // entered here would be held across awaits and leak into other tasks.
    // The status is the director's memory (members, node ids): plan from the latest one.
    let latest = reconcile::latest(&guard, &ctx.client, &ctx.recorder, "Cluster").await;
    let Some((api, cluster)) = latest.map_err(Error::Dereference)? else { return Ok(Action::await_change()) };
    if cluster.metadata.deletion_timestamp.is_some() {
        return cleanup(&cluster, &api, &ctx).await;
    }
    if reconcile::add_finalizer(&api, &cluster, names::FINALIZER).await.map_err(Error::Finalizer)? {
        // The patch changed the resourceVersion; plan from the new object next time.
        return Ok(Action::requeue(Duration::from_millis(50)));
    }
    if let Some(why) = fence_reason(&cluster) {
        return fence(&cluster, &api, &ctx, &why).await;
    }
    if let Some(why) = ctx.fence_clock.as_ref().and_then(|clock| clock.due(&cluster)) {
        // Self-fencing annotates it within a second; until then nothing scales it up.
        hold_at_zero(&cluster, &ctx, &format!("held at zero, PVCs retained: {why}")).await?;
        return Ok(Action::requeue(crate::fencing::CHECK_PERIOD));
    }
    // Dereference, then record the connections hash before anything else can fail.
    let observed = dereference::read(&ctx.client, &ctx.system_namespace, &cluster).await.map_err(Error::Dereference)?;
    let (cluster, connections) = record_connections(&ctx, &api, cluster, &observed.connected).await?;
    // Validate.
    let (resolved, catalog) = match validate(&ctx, &api, &cluster, &observed).await? {
        Ok(valid) => valid,
        Err(wait) => return Ok(wait),
    };
    // Live upgrade: the app each role runs and the rollout to advance (rollout.rs).
    let mut rollout = match rollout::prepare(&ctx, &api, &cluster, &observed, &resolved).await? {
        Ok(rollout) => rollout,
        Err(wait) => return Ok(wait),
    };
    // Setup: members being set up go one exec step further; the plan needs the outcomes.
    let desired = plan::desired(&cluster, &resolved, observed.config.as_ref());
    let old_status = cluster.status.clone().unwrap_or_default();
    let view = SetupView::new(&cluster, &resolved, &desired, &observed);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &desired.facts.namespace);
    let outcomes = lifecycle::run_setups(&ctx, &pods_api, &view, &old_status, &observed.pods).await;
    let moved = rollout::run_steps(&pods_api, &view, &old_status, &observed.pods, &rollout).await;
    // Plan (pure), then apply.
    let (pods, statefulsets, claims) = (&observed.pods, &observed.statefulsets, &observed.claims);
    let seen = Seen { pods, statefulsets, setup: &outcomes, claims };
    let mut planned = plan::plan(&desired, &old_status, seen, &connections, new_auth_token);
    rollout::advance(&mut rollout, &mut planned.members, &desired, &observed.pods, &moved);
    plan::sweep_claims(&mut planned, &desired, &old_status, seen);
    if planned.tokens_generated > 0 {
        info!(generated = planned.tokens_generated, "auth tokens generated");
    }
    let inputs = inputs(&cluster, &resolved, &observed, &catalog, &planned);
    let quiet = quiet(&planned, &rollout);
    let key = reconcile::key(&cluster);
    if !(quiet && applied_already(&ctx, &key, observed.fingerprint))
        && let Err(e) = apply_plan(&ctx, &inputs, &planned, &observed, &desired, &rollout).await
    {
        forget_applied(&ctx, &key);
        // Whatever the member's API server refused (an invalid object, a full Service IP
        // range, a policy) is the user's to see: on the cluster, not only in the log.
        status::apply_failed(&ctx, &cluster, &api, &old_status, &e).await;
        return Err(e);
    }
    // Notify members of what changed, then the status, its Events and the next pass.
    let mut next = planned.members.status.clone();
    let delivered =
        lifecycle::deliver_notifications(&ctx, &pods_api, &view, &mut next, &observed.pods, connections.version).await;
    status::conditions(&old_status, &mut next, cluster.metadata.generation);
    let written = status::report(&ctx, &api, &cluster, &old_status, &next, &planned.members.events).await?;
    if quiet && !written && !delivered {
        lock(&ctx.applied).insert(key, observed.fingerprint);
    } else {
        forget_applied(&ctx, &key);
    }
    Ok(status::next_action(written, planned.members.settled, delivered))
}

/// Whether a pass's plan is settled with nothing under way: no member being set up, no
/// rollout, nothing to delete. Only then may it skip applying objects nothing changed.
fn quiet(planned: &ClusterPlan, rollout: &Rollout) -> bool {
    let m = &planned.members;
    m.settled
        && rollout.other.is_none()
        && m.delete_statefulsets.is_empty()
        && m.delete_services.is_empty()
        && m.delete_pvcs.is_empty()
}

/// Whether a quiet pass over the cluster `key` with this fingerprint already applied
/// everything (nothing it read or wrote changed since).
fn applied_already(ctx: &Context, key: &str, fingerprint: u64) -> bool {
    lock(&ctx.applied).get(key) == Some(&fingerprint)
}

fn forget_applied(ctx: &Context, key: &str) {
    lock(&ctx.applied).remove(key);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A new member auth token; left empty when there is no randomness, so that a later pass
/// generates it.
fn new_auth_token() -> String {
    connections::new_auth_token().unwrap_or_else(|e| {
        warn!("cannot generate an auth token: {e}");
        String::new()
    })
}

/// The connections step: a new hash bumps the connection version (annotation), and the
/// status records the hash (with the new spec generation a change means) right away,
/// before anything can fail: each hash bumps the counter once, however many passes fail
/// after it. A crash between the two writes only bumps it once more. Returns the cluster
/// as written and where its connections stand.
async fn record_connections(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    cluster: KubeDirectorCluster,
    connected: &Connected,
) -> Result<(KubeDirectorCluster, ConnectionState), Error> {
    let hash = connections::hash(&connections::observed(connected));
    let previous = cluster.status.as_ref().and_then(|s| s.last_connection_hash.clone());
    let version = connections::counter(cluster.annotations(), HASH_CHANGE_COUNTER).unwrap_or(0);
    // The first hash only initialises the counter; later ones are changes to announce.
    let changed = previous.as_ref().is_some_and(|h| h != &hash);
    if previous.as_ref() == Some(&hash) {
        return Ok((cluster, ConnectionState { hash, version, changed }));
    }
    let next = connections::next_counter(cluster.annotations(), HASH_CHANGE_COUNTER);
    let patch = json!({"metadata": {
        "resourceVersion": cluster.resource_version(),
        "annotations": {HASH_CHANGE_COUNTER: next.to_string()},
    }});
    let bumped = api
        .patch(&cluster.name_any(), &PatchParams::default(), &Patch::Merge(patch))
        .await
        .doing("bump the connections counter")
        .map_err(Error::Connections)?;
    ctx.own_writes.record(&bumped);
    info!(counter = next, changed, "connections hash {hash}");
    let mut next_status = bumped.status.clone().unwrap_or_default();
    connections::record_hash(&mut next_status, &hash, changed);
    let written = status::write(ctx, api, &bumped, &next_status).await.map_err(Error::Connections)?;
    Ok((written, ConnectionState { hash, version: next, changed }))
}

/// The validate step: the app must exist, and app and cluster resolve (defaults, then
/// validation). An invalid spec is recorded on the cluster (`Valid=False`) and the pass
/// ends with the returned action; nothing already running is touched.
async fn validate(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    cluster: &KubeDirectorCluster,
    observed: &Observed,
) -> Result<Result<(Resolved, String), Action>, Error> {
    let Some((app, catalog)) = &observed.app else {
        let message = format!("Invalid app({}). This app resource ID has not been registered.", cluster.spec.app);
        status::invalid(ctx, cluster, api, "spec.app", &message).await?;
        return Ok(Err(Action::requeue(Duration::from_secs(30))));
    };
    match kdfed_crds::resolve(&app.spec, &cluster.spec, observed.config.as_ref()) {
        Ok(resolved) => Ok(Ok((resolved, catalog.clone()))),
        Err(errors) => {
            status::invalid(ctx, cluster, api, "spec", &errors.to_string()).await?;
            Ok(Err(Action::await_change()))
        }
    }
}

/// What the builders need: the cluster, its resolved spec and app, the config, where the
/// app was found and the planned headless Service name.
fn inputs<'a>(
    cluster: &'a KubeDirectorCluster,
    resolved: &'a Resolved,
    observed: &'a Observed,
    catalog: &'a str,
    planned: &'a ClusterPlan,
) -> Inputs<'a> {
    Inputs {
        cluster,
        spec: &resolved.cluster,
        app_name: &cluster.spec.app,
        app: &resolved.chosen,
        config: observed.config.as_ref(),
        app_catalog: catalog,
        headless: planned.members.status.cluster_service.as_deref().unwrap_or_default(),
    }
}

/// The apply step: builds the planned changes (pure; each StatefulSet from the app its
/// role runs during a live upgrade) and makes them.
async fn apply_plan(
    ctx: &Context,
    inputs: &Inputs<'_>,
    planned: &ClusterPlan,
    observed: &Observed,
    desired: &Desired,
    rollout: &Rollout,
) -> Result<(), Error> {
    let mut changes = plan::changes(inputs, &planned.members, &observed.statefulsets, &desired.token_roles)?;
    let other = rollout.other.as_ref().map(|(name, other)| Inputs {
        cluster: inputs.cluster,
        spec: &other.cluster,
        app_name: name,
        app: &other.app,
        config: inputs.config,
        app_catalog: inputs.app_catalog,
        headless: inputs.headless,
    });
    rollout::adjust(&mut changes, rollout, &planned.members, other.as_ref())?;
    Applier::new(&ctx.client, &desired.facts.namespace).apply(&changes).await.map_err(Error::Apply)
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
    hold_at_zero(cluster, ctx, "fenced: scaled to zero, PVCs retained").await?;
    let old = cluster.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.state = Some("fenced".to_string());
    status.conditions = kdfed_common::conditions::set_condition(
        &old.conditions,
        status::CONDITION_FENCED,
        "True",
        why.reason,
        &why.message,
        cluster.metadata.generation,
    );
    if status != old {
        status::write(ctx, api, cluster, &status).await.map_err(Error::Fence)?;
        warn!(reason = why.reason, "fenced: {}", why.message);
        let event = if why.reason == "PlacementMoved" { "Cluster" } else { "SelfFenced" };
        ctx.recorder.publish(cluster, true, event, &format!("fenced: {}", why.message)).await;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// Scales every StatefulSet of `cluster` to zero replicas (PVCs retained) and logs each
/// one it changed with `log`.
async fn hold_at_zero(cluster: &KubeDirectorCluster, ctx: &Context, log: &str) -> Result<(), Error> {
    let ns = cluster.namespace().unwrap_or_else(|| "default".into());
    let scaled = crate::fencing::scale_to_zero(&ctx.client, &ns, &cluster.name_any(), &PatchParams::default())
        .await
        .map_err(Error::Fence)?;
    for sts in scaled {
        info!(statefulset = %sts, "{log}");
    }
    Ok(())
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
    for sts in statefulsets.list(&lp).await.doing("list statefulsets").map_err(Error::Cleanup)?.items {
        remaining += 1;
        ignore_missing(statefulsets.delete(&sts.name_any(), &dp).await)
            .doing("delete statefulset")
            .map_err(Error::Cleanup)?;
    }
    for svc in services.list(&lp).await.doing("list services").map_err(Error::Cleanup)?.items {
        ignore_missing(services.delete(&svc.name_any(), &dp).await).doing("delete service").map_err(Error::Cleanup)?;
    }
    remaining += pods.list(&lp).await.doing("list pods").map_err(Error::Cleanup)?.items.len();
    if !cluster.spec.retain_pvcs_when_deleted() {
        for pvc in pvcs.list(&lp).await.doing("list pvcs").map_err(Error::Cleanup)?.items {
            if pvc.metadata.deletion_timestamp.is_none() {
                ignore_missing(pvcs.delete(&pvc.name_any(), &dp).await).doing("delete pvc").map_err(Error::Cleanup)?;
            }
        }
    }
    if remaining > 0 {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    ctx.recorder.publish(cluster, false, "Cluster", "greenlighting for deletion").await;
    reconcile::remove_finalizer(api, cluster, names::FINALIZER).await.map_err(Error::Cleanup)?;
    ctx.own_writes.forget(&reconcile::key(cluster));
    forget_applied(ctx, &reconcile::key(cluster));
    info!("cleanup done");
    Ok(Action::await_change())
}

#[cfg(test)]
mod fence_tests {
    use super::*;

    #[test]
    fn every_error_names_its_step_with_a_bounded_label() {
        let api = |action: &str| ApiError {
            action: action.into(),
            source: kube::Error::Api(kube::core::Status::failure("no", "Forbidden").with_code(403).boxed()),
        };
        let errors = [
            Error::Dereference(api("read app")),
            Error::Finalizer(api("add finalizer")),
            Error::Connections(api("bump the connections counter")),
            Error::Fence(api("fence statefulset")),
            Error::Apply(api("apply statefulset x")),
            Error::Status(api("write status")),
            Error::Cleanup(api("delete pvc")),
        ];
        let steps: Vec<&str> = errors.iter().map(Error::step).collect();
        assert_eq!(steps, ["dereference", "finalizer", "connections", "fence", "apply", "status", "cleanup"]);
        assert!(errors[4].to_string().starts_with("apply statefulset x"), "the display is the API error's");
    }

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
