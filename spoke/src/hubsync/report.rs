//! The capacity report: what the member has (allocatable and requested resources over its
//! schedulable nodes, storage classes, API server version) and what it runs (federated
//! copies by state, copies fenced because their Work is gone), written into the member's
//! status on the hub only when something changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kdfed_common::{ApiError, Doing};
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{KubeDirectorMember, MemberCapacity};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use tracing::warn;

use super::{Error, FIELD_MANAGER, SyncContext};

/// The resources the report sums (others are left out).
const RESOURCES: [&str; 3] = ["cpu", "memory", "nvidia.com/gpu"];

/// What a member reports about itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// API server version.
    pub version: String,
    /// Capacity summary.
    pub capacity: MemberCapacity,
    /// Storage classes.
    pub storage_classes: Vec<String>,
    /// Local federated clusters by state.
    pub clusters_by_state: BTreeMap<String, i64>,
    /// Local copies fenced because their placement moved away.
    pub fenced: Vec<String>,
}

/// The member status fields the spoke owns, sent as a JSON merge patch. Every field is
/// sent, empty or not (`KubeDirectorMemberStatus` leaves empty lists out): an emptied list,
/// such as no fenced copy left, must replace the one reported before.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportedStatus {
    /// API server version of the member.
    pub kubernetes_version: String,
    /// Version of this spoke.
    pub spoke_version: String,
    /// Allocatable and requested resources.
    pub capacity: MemberCapacity,
    /// Storage classes.
    pub storage_classes: Vec<String>,
    /// Local federated clusters by state.
    pub clusters_by_state: BTreeMap<String, i64>,
    /// Fenced local copies (`namespace/name`).
    pub fenced_clusters: Vec<String>,
    /// When this report was made.
    pub last_report_time: Time,
}

/// A merge patch of an object's status alone.
#[derive(Debug, Serialize)]
struct StatusPatch<'a, S> {
    status: &'a S,
}

impl Report {
    /// The status fields this report writes, made at `now`.
    pub fn status(&self, now: Time) -> ReportedStatus {
        ReportedStatus {
            kubernetes_version: self.version.clone(),
            spoke_version: env!("CARGO_PKG_VERSION").to_string(),
            capacity: self.capacity.clone(),
            storage_classes: self.storage_classes.clone(),
            clusters_by_state: self.clusters_by_state.clone(),
            fenced_clusters: self.fenced.clone(),
            last_report_time: now,
        }
    }
}

/// Sums `q` into `map[key]` (an unreadable quantity counts as zero).
fn add(map: &mut BTreeMap<String, f64>, key: &str, q: &Quantity) {
    *map.entry(key.to_string()).or_default() += kdfed_crds::quantity::parse(&q.0).unwrap_or(0.0);
}

/// Sums as quantities: whole CPUs or millicores, whole GiB or MiB, plain counts otherwise.
fn quantities(map: BTreeMap<String, f64>) -> BTreeMap<String, Quantity> {
    map.into_iter()
        .map(|(k, v)| {
            let millis = (v * 1000.0).round() as i64;
            let text = match k.as_str() {
                "cpu" if millis % 1000 == 0 => format!("{}", millis / 1000),
                "cpu" => format!("{millis}m"),
                "memory" if (v as i64) % (1 << 30) == 0 => format!("{}Gi", (v as i64) >> 30),
                "memory" => format!("{}Mi", (v / 1048576.0).round() as i64),
                _ => format!("{}", v.round() as i64),
            };
            (k, Quantity(text))
        })
        .collect()
}

/// Whether new pods may land on `node`: Ready and not cordoned.
fn schedulable(node: &Node) -> bool {
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && !cordoned
}

/// Allocatable resources of the schedulable nodes, and what the pods running on them
/// request (finished pods request nothing).
pub fn capacity(nodes: &[Node], pods: &[Pod]) -> MemberCapacity {
    let mut allocatable = BTreeMap::new();
    let mut names = Vec::new();
    for node in nodes.iter().filter(|n| schedulable(n)) {
        names.push(node.name_any());
        for (k, q) in node.status.as_ref().and_then(|s| s.allocatable.as_ref()).into_iter().flatten() {
            if RESOURCES.contains(&k.as_str()) {
                add(&mut allocatable, k, q);
            }
        }
    }
    let mut requested = BTreeMap::new();
    for pod in pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
        let on = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" || !names.contains(&on) {
            continue;
        }
        let containers = pod.spec.iter().flat_map(|s| &s.containers);
        for (k, q) in containers.flat_map(|c| c.resources.as_ref().and_then(|r| r.requests.as_ref())).flatten() {
            if RESOURCES.contains(&k.as_str()) {
                add(&mut requested, k, q);
            }
        }
    }
    MemberCapacity { allocatable: quantities(allocatable), requested: quantities(requested), nodes: names.len() as i64 }
}

