//! The kdfed hub: app catalog, member registry, placement and status aggregation.
//! At this stage it loads its configuration and connects to the hub's API server.

pub mod settings;

use anyhow::{Context, Result};
use tracing::info;

pub use settings::Settings;

/// Connects to the hub's API server and runs until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> Result<()> {
    let client = kdfed_common::client(settings.kubeconfig.as_deref()).await?;
    let version = client.apiserver_version().await.context("connect to the hub's API server")?;
    info!(version = %version.git_version, "connected to the hub API server");
    shutdown_signal().await;
    info!("shutting down");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
