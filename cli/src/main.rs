//! `kdfed`: the user and admin command line.

mod catalog;
mod complete;
#[cfg(test)]
mod corpus;
mod fleet;
mod manifest;
mod offline;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use output::Format;

/// The command line, as `kdfed` or as the kubectl plugin `kubectl kdfed`.
#[derive(Parser)]
#[command(name = "kdfed", version, about = "kdfed: stateful apps on a fleet of Kubernetes clusters")]
struct Cli {
    /// Kubeconfig (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    context: Option<String>,
    /// Namespace: the only one listed by `cluster list`/`catalog list` (default: all), and
    /// the one `apply` puts objects in that name none (default: `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    namespace: Option<String>,
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
    Render(RenderArgs),
    /// Register, remove and list member clusters (against the hub).
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// List clusters on the hub with their placement and state.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// List the app catalog.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Server-side apply manifests to the cluster (objects that name no namespace go to
    /// -n, default `default`).
    Apply {
        /// Files or folders (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Open the web console locally: serve it on a loopback address with this kubeconfig's
    /// identity (no sign-in; -n: the namespace it opens on) and print its URL; runs until
    /// interrupted.
    Console(ConsoleArgs),
    /// Print a shell completion script; with bash and fish it also completes member, cluster
    /// and app names from the hub (`source <(kdfed completions bash)`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: complete::Shell,
    },
    /// Print the man page, or write one page per command into --dir.
    Man {
        /// Write kdfed.1, kdfed-member.1, ... into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `kdfed console`.
#[derive(clap::Args)]
struct ConsoleArgs {
    /// Loopback address to serve on (port 0: a free one, printed).
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:8080")]
    address: std::net::SocketAddr,
    /// Admin server address (`/metrics`, `/healthz`, `/readyz`); default a free port.
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:0")]
    admin_address: std::net::SocketAddr,
    /// Namespace of the system app catalog.
    #[arg(long, value_name = "NAMESPACE", default_value = "kdfed-system")]
    system_namespace: String,
    /// Log filter (logs go to stdout after the URL).
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    log_level: String,
}

/// `kdfed render`.
#[derive(clap::Args)]
struct RenderArgs {
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
    /// A config choice of the app, ID=VALUE, over what the cluster manifest chooses
    /// (repeatable).
    #[arg(long = "choice", value_name = "ID=VALUE")]
    choices: Vec<String>,
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
    List(ListArgs),
}

/// What every list command takes.
#[derive(clap::Args)]
struct ListArgs {
    /// Only these (by name).
    names: Vec<String>,
    /// Output format: a table (default), `wide` (more columns), `json` or `yaml` (the
    /// objects, as a List), `name` (kind/name).
    #[arg(short, long, value_enum, value_name = "FORMAT")]
    output: Option<Format>,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// List clusters (all namespaces unless -n), with placement, state and readiness.
    List {
        #[command(flatten)]
        list: ListArgs,
        /// After the list, follow changes: print each cluster again when its row changes
        /// (and once more when it is deleted), until interrupted.
        #[arg(short, long)]
        watch: bool,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// List the apps (all namespaces unless -n).
    List(ListArgs),
    /// Show an app: its roles and its config choices with their values (the default marked
    /// `*`), whether a running cluster may change them, and what each value changes.
    Show {
        /// App name.
        name: String,
        /// Output format: the description (default), `json` or `yaml` (the object), `name`.
        #[arg(short, long, value_enum, value_name = "FORMAT")]
        output: Option<Format>,
    },
}

async fn run(cli: Cli) -> Result<()> {
    let target = fleet::Target { kubeconfig: cli.kubeconfig, context: cli.context, namespace: cli.namespace };
    match cli.command {
        Command::Crds { install: false } => write_stdout(&kdfed_crds::crdgen::all_yaml())?,
        Command::Crds { install: true } => {
            for name in kdfed_common::crds::install(target.client().await?).await? {
                println!("customresourcedefinition/{name} applied");
            }
        }
        Command::Convert { file } => {
            let text = manifest::read_input(&file)?;
            write_stdout(&kdfed_crds::convert::convert_yaml(&text)?)?;
        }
        Command::Validate { files } => {
            let report = offline::validate(&manifest::read_all(&files)?);
            for line in &report.lines {
                println!("{line}");
            }
            if report.failed {
                bail!("validation failed");
            }
        }
        Command::Render(args) => render(args)?,
        Command::Member { command } => member(&target, command).await?,
        Command::Cluster { command: ClusterCommand::List { list, watch } } => {
            let format = list.output.unwrap_or_default();
            let client = target.client().await?;
            let ns = target.namespace.as_deref();
            fleet::list_clusters(&client, ns, &list.names, format, watch).await?;
        }
        Command::Catalog { command: CatalogCommand::List(list) } => {
            let client = target.client().await?;
            let format = list.output.unwrap_or_default();
            fleet::list_catalog(&client, target.namespace.as_deref(), &list.names, format).await?;
        }
        Command::Catalog { command: CatalogCommand::Show { name, output } } => {
            let client = target.client().await?;
            catalog::show(&client, target.namespace.as_deref(), &name, output.unwrap_or_default()).await?;
        }
        Command::Apply { files } => {
            let client = target.client().await?;
            let namespace = target.namespace.as_deref().unwrap_or("default");
            for doc in manifest::read_all(&files)? {
                println!("{} applied", manifest::apply(&client, &doc, namespace).await?);
            }
        }
        Command::Console(args) => console(&target, args).await?,
        Command::Completions { shell } => write_stdout(&complete::script(shell, &mut public_command_line()))?,
        Command::Man { dir: None } => write_stdout(&complete::man_page(&public_command_line())?)?,
        Command::Man { dir: Some(dir) } => {
            for path in complete::man_pages(&public_command_line(), &dir)? {
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

/// `kdfed member ...`.
async fn member(target: &fleet::Target, command: MemberCommand) -> Result<()> {
    let client = target.client().await?;
    match command {
        MemberCommand::Add { name, labels, server, token_seconds, output } => {
            fleet::add(&client, target, &name, &labels, server, token_seconds, output).await?
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
        MemberCommand::List(list) => fleet::list_members(&client, &list.names, list.output.unwrap_or_default()).await?,
    }
    Ok(())
}

/// `kdfed console`: the console crate's local mode with the global flags' identity.
async fn console(target: &fleet::Target, args: ConsoleArgs) -> Result<()> {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        args: kdfed_console::Args,
    }
    // The console's defaults (session hours, log format), or its KDFED_CONSOLE_* environment
    // for the flags `kdfed console` does not have.
    let mut console = Defaults::try_parse_from(["kdfed-console"])?.args;
    console.kubeconfig = None;
    console.hub_kubeconfig = None;
    console.address = args.address;
    console.admin_address = args.admin_address;
    console.system_namespace = args.system_namespace;
    console.log_level = args.log_level;
    let mut config = target.config().await?;
    if let Some(namespace) = &target.namespace {
        config.default_namespace = namespace.clone();
    }
    kdfed_console::run_local(console, config, |url| {
        println!("kdfed console: {url} (as the kubeconfig's identity; Ctrl-C stops it)");
    })
    .await
}

/// `kdfed render`.
fn render(args: RenderArgs) -> Result<()> {
    let RenderArgs { app, cluster, config, configmeta, choices } = args;
    let one = |path: &PathBuf, kind: &str| -> Result<serde_json::Value> {
        let docs = manifest::read_all(std::slice::from_ref(path))?;
        docs.into_iter()
            .find(|d| d.get("kind").and_then(serde_json::Value::as_str) == Some(kind))
            .ok_or_else(|| anyhow::anyhow!("{}: no {kind} in this file", path.display()))
    };
    let app: kdfed_crds::KubeDirectorApp =
        offline::typed(&one(&app, "KubeDirectorApp")?).map_err(|e| anyhow::anyhow!("kubedirectorapp: {e}"))?;
    let mut cluster: kdfed_crds::KubeDirectorCluster = offline::typed(&one(&cluster, "KubeDirectorCluster")?)
        .map_err(|e| anyhow::anyhow!("kubedirectorcluster: {e}"))?;
    cluster.spec.config_choices.extend(parse_choices(&choices)?);
    let config: Option<kdfed_crds::KubeDirectorConfig> = config
        .map(|c| {
            offline::typed(&one(&c, "KubeDirectorConfig")?).map_err(|e| anyhow::anyhow!("kubedirectorconfig: {e}"))
        })
        .transpose()?;
    let config = config.as_ref().map(|c| &c.spec);
    let cannot = |e: &dyn std::fmt::Display| {
        eprintln!("{e}");
        anyhow::anyhow!("kubedirectorcluster/{} cannot be rendered", kube::ResourceExt::name_any(&cluster))
    };
    if configmeta {
        let documents =
            kdfed_spoke::director::render::render_configmeta(&app, &cluster, config).map_err(|e| cannot(&e))?;
        return write_stdout(&format!("{}\n", serde_json::to_string_pretty(&documents)?));
    }
    let objects = kdfed_spoke::director::render::render(&app, &cluster, config).map_err(|e| cannot(&e))?;
    let mut text = String::new();
    for object in objects {
        text.push_str("---\n");
        text.push_str(&serde_saphyr::to_string(&object)?);
    }
    write_stdout(&text)
}

/// `--choice ID=VALUE` arguments as choice id → value.
fn parse_choices(args: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((id, value)) if !id.is_empty() => Ok((id.to_string(), value.to_string())),
            _ => bail!("--choice {a}: expected ID=VALUE, e.g. --choice jupyter=false"),
        })
        .collect()
}

/// The command line's definition as people see it (help, completions, man pages); named
/// `kubectl kdfed` when this binary runs as the kubectl plugin `kubectl-kdfed`.
fn public_command_line() -> clap::Command {
    let command = Cli::command();
    if invoked_as_plugin() { command.bin_name("kubectl kdfed").display_name("kubectl-kdfed") } else { command }
}

/// What the binary parses: the public command line and the hidden `__complete`, which
/// the completion scripts call and which is therefore left out of them.
fn command_line() -> clap::Command {
    public_command_line().subcommand(complete::command())
}

/// Whether this binary was started as `kubectl-kdfed` (kubectl runs plugins by that name).
fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().starts_with("kubectl-")))
        .unwrap_or(false)
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
    let matches = command_line().get_matches();
    if let Some((complete::COMMAND, args)) = matches.subcommand() {
        return complete::run(args).await;
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli).await {
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
    fn choices_are_id_equals_value() {
        let parsed = parse_choices(&["jupyter=false".into(), "level=a=b".into()]).expect("valid");
        assert_eq!(parsed.get("jupyter").map(String::as_str), Some("false"));
        assert_eq!(parsed.get("level").map(String::as_str), Some("a=b"));
        let e = parse_choices(&["jupyter".into()]).expect_err("no value");
        assert_eq!(e.to_string(), "--choice jupyter: expected ID=VALUE, e.g. --choice jupyter=false");
    }

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
