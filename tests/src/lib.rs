//! The test bed: real Kubernetes control planes on loopback (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) with KWOK simulating nodes, one per simulated
//! cluster. Used by the integration and end-to-end tests, the `testbed` binary and the
//! local fleet.

pub mod binaries;
pub mod certs;
pub mod exec;
pub mod process;
pub mod rbac;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::{Deserialize, Serialize};

pub use binaries::Binaries;
pub use process::Lifetime;
use process::Process;
pub use process::free_port;

/// Simulated nodes of one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct NodePool {
    /// How many nodes.
    pub count: usize,
    /// Labels of every node.
    pub labels: BTreeMap<String, String>,
    /// Allocatable CPU of each node.
    pub cpu: String,
    /// Allocatable memory of each node.
    pub memory: String,
    /// Allocatable GPUs (`nvidia.com/gpu`) of each node, if any.
    pub gpu: Option<String>,
    /// Pods per node.
    pub pods: u32,
}

impl Default for NodePool {
    fn default() -> Self {
        NodePool { count: 2, labels: BTreeMap::new(), cpu: "16".into(), memory: "64Gi".into(), gpu: None, pods: 110 }
    }
}

/// One simulated cluster to start.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSpec {
    /// Name; also the kubeconfig's file name.
    pub name: String,
    /// Its nodes.
    pub nodes: NodePool,
}

impl ClusterSpec {
    /// A cluster with the default node pool.
    pub fn named(name: &str) -> ClusterSpec {
        ClusterSpec { name: name.to_string(), nodes: NodePool::default() }
    }
}

/// A running simulated cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Name.
    pub name: String,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// API server URL.
    pub server: String,
    /// Port of KWOK's kubelet-like server (exec, logs).
    pub kwok_port: u16,
    /// Folder of the cluster's data, certificates and logs.
    pub dir: PathBuf,
    processes: Vec<Process>,
    /// Keeps an `Exec` per pod so that exec runs in the pod's own directory.
    exec_sync: Option<tokio::task::JoinHandle<()>>,
    kwok_restart: Option<KwokCommand>,
    kwok_restarts: u32,
}

impl Cluster {
    /// Where the files a pod's containers wrote through exec are: container path `/etc/x`
    /// is `<this>/etc/x` (see [`exec`]).
    pub fn pod_filesystem(&self, namespace: &str, pod: &str, uid: &str) -> PathBuf {
        exec::pod_filesystem(&self.dir, namespace, pod, uid)
    }

    /// Where the files of the pods mounting the PVC `claim` (uid `claim_uid`) are: a pod
    /// with a claim keeps its files with it (see [`exec::claim_filesystem`]).
    pub fn claim_filesystem(&self, namespace: &str, claim: &str, claim_uid: &str) -> PathBuf {
        exec::claim_filesystem(&self.dir, namespace, claim, claim_uid)
    }
}

/// State written by `testbed up` so that `testbed down` finds the processes.
#[derive(Serialize, Deserialize, Debug, Default)]
struct StateFile {
    clusters: Vec<ClusterState>,
}

#[derive(Serialize, Deserialize, Debug)]
struct ClusterState {
    name: String,
    kubeconfig: PathBuf,
    server: String,
    processes: Vec<(String, i32)>,
}

const STATE_FILE: &str = "testbed.json";

/// A set of running simulated clusters. Dropping it kills every process it started.
#[derive(Debug)]
pub struct Testbed {
    /// Root folder.
    pub dir: PathBuf,
    clusters: Vec<Cluster>,
    _tempdir: Option<tempfile::TempDir>,
}

impl Testbed {
    /// Starts one cluster per name, with default node pools, in a temporary folder.
    pub async fn start(names: &[&str]) -> Result<Testbed> {
        let specs: Vec<ClusterSpec> = names.iter().map(|n| ClusterSpec::named(n)).collect();
        let tempdir = tempfile::Builder::new().prefix("kdfed-testbed-").tempdir()?;
        let dir = tempdir.path().to_path_buf();
        let mut bed = Testbed::start_in(&dir, &specs, Lifetime::TiedToParent).await?;
        bed._tempdir = Some(tempdir);
        Ok(bed)
    }

