//! The fleet the end-to-end tests and the fleet benchmark run: a hub and two members (east,
//! west) on real control planes, the real `kdfed-hub` and `kdfed-spoke` processes running
//! as the ServiceAccounts of deploy/hub and deploy/spoke, joined with scoped credentials, a
//! fence watchdog (`kdfed-spoke --fence-watchdog`, deploy/spoke's second ServiceAccount)
//! beside each spoke, plus helpers to wait for members and clusters.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kdfed_crds::federation::KubeDirectorMember;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::{ClusterSpec, Daemon, Testbed, certs, workspace_binary};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Each test runs a fleet of three control planes plus hub and spokes; on two cores they
/// run one at a time so that timing-dependent steps (heartbeats, failover) stay honest.
pub static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
pub const GRACE_SECONDS: u64 = 5;

pub fn free_port() -> u16 {
    kdfed_testbed::free_port().expect("free port")
}

/// GET `path` from a loopback HTTP server; returns the body, or "" when it does not answer
/// (yet): callers poll.
pub async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return String::new() };
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).await.is_err() {
        return String::new();
    }
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// The value of one series in an OpenMetrics text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().split(' ').next()?.parse().ok()))
}

pub struct Fleet {
    pub bed: Testbed,
    /// An admin client of the hub (the test acts as users and the platform team).
    pub hub: Client,
    pub dir: PathBuf,
    pub hubs: Vec<Daemon>,
    /// Each hub replica's command line, to start it again after a kill.
    pub hub_args: Vec<Vec<String>>,
    /// Admin port of the first hub replica.
    pub hub_admin: u16,
    /// Where the API server reaches the hub's admission webhook (HTTPS).
    pub webhook_port: u16,
    _webhook_front: Option<Forwarder>,
    pub spoke_admin: BTreeMap<String, u16>,
    /// East's spoke serves and registers its admission webhook (port, certificate files);
    /// west's does not, so both ways a member may run are exercised.
    east_webhook: (u16, (PathBuf, PathBuf, PathBuf)),
    pub spokes: BTreeMap<String, Daemon>,
    /// The fence watchdog beside each spoke (deploy/spoke's second Deployment).
    pub watchdogs: BTreeMap<String, Daemon>,
    pub watchdog_admin: BTreeMap<String, u16>,
    /// When a test restarted an API server or etcd: for a moment after, a restarted API
    /// server refuses with 403 until its RBAC caches are filled again, which is not a gap in
    /// the deploy RBAC.
    pub control_plane_restarts: Vec<k8s_openapi::jiff::Timestamp>,
    _tmp: tempfile::TempDir,
    // Last, so the next fleet starts only after this one is gone.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for d in self.hubs.iter_mut().chain(self.spokes.values_mut()).chain(self.watchdogs.values_mut()) {
            d.kill();
        }
        if std::thread::panicking() {
            let tmp = std::mem::replace(&mut self._tmp, tempfile::tempdir().expect("tempdir"));
            eprintln!("fleet kept for inspection: {}", tmp.keep().display());
            return;
        }
        // A refusal of the deploy RBAC that the binaries only logged is still a gap in it.
        let refused: Vec<String> = self
            .hubs
            .iter()
            .chain(self.spokes.values())
            .chain(self.watchdogs.values())
            .map(|d| d.log.clone())
            .chain(std::fs::read_dir(&self.dir).into_iter().flatten().flatten().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .flat_map(|p| {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                text.lines()
                    // RBAC names the identity; the admission fence around the hub names itself.
                    .filter(|l| {
                        (l.contains("forbidden") && l.contains(DEPLOY_IDENTITY)) || l.contains("kdfed-hub-fence")
                    })
                    .filter(|l| !self.just_after_restart(l))
                    .map(|l| format!("{}: {l}", p.display()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if !refused.is_empty() {
            let tmp = std::mem::replace(&mut self._tmp, tempfile::tempdir().expect("tempdir"));
            eprintln!("fleet kept for inspection: {}", tmp.keep().display());
            panic!("the deploy RBAC refused calls:\n{}", refused.join("\n"));
        }
    }
}

/// User name prefix of the deploy bases' ServiceAccounts in API errors.
pub const DEPLOY_IDENTITY: &str = "system:serviceaccount:kdfed-system:";

/// The time a log line of kdfed's binaries starts with (after colour codes), if any.
fn log_time(line: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain.split_whitespace().next()?.parse().ok()
}

impl Fleet {
    /// Whether a log line was written within a minute after a control-plane restart.
    fn just_after_restart(&self, line: &str) -> bool {
        let Some(t) = log_time(line) else { return false };
        self.control_plane_restarts.iter().any(|r| {
            let after = t.duration_since(*r).as_secs_f64();
            (0.0..60.0).contains(&after)
        })
    }

    pub fn join_file(&self, member: &str) -> PathBuf {
        self.dir.join(format!("{member}-join.kubeconfig"))
    }

    /// The kubeconfig of deploy/spoke's ServiceAccount on `member`'s API server.
    pub fn spoke_identity(&self, member: &str) -> PathBuf {
        self.dir.join(format!("{member}-spoke.kubeconfig"))
    }

    /// The kubeconfig of deploy/spoke's fence watchdog ServiceAccount on `member`'s API server.
    pub fn watchdog_identity(&self, member: &str) -> PathBuf {
        self.dir.join(format!("{member}-watchdog.kubeconfig"))
    }

    /// Starts `member`'s fence watchdog (as deploy/spoke's kdfed-fence-watchdog), with the
    /// spokes' heartbeat interval and the default margin, killing what is left of it first.
    pub fn start_watchdog(&mut self, member: &str) {
        if let Some(old) = self.watchdogs.get_mut(member) {
            old.kill();
        }
        let admin = *self.watchdog_admin.entry(member.to_string()).or_insert_with(free_port);
        let args: Vec<String> = vec![
            "--fence-watchdog".into(),
            "--kubeconfig".into(),
            self.watchdog_identity(member).display().to_string(),
            "--lease-interval-seconds".into(),
            "1".into(),
            "--admin-address".into(),
            format!("127.0.0.1:{admin}"),
        ];
        let n = self.watchdogs.len();
        let watchdog = Daemon::start(
            &format!("watchdog-{member}-{n}"),
            &workspace_binary("kdfed-spoke").expect("spoke"),
            &args,
            &self.dir,
        )
        .expect("start fence watchdog");
        self.watchdogs.insert(member.to_string(), watchdog);
    }

    pub fn start_spoke(&mut self, member: &str) {
        self.start_spoke_with_env(member, &[]);
    }

    /// Starts `member`'s spoke with extra environment variables (e.g. a skewed clock).
    pub fn start_spoke_with_env(&mut self, member: &str, envs: &[(String, String)]) {
        let admin = *self.spoke_admin.entry(member.to_string()).or_insert_with(free_port);
        let args: Vec<String> = vec![
            "--kubeconfig".into(),
            self.spoke_identity(member).display().to_string(),
            "--hub-kubeconfig".into(),
            self.join_file(member).display().to_string(),
            "--member".into(),
            member.into(),
            "--lease-interval-seconds".into(),
            "1".into(),
            "--hub-token-renew-seconds".into(),
            "3".into(),
            "--admin-address".into(),
            format!("127.0.0.1:{admin}"),
        ];
        let mut args = args;
        if member == "east" {
            let (port, files) = &self.east_webhook;
            args.extend(certs::webhook_flags(*port, files, &format!("https://127.0.0.1:{port}")));
        }
        let n = self.spokes.len();
        let spoke = Daemon::start_with_env(
            &format!("spoke-{member}-{n}"),
            &workspace_binary("kdfed-spoke").expect("spoke"),
            &args,
            &self.dir,
            envs,
        )
        .expect("start spoke");
        self.spokes.insert(member.to_string(), spoke);
    }

    /// Starts hub replica `i` again (same flags and ports, same log file), killing what is
    /// left of it first.
    pub fn start_hub(&mut self, i: usize) {
        self.hubs[i].kill();
        self.hubs[i] = Daemon::start(
            &format!("hub-{i}"),
            &workspace_binary("kdfed-hub").expect("hub binary"),
            &self.hub_args[i],
            &self.dir,
        )
        .expect("start hub");
    }

    /// A client of the hub acting as the platform team: a ServiceAccount bound to
    /// deploy/hub's ClusterRole kdfed-fleet-admin.
    pub async fn platform_team(&self) -> Client {
        let out = self.dir.join("platform.kubeconfig");
        if !out.exists() {
            let account =
                kdfed_testbed::rbac::ServiceAccountRef { namespace: "platform".into(), name: "fleet-admin".into() };
            let hub = &self.bed.cluster("hub").kubeconfig;
            kdfed_testbed::rbac::cluster_role_identity(hub, &account, "kdfed-fleet-admin", 3600, &out)
                .await
                .expect("fleet admin identity");
        }
        kdfed_testbed::client_for(&out).await.expect("platform client")
    }

    pub async fn member_client(&self, member: &str) -> Client {
        let kc = Kubeconfig::read_from(self.join_file(member)).expect("join kubeconfig");
        Client::try_from(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config"))
            .expect("client")
    }
}

pub async fn fleet() -> Fleet {
    fleet_with_hubs(1).await
}

pub async fn fleet_with_hubs(replicas: usize) -> Fleet {
    let serial = ONE_FLEET_AT_A_TIME.lock().await;
    let tmp = tempfile::Builder::new().prefix("kdfed-fleet-").tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let specs = vec![ClusterSpec::named("hub"), ClusterSpec::named("east"), ClusterSpec::named("west")];
    let bed =
        Testbed::start_in(&dir.join("bed"), &specs, kdfed_testbed::Lifetime::TiedToParent).await.expect("test bed");
    let hub = bed.client("hub").await.expect("hub client");
    // The platform team installs the CRDs (deploy/*'s kustomize bases carry them); the
    // binaries never do.
    for c in ["hub", "east", "west"] {
        kdfed_common::crds::install(bed.client(c).await.expect("client")).await.expect("CRDs");
    }
    // The binaries' identities: exactly the ServiceAccounts and RBAC of the deploy bases.
    let hub_identity = dir.join("hub-sa.kubeconfig");
    let day = 24 * 3600;
    let base = kdfed_testbed::rbac::deploy_base;
    kdfed_testbed::rbac::deploy_identity(&bed.cluster("hub").kubeconfig, &base("hub"), day, &hub_identity)
        .await
        .expect("deploy/hub identity");
    for member in ["east", "west"] {
        let admin = &bed.cluster(member).kubeconfig;
        for (account, file) in [("kdfed-spoke", "spoke"), ("kdfed-fence-watchdog", "watchdog")] {
            let out = dir.join(format!("{member}-{file}.kubeconfig"));
            kdfed_testbed::rbac::deploy_identity_as(admin, &base("spoke"), Some(account), day, &out)
                .await
                .expect("deploy/spoke identity");
        }
    }

    // The hub serves its admission webhook and registers it. Replicas sit behind one
    // address, as behind the kdfed-hub Service, so that admission survives a dead replica.
    let webhook_files = certs::webhook_cert(&bed.cluster("hub").dir.join("pki"), "hub-webhook").expect("webhook cert");
    let hook_ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let front =
        (replicas > 1).then(|| Forwarder::to_first_of(hook_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()));
    let front = match front {
        Some(f) => Some(f.await),
        None => None,
    };
    let hook_url = format!("https://127.0.0.1:{}", front.as_ref().map_or(hook_ports[0], |f| f.port));
    let admin_ports: Vec<u16> = (0..replicas).map(|_| free_port()).collect();
    let hub_args: Vec<Vec<String>> = (0..replicas)
        .map(|i| {
            let mut args: Vec<String> = vec![
                "--kubeconfig".into(),
                hub_identity.display().to_string(),
                "--heartbeat-grace-seconds".into(),
                GRACE_SECONDS.to_string(),
                "--admin-address".into(),
                format!("127.0.0.1:{}", admin_ports[i]),
                "--lease-duration-seconds".into(),
                "6".into(),
            ];
            args.extend(certs::webhook_flags(hook_ports[i], &webhook_files, &hook_url));
            args
        })
        .collect();
    let hubs: Vec<Daemon> = hub_args
        .iter()
        .enumerate()
        .map(|(i, args)| {
            Daemon::start(&format!("hub-{i}"), &workspace_binary("kdfed-hub").expect("hub binary"), args, &dir)
                .expect("start hub")
        })
        .collect();
    let bed_dir_pki_east = bed.cluster("east").dir.join("pki");
    let mut fleet = Fleet {
        _serial: serial,
        bed,
        hub,
        dir,
        hubs,
        hub_args,
        hub_admin: admin_ports[0],
        webhook_port: front.as_ref().map_or(hook_ports[0], |f| f.port),
        _webhook_front: front,
        spoke_admin: BTreeMap::new(),
        east_webhook: (
            free_port(),
            certs::webhook_cert(&bed_dir_pki_east, "spoke-webhook").expect("east webhook cert"),
        ),
        spokes: BTreeMap::new(),
        watchdogs: BTreeMap::new(),
        watchdog_admin: BTreeMap::new(),
        control_plane_restarts: Vec::new(),
        _tmp: tmp,
    };
    for port in admin_ports {
        fleet.wait_hub_ready(port).await;
    }
    wait_admission(&fleet.hub).await;

    // Members are registered as the platform team does (`kdfed member add`), with deploy/hub's
    // kdfed-fleet-admin role rather than cluster-admin.
    let server = fleet.bed.cluster("hub").server.clone();
    let platform = fleet.platform_team().await;
    for (member, region) in [("east", "east"), ("west", "west")] {
        let labels = BTreeMap::from([("region".to_string(), region.to_string())]);
        let kubeconfig =
            kdfed_hub::registry::add_member(&platform, member, &labels, &server, 3600).await.expect("add member");
        std::fs::write(fleet.join_file(member), kubeconfig).expect("write join kubeconfig");
    }
    fleet.start_spoke("east");
    fleet.start_spoke("west");
    fleet.start_watchdog("east");
    fleet.start_watchdog("west");
    for m in ["east", "west"] {
        wait_member(&fleet.hub, m, "True").await;
    }
    fleet
}

impl Fleet {
    /// Waits for `/readyz` of the hub replica on `port`, failing early if a replica died
    /// (e.g. refused by RBAC at start-up).
    pub async fn wait_hub_ready(&mut self, port: u16) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while http_get(port, "/readyz").await.trim() != "ok" {
            for h in &mut self.hubs {
                assert!(h.running(), "a hub exited: {}", std::fs::read_to_string(&h.log).unwrap_or_default());
            }
            assert!(tokio::time::Instant::now() < deadline, "hub on admin port {port} not ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Waits until the hub's webhook reviews what the hub's API server admits: a cluster of an
/// unknown app is refused (dry run, so nothing is stored).
pub async fn wait_admission(hub: &Client) {
    let api: Api<KubeDirectorCluster> = Api::namespaced(hub.clone(), "default");
    let mut probe = cluster("admission-probe", 1, "1", None);
    probe["spec"]["app"] = json!("no-such-app");
    let probe: KubeDirectorCluster = serde_json::from_value(probe).expect("probe");
    let dry_run = PostParams { dry_run: true, ..PostParams::default() };
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let answer = api.create(&dry_run, &probe).await;
        if matches!(&answer, Err(kube::Error::Api(e)) if e.message.contains("(rule: known-app)")) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the hub's webhook does not review clusters: {answer:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn wait_member(hub: &Client, member: &str, available: &str) -> KubeDirectorMember {
    let api: Api<KubeDirectorMember> = Api::all(hub.clone());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let m = api.get(member).await.expect("member");
        let status = m
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Available"))
            .map(|c| c.status.clone());
        let reported = m.status.as_ref().is_some_and(|s| s.capacity.is_some());
        if status.as_deref() == Some(available) && (available != "True" || reported) {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "member {member} not Available={available}: {:#?}", m.status);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn wait_cluster<F: FnMut(&KubeDirectorCluster) -> bool>(
    api: &Api<KubeDirectorCluster>,
    name: &str,
    what: &str,
    mut done: F,
) -> KubeDirectorCluster {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let c = api.get_opt(name).await.expect("get");
        if let Some(c) = &c
            && done(c)
        {
            return c.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{name}: not {what}: {:#?}", c.map(|c| c.status));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn cond<'a>(
    c: &'a KubeDirectorCluster,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    c.status.as_ref().and_then(|s| s.conditions.iter().find(|k| k.type_ == t))
}

pub fn ready_with(c: &KubeDirectorCluster, members: &str) -> bool {
    cond(c, "Ready").is_some_and(|k| k.status == "True")
        && c.status.as_ref().and_then(|s| s.members_ready.as_deref()) == Some(members)
}

pub fn member_of(c: &KubeDirectorCluster) -> Option<String> {
    c.status.as_ref().and_then(|s| s.placement.as_ref()).map(|p| p.member.clone())
}

pub fn spark_like() -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
        "metadata": {"name": "spark-lite", "namespace": "default"},
        "spec": {
            "label": {"name": "Spark lite"}, "distroID": "test/spark", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "example/spark:1", "defaultConfigPackage": null,
            "services": [{"id": "ui", "endpoint": {"urlScheme": "http", "port": 8080, "isDashboard": true}}],
            "roles": [{"id": "controller", "cardinality": "1"}, {"id": "worker", "cardinality": "1+"}],
            "config": {"selectedRoles": ["controller", "worker"], "roleServices": [{"roleID": "controller", "serviceIDs": ["ui"]}]}
        }
    })
}

/// The Spark-like app and the Secret its clusters mount, on the hub.
pub async fn seed_catalog(hub: &Client) {
    let apps: Api<KubeDirectorApp> = Api::namespaced(hub.clone(), "default");
    apps.create(&PostParams::default(), &serde_json::from_value(spark_like()).expect("app")).await.expect("app");
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "spark-creds"}, "stringData": {"password": "s3cret"}}))
    .expect("secret");
    secrets.create(&PostParams::default(), &secret).await.expect("secret");
}

pub fn cluster(name: &str, workers: i32, cpu: &str, selector: Option<(&str, &str)>) -> Value {
    let mut c = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "app": "spark-lite",
            "defaultSecret": {"name": "spark-creds", "mountPath": "/etc/creds"},
            "roles": [
                {"id": "controller", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}},
                {"id": "worker", "members": workers, "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}
            ]
        }
    });
    if let Some((k, v)) = selector {
        c["spec"]["placement"] = json!({"memberSelector": {"matchLabels": {k: v}}});
    }
    c
}

