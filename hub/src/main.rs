//! `kdfed-hub`: the federation hub controller.

use std::process::ExitCode;

use clap::Parser;
use kdfed_common::runtime::RuntimeArgs;
use kdfed_hub::Settings;

#[derive(Parser)]
#[command(name = "kdfed-hub", version, about = "kdfed hub: catalog, member registry, placement, status")]
struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Seconds a leader's Lease lasts without renewal.
    #[arg(long)]
    lease_duration_seconds: Option<String>,
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
    let (config, mut overrides) = args.runtime.into_overrides();
    overrides.extend([
        ("lease_duration_seconds", args.lease_duration_seconds),
        ("heartbeat_grace_seconds", args.heartbeat_grace_seconds),
        ("failover_skew_margin_seconds", args.failover_skew_margin_seconds),
    ]);
    kdfed_common::settings::launch::<Settings, _, _>(
        "kdfed-hub",
        "KDFED_HUB",
        config.as_deref(),
        &overrides,
        kdfed_hub::run,
    )
    .await
}