/// Federated copies by their director state (`pending` before the director wrote one).
pub fn clusters_by_state(copies: &[KubeDirectorCluster]) -> BTreeMap<String, i64> {
    let mut by_state = BTreeMap::new();
    for c in copies {
        let state = c.status.as_ref().and_then(|s| s.state.clone()).unwrap_or_else(|| "pending".into());
        *by_state.entry(state).or_default() += 1;
    }
    by_state
}

/// How long the member's API server version and storage classes, which change rarely, are
/// reported from the last read: an idle spoke made five requests every report, two of them
/// for these.
pub const SLOW_FACTS_FOR: Duration = Duration::from_secs(300);

/// The API server version and the storage classes, and when they were read.
#[derive(Clone, Debug, Default)]
pub struct SlowFacts {
    read: Option<(Instant, String, Vec<String>)>,
}

impl SlowFacts {
    /// The facts read at or after `now - SLOW_FACTS_FOR`, if any.
    fn fresh(&self, now: Instant) -> Option<(String, Vec<String>)> {
        let (at, version, classes) = self.read.as_ref()?;
        (now.saturating_duration_since(*at) < SLOW_FACTS_FOR).then(|| (version.clone(), classes.clone()))
    }
}

/// How the report lists: from the member API server's watch cache (`resourceVersion=0`),
/// never a read of every object from etcd. A report a moment old is as good as a fresh one,
/// and a copy the cache still shows after its deletion is skipped by the fencing check.
fn cached() -> ListParams {
    ListParams::default().match_any()
}

/// The member's federated copies, listed once a pass for the fencing check and the count
/// by state.
async fn list_copies(local: &Client, copies_selector: &str) -> Result<Vec<KubeDirectorCluster>, ApiError> {
    let copies = Api::<KubeDirectorCluster>::all(local.clone());
    Ok(copies.list(&cached().labels(copies_selector)).await.doing("list local clusters")?.items)
}

/// Reads what the report counts from the member's API server (the version and storage
/// classes only when `slow` holds none read within [`SLOW_FACTS_FOR`]) and counts `copies`
/// by state.
async fn build_report(
    local: &Client,
    copies: &[KubeDirectorCluster],
    slow: &mut SlowFacts,
) -> Result<Report, ApiError> {
    let lp = cached();
    let (version, storage_classes) = match slow.fresh(Instant::now()) {
        Some(facts) => facts,
        None => {
            let version = local.apiserver_version().await.doing("read version")?.git_version;
            let classes = Api::<StorageClass>::all(local.clone()).list(&lp).await.doing("list storage classes")?.items;
            let mut storage_classes: Vec<String> = classes.iter().map(ResourceExt::name_any).collect();
            storage_classes.sort();
            slow.read = Some((Instant::now(), version.clone(), storage_classes.clone()));
            (version, storage_classes)
        }
    };
    let nodes = Api::<Node>::all(local.clone()).list(&lp).await.doing("list nodes")?.items;
    let pods = Api::<Pod>::all(local.clone()).list(&lp).await.doing("list pods")?.items;
    Ok(Report {
        version,
        capacity: capacity(&nodes, &pods),
        storage_classes,
        clusters_by_state: clusters_by_state(copies),
        fenced: Vec::new(),
    })
}

/// Fences copies whose Work is gone, then reports every `report_interval` and whenever Work
/// sync saw a Work deleted, until the process stops; a report equal to the last one written
/// is not written again.
pub(super) async fn run(ctx: Arc<SyncContext>) {
    let mut last: Option<Report> = None;
    let mut slow = SlowFacts::default();
    loop {
        if let Some(report) = pass(&ctx, last.as_ref(), &mut slow).await {
            last = Some(report);
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.access.pause(ctx.opts.report_interval)) => {}
            () = ctx.works_gone.notified() => {}
        }
    }
}

