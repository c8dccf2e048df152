//! The intent controller: places each user `KubeDirectorCluster` on the hub onto one
//! member cluster, writes its `KubeDirectorWork` into the member's namespace, folds the
//! member's report back into the cluster's status, and on deletion waits for the member's
//! cleanup.
//!
//! One reconcile runs these steps, each in its own module; the pure ones (no API calls)
//! have their own unit tests:
//!
//! 1. [`dereference`]: the intent, its app, its member cluster, its Work and the objects
//!    it connects to, each read once;
//! 2. [`validate`] (pure): the spec resolved against its app, the `Valid` condition;
//! 3. [`place`] (pure): the member cluster chosen once (sticky), or the failover decision;
//! 4. [`build_work`] (pure): the typed Work and the Secret beside it;
//! 5. [`apply`]: the Secret, the Work and the status written;
//! 6. [`fold`] (pure): the member's report folded into the status, with the Events to send;
//! 7. [`cleanup`]: on deletion, the Work deleted and the member's cleanup awaited.
//!
//! Beside the steps: [`ledger`] (placements recorded but not yet in the caches placement
//! reads), [`wake`] (which intents a member change concerns) and [`events`] (Events
//! rate-limited).

pub mod apply;
pub mod build_work;
pub mod cleanup;
pub mod dereference;
pub mod events;
pub mod fold;
pub mod ledger;
pub mod place;
pub mod validate;
pub mod wake;

#[cfg(test)]
mod fixtures;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kdfed_common::reconcile;
use kdfed_common::{ApiError, Doing};
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus, PlacementStatus};
use kdfed_crds::federation::{FINALIZER_INTENT, KubeDirectorMember, KubeDirectorWork, work_name};
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

pub use fold::availability_outdated;

/// Field manager of the hub's writes to intents and Works.
pub const FIELD_MANAGER: &str = "kdfed-hub";
/// Label on Works: the origin's namespace.
pub const LABEL_ORIGIN_NAMESPACE: &str = "federation.kubedirector.hpe.com/origin-namespace";
/// Label on Works: the origin's name.
pub const LABEL_ORIGIN_NAME: &str = "federation.kubedirector.hpe.com/origin-name";

/// How often an unschedulable cluster looks again by itself; member changes wake it at once.
pub const UNSCHEDULABLE_RECHECK: Duration = Duration::from_secs(300);
/// How often at least a settled cluster (member available, latest Work applied) looks again
/// by itself, a backstop: its Work's and its member's changes wake it at once. Every 10
/// minutes was 17 passes a second at rest at 10,000 clusters, each reading the cluster, its
/// app and its Work. See [`settled_recheck`].
pub const SETTLED_RECHECK: Duration = Duration::from_secs(3600);
/// The spread added to [`SETTLED_RECHECK`], by the cluster's uid, so that clusters made
/// together do not look again together.
pub const SETTLED_SPREAD: Duration = Duration::from_secs(600);
/// How often a cluster whose member has not applied its latest Work looks again by itself.
pub const UNSETTLED_RECHECK: Duration = Duration::from_secs(30);

/// Why one reconcile of an intent failed (retried with backoff): the step, and the API call
/// with what it was for.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the intent, its app, member cluster, Work or connected objects.
    #[error(transparent)]
    Dereference(ApiError),
    /// Recording a placement, or moving a cluster off an unavailable member (failover).
    #[error(transparent)]
    Place(ApiError),
    /// Writing the intent's finalizer, the Work or the Secret beside it.
    #[error(transparent)]
    Apply(ApiError),
    /// Writing the intent's status.
    #[error(transparent)]
    Status(ApiError),
    /// Deleting the Work of a deleted intent and releasing the intent.
    #[error(transparent)]
    Cleanup(ApiError),
}

impl Error {
    /// The step that failed, a bounded label for metrics.
    pub fn step(&self) -> &'static str {
        match self {
            Error::Dereference(_) => "dereference",
            Error::Place(_) => "place",
            Error::Apply(_) => "apply",
            Error::Status(_) => "status",
            Error::Cleanup(_) => "cleanup",
        }
    }
}

