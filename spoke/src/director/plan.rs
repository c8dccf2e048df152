//! The plan step, pure: from the resolved spec, the last status, what was observed and the
//! outcome of this pass's setup steps, the next status (members, roles, auth tokens,
//! queued notifications, the connection version) and the changes to the cluster's
//! objects. No API calls: everything here is unit-tested without a server.

use std::collections::{BTreeMap, BTreeSet};

use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus};
use kdfed_crds::config::KubeDirectorConfigSpec;
use kdfed_crds::defaults;
use kdfed_crds::resolve::Resolved;
use kube::ResourceExt;

use super::apply::Change;
use super::build::{self, BuildError, Inputs};
use super::claims::{self, ClaimView, Scene};
use super::members::{self, ClusterFacts, PodView, RoleWanted, SetupOutcome};
use super::{connections, names};

/// What the resolved spec asks of the director, derived once per pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The cluster's fixed facts (names, namespace, domain).
    pub facts: ClusterFacts,
    /// The roles as the spec asks for them, in spec order.
    pub roles: Vec<RoleWanted>,
    /// Roles with a service endpoint that has an auth token.
    pub token_roles: BTreeSet<String>,
    /// kdfed: the value of each config choice (empty for apps without choices).
    pub choices: BTreeMap<String, String>,
}

impl Desired {
    /// The wanted role `id`, if the spec lists it.
    pub fn role(&self, id: &str) -> Option<&RoleWanted> {
        self.roles.iter().find(|w| w.id == id)
    }
}

/// Derives what the director wants of `cluster` from its resolved spec.
pub fn desired(cluster: &KubeDirectorCluster, resolved: &Resolved, config: Option<&KubeDirectorConfigSpec>) -> Desired {
    // The app as the cluster's choices make it: its role services are the active ones.
    let (spec, app) = (&resolved.cluster, &resolved.chosen);
    let facts = ClusterFacts {
        name: cluster.name_any(),
        uid: cluster.metadata.uid.clone().unwrap_or_default(),
        naming_scheme: spec.naming_scheme.clone().unwrap_or_default(),
        retain_pvcs_when_scaled: spec.retain_pvcs_when_scaled(),
        namespace: cluster.namespace().unwrap_or_else(|| "default".into()),
        domain_base: config
            .and_then(|c| c.cluster_svc_domain_base.clone())
            .unwrap_or_else(|| defaults::DEFAULT_SVC_DOMAIN_BASE.to_string()),
    };
    let roles = spec
        .roles
        .iter()
        .map(|r| {
            let app_role = app.role(&r.id);
            RoleWanted {
                id: r.id.clone(),
                members: resolved.members(&r.id),
                storage: r.storage.is_some(),
                ports: !build::exposed_ports(app, &r.id).is_empty(),
                setup_package: app_role.is_some_and(build::has_setup_package),
                file_injections: !r.file_injections.is_empty(),
                // No list means every event (upstream's default).
                events: app_role
                    .and_then(|a| a.event_list.clone())
                    .unwrap_or_else(|| kdfed_crds::validate::EVENTS.iter().map(|e| e.to_string()).collect()),
            }
        })
        .collect();
    let token_roles = spec
        .roles
        .iter()
        .filter(|r| {
            resolved.services(&r.id).iter().any(|s| s.endpoint.as_ref().is_some_and(|e| e.has_auth_token == Some(true)))
        })
        .map(|r| r.id.clone())
        .collect();
    Desired { facts, roles, token_roles, choices: resolved.choices.clone() }
}

/// Where the cluster's connections stand this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionState {
    /// The hash of what `spec.connections` names, as observed this pass.
    pub hash: String,
    /// The connection version (`hashChangeCounter`) members are brought up to.
    pub version: i64,
    /// The hash changed from a previous one this pass (the first hash is no change).
    pub changed: bool,
}

/// The plan of one pass: the members' plan and how many auth tokens it generated.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPlan {
    /// Next status, objects to size and delete, Events, whether the cluster is settled.
    pub members: members::Plan,
    /// Auth tokens generated this pass.
    pub tokens_generated: usize,
}

/// What the director observed of the cluster's objects.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    /// Pods by name.
    pub pods: &'a BTreeMap<String, PodView>,
    /// StatefulSet names.
    pub statefulsets: &'a BTreeSet<String>,
    /// This pass's setup outcomes by pod.
    pub setup: &'a BTreeMap<String, SetupOutcome>,
    /// The claims labelled with the cluster.
    pub claims: &'a [ClaimView],
}