    /// Starts the clusters in `dir`; returns once every API server is ready, its nodes are
    /// Ready and its controllers run.
    pub async fn start_in(dir: &Path, specs: &[ClusterSpec], lifetime: Lifetime) -> Result<Testbed> {
        let binaries = Binaries::locate()?;
        std::fs::create_dir_all(dir)?;
        let dir = std::fs::canonicalize(dir)?;
        let mut bed = Testbed { dir: dir.clone(), clusters: Vec::new(), _tempdir: None };
        let starts = specs.iter().map(|spec| start_cluster(&binaries, &dir, spec, lifetime));
        let results = futures::future::join_all(starts).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(cluster) => bed.clusters.push(cluster),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if lifetime == Lifetime::Detached {
            bed.write_state()?;
        }
        Ok(bed)
    }

    fn write_state(&self) -> Result<()> {
        let state = StateFile {
            clusters: self
                .clusters
                .iter()
                .map(|c| ClusterState {
                    name: c.name.clone(),
                    kubeconfig: c.kubeconfig.clone(),
                    server: c.server.clone(),
                    processes: c.processes.iter().map(|p| (p.name.clone(), p.pid)).collect(),
                })
                .collect(),
        };
        std::fs::write(self.dir.join(STATE_FILE), serde_json::to_string_pretty(&state)?)?;
        Ok(())
    }

    /// The running cluster with this name.
    pub fn cluster(&self, name: &str) -> &Cluster {
        self.clusters.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no test-bed cluster named {name}"))
    }

    /// All running clusters.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// An admin client of the named cluster.
    pub async fn client(&self, name: &str) -> Result<Client> {
        client_for(&self.cluster(name).kubeconfig).await
    }

    /// Adds `pool.count` more KWOK nodes to a running cluster (e.g. to add capacity).
    pub async fn add_nodes(&self, name: &str, pool: &NodePool) -> Result<()> {
        let client = self.client(name).await?;
        let existing = Api::<Node>::all(client.clone()).list(&Default::default()).await?.items.len();
        create_node_range(&client, name, existing, pool).await
    }

    /// Kills one process of a cluster (`etcd`, `kube-apiserver`, `kwok`, ...) with SIGKILL,
    /// its whole process group, as a crash would; [`Testbed::restart`] starts it again.
    pub fn kill(&mut self, cluster: &str, process: &str) -> Result<()> {
        let p = self.process_mut(cluster, process)?;
        p.stop(Duration::ZERO);
        Ok(())
    }

    /// Starts a process of a cluster again with its first command line (same ports, data
    /// folder and log file): after [`Testbed::kill`], or after it exited on its own.
    pub fn restart(&mut self, cluster: &str, process: &str) -> Result<()> {
        let p = self.process_mut(cluster, process)?;
        if p.exited().is_none() {
            p.stop(Duration::ZERO);
        }
        let fresh = p.respawn().with_context(|| format!("{cluster}/{process} cannot be started again"))??;
        *p = fresh;
        Ok(())
    }

    /// Starts again every process of `cluster` that has exited (a controller manager or kwok
    /// that gave up while its API server was down); returns their names.
    pub fn revive(&mut self, cluster: &str) -> Result<Vec<String>> {
        let c =
            self.clusters.iter_mut().find(|c| c.name == cluster).with_context(|| format!("no cluster {cluster}"))?;
        let mut revived = Vec::new();
        for p in &mut c.processes {
            if p.exited().is_some() {
                let fresh = p.respawn().with_context(|| format!("{cluster}/{} cannot be started again", p.name))??;
                revived.push(p.name.clone());
                *p = fresh;
            }
        }
        Ok(revived)
    }

