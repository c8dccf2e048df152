//! The kdfed hub: app catalog, member registry, placement, Works and status aggregation.

pub mod cache;
pub mod intents;
pub mod leader;
pub mod members;
pub mod metrics;
pub mod placement;
pub mod registry;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kdfed_common::runtime::{ApiServer, Runtime};
use tracing::info;

pub use settings::Settings;

/// Connects to the hub's API server and runs the hub's controllers until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let runtime = Runtime::builder("hub")
        .admin(settings.admin_address)
        .client(settings.kubeconfig.clone(), ApiServer { label: "hub", cluster: "hub" })
        .webhook(settings.webhook.clone(), &settings.system_namespace, false)
        .build(metrics::HubMetrics::register)
        .await?;
    let Runtime { client, metrics: hub_metrics, .. } = runtime;
    let grace = Duration::from_secs(settings.heartbeat_grace_seconds);
    // One watch per kind keeps the fleet view the metrics and availability loops read.
    let (cache, keep_current) = cache::FleetCache::start(&client);
    tokio::spawn(keep_current);
    tokio::spawn(metrics::collect(cache.clone(), hub_metrics.clone(), Duration::from_secs(5), grace));
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
        hub_metrics.leader.set(1);
        Some(e)
    } else {
        None
    };
    cache.ready().await;
    let ctx = Arc::new(intents::Context::new(
        client.clone(),
        settings.system_namespace.clone(),
        Duration::from_secs(settings.failover_skew_margin_seconds),
        hub_metrics.clone(),
        cache.clone(),
    ));
    let availability = tokio::spawn(members::run(
        client.clone(),
        cache.clone(),
        grace,
        Duration::from_secs(2),
        ctx.heartbeats.clone(),
    ));
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending::<()>().await,
        }
    };
    let result = tokio::select! {
        () = intents::run(ctx) => Ok(()),
        () = registry::run(client.clone()) => Ok(()),
        () = lost => Err(anyhow::anyhow!("lost the leader lease; exiting so that only one replica writes")),
    };
    availability.abort();
    hub_metrics.leader.set(0);
    info!("shutting down");
    result
}
