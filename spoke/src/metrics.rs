//! The spoke's metrics: local clusters and members by state, pending lifecycle
//! notifications, the hub connection, setup-script runs and the director's reconciles.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use kdfed_common::observe::ReconcileMetrics;
use kdfed_crds::cluster::KubeDirectorCluster;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// State.
    pub state: String,
}

/// A setup-script step: `configure`, `addnodes`, `delnodes` or `reconnect`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    /// Step.
    pub step: String,
}

/// The setup-script steps the director runs (the only values of the `step` label).
pub const SETUP_STEPS: &[&str] = &["configure", "addnodes", "delnodes", "reconnect"];

/// The spoke's controllers (the only values of the `controller` label).
pub const CONTROLLERS: &[&str] = &["director", "works"];

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
    setup_runs: Family<StepLabel, Counter>,
    setup_failures: Family<StepLabel, Counter>,
    setup_duration: Family<StepLabel, Histogram>,
    /// Reconcile runs, errors and durations of [`CONTROLLERS`].
    pub reconciles: ReconcileMetrics,
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
            setup_runs: Family::default(),
            setup_failures: Family::default(),
            // Setup scripts take from a fraction of a second to many minutes.
            setup_duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.1, 2.0, 14))),
            reconciles: ReconcileMetrics::new(CONTROLLERS),
        };
        // Every series exists from the start, so rates are 0 rather than absent.
        for step in SETUP_STEPS {
            let label = StepLabel { step: step.to_string() };
            let _ = m.setup_runs.get_or_create(&label);
            let _ = m.setup_failures.get_or_create(&label);
            let _ = m.setup_duration.get_or_create(&label);
        }
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
        r.register("setup_runs", "Setup-script runs in members by step", m.setup_runs.clone());
        r.register("setup_failures", "Setup-script runs that failed, by step", m.setup_failures.clone());
        r.register_with_unit(
            "setup_duration",
            "Setup-script run time by step",
            Unit::Seconds,
            m.setup_duration.clone(),
        );
        m.reconciles.register_in(r);
        Arc::new(m)
    }

    /// Records one setup-script run of `step` (one of [`SETUP_STEPS`]); `seconds` when its
    /// duration is known (a run started by an earlier spoke process is counted, not timed).
    pub fn observe_setup(&self, step: &str, failed: bool, seconds: Option<f64>) {
        let label = StepLabel { step: step.to_string() };
        self.setup_runs.get_or_create(&label).inc();
        if failed {
            self.setup_failures.get_or_create(&label).inc();
        }
        if let Some(s) = seconds {
            self.setup_duration.get_or_create(&label).observe(s);
        }
    }

    /// Records a heartbeat attempt.
    pub fn heartbeat(&self, ok: bool) {
        self.hub_connected.set(i64::from(ok));
        if ok {
            self.hub_last_sync.set(jiff::Timestamp::now().as_millisecond() as f64 / 1000.0);
        }
    }
}

/// Refreshes the local gauges every `period` from the director's cache of clusters (no
/// API request: the director's watch keeps it current).
pub async fn collect(
    store: Store<DeserializeGuard<KubeDirectorCluster>>,
    metrics: Arc<SpokeMetrics>,
    period: Duration,
) {
    loop {
        metrics.clusters.clear();
        metrics.members.clear();
        let mut pending = 0;
        for guard in store.state() {
            let Ok(c) = &guard.0 else { continue };
            let status = c.status.clone().unwrap_or_default();
            let state = status.state.clone().unwrap_or_else(|| "pending".into());
            metrics.clusters.get_or_create(&StateLabel { state }).inc();
            for m in status.roles.iter().flat_map(|r| &r.members) {
                metrics.members.get_or_create(&StateLabel { state: m.state.clone() }).inc();
                pending += m.state_detail.pending_notify_cmds.len() as i64;
            }
        }
        metrics.notifications_pending.set(pending);
        tokio::time::sleep(period).await;
    }
}