/// Plans the pass: members and roles ([`members::plan_with_setup`]), then the connection
/// version ([`follow_connections`]), then auth tokens for members of token roles, each from
/// `new_token`.
pub fn plan(
    desired: &Desired,
    old: &KubeDirectorClusterStatus,
    seen: Seen<'_>,
    connections: &ConnectionState,
    new_token: impl FnMut() -> String,
) -> ClusterPlan {
    let mut plan =
        members::plan_with_setup(&desired.facts, &desired.roles, old, seen.pods, seen.statefulsets, seen.setup);
    follow_connections(&mut plan, connections);
    follow_choices(&mut plan, &desired.choices);
    let tokens_generated = connections::assign_auth_tokens(&mut plan.status, &desired.token_roles, new_token);
    ClusterPlan { members: plan, tokens_generated }
}

/// Deletes the stray claims ([`claims::strays`]) of the plan as it stands after the live
/// upgrade step, each with a Normal Event.
pub fn sweep_claims(plan: &mut ClusterPlan, desired: &Desired, old: &KubeDirectorClusterStatus, seen: Seen<'_>) {
    let scene = Scene {
        facts: &desired.facts,
        wanted: &desired.roles,
        old,
        next: &plan.members.status,
        pods: seen.pods,
        statefulsets: seen.statefulsets,
        claims: seen.claims,
    };
    let strays = claims::strays(scene);
    claims::sweep(&mut plan.members, strays);
}

/// Records the connections hash; a changed one means a pass that is not settled (the new
/// spec generation is already in the status, written when the hash was recorded; this pass
/// announces it). Members configured from now on start at the current connection version.
fn follow_connections(plan: &mut members::Plan, connections: &ConnectionState) {
    plan.status.last_connection_hash = Some(connections.hash.clone());
    if connections.changed {
        plan.settled = false;
        plan.events.retain(|e| !(e.reason == "Cluster" && e.message == "stable"));
        if plan.status.state.as_deref() != Some(members::CLUSTER_CREATING) {
            plan.status.state = Some(members::CLUSTER_UPDATING.to_string());
        }
    }
    for m in plan.status.roles.iter_mut().flat_map(|r| r.members.iter_mut()) {
        if m.state == members::CONFIGURED && m.state_detail.last_connection_version.is_none() {
            m.state_detail.last_connection_version = Some(connections.version);
        }
    }
}

/// Records the config choices in effect in the status. A change from the ones recorded (a
/// mutable choice changed) is a new spec generation, announced like a connections change:
/// configured members get fresh configmeta and `startscript --reconfigure`, and the pass is
/// not settled. Configured members that recorded no choices yet take the previous ones.
fn follow_choices(plan: &mut members::Plan, choices: &BTreeMap<String, String>) {
    if choices.is_empty() {
        return;
    }
    let previous = std::mem::replace(&mut plan.status.config_choices, choices.clone());
    let changed = !previous.is_empty() && &previous != choices;
    let stamp = if previous.is_empty() { choices.clone() } else { previous };
    for m in plan.status.roles.iter_mut().flat_map(|r| r.members.iter_mut()) {
        if m.state == members::CONFIGURED && m.state_detail.last_config_choices.is_empty() {
            m.state_detail.last_config_choices = stamp.clone();
        }
    }
    if changed {
        let status = &mut plan.status;
        status.spec_generation_to_process = Some(status.spec_generation_to_process.unwrap_or(0) + 1);
        if status.state.as_deref() != Some(members::CLUSTER_CREATING) {
            status.state = Some(members::CLUSTER_UPDATING.to_string());
        }
        plan.settled = false;
        plan.events.retain(|e| !(e.reason == "Cluster" && e.message == "stable"));
        let message = format!("config choices now {}", kdfed_crds::choices::described(choices));
        plan.events.push(members::PlannedEvent { warning: false, reason: "Cluster", message });
    }
}

