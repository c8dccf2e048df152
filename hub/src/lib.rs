//! The kdfed hub: app catalog, member registry, placement, Works and status aggregation.

pub mod intents;
pub mod leader;
pub mod members;
pub mod placement;
pub mod registry;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tracing::info;

pub use settings::Settings;

/// Connects to the hub's API server and runs the hub's controllers until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> Result<()> {
    let client = kdfed_common::client(settings.kubeconfig.as_deref()).await?;
    let version = client.apiserver_version().await.context("connect to the hub's API server")?;
    info!(version = %version.git_version, "connected to the hub API server");
    if let Some(addr) =
        settings.webhook.start(&client, &settings.system_namespace, "kdfed-hub").await.map_err(anyhow::Error::msg)?
    {
        info!(%addr, "admission webhook serving");
    }
    let grace = Duration::from_secs(settings.heartbeat_grace_seconds);
    let identity = format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "hub".into()), std::process::id());
    let elector = if settings.leader_election {
        let e = leader::Elector::new(
            &client,
            &settings.system_namespace,
            identity,
            Duration::from_secs(settings.lease_duration_seconds),
        )
        .await
        .context("set up leader election")?;
        e.acquire().await;
        Some(e)
    } else {
        None
    };
    let ctx = Arc::new(intents::Context {
        client: client.clone(),
        system_namespace: settings.system_namespace.clone(),
        grace,
        recorder: kdfed_common::events::Recorder::new(client.clone(), "kdfed-hub"),
    });
    let availability = tokio::spawn(members::run(client.clone(), grace, Duration::from_secs(2)));
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending::<()>().await,
        }
    };
    let result = tokio::select! {
        () = intents::run(ctx) => Ok(()),
        () = lost => Err(anyhow::anyhow!("lost the leader lease; exiting so that only one replica writes")),
    };
    availability.abort();
    info!("shutting down");
    result
}