    /// Waits until `cluster`'s API server answers `/readyz` again (after a restart).
    pub async fn wait_api_ready(&mut self, cluster: &str, within: Duration) -> Result<()> {
        let kubeconfig = self.cluster(cluster).kubeconfig.clone();
        let deadline = tokio::time::Instant::now() + within;
        let mut last = String::new();
        loop {
            if let Ok(client) = client_for(&kubeconfig).await {
                let req = http::Request::get("/readyz").body(Vec::new())?;
                match client.request_text(req).await {
                    Ok(text) if text.trim() == "ok" => return Ok(()),
                    Ok(text) => last = text,
                    Err(e) => last = e.to_string(),
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{cluster}: API server not ready after {within:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn process_mut(&mut self, cluster: &str, process: &str) -> Result<&mut Process> {
        let c =
            self.clusters.iter_mut().find(|c| c.name == cluster).with_context(|| format!("no cluster {cluster}"))?;
        c.processes.iter_mut().find(|p| p.name == process).with_context(|| format!("{cluster} runs no {process}"))
    }

    /// Leaves every process running (for `testbed up`); `testbed down` stops them.
    pub fn detach(mut self) {
        for cluster in &mut self.clusters {
            for p in &mut cluster.processes {
                p.release();
            }
            cluster.processes.clear();
        }
        if let Some(t) = self._tempdir.take() {
            let _ = t.keep();
        }
    }

    /// Kills every process of every cluster.
    pub fn shutdown(&mut self) {
        for cluster in &mut self.clusters {
            if let Some(task) = cluster.exec_sync.take() {
                task.abort();
            }
            // Reverse start order: node simulator and controllers before the API server and etcd.
            for p in cluster.processes.iter_mut().rev() {
                p.stop(Duration::ZERO);
            }
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.shutdown();
        // A failing test leaves its logs behind for inspection.
        if std::thread::panicking()
            && let Some(t) = self._tempdir.take()
        {
            eprintln!("test bed kept for inspection: {}", t.keep().display());
        }
    }
}

/// A binary of this workspace (`kdfed-hub`, `kdfed-spoke`, `kdfed`, ...) next to the running
/// test executable: run `cargo build --bins` before tests that start them.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test> → target/debug/<name>
    let dir = exe.parent().and_then(Path::parent).context("test executable has no target folder")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!("{} is missing: run `cargo build --bins` first (scripts/test.sh does)", path.display());
    }
    Ok(path)
}

/// A process started by a test (hub, spoke): own process group, dies with the test, killed
/// on drop; output in `log`.
pub struct Daemon {
    process: Process,
    /// Its log file.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `program args`, logging to `log_dir/<name>.log`.
    pub fn start(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Result<Daemon> {
        Daemon::start_with_env(name, program, args, log_dir, &[])
    }

    /// Starts `program args` with extra environment variables (e.g. libfaketime's).
    pub fn start_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        envs: &[(String, String)],
    ) -> Result<Daemon> {
        let mut all = vec![("RUST_LOG".to_string(), "info".to_string())];
        all.extend_from_slice(envs);
        let process = Process::spawn(name, program, args, log_dir, Lifetime::TiedToParent, &all)?;
        Ok(Daemon { process, log: log_dir.join(format!("{name}.log")) })
    }

    /// Kills it (and everything it started).
    pub fn kill(&mut self) {
        self.process.stop(Duration::ZERO);
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.process.pid
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.process.exited().is_none()
    }
}

/// Stops what `testbed up --dir DIR` started.
pub fn down(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no test bed at {} (missing {STATE_FILE})", dir.display()))?;
    let state: StateFile = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let mut stopped = Vec::new();
    for cluster in state.clusters {
        for (name, pid) in cluster.processes.into_iter().rev() {
            let mut p = Process::adopt(&name, pid);
            if p.exited().is_none() {
                p.stop(Duration::from_secs(5));
                stopped.push(format!("{}/{name}", cluster.name));
            }
        }
    }
    std::fs::remove_file(&path)?;
    Ok(stopped)
}

/// Keeps exec working for the pods of every cluster `testbed up --dir DIR` started (the
/// `Exec` object per pod that the starting process kept while it ran), until SIGINT or
/// SIGTERM. `testbed up` detaches, so a fleet that runs setup packages starts this next to it.
pub async fn keep_exec(dir: &Path) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no test bed at {} (missing {STATE_FILE})", dir.display()))?;
    let state: StateFile = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let mut tasks = Vec::new();
    for cluster in &state.clusters {
        let client = client_for(&cluster.kubeconfig).await?;
        tasks.push(exec::spawn_sync(client, dir.join(&cluster.name)));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// An admin client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig).with_context(|| format!("read {}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// kdfed's own pod-ready stage: KWOK's behaviour plus container ids that change when a pod
/// is recreated.
const POD_READY_STAGE: &str = include_str!("../testbed/stages/pod-ready.yaml");

fn stage_files(binaries: &Binaries, kwok_home: &Path) -> Result<Vec<PathBuf>> {
    let s = &binaries.kwok_stages;
    let pod_ready = kwok_home.join("pod-ready.yaml");
    std::fs::write(&pod_ready, POD_READY_STAGE)?;
    Ok(vec![
        s.join("node/fast/node-initialize.yaml"),
        s.join("node/heartbeat/node-heartbeat.yaml"),
        pod_ready,
        s.join("pod/fast/pod-complete.yaml"),
        s.join("pod/fast/pod-delete.yaml"),
        s.join("volume/fast/pvc-provision.yaml"),
        s.join("volume/fast/pv-bind.yaml"),
        s.join("volume/fast/pvc-delete.yaml"),
        s.join("volume/fast/pv-delete.yaml"),
    ])
}

async fn start_cluster(binaries: &Binaries, root: &Path, spec: &ClusterSpec, lifetime: Lifetime) -> Result<Cluster> {
    let name = &spec.name;
    if !validate_name(name) {
        bail!("cluster name {name:?} must be a DNS label (lowercase letters, digits, '-')");
    }
    let dir = root.join(name);
    let logs = dir.join("logs");
    let pki = certs::create(&dir.join("pki"))?;
    let etcd_port = free_port()?;
    let etcd_peer = free_port()?;
    let api_port = free_port()?;
    let kwok_port = free_port()?;
    let server = format!("https://127.0.0.1:{api_port}");
    let kubeconfig = root.join(format!("{name}.kubeconfig"));
    std::fs::write(&kubeconfig, certs::admin_kubeconfig(&pki, name, &server))?;
    let mut processes = Vec::new();
    let p = |s: &Path| s.display().to_string();

    let etcd_data = dir.join("etcd");
    processes.push(Process::spawn(
        "etcd",
        &binaries.etcd,
        &[
            format!("--name={name}"),
            format!("--data-dir={}", p(&etcd_data)),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-cluster={name}=http://127.0.0.1:{etcd_peer}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ],
        &logs,
        lifetime,
        &[],
    )?);

    processes.push(Process::spawn(
        "kube-apiserver",
        &binaries.kube_apiserver,
        &[
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", p(&pki.server_crt)),
            format!("--tls-private-key-file={}", p(&pki.server_key)),
            format!("--client-ca-file={}", p(&pki.ca_crt)),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p(&pki.sa_pub)),
            format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
            // A /16 (65,534 ClusterIPs): a /24 runs out at ~100 kdfed clusters on one member.
            // Service IPs are never routed here (no kube-proxy), so the range touches nothing.
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=Node,RBAC".into(),
            // As on OpenShift: setting blockOwnerDeletion needs `update` on the owner's
            // finalizers, so the deploy RBAC is checked against the stricter setting.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement".into(),
            "--allow-privileged=true".into(),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--endpoint-reconciler-type=none".into(),
            "--v=1".into(),
        ],
        &logs,
        lifetime,
        &[],
    )?);

    let cluster = Cluster {
        name: name.clone(),
        kubeconfig: kubeconfig.clone(),
        server,
        kwok_port,
        dir: dir.clone(),
        processes,
        exec_sync: None,
        kwok_restart: None,
        kwok_restarts: 0,
    };
    let mut cluster = cluster;
    let client = wait_ready(&mut cluster).await?;
    let kc = p(&kubeconfig);

    cluster.processes.push(Process::spawn(
        "kube-controller-manager",
        &binaries.kube_controller_manager,
        &[
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
            format!("--service-account-private-key-file={}", p(&pki.sa_key)),
            format!("--root-ca-file={}", p(&pki.ca_crt)),
            format!("--cluster-signing-cert-file={}", p(&pki.ca_crt)),
            format!("--cluster-signing-key-file={}", p(&pki.ca_key)),
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route".into(),
            "--v=1".into(),
        ],
        &logs,
        lifetime,
        &[],
    )?);
    cluster.processes.push(Process::spawn(
        "kube-scheduler",
        &binaries.kube_scheduler,
        &[
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
            "--v=1".into(),
        ],
        &logs,
        lifetime,
        &[],
    )?);
    let mut kwok_args = vec![
        format!("--kubeconfig={kc}"),
        "--manage-all-nodes=true".into(),
        "--cidr=10.244.0.0/16".into(),
        "--node-ip=127.0.0.1".into(),
        format!("--node-port={kwok_port}"),
        format!("--server-address=127.0.0.1:{kwok_port}"),
        "--enable-crds=Exec".into(),
    ];
    let kwok_home = dir.join("kwok");
    std::fs::create_dir_all(&kwok_home)?;
    // Exec: an `Exec` object per pod (kept by the sync task) and the wrapper first in PATH.
    exec::install_crd(&client, &binaries.kwok_crds).await?;
    let wrappers = kwok_home.join("exec-bin");
    exec::write_wrappers(&wrappers)?;
    let path = format!("{}:{}", p(&wrappers), std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()));
    for stage in stage_files(binaries, &kwok_home)? {
        kwok_args.push(format!("--config={}", p(&stage)));
    }
    let kwok_env = [("KWOK_WORKDIR".to_string(), p(&kwok_home)), ("PATH".to_string(), path)];
    cluster.processes.push(Process::spawn("kwok", &binaries.kwok, &kwok_args, &logs, lifetime, &kwok_env)?);
    cluster.kwok_restart = Some(KwokCommand {
        program: binaries.kwok.clone(),
        args: kwok_args,
        logs: logs.clone(),
        lifetime,
        env: kwok_env.to_vec(),
    });
    cluster.exec_sync = Some(exec::spawn_sync(client.clone(), dir.clone()));

    create_nodes(&client, spec).await?;
    create_storage_class(&client).await?;
    wait_settled(&mut cluster, &client, spec.nodes.count).await?;
    if spec.nodes.count > 0 {
        warm_up_kwok(&mut cluster, &client).await?;
    }
    Ok(cluster)
}

fn validate_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn check_alive(cluster: &mut Cluster) -> Result<()> {
    for p in &mut cluster.processes {
        if let Some(status) = p.exited() {
            let log = cluster.dir.join("logs").join(format!("{}.log", p.name));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{}: {} exited ({status}); last lines of {}:\n{}",
                cluster.name,
                p.name,
                log.display(),
                tail.join("\n")
            );
        }
    }
    Ok(())
}

async fn wait_ready(cluster: &mut Cluster) -> Result<Client> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut last_error = String::new();
    loop {
        check_alive(cluster)?;
        if tokio::time::Instant::now() > deadline {
            bail!("{}: API server not ready after 180s: {last_error}", cluster.name);
        }
        match client_for(&cluster.kubeconfig).await {
            Ok(client) => {
                let req = http::Request::get("/readyz").body(Vec::new())?;
                match client.request_text(req).await {
                    Ok(text) if text.trim() == "ok" => return Ok(client),
                    Ok(text) => last_error = text,
                    Err(e) => last_error = e.to_string(),
                }
            }
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn node_object(cluster: &str, index: usize, pool: &NodePool) -> Result<Node> {
    let name = format!("{cluster}-node-{index}");
    let mut labels = pool.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), "amd64".into());
    labels.insert("type".into(), "kwok".into());
    let mut resources = serde_json::json!({
        "cpu": pool.cpu, "memory": pool.memory, "pods": pool.pods.to_string(), "ephemeral-storage": "1Ti"
    });
    if let Some(gpu) = &pool.gpu {
        resources["nvidia.com/gpu"] = serde_json::Value::String(gpu.clone());
    }
    let node = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}
        },
        "spec": {},
        "status": {
            "allocatable": resources.clone(),
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake",
                "kubeProxyVersion": "fake", "bootID": "", "containerRuntimeVersion": "kwok",
                "kernelVersion": "", "machineID": "", "osImage": "", "systemUUID": ""
            }
        }
    });
    Ok(serde_json::from_value(node)?)
}

