//! Hub sync: the spoke's side of federation. It connects out to the hub with the member's
//! own identity (renewing its token itself), renews a heartbeat Lease, reports capacity and
//! cluster counts into its member's status when they change, and turns each Work in its
//! namespace into local objects for the director, writing the director's status back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kdfed_common::Doing;
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{
    ANNOTATION_EPOCH, ANNOTATION_FENCED, ANNOTATION_ORIGIN, FINALIZER_WORK, KubeDirectorMember, KubeDirectorWork,
    LABEL_WORK, MEMBER_LEASE, MEMBER_SERVICE_ACCOUNT, MemberCapacity, member_namespace,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

/// Field manager of everything hub sync writes (locally and on the hub).
pub const FIELD_MANAGER: &str = "kdfed-hub-sync";

/// Settings of hub sync.
#[derive(Clone, Debug)]
pub struct Options {
    /// This member's name.
    pub member: String,
    /// Namespace of this member's `KubeDirectorConfig` (its secret-key master key).
    pub system_namespace: String,
    /// The kubeconfig `kdfed member add` printed.
    pub hub_kubeconfig: PathBuf,
    /// Where the current hub token is kept (renewed in place).
    pub token_file: PathBuf,
    /// Lifetime of renewed tokens.
    pub token_seconds: i64,
    /// Time between renewals.
    pub token_renew: Duration,
    /// Heartbeat interval.
    pub lease_interval: Duration,
    /// Interval of capacity reports (written only when something changed).
    pub report_interval: Duration,
    /// Metrics of the hub connection.
    pub metrics: Option<std::sync::Arc<crate::metrics::SpokeMetrics>>,
    /// Counts requests to the hub's API server (`server="hub"`).
    pub api_metrics: Option<std::sync::Arc<kdfed_common::observe::ApiMetrics>>,
    /// How long before its `afterSeconds` a failover-enabled copy stops when the heartbeat
    /// cannot be renewed (see [`crate::fencing`]).
    pub self_fence_margin: Duration,
}

/// Errors of hub sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server of the hub or the member refused a request.
    #[error(transparent)]
    Kube(#[from] kdfed_common::ApiError),
    /// The hub kubeconfig or token file could not be used.
    #[error("hub credentials: {0}")]
    Credentials(String),
    /// A cluster's secret keys could not be encrypted for this member.
    #[error("secret keys of {cluster}: {message}")]
    SecretKeys {
        /// The cluster (`namespace/name`).
        cluster: String,
        /// What went wrong.
        message: String,
    },
}

/// A hub client that reads its token from `token_file` (re-read by the client as it
/// changes), seeded from the join kubeconfig's token the first time.
pub async fn hub_client(opts: &Options) -> Result<Client, Error> {
    let kc = Kubeconfig::read_from(&opts.hub_kubeconfig).map_err(|e| Error::Credentials(e.to_string()))?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Credentials(e.to_string()))?;
    if !opts.token_file.exists() {
        let token = config.auth_info.token.as_ref().map(|t| secrecy::ExposeSecret::expose_secret(t).to_string());
        let Some(token) = token else {
            return Err(Error::Credentials(format!(
                "{} has no token and {} does not exist",
                opts.hub_kubeconfig.display(),
                opts.token_file.display()
            )));
        };
        write_token(&opts.token_file, &token).map_err(|e| Error::Credentials(e.to_string()))?;
    }
    config.auth_info.token = None;
    config.auth_info.token_file = Some(opts.token_file.display().to_string());
    match &opts.api_metrics {
        Some(metrics) => kdfed_common::counted(config, metrics, "hub").map_err(Error::Credentials),
        None => Client::try_from(config).map_err(|e| Error::Credentials(e.to_string())),
    }
}

fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token)?;
    std::fs::rename(tmp, path)
}

/// Runs hub sync until the process stops. Each loop retries on its own, so a hub that
/// cannot be reached never stops the director or the other loops.
pub async fn run(local: Client, opts: Options) -> Result<(), Error> {
    let hub = hub_client(&opts).await?;
    info!(member = %opts.member, "hub sync starting");
    let beats = Arc::new(crate::fencing::Heartbeat::default());
    let fencing = crate::fencing::Fencing {
        hub: hub.clone(),
        local: local.clone(),
        member: opts.member.clone(),
        margin: opts.self_fence_margin,
        interval: opts.lease_interval,
        heartbeat: beats.clone(),
    };
    let access = Arc::new(crate::hubaccess::HubAccess::default());
    let ctx = Arc::new(SyncContext { hub: hub.clone(), local: local.clone(), opts: opts.clone(), beats, access });
    tokio::join!(
        renew_tokens(ctx.clone()),
        heartbeat(ctx.clone()),
        report(ctx.clone()),
        works(ctx),
        crate::fencing::run(fencing)
    );
    Ok(())
}