/// Shared state of the intent controller.
pub struct Context {
    /// Hub client.
    pub client: Client,
    /// Namespace of the system catalog.
    pub system_namespace: String,
    /// Extra wait of a failover beyond the grace and `afterSeconds` (clock skew).
    pub failover_margin: Duration,
    /// Event recorder.
    pub recorder: kdfed_common::events::Recorder,
    /// Metrics.
    pub metrics: Arc<crate::metrics::HubMetrics>,
    /// The hub's watch caches: placement decisions read the fleet from them.
    pub cache: Arc<crate::cache::FleetCache>,
    /// This leader's placement snapshot and ledger (see [`ledger`]).
    pub placer: Mutex<ledger::Placer>,
    /// Where each intent is, so a member change wakes only what it concerns (see [`wake`]).
    pub wakes: Mutex<wake::Wakes>,
    /// Events rate-limited (see [`events`]).
    pub events: Mutex<events::EventGate>,
    /// Each member's heartbeat as the availability loop last folded it: a failover first
    /// checks that the member's Lease has not been renewed since.
    pub heartbeats: crate::members::Heartbeats,
    /// Turns to run a pass, [`CONCURRENT_PASSES`] at a time, in the order they were asked.
    pub passes: tokio::sync::Semaphore,
}

impl Context {
    /// The context of the intent controller; one per leadership (the ledger starts empty).
    pub fn new(
        client: Client,
        system_namespace: String,
        failover_margin: Duration,
        metrics: Arc<crate::metrics::HubMetrics>,
        cache: Arc<crate::cache::FleetCache>,
    ) -> Context {
        Context {
            recorder: kdfed_common::events::Recorder::new(client.clone(), "kdfed-hub"),
            client,
            system_namespace,
            failover_margin,
            metrics,
            cache,
            placer: Mutex::new(ledger::Placer::default()),
            wakes: Mutex::new(wake::Wakes::default()),
            events: Mutex::new(events::EventGate::default()),
            heartbeats: crate::members::Heartbeats::default(),
            passes: tokio::sync::Semaphore::new(CONCURRENT_PASSES),
        }
    }

    /// Publishes an Event on `intent` unless one like it went out within [`events::QUIET`].
    pub async fn publish(&self, intent: &KubeDirectorCluster, warning: bool, reason: &str, message: &str) {
        let key = format!("{}/{}", intent.namespace().unwrap_or_default(), intent.name_any());
        let allowed = self.events.lock().unwrap_or_else(PoisonError::into_inner).allow(
            &key,
            reason,
            message,
            std::time::Instant::now(),
        );
        if allowed {
            self.recorder.publish(intent, warning, reason, message).await;
        }
    }

    fn wakes(&self) -> std::sync::MutexGuard<'_, wake::Wakes> {
        self.wakes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn placer(&self) -> std::sync::MutexGuard<'_, ledger::Placer> {
        self.placer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An Event to publish on the intent.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Warning (else Normal).
    pub warning: bool,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

impl Event {
    /// An Event of `reason` saying `message`.
    pub fn new(warning: bool, reason: &str, message: impl Into<String>) -> Event {
        Event { warning, reason: reason.to_string(), message: message.into() }
    }
}

/// A pass that stops early (invalid spec, placement waiting): the status to show, the
/// Event that goes with it when the status changes, and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Settle {
    /// The status to write (only when it differs from the intent's).
    pub status: KubeDirectorClusterStatus,
    /// Published when the status is written.
    pub event: Event,
    /// When to look again.
    pub then: Action,
}

/// How many intents are reconciled at once. Each pass waits on the hub's API server, in the
/// same flow of its API Priority and Fairness as the hub's admission webhook's reads: with
/// no bound, a batch of thousands of new clusters queued thousands of passes' requests there,
/// and the webhook's reads waited behind them until the API server's 10 s call to the webhook
/// timed out (the fleet simulator, 1,000 members × 10,000 clusters, docs/benchmarks.md).
///
/// The bound is a first-come-first-served semaphore ([`Context::passes`]), not
/// kube-runtime's `concurrency` setting: with that one, once every slot is busy the due
/// requests wait in a hash set and the next is the first the set's iteration finds, so the
/// requests that hash late wait as long as new ones keep arriving. At 1,000 × 10,000, 1,281
/// clusters created in the run's first minutes never had a pass in 50 minutes while placed
/// clusters' re-looks ran 65 a second. Every due pass now starts at once and waits its turn
/// on the semaphore.
pub const CONCURRENT_PASSES: usize = 32;

