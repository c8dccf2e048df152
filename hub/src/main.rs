//! `kdfed-hub`: the federation hub controller.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kdfed_hub::Settings;

#[derive(Parser)]
#[command(name = "kdfed-hub", version, about = "kdfed hub: catalog, member registry, placement, status")]
struct Args {
    /// YAML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kubeconfig of the hub's API server.
    #[arg(long)]
    kubeconfig: Option<String>,
    /// Admin server address (metrics, health).
    #[arg(long)]
    admin_address: Option<String>,
    #[command(flatten)]
    webhook: kdfed_common::admission::WebhookArgs,
    /// Seconds a leader's Lease lasts without renewal.
    #[arg(long)]
    lease_duration_seconds: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Log filter.
    #[arg(long)]
    log_level: Option<String>,
    /// Seconds without heartbeat before a member is Available=Unknown.
    #[arg(long)]
    heartbeat_grace_seconds: Option<String>,
    /// Seconds added to grace + afterSeconds before a cluster fails over (clock skew).
    #[arg(long)]
    failover_skew_margin_seconds: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut overrides = vec![
        ("kubeconfig", args.kubeconfig),
        ("admin_address", args.admin_address),
        ("lease_duration_seconds", args.lease_duration_seconds),
        ("log_format", args.log_format),
        ("log_level", args.log_level),
        ("heartbeat_grace_seconds", args.heartbeat_grace_seconds),
        ("failover_skew_margin_seconds", args.failover_skew_margin_seconds),
    ];
    overrides.extend(args.webhook.overrides());
    kdfed_common::settings::launch::<Settings, _, _>(
        "kdfed-hub",
        "KDFED_HUB",
        args.config.as_deref(),
        &overrides,
        kdfed_hub::run,
    )
    .await
}