/// A TCP front for several backends: each connection goes to the first backend that
/// accepts it, like a Service in front of the replicas that are up.
pub struct Forwarder {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    pub async fn to_first_of(backends: Vec<String>) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                let backends = backends.clone();
                tokio::spawn(async move {
                    for b in &backends {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(b).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Forwarder { port, task }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP link between a spoke and the hub's API server that a test can cut, heal and slow
/// down: a partition, a flapping link, a slow hub.
pub struct Link {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Delay added before every chunk forwarded, in milliseconds.
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

async fn forward_slowly<R, W>(mut from: R, mut to: W, delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = delay_ms.load(std::sync::atomic::Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Link {
    /// A link to `server` (`https://host:port`), open.
    pub async fn to(server: &str) -> Link {
        let target = server.trim_start_matches("https://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, d, c) = (open.clone(), delay_ms.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                if !o.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the hub is unreachable
                }
                let (target, d) = (target.clone(), d.clone());
                let task = tokio::spawn(async move {
                    if let Ok(outbound) = tokio::net::TcpStream::connect(&target).await {
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        tokio::join!(forward_slowly(ri, wo, d.clone()), forward_slowly(ro, wi, d));
                    }
                });
                c.lock().expect("lock").push(task);
            }
        });
        Link { port, open, delay_ms, connections }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for t in self.connections.lock().expect("lock").drain(..) {
            t.abort();
        }
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Delays every chunk in both directions by `delay` (zero: full speed).
    pub fn slow(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Fleet {
    /// Restarts `member`'s spoke so that it reaches the hub through a [`Link`] the test
    /// controls.
    pub async fn route_through_link(&mut self, member: &str) -> Link {
        let link = Link::to(&self.bed.cluster("hub").server).await;
        self.spokes.get_mut(member).expect("spoke").kill();
        let join = self.join_file(member);
        let text = std::fs::read_to_string(&join).expect("join");
        let text = text.replace(&self.bed.cluster("hub").server, &format!("https://127.0.0.1:{}", link.port));
        std::fs::write(&join, text).expect("rewrite join");
        self.start_spoke(member);
        wait_member(&self.hub, member, "True").await;
        link
    }
}

/// The console's helpers (HTTP with cookies, the end user, starting the console).
pub mod console;

/// A small WebDriver client (headless Chromium) for the browser test.
pub mod webdriver;

/// A test bed for the CLI tests (kubectl plugin, output formats, completions).
pub mod cli;
