//! A hub API server with a few members, apps and clusters for the CLI's tests (no hub
//! process: the CLI only reads and writes the API), and ways to run the `kdfed` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kdfed_crds::federation::KubeDirectorMember;
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kdfed_testbed::{Testbed, workspace_binary};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The members the CLI test bed registers.
pub const MEMBERS: [&str; 3] = ["east", "north", "west"];

/// A test-bed API server seeded as a hub: members east, north and west; the app spark-lite
/// in `default`; clusters alpha and beta in `default` and gamma in `other`.
pub struct CliBed {
    /// The test bed (one cluster, `hub`).
    pub bed: Testbed,
    /// Its admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// An admin client.
    pub client: Client,
    /// The `kdfed` binary.
    pub kdfed: PathBuf,
    /// A scratch folder.
    pub tmp: tempfile::TempDir,
}

/// Starts and seeds the CLI test bed.
pub async fn cli_bed() -> CliBed {
    let bed = Testbed::start(&["hub"]).await.expect("test bed");
    let client = bed.client("hub").await.expect("client");
    kdfed_common::crds::install(client.clone()).await.expect("CRDs");
    let pp = PostParams::default();
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    for (i, name) in MEMBERS.iter().enumerate() {
        let mut m = KubeDirectorMember::new(name, Default::default());
        m.metadata.labels = Some([("zone".to_string(), format!("z{i}"))].into());
        members.create(&pp, &m).await.expect("member");
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(&pp, &serde_json::from_value(json!({"metadata": {"name": "other"}})).expect("ns"))
        .await
        .expect("namespace other");
    let apps: Api<KubeDirectorApp> = Api::namespaced(client.clone(), "default");
    apps.create(&pp, &serde_json::from_value(super::spark_like()).expect("app")).await.expect("app");
    for (ns, name) in [("default", "alpha"), ("default", "beta"), ("other", "gamma")] {
        create_cluster(&client, ns, name).await;
    }
    CliBed {
        kubeconfig: bed.cluster("hub").kubeconfig.clone(),
        bed,
        client,
        kdfed: workspace_binary("kdfed").expect("kdfed binary"),
        tmp: tempfile::tempdir().expect("tmp"),
    }
}

/// Creates the cluster `ns/name` of spark-lite.
pub async fn create_cluster(client: &Client, ns: &str, name: &str) {
    let mut c = super::cluster(name, 1, "100m", None);
    c["metadata"]["namespace"] = ns.into();
    let api: Api<KubeDirectorCluster> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &serde_json::from_value(c).expect("cluster")).await.expect("cluster");
}

impl CliBed {
    /// Runs `kdfed args` with `--kubeconfig` of the test bed.
    pub fn kdfed(&self, args: &[&str]) -> Output {
        Command::new(&self.kdfed).args(args).arg("--kubeconfig").arg(&self.kubeconfig).output().expect("run kdfed")
    }

    /// A folder holding `kubectl-kdfed` (a symlink to the kdfed binary), to put on PATH.
    pub fn plugin_dir(&self) -> PathBuf {
        let dir = self.tmp.path().join("plugins");
        std::fs::create_dir_all(&dir).expect("plugin dir");
        let link = dir.join("kubectl-kdfed");
        if !link.exists() {
            std::os::unix::fs::symlink(&self.kdfed, &link).expect("symlink kubectl-kdfed");
        }
        dir
    }

    /// PATH with `first` in front.
    pub fn path_with(&self, first: &Path) -> String {
        format!("{}:{}", first.display(), std::env::var("PATH").unwrap_or_default())
    }
}

/// stdout of a command that must have succeeded.
pub fn ok_stdout(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