/// One report: the new one when it was written. A failed fencing check keeps the fenced
/// copies last reported, rather than reporting none.
async fn pass(ctx: &SyncContext, last: Option<&Report>, slow: &mut SlowFacts) -> Option<Report> {
    let copies = match list_copies(&ctx.local, &ctx.opts.copies_selector()).await {
        Ok(copies) => copies,
        Err(e) => {
            warn!("cannot build the member report: {}", Error::Report(e));
            return None;
        }
    };
    let fenced = match super::fencing::fence_orphans(ctx, &copies).await {
        Ok(f) => Some(f),
        Err(e) => {
            if !ctx.access.is_refused() {
                warn!("cannot check for moved placements: {e}");
            }
            None
        }
    };
    let mut report = match build_report(&ctx.local, &copies, slow).await.map_err(Error::Report) {
        Ok(r) => r,
        Err(e) => {
            warn!("cannot build the member report: {e}");
            return None;
        }
    };
    report.fenced = fenced.or_else(|| last.map(|l| l.fenced.clone())).unwrap_or_default();
    if last == Some(&report) {
        return None;
    }
    let members: Api<KubeDirectorMember> = Api::all(ctx.hub.clone());
    let status = report.status(Time(jiff::Timestamp::now()));
    let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
    match members.patch_status(&ctx.opts.member, &pp, &Patch::Merge(StatusPatch { status: &status })).await {
        Ok(_) => return Some(report),
        Err(e) if crate::hubaccess::is_refusal(&e) => ctx.access.refused(&ctx.opts.member, "report"),
        Err(e) => warn!("member status not reported: {e}"),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::api::core::v1::{Container, NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn resources(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
    }

    fn node(name: &str, ready: bool, cordoned: bool, allocatable: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            spec: Some(NodeSpec { unschedulable: Some(cordoned), ..NodeSpec::default() }),
            status: Some(NodeStatus {
                allocatable: Some(resources(allocatable)),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
        }
    }

    fn pod(on: &str, phase: &str, requests: &[(&str, &str)]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                node_name: Some(on.into()),
                containers: vec![Container {
                    resources: Some(ResourceRequirements {
                        requests: Some(resources(requests)),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus { phase: Some(phase.into()), ..PodStatus::default() }),
            ..Pod::default()
        }
    }

    #[test]
    fn capacity_counts_only_schedulable_nodes_and_the_pods_running_on_them() {
        let nodes = [
            node("a", true, false, &[("cpu", "4"), ("memory", "8Gi"), ("pods", "110")]),
            node("b", true, false, &[("cpu", "2500m"), ("memory", "1536Mi"), ("nvidia.com/gpu", "1")]),
            node("cordoned", true, true, &[("cpu", "64")]),
            node("not-ready", false, false, &[("cpu", "64")]),
        ];
        let pods = [
            pod("a", "Running", &[("cpu", "500m"), ("memory", "1Gi")]),
            pod("b", "Pending", &[("cpu", "1")]),
            pod("a", "Succeeded", &[("cpu", "8")]),
            pod("cordoned", "Running", &[("cpu", "8")]),
        ];
        let capacity = capacity(&nodes, &pods);
        assert_eq!(capacity.nodes, 2);
        assert_eq!(
            capacity.allocatable,
            resources(&[("cpu", "6500m"), ("memory", "9728Mi"), ("nvidia.com/gpu", "1")]),
            "pods are not a summed resource; cordoned and unready nodes do not count"
        );
        assert_eq!(capacity.requested, resources(&[("cpu", "1500m"), ("memory", "1Gi")]));
    }

    #[test]
    fn copies_are_counted_by_state_pending_until_the_director_writes_one() {
        let mut configured = KubeDirectorCluster::new("db", Default::default());
        configured.status = Some(kdfed_crds::cluster::KubeDirectorClusterStatus {
            state: Some("configured".into()),
            ..Default::default()
        });
        let fresh = KubeDirectorCluster::new("web", Default::default());
        let by_state = clusters_by_state(&[configured.clone(), fresh, configured]);
        assert_eq!(by_state, BTreeMap::from([("configured".to_string(), 2), ("pending".to_string(), 1)]));
    }

    #[test]
    fn an_emptied_list_is_sent_so_that_it_replaces_the_last_report() {
        let report = Report { version: "v1.36.0".into(), ..Report::default() };
        let now = Time(jiff::Timestamp::from_second(1_800_000_000).expect("time"));
        let patch = serde_json::to_value(StatusPatch { status: &report.status(now) }).expect("json");
        let status = &patch["status"];
        assert_eq!(status["kubernetesVersion"], "v1.36.0");
        assert_eq!(status["spokeVersion"], env!("CARGO_PKG_VERSION"));
        assert_eq!(status["fencedClusters"], serde_json::json!([]));
        assert_eq!(status["storageClasses"], serde_json::json!([]));
        assert_eq!(status["clustersByState"], serde_json::json!({}));
        assert_eq!(status["capacity"]["nodes"], 0);
        assert_eq!(status["lastReportTime"], "2027-01-15T08:00:00Z");
    }

    #[test]
    fn the_version_and_storage_classes_are_read_again_only_after_five_minutes() {
        let t0 = Instant::now();
        assert_eq!(SlowFacts::default().fresh(t0), None, "never read");
        let facts = SlowFacts { read: Some((t0, "v1.36.3".into(), vec!["standard".into()])) };
        let read = Some(("v1.36.3".to_string(), vec!["standard".to_string()]));
        assert_eq!(facts.fresh(t0 + Duration::from_secs(299)), read);
        assert_eq!(facts.fresh(t0 + SLOW_FACTS_FOR), None, "read again");
    }
}
