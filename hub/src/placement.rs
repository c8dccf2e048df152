//! The scheduler: picks one member for a cluster intent. Pure: filters (explicit members,
//! `memberSelector`, taints/tolerations, availability, capacity, storage class), then
//! scores (preference weights, then free capacity after placement, then spread: fewer
//! clusters already placed); ties break by name.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kdfed_crds::cluster::{KubeDirectorClusterSpec, Placement};
use kdfed_crds::quantity;

/// CPU (cores), memory (bytes) and GPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resources {
    /// Cores.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
    /// `nvidia.com/gpu` devices.
    pub gpu: f64,
}

impl Resources {
    /// From a Kubernetes resource map (`cpu`, `memory`, `nvidia.com/gpu`).
    pub fn from_map<'a, I: IntoIterator<Item = (&'a String, &'a str)>>(map: I) -> Resources {
        let mut r = Resources::default();
        for (k, v) in map {
            let value = quantity::parse(v).unwrap_or(0.0);
            match k.as_str() {
                "cpu" => r.cpu += value,
                "memory" => r.memory += value,
                "nvidia.com/gpu" => r.gpu += value,
                _ => {}
            }
        }
        r
    }

    fn plus(self, o: Resources) -> Resources {
        Resources { cpu: self.cpu + o.cpu, memory: self.memory + o.memory, gpu: self.gpu + o.gpu }
    }

    fn minus(self, o: Resources) -> Resources {
        Resources { cpu: self.cpu - o.cpu, memory: self.memory - o.memory, gpu: self.gpu - o.gpu }
    }

    fn covers(self, need: Resources) -> bool {
        // A little slack for float rounding of quantities such as 100m.
        self.cpu + 1e-9 >= need.cpu && self.memory + 1e-3 >= need.memory && self.gpu + 1e-9 >= need.gpu
    }
}

/// Sum of the requests of every member of every role of a cluster (limits where no request).
pub fn cluster_requests(spec: &KubeDirectorClusterSpec) -> Resources {
    let mut total = Resources::default();
    for role in &spec.roles {
        let members = f64::from(role.members.unwrap_or(0).max(0));
        let requests = role.resources.requests.clone().unwrap_or_default();
        let limits = role.resources.limits.clone().unwrap_or_default();
        let mut per = BTreeMap::new();
        for (k, v) in limits.iter().chain(requests.iter()) {
            per.insert(k.clone(), v.0.clone());
        }
        let r = Resources::from_map(per.iter().map(|(k, v)| (k, v.as_str())));
        total = total.plus(Resources { cpu: r.cpu * members, memory: r.memory * members, gpu: r.gpu * members });
    }
    total
}

/// What the scheduler knows of a member.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberView {
    /// Name.
    pub name: String,
    /// Placement labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// `Available=True`.
    pub available: bool,
    /// Cordoned (`spec.unschedulable`): keeps what it runs, receives no new placements.
    pub cordoned: bool,
    /// Allocatable over schedulable nodes.
    pub allocatable: Resources,
    /// Already requested, including clusters placed but not yet reported.
    pub requested: Resources,
    /// Storage classes.
    pub storage_classes: Vec<String>,
    /// Clusters placed on the member already (spread: fewer wins when all else is equal).
    pub placed: usize,
}

/// What a cluster needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntentView {
    /// Sum of role requests.
    pub requests: Resources,
    /// Storage classes roles name explicitly.
    pub storage_classes: Vec<String>,
    /// The cluster's placement constraints.
    pub placement: Placement,
    /// The member the clusters it connects to (`spec.connections.clusters`) run on: it
    /// must run there too, since connections are resolved on the member.
    pub colocate: Option<String>,
}

impl IntentView {
    /// The view of a (defaulted) cluster spec.
    pub fn of(spec: &KubeDirectorClusterSpec) -> IntentView {
        let mut classes: Vec<String> =
            spec.roles.iter().filter_map(|r| r.storage.as_ref()?.storage_class_name.clone()).collect();
        classes.sort();
        classes.dedup();
        IntentView {
            requests: cluster_requests(spec),
            storage_classes: classes,
            placement: spec.placement.clone().unwrap_or_default(),
            colocate: None,
        }
    }
}