struct SyncContext {
    hub: Client,
    local: Client,
    opts: Options,
    /// Successful heartbeat renewals, for self-fencing.
    beats: Arc<crate::fencing::Heartbeat>,
    /// Whether the hub accepts this member's credentials.
    access: Arc<crate::hubaccess::HubAccess>,
}

impl SyncContext {
    fn namespace(&self) -> String {
        member_namespace(&self.opts.member)
    }
}

async fn renew_tokens(ctx: Arc<SyncContext>) {
    let lifetime = ctx.opts.token_seconds.max(kdfed_common::tokens::MIN_TOKEN_SECONDS);
    loop {
        tokio::time::sleep(ctx.opts.token_renew).await;
        match kdfed_common::tokens::issue(&ctx.hub, &ctx.namespace(), MEMBER_SERVICE_ACCOUNT, lifetime).await {
            Ok(token) => {
                ctx.access.accepted();
                match write_token(&ctx.opts.token_file, &token) {
                    Ok(()) => info!("hub token renewed"),
                    Err(e) => warn!("cannot store the renewed hub token: {e}"),
                }
            }
            Err(kdfed_common::tokens::TokenError::Kube { source, .. }) if crate::hubaccess::is_refusal(&source) => {
                ctx.access.refused(&ctx.opts.member, "token renewal");
            }
            Err(e) => warn!("cannot renew the hub token: {e}"),
        }
    }
}

async fn heartbeat(ctx: Arc<SyncContext>) {
    let leases: Api<Lease> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let holder = format!("{}/{}", ctx.opts.member, std::env::var("HOSTNAME").unwrap_or_else(|_| "spoke".into()));
    loop {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": MEMBER_LEASE, "namespace": ctx.namespace()},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": ctx.opts.lease_interval.as_secs().max(1) * 3,
                "renewTime": MicroTime(jiff::Timestamp::now()),
            }
        });
        let sent = std::time::Instant::now();
        match leases.patch(MEMBER_LEASE, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(lease)).await {
            Ok(_) => {
                ctx.beats.renewed(sent);
                ctx.access.accepted();
            }
            Err(e) if crate::hubaccess::is_refusal(&e) => ctx.access.refused(&ctx.opts.member, "heartbeat"),
            Err(e) => warn!("heartbeat not renewed: {e}"),
        }
        tokio::time::sleep(ctx.access.pause(ctx.opts.lease_interval)).await;
    }
}

/// What a member reports about itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// API server version.
    pub version: String,
    /// Capacity summary.
    pub capacity: MemberCapacity,
    /// Storage classes.
    pub storage_classes: Vec<String>,
    /// Local federated clusters by state.
    pub clusters_by_state: BTreeMap<String, i64>,
    /// Local copies fenced because their placement moved away.
    pub fenced: Vec<String>,
}

fn add(map: &mut BTreeMap<String, f64>, key: &str, q: &Quantity) {
    *map.entry(key.to_string()).or_default() += kdfed_crds::quantity::parse(&q.0).unwrap_or(0.0);
}

fn quantities(map: BTreeMap<String, f64>) -> BTreeMap<String, Quantity> {
    map.into_iter()
        .map(|(k, v)| {
            let millis = (v * 1000.0).round() as i64;
            let text = match k.as_str() {
                "cpu" if millis % 1000 == 0 => format!("{}", millis / 1000),
                "cpu" => format!("{millis}m"),
                "memory" if (v as i64) % (1 << 30) == 0 => format!("{}Gi", (v as i64) >> 30),
                "memory" => format!("{}Mi", (v / 1048576.0).round() as i64),
                _ => format!("{}", v.round() as i64),
            };
            (k, Quantity(text))
        })
        .collect()
}