/// The changes that bring the cluster's objects to the plan, in order: headless Service,
/// StatefulSets, member Services (with their auth tokens); then deletions.
pub fn changes(
    inputs: &Inputs<'_>,
    plan: &members::Plan,
    existing_statefulsets: &BTreeSet<String>,
    token_roles: &BTreeSet<String>,
) -> Result<Vec<Change>, BuildError> {
    let spec = inputs.spec;
    let mut out = vec![Change::HeadlessService(inputs.headless.to_string(), inputs.headless_service()?)];
    for (sts_name, (role_id, replicas)) in &plan.statefulsets {
        match spec.roles.iter().find(|r| &r.id == role_id) {
            Some(role) => out
                .push(Change::StatefulSet(sts_name.clone(), Box::new(inputs.statefulset(role, sts_name, *replicas)?))),
            // A role removed from the spec keeps its StatefulSet, scaled down, until its
            // members are gone.
            None if existing_statefulsets.contains(sts_name) => {
                out.push(Change::Scale { name: sts_name.clone(), replicas: *replicas });
            }
            None => {}
        }
    }
    for (role_id, pod) in &plan.member_services {
        let Some(role) = spec.roles.iter().find(|r| &r.id == role_id) else { continue };
        let Some(mut svc) = inputs.member_service(role, pod)? else { continue };
        if token_roles.contains(role_id)
            && let Some(token) = member_token(&plan.status, pod)
        {
            svc.metadata.annotations.get_or_insert_default().insert(names::ANNOTATION_AUTH_TOKEN.into(), token);
        }
        out.push(Change::MemberService(names::member_service(pod), svc));
    }
    out.extend(plan.delete_statefulsets.iter().cloned().map(Change::DeleteStatefulSet));
    out.extend(plan.delete_services.iter().cloned().map(Change::DeleteService));
    out.extend(plan.delete_pvcs.iter().cloned().map(Change::DeletePvc));
    Ok(out)
}

