//! A cluster as its user watches it: the row of the cluster list (state, member cluster,
//! Ready and the first condition that is not well, as `kdfed cluster list` says it) and
//! the cluster page (members per role with their state, endpoints, setup failures, Events,
//! "last seen" when its member cluster is unreachable, and what may be changed).

use kdfed_common::conditions::{condition, summary};
use kdfed_crds::app::{Cardinality, KubeDirectorAppSpec};
use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster};
use kube::ResourceExt;

use super::catalog::ChoiceView;

/// A cluster's row in the list, and the head of its page.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClusterRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// App name.
    pub app: String,
    /// The member cluster it is placed on, or `-`.
    pub member: String,
    /// The director's state (or a live upgrade's progress), or `-`.
    pub state: String,
    /// `ready/total` members, or `-`.
    pub ready: String,
    /// `Ready`, or the first condition that is not well.
    pub summary: String,
    /// Whether the cluster is Ready.
    pub is_ready: bool,
    /// "last seen at T" when the member cluster is not known to be available.
    pub last_seen: Option<String>,
}

/// The list row of `c`.
pub fn row(c: &KubeDirectorCluster) -> ClusterRow {
    let status = c.status.clone().unwrap_or_default();
    let unavailable = condition(&status.conditions, "MemberAvailable").is_some_and(|k| k.status != "True");
    ClusterRow {
        namespace: c.namespace().unwrap_or_default(),
        name: c.name_any(),
        app: c.spec.app.clone(),
        member: status.placement.as_ref().map_or_else(|| "-".into(), |p| p.member.clone()),
        state: status
            .upgrade
            .as_ref()
            .and_then(|u| u.progress())
            .or(status.state.clone())
            .unwrap_or_else(|| "-".into()),
        ready: status.members_ready.clone().unwrap_or_else(|| "-".into()),
        summary: summary(&status.conditions),
        is_ready: condition(&status.conditions, "Ready").is_some_and(|k| k.status == "True"),
        last_seen: unavailable.then(|| match &status.member_status_time {
            Some(t) => format!("member unreachable; last seen at {}", t.0.strftime("%Y-%m-%d %H:%M:%S UTC")),
            None => "member unreachable; never seen".to_string(),
        }),
    }
}

/// One member of a role.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MemberView {
    /// Pod name.
    pub pod: String,
    /// State (`configured`, `config error`, ...).
    pub state: String,
    /// The setup package's failure tail when the member is in `config error`.
    pub failure: Option<String>,
}

/// A role with its members and the count the user may change.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RoleMembers {
    /// Role id.
    pub id: String,
    /// Members asked for in the spec (absent: the app's minimum).
    pub wanted: i32,
    /// Fewest members allowed.
    pub min: i32,
    /// Most members allowed, when fixed.
    pub max: Option<i32>,
    /// Members as the status reports them.
    pub members: Vec<MemberView>,
}

/// A service endpoint of one member.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EndpointView {
    /// Role id.
    pub role: String,
    /// Pod of the member.
    pub pod: String,
    /// Service id (and display name).
    pub service: String,
    /// URL scheme, may be empty.
    pub scheme: String,
    /// Host name inside the member cluster.
    pub host: String,
    /// Port.
    pub port: i32,
    /// The URL of a dashboard (`isDashboard`), opened as a link.
    pub url: Option<String>,
}

/// The cluster page.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPage {
    /// The list row.
    pub row: ClusterRow,
    /// Members per role.
    pub roles: Vec<RoleMembers>,
    /// Endpoints of every member.
    pub endpoints: Vec<EndpointView>,
    /// Config choices in effect (`id=value`).
    pub choices: Vec<(String, String)>,
    /// Choices a running cluster may change, with the value in effect.
    pub mutable_choices: Vec<(ChoiceView, String)>,
    /// Apps the cluster may be upgraded (or rolled back) to.
    pub upgrade_targets: Vec<String>,
    /// What deleting does to the data.
    pub deletion: String,
    /// Conditions: type, status, reason, message.
    pub conditions: Vec<[String; 4]>,
}

