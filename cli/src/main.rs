//! `kdfed`: the user and admin command line.

#[cfg(test)]
mod corpus;
mod fleet;
mod manifest;
mod offline;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kdfed", version, about = "kdfed: stateful apps on a fleet of Kubernetes clusters")]
struct Cli {
    /// Kubeconfig (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print kdfed's CRDs as YAML, or install them with --install.
    Crds {
        /// Server-side apply them to the cluster and wait until they are established.
        #[arg(long)]
        install: bool,
    },
    /// Convert kubedirector.bluedata.io/v1alpha1 manifests to kubedirector.hpe.com/v1beta1.
    Convert {
        /// Input file; `-` for stdin.
        #[arg(short = 'f', long = "filename", default_value = "-")]
        file: PathBuf,
    },
    /// Default and validate apps and clusters offline; clusters are checked against the
    /// apps given in the same files.
    Validate {
        /// Files or folders (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Print every object the director would create for a cluster (offline), or the
    /// validation errors.
    Render {
        /// The KubeDirectorApp manifest.
        #[arg(long)]
        app: PathBuf,
        /// The KubeDirectorCluster manifest.
        #[arg(long)]
        cluster: PathBuf,
        /// A KubeDirectorConfig manifest with global settings.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print instead, as JSON, the configmeta each member of a role with a setup package
        /// finds in /etc/guestconfig/configmeta.json (pod name → document).
        #[arg(long)]
        configmeta: bool,
    },
    /// Register, remove and list member clusters (against the hub).
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// List clusters on the hub with their placement and state.
    Cluster {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// List the app catalog.
    Catalog {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Server-side apply manifests to the cluster.
    Apply {
        /// Files or folders (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Namespace for objects that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Register a member: records it on the hub, whose registry creates its namespace,
    /// identity and RBAC and issues the spoke's credentials sealed to this command's one-time
    /// key; prints the kubeconfig its spoke joins with. Running it again issues new
    /// credentials.
    Add {
        /// Member name (DNS label).
        name: String,
        /// Placement label, key=value (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Hub API server URL the spoke connects to (default: the kubeconfig's).
        #[arg(long)]
        server: Option<String>,
        /// Lifetime of the initial token in seconds (the spoke renews its own).
        #[arg(long, default_value_t = kdfed_hub::registry::DEFAULT_TOKEN_SECONDS)]
        token_seconds: i64,
        /// Write the kubeconfig to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Remove a member; its credentials stop working at once. Refused while clusters run
    /// there, unless --force.
    Remove {
        /// Member name.
        name: String,
        /// Remove it although clusters run there (they keep running there, unmanaged, with
        /// their data; their intents wait for an explicit decision).
        #[arg(long)]
        force: bool,
    },
    /// Cordon a member: it keeps running what it has but receives no new placements.
    Cordon {
        /// Member name.
        name: String,
    },
    /// Let a cordoned member receive placements again.
    Uncordon {
        /// Member name.
        name: String,
    },
    /// List members: labels, availability, heartbeat age, capacity, clusters placed.
    List,
}

#[derive(Subcommand)]
enum ListCommand {
    /// List them.
    List {
        /// Only this namespace.
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Crds { install: false } => write_stdout(&kdfed_crds::crdgen::all_yaml())?,
        Command::Crds { install: true } => {
            let client = kdfed_common::client(cli.kubeconfig.as_deref()).await?;
            for name in kdfed_common::crds::install(client).await? {
                println!("customresourcedefinition/{name} applied");
            }
        }
        Command::Convert { file } => {
            let text = manifest::read_input(&file)?;
            write_stdout(&kdfed_crds::convert::convert_yaml(&text)?)?;
        }
        Command::Validate { files } => {
            let docs = manifest::read_all(&files)?;
            let report = offline::validate(&docs);
            for line in &report.lines {
                println!("{line}");
            }
            if report.failed {
                bail!("validation failed");
            }
        }
        Command::Render { app, cluster, config, configmeta } => {
            let one = |path: &PathBuf, kind: &str| -> Result<serde_json::Value> {
                let docs = manifest::read_all(std::slice::from_ref(path))?;
                docs.into_iter()
                    .find(|d| d.get("kind").and_then(serde_json::Value::as_str) == Some(kind))
                    .ok_or_else(|| anyhow::anyhow!("{}: no {kind} in this file", path.display()))
            };
            let app: kdfed_crds::KubeDirectorApp =
                offline::typed(&one(&app, "KubeDirectorApp")?).map_err(|e| anyhow::anyhow!("kubedirectorapp: {e}"))?;
            let cluster: kdfed_crds::KubeDirectorCluster = offline::typed(&one(&cluster, "KubeDirectorCluster")?)
                .map_err(|e| anyhow::anyhow!("kubedirectorcluster: {e}"))?;
            let config: Option<kdfed_crds::KubeDirectorConfig> = config
                .map(|c| {
                    offline::typed(&one(&c, "KubeDirectorConfig")?)
                        .map_err(|e| anyhow::anyhow!("kubedirectorconfig: {e}"))
                })
                .transpose()?;
            let config = config.as_ref().map(|c| &c.spec);
            if configmeta {
                match kdfed_spoke::director::render::render_configmeta(&app, &cluster, config) {
                    Ok(documents) => write_stdout(&format!("{}\n", serde_json::to_string_pretty(&documents)?))?,
                    Err(e) => {
                        eprintln!("{e}");
                        bail!("kubedirectorcluster/{} cannot be rendered", kube::ResourceExt::name_any(&cluster));
                    }
                }
                return Ok(());
            }
            match kdfed_spoke::director::render::render(&app, &cluster, config) {
                Ok(objects) => {
                    let mut text = String::new();
                    for object in objects {
                        text.push_str("---\n");
                        text.push_str(&serde_saphyr::to_string(&object)?);
                    }
                    write_stdout(&text)?;
                }
                Err(e) => {
                    eprintln!("{e}");
                    bail!("kubedirectorcluster/{} cannot be rendered", kube::ResourceExt::name_any(&cluster));
                }
            }
        }
        Command::Member { command } => {
            let client = kdfed_common::client(cli.kubeconfig.as_deref()).await?;
            match command {
                MemberCommand::Add { name, labels, server, token_seconds, output } => {
                    fleet::add(&client, cli.kubeconfig.as_ref(), &name, &labels, server, token_seconds, output).await?
                }
                MemberCommand::Remove { name, force } => fleet::remove(&client, &name, force).await?,
                MemberCommand::Cordon { name } => {
                    kdfed_hub::registry::set_cordoned(&client, &name, true).await?;
                    eprintln!("member {name} cordoned: it keeps its clusters and receives no new ones");
                }
                MemberCommand::Uncordon { name } => {
                    kdfed_hub::registry::set_cordoned(&client, &name, false).await?;
                    eprintln!("member {name} uncordoned");
                }
                MemberCommand::List => fleet::list_members(&client).await?,
            }
        }
        Command::Cluster { command: ListCommand::List { namespace } } => {
            let client = kdfed_common::client(cli.kubeconfig.as_deref()).await?;
            fleet::list_clusters(&client, namespace.as_deref()).await?;
        }
        Command::Catalog { command: ListCommand::List { .. } } => {
            let client = kdfed_common::client(cli.kubeconfig.as_deref()).await?;
            fleet::list_catalog(&client).await?;
        }
        Command::Apply { files, namespace } => {
            let client = kdfed_common::client(cli.kubeconfig.as_deref()).await?;
            for doc in manifest::read_all(&files)? {
                println!("{} applied", manifest::apply(&client, &doc, &namespace).await?);
            }
        }
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", error_report(&e.chain().map(ToString::to_string).collect::<Vec<_>>()));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once: a level whose message ends with its cause's
/// (as many libraries' errors do) is cut before it, and a cause already said is skipped.
fn error_report(chain: &[String]) -> String {
    let mut levels: Vec<String> = Vec::new();
    for (i, text) in chain.iter().enumerate() {
        let mut text = text.clone();
        if let Some(next) = chain.get(i + 1)
            && !next.is_empty()
            && text.ends_with(next.as_str())
            && text.len() > next.len()
        {
            text.truncate(text.len() - next.len());
            text = text.trim_end().trim_end_matches(':').trim_end().to_string();
        }
        if text.is_empty() || levels.iter().any(|l| l.contains(text.as_str())) {
            continue;
        }
        levels.push(text);
    }
    let mut out = String::new();
    for (i, l) in levels.iter().enumerate() {
        out.push_str(&if i == 0 { format!("kdfed: {l}\n") } else { format!("  caused by: {l}\n") });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let chain = vec![
            "cannot read kubeconfig /nonexistent: failed to read: No such file or directory (os error 2)".to_string(),
            "failed to read: No such file or directory (os error 2)".to_string(),
            "No such file or directory (os error 2)".to_string(),
        ];
        assert_eq!(
            error_report(&chain),
            "kdfed: cannot read kubeconfig /nonexistent\n  caused by: failed to read\n  caused by: No such file or directory (os error 2)\n"
        );
        assert_eq!(error_report(&["validation failed".to_string()]), "kdfed: validation failed\n");
    }
}