async fn build_report(local: &Client) -> Result<Report, Error> {
    const KEYS: [&str; 3] = ["cpu", "memory", "nvidia.com/gpu"];
    let version = local.apiserver_version().await.doing("read version")?.git_version;
    let nodes = Api::<Node>::all(local.clone()).list(&ListParams::default()).await.doing("list nodes")?.items;
    let mut allocatable = BTreeMap::new();
    let mut schedulable = Vec::new();
    for node in &nodes {
        let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if cordoned || !ready {
            continue;
        }
        schedulable.push(node.name_any());
        for (k, q) in node.status.as_ref().and_then(|s| s.allocatable.clone()).unwrap_or_default() {
            if KEYS.contains(&k.as_str()) {
                add(&mut allocatable, &k, &q);
            }
        }
    }
    let mut requested = BTreeMap::new();
    for pod in Api::<Pod>::all(local.clone()).list(&ListParams::default()).await.doing("list pods")?.items {
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        let on = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" || !schedulable.contains(&on) {
            continue;
        }
        for c in pod.spec.map(|s| s.containers).unwrap_or_default() {
            for (k, q) in c.resources.and_then(|r| r.requests).unwrap_or_default() {
                if KEYS.contains(&k.as_str()) {
                    add(&mut requested, &k, &q);
                }
            }
        }
    }
    let mut storage_classes: Vec<String> = Api::<StorageClass>::all(local.clone())
        .list(&ListParams::default())
        .await
        .doing("list storage classes")?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    storage_classes.sort();
    let mut clusters_by_state = BTreeMap::new();
    let lp = ListParams::default().labels(LABEL_WORK);
    for c in Api::<KubeDirectorCluster>::all(local.clone()).list(&lp).await.doing("list clusters")?.items {
        let state = c.status.and_then(|s| s.state).unwrap_or_else(|| "pending".into());
        *clusters_by_state.entry(state).or_default() += 1;
    }
    Ok(Report {
        version,
        capacity: MemberCapacity {
            allocatable: quantities(allocatable),
            requested: quantities(requested),
            nodes: schedulable.len() as i64,
        },
        storage_classes,
        clusters_by_state,
        fenced: Vec::new(),
    })
}

/// Fences local copies whose Work no longer exists on the hub (their placement moved away
/// or was released without cleanup): they are scaled to zero by the director and keep their
/// PVCs. Only a definite "not found" from the hub fences; errors change nothing.
async fn fence_orphans(ctx: &SyncContext) -> Result<Vec<String>, Error> {
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let clusters: Api<KubeDirectorCluster> = Api::all(ctx.local.clone());
    let mut fenced = Vec::new();
    for c in clusters.list(&ListParams::default().labels(LABEL_WORK)).await.doing("list local clusters")?.items {
        let Some(work) = c.labels().get(LABEL_WORK).cloned() else { continue };
        let key = format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any());
        let already = c.annotations().get(ANNOTATION_FENCED).is_some_and(|v| v == "true");
        if works.get_opt(&work).await.doing("read work")?.is_none() {
            if !already && c.metadata.deletion_timestamp.is_none() {
                let api: Api<KubeDirectorCluster> =
                    Api::namespaced(ctx.local.clone(), &c.namespace().unwrap_or_default());
                let patch = json!({"metadata": {"annotations": {ANNOTATION_FENCED: "true"}}});
                api.patch(&c.name_any(), &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .doing("fence local copy")?;
                warn!(cluster = %key, work = %work, "its Work is gone from the hub: fenced (scaled to zero, PVCs kept)");
            }
            fenced.push(key);
        }
    }
    Ok(fenced)
}

async fn report(ctx: Arc<SyncContext>) {
    let members: Api<KubeDirectorMember> = Api::all(ctx.hub.clone());
    let mut last: Option<Report> = None;
    loop {
        let fenced = match fence_orphans(&ctx).await {
            Ok(f) => Some(f),
            Err(e) => {
                if !ctx.access.is_refused() {
                    warn!("cannot check for moved placements: {e}");
                }
                None
            }
        };
        let report = build_report(&ctx.local).await.map(|mut r| {
            r.fenced = fenced.clone().or_else(|| last.as_ref().map(|l| l.fenced.clone())).unwrap_or_default();
            r
        });
        match report {
            Ok(r) if last.as_ref() != Some(&r) => {
                let patch = json!({"status": {
                    "kubernetesVersion": r.version,
                    "spokeVersion": env!("CARGO_PKG_VERSION"),
                    "capacity": r.capacity,
                    "storageClasses": r.storage_classes,
                    "clustersByState": r.clusters_by_state,
                    "fencedClusters": r.fenced,
                    "lastReportTime": Time(jiff::Timestamp::now()),
                }});
                let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
                match members.patch_status(&ctx.opts.member, &pp, &Patch::Merge(patch)).await {
                    Ok(_) => last = Some(r),
                    Err(e) if crate::hubaccess::is_refusal(&e) => ctx.access.refused(&ctx.opts.member, "report"),
                    Err(e) => warn!("member status not reported: {e}"),
                }
            }
            Ok(_) => {}
            Err(e) => warn!("cannot build the member report: {e}"),
        }
        tokio::time::sleep(ctx.access.pause(ctx.opts.report_interval)).await;
    }
}

