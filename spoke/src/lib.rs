//! The kdfed spoke: hub sync and the director (KubeDirector semantics on one cluster).

pub mod director;
pub mod fencing;
pub mod hubaccess;
pub mod hubsync;
pub mod metrics;
pub mod settings;
pub mod watchdog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kdfed_common::runtime::{ApiServer, Runtime};
use tracing::{info, warn};

pub use settings::Settings;

/// Runs the director on the member's API server and, unless standalone, hub sync, until
/// SIGINT/SIGTERM. Hub sync failures never stop the director: local clusters keep being
/// reconciled while the hub is unreachable.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    if settings.fence_watchdog {
        return run_watchdog(settings).await;
    }
    let configcli = match &settings.configcli_package {
        Some(path) => {
            let package = director::setup::ConfigcliPackage::load(path)
                .with_context(|| format!("configcli_package: cannot read {}", path.display()))?;
            info!(path = %path.display(), "installing configcli in members with a setup package");
            Some(package)
        }
        None => None,
    };
    // A federated spoke's own writes carry ciphertexts made with this member's key.
    let runtime = Runtime::builder("spoke")
        .admin(settings.admin_address)
        .client(settings.kubeconfig.clone(), ApiServer { label: "local", cluster: "member" })
        .webhook(settings.webhook.clone(), &settings.system_namespace, !settings.standalone)
        .build(metrics::SpokeMetrics::register)
        .await?;
    let Runtime { client: local, metrics: spoke_metrics, api_metrics, .. } = runtime;
    let heartbeat = Arc::new(fencing::Heartbeat::default());
    let fence_clock = (!settings.standalone).then(|| fencing::FenceClock {
        heartbeat: heartbeat.clone(),
        margin: Duration::from_secs(settings.self_fence_margin_seconds),
        interval: Duration::from_secs(settings.lease_interval_seconds),
    });
    let director =
        director::run(local.clone(), settings.system_namespace.clone(), spoke_metrics.clone(), configcli, fence_clock);
    if settings.standalone {
        info!(system_namespace = %settings.system_namespace, "starting the director (standalone)");
        director.await;
    } else {
        let mut opts = hub_sync_options(&settings, spoke_metrics.clone(), api_metrics.clone())?;
        opts.heartbeat = Some(heartbeat);
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

/// Runs the fence watchdog ([`watchdog`]) on the member's API server until SIGINT/SIGTERM.
async fn run_watchdog(settings: Settings) -> anyhow::Result<()> {
    let runtime = Runtime::builder("fence_watchdog")
        .admin(settings.admin_address)
        .client(settings.kubeconfig.clone(), ApiServer { label: "local", cluster: "member" })
        .build(watchdog::WatchdogMetrics::register)
        .await?;
    let watchdog = watchdog::Watchdog {
        recorder: kdfed_common::events::Recorder::new(runtime.client.clone(), watchdog::FIELD_MANAGER),
        local: runtime.client,
        namespace: settings.system_namespace.clone(),
        margin: Duration::from_secs(settings.self_fence_margin_seconds),
        interval: Duration::from_secs(settings.lease_interval_seconds),
        metrics: runtime.metrics,
    };
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("listen for SIGTERM")?;
    tokio::select! {
        () = watchdog::run(watchdog) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
    Ok(())
}

/// Hub sync's options from the settings: the token file defaults to
/// `<hub_kubeconfig>.token`, and the token is renewed at a third of its lifetime by default,
/// so two failures in a row still leave time.
fn hub_sync_options(
    settings: &Settings,
    metrics: std::sync::Arc<metrics::SpokeMetrics>,
    api_metrics: std::sync::Arc<kdfed_common::observe::ApiMetrics>,
) -> anyhow::Result<hubsync::Options> {
    let hub_kubeconfig = settings.hub_kubeconfig.clone().context("hub_kubeconfig is required")?;
    let token_file =
        settings.hub_token_file.clone().unwrap_or_else(|| PathBuf::from(format!("{}.token", hub_kubeconfig.display())));
    let renew = settings.hub_token_renew_seconds.unwrap_or((settings.hub_token_seconds / 3).max(1) as u64);
    Ok(hubsync::Options {
        member: settings.member.clone().context("member is required")?,
        system_namespace: settings.system_namespace.clone(),
        hub_kubeconfig,
        token_file,
        token_seconds: settings.hub_token_seconds,
        token_renew: Duration::from_secs(renew),
        lease_interval: Duration::from_secs(settings.lease_interval_seconds),
        report_interval: Duration::from_secs(settings.report_interval_seconds),
        metrics: Some(metrics),
        api_metrics: Some(api_metrics),
        self_fence_margin: Duration::from_secs(settings.self_fence_margin_seconds),
        shared_local: None,
        heartbeat: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> (std::sync::Arc<metrics::SpokeMetrics>, std::sync::Arc<kdfed_common::observe::ApiMetrics>) {
        let mut registry = prometheus_client::registry::Registry::default();
        (metrics::SpokeMetrics::register(&mut registry), kdfed_common::observe::ApiMetrics::register(&mut registry))
    }

    #[test]
    fn hub_sync_keeps_its_token_beside_the_kubeconfig_and_renews_at_a_third() {
        let settings = Settings {
            hub_kubeconfig: Some("/etc/kdfed/hub.kubeconfig".into()),
            member: Some("east".into()),
            hub_token_seconds: 3600,
            ..Settings::default()
        };
        let (m, api) = metrics();
        let opts = hub_sync_options(&settings, m, api).expect("options");
        assert_eq!(opts.token_file, PathBuf::from("/etc/kdfed/hub.kubeconfig.token"));
        assert_eq!(opts.token_renew, Duration::from_secs(1200));
        assert_eq!(opts.member, "east");
    }

    #[test]
    fn a_federated_spoke_needs_its_hub_kubeconfig_and_member_name() {
        let (m, api) = metrics();
        let Err(e) = hub_sync_options(&Settings::default(), m.clone(), api.clone()) else {
            panic!("no hub kubeconfig")
        };
        assert_eq!(e.to_string(), "hub_kubeconfig is required");
        let settings = Settings { hub_kubeconfig: Some("hub.kubeconfig".into()), ..Settings::default() };
        let Err(e) = hub_sync_options(&settings, m, api) else { panic!("no member") };
        assert_eq!(e.to_string(), "member is required");
    }
}