/// Filters, in the order they are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filter {
    /// Not in `placement.members`.
    Members,
    /// Not the member the connected clusters run on.
    Connections,
    /// Labels do not match `memberSelector`.
    Selector,
    /// A taint is not tolerated.
    Taints,
    /// Cordoned (`spec.unschedulable`).
    Cordoned,
    /// Not available (no heartbeat, never reported).
    Unavailable,
    /// A named storage class is missing.
    StorageClass,
    /// Not enough free CPU, memory or GPU.
    Capacity,
}

impl Filter {
    fn phrase(self) -> &'static str {
        match self {
            Filter::Members => "not listed in placement.members",
            Filter::Connections => "did not run the clusters it connects to",
            Filter::Selector => "did not match placement.memberSelector",
            Filter::Taints => "had taints the cluster does not tolerate",
            Filter::Cordoned => "cordoned (spec.unschedulable)",
            Filter::Unavailable => "unavailable",
            Filter::StorageClass => "lacked a requested storage class",
            Filter::Capacity => "had insufficient free CPU, memory or GPU",
        }
    }
}

/// Why no member fits: how many members each filter rejected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unschedulable {
    /// Members considered.
    pub members: usize,
    /// Rejections per filter.
    pub rejected: BTreeMap<Filter, usize>,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} members fit", self.members)?;
        let parts: Vec<String> = self.rejected.iter().map(|(filter, n)| format!("{n} {}", filter.phrase())).collect();
        if !parts.is_empty() {
            write!(f, ": {}", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Whether `labels` match a LabelSelector.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let key = t.key.as_deref().unwrap_or("");
        match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => effect_ok && (key.is_empty() || key == taint.key),
            _ => {
                effect_ok
                    && key == taint.key
                    && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
        }
    })
}

fn rejected_by(intent: &IntentView, m: &MemberView) -> Option<Filter> {
    let p = &intent.placement;
    if !p.members.is_empty() && !p.members.contains(&m.name) {
        return Some(Filter::Members);
    }
    if intent.colocate.as_ref().is_some_and(|c| c != &m.name) {
        return Some(Filter::Connections);
    }
    if let Some(sel) = &p.member_selector
        && !selector_matches(sel, &m.labels)
    {
        return Some(Filter::Selector);
    }
    let blocking = m.taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
    if blocking.into_iter().any(|t| !tolerates(&p.tolerations, t)) {
        return Some(Filter::Taints);
    }
    if m.cordoned {
        return Some(Filter::Cordoned);
    }
    if !m.available {
        return Some(Filter::Unavailable);
    }
    if intent.storage_classes.iter().any(|c| !m.storage_classes.contains(c)) {
        return Some(Filter::StorageClass);
    }
    if !m.allocatable.minus(m.requested).covers(intent.requests) {
        return Some(Filter::Capacity);
    }
    None
}

/// Whether `m` passes every filter for `intent` now (a member change may let it in).
pub fn fits(intent: &IntentView, m: &MemberView) -> bool {
    rejected_by(intent, m).is_none()
}

fn free_fraction_after(intent: &IntentView, m: &MemberView) -> f64 {
    let free = m.allocatable.minus(m.requested).minus(intent.requests);
    let frac = |free: f64, total: f64| if total > 0.0 { free / total } else { 0.0 };
    (frac(free.cpu, m.allocatable.cpu) + frac(free.memory, m.allocatable.memory)) / 2.0
}