async fn works(ctx: Arc<SyncContext>) {
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let local_clusters: Api<KubeDirectorCluster> = Api::all(ctx.local.clone());
    let ns = ctx.namespace();
    Controller::new(works, watcher::Config::default())
        .watches(local_clusters, watcher::Config::default().labels(LABEL_WORK), move |c: KubeDirectorCluster| {
            let work = c.labels().get(LABEL_WORK)?.clone();
            Some(ObjectRef::new(&work).within(&ns))
        })
        .trigger_backoff(kdfed_common::reconcile::TriggerBackoff::default())
        .shutdown_on_signal()
        .run(reconcile_work, work_retry, ctx.clone())
        .for_each(|r| {
            let ctx = ctx.clone();
            async move {
                if let Err(e) = r {
                    // While the hub refuses the credentials, that was said once already.
                    let text = e.to_string();
                    if !(ctx.access.is_refused() && crate::hubaccess::text_is_refusal(&text)) {
                        kdfed_common::reconcile::log_run_error("work sync", &e);
                    }
                }
            }
        })
        .await;
}

/// The error policy of Work sync: [`kdfed_common::reconcile::retry`], except while the hub
/// refuses this member's credentials (a 401): then quietly, backing off.
fn work_retry(work: Arc<KubeDirectorWork>, error: &Error, ctx: Arc<SyncContext>) -> Action {
    let refused =
        matches!(error, Error::Kube(kdfed_common::ApiError { source, .. }) if crate::hubaccess::is_refusal(source));
    if refused {
        ctx.access.refused(&ctx.opts.member, "work sync");
        return Action::requeue(ctx.access.pause(kdfed_common::reconcile::RETRY_AFTER));
    }
    kdfed_common::reconcile::retry(work, error, ctx)
}

async fn reconcile_work(cached: Arc<KubeDirectorWork>, ctx: Arc<SyncContext>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = sync_work(cached.clone(), &ctx).await;
    if let Some(m) = &ctx.opts.metrics {
        m.reconciles.observe("works", started, result.is_err());
    }
    if let Err(e) = &result
        && cached.metadata.deletion_timestamp.is_none()
        && !ctx.access.is_refused()
    {
        report_failure(&ctx, &cached, &e.to_string()).await;
    }
    result
}

/// Longest failure message reported into a Work's status.
const MAX_FAILURE_MESSAGE: usize = 1024;

/// Tells the hub why this member could not apply a Work (the member's webhook refused the
/// copy, a missing permission, secret keys that cannot be sealed, ...): `Applied=False,
/// reason ApplyFailed` in the Work's status, which the hub shows on the user's cluster.
/// Written only when the message changes, so a failure that repeats does not rewrite it;
/// the next successful pass replaces it. A failure to report is only logged.
async fn report_failure(ctx: &SyncContext, cached: &KubeDirectorWork, message: &str) {
    let message = kdfed_common::conditions::capped(message.to_string(), MAX_FAILURE_MESSAGE);
    let status = cached.status.clone().unwrap_or_default();
    let generation = cached.metadata.generation;
    let same = status.conditions.iter().any(|c| {
        c.type_ == "Applied"
            && c.status == "False"
            && c.reason == "ApplyFailed"
            && c.message == message
            && c.observed_generation == generation
    });
    if same {
        return;
    }
    let conditions = kdfed_common::conditions::set_condition(
        &status.conditions,
        "Applied",
        "False",
        "ApplyFailed",
        &message,
        generation,
    );
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let patch = json!({"status": {"conditions": conditions}});
    if let Err(e) = works.patch_status(&cached.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        warn!(work = %cached.name_any(), "cannot report the failure to the hub: {e}");
    }
}