/// Runs the intent controller until shutdown.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let intents: Api<DeserializeGuard<KubeDirectorCluster>> = Api::all(client.clone());
    let works: Api<KubeDirectorWork> = Api::all(client.clone());
    let member_clusters: Api<KubeDirectorMember> = Api::all(client.clone());
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::all(client.clone());
    let (store, writer) = kube::runtime::reflector::store();
    let changes = watcher(intents, watcher::Config::default())
        .default_backoff()
        // Passes read the intent fresh; the store (and the predicate) need no field managers.
        .modify(|guard: &mut DeserializeGuard<KubeDirectorCluster>| {
            if let Ok(intent) = guard.0.as_mut() {
                crate::cache::trim_metadata(&mut intent.metadata);
            }
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(intent_changed, kube::runtime::utils::PredicateConfig::default());
    // No `concurrency` here: see [`CONCURRENT_PASSES`].
    let controller = Controller::for_stream(changes, store.clone());
    let member_ctx = ctx.clone();
    // A connected ConfigMap or Secret (typed with upstream's label) changed: the clusters in
    // its namespace that connect to it get a fresh Work, so members hear --reconnect promptly.
    let by_configmap = connecting(store.clone(), true);
    let by_secret = connecting(store.clone(), false);
    controller
        .watches(works, watcher::Config::default().labels(LABEL_ORIGIN_NAME), |work: KubeDirectorWork| {
            Some(ObjectRef::new(&work.spec.origin.name).within(&work.spec.origin.namespace))
        })
        .watches(
            configmaps,
            watcher::Config::default().labels(kdfed_crds::cluster::LABEL_CONFIGMAP_TYPE),
            move |cm: ConfigMap| by_configmap(cm.namespace(), cm.name_any()),
        )
        .watches(
            secrets,
            watcher::Config::default().labels(kdfed_crds::cluster::LABEL_SECRET_TYPE),
            move |s: Secret| by_secret(s.namespace(), s.name_any()),
        )
        .watches(member_clusters, watcher::Config::default(), move |member: KubeDirectorMember| {
            affected_by_member(&store, &member_ctx, &member)
        })
        .trigger_backoff(reconcile::TriggerBackoff::default())
        .shutdown_on_signal()
        .run(timed_reconcile, reconcile::retry, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                reconcile::log_run_error("intents", &e);
            }
        })
        .await;
}

type IntentStore = Store<DeserializeGuard<KubeDirectorCluster>>;

/// What wakes a pass when an intent itself changes: its spec (generation), deletion,
/// finalizers, labels and annotations — not its status, which only this controller writes
/// (a pass never wakes itself with its own status write; at 100 clusters that was about
/// two passes in six). An object that does not parse wakes a pass on every change.
fn intent_changed(guard: &DeserializeGuard<KubeDirectorCluster>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match &guard.0 {
        Ok(c) => {
            let m = &c.metadata;
            (m.generation, m.deletion_timestamp.as_ref().map(|t| t.0.as_millisecond())).hash(&mut h);
            (&m.finalizers, &m.labels, &m.annotations).hash(&mut h);
        }
        Err(invalid) => invalid.metadata.resource_version.hash(&mut h),
    }
    Some(h.finish())
}

/// The mapper of a connected-object watch: the clusters in the object's namespace that
/// connect to a ConfigMap (`configmap`) or Secret of that name.
fn connecting(
    store: IntentStore,
    configmap: bool,
) -> impl Fn(Option<String>, String) -> Vec<ObjectRef<DeserializeGuard<KubeDirectorCluster>>> {
    move |ns: Option<String>, name: String| {
        store
            .state()
            .into_iter()
            .filter(|i| {
                i.0.as_ref().is_ok_and(|c| {
                    c.namespace() == ns
                        && c.spec.connections.as_ref().is_some_and(|k| {
                            if configmap { k.configmaps.contains(&name) } else { k.secrets.contains(&name) }
                        })
                })
            })
            .map(|i| ObjectRef::from_obj(&*i))
            .collect()
    }
}