/// The auth token recorded for a member, if any.
fn member_token(status: &KubeDirectorClusterStatus, pod: &str) -> Option<String> {
    status
        .roles
        .iter()
        .flat_map(|r| &r.members)
        .find(|m| m.pod == pod)
        .and_then(|m| m.auth_token.clone())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kdfed_crds::KubeDirectorApp;

    use super::*;

    fn example<T: serde::de::DeserializeOwned>(rel: &str) -> T {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(rel);
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse")
    }

    /// The spark example (controller 1, worker 3, jupyter 1 with an auth token), resolved.
    fn spark() -> (KubeDirectorCluster, Resolved) {
        let app: KubeDirectorApp = example("apps/spark.yaml");
        let mut cluster: KubeDirectorCluster = example("clusters/spark.yaml");
        cluster.metadata.namespace = Some("ns".into());
        cluster.metadata.uid = Some("uid-1".into());
        let resolved = kdfed_crds::resolve(&app.spec, &cluster.spec, None).expect("valid");
        (cluster, resolved)
    }

    fn connections(changed: bool) -> ConnectionState {
        ConnectionState { hash: "h2".into(), version: 4, changed }
    }

    fn seen_nothing<'a>(
        pods: &'a BTreeMap<String, PodView>,
        statefulsets: &'a BTreeSet<String>,
        setup: &'a BTreeMap<String, SetupOutcome>,
    ) -> Seen<'a> {
        Seen { pods, statefulsets, setup, claims: &[] }
    }

    #[test]
    fn desired_roles_follow_the_resolved_spec_and_app() {
        let (cluster, resolved) = spark();
        let desired = desired(&cluster, &resolved, None);
        assert_eq!(desired.facts.name, "spark-analytics");
        assert_eq!(desired.facts.namespace, "ns");
        assert_eq!(desired.facts.naming_scheme, "CrNameRole");
        assert_eq!(desired.facts.domain_base, defaults::DEFAULT_SVC_DOMAIN_BASE);
        let roles: Vec<(&str, i32, bool, bool)> =
            desired.roles.iter().map(|r| (r.id.as_str(), r.members, r.storage, r.setup_package)).collect();
        assert_eq!(roles, vec![("controller", 1, true, true), ("worker", 3, false, true), ("jupyter", 1, false, true)]);
        let jupyter = desired.role("jupyter").expect("jupyter");
        assert_eq!(jupyter.events, vec!["addnodes", "delnodes", "reconnect"]);
        let app_default = resolved.app.role("worker").and_then(|r| r.event_list.clone());
        assert_eq!(desired.role("worker").map(|w| w.events.clone()), app_default, "the app's defaultEventList");
        assert_eq!(desired.token_roles, BTreeSet::from(["jupyter".to_string()]));
        let config = KubeDirectorConfigSpec { cluster_svc_domain_base: Some(".example".into()), ..Default::default() };
        assert_eq!(super::desired(&cluster, &resolved, Some(&config)).facts.domain_base, ".example");
    }

    #[test]
    fn a_first_plan_creates_every_member_and_gives_token_roles_tokens() {
        let (cluster, resolved) = spark();
        let desired = desired(&cluster, &resolved, None);
        let (pods, sts, setup) = (BTreeMap::new(), BTreeSet::new(), BTreeMap::new());
        let mut n = 0;
        let planned =
            plan(&desired, &Default::default(), seen_nothing(&pods, &sts, &setup), &connections(false), || {
                n += 1;
                format!("token-{n}")
            });
        assert_eq!(planned.tokens_generated, 1, "one jupyter member");
        assert_eq!(planned.members.status.last_connection_hash.as_deref(), Some("h2"));
        let tokens: Vec<(&str, Option<&str>)> = planned
            .members
            .status
            .roles
            .iter()
            .flat_map(|r| r.members.iter().map(move |m| (r.id.as_str(), m.auth_token.as_deref())))
            .filter(|(_, t)| t.is_some())
            .collect();
        assert_eq!(tokens, vec![("jupyter", Some("token-1"))]);
        assert_eq!(planned.members.statefulsets.len(), 3);
    }

    #[test]
    fn a_connections_change_unsettles_the_plan_and_stamps_configured_members() {
        let mut settled = members::Plan { settled: true, ..members::Plan::default() };
        settled.status.state = Some(members::CLUSTER_CONFIGURED.into());
        settled.events.push(members::PlannedEvent { warning: false, reason: "Cluster", message: "stable".into() });
        settled.status.roles.push(kdfed_crds::cluster::RoleStatus {
            id: "w".into(),
            members: vec![
                kdfed_crds::cluster::MemberStatus {
                    pod: "w-0".into(),
                    state: members::CONFIGURED.into(),
                    ..Default::default()
                },
                kdfed_crds::cluster::MemberStatus {
                    pod: "w-1".into(),
                    state: members::CREATING.into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let mut quiet = settled.clone();
        follow_connections(&mut quiet, &connections(false));
        assert!(quiet.settled && quiet.events.len() == 1, "no change: the plan stands");
        assert_eq!(quiet.status.roles[0].members[0].state_detail.last_connection_version, Some(4));
        assert_eq!(quiet.status.roles[0].members[1].state_detail.last_connection_version, None, "not configured");
        let mut changed = settled;
        follow_connections(&mut changed, &connections(true));
        assert!(!changed.settled && changed.events.is_empty(), "the change is announced, not 'stable'");
        assert_eq!(changed.status.state.as_deref(), Some(members::CLUSTER_UPDATING));
        assert_eq!(changed.status.last_connection_hash.as_deref(), Some("h2"));
    }

    #[test]
    fn changes_list_services_statefulsets_tokens_then_deletions() {
        let (cluster, resolved) = spark();
        let desired = desired(&cluster, &resolved, None);
        let (pods, sts, setup) = (BTreeMap::new(), BTreeSet::new(), BTreeMap::new());
        let seen = seen_nothing(&pods, &sts, &setup);
        let mut planned = plan(&desired, &Default::default(), seen, &connections(false), || "t".into()).members;
        planned.statefulsets.insert("kdss-gone".into(), ("gone".into(), 1));
        planned.statefulsets.insert("kdss-never".into(), ("never".into(), 0));
        planned.delete_services.push("s-old-0".into());
        planned.delete_pvcs.push("p-old-0".into());
        let headless = planned.status.cluster_service.clone().unwrap_or_default();
        let inputs = Inputs {
            cluster: &cluster,
            spec: &resolved.cluster,
            app_name: &cluster.spec.app,
            app: &resolved.app,
            config: None,
            app_catalog: "local",
            headless: &headless,
        };
        let existing = BTreeSet::from(["kdss-gone".to_string()]);
        let changes = changes(&inputs, &planned, &existing, &desired.token_roles).expect("builds");
        let kinds: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::HeadlessService(name, _) => format!("headless {name}"),
                Change::StatefulSet(name, _) => format!("sts {}", name.split('-').nth(2).unwrap_or(name)),
                Change::Scale { name, replicas } => format!("scale {name} {replicas}"),
                Change::MemberService(..) => "member".into(),
                Change::DeleteStatefulSet(name) => format!("delete sts {name}"),
                Change::DeleteService(name) => format!("delete svc {name}"),
                Change::DeletePvc(name) => format!("delete pvc {name}"),
            })
            .collect();
        let mut expected = vec![format!("headless {headless}"), "scale kdss-gone 1".into()];
        // CrNameRole StatefulSets sort by role name: controller, jupyter, worker.
        expected.extend(["sts controller", "sts jupyter", "sts worker"].map(String::from));
        expected.extend(std::iter::repeat_n("member".to_string(), 5));
        expected.extend(["delete svc s-old-0", "delete pvc p-old-0"].map(String::from));
        assert_eq!(kinds, expected);
        let tokens: Vec<&String> = changes
            .iter()
            .filter_map(|c| match c {
                Change::MemberService(_, svc) => svc.metadata.annotations.as_ref()?.get(names::ANNOTATION_AUTH_TOKEN),
                _ => None,
            })
            .collect();
        assert_eq!(tokens, vec!["t"], "only the jupyter member's Service carries its token");
    }

    #[test]
    fn a_changed_choice_is_a_new_generation_and_configured_members_keep_what_they_saw() {
        let choices = |v: &str| BTreeMap::from([("logLevel".to_string(), v.to_string())]);
        let mut settled = members::Plan { settled: true, ..members::Plan::default() };
        settled.status.state = Some(members::CLUSTER_CONFIGURED.into());
        settled.status.spec_generation_to_process = Some(2);
        settled.status.roles.push(kdfed_crds::cluster::RoleStatus {
            id: "w".into(),
            members: vec![kdfed_crds::cluster::MemberStatus {
                pod: "w-0".into(),
                state: members::CONFIGURED.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut first = settled.clone();
        follow_choices(&mut first, &choices("INFO"));
        assert!(first.settled, "the first choices recorded are no change");
        assert_eq!(first.status.config_choices, choices("INFO"));
        assert_eq!(first.status.roles[0].members[0].state_detail.last_config_choices, choices("INFO"));
        let mut changed = first.clone();
        follow_choices(&mut changed, &choices("DEBUG"));
        assert!(!changed.settled);
        assert_eq!(changed.status.spec_generation_to_process, Some(3));
        assert_eq!(changed.status.state.as_deref(), Some(members::CLUSTER_UPDATING));
        assert_eq!(changed.status.config_choices, choices("DEBUG"));
        assert_eq!(
            changed.status.roles[0].members[0].state_detail.last_config_choices,
            choices("INFO"),
            "the member is told by --reconfigure"
        );
        assert_eq!(changed.events.last().map(|e| e.message.as_str()), Some("config choices now logLevel=DEBUG"));
        let mut plain = settled;
        follow_choices(&mut plain, &BTreeMap::new());
        assert!(plain.status.config_choices.is_empty() && plain.settled, "apps without choices: untouched");
    }

    #[test]
    fn a_settled_plan_deletes_a_stray_claim_with_an_event_and_keeps_the_members_claims() {
        let (cluster, resolved) = spark();
        let desired = desired(&cluster, &resolved, None);
        let mut status = KubeDirectorClusterStatus::default();
        let mut statefulsets = BTreeSet::new();
        let mut settled = false;
        for _ in 0..10 {
            let members = || status.roles.iter().flat_map(|r| &r.members);
            let running = PodView { phase: "Running".into(), ready: true, ..PodView::default() };
            let pods: BTreeMap<String, PodView> = members()
                .map(|m| (m.pod.clone(), PodView { app_container_id: Some(format!("c-{}", m.pod)), ..running.clone() }))
                .collect();
            let setup = members().map(|m| (m.pod.clone(), SetupOutcome::Done)).collect();
            let seen = Seen { pods: &pods, statefulsets: &statefulsets, setup: &setup, claims: &[] };
            let planned = plan(&desired, &status, seen, &connections(false), || "t".into()).members;
            statefulsets.extend(planned.statefulsets.keys().cloned());
            (status, settled) = (planned.status, planned.settled);
            if settled {
                break;
            }
        }
        assert!(settled, "{status:#?}");
        let controller = status.roles.iter().find(|r| r.id == "controller").expect("controller");
        let own = controller.members[0].pvc.clone().expect("the controller member's claim");
        let stray = format!("p-{}-1", controller.stateful_set);
        let claims: Vec<ClaimView> = [&own, &stray]
            .into_iter()
            .map(|name| ClaimView { name: name.clone(), cluster: Some(cluster.name_any()), deleting: false })
            .collect();
        let pods: BTreeMap<String, PodView> = status
            .roles
            .iter()
            .flat_map(|r| &r.members)
            .map(|m| {
                let view =
                    PodView { ready: true, app_container_id: Some(format!("c-{}", m.pod)), ..PodView::default() };
                (m.pod.clone(), view)
            })
            .collect();
        let setup = BTreeMap::new();
        let seen = Seen { pods: &pods, statefulsets: &statefulsets, setup: &setup, claims: &claims };
        let mut planned = plan(&desired, &status, seen, &connections(false), || "t".into());
        assert!(planned.members.delete_pvcs.is_empty(), "the plan alone deletes no claim");
        sweep_claims(&mut planned, &desired, &status, seen);
        assert_eq!(planned.members.delete_pvcs, vec![stray.clone()], "not {own}");
        let said = format!("claim {stray} of ordinal 1 belongs to no member; whenScaled: Delete, so it is deleted");
        assert!(planned.members.events.iter().any(|e| !e.warning && e.message == said), "{:?}", planned.members.events);
    }
}
