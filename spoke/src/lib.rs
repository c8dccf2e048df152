//! The kdfed spoke: hub sync and the director (KubeDirector semantics on one cluster).

pub mod director;
pub mod fencing;
pub mod hubaccess;
pub mod hubsync;
pub mod metrics;
pub mod settings;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::{info, warn};

pub use settings::Settings;

/// Runs the director on the member's API server and, unless standalone, hub sync, until
/// SIGINT/SIGTERM. Hub sync failures never stop the director: local clusters keep being
/// reconciled while the hub is unreachable.
pub async fn run(settings: Settings) -> Result<()> {
    let configcli = match &settings.configcli_package {
        Some(path) => {
            let package = director::setup::ConfigcliPackage::load(path)
                .with_context(|| format!("configcli_package: cannot read {}", path.display()))?;
            info!(path = %path.display(), "installing configcli in members with a setup package");
            Some(package)
        }
        None => None,
    };
    let mut admin = kdfed_common::admin::Admin::new();
    let spoke_metrics = metrics::SpokeMetrics::register(&mut admin.registry);
    let api_metrics = kdfed_common::observe::ApiMetrics::register(admin.registry.sub_registry_with_prefix("spoke"));
    let webhook_metrics =
        kdfed_common::observe::WebhookMetrics::register(admin.registry.sub_registry_with_prefix("spoke"));
    let admin = std::sync::Arc::new(admin);
    kdfed_common::admin::serve(settings.admin_address, admin.clone())
        .await
        .with_context(|| format!("admin server on {}", settings.admin_address))?;
    let local = kdfed_common::counted_client(settings.kubeconfig.as_deref(), &api_metrics, "local").await?;
    let version = local.apiserver_version().await.context("connect to the member's API server")?;
    info!(version = %version.git_version, "connected to the member API server");
    admin.set_ready(true);
    tokio::spawn(metrics::collect(local.clone(), spoke_metrics.clone(), Duration::from_secs(5)));
    if let Some(addr) = settings
        .webhook
        .start(&local, &settings.system_namespace, "kdfed-spoke", webhook_metrics, !settings.standalone)
        .await
        .map_err(anyhow::Error::msg)?
    {
        info!(%addr, "admission webhook serving");
    }
    let director = director::run(local.clone(), settings.system_namespace.clone(), spoke_metrics.clone(), configcli);
    if settings.standalone {
        info!(system_namespace = %settings.system_namespace, "starting the director (standalone)");
        director.await;
    } else {
        let hub_kubeconfig = settings.hub_kubeconfig.clone().context("hub_kubeconfig is required")?;
        let token_file = settings
            .hub_token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.token", hub_kubeconfig.display())));
        let opts = hubsync::Options {
            member: settings.member.clone().context("member is required")?,
            system_namespace: settings.system_namespace.clone(),
            hub_kubeconfig,
            token_file,
            token_seconds: settings.hub_token_seconds,
            // By default renew at a third of the lifetime, so two failures in a row still leave time.
            token_renew: Duration::from_secs(
                settings.hub_token_renew_seconds.unwrap_or((settings.hub_token_seconds / 3).max(1) as u64),
            ),
            lease_interval: Duration::from_secs(settings.lease_interval_seconds),
            report_interval: Duration::from_secs(settings.report_interval_seconds),
            metrics: Some(spoke_metrics.clone()),
            api_metrics: Some(api_metrics.clone()),
            self_fence_margin: Duration::from_secs(settings.self_fence_margin_seconds),
        };
        info!(member = %opts.member, "starting the director and hub sync");
        let sync = tokio::spawn(async move {
            if let Err(e) = hubsync::run(local, opts).await {
                warn!("hub sync stopped: {e}");
            }
        });
        director.await;
        sync.abort();
    }
    info!("shutting down");
    Ok(())
}