/// The clusters a member cluster's change concerns (see [`wake`]): waiting clusters it may
/// now let in when something placement looks at changed, and clusters placed on it whose
/// status shows another availability (folded again now, not at their next periodic pass).
/// Such a change also retires the placement snapshot, so the woken decisions see it.
fn affected_by_member(
    store: &IntentStore,
    ctx: &Context,
    member: &KubeDirectorMember,
) -> Vec<ObjectRef<DeserializeGuard<KubeDirectorCluster>>> {
    let get = |k: &wake::Key| store.get(&ObjectRef::new(&k.1).within(&k.0)).and_then(|g| g.0.as_ref().ok().cloned());
    let (woken, changed) = ctx.wakes().member_changed(member, get);
    if changed {
        ctx.placer().member_seen(member.clone());
    }
    woken.into_iter().map(|(ns, name)| ObjectRef::new(&name).within(&ns)).collect()
}

/// A pass that waits its turn on [`Context::passes`], then runs. Every due pass is a
/// future from the moment it is due, so what a waiting one holds is paid once per queued
/// intent: the pass itself (every step's state, 38 KiB in a debug build) is allocated only
/// once its turn came. Inline, 10,000 waiting passes after a hub restart held them all at
/// once (hub RSS 727 MiB just after the restart at 1,000 × 10,000, against 460 MiB under the
/// load before).
async fn timed_reconcile(
    guard: Arc<DeserializeGuard<KubeDirectorCluster>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    // The semaphore is never closed; were it, the pass would run unbounded.
    let _turn = ctx.passes.acquire().await.ok();
    let started = std::time::Instant::now();
    let result = Box::pin(reconcile(guard, ctx.clone())).await;
    ctx.metrics.reconciles.finished("placement", started, result.as_ref().err().map(Error::step));
    result
}

fn seconds_since_creation(intent: &KubeDirectorCluster) -> Option<f64> {
    let created = intent.metadata.creation_timestamp.as_ref()?.0;
    Some(jiff::Timestamp::now().duration_since(created).as_secs_f64().max(0.0))
}

/// At most this many steps run in one pass (see [`reconcile`]).
const STEPS_PER_PASS: usize = 3;

/// What a step returns when it recorded progress (a finalizer, a placement, a failover) and
/// the next step should start at once from the object as it now is.
fn next_step() -> Action {
    Action::requeue(Duration::from_millis(50))
}

/// One pass over an intent: up to [`STEPS_PER_PASS`] steps, each from the object read
/// fresh, while a step recorded progress — the finalizer, then the placement, then the Work.
/// Each step used to end the pass with a requeue; under a batch of thousands, those
/// requeues waited behind every other queued pass (kube-runtime's scheduler takes the due
/// ones in no particular order once all passes are busy), and in the 1,000 × 10,000 run
/// clusters placed at its start still had no Work 35 minutes later (docs/benchmarks.md).
async fn reconcile(guard: Arc<DeserializeGuard<KubeDirectorCluster>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let mut action = next_step();
    for _ in 0..STEPS_PER_PASS {
        action = step(&guard, ctx.clone()).await?;
        if action != next_step() {
            break;
        }
    }
    Ok(action)
}

