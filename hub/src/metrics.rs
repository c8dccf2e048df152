//! The hub's metrics: the fleet view (members, capacity, clusters, Works), placement and
//! configuration latencies, controller health and leadership. Label sets are bounded: member
//! names, app names, states and reasons — never pod names or UIDs.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kdfed_common::conditions::condition;
use kdfed_common::observe::ReconcileMetrics;
use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tracing::warn;

/// `member` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabel {
    /// Member name.
    pub member: String,
}

/// Condition type and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    /// Condition type.
    pub condition: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
}

/// App, member and state of clusters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    /// App name.
    pub app: String,
    /// Member (`none` when unplaced).
    pub member: String,
    /// Cluster state (`pending` before the member reports).
    pub state: String,
}

/// A reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Condition reason.
    pub reason: String,
}

/// A state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// State.
    pub state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every hub metric.
pub struct HubMetrics {
    members: Family<ConditionLabels, Gauge>,
    heartbeat_age: Family<MemberLabel, FloatGauge>,
    allocatable_cpu: Family<MemberLabel, FloatGauge>,
    allocatable_memory: Family<MemberLabel, FloatGauge>,
    allocatable_gpu: Family<MemberLabel, FloatGauge>,
    requested_cpu: Family<MemberLabel, FloatGauge>,
    requested_memory: Family<MemberLabel, FloatGauge>,
    requested_gpu: Family<MemberLabel, FloatGauge>,
    clusters_placed: Family<MemberLabel, Gauge>,
    fenced: Family<MemberLabel, Gauge>,
    available: Family<MemberLabel, Gauge>,
    clusters: Family<ClusterLabels, Gauge>,
    unplaced: Family<ReasonLabel, Gauge>,
    works: Family<StateLabel, Gauge>,
    /// Seconds from a cluster's creation to its placement.
    pub placement_latency: Histogram,
    /// Seconds from a cluster's creation to `Ready=True`.
    pub configured_latency: Histogram,
    /// Reconcile runs, errors and durations per controller.
    pub reconciles: ReconcileMetrics,
    /// 1 while this replica leads.
    pub leader: Gauge,
}

fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

