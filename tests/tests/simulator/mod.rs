//! The fleet simulator of issue #13: the real `kdfed-hub` against a real hub API server of
//! the test bed, and N virtual members in this process, each the real hub-sync code
//! (`kdfed_spoke::hubsync::run`) with its own identity from the hub's registry (the path
//! `kdfed member add` takes), its heartbeat Lease, capacity report, Work watch, applies and
//! status reports. The members' local side is one shared member API server (a real one of
//! the test bed, two KWOK nodes) where every virtual member's copies carry its own tag
//! (`hubsync::Options::shared_local`), and a simulated director that marks each local copy
//! `configured` after a delay instead of building pods. Everything the hub sees is what a
//! fleet of that size sends it; only the members' local work is cheaper than real.
//!
//! [`run`] creates M clusters with placement labels spread over the members' labels, waits
//! until every one is Ready, and measures: latencies from creation, the hub's placement
//! passes, its memory and CPU (and its API server's), API traffic at idle, a hub restart
//! (kill -9) and a member that stops heartbeating. Used by `tests/benches/scale.rs` (the
//! figures in docs/benchmarks.md) and by `tests/tests/scale.rs` (a small run asserting
//! outcomes only).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kdfed_crds::KubeDirectorCluster;
use kdfed_crds::federation::{KubeDirectorMember, KubeDirectorWork, LABEL_WORK};
use kdfed_testbed::{ClusterSpec, Daemon, Lifetime, NodePool, Testbed, certs, client_for, workspace_binary};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::support::{cluster, cond, http_get, sample, seed_catalog};

/// What one simulator run does.
#[derive(Clone, Debug)]
pub struct SimSettings {
    /// Virtual members (N).
    pub members: usize,
    /// Clusters created (M).
    pub clusters: usize,
    /// How long the simulated director takes to mark a copy `configured`.
    pub director_delay: Duration,
    /// How long the fleet is watched at idle once everything is Ready.
    pub idle: Duration,
    /// The hub's heartbeat grace (`--heartbeat-grace-seconds`).
    pub grace_seconds: u64,
    /// The virtual members' heartbeat interval.
    pub lease_interval: Duration,
    /// The virtual members' capacity-report interval (a report is written to the hub only
    /// when it changed, so this sets the load on the shared member API server, not the hub's).
    pub report_interval: Duration,
    /// Kill -9 the hub and start it again, measuring how it catches up.
    pub restart: bool,
    /// Silence one member and time until the hub marks it Unknown.
    pub member_loss: bool,
    /// Run one real `kdfed-spoke` with one cluster beside the simulated members, idle for
    /// this long, measuring its RSS and CPU.
    pub real_spoke: Option<Duration>,
    /// After the idle window, this many more clusters are created one at a time, each
    /// [`SimSettings::steady_every`] after the last, to time one creation at rest at this
    /// fleet size (the burst's latencies are queueing behind the burst).
    pub steady: usize,
    /// The pause between two of those creations.
    pub steady_every: Duration,
    /// The `kdfed-spoke` binary of that real spoke (default: the one next to this
    /// executable), e.g. the `small` profile's build.
    pub spoke_binary: Option<PathBuf>,
    /// How long to wait for everything to be Ready before giving up.
    pub timeout: Duration,
}

impl SimSettings {
    /// The default capacity-report period of `members` virtual members: 10 s (a real
    /// spoke's default) up to 100 members, then a tenth of a second per member, so the one
    /// shared member API server answers about 40 report listings a second whatever N is
    /// (each report lists nodes, pods, storage classes and copies there). Reports are written
    /// to the hub only when they changed; what changes at rest is nothing.
    pub fn report_interval_for(members: usize) -> Duration {
        Duration::from_secs((members as u64 / 10).max(10))
    }

    /// Defaults for `members` × `clusters`.
    pub fn new(members: usize, clusters: usize) -> SimSettings {
        SimSettings {
            members,
            clusters,
            director_delay: Duration::from_secs(1),
            idle: Duration::from_secs(60),
            grace_seconds: 30,
            lease_interval: Duration::from_secs(kdfed_spoke::settings::DEFAULT_LEASE_INTERVAL_SECONDS),
            report_interval: Self::report_interval_for(members),
            restart: true,
            member_loss: true,
            real_spoke: None,
            spoke_binary: None,
            steady: 20,
            steady_every: Duration::from_secs(1),
            timeout: Duration::from_secs(3600),
        }
    }
}

/// p50 / p90 / p99 / max of a set of seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread {
    /// How many values.
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Spread {
        values.sort_by(f64::total_cmp);
        let at = |p: f64| {
            if values.is_empty() {
                return f64::NAN;
            }
            let i = ((values.len() as f64 - 1.0) * p).round() as usize;
            values[i.min(values.len() - 1)]
        };
        Spread { count: values.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1.0) }
    }
}

