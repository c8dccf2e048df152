//! The spoke's metrics: local clusters and members by state, pending lifecycle
//! notifications, and the hub connection.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use kdfed_crds::cluster::KubeDirectorCluster;
use kube::Client;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tracing::warn;

/// A state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// State.
    pub state: String,
}

/// Every spoke metric.
#[derive(Debug)]
pub struct SpokeMetrics {
    clusters: Family<StateLabel, Gauge>,
    members: Family<StateLabel, Gauge>,
    notifications_pending: Gauge,
    /// 1 while the last heartbeat to the hub succeeded.
    pub hub_connected: Gauge,
    /// Unix time of the last successful heartbeat to the hub.
    pub hub_last_sync: Gauge<f64, AtomicU64>,
}

impl SpokeMetrics {
    /// Creates the metrics and registers them under `kdfed_spoke_*`.
    pub fn register(registry: &mut Registry) -> Arc<SpokeMetrics> {
        let m = SpokeMetrics {
            clusters: Family::default(),
            members: Family::default(),
            notifications_pending: Gauge::default(),
            hub_connected: Gauge::default(),
            hub_last_sync: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("spoke");
        r.register("clusters", "Local clusters by state", m.clusters.clone());
        r.register("members", "Local cluster members by state", m.members.clone());
        r.register(
            "notifications_pending",
            "Lifecycle notifications not yet delivered",
            m.notifications_pending.clone(),
        );
        r.register("hub_connected", "1 while the last heartbeat to the hub succeeded", m.hub_connected.clone());
        r.register_with_unit(
            "hub_last_sync_timestamp",
            "Unix time of the last successful heartbeat",
            Unit::Seconds,
            m.hub_last_sync.clone(),
        );
        Arc::new(m)
    }

    /// Records a heartbeat attempt.
    pub fn heartbeat(&self, ok: bool) {
        self.hub_connected.set(i64::from(ok));
        if ok {
            self.hub_last_sync.set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
        }
    }
}

/// Refreshes the local gauges every `period`.
pub async fn collect(client: Client, metrics: Arc<SpokeMetrics>, period: Duration) {
    loop {
        match kube::Api::<KubeDirectorCluster>::all(client.clone()).list(&Default::default()).await {
            Ok(list) => {
                metrics.clusters.clear();
                metrics.members.clear();
                let mut pending = 0;
                for c in list.items {
                    let status = c.status.unwrap_or_default();
                    let state = status.state.clone().unwrap_or_else(|| "pending".into());
                    metrics.clusters.get_or_create(&StateLabel { state }).inc();
                    for m in status.roles.iter().flat_map(|r| &r.members) {
                        metrics.members.get_or_create(&StateLabel { state: m.state.clone() }).inc();
                        pending += m.state_detail.pending_notify_cmds.len() as i64;
                    }
                }
                metrics.notifications_pending.set(pending);
            }
            Err(e) => warn!("metrics: {e}"),
        }
        tokio::time::sleep(period).await;
    }
}