async fn create_nodes(client: &Client, spec: &ClusterSpec) -> Result<()> {
    create_node_range(client, &spec.name, 0, &spec.nodes).await
}

async fn create_node_range(client: &Client, cluster: &str, first: usize, pool: &NodePool) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in first..first + pool.count {
        let node = node_object(cluster, i, pool)?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("create node"),
        }
    }
    Ok(())
}

/// The Service (ClusterIP) range of every test-bed API server; `10.0.0.1` is the
/// `kubernetes` Service, named in the serving certificate.
pub const SERVICE_CIDR: &str = "10.0.0.0/16";

/// The default StorageClass whose claims KWOK's volume stages provision and bind.
pub const STORAGE_CLASS: &str = "kwok-volume";

async fn create_storage_class(client: &Client) -> Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "kwok.x-k8s.io/volume",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": true
    }))?;
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).context("create StorageClass"),
    }
}

/// How to start a cluster's kwok again: kwok v0.8.0 sometimes crashes while it lazily
/// initialises its CEL stage selectors from several workers at once (a race in kwok), which
/// is harmless to restart from since kwok keeps no state of its own.
#[derive(Clone, Debug)]
struct KwokCommand {
    program: PathBuf,
    args: Vec<String>,
    logs: PathBuf,
    lifetime: Lifetime,
    env: Vec<(String, String)>,
}