/// The page of `c`, with its app (when the user may read it) and the apps of its catalog.
pub fn page(c: &KubeDirectorCluster, app: Option<&KubeDirectorApp>, catalog: &[KubeDirectorApp]) -> ClusterPage {
    let status = c.status.clone().unwrap_or_default();
    let roles = roles(c, app.map(|a| &a.spec));
    let endpoints = app.map(|a| endpoints(c, &a.spec)).unwrap_or_default();
    let in_effect =
        if status.config_choices.is_empty() { c.spec.config_choices.clone() } else { status.config_choices };
    let mutable_choices = app
        .map(|a| super::catalog::app_view(a, ""))
        .map(|v| v.choices)
        .unwrap_or_default()
        .into_iter()
        .filter(|ch| ch.mutable)
        .map(|ch| {
            let value = in_effect.get(&ch.id).cloned().unwrap_or_else(|| ch.default.clone());
            (ch, value)
        })
        .collect();
    let catalog_apps: Vec<kdfed_crds::upgrade::CatalogApp<'_>> = catalog
        .iter()
        .filter_map(|a| Some(kdfed_crds::upgrade::CatalogApp { name: a.metadata.name.as_deref()?, spec: &a.spec }))
        .collect();
    let upgrade_targets = kdfed_crds::upgrade::allowed_apps(&c.spec.app, c.status.as_ref(), &catalog_apps)
        .into_iter()
        .map(String::from)
        .collect();
    ClusterPage {
        row: row(c),
        roles,
        endpoints,
        choices: in_effect.into_iter().collect(),
        mutable_choices,
        upgrade_targets,
        deletion: deletion_text(c),
        conditions: status
            .conditions
            .iter()
            .map(|k| [k.type_.clone(), k.status.clone(), k.reason.clone(), k.message.clone()])
            .collect(),
    }
}

/// What deleting the cluster does to its data, from its PVC retention policy
/// (docs/director.md).
pub fn deletion_text(c: &KubeDirectorCluster) -> String {
    if c.spec.retain_pvcs_when_deleted() {
        "Its members are removed; their persistent volume claims are KEPT (persistentVolumeClaimRetentionPolicy.whenDeleted: Retain), so the data stays on the member cluster until an administrator deletes the claims.".into()
    } else {
        "Its members are removed and their persistent volume claims are DELETED with them (retention policy whenDeleted: Delete, the default): the data on their persistent directories is lost.".into()
    }
}