impl HubMetrics {
    /// Creates the metrics and registers them under `kdfed_hub_*`.
    pub fn register(registry: &mut Registry) -> Arc<HubMetrics> {
        let m = HubMetrics {
            members: Family::default(),
            heartbeat_age: Family::default(),
            allocatable_cpu: Family::default(),
            allocatable_memory: Family::default(),
            allocatable_gpu: Family::default(),
            requested_cpu: Family::default(),
            requested_memory: Family::default(),
            requested_gpu: Family::default(),
            clusters_placed: Family::default(),
            fenced: Family::default(),
            available: Family::default(),
            clusters: Family::default(),
            unplaced: Family::default(),
            works: Family::default(),
            placement_latency: latency_buckets(),
            configured_latency: latency_buckets(),
            // The placement controller's series exist at 0 from the start: a hub whose
            // reconciles never fail still answers the error-rate panels (0, not "no data").
            reconciles: ReconcileMetrics::new(&["placement"]),
            leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("hub");
        r.register("members", "Members by condition and status", m.members.clone());
        r.register_with_unit(
            "member_heartbeat_age",
            "Age of each member's last heartbeat",
            Unit::Seconds,
            m.heartbeat_age.clone(),
        );
        r.register("member_allocatable_cpu_cores", "Allocatable CPU over schedulable nodes", m.allocatable_cpu.clone());
        r.register_with_unit(
            "member_allocatable_memory",
            "Allocatable memory over schedulable nodes",
            Unit::Bytes,
            m.allocatable_memory.clone(),
        );
        r.register(
            "member_allocatable_gpus",
            "Allocatable nvidia.com/gpu over schedulable nodes",
            m.allocatable_gpu.clone(),
        );
        r.register("member_requested_cpu_cores", "CPU requested by running pods", m.requested_cpu.clone());
        r.register_with_unit(
            "member_requested_memory",
            "Memory requested by running pods",
            Unit::Bytes,
            m.requested_memory.clone(),
        );
        r.register("member_requested_gpus", "GPUs requested by running pods", m.requested_gpu.clone());
        r.register("member_clusters_placed", "Clusters placed on each member", m.clusters_placed.clone());
        r.register(
            "member_fenced_clusters",
            "Fenced copies on each member: scaled to zero after a failover, PVCs kept until an admin removes them",
            m.fenced.clone(),
        );
        r.register("member_available", "1 while the member is Available=True", m.available.clone());
        r.register("clusters", "Clusters by app, member and state", m.clusters.clone());
        r.register("clusters_unplaced", "Clusters not placed, by reason", m.unplaced.clone());
        r.register("works", "Works by reported state", m.works.clone());
        r.register_with_unit(
            "placement_latency",
            "Time from a cluster's creation to its placement",
            Unit::Seconds,
            m.placement_latency.clone(),
        );
        r.register_with_unit(
            "configured_latency",
            "Time from a cluster's creation to Ready",
            Unit::Seconds,
            m.configured_latency.clone(),
        );
        m.reconciles.register_in(r);
        r.register("leader", "1 while this replica is the leader", m.leader.clone());
        Arc::new(m)
    }
}

fn q(map: &std::collections::BTreeMap<String, Quantity>, key: &str) -> f64 {
    map.get(key).and_then(|v| kdfed_crds::quantity::parse(&v.0)).unwrap_or(0.0)
}

/// Refreshes the fleet gauges from the API every `period`.
pub async fn collect(
    cache: Arc<crate::cache::FleetCache>,
    metrics: Arc<HubMetrics>,
    period: Duration,
    grace: Duration,
) {
    // Heartbeat ages on this replica's clock (see `members::observe`), not the members'.
    let mut seen = std::collections::BTreeMap::new();
    cache.ready().await;
    loop {
        if let Err(e) = collect_once(&cache, &metrics, grace, &mut seen).await {
            warn!("metrics: {e}");
        }
        tokio::time::sleep(period).await;
    }
}

async fn collect_once(
    cache: &crate::cache::FleetCache,
    m: &HubMetrics,
    grace: Duration,
    seen: &mut std::collections::BTreeMap<String, crate::members::Seen>,
) -> Result<(), kube::Error> {
    // The caches' own objects, not copies: at 10,000 clusters, copying them every pass
    // cost more than everything else the hub did at rest.
    let members = cache.members.state();
    let intents = cache.intents.state();
    let clusters = intents.iter().filter_map(|g| g.0.as_ref().ok());
    let works = cache.works.state();
    let now = jiff::Timestamp::now();
    for f in [
        &m.heartbeat_age,
        &m.allocatable_cpu,
        &m.allocatable_memory,
        &m.allocatable_gpu,
        &m.requested_cpu,
        &m.requested_memory,
        &m.requested_gpu,
    ] {
        f.clear();
    }
    m.members.clear();
    m.clusters_placed.clear();
    m.fenced.clear();
    m.available.clear();
    for member in members.iter().map(|m| &**m) {
        let label = MemberLabel { member: member.name_any() };
        let status = member.status.clone().unwrap_or_default();
        let available = condition(&status.conditions, "Available").map_or("Unknown".to_string(), |c| c.status.clone());
        m.available.get_or_create(&label).set(i64::from(available == "True"));
        m.members.get_or_create(&ConditionLabels { condition: "Available".into(), status: available }).inc();
        {
            let renewed = cache.last_renewal(&member.name_any());
            let grace = crate::members::member_grace(member, grace);
            let available = condition(&status.conditions, "Available");
            match crate::members::observe(seen.get(&label.member), renewed, now, available, grace) {
                Some(o) => {
                    m.heartbeat_age.get_or_create(&label).set(now.duration_since(o.at).as_secs_f64().max(0.0));
                    seen.insert(label.member.clone(), o);
                }
                None => {
                    seen.remove(&label.member);
                }
            }
        }
        let cap = status.capacity.unwrap_or_default();
        m.allocatable_cpu.get_or_create(&label).set(q(&cap.allocatable, "cpu"));
        m.allocatable_memory.get_or_create(&label).set(q(&cap.allocatable, "memory"));
        m.allocatable_gpu.get_or_create(&label).set(q(&cap.allocatable, "nvidia.com/gpu"));
        m.requested_cpu.get_or_create(&label).set(q(&cap.requested, "cpu"));
        m.requested_memory.get_or_create(&label).set(q(&cap.requested, "memory"));
        m.requested_gpu.get_or_create(&label).set(q(&cap.requested, "nvidia.com/gpu"));
        m.clusters_placed.get_or_create(&label).set(status.clusters_placed.unwrap_or(0));
        m.fenced.get_or_create(&label).set(i64::try_from(status.fenced_clusters.len()).unwrap_or(i64::MAX));
    }
    m.clusters.clear();
    m.unplaced.clear();
    for c in clusters {
        let status = c.status.clone().unwrap_or_default();
        let member = status.placement.as_ref().map_or("none".to_string(), |p| p.member.clone());
        let state = status.state.clone().unwrap_or_else(|| "pending".into());
        m.clusters.get_or_create(&ClusterLabels { app: c.spec.app.clone(), member, state }).inc();
        if status.placement.is_none() {
            let reason = condition(&status.conditions, "Placed").map_or("Pending".to_string(), |k| k.reason.clone());
            m.unplaced.get_or_create(&ReasonLabel { reason }).inc();
        }
    }
    m.works.clear();
    for w in works.iter() {
        let state = w
            .status
            .as_ref()
            .and_then(|s| s.cluster_status.as_ref())
            .and_then(|s| s.state.clone())
            .unwrap_or_else(|| "pending".into());
        m.works.get_or_create(&StateLabel { state }).inc();
    }
    Ok(())
}