/// Restarts kwok (at most `KWOK_RESTARTS` times per cluster) if it exited.
fn revive_kwok(cluster: &mut Cluster) -> Result<()> {
    const KWOK_RESTARTS: u32 = 3;
    let Some(cmd) = cluster.kwok_restart.clone() else { return Ok(()) };
    let Some(index) = cluster.processes.iter().position(|p| p.name == "kwok") else { return Ok(()) };
    if cluster.processes[index].exited().is_none() || cluster.kwok_restarts >= KWOK_RESTARTS {
        return Ok(());
    }
    cluster.kwok_restarts += 1;
    eprintln!("{}: kwok exited; restarting it ({}/{KWOK_RESTARTS})", cluster.name, cluster.kwok_restarts);
    cluster.processes[index] = Process::spawn("kwok", &cmd.program, &cmd.args, &cmd.logs, cmd.lifetime, &cmd.env)?;
    Ok(())
}

/// Takes one pod with a claim through kwok's pod and volume stages (provision, bind, ready,
/// delete) while the cluster starts: kwok initialises each stage lazily on its first object,
/// the step where its start-up race crashes it, and here a crash is restarted
/// ([`revive_kwok`]) instead of breaking the first test that creates a pod.
async fn warm_up_kwok(cluster: &mut Cluster, client: &Client) -> Result<()> {
    use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
    const NS: &str = "kdfed-testbed-warmup";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}}))?;
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("create the warm-up namespace"),
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "warmup"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}
    }))?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "warmup"},
        "spec": {
            "automountServiceAccountToken": false,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "app", "image": "kdfed.invalid/warmup:1"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "warmup"}}]
        }
    }))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut step = "the namespace's ServiceAccount";
    loop {
        revive_kwok(cluster)?;
        check_alive(cluster)?;
        if tokio::time::Instant::now() > deadline {
            bail!("{}: kwok warm-up stuck at {step} after 180s", cluster.name);
        }
        if accounts.get_opt("default").await?.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if claims.get_opt("warmup").await?.is_none() {
            claims.create(&PostParams::default(), &claim).await.context("create the warm-up claim")?;
            pods.create(&PostParams::default(), &pod).await.context("create the warm-up pod")?;
        }
        step = "the warm-up pod Ready with its claim Bound";
        let bound =
            claims.get_opt("warmup").await?.and_then(|c| c.status).and_then(|s| s.phase).is_some_and(|p| p == "Bound");
        let ready = pods
            .get_opt("warmup")
            .await?
            .and_then(|p| p.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if bound && ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = kube::api::DeleteParams::default().grace_period(0);
    pods.delete("warmup", &gone).await.context("delete the warm-up pod")?;
    claims.delete("warmup", &Default::default()).await.context("delete the warm-up claim")?;
    loop {
        revive_kwok(cluster)?;
        check_alive(cluster)?;
        if pods.get_opt("warmup").await?.is_none() && claims.get_opt("warmup").await?.is_none() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{}: kwok warm-up: pod or claim not deleted after 180s", cluster.name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    namespaces.delete(NS, &Default::default()).await.context("delete the warm-up namespace")?;
    Ok(())
}

async fn wait_settled(cluster: &mut Cluster, client: &Client, node_count: usize) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        revive_kwok(cluster)?;
        check_alive(cluster)?;
        let ready = nodes
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        let sa_ready = accounts.get_opt("default").await?.is_some();
        if ready >= node_count && sa_ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{}: {ready}/{node_count} nodes Ready, default ServiceAccount present: {sa_ready} after 180s",
                cluster.name
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
