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

use anyhow::{Context as _, Result};
use tracing::info;

pub use settings::Settings;

/// Connects to the hub's API server and runs the hub's controllers until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> Result<()> {
    let mut admin = kdfed_common::admin::Admin::new();
    let hub_metrics = metrics::HubMetrics::register(&mut admin.registry);
    let api_metrics = kdfed_common::observe::ApiMetrics::register(admin.registry.sub_registry_with_prefix("hub"));
    let webhook_metrics =
        kdfed_common::observe::WebhookMetrics::register(admin.registry.sub_registry_with_prefix("hub"));
    let admin = Arc::new(admin);
    kdfed_common::admin::serve(settings.admin_address, admin.clone())
        .await
        .with_context(|| format!("admin server on {}", settings.admin_address))?;
    let client = kdfed_common::counted_client(settings.kubeconfig.as_deref(), &api_metrics, "hub").await?;
    let version = client.apiserver_version().await.context("connect to the hub's API server")?;
    info!(version = %version.git_version, "connected to the hub API server");
    admin.set_ready(true);
    let grace = Duration::from_secs(settings.heartbeat_grace_seconds);
    // One watch per kind keeps the fleet view the metrics and availability loops read.
    let (cache, keep_current) = cache::FleetCache::start(&client);
    tokio::spawn(keep_current);
    tokio::spawn(metrics::collect(cache.clone(), hub_metrics.clone(), Duration::from_secs(5), grace));
    if let Some(addr) = settings
        .webhook
        .start(&client, &settings.system_namespace, "kdfed-hub", webhook_metrics, false)
        .await
        .map_err(anyhow::Error::msg)?
    {
        info!(%addr, "admission webhook serving");
    }
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
    let ctx = Arc::new(intents::Context {
        client: client.clone(),
        system_namespace: settings.system_namespace.clone(),
        grace,
        failover_margin: Duration::from_secs(settings.failover_skew_margin_seconds),
        recorder: kdfed_common::events::Recorder::new(client.clone(), "kdfed-hub"),
        metrics: hub_metrics.clone(),
    });
    let availability = tokio::spawn(members::run(client.clone(), cache.clone(), grace, Duration::from_secs(2)));
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