/// CPU seconds and resident memory of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_mib: f64,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub members: usize,
    pub clusters: usize,
    /// Test bed, CRDs, identities, hub started.
    pub setup_seconds: f64,
    /// All members registered through the hub's registry.
    pub register_seconds: f64,
    /// All members Available on the hub after their hub sync started.
    pub join_seconds: f64,
    /// All clusters created (through the hub's admission webhook).
    pub create_seconds: f64,
    /// Creations refused with a server error (the hub's webhook not answering in time) and
    /// sent again, as a user would.
    pub create_retries: usize,
    /// From the first creation until every cluster was Ready.
    pub all_ready_seconds: f64,
    /// From the first creation until every cluster was Placed (the batch's scheduling).
    pub batch_placement_seconds: f64,
    pub placed: Spread,
    /// Creation → the member applied the local copy (the Work seen and acted on).
    pub propagated: Spread,
    pub ready: Spread,
    /// The same, of clusters created one at a time once the fleet was at rest (the idle
    /// window's end; [`SimSettings::steady`]).
    pub steady_placed: Spread,
    /// Creation → its Work on the hub (the hub's part of the propagation).
    pub steady_work: Spread,
    pub steady_propagated: Spread,
    pub steady_ready: Spread,
    /// Mean duration of the hub's placement passes (one cluster each) and how many ran.
    pub placement_pass_ms: f64,
    pub placement_passes: f64,
    /// The hub process after everything was Ready, and its peak RSS so far.
    pub hub_after_load: Usage,
    pub hub_peak_rss_mib: f64,
    /// CPU seconds of the hub API server (kube-apiserver) while the clusters were made.
    pub apiserver_load_cpu_seconds: f64,
    /// At idle: hub CPU (millicores), hub API server CPU (millicores), the hub's own
    /// requests per second, and the members' requests per member per minute.
    pub idle_hub_mcpu: f64,
    pub idle_apiserver_mcpu: f64,
    pub idle_hub_requests_per_second: f64,
    pub idle_member_requests_per_member_minute: f64,
    /// Hub restart: seconds from kill -9 until caught up; the hub's writes (all write
    /// verbs, its leader Lease included) and the API server's writes other than Leases
    /// in the same window.
    pub restart_caught_up_seconds: Option<f64>,
    pub restart_hub_writes: Option<f64>,
    pub restart_apiserver_writes: Option<BTreeMap<String, f64>>,
    pub restart_rss_mib: Option<f64>,
    /// Seconds from a member's last heartbeat until the hub marked it Unknown.
    pub member_loss_seconds: Option<f64>,
    /// A real release spoke idle with one cluster: RSS and CPU (millicores).
    pub real_spoke: Option<(f64, f64)>,
    /// That spoke's API requests per minute over the same window, by server (`hub`,
    /// `local`), verb and resource.
    pub real_spoke_requests: BTreeMap<String, f64>,
    pub total_seconds: f64,
}

/// Cumulative CPU seconds and RSS of `pid`, from /proc.
pub fn usage(pid: i32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(Usage { cpu_seconds: ticks / clock_ticks(), rss_mib: rss_kib / 1024.0 })
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The pid of the `kube-apiserver` whose command line names a file under `dir`.
pub fn apiserver_pid(dir: &Path) -> Option<i32> {
    let dir = dir.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        let exe = cmd.split('\0').next()?;
        (exe.ends_with("kube-apiserver") && cmd.contains(&dir)).then_some(pid)
    })
}

/// The sum of every series of `family` whose labels contain all of `with`.
pub fn total(text: &str, family: &str, with: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// The value of label `k` in a metrics line `l` ("" without it).
fn label(l: &str, k: &str) -> String {
    l.split_once(&format!("{k}=\""))
        .and_then(|(_, r)| r.split_once('"'))
        .map(|(v, _)| v.to_string())
        .unwrap_or_default()
}

/// Seconds from each creation in `created` to its name's time in `seen` (names in both).
fn since_created(created: &HashMap<String, Instant>, seen: &HashMap<String, Instant>) -> Vec<f64> {
    seen.iter().filter_map(|(n, at)| Some(at.saturating_duration_since(*created.get(n)?).as_secs_f64())).collect()
}

/// Write requests (POST, PUT, PATCH, DELETE) an API server counted, by resource
/// (`resource/subresource`), Leases left out.
fn apiserver_writes(text: &str) -> BTreeMap<String, f64> {
    let mut by = BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let verb = label(l, "verb");
        let resource = label(l, "resource");
        if !["POST", "PUT", "PATCH", "DELETE", "CREATE", "UPDATE", "APPLY"].contains(&verb.as_str())
            || resource == "leases"
        {
            continue;
        }
        let sub = label(l, "subresource");
        let key = if sub.is_empty() { resource } else { format!("{resource}/{sub}") };
        if let Some(v) = l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()) {
            *by.entry(key).or_default() += v;
        }
    }
    by
}

fn minus(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    a.iter().map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0))).filter(|(_, v)| *v > 0.0).collect()
}

async fn metrics_text(client: &Client) -> Result<String> {
    Ok(client.request_text(http::Request::get("/metrics").body(Vec::new())?).await?)
}

/// Label of member `i` and of the clusters meant for it: members are spread over ten
/// zones (fewer with fewer members), each cluster selects one zone.
fn zone(i: usize, zones: usize) -> String {
    format!("z{}", i % zones)
}

/// The hub process and how to start it again.
struct Hub {
    daemon: Daemon,
    args: Vec<String>,
    dir: PathBuf,
    admin: u16,
    peak_rss: f64,
}

impl Hub {
    fn start(args: Vec<String>, dir: &Path, admin: u16) -> Result<Hub> {
        let daemon = Daemon::start("hub", &workspace_binary("kdfed-hub")?, &args, dir)?;
        Ok(Hub { daemon, args, dir: dir.to_path_buf(), admin, peak_rss: 0.0 })
    }

    fn restart(&mut self) -> Result<()> {
        self.daemon.kill();
        self.daemon = Daemon::start("hub", &workspace_binary("kdfed-hub")?, &self.args, &self.dir)?;
        Ok(())
    }

    fn usage(&mut self) -> Usage {
        let u = usage(self.daemon.pid()).unwrap_or_default();
        self.peak_rss = self.peak_rss.max(u.rss_mib);
        u
    }

