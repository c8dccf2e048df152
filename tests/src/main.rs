//! `testbed`: start and stop real Kubernetes control planes on loopback.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kdfed_testbed::{ClusterSpec, Lifetime, NodePool, Testbed};

#[derive(Parser)]
#[command(name = "testbed", version, about = "Real Kubernetes control planes on loopback, with KWOK nodes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start one control plane per cluster name and leave it running.
    Up {
        /// Folder for data, certificates, logs and `<name>.kubeconfig`.
        #[arg(long)]
        dir: PathBuf,
        /// Comma-separated cluster names.
        #[arg(long, value_delimiter = ',', default_value = "hub,east,west")]
        clusters: Vec<String>,
        /// Fake nodes per cluster.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Label of every node, `key=value` (repeatable).
        #[arg(long = "node-label")]
        node_labels: Vec<String>,
        /// Label of one cluster's nodes, `cluster:key=value` (repeatable).
        #[arg(long = "cluster-node-label")]
        cluster_node_labels: Vec<String>,
        /// Allocatable CPU per node.
        #[arg(long, default_value = "16")]
        node_cpu: String,
        /// Allocatable memory per node.
        #[arg(long, default_value = "64Gi")]
        node_memory: String,
        /// Allocatable `nvidia.com/gpu` per node.
        #[arg(long)]
        node_gpu: Option<String>,
    },
    /// Keep exec working for the fake pods of a detached test bed (runs until stopped).
    ExecSync {
        /// The folder given to `up`.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a webhook serving certificate for 127.0.0.1 signed by a cluster's CA; prints
    /// the certificate, key and CA paths (run again to rotate).
    WebhookCert {
        /// The folder given to `up`.
        #[arg(long)]
        dir: PathBuf,
        /// The cluster whose CA signs it.
        #[arg(long)]
        cluster: String,
        /// File name stem.
        #[arg(long, default_value = "webhook")]
        name: String,
    },
    /// Apply the identity (Namespace, ServiceAccount, RBAC) of a kustomize base to a cluster
    /// and write a kubeconfig for its ServiceAccount (a TokenRequest token); prints the
    /// ServiceAccount and the kubeconfig path.
    SaKubeconfig {
        /// The folder given to `up`.
        #[arg(long)]
        dir: PathBuf,
        /// The cluster to apply it to.
        #[arg(long)]
        cluster: String,
        /// The kustomize base, e.g. `deploy/hub`.
        #[arg(long)]
        base: PathBuf,
        /// The base's ServiceAccount, when it has several (deploy/spoke: `kdfed-spoke`,
        /// `kdfed-fence-watchdog`).
        #[arg(long)]
        account: Option<String>,
        /// Where to write the kubeconfig.
        #[arg(long)]
        out: PathBuf,
        /// Lifetime of the token.
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        token_seconds: i64,
    },
    /// Create a person's identity: a ServiceAccount bound to an existing ClusterRole (e.g.
    /// deploy/hub's `kdfed-fleet-admin`), and write a kubeconfig for it; prints its path.
    RoleKubeconfig {
        /// The folder given to `up`.
        #[arg(long)]
        dir: PathBuf,
        /// The cluster.
        #[arg(long)]
        cluster: String,
        /// The ServiceAccount, `namespace/name` (created if missing).
        #[arg(long)]
        account: String,
        /// The ClusterRole to bind it to.
        #[arg(long)]
        cluster_role: String,
        /// Where to write the kubeconfig.
        #[arg(long)]
        out: PathBuf,
        /// Lifetime of the token.
        #[arg(long, default_value_t = 7 * 24 * 3600)]
        token_seconds: i64,
    },
    /// Print a loopback TCP port for a server about to start, reserved against the test
    /// bed's other users and outside the range outgoing connections take ports from.
    FreePort,
    /// Stop everything `up` started in this folder.
    Down {
        /// The folder given to `up`.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn parse_label(text: &str) -> Result<(String, String)> {
    let (k, v) = text.split_once('=').with_context(|| format!("label {text:?} must be key=value"))?;
    if k.is_empty() {
        bail!("label {text:?} has an empty key");
    }
    Ok((k.to_string(), v.to_string()))
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Up { dir, clusters, nodes, node_labels, cluster_node_labels, node_cpu, node_memory, node_gpu } => {
            let mut common = BTreeMap::new();
            for l in &node_labels {
                let (k, v) = parse_label(l)?;
                common.insert(k, v);
            }
            let mut specs = Vec::new();
            for name in &clusters {
                let mut labels = common.clone();
                for l in &cluster_node_labels {
                    let (cluster, label) =
                        l.split_once(':').with_context(|| format!("{l:?} must be cluster:key=value"))?;
                    if !clusters.iter().any(|c| c == cluster) {
                        bail!("--cluster-node-label {l:?} names unknown cluster {cluster:?}");
                    }
                    if cluster == name {
                        let (k, v) = parse_label(label)?;
                        labels.insert(k, v);
                    }
                }
                let pool = NodePool {
                    count: nodes,
                    labels,
                    cpu: node_cpu.clone(),
                    memory: node_memory.clone(),
                    gpu: node_gpu.clone(),
                    ..NodePool::default()
                };
                specs.push(ClusterSpec { name: name.clone(), nodes: pool });
            }
            eprintln!("starting {} control plane(s) in {}", specs.len(), dir.display());
            let bed = Testbed::start_in(&dir, &specs, Lifetime::Detached).await?;
            for c in bed.clusters() {
                println!("{}\t{}\t{}", c.name, c.server, c.kubeconfig.display());
            }
            bed.detach();
        }
        Command::WebhookCert { dir, cluster, name } => {
            let pki = dir.join(&cluster).join("pki");
            if !pki.join("ca.key").exists() {
                bail!("no test-bed cluster {cluster:?} in {}", dir.display());
            }
            let (crt, key, ca) = kdfed_testbed::certs::webhook_cert(&pki, &name)?;
            println!("{}\t{}\t{}", crt.display(), key.display(), ca.display());
        }
        Command::SaKubeconfig { dir, cluster, base, account, out, token_seconds } => {
            let admin = dir.join(format!("{cluster}.kubeconfig"));
            if !admin.exists() {
                bail!("no test-bed cluster {cluster:?} in {}", dir.display());
            }
            let account =
                kdfed_testbed::rbac::deploy_identity_as(&admin, &base, account.as_deref(), token_seconds, &out).await?;
            println!("{account}\t{}", out.display());
        }
        Command::RoleKubeconfig { dir, cluster, account, cluster_role, out, token_seconds } => {
            let admin = dir.join(format!("{cluster}.kubeconfig"));
            if !admin.exists() {
                bail!("no test-bed cluster {cluster:?} in {}", dir.display());
            }
            let (namespace, name) =
                account.split_once('/').with_context(|| format!("--account {account:?} must be namespace/name"))?;
            let account =
                kdfed_testbed::rbac::ServiceAccountRef { namespace: namespace.to_string(), name: name.to_string() };
            kdfed_testbed::rbac::cluster_role_identity(&admin, &account, &cluster_role, token_seconds, &out).await?;
            println!("{}", out.display());
        }
        Command::ExecSync { dir } => kdfed_testbed::keep_exec(&dir).await?,
        Command::FreePort => println!("{}", kdfed_testbed::free_port()?),
        Command::Down { dir } => {
            let stopped = kdfed_testbed::down(&dir)?;
            eprintln!("stopped {} process(es)", stopped.len());
        }
    }
    Ok(())
}