async fn sync_work(cached: Arc<KubeDirectorWork>, ctx: &SyncContext) -> Result<Action, Error> {
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let wname = cached.name_any();
    let Some(work) = works.get_opt(&wname).await.doing("read work")? else {
        return Ok(Action::await_change());
    };
    let cluster = &work.spec.cluster;
    let local_clusters: Api<KubeDirectorCluster> = Api::namespaced(ctx.local.clone(), &cluster.namespace);
    let pp = PatchParams::apply(FIELD_MANAGER).force();

    if work.metadata.deletion_timestamp.is_some() {
        // Delete the local copy, wait for the director's cleanup, then release the Work.
        if let Some(local) = local_clusters.get_opt(&cluster.name).await.doing("read local cluster")? {
            if local.metadata.deletion_timestamp.is_none() {
                local_clusters
                    .delete(&cluster.name, &DeleteParams::background())
                    .await
                    .doing("delete local cluster")?;
                info!(work = %wname, "deleting the local cluster");
            }
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let secrets: Api<Secret> = Api::namespaced(ctx.local.clone(), &cluster.namespace);
        let lp = ListParams::default().labels(&format!("{LABEL_WORK}={wname}"));
        for s in secrets.list(&lp).await.doing("list secrets")?.items {
            let _ = secrets.delete(&s.name_any(), &DeleteParams::background()).await;
        }
        let configmaps: Api<ConfigMap> = Api::namespaced(ctx.local.clone(), &cluster.namespace);
        for c in configmaps.list(&lp).await.doing("list configmaps")?.items {
            let _ = configmaps.delete(&c.name_any(), &DeleteParams::background()).await;
        }
        kdfed_common::reconcile::remove_finalizer(&works, &work, FINALIZER_WORK).await?;
        info!(work = %wname, "local cleanup done; work released");
        return Ok(Action::await_change());
    }

    // Namespace, app, Secrets, then the cluster copy for the director.
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cluster.namespace}});
    Api::<Namespace>::all(ctx.local.clone())
        .patch(&cluster.namespace, &pp, &Patch::Apply(namespace))
        .await
        .doing("apply namespace")?;
    let app = json!({
        "apiVersion": kdfed_crds::KUBEDIRECTOR_API_VERSION, "kind": "KubeDirectorApp",
        "metadata": {"name": work.spec.app.name, "namespace": cluster.namespace, "labels": {"app.kubernetes.io/managed-by": "kdfed"}},
        "spec": work.spec.app.spec,
    });
    Api::<kdfed_crds::KubeDirectorApp>::namespaced(ctx.local.clone(), &cluster.namespace)
        .patch(&work.spec.app.name, &pp, &Patch::Apply(app))
        .await
        .doing("apply app")?;
    let material = work_material(ctx, &work).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.local.clone(), &cluster.namespace);
    for s in &work.spec.secrets {
        let mut labels = s.labels.clone();
        labels.insert(LABEL_WORK.to_string(), wname.clone());
        let data = material.secrets.get(&s.name).unwrap_or(&s.data);
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": s.name, "namespace": cluster.namespace, "labels": labels, "annotations": s.annotations},
            "type": s.type_, "data": data});
        secrets.patch(&s.name, &pp, &Patch::Apply(secret)).await.doing("apply secret")?;
    }
    // Connected ConfigMaps (with their type label, so the director sees them as connections).
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.local.clone(), &cluster.namespace);
    for c in &work.spec.config_maps {
        let mut labels = c.labels.clone();
        labels.insert(LABEL_WORK.to_string(), wname.clone());
        let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": c.name, "namespace": cluster.namespace, "labels": labels, "annotations": c.annotations},
            "data": c.data, "binaryData": c.binary_data});
        configmaps.patch(&c.name, &pp, &Patch::Apply(configmap)).await.doing("apply configmap")?;
    }
    // What the Work no longer carries goes (only copies this Work made).
    let ours = ListParams::default().labels(&format!("{LABEL_WORK}={wname}"));
    for s in secrets.list(&ours).await.doing("list secrets")?.items {
        if !work.spec.secrets.iter().any(|w| w.name == s.name_any()) {
            secrets.delete(&s.name_any(), &DeleteParams::background()).await.doing("delete secret")?;
        }
    }
    for c in configmaps.list(&ours).await.doing("list configmaps")?.items {
        if !work.spec.config_maps.iter().any(|w| w.name == c.name_any()) {
            configmaps.delete(&c.name_any(), &DeleteParams::background()).await.doing("delete configmap")?;
        }
    }
    let mut cluster = cluster.clone();
    material.fill_secret_keys(&mut cluster.spec);
    let spec = sealed_spec(ctx, &local_clusters, &cluster).await?;
    let mut labels = cluster.labels.clone();
    labels.insert(LABEL_WORK.to_string(), wname.clone());
    let origin = format!("{}/{}", work.spec.origin.namespace, work.spec.origin.name);
    let copy = json!({
        "apiVersion": kdfed_crds::KUBEDIRECTOR_API_VERSION, "kind": "KubeDirectorCluster",
        "metadata": {
            "name": cluster.name, "namespace": cluster.namespace, "labels": labels,
            "annotations": {ANNOTATION_EPOCH: work.spec.placement_epoch.to_string(), ANNOTATION_ORIGIN: origin},
        },
        "spec": spec,
    });
    let mut local = local_clusters.patch(&cluster.name, &pp, &Patch::Apply(copy)).await.doing("apply local cluster")?;
    if local.annotations().contains_key(ANNOTATION_FENCED) {
        // The placement is back on this member (a newer epoch): lift the fence.
        let patch = json!({"metadata": {"annotations": {ANNOTATION_FENCED: null}}});
        local = local_clusters
            .patch(&cluster.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .doing("lift fence")?;
        info!(cluster = %cluster.name, epoch = work.spec.placement_epoch, "placement is back: fence lifted");
    }

    // Report the director's status back into the Work.
    let status = local.status.clone();
    let ready = status.as_ref().and_then(|s| s.state.as_deref()) == Some("configured");
    let report = json!({
        "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorWork",
        "status": {
            "observedGeneration": work.metadata.generation,
            "appliedEpoch": work.spec.placement_epoch,
            "clusterStatus": status,
            "reportTime": Time(jiff::Timestamp::now()),
            "conditions": [
                {"type": "Applied", "status": "True", "reason": "Applied", "message": "local copy applied",
                 "lastTransitionTime": Time(jiff::Timestamp::now()), "observedGeneration": work.metadata.generation},
                {"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": if ready { "Configured" } else { "Reconciling" },
                 "message": format!("local state {}", local.status.as_ref().and_then(|s| s.state.clone()).unwrap_or_else(|| "pending".into())),
                 "lastTransitionTime": Time(jiff::Timestamp::now()), "observedGeneration": work.metadata.generation}
            ],
        }
    });
    let unchanged = work.status.as_ref().is_some_and(|s| {
        s.observed_generation == work.metadata.generation
            && s.applied_epoch == Some(work.spec.placement_epoch)
            && s.cluster_status == local.status
            // A reported failure is replaced as soon as a pass succeeds.
            && s.conditions.iter().any(|c| c.type_ == "Applied" && c.status == "True")
    });
    if !unchanged {
        works.patch_status(&wname, &pp, &Patch::Apply(report)).await.doing("report work status")?;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// A Work's secret material, read from the Secret beside it on the hub.
#[derive(Debug, Default, PartialEq)]
pub struct Material {
    /// Referenced Secrets' data: secret name → key → base64 value.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Secret-key values: role id → key name → value.
    pub secret_keys: BTreeMap<String, BTreeMap<String, String>>,
}

impl Material {
    /// Decodes the Secret's data (`secrets.json`, `secretKeys.json`); a missing key is empty.
    pub fn decode(data: &BTreeMap<String, k8s_openapi::ByteString>) -> Result<Self, String> {
        fn part(
            data: &BTreeMap<String, k8s_openapi::ByteString>,
            key: &str,
        ) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
            match data.get(key) {
                None => Ok(BTreeMap::new()),
                // serde's message may quote a value: say only where it is wrong.
                Some(bytes) => serde_json::from_slice(&bytes.0).map_err(|e| {
                    format!(
                        "{key} is not a JSON object of objects of strings (line {}, column {})",
                        e.line(),
                        e.column()
                    )
                }),
            }
        }
        Ok(Self {
            secrets: part(data, kdfed_crds::federation::WORK_SECRET_DATA_KEY)?,
            secret_keys: part(data, kdfed_crds::federation::WORK_SECRET_KEYS_KEY)?,
        })
    }

    /// Puts the secret-key values into `spec`'s keys that carry none.
    pub fn fill_secret_keys(&self, spec: &mut kdfed_crds::KubeDirectorClusterSpec) {
        for role in &mut spec.roles {
            let Some(values) = self.secret_keys.get(&role.id) else { continue };
            for key in &mut role.secret_keys {
                if key.value.is_none()
                    && key.encrypted_value.is_none()
                    && let Some(v) = values.get(&key.name)
                {
                    key.value = Some(v.clone());
                }
            }
        }
    }
}

/// The secret material of `work`: the Secret `spec.secretData` names in this member's
/// namespace on the hub (empty when the Work names none).
async fn work_material(ctx: &SyncContext, work: &KubeDirectorWork) -> Result<Material, Error> {
    let Some(reference) = &work.spec.secret_data else {
        return Ok(Material::default());
    };
    let what = format!("secret material of Work {}", work.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let secret = secrets.get(&reference.name).await.doing(format!("read {what} (Secret {})", reference.name))?;
    Material::decode(&secret.data.unwrap_or_default())
        .map_err(|message| Error::SecretKeys { cluster: what, message: format!("malformed: {message}") })
}

/// The cluster spec to store on this member: secret keys arrive from the hub in the clear
/// (the hub decrypts them with its own key into the Work, which only this member can read)
/// and are stored encrypted with this member's master key, whether or not the member runs
/// the admission webhook. An unchanged value keeps the ciphertext the local copy has, so
/// re-syncing changes nothing.
async fn sealed_spec(
    ctx: &SyncContext,
    local_clusters: &Api<KubeDirectorCluster>,
    cluster: &kdfed_crds::federation::WorkCluster,
) -> Result<kdfed_crds::KubeDirectorClusterSpec, Error> {
    let mut spec = cluster.spec.clone();
    if !spec.roles.iter().any(|r| kdfed_common::secretkeys::has_plain_values(&r.secret_keys)) {
        return Ok(spec);
    }
    let key_error =
        |message: String| Error::SecretKeys { cluster: format!("{}/{}", cluster.namespace, cluster.name), message };
    let master = member_master_key(ctx).await?;
    let existing = local_clusters.get_opt(&cluster.name).await.doing("read local cluster")?;
    for role in &mut spec.roles {
        let previous: Vec<_> = existing
            .iter()
            .flat_map(|c| c.spec.roles.iter().filter(|r| r.id == role.id).flat_map(|r| r.secret_keys.clone()))
            .collect();
        role.secret_keys = kdfed_common::secretkeys::seal(&role.secret_keys, &previous, &master)
            .map_err(|e| key_error(format!("role {}: {e}", role.id)))?;
    }
    Ok(spec)
}

/// This member's secret-key master key: the one in its `KubeDirectorConfig`, or a new one
/// written there (applied as hub sync, without force, so a key someone else set at the same
/// moment wins and is used on the next pass) when the config has none or does not exist,
/// as upstream's admission generates one for a config without a key.
async fn member_master_key(ctx: &SyncContext) -> Result<String, Error> {
    use kdfed_crds::config::{CONFIG_NAME, KubeDirectorConfig};
    let ns = &ctx.opts.system_namespace;
    if let Some(key) = kdfed_common::secretkeys::master_key(&ctx.local, ns).await? {
        return Ok(key);
    }
    let configs: Api<KubeDirectorConfig> = Api::namespaced(ctx.local.clone(), ns);
    let key = kdfed_common::secretkeys::generate_key()
        .map_err(|e| Error::SecretKeys { cluster: format!("{ns}/{CONFIG_NAME}"), message: e.to_string() })?;
    let apply = json!({
        "apiVersion": kdfed_crds::KUBEDIRECTOR_API_VERSION, "kind": "KubeDirectorConfig",
        "metadata": {"name": CONFIG_NAME, "namespace": ns},
        "spec": {"masterEncryptionKey": key},
    });
    let stored = configs
        .patch(CONFIG_NAME, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(apply))
        .await
        .doing("write a master key into KubeDirectorConfig")?;
    info!(config = %format!("{ns}/{CONFIG_NAME}"), "generated this member's secret-key master key");
    Ok(stored.spec.master_encryption_key.unwrap_or(key))
}