fn roles(c: &KubeDirectorCluster, app: Option<&KubeDirectorAppSpec>) -> Vec<RoleMembers> {
    let status = c.status.clone().unwrap_or_default();
    c.spec
        .roles
        .iter()
        .map(|r| {
            let card = app.and_then(|a| a.role(&r.id)).and_then(|ar| Cardinality::parse(&ar.cardinality));
            let min = card.as_ref().map_or(0, |k| k.min);
            let members = status
                .roles
                .iter()
                .find(|s| s.id == r.id)
                .map(|s| {
                    s.members
                        .iter()
                        .map(|m| MemberView {
                            pod: m.pod.clone(),
                            state: m.state.clone(),
                            failure: (m.state == "config error")
                                .then(|| m.state_detail.config_error_detail.clone().unwrap_or_default()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            RoleMembers {
                id: r.id.clone(),
                wanted: r.members.unwrap_or(min),
                min,
                max: card.as_ref().filter(|k| !k.scale_out).map(|k| k.min),
                members,
            }
        })
        .collect()
}

/// Every service endpoint of every member: the services the role runs (with the cluster's
/// choices), at the member's host inside its member cluster.
fn endpoints(c: &KubeDirectorCluster, app: &KubeDirectorAppSpec) -> Vec<EndpointView> {
    let Some(status) = &c.status else { return Vec::new() };
    let chosen = kdfed_crds::choices::chosen_app(app, &c.spec.config_choices);
    let namespace = c.namespace().unwrap_or_default();
    let mut out = Vec::new();
    for role in &status.roles {
        for member in &role.members {
            let host = member.fqdn.clone().unwrap_or_else(|| format!("{}.{namespace}.svc", member.service));
            for service in chosen.role_services(&role.id) {
                let Some(endpoint) = &service.endpoint else { continue };
                let Some(port) = endpoint.port else { continue };
                let scheme = endpoint.url_scheme.clone().unwrap_or_default();
                let path = endpoint.path.clone().unwrap_or_default();
                // Only web schemes become links: an app's `urlScheme` is free text.
                let url = (endpoint.is_dashboard == Some(true) && matches!(scheme.as_str(), "http" | "https"))
                    .then(|| format!("{scheme}://{host}:{port}{path}"));
                out.push(EndpointView {
                    role: role.id.clone(),
                    pod: member.pod.clone(),
                    service: service.label.as_ref().map_or_else(|| service.id.clone(), |l| l.name.clone()),
                    scheme,
                    host: host.clone(),
                    port,
                    url,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::catalog::tests::greeter;
    use super::*;
    use serde_json::json;

    fn cluster(status: serde_json::Value) -> KubeDirectorCluster {
        serde_json::from_value(json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "hello", "namespace": "team-a"},
            "spec": {"app": "greeter", "roles": [{"id": "head"}, {"id": "worker", "members": 3}],
                     "configChoices": {"language": "en"}},
            "status": status
        }))
        .expect("cluster")
    }

    fn running() -> serde_json::Value {
        json!({
            "state": "configured", "membersReady": "3/4",
            "placement": {"member": "east", "epoch": 1},
            "memberStatusTime": "2026-12-01T10:00:00Z",
            "configChoices": {"language": "en", "size": "s"},
            "conditions": [
                {"type": "Placed", "status": "True", "reason": "Scheduled", "message": "", "lastTransitionTime": "2026-12-01T09:00:00Z"},
                {"type": "Ready", "status": "False", "reason": "Reconciling", "message": "1 member not ready", "lastTransitionTime": "2026-12-01T09:00:00Z"}
            ],
            "roles": [
                {"id": "head", "statefulSet": "kdss-1", "members": [
                    {"pod": "kdss-1-0", "service": "s-kdss-1-0", "state": "configured", "nodeID": 1,
                     "fqdn": "kdss-1-0.kdhs-1.team-a.svc.cluster.local", "stateDetail": {}}]},
                {"id": "worker", "statefulSet": "kdss-2", "members": [
                    {"pod": "kdss-2-0", "service": "s-kdss-2-0", "state": "config error", "nodeID": 2,
                     "stateDetail": {"configErrorDetail": "line 9: exit 3"}}]}
            ]
        })
    }

    #[test]
    fn a_row_says_state_member_and_the_first_condition_not_well() {
        let r = row(&cluster(running()));
        assert_eq!((r.member.as_str(), r.state.as_str(), r.ready.as_str()), ("east", "configured", "3/4"));
        assert_eq!(r.summary, "Ready=False Reconciling: 1 member not ready");
        assert!(!r.is_ready);
        assert_eq!(r.last_seen, None, "no MemberAvailable problem");
        let fresh = row(&cluster(json!(null)));
        assert_eq!((fresh.member.as_str(), fresh.state.as_str(), fresh.summary.as_str()), ("-", "-", "-"));
    }

    #[test]
    fn an_unreachable_member_shows_when_it_was_last_seen() {
        let mut status = running();
        status["conditions"].as_array_mut().expect("list").push(json!({"type": "MemberAvailable", "status": "Unknown",
            "reason": "HeartbeatMissed", "message": "no heartbeat", "lastTransitionTime": "2026-12-01T10:01:00Z"}));
        let r = row(&cluster(status));
        assert_eq!(r.last_seen.as_deref(), Some("member unreachable; last seen at 2026-12-01 10:00:00 UTC"));
        assert_eq!(r.summary, "MemberAvailable=Unknown HeartbeatMissed: no heartbeat");
    }

    #[test]
    fn the_page_lists_members_endpoints_failures_and_what_may_change() {
        let app = greeter();
        let mut next = greeter();
        next.metadata.name = Some("greeter-3".into());
        next.spec.upgrade_from = vec!["greeter".into()];
        let p = page(&cluster(running()), Some(&app), &[app.clone(), next]);
        let head = &p.roles[0];
        assert_eq!((head.wanted, head.min, head.max), (1, 1, Some(1)));
        let worker = &p.roles[1];
        assert_eq!((worker.wanted, worker.min, worker.max), (3, 2, None));
        assert_eq!(worker.members[0].failure.as_deref(), Some("line 9: exit 3"));
        assert_eq!(head.members[0].failure, None);
        let web = p.endpoints.iter().find(|e| e.service == "Web UI").expect("web endpoint");
        assert_eq!(web.url.as_deref(), Some("http://kdss-1-0.kdhs-1.team-a.svc.cluster.local:8080"));
        let ssh: Vec<_> = p.endpoints.iter().filter(|e| e.service == "ssh").collect();
        assert_eq!(ssh.len(), 2, "every member's ssh");
        assert!(ssh.iter().all(|e| e.url.is_none() && e.port == 22));
        assert_eq!(ssh[1].host, "s-kdss-2-0.team-a.svc", "the member's service without an fqdn");
        assert_eq!(p.choices, [("language".to_string(), "en".to_string()), ("size".to_string(), "s".to_string())]);
        assert_eq!(p.mutable_choices.len(), 1);
        assert_eq!((p.mutable_choices[0].0.id.as_str(), p.mutable_choices[0].1.as_str()), ("language", "en"));
        assert_eq!(p.upgrade_targets, ["greeter-3"]);
        assert!(p.deletion.contains("DELETED"), "{}", p.deletion);
    }

    #[test]
    fn only_web_dashboards_become_links() {
        let mut app = greeter();
        if let Some(endpoint) = app.spec.services[0].endpoint.as_mut() {
            endpoint.url_scheme = Some("javascript".into());
            endpoint.path = Some("/%0aalert(1)".into());
        }
        let p = page(&cluster(running()), Some(&app), &[]);
        let web = p.endpoints.iter().find(|e| e.service == "Web UI").expect("web endpoint");
        assert_eq!((web.scheme.as_str(), web.url.as_deref()), ("javascript", None));
    }

    #[test]
    fn deletion_says_when_the_data_is_kept() {
        let mut c = cluster(running());
        c.spec.persistent_volume_claim_retention_policy =
            Some(kdfed_crds::cluster::PvcRetentionPolicy { when_deleted: Some("Retain".into()), when_scaled: None });
        assert!(deletion_text(&c).contains("KEPT"));
    }
}