/// Picks a member for `intent`, or says how many members each filter rejected.
pub fn schedule<'a>(intent: &IntentView, members: &'a [MemberView]) -> Result<&'a MemberView, Unschedulable> {
    let mut why = Unschedulable { members: members.len(), ..Unschedulable::default() };
    let mut best: Option<((i64, i64, i64), &MemberView)> = None;
    for m in members {
        if let Some(filter) = rejected_by(intent, m) {
            *why.rejected.entry(filter).or_default() += 1;
            continue;
        }
        let mut preference: i64 = intent
            .placement
            .preferences
            .iter()
            .filter(|p| selector_matches(&p.preference, &m.labels))
            .map(|p| i64::from(p.weight))
            .sum();
        if m.taints.iter().any(|t| t.effect == "PreferNoSchedule" && !tolerates(&intent.placement.tolerations, t)) {
            preference -= 1;
        }
        // Free capacity in parts per million, so ties compare exactly; then spread (clusters
        // without requests leave capacity equal, and must not all land on one member).
        let free = (free_fraction_after(intent, m) * 1e6) as i64;
        let score = (preference, free, -(m.placed as i64));
        let better = match best {
            None => true,
            Some((best_score, bm)) => score > best_score || (score == best_score && m.name < bm.name),
        };
        if better {
            best = Some((score, m));
        }
    }
    best.map(|(_, m)| m).ok_or(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdfed_crds::cluster::PlacementPreference;

    fn member(name: &str, labels: &[(&str, &str)], cpu: f64, used: f64) -> MemberView {
        MemberView {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            available: true,
            allocatable: Resources { cpu, memory: 64e9, gpu: 0.0 },
            requested: Resources { cpu: used, memory: 0.0, gpu: 0.0 },
            ..MemberView::default()
        }
    }

    fn intent(cpu: f64) -> IntentView {
        IntentView { requests: Resources { cpu, memory: 1e9, gpu: 0.0 }, ..IntentView::default() }
    }

    fn selector(k: &str, v: &str) -> LabelSelector {
        LabelSelector { match_labels: Some([(k.to_string(), v.to_string())].into()), ..LabelSelector::default() }
    }

    #[test]
    fn clusters_without_requests_spread_over_equal_members() {
        let mut members = vec![member("a", &[], 16.0, 0.0), member("b", &[], 16.0, 0.0), member("c", &[], 16.0, 0.0)];
        let none = IntentView::default();
        members[0].placed = 2;
        members[1].placed = 1;
        members[2].placed = 1;
        // Equal capacity and preference: the member with the fewest clusters, then the name.
        assert_eq!(schedule(&none, &members).map(|m| m.name.as_str()), Ok("b"));
        members[1].placed = 3;
        assert_eq!(schedule(&none, &members).map(|m| m.name.as_str()), Ok("c"));
        // Spread never beats free capacity or preferences.
        members[2].requested.cpu = 1.0;
        assert_eq!(schedule(&intent(1.0), &members).map(|m| m.name.as_str()), Ok("a"));
    }

    #[test]
    fn a_cluster_runs_where_the_clusters_it_connects_to_run() {
        let members = vec![member("east", &[], 32.0, 0.0), member("west", &[], 16.0, 8.0)];
        let mut i = intent(1.0);
        assert_eq!(schedule(&i, &members).map(|m| m.name.as_str()), Ok("east"));
        i.colocate = Some("west".into());
        assert_eq!(schedule(&i, &members).map(|m| m.name.as_str()), Ok("west"));
        i.requests.cpu = 10.0;
        let err = schedule(&i, &members).expect_err("west is too small");
        assert_eq!(
            err.to_string(),
            "0/2 members fit: 1 did not run the clusters it connects to, 1 had insufficient free CPU, memory or GPU"
        );
    }

    #[test]
    fn selector_and_explicit_members_filter() {
        let members =
            vec![member("east", &[("region", "east")], 16.0, 0.0), member("west", &[("region", "west")], 16.0, 0.0)];
        let mut i = intent(1.0);
        i.placement.member_selector = Some(selector("region", "west"));
        assert_eq!(schedule(&i, &members).map(|m| m.name.as_str()), Ok("west"));
        i.placement.members = vec!["east".into()];
        let err = schedule(&i, &members).expect_err("no member is both west and east");
        assert_eq!(
            err.to_string(),
            "0/2 members fit: 1 not listed in placement.members, 1 did not match placement.memberSelector"
        );
    }

    #[test]
    fn capacity_availability_and_taints_filter() {
        let mut tainted = member("c", &[], 64.0, 0.0);
        tainted.taints = vec![Taint {
            key: "gpu".into(),
            value: Some("a100".into()),
            effect: "NoSchedule".into(),
            ..Taint::default()
        }];
        let mut down = member("b", &[], 64.0, 0.0);
        down.available = false;
        let members = vec![member("a", &[], 8.0, 6.0), down, tainted];
        let err = schedule(&intent(4.0), &members).expect_err("nothing fits");
        assert_eq!(err.rejected.get(&Filter::Capacity), Some(&1));
        assert_eq!(err.rejected.get(&Filter::Unavailable), Some(&1));
        assert_eq!(err.rejected.get(&Filter::Taints), Some(&1));
        let mut tolerant = intent(4.0);
        tolerant.placement.tolerations =
            vec![Toleration { key: Some("gpu".into()), operator: Some("Exists".into()), ..Toleration::default() }];
        assert_eq!(schedule(&tolerant, &members).map(|m| m.name.as_str()), Ok("c"));
    }

    #[test]
    fn a_cordoned_member_gets_no_new_placement_and_says_why() {
        let mut cordoned = member("big", &[], 64.0, 0.0);
        cordoned.cordoned = true;
        let members = vec![cordoned.clone(), member("small", &[], 8.0, 0.0)];
        assert_eq!(schedule(&intent(4.0), &members).map(|m| m.name.as_str()), Ok("small"), "despite more room");
        let err = schedule(&intent(4.0), &[cordoned]).expect_err("only a cordoned member");
        assert_eq!(err.to_string(), "0/1 members fit: 1 cordoned (spec.unschedulable)");
    }

    #[test]
    fn preferences_then_free_capacity_then_name() {
        let members = vec![
            member("b", &[("provider", "cloud")], 16.0, 0.0),
            member("a", &[("provider", "cloud")], 16.0, 0.0),
            member("c", &[("provider", "onprem")], 16.0, 8.0),
        ];
        assert_eq!(
            schedule(&intent(1.0), &members).map(|m| m.name.as_str()),
            Ok("a"),
            "tie on capacity breaks by name"
        );
        let mut i = intent(1.0);
        i.placement.preferences = vec![PlacementPreference { weight: 10, preference: selector("provider", "onprem") }];
        assert_eq!(schedule(&i, &members).map(|m| m.name.as_str()), Ok("c"), "preference beats free capacity");
    }

    #[test]
    fn storage_classes_must_exist_and_requests_sum_over_members() {
        let mut m = member("a", &[], 16.0, 0.0);
        m.storage_classes = vec!["fast".into()];
        let mut i = intent(1.0);
        i.storage_classes = vec!["slow".into()];
        assert_eq!(
            schedule(&i, std::slice::from_ref(&m)).expect_err("no class").rejected.get(&Filter::StorageClass),
            Some(&1)
        );
        let spec: KubeDirectorClusterSpec = serde_json::from_value(serde_json::json!({
            "app": "x",
            "roles": [
                {"id": "a", "members": 3, "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"id": "b", "members": 2, "resources": {"limits": {"cpu": "2", "nvidia.com/gpu": "1"}}}
            ]
        }))
        .expect("spec");
        let r = cluster_requests(&spec);
        assert!((r.cpu - 5.5).abs() < 1e-9, "{r:?}");
        assert!((r.memory - 3.0 * 1073741824.0).abs() < 1.0);
        assert!((r.gpu - 2.0).abs() < 1e-9);
    }

    #[test]
    fn selector_expressions() {
        let labels: BTreeMap<String, String> = [("region".to_string(), "eu".to_string())].into();
        let expr = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "region".into(),
                operator: op.into(),
                values: if values.is_empty() { None } else { Some(values.iter().map(|v| v.to_string()).collect()) },
            }]),
            ..LabelSelector::default()
        };
        assert!(selector_matches(&expr("In", &["eu", "us"]), &labels));
        assert!(!selector_matches(&expr("NotIn", &["eu"]), &labels));
        assert!(selector_matches(&expr("Exists", &[]), &labels));
        assert!(!selector_matches(&expr("DoesNotExist", &[]), &labels));
    }
}