/// One step over an intent: dereference → validate → place → build → apply → fold.
async fn step(guard: &DeserializeGuard<KubeDirectorCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    // kube-runtime already wraps each reconcile in a span naming the object; a span
    // entered here would be held across awaits and leak into other tasks.
    let latest = reconcile::latest(guard, &ctx.client, &ctx.recorder, "Invalid").await.map_err(Error::Dereference)?;
    let Some((api, intent)) = latest else {
        return Ok(Action::await_change());
    };
    if intent.metadata.deletion_timestamp.is_some() {
        ctx.wakes().forget(&wake::key(&intent));
        return cleanup::delete(&ctx, &api, &intent).await;
    }
    if reconcile::add_finalizer(&api, &intent, FINALIZER_INTENT).await.map_err(Error::Apply)? {
        return Ok(next_step());
    }
    let old = intent.status.clone().unwrap_or_default();

    let app = dereference::app(&ctx, &intent).await?;
    let (resolved, status) = match validate::validate(&intent, app.as_ref(), &old) {
        Ok(valid) => valid,
        Err(invalid) => {
            // Only a change of the spec or its app can make it valid, not a member's.
            ctx.wakes().forget(&wake::key(&intent));
            return settle(&ctx, &api, &intent, &old, *invalid).await;
        }
    };

    // Placement is sticky once decided; an unplaced cluster is placed and looks again.
    let Some(placement) = status.placement.clone() else {
        return decide(&ctx, &api, &intent, &old, status, &resolved.cluster).await;
    };
    ctx.wakes().intent_at(wake::key(&intent), Some(&placement.member));
    let member_cluster = dereference::cached_member_cluster(&ctx, &placement.member).await?;
    let now = jiff::Timestamp::now();
    if let Some(after) = place::failover_due(&intent, member_cluster.as_ref(), &old, now, ctx.failover_margin) {
        return fail_over(&ctx, &api, &intent, status, &placement, after, &resolved.cluster).await;
    }

    let work = write_work(&ctx, &intent, &resolved, &placement, member_cluster.as_ref()).await?;
    let folded =
        fold::fold_report(&status, member_cluster.as_ref(), work.as_ref(), &placement, intent.metadata.generation);
    if folded.status != old {
        apply::status(&api, &intent, &folded.status).await.map_err(Error::Status)?;
    }
    for event in &folded.events {
        ctx.publish(&intent, event.warning, &event.reason, &event.message).await;
    }
    if folded.configured
        && let Some(s) = seconds_since_creation(&intent)
    {
        ctx.metrics.configured_latency.observe(s);
    }
    Ok(next_look(&intent, folded.settled, member_cluster.as_ref()))
}

/// When a placed cluster looks again by itself. Its Work's changes and its member's wake it
/// at once (watches), so a settled cluster only has a backstop: at 10,000 clusters a pass
/// every 30 s each was hundreds of requests per second at rest. A cluster whose member is
/// unavailable and that may fail over keeps looking often, since its failover is due by time.
fn next_look(intent: &KubeDirectorCluster, settled: bool, member_cluster: Option<&KubeDirectorMember>) -> Action {
    let may_fail_over = intent.spec.placement.as_ref().and_then(|p| p.failover_after()).is_some();
    if may_fail_over && !member_cluster.is_some_and(place::is_available) {
        Action::requeue(Duration::from_secs(3))
    } else if settled {
        Action::requeue(settled_recheck(intent))
    } else {
        Action::requeue(UNSETTLED_RECHECK)
    }
}

/// When a settled `intent` looks again: [`SETTLED_RECHECK`] plus a part of [`SETTLED_SPREAD`]
/// that its uid picks (the same at every pass).
fn settled_recheck(intent: &KubeDirectorCluster) -> Duration {
    let uid = intent.metadata.uid.as_deref().unwrap_or_default();
    let hash = uid.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    SETTLED_RECHECK + Duration::from_secs(hash % SETTLED_SPREAD.as_secs().max(1))
}

/// Decides where an unplaced cluster goes, from the placement snapshot with this leader's
/// ledger on top, and records the placement (in the ledger before the write, so a decision
/// running meanwhile counts it; forgotten again when the write fails).
async fn decide(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    intent: &KubeDirectorCluster,
    old: &KubeDirectorClusterStatus,
    status: KubeDirectorClusterStatus,
    spec: &kdfed_crds::cluster::KubeDirectorClusterSpec,
) -> Result<Action, Error> {
    let decision = {
        let mut placer = ctx.placer();
        let view = placer.view(std::time::Instant::now(), || dereference::fleet(&ctx.cache));
        let decision = place::place(intent, spec, status, &view, jiff::Timestamp::now());
        drop(view);
        if let place::Decision::Placed { status, .. } = &decision {
            let mut recorded = intent.clone();
            recorded.status = Some(status.clone());
            placer.record(recorded, std::time::Instant::now());
        }
        decision
    };
    match decision {
        place::Decision::Placed { status, member_cluster, message } => {
            let recorded = record_placement(ctx, api, intent, &status, &member_cluster, &message).await;
            if recorded.is_err() {
                ctx.placer().forget(intent);
            } else {
                ctx.wakes().intent_at(wake::key(intent), Some(&member_cluster));
            }
            recorded
        }
        place::Decision::Wait(wait) => {
            ctx.wakes().intent_at(wake::key(intent), None);
            settle(ctx, api, intent, old, wait).await
        }
    }
}

