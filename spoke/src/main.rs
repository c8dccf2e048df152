//! `kdfed-spoke`: hub sync and the director on a member cluster.

use std::process::ExitCode;

use clap::Parser;
use kdfed_common::runtime::RuntimeArgs;
use kdfed_spoke::Settings;

#[derive(Parser)]
#[command(name = "kdfed-spoke", version, about = "kdfed spoke: hub sync and the KubeDirector director")]
struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Kubeconfig issued by the hub (`kdfed member add`).
    #[arg(long)]
    hub_kubeconfig: Option<String>,
    /// This member's name on the hub.
    #[arg(long)]
    member: Option<String>,
    /// Run only the director, without a hub.
    #[arg(long)]
    standalone: bool,
    /// Run as the member's fence watchdog (its own Deployment): stop failover-enabled
    /// copies when the spoke records no heartbeat renewal for too long.
    #[arg(long)]
    fence_watchdog: bool,
    /// File that keeps the current hub token.
    #[arg(long)]
    hub_token_file: Option<String>,
    /// Seconds between hub token renewals.
    #[arg(long)]
    hub_token_renew_seconds: Option<String>,
    /// Seconds between heartbeat renewals.
    #[arg(long)]
    lease_interval_seconds: Option<String>,
    /// Seconds before a cluster's failover.afterSeconds that its copy stops when the hub is unreachable.
    #[arg(long)]
    self_fence_margin_seconds: Option<String>,
    /// configcli package (tgz) to install in members of roles with a setup package.
    #[arg(long)]
    configcli_package: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (config, mut overrides) = args.runtime.into_overrides();
    overrides.extend([
        ("hub_kubeconfig", args.hub_kubeconfig),
        ("member", args.member),
        ("standalone", args.standalone.then(|| "true".to_string())),
        ("fence_watchdog", args.fence_watchdog.then(|| "true".to_string())),
        ("lease_interval_seconds", args.lease_interval_seconds),
        ("self_fence_margin_seconds", args.self_fence_margin_seconds),
        ("hub_token_renew_seconds", args.hub_token_renew_seconds),
        ("hub_token_file", args.hub_token_file),
        ("configcli_package", args.configcli_package),
    ]);
    kdfed_common::settings::launch::<Settings, _, _>(
        "kdfed-spoke",
        "KDFED_SPOKE",
        config.as_deref(),
        &overrides,
        kdfed_spoke::run,
    )
    .await
}
