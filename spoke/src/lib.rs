//! The kdfed spoke: hub sync and the director (KubeDirector semantics on one cluster).

pub mod director;
pub mod settings;

use anyhow::{Context, Result};
use tracing::info;

pub use settings::Settings;

/// Connects to the member's (and, unless standalone, the hub's) API server and runs until
/// SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> Result<()> {
    let local = kdfed_common::client(settings.kubeconfig.as_deref()).await?;
    let version = local.apiserver_version().await.context("connect to the member's API server")?;
    info!(version = %version.git_version, "connected to the member API server");
    if !settings.standalone {
        let hub = kdfed_common::client(settings.hub_kubeconfig.as_deref()).await?;
        let version = hub.apiserver_version().await.context("connect to the hub's API server")?;
        info!(version = %version.git_version, member = ?settings.member, "connected to the hub API server");
    }
    info!(system_namespace = %settings.system_namespace, "starting the director");
    director::run(local, settings.system_namespace.clone()).await;
    info!("shutting down");
    Ok(())
}