    async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await
    }

    /// Waits until this replica leads and its metrics show every member Available and
    /// every cluster configured.
    async fn wait_caught_up(&mut self, members: usize, clusters: usize, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let text = self.metrics().await;
            let leader = sample(&text, "kdfed_hub_leader") == Some(1.0);
            let available = sample(&text, r#"kdfed_hub_members{condition="Available",status="True"}"#).unwrap_or(0.0);
            let configured = total(&text, "kdfed_hub_clusters", &[r#"state="configured""#]);
            if leader && available as usize >= members && configured as usize >= clusters {
                return Ok(());
            }
            if !self.daemon.running() {
                bail!("the hub exited; see {}", self.daemon.log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "hub not caught up after {within:?}: leader {leader}, {available} members Available, {configured} clusters configured"
                );
            }
            self.usage();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// One virtual member: its hub sync task.
struct Virtual {
    name: String,
    task: tokio::task::JoinHandle<()>,
}

/// Registers `names` through the hub's registry as the platform team (`kdfed member add`),
/// eight at a time, writing each join kubeconfig into `dir`.
async fn register(platform: &Client, server: &str, names: &[(String, String)], dir: &Path) -> Result<()> {
    futures::stream::iter(names.iter().cloned())
        .map(|(name, zone)| {
            let platform = platform.clone();
            async move {
                let labels = BTreeMap::from([("zone".to_string(), zone)]);
                let kubeconfig = kdfed_hub::registry::add_member(&platform, &name, &labels, server, 24 * 3600)
                    .await
                    .with_context(|| format!("add member {name}"))?;
                std::fs::write(dir.join(format!("{name}.kubeconfig")), kubeconfig)?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Every cluster's status on the hub, by name.
async fn intent_statuses(hub: &Client) -> Result<BTreeMap<String, serde_json::Value>> {
    let api: Api<KubeDirectorCluster> = Api::all(hub.clone());
    let list = api.list(&ListParams::default()).await?;
    Ok(list.items.into_iter().map(|c| (c.name_any(), serde_json::to_value(&c.status).unwrap_or_default())).collect())
}

/// The clusters whose status differs between two readings, each with the JSON paths that
/// differ (what a write made with nothing changed was about).
fn changed_statuses(
    before: &BTreeMap<String, serde_json::Value>,
    after: &BTreeMap<String, serde_json::Value>,
) -> Vec<(String, Vec<String>)> {
    fn paths(a: &serde_json::Value, b: &serde_json::Value, at: String, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                    paths(va, vb, format!("{at}.{k}"), out);
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                    paths(va, vb, format!("{at}[{i}]"), out);
                }
            }
            _ if a != b => out.push(format!("{at}: {a} -> {b}")),
            _ => {}
        }
    }
    let mut changed = Vec::new();
    for (name, a) in before {
        if let Some(b) = after.get(name).filter(|b| *b != a) {
            let mut out = Vec::new();
            paths(a, b, "status".into(), &mut out);
            changed.push((name.clone(), out));
        }
    }
    changed
}

/// Starts the real hub sync of virtual member `name` against the shared member API server.
fn start_virtual(
    name: &str,
    dir: &Path,
    local: &Client,
    settings: &SimSettings,
    api_metrics: &Arc<kdfed_common::observe::ApiMetrics>,
) -> Virtual {
    let opts = kdfed_spoke::hubsync::Options {
        member: name.to_string(),
        system_namespace: "kdfed-system".into(),
        hub_kubeconfig: dir.join(format!("{name}.kubeconfig")),
        token_file: dir.join(format!("{name}.token")),
        token_seconds: 24 * 3600,
        token_renew: Duration::from_secs(8 * 3600),
        lease_interval: settings.lease_interval,
        report_interval: settings.report_interval,
        metrics: None,
        api_metrics: Some(api_metrics.clone()),
        self_fence_margin: Duration::from_secs(5),
        shared_local: Some(name.to_string()),
        heartbeat: None,
    };
    let local = local.clone();
    let member = name.to_string();
    let task = tokio::spawn(async move {
        if let Err(e) = kdfed_spoke::hubsync::run(local, opts).await {
            eprintln!("virtual member {member}: hub sync stopped: {e}");
        }
    });
    Virtual { name: name.to_string(), task }
}

/// The simulated director: every local copy is marked `configured` `delay` after it
/// first appears (no pods); the first time each copy was seen goes into `seen`.
fn start_director(
    local: Client,
    delay: Duration,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let copies: Api<KubeDirectorCluster> = Api::all(local.clone());
        let mut stream = std::pin::pin!(watcher(copies, watcher::Config::default().labels(LABEL_WORK)));
        while let Some(event) = stream.next().await {
            let (Ok(watcher::Event::Apply(c)) | Ok(watcher::Event::InitApply(c))) = event else { continue };
            let name = c.name_any();
            // The first sight counts (a later change of the copy must not move it).
            let now = Instant::now();
            let first = seen.lock().is_ok_and(|mut s| match s.entry(name.clone()) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(now);
                    true
                }
            });
            let configured = c.status.as_ref().and_then(|s| s.state.as_deref()) == Some("configured");
            if !first || configured {
                continue;
            }
            let api: Api<KubeDirectorCluster> = Api::namespaced(local.clone(), &c.namespace().unwrap_or_default());
            tokio::spawn(configure_later(api, name, delay));
        }
    })
}

/// What the director would write once a copy is built: `configured`, every member ready.
async fn configure_later(api: Api<KubeDirectorCluster>, name: String, delay: Duration) {
    tokio::time::sleep(delay).await;
    let patch = json!({"status": {"state": "configured", "membersReady": "2/2"}});
    for attempt in 1..=5 {
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(e) if attempt == 5 => eprintln!("simulated director: {name} not marked configured: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Creates `c`; a server error (5xx, e.g. the hub's admission webhook timing out) is
/// counted in `retries` and the creation sent again, up to five times in all.
async fn create_retrying(
    api: &Api<KubeDirectorCluster>,
    c: &KubeDirectorCluster,
    retries: &std::sync::atomic::AtomicUsize,
) -> Result<(), kube::Error> {
    let mut attempt = 1;
    loop {
        match api.create(&PostParams::default(), c).await {
            Ok(_) => return Ok(()),
            // An earlier attempt landed although its answer was an error.
            Err(kube::Error::Api(e)) if e.code == 409 && attempt > 1 => return Ok(()),
            Err(kube::Error::Api(e)) if e.code >= 500 && attempt < 5 => {
                retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// When each hub cluster was first seen Placed and Ready.
#[derive(Default)]
struct Seen {
    placed: HashMap<String, Instant>,
    ready: HashMap<String, Instant>,
    /// When each cluster's Work first appeared on the hub, by cluster name.
    works: HashMap<String, Instant>,
}

/// Watches the hub's Works, recording when each cluster's first appeared.
fn watch_works(hub: Client, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<KubeDirectorWork> = Api::all(hub);
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = stream.next().await {
            let (Ok(watcher::Event::Apply(w)) | Ok(watcher::Event::InitApply(w))) = event else { continue };
            let now = Instant::now();
            if let Ok(mut s) = seen.lock() {
                s.works.entry(w.spec.cluster.name.clone()).or_insert(now);
            }
        }
    })
}

fn watch_hub(hub: Client, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<KubeDirectorCluster> = Api::namespaced(hub, "default");
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = stream.next().await {
            let c = match event {
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
                _ => continue,
            };
            let is = |t: &str| cond(&c, t).is_some_and(|k| k.status == "True");
            let now = Instant::now();
            if let Ok(mut s) = seen.lock() {
                if is("Placed") {
                    s.placed.entry(c.name_any()).or_insert(now);
                }
                if is("Ready") {
                    s.ready.entry(c.name_any()).or_insert(now);
                }
            }
        }
    })
}

/// The running simulation: test bed, hub, virtual members and observers.
pub struct Sim {
    settings: SimSettings,
    bed: Testbed,
    /// Admin clients of the hub and of the shared member API server.
    hub: Client,
    local: Client,
    hub_process: Hub,
    dir: PathBuf,
    members: Vec<Virtual>,
    member_metrics: prometheus_client::registry::Registry,
    api_metrics: Arc<kdfed_common::observe::ApiMetrics>,
    copies_seen: Arc<Mutex<HashMap<String, Instant>>>,
    hub_seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub figures: Figures,
    _tmp: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        for t in self.tasks.iter().chain(self.members.iter().map(|m| &m.task)) {
            t.abort();
        }
        self.hub_process.daemon.kill();
    }
}

/// Names of the N virtual members with their zone label.
fn member_names(n: usize) -> Vec<(String, String)> {
    let zones = n.clamp(1, 10);
    (0..n).map(|i| (format!("sim-{i:04}"), zone(i, zones))).collect()
}

impl Sim {
    /// Starts the test bed (a hub and one shared member API server), the release or debug
    /// `kdfed-hub` next to this executable as deploy/hub's identity with its webhook, and
    /// the simulated director; registers nothing yet.
    pub async fn start(settings: SimSettings) -> Result<Sim> {
        let started = Instant::now();
        let tmp = tempfile::Builder::new().prefix("kdfed-sim-").tempdir()?;
        let dir = tmp.path().to_path_buf();
        let big = NodePool { cpu: "100000".into(), memory: "100000Gi".into(), ..NodePool::default() };
        let specs = vec![
            ClusterSpec { name: "hub".into(), nodes: NodePool { count: 0, ..NodePool::default() } },
            ClusterSpec { name: "members".into(), nodes: big },
        ];
        let bed = Testbed::start_in(&dir.join("bed"), &specs, Lifetime::TiedToParent).await?;
        let hub = bed.client("hub").await?;
        let local = bed.client("members").await?;
        for c in [&hub, &local] {
            kdfed_common::crds::install(c.clone()).await?;
        }
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "kdfed-system"}}))?;
        Api::<Namespace>::all(local.clone()).create(&PostParams::default(), &ns).await?;
        let identity = dir.join("hub-sa.kubeconfig");
        let base = kdfed_testbed::rbac::deploy_base("hub");
        kdfed_testbed::rbac::deploy_identity(&bed.cluster("hub").kubeconfig, &base, 24 * 3600, &identity).await?;
        let webhook = certs::webhook_cert(&bed.cluster("hub").dir.join("pki"), "hub-webhook")?;
        let (hook, admin) = (kdfed_testbed::free_port()?, kdfed_testbed::free_port()?);
        let mut args: Vec<String> = vec![
            "--kubeconfig".into(),
            identity.display().to_string(),
            "--heartbeat-grace-seconds".into(),
            settings.grace_seconds.to_string(),
            "--admin-address".into(),
            format!("127.0.0.1:{admin}"),
        ];
        args.extend(certs::webhook_flags(hook, &webhook, &format!("https://127.0.0.1:{hook}")));
        let hub_process = Hub::start(args, &dir, admin)?;
        crate::support::wait_admission(&hub).await;
        seed_catalog(&hub).await;
        let mut member_metrics = prometheus_client::registry::Registry::default();
        let api_metrics = kdfed_common::observe::ApiMetrics::register(&mut member_metrics);
        let copies_seen = Arc::new(Mutex::new(HashMap::new()));
        let hub_seen = Arc::new(Mutex::new(Seen::default()));
        let tasks = vec![
            start_director(local.clone(), settings.director_delay, copies_seen.clone()),
            watch_hub(hub.clone(), hub_seen.clone()),
            watch_works(hub.clone(), hub_seen.clone()),
        ];
        let figures = Figures {
            members: settings.members,
            clusters: settings.clusters,
            setup_seconds: started.elapsed().as_secs_f64(),
            ..Figures::default()
        };
        Ok(Sim {
            settings,
            bed,
            hub,
            local,
            hub_process,
            dir,
            members: Vec::new(),
            member_metrics,
            api_metrics,
            copies_seen,
            hub_seen,
            tasks,
            figures,
            _tmp: tmp,
        })
    }

    /// The hub's admin client (as a user or the platform team would act).
    pub fn hub(&self) -> &Client {
        &self.hub
    }

    /// The shared member API server's admin client.
    pub fn local(&self) -> &Client {
        &self.local
    }

    /// Registers the N members (as the platform team, deploy/hub's `kdfed-fleet-admin`
    /// role) and starts their hub syncs; waits until the hub shows all Available.
    pub async fn join_members(&mut self) -> Result<()> {
        let t = Instant::now();
        let account =
            kdfed_testbed::rbac::ServiceAccountRef { namespace: "platform".into(), name: "fleet-admin".into() };
        let platform_kc = self.dir.join("platform.kubeconfig");
        let hub_kc = self.bed.cluster("hub").kubeconfig.clone();
        kdfed_testbed::rbac::cluster_role_identity(&hub_kc, &account, "kdfed-fleet-admin", 24 * 3600, &platform_kc)
            .await?;
        let platform = client_for(&platform_kc).await?;
        let names = member_names(self.settings.members);
        let members_dir = self.dir.join("members");
        std::fs::create_dir_all(&members_dir)?;
        let server = self.bed.cluster("hub").server.clone();
        register(&platform, &server, &names, &members_dir).await?;
        self.figures.register_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (name, _) in &names {
            let v = start_virtual(name, &members_dir, &self.local, &self.settings, &self.api_metrics);
            self.members.push(v);
        }
        let deadline = Instant::now() + self.settings.timeout;
        loop {
            let text = self.hub_process.metrics().await;
            let available = sample(&text, r#"kdfed_hub_members{condition="Available",status="True"}"#).unwrap_or(0.0);
            if available as usize >= names.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {available} of {} members Available", names.len());
            }
            self.hub_process.usage();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.figures.join_seconds = t.elapsed().as_secs_f64();
        Ok(())
    }

    /// Creates the M clusters (each selecting one zone of members), eight at a time, and
    /// waits until every one is Ready; records the latencies.
    pub async fn create_clusters(&mut self) -> Result<()> {
        let zones = self.settings.members.clamp(1, 10);
        let api: Api<KubeDirectorCluster> = Api::namespaced(self.hub.clone(), "default");
        let hub_cpu = self.hub_process.usage().cpu_seconds;
        let apiserver = apiserver_pid(&self.bed.cluster("hub").dir).context("no hub kube-apiserver process")?;
        let apiserver_cpu = usage(apiserver).unwrap_or_default().cpu_seconds;
        let t0 = Instant::now();
        let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let retries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let creator = {
            let (api, created, m, retries) = (api.clone(), created.clone(), self.settings.clusters, retries.clone());
            tokio::spawn(async move {
                futures::stream::iter(0..m)
                    .map(|i| {
                        let (api, created, retries) = (api.clone(), created.clone(), retries.clone());
                        async move {
                            let name = format!("sim-{i:05}");
                            let z = zone(i, zones);
                            let c: KubeDirectorCluster =
                                serde_json::from_value(cluster(&name, 1, "10m", Some(("zone", &z))))?;
                            let at = Instant::now();
                            create_retrying(&api, &c, &retries).await.with_context(|| format!("create {name}"))?;
                            created.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(name, at);
                            anyhow::Ok(())
                        }
                    })
                    .buffer_unordered(8)
                    .try_collect::<Vec<()>>()
                    .await
            })
        };
        let mut create_done = None;
        let deadline = Instant::now() + self.settings.timeout;
        let mut creator = Some(creator);
        loop {
            if let Some(c) = creator.take_if(|c| c.is_finished()) {
                c.await??;
                create_done = Some(t0.elapsed().as_secs_f64());
            }
            let (placed, ready) = self.hub_seen.lock().map(|s| (s.placed.len(), s.ready.len())).unwrap_or_default();
            if create_done.is_some() && ready >= self.settings.clusters {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "after {:?}: {placed} Placed, {ready} Ready of {}",
                    self.settings.timeout,
                    self.settings.clusters
                );
            }
            self.hub_process.usage();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let f = &mut self.figures;
        f.create_retries = retries.load(std::sync::atomic::Ordering::Relaxed);
        f.all_ready_seconds = t0.elapsed().as_secs_f64();
        f.create_seconds = create_done.unwrap_or_default();
        let created = created.lock().map(|c| c.clone()).unwrap_or_default();
        let since = |seen: &HashMap<String, Instant>| since_created(&created, seen);
        {
            let seen = self.hub_seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            f.placed = Spread::of(since(&seen.placed));
            f.ready = Spread::of(since(&seen.ready));
            f.batch_placement_seconds = seen
                .placed
                .values()
                .max()
                .map(|last| last.saturating_duration_since(t0).as_secs_f64())
                .unwrap_or_default();
        }
        f.propagated = Spread::of(since(&self.copies_seen.lock().map(|s| s.clone()).unwrap_or_default()));
        let text = self.hub_process.metrics().await;
        let sum = total(&text, "kdfed_hub_reconcile_duration_seconds_sum", &[r#"controller="placement""#]);
        let count = total(&text, "kdfed_hub_reconcile_duration_seconds_count", &[r#"controller="placement""#]);
        f.placement_passes = count;
        f.placement_pass_ms = if count > 0.0 { 1000.0 * sum / count } else { f64::NAN };
        let now = self.hub_process.usage();
        f.hub_after_load = Usage { cpu_seconds: now.cpu_seconds - hub_cpu, rss_mib: now.rss_mib };
        f.apiserver_load_cpu_seconds = usage(apiserver).unwrap_or_default().cpu_seconds - apiserver_cpu;
        f.hub_peak_rss_mib = self.hub_process.peak_rss;
        Ok(())
    }

    /// The members' requests to the hub so far (every virtual member's hub sync).
    fn member_requests(&self) -> f64 {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.member_metrics).is_err() {
            return f64::NAN;
        }
        total(&text, "api_requests_total", &[r#"server="hub""#])
    }

    /// Sleeps one report interval + 5 s, long enough for every member to have written the
    /// report of what last changed on it: a copy's new state is reported at the member's next
    /// report, up to a report interval later (100 s at 1,000 members). Counted in a window that starts sooner, those reports read as
    /// traffic at idle or as writes caused by the hub's restart (5 of 10 members at 10 ×
    /// 10,000, 100 of 1,000 at 1,000 × 100, before this wait).
    async fn settle_reports(&self) {
        tokio::time::sleep(self.settings.report_interval + Duration::from_secs(5)).await;
    }

    /// Watches the fleet with nothing changing for the idle window.
    pub async fn idle(&mut self) -> Result<()> {
        let apiserver = apiserver_pid(&self.bed.cluster("hub").dir).context("no hub kube-apiserver process")?;
        self.settle_reports().await;
        let (hub0, api0) = (self.hub_process.usage(), usage(apiserver).unwrap_or_default());
        let hub_requests0 = total(&self.hub_process.metrics().await, "kdfed_hub_api_requests_total", &[]);
        let members0 = self.member_requests();
        let t = Instant::now();
        tokio::time::sleep(self.settings.idle).await;
        let secs = t.elapsed().as_secs_f64();
        let (hub1, api1) = (self.hub_process.usage(), usage(apiserver).unwrap_or_default());
        let hub_requests1 = total(&self.hub_process.metrics().await, "kdfed_hub_api_requests_total", &[]);
        let members1 = self.member_requests();
        let f = &mut self.figures;
        f.idle_hub_mcpu = 1000.0 * (hub1.cpu_seconds - hub0.cpu_seconds) / secs;
        f.idle_apiserver_mcpu = 1000.0 * (api1.cpu_seconds - api0.cpu_seconds) / secs;
        f.idle_hub_requests_per_second = (hub_requests1 - hub_requests0) / secs;
        f.idle_member_requests_per_member_minute =
            (members1 - members0) / self.settings.members.max(1) as f64 / (secs / 60.0);
        f.hub_peak_rss_mib = self.hub_process.peak_rss;
        Ok(())
    }

    /// Creates [`SimSettings::steady`] more clusters one at a time with the fleet at rest,
    /// named on from the burst's (`sim-<M + i>`, the same zones), and times each as the burst
    /// is timed.
    pub async fn steady(&mut self) -> Result<()> {
        let (m, k) = (self.settings.clusters, self.settings.steady);
        if k == 0 {
            return Ok(());
        }
        let zones = self.settings.members.clamp(1, 10);
        let api: Api<KubeDirectorCluster> = Api::namespaced(self.hub.clone(), "default");
        let retries = std::sync::atomic::AtomicUsize::new(0);
        let mut created = HashMap::new();
        for i in m..m + k {
            let name = format!("sim-{i:05}");
            let z = zone(i, zones);
            let c: KubeDirectorCluster = serde_json::from_value(cluster(&name, 1, "10m", Some(("zone", &z))))?;
            let at = Instant::now();
            create_retrying(&api, &c, &retries).await.with_context(|| format!("create {name}"))?;
            created.insert(name, at);
            tokio::time::sleep(self.settings.steady_every).await;
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        let ready = |s: &Seen| created.keys().filter(|n| s.ready.contains_key(*n)).count();
        while self.hub_seen.lock().map(|s| ready(&s)).unwrap_or_default() < k {
            if Instant::now() > deadline {
                bail!("of {k} clusters created one at a time, not all Ready after 600 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let since = |seen: &HashMap<String, Instant>| since_created(&created, seen);
        {
            let seen = self.hub_seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            self.figures.steady_placed = Spread::of(since(&seen.placed));
            self.figures.steady_work = Spread::of(since(&seen.works));
            self.figures.steady_ready = Spread::of(since(&seen.ready));
        }
        self.figures.steady_propagated =
            Spread::of(since(&self.copies_seen.lock().map(|s| s.clone()).unwrap_or_default()));
        Ok(())
    }

    /// Once the members' reports settled, kills the hub with SIGKILL, starts it again and
    /// times it until it leads and shows every member Available and every cluster configured;
    /// counts its writes until then plus 20 s.
    pub async fn restart_hub(&mut self) -> Result<()> {
        self.settle_reports().await;
        let statuses_before = intent_statuses(&self.hub).await?;
        let before = apiserver_writes(&metrics_text(&self.hub).await?);
        let t = Instant::now();
        self.hub_process.restart()?;
        let (n, m) = (self.settings.members, self.settings.clusters + self.settings.steady);
        self.hub_process.wait_caught_up(n, m, Duration::from_secs(600)).await?;
        self.figures.restart_caught_up_seconds = Some(t.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(20)).await;
        let text = self.hub_process.metrics().await;
        let writes: f64 = ["POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .map(|v| total(&text, "kdfed_hub_api_requests_total", &[&format!("verb=\"{v}\"")]))
            .sum();
        self.figures.restart_hub_writes = Some(writes);
        self.figures.restart_apiserver_writes =
            Some(minus(&apiserver_writes(&metrics_text(&self.hub).await?), &before));
        self.figures.restart_rss_mib = Some(self.hub_process.usage().rss_mib);
        let changed = changed_statuses(&statuses_before, &intent_statuses(&self.hub).await?);
        if let Some((name, paths)) = changed.first() {
            println!(
                "  after the restart {} cluster statuses differ; e.g. {name}: {}",
                changed.len(),
                paths.join(", ")
            );
        }
        Ok(())
    }

    /// Stops the last virtual member's hub sync (its heartbeat stops) and times until the
    /// hub marks it `Available=Unknown`, from its last renewal (the Lease's renewTime).
    pub async fn lose_member(&mut self) -> Result<()> {
        let Some(v) = self.members.last() else { return Ok(()) };
        v.task.abort();
        let name = v.name.clone();
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.hub.clone(), &kdfed_crds::federation::member_namespace(&name));
        let members: Api<KubeDirectorMember> = Api::all(self.hub.clone());
        let deadline = Instant::now() + Duration::from_secs(self.settings.grace_seconds + 300);
        loop {
            let m = members.get(&name).await?;
            let unknown = m
                .status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Available" && c.status == "Unknown"));
            if unknown {
                break;
            }
            if Instant::now() > deadline {
                bail!("member {name} not Unknown after its grace + 300 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let seen = jiff::Timestamp::now();
        let lease = leases.get(kdfed_crds::federation::MEMBER_LEASE).await?;
        let renewed = lease.spec.and_then(|s| s.renew_time).context("the Lease has no renewTime")?;
        self.figures.member_loss_seconds = Some((seen - renewed.0).total(jiff::Unit::Second)?);
        Ok(())
    }

    /// Every step of one run, in order.
    pub async fn run_all(settings: SimSettings) -> Result<Sim> {
        let started = Instant::now();
        let mut sim = Sim::start(settings).await?;
        sim.join_members().await?;
        sim.create_clusters().await?;
        sim.idle().await?;
        if let Err(e) = sim.steady().await {
            // Said, and the figures of the burst kept (the integration test asserts this
            // step's counts).
            eprintln!("clusters created one at a time not measured: {e:#}");
        }
        if sim.settings.restart {
            sim.restart_hub().await?;
        }
        if sim.settings.member_loss {
            sim.lose_member().await?;
        }
        if let Some(window) = sim.settings.real_spoke {
            // The last and optional step: its failure is said, and the figures of the run
            // before it are kept.
            match sim.real_spoke(window).await {
                Ok(figures) => sim.figures.real_spoke = Some(figures),
                Err(e) => eprintln!("real spoke not measured: {e:#}"),
            }
        }
        sim.figures.total_seconds = started.elapsed().as_secs_f64();
        Ok(sim)
    }
}

impl Sim {
    /// One real `kdfed-spoke` (the binary next to this executable) on its own member API
    /// server, joined like any member, with one cluster placed on it: once that cluster is
    /// Ready, its RSS at the end and its CPU (millicores) over `window` of idle.
    pub async fn real_spoke(&mut self, window: Duration) -> Result<(f64, f64)> {
        let bed = Testbed::start_in(&self.dir.join("bed-real"), &[ClusterSpec::named("real")], Lifetime::TiedToParent)
            .await?;
        let local = bed.client("real").await?;
        kdfed_common::crds::install(local.clone()).await?;
        // Its identity on its own member API server; `register` writes the hub kubeconfig
        // as `real-spoke.kubeconfig`, so this one must be named apart.
        let identity = self.dir.join("real-spoke-local.kubeconfig");
        let base = kdfed_testbed::rbac::deploy_base("spoke");
        let real = &bed.cluster("real").kubeconfig;
        kdfed_testbed::rbac::deploy_identity_as(real, &base, Some("kdfed-spoke"), 24 * 3600, &identity).await?;
        let platform = client_for(&self.dir.join("platform.kubeconfig")).await?;
        let server = self.bed.cluster("hub").server.clone();
        let names = [("real-spoke".to_string(), "real".to_string())];
        register(&platform, &server, &names, &self.dir).await?;
        let admin = kdfed_testbed::free_port()?;
        let args: Vec<String> = vec![
            "--kubeconfig".into(),
            identity.display().to_string(),
            "--hub-kubeconfig".into(),
            self.dir.join("real-spoke.kubeconfig").display().to_string(),
            "--member".into(),
            "real-spoke".into(),
            "--admin-address".into(),
            format!("127.0.0.1:{admin}"),
        ];
        let binary = match &self.settings.spoke_binary {
            Some(path) => path.clone(),
            None => workspace_binary("kdfed-spoke")?,
        };
        let mut spoke = Daemon::start("real-spoke", &binary, &args, &self.dir)?;
        let api: Api<KubeDirectorCluster> = Api::namespaced(self.hub.clone(), "default");
        let c: KubeDirectorCluster = serde_json::from_value(cluster("real-one", 1, "10m", Some(("zone", "real"))))?;
        api.create(&PostParams::default(), &c).await?;
        let deadline = Instant::now() + Duration::from_secs(900);
        while !self.hub_seen.lock().is_ok_and(|s| s.ready.contains_key("real-one")) {
            if !spoke.running() || Instant::now() > deadline {
                bail!("the real spoke's cluster is not Ready; see {}", spoke.log.display());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let requests_before = spoke_requests(&http_get(admin, "/metrics").await);
        let before = usage(spoke.pid()).context("spoke process")?;
        let t = Instant::now();
        tokio::time::sleep(window).await;
        let after = usage(spoke.pid()).context("spoke process")?;
        let minutes = t.elapsed().as_secs_f64() / 60.0;
        let mcpu = 1000.0 * (after.cpu_seconds - before.cpu_seconds) / t.elapsed().as_secs_f64();
        let mut requests = spoke_requests(&http_get(admin, "/metrics").await);
        for (k, v) in requests.iter_mut() {
            *v = (*v - requests_before.get(k).copied().unwrap_or(0.0)) / minutes;
        }
        requests.retain(|_, v| *v > 0.0);
        self.figures.real_spoke_requests = requests;
        spoke.kill();
        Ok((after.rss_mib, mcpu))
    }
}

/// A spoke's API requests from its `/metrics`, by server, verb and resource.
fn spoke_requests(text: &str) -> BTreeMap<String, f64> {
    let mut by = BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with("kdfed_spoke_api_resource_requests_total{")) {
        let Some(v) = l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()) else { continue };
        let key = format!("{} {} {}", label(l, "server"), label(l, "verb"), label(l, "resource"));
        *by.entry(key).or_default() += v;
    }
    by
}

/// Columns of the CSV (one row per run), in order.
pub const CSV_HEADER: &str = "members,clusters,setup_s,register_s,join_s,create_s,all_ready_s,batch_placement_s,\
placed_p50_s,placed_p90_s,placed_p99_s,propagated_p50_s,propagated_p90_s,propagated_p99_s,ready_p50_s,ready_p90_s,\
ready_p99_s,placement_pass_ms,placement_passes,hub_load_cpu_s,hub_rss_after_load_mib,hub_peak_rss_mib,\
apiserver_load_cpu_s,idle_hub_mcpu,idle_apiserver_mcpu,idle_hub_rps,idle_member_req_per_member_min,\
restart_caught_up_s,restart_hub_writes,restart_apiserver_writes,member_loss_s,real_spoke_rss_mib,real_spoke_mcpu,total_s,\
create_retries,steady_placed_p50_s,steady_placed_p99_s,steady_propagated_p50_s,steady_propagated_p99_s,steady_ready_p50_s,\
steady_ready_p99_s,steady_work_p50_s,steady_work_p99_s";

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_default()
}

impl Figures {
    /// The API server's writes other than Leases during the restart window, summed.
    pub fn restart_apiserver_write_total(&self) -> Option<f64> {
        self.restart_apiserver_writes.as_ref().map(|w| w.values().sum())
    }

    /// This run as one CSV row (columns of [`CSV_HEADER`]).
    pub fn csv_row(&self) -> String {
        let s = |x: &Spread| format!("{:.3},{:.3},{:.3}", x.p50, x.p90, x.p99);
        [
            format!("{},{}", self.members, self.clusters),
            format!("{:.1},{:.1},{:.1}", self.setup_seconds, self.register_seconds, self.join_seconds),
            format!("{:.1},{:.1},{:.2}", self.create_seconds, self.all_ready_seconds, self.batch_placement_seconds),
            s(&self.placed),
            s(&self.propagated),
            s(&self.ready),
            format!("{:.2},{:.0}", self.placement_pass_ms, self.placement_passes),
            format!(
                "{:.1},{:.1},{:.1}",
                self.hub_after_load.cpu_seconds, self.hub_after_load.rss_mib, self.hub_peak_rss_mib
            ),
            format!("{:.1},{:.1},{:.1}", self.apiserver_load_cpu_seconds, self.idle_hub_mcpu, self.idle_apiserver_mcpu),
            format!("{:.2},{:.2}", self.idle_hub_requests_per_second, self.idle_member_requests_per_member_minute),
            opt(self.restart_caught_up_seconds),
            opt(self.restart_hub_writes),
            opt(self.restart_apiserver_write_total()),
            opt(self.member_loss_seconds),
            opt(self.real_spoke.map(|r| r.0)),
            opt(self.real_spoke.map(|r| r.1)),
            format!("{:.0}", self.total_seconds),
            self.create_retries.to_string(),
            [&self.steady_placed, &self.steady_propagated, &self.steady_ready, &self.steady_work]
                .iter()
                .map(|x| if x.count == 0 { ",".to_string() } else { format!("{:.3},{:.3}", x.p50, x.p99) })
                .collect::<Vec<_>>()
                .join(","),
        ]
        .join(",")
    }

    /// The run as a readable table (one figure a line).
    pub fn table(&self) -> String {
        let sp = |x: &Spread| format!("p50 {:.2} s, p90 {:.2} s, p99 {:.2} s, max {:.2} s", x.p50, x.p90, x.p99, x.max);
        let mut rows = vec![
            ("members × clusters".to_string(), format!("{} × {}", self.members, self.clusters)),
            (
                "set-up / register / join".into(),
                format!("{:.1} s / {:.1} s / {:.1} s", self.setup_seconds, self.register_seconds, self.join_seconds),
            ),
            (
                "created / all Ready".into(),
                format!(
                    "{:.1} s ({} creations retried after a server error) / {:.1} s after the first creation",
                    self.create_seconds, self.create_retries, self.all_ready_seconds
                ),
            ),
            ("create → Placed".into(), sp(&self.placed)),
            ("create → copy on member".into(), sp(&self.propagated)),
            ("create → Ready".into(), sp(&self.ready)),
            ("at rest, one at a time:".into(), format!("{} clusters", self.steady_ready.count)),
            ("  create → Placed".into(), sp(&self.steady_placed)),
            ("  create → Work on the hub".into(), sp(&self.steady_work)),
            ("  create → copy on member".into(), sp(&self.steady_propagated)),
            ("  create → Ready".into(), sp(&self.steady_ready)),
            (
                "placement".into(),
                format!(
                    "last Placed {:.2} s after the first creation; {:.0} placement passes, mean {:.2} ms",
                    self.batch_placement_seconds, self.placement_passes, self.placement_pass_ms
                ),
            ),
            (
                "hub under load".into(),
                format!(
                    "{:.1} CPU s; RSS {:.0} MiB after, peak {:.0} MiB; hub API server {:.1} CPU s",
                    self.hub_after_load.cpu_seconds,
                    self.hub_after_load.rss_mib,
                    self.hub_peak_rss_mib,
                    self.apiserver_load_cpu_seconds
                ),
            ),
            (
                "idle".into(),
                format!(
                    "hub {:.1} mCPU, {:.2} req/s; hub API server {:.0} mCPU; members {:.2} req per member per min",
                    self.idle_hub_mcpu,
                    self.idle_hub_requests_per_second,
                    self.idle_apiserver_mcpu,
                    self.idle_member_requests_per_member_minute
                ),
            ),
        ];
        if let Some(s) = self.restart_caught_up_seconds {
            let writes = self
                .restart_apiserver_writes
                .as_ref()
                .map(|w| w.iter().map(|(k, v)| format!("{k} {v:.0}")).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            rows.push((
                "hub restart (kill -9)".into(),
                format!(
                    "caught up in {s:.1} s; hub writes {} (incl. its leader Lease); API server writes but Leases: {} [{writes}]; RSS {} MiB",
                    opt(self.restart_hub_writes),
                    opt(self.restart_apiserver_write_total()),
                    opt(self.restart_rss_mib)
                ),
            ));
        }
        if let Some(s) = self.member_loss_seconds {
            rows.push(("member loss".into(), format!("Unknown {s:.1} s after its last heartbeat")));
        }
        if let Some((rss, mcpu)) = self.real_spoke {
            rows.push(("real spoke, idle, 1 cluster".into(), format!("RSS {rss:.1} MiB, {mcpu:.2} mCPU")));
            let per_minute: Vec<String> = self.real_spoke_requests.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
            rows.push(("real spoke requests/min".into(), per_minute.join(", ")));
        }
        rows.push(("whole run".into(), format!("{:.0} s", self.total_seconds)));
        rows.iter().map(|(k, v)| format!("  {k:<28} {v}\n")).collect()
    }
}