/// Writes the status of a pass that stops early when it changed (with its Event), and
/// says when to look again.
async fn settle(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    intent: &KubeDirectorCluster,
    old: &KubeDirectorClusterStatus,
    settle: Settle,
) -> Result<Action, Error> {
    if settle.status != *old {
        apply::status(api, intent, &settle.status).await.map_err(Error::Status)?;
        ctx.publish(intent, settle.event.warning, &settle.event.reason, &settle.event.message).await;
    }
    Ok(settle.then)
}

/// Records a new placement before acting on it, so a restart never places twice.
async fn record_placement(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    intent: &KubeDirectorCluster,
    status: &KubeDirectorClusterStatus,
    member_cluster: &str,
    message: &str,
) -> Result<Action, Error> {
    apply::status(api, intent, status).await.map_err(Error::Place)?;
    if let Some(s) = seconds_since_creation(intent) {
        ctx.metrics.placement_latency.observe(s);
    }
    info!(member = %member_cluster, "placed");
    ctx.publish(intent, false, "Placed", message).await;
    Ok(next_step())
}

/// The Work, a frozen snapshot of everything the member cluster needs, written unless the
/// member cluster is gone or the Work is being deleted; the Work as it is now either way.
async fn write_work(
    ctx: &Context,
    intent: &KubeDirectorCluster,
    resolved: &kdfed_crds::Resolved,
    placement: &PlacementStatus,
    member_cluster: Option<&KubeDirectorMember>,
) -> Result<Option<KubeDirectorWork>, Error> {
    let ns = intent.namespace().unwrap_or_else(|| "default".into());
    let wname = work_name(&ns, &intent.name_any());
    let existing = dereference::work(&ctx.client, &placement.member, &wname).await?;
    if member_cluster.is_none() || existing.as_ref().is_some_and(|w| w.metadata.deletion_timestamp.is_some()) {
        return Ok(existing);
    }
    let connected = dereference::connected(ctx, &ns, &resolved.cluster).await?;
    let built = build_work::build_work(intent, resolved, placement, &connected);
    for unreadable in &built.unreadable {
        ctx.publish(intent, true, "SecretKeys", unreadable).await;
    }
    apply::work_if_changed(&ctx.client, built, existing).await.map(Some).map_err(Error::Apply)
}

/// Moves a cluster off a member cluster that has been unavailable too long: the old Work
/// is released without that member's cleanup (its spoke fences its copy when it returns),
/// and the cluster is placed elsewhere with the next epoch.
async fn fail_over(
    ctx: &Context,
    api: &Api<KubeDirectorCluster>,
    intent: &KubeDirectorCluster,
    status: KubeDirectorClusterStatus,
    placement: &PlacementStatus,
    after: i64,
    spec: &kdfed_crds::cluster::KubeDirectorClusterSpec,
) -> Result<Action, Error> {
    let fleet = ctx.placer().view(std::time::Instant::now(), || dereference::fleet(&ctx.cache));
    let target = match place::failover_target(intent, spec, &placement.member, &fleet) {
        Ok(target) => target,
        Err(why) => {
            let message = place::failover_blocked(&placement.member, after, &why);
            warn!("{message}");
            ctx.publish(intent, true, "FailoverBlocked", &message).await;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    // Read again, on purpose: the member cluster may have come back since this pass read
    // it, and one that renews again keeps its cluster (its spoke lifts its self-fence only
    // once the hub shows it available).
    let now_available = dereference::member_cluster(&ctx.client, &placement.member).await?;
    if now_available.as_ref().is_some_and(place::is_available) {
        info!(member = %placement.member, "member available again; no failover");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // And the heartbeat itself: the member's status says what the availability loop decided
    // up to 2 s ago; a renewal since then (a spoke just restarted) means the member is back,
    // and its spoke may already be starting the copy it reads from this Work.
    let renewed = crate::members::last_renewal(&ctx.client, &placement.member)
        .await
        .doing("read member lease")
        .map_err(Error::Dereference)?;
    if renewed != ctx.heartbeats.renew_time(&placement.member) {
        info!(member = %placement.member, "member renewed its heartbeat; no failover");
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let ns = intent.namespace().unwrap_or_default();
    let wname = work_name(&ns, &intent.name_any());
    apply::release_work(&ctx.client, &placement.member, &wname).await.map_err(Error::Place)?;
    let (status, message) =
        place::failed_over(status, placement, &target, after, intent.metadata.generation, jiff::Timestamp::now());
    let mut recorded = intent.clone();
    recorded.status = Some(status.clone());
    ctx.placer().record(recorded, std::time::Instant::now());
    if let Err(e) = apply::status(api, intent, &status).await {
        ctx.placer().forget(intent);
        return Err(Error::Place(e));
    }
    ctx.wakes().intent_at(wake::key(intent), Some(&target));
    warn!("{message}");
    ctx.publish(intent, true, "FailedOver", &message).await;
    Ok(next_step())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pass_waiting_its_turn_holds_a_few_hundred_bytes_not_the_whole_pass() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let ctx = Arc::new(Context::new(
            client.clone(),
            "kdfed-system".into(),
            Duration::ZERO,
            crate::metrics::HubMetrics::register(&mut prometheus_client::registry::Registry::default()),
            crate::cache::FleetCache::start(&client).0,
        ));
        let guard = Arc::new(DeserializeGuard(Ok(KubeDirectorCluster::new("db", Default::default()))));
        let whole = std::mem::size_of_val(&reconcile(guard.clone(), ctx.clone()));
        let waiting = std::mem::size_of_val(&timed_reconcile(guard, ctx));
        assert!(waiting <= 512, "a queued pass holds {waiting} bytes (the pass itself: {whole})");
        assert!(whole > 4 * waiting, "the pass ({whole} bytes) is what boxing keeps out of the queue");
    }

    #[test]
    fn only_a_change_of_the_intent_itself_wakes_a_pass_not_its_status() {
        let mut c = KubeDirectorCluster::new("db", Default::default());
        c.metadata.generation = Some(1);
        let hash = |c: &KubeDirectorCluster| intent_changed(&DeserializeGuard(Ok(c.clone())));
        let first = hash(&c);
        c.status = Some(KubeDirectorClusterStatus { state: Some("configured".into()), ..Default::default() });
        c.metadata.resource_version = Some("42".into());
        assert_eq!(hash(&c), first, "a status write");
        c.metadata.generation = Some(2);
        let second = hash(&c);
        assert_ne!(second, first, "a spec change");
        c.finalizers_mut().push(FINALIZER_INTENT.into());
        assert_ne!(hash(&c), second, "a finalizer");
        let third = hash(&c);
        c.annotations_mut().insert("federation.kubedirector.hpe.com/orphan".into(), "true".into());
        assert_ne!(hash(&c), third, "an annotation");
    }

    #[test]
    fn settled_clusters_look_again_after_an_hour_spread_over_ten_minutes_by_uid() {
        let with_uid = |uid: &str| {
            let mut c = KubeDirectorCluster::new("db", Default::default());
            c.metadata.uid = Some(uid.into());
            settled_recheck(&c)
        };
        let waits: Vec<Duration> = (0..50).map(|i| with_uid(&format!("5f0c6e9a-1b2c-4d3e-8f90-{i:012}"))).collect();
        for w in &waits {
            assert!(*w >= SETTLED_RECHECK && *w < SETTLED_RECHECK + SETTLED_SPREAD, "{w:?}");
        }
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 40, "spread: {} distinct of 50", distinct.len());
        assert_eq!(with_uid("a"), with_uid("a"), "the same at every pass");
    }
}
