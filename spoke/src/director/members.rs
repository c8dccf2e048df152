//! The member state machine as a pure function: from the cluster's spec, its last status
//! and the pods observed, compute the next status and what to create or delete. Upstream
//! KubeDirector's rules: no role changes while a member is `creating`; a role grows only
//! when none of its members is being deleted; shrinking removes the highest ordinals; node
//! ids are never reused; a changed container id sends a member back through setup.

use std::collections::{BTreeMap, BTreeSet};

use kdfed_crds::cluster::{KubeDirectorClusterStatus, MemberStatus, NotificationDesc, RoleStatus, StateRollup};

use super::names;

/// Member waiting for its pod.
pub const CREATE_PENDING: &str = "create pending";
/// Member being set up.
pub const CREATING: &str = "creating";
/// Member set up.
pub const CONFIGURED: &str = "configured";
/// Member whose setup failed.
pub const CONFIG_ERROR: &str = "config error";
/// Member about to be removed (others are told first).
pub const DELETE_PENDING: &str = "delete pending";
/// Member being removed.
pub const DELETING: &str = "deleting";
/// Cluster state before it is first configured.
pub const CLUSTER_CREATING: &str = "creating";
/// Cluster state while members change.
pub const CLUSTER_UPDATING: &str = "updating";
/// Cluster state when every member is set up.
pub const CLUSTER_CONFIGURED: &str = "configured";

/// What the director saw of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// Pod phase.
    pub phase: String,
    /// Ready condition is True.
    pub ready: bool,
    /// Id of the `app` container, once it has one.
    pub app_container_id: Option<String>,
    /// `running`, `waiting` or `terminated` (the app container's state).
    pub app_state: Option<String>,
    /// The init container has not finished.
    pub initializing: bool,
    /// The pod is being deleted.
    pub deleting: bool,
    /// Why the scheduler could not place it, if it could not.
    pub unschedulable: Option<String>,
}

/// A role as the spec asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleWanted {
    /// Role id.
    pub id: String,
    /// Members wanted.
    pub members: i32,
    /// Whether members get a PVC.
    pub storage: bool,
    /// Whether members get a Service.
    pub ports: bool,
    /// Whether members run a setup package.
    pub setup_package: bool,
    /// Whether members get file injections.
    pub file_injections: bool,
    /// Lifecycle events the role's setup package asks for (`addnodes`, `delnodes`, ...).
    pub events: Vec<String>,
}

impl RoleWanted {
    /// Whether setting a member up takes exec steps inside it.
    pub fn needs_exec(&self) -> bool {
        self.setup_package || self.file_injections
    }

    fn wants(&self, event: &str) -> bool {
        self.setup_package && self.events.iter().any(|e| e == event)
    }
}

/// Lifecycle event: members were added to a role.
pub const ADDNODES: &str = "addnodes";
/// Lifecycle event: members are about to be removed from a role.
pub const DELNODES: &str = "delnodes";

/// Where a member's setup (file injections, setup package) stands after this pass's exec steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetupOutcome {
    /// Started or still running; look again later.
    Running,
    /// Finished successfully.
    Done,
    /// Failed; the text goes to `stateDetail.configErrorDetail`.
    Failed(String),
    /// The container changed under the setup.
    Interrupted,
    /// Not started yet, waiting for the member (e.g. systemd not yet responsive); the text
    /// goes to `stateDetail.setupDetail` and a Normal Event.
    Waiting(String),
    /// A step could not run (exec refused, timed out, streams broke); retried next pass. The
    /// text goes to `stateDetail.setupDetail` and a Warning Event.
    Retrying(String),
}

/// Fixed facts about the cluster the planner needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFacts {
    /// Cluster name.
    pub name: String,
    /// Cluster UID (seeds generated names).
    pub uid: String,
    /// `UID` or `CrNameRole`.
    pub naming_scheme: String,
    /// Keep a removed member's PVC.
    pub retain_pvcs_when_scaled: bool,
    /// Namespace (for FQDNs).
    pub namespace: String,
    /// Cluster service domain base, e.g. `.svc.cluster.local`.
    pub domain_base: String,
}

/// A Kubernetes Event to record on the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Warning rather than Normal.
    pub warning: bool,
    /// `Cluster`, `Role` or `Member` (upstream's reasons).
    pub reason: &'static str,
    /// Message.
    pub message: String,
}

/// The next status and the changes to make.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Status to write.
    pub status: KubeDirectorClusterStatus,
    /// StatefulSets to apply: name → (role, replicas).
    pub statefulsets: BTreeMap<String, (String, i32)>,
    /// StatefulSets to delete.
    pub delete_statefulsets: Vec<String>,
    /// Member Services to apply: (role, pod).
    pub member_services: Vec<(String, String)>,
    /// Services to delete.
    pub delete_services: Vec<String>,
    /// PVCs to delete.
    pub delete_pvcs: Vec<String>,
    /// Events to record.
    pub events: Vec<PlannedEvent>,
    /// Every member is set up and nothing is changing.
    pub settled: bool,
}

fn counts_as_current(state: &str) -> bool {
    matches!(state, CONFIGURED | CONFIG_ERROR | CREATE_PENDING)
}

fn runs_pod(state: &str) -> bool {
    matches!(state, CREATE_PENDING | CREATING | CONFIGURED | CONFIG_ERROR)
}

fn container_state(pod: Option<&PodView>) -> &'static str {
    match pod {
        None => "absent",
        Some(p) => match p.app_state.as_deref() {
            Some("running") if p.ready => "running",
            Some("running") => "unresponsive",
            Some("terminated") => "terminated",
            Some("waiting") if p.initializing => "initializing",
            Some("waiting") => "waiting",
            _ if p.initializing => "initializing",
            _ => "unknown",
        },
    }
}

/// Computes the next status from the last one, the wanted roles and the observed pods, for
/// roles whose setup needs no exec steps.
pub fn plan(
    facts: &ClusterFacts,
    wanted: &[RoleWanted],
    old: &KubeDirectorClusterStatus,
    pods: &BTreeMap<String, PodView>,
    existing_statefulsets: &BTreeSet<String>,
) -> Plan {
    plan_with_setup(facts, wanted, old, pods, existing_statefulsets, &BTreeMap::new())
}

/// The notification `startscript` gets when members of `role` are added or removed.
pub fn notification(event: &str, role: &str, fqdns: &[String]) -> NotificationDesc {
    NotificationDesc {
        arguments: vec![
            format!("--{event}"),
            "--nodegroup".into(),
            "1".into(),
            "--role".into(),
            role.to_string(),
            "--fqdns".into(),
            fqdns.join(","),
        ],
    }
}

/// Queues one notification per changed role to every configured member of the roles that
/// ask for `event`, except the members the news is about.
fn queue(
    status: &mut KubeDirectorClusterStatus,
    wanted: &[RoleWanted],
    event: &str,
    changed: &BTreeMap<String, Vec<(String, String)>>,
) {
    let subjects: BTreeSet<&str> = changed.values().flatten().map(|(pod, _)| pod.as_str()).collect();
    let mut deliveries: Vec<(String, NotificationDesc)> = Vec::new();
    for role in &status.roles {
        if !wanted.iter().any(|w| w.id == role.id && w.wants(event)) {
            continue;
        }
        for m in role.members.iter().filter(|m| m.state == CONFIGURED && !subjects.contains(m.pod.as_str())) {
            for (changed_role, members) in changed {
                let fqdns: Vec<String> = members.iter().map(|(_, f)| f.clone()).collect();
                deliveries.push((m.pod.clone(), notification(event, changed_role, &fqdns)));
            }
        }
    }
    for (pod, cmd) in deliveries {
        if let Some(m) = status.roles.iter_mut().flat_map(|r| r.members.iter_mut()).find(|m| m.pod == pod) {
            m.state_detail.pending_notify_cmds.push(cmd);
        }
    }
}

/// FQDNs that a configured member still has to hear about through `--delnodes`.
fn awaiting_delnodes(status: &KubeDirectorClusterStatus) -> BTreeSet<String> {
    status
        .roles
        .iter()
        .flat_map(|r| &r.members)
        .filter(|m| m.state == CONFIGURED)
        .flat_map(|m| &m.state_detail.pending_notify_cmds)
        .filter(|c| c.arguments.first().map(String::as_str) == Some("--delnodes"))
        .filter_map(|c| c.arguments.last())
        .flat_map(|list| list.split(','))
        .map(str::to_string)
        .collect()
}

/// Records that a member's first `count` pending notifications were delivered.
pub fn notifications_delivered(status: &mut KubeDirectorClusterStatus, pod: &str, count: usize) {
    if let Some(m) = status.roles.iter_mut().flat_map(|r| r.members.iter_mut()).find(|m| m.pod == pod) {
        let n = count.min(m.state_detail.pending_notify_cmds.len());
        m.state_detail.pending_notify_cmds.drain(..n);
    }
}

/// Records that a member has the configmeta of `generation`.
pub fn configmeta_written(status: &mut KubeDirectorClusterStatus, pod: &str, generation: i64) {
    if let Some(m) = status.roles.iter_mut().flat_map(|r| r.members.iter_mut()).find(|m| m.pod == pod) {
        m.state_detail.last_config_data_generation = Some(generation);
    }
}

/// Computes the next status from the last one, the wanted roles, the observed pods and the
/// outcome of this pass's setup steps (by pod).
pub fn plan_with_setup(
    facts: &ClusterFacts,
    wanted: &[RoleWanted],
    old: &KubeDirectorClusterStatus,
    pods: &BTreeMap<String, PodView>,
    existing_statefulsets: &BTreeSet<String>,
    setup: &BTreeMap<String, SetupOutcome>,
) -> Plan {
    let mut plan = Plan { status: old.clone(), ..Plan::default() };
    let st = &mut plan.status;
    if st.cluster_service.as_deref().is_none_or(str::is_empty) {
        st.cluster_service = Some(names::headless_service(&facts.uid));
    }
    let mut events: Vec<PlannedEvent> = Vec::new();
    if st.state.is_none() {
        st.state = Some(CLUSTER_CREATING.to_string());
        st.spec_generation_to_process = Some(0);
        events.push(PlannedEvent { warning: false, reason: "Cluster", message: "new".into() });
    }

    // Container checks: a new container id in a set-up member means it restarted.
    for role in &mut st.roles {
        let role_storage = wanted.iter().find(|w| w.id == role.id).is_some_and(|w| w.storage);
        for m in &mut role.members {
            let pod = pods.get(&m.pod);
            m.state_detail.last_known_container_state = Some(container_state(pod).to_string());
            m.state_detail.scheduling_error_message = pod.and_then(|p| p.unschedulable.clone());
            if m.state == CONFIGURED || m.state == CONFIG_ERROR {
                let current = pod.and_then(|p| p.app_container_id.clone()).unwrap_or_default();
                let last = m.state_detail.last_configured_container.clone().unwrap_or_default();
                if current != last {
                    m.state = CREATE_PENDING.to_string();
                    let message = if role_storage && m.pvc.is_some() {
                        format!("container ID has changed for member{{{}}}; will re-check setup", m.pod)
                    } else {
                        m.state_detail.last_config_data_generation = None;
                        m.state_detail.last_setup_generation = None;
                        m.state_detail.pending_notify_cmds.clear();
                        format!(
                            "container ID has changed for member{{{}}}; no persistent storage, will re-run setup",
                            m.pod
                        )
                    };
                    events.push(PlannedEvent { warning: false, reason: "Member", message });
                }
            }
        }
    }

    // Roles: create, grow, shrink, finish. Nothing changes while a member is being set up.
    let gate = st.roles.iter().flat_map(|r| &r.members).any(|m| m.state == CREATING);
    let mut changed = false;
    let mut order: Vec<RoleWanted> = wanted.to_vec();
    for role in &st.roles {
        if !order.iter().any(|w| w.id == role.id) {
            order.push(RoleWanted {
                id: role.id.clone(),
                members: 0,
                storage: false,
                ports: false,
                setup_package: false,
                file_injections: false,
                events: Vec::new(),
            });
        }
    }
    let mut remove_roles: Vec<String> = Vec::new();
    for want in &order {
        let index = st.roles.iter().position(|r| r.id == want.id);
        let Some(index) = index else {
            if want.members > 0 && !gate {
                let sts = names::statefulset(&facts.naming_scheme, &facts.name, &facts.uid, &want.id);
                events.push(PlannedEvent {
                    warning: false,
                    reason: "Role",
                    message: format!("creating role{{{}}}", want.id),
                });
                let fresh = RoleStatus { id: want.id.clone(), stateful_set: sts, ..RoleStatus::default() };
                let (role_status, next_node) = grow(fresh, want, st.last_node_id.unwrap_or(0));
                st.roles.push(role_status);
                st.last_node_id = Some(next_node);
                changed = true;
            }
            continue;
        };
        if gate {
            continue;
        }
        let role = &mut st.roles[index];
        if role.members.is_empty() && want.members == 0 {
            if existing_statefulsets.contains(&role.stateful_set) {
                plan.delete_statefulsets.push(role.stateful_set.clone());
            }
            events.push(PlannedEvent {
                warning: false,
                reason: "Role",
                message: format!("finishing cleanup on role{{{}}}", want.id),
            });
            remove_roles.push(role.id.clone());
            continue;
        }
        role.members.sort_by_key(|m| names::ordinal(&m.pod).unwrap_or(usize::MAX));
        let current = role.members.iter().filter(|m| counts_as_current(&m.state)).count() as i32;
        let removing = role.members.iter().any(|m| m.state == DELETE_PENDING || m.state == DELETING);
        if want.members > current && !removing {
            events.push(PlannedEvent {
                warning: false,
                reason: "Role",
                message: format!("expanding role{{{}}}", want.id),
            });
            let (grown, next_node) = grow(role.clone(), want, st.last_node_id.unwrap_or(0));
            *role = grown;
            st.last_node_id = Some(next_node);
            changed = true;
        } else if want.members < current {
            events.push(PlannedEvent {
                warning: false,
                reason: "Role",
                message: format!("shrinking role{{{}}}", want.id),
            });
            let mut keep = want.members.max(0) as usize;
            for m in role.members.iter_mut() {
                if !counts_as_current(&m.state) {
                    continue;
                }
                if keep > 0 {
                    keep -= 1;
                    continue;
                }
                m.state = if m.state == CREATE_PENDING { DELETING.to_string() } else { DELETE_PENDING.to_string() };
            }
            changed = true;
        }
    }
    st.roles.retain(|r| !remove_roles.contains(&r.id));

    // Members: move each one along.
    let headless = st.cluster_service.clone().unwrap_or_default();
    let fqdn_of = |pod: &str| names::fqdn(pod, &headless, &facts.namespace, &facts.domain_base);
    let mut remove_members: Vec<(String, String)> = Vec::new();
    let mut added: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut removed: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for role in &mut st.roles {
        let want = order.iter().find(|w| w.id == role.id);
        let needs_exec = want.is_some_and(RoleWanted::needs_exec);
        let setup_package = want.is_some_and(|w| w.setup_package);
        for m in &mut role.members {
            let pod = pods.get(&m.pod);
            match m.state.as_str() {
                CREATE_PENDING => {
                    if let Some(p) = pod.filter(|p| p.phase == "Running" && !p.deleting)
                        && let Some(id) = &p.app_container_id
                    {
                        m.state_detail.configuring_container = Some(id.clone());
                        m.state = CREATING.to_string();
                        if m.state_detail.config_error_detail.take().is_some() {
                            // Upstream: a failed member whose container changed starts over.
                            m.state_detail.last_setup_generation = None;
                            m.state_detail.pending_notify_cmds.clear();
                            events.push(PlannedEvent {
                                warning: false,
                                reason: "Member",
                                message: format!(
                                    "member{{{}}} was previously in config error state; re-trying setup",
                                    m.pod
                                ),
                            });
                        }
                    }
                }
                CREATING => {
                    let current = pod.and_then(|p| p.app_container_id.clone());
                    let outcome = setup.get(&m.pod);
                    if current.is_none()
                        || current != m.state_detail.configuring_container
                        || outcome == Some(&SetupOutcome::Interrupted)
                    {
                        m.state = CREATE_PENDING.to_string();
                        events.push(PlannedEvent {
                            warning: false,
                            reason: "Member",
                            message: format!("previous setup for member{{{}}} interrupted; re-trying setup", m.pod),
                        });
                        continue;
                    }
                    let first_time = m.state_detail.last_configured_container.as_deref().is_none_or(str::is_empty);
                    match (needs_exec, outcome) {
                        (true, Some(SetupOutcome::Waiting(detail) | SetupOutcome::Retrying(detail))) => {
                            if m.state_detail.setup_detail.as_ref() != Some(detail) {
                                events.push(PlannedEvent {
                                    warning: matches!(outcome, Some(SetupOutcome::Retrying(_))),
                                    reason: "Member",
                                    message: detail.clone(),
                                });
                                m.state_detail.setup_detail = Some(detail.clone());
                            }
                            continue;
                        }
                        (true, Some(SetupOutcome::Running)) => {
                            m.state_detail.setup_detail = None;
                            continue;
                        }
                        (true, None | Some(SetupOutcome::Interrupted)) => continue,
                        // Without a setup package a member is configured once its pod is Ready.
                        (false, _) if !pod.is_some_and(|p| p.ready) => continue,
                        (true, Some(SetupOutcome::Failed(detail))) => {
                            m.state = CONFIG_ERROR.to_string();
                            m.state_detail.config_error_detail = Some(detail.clone());
                            events.push(PlannedEvent {
                                warning: true,
                                reason: "Member",
                                message: format!(
                                    "failed to run initial config for member{{{}}} in role{{{}}}",
                                    m.pod, role.id
                                ),
                            });
                        }
                        (true, Some(SetupOutcome::Done)) | (false, _) => {
                            m.state = CONFIGURED.to_string();
                            m.state_detail.config_error_detail = None;
                            let message = if setup_package {
                                format!("initial config done for member{{{}}} in role{{{}}}", m.pod, role.id)
                            } else {
                                format!("initial config skipped for member{{{}}} in role{{{}}}", m.pod, role.id)
                            };
                            events.push(PlannedEvent { warning: false, reason: "Member", message });
                            // Restarted members are not news to the others.
                            if first_time {
                                added.entry(role.id.clone()).or_default().push((m.pod.clone(), fqdn_of(&m.pod)));
                            }
                        }
                    }
                    m.state_detail.setup_detail = None;
                    m.state_detail.last_configured_container = m.state_detail.configuring_container.take();
                    m.state_detail.last_setup_generation = st.spec_generation_to_process;
                    m.state_detail.last_config_data_generation = st.spec_generation_to_process;
                }
                DELETE_PENDING => {
                    removed.entry(role.id.clone()).or_default().push((m.pod.clone(), fqdn_of(&m.pod)));
                    m.state_detail.pending_notify_cmds.clear();
                    m.state = DELETING.to_string();
                }
                DELETING if pod.is_none() => {
                    if !m.service.is_empty() && m.service != names::NO_SERVICE {
                        plan.delete_services.push(m.service.clone());
                    }
                    if let Some(pvc) = m.pvc.clone().filter(|p| !p.is_empty())
                        && !facts.retain_pvcs_when_scaled
                    {
                        plan.delete_pvcs.push(pvc);
                    }
                    remove_members.push((role.id.clone(), m.pod.clone()));
                }
                _ => {}
            }
        }
    }
    // Tell the others: about new members once they are configured, about leaving members
    // before they go (their pods stay until every `--delnodes` naming them is delivered).
    if !added.is_empty() {
        queue(st, &order, ADDNODES, &added);
    }
    if !removed.is_empty() {
        queue(st, &order, DELNODES, &removed);
    }
    for role in &mut st.roles {
        role.members.retain(|m| !remove_members.contains(&(role.id.clone(), m.pod.clone())));
    }

    // Objects: StatefulSets sized to the members that run pods (including leaving members
    // whose `--delnodes` is not delivered yet); Services for the members that stay.
    let awaiting = awaiting_delnodes(st);
    for role in &mut st.roles {
        for m in &mut role.members {
            m.fqdn = Some(fqdn_of(&m.pod));
        }
        let replicas = role
            .members
            .iter()
            .filter(|m| {
                runs_pod(&m.state) || (m.state == DELETING && m.fqdn.as_ref().is_some_and(|f| awaiting.contains(f)))
            })
            .count() as i32;
        plan.statefulsets.insert(role.stateful_set.clone(), (role.id.clone(), replicas));
        let ports = order.iter().find(|w| w.id == role.id).is_some_and(|w| w.ports);
        for m in &mut role.members {
            if !runs_pod(&m.state) {
                continue;
            }
            if ports {
                m.service = names::member_service(&m.pod);
                plan.member_services.push((role.id.clone(), m.pod.clone()));
            } else {
                m.service = names::NO_SERVICE.to_string();
            }
        }
    }

    // Roll-up, counts and the cluster's state.
    let members: Vec<&MemberStatus> = st.roles.iter().flat_map(|r| &r.members).collect();
    let mut rollup = StateRollup::default();
    for m in &members {
        let restarted = m.state_detail.last_configured_container.as_deref().is_some_and(|c| !c.is_empty());
        let container = m.state_detail.last_known_container_state.as_deref().unwrap_or("unknown");
        match m.state.as_str() {
            CREATE_PENDING | CREATING if restarted => rollup.members_restarting = true,
            CREATE_PENDING | CREATING => rollup.membership_changing = true,
            DELETE_PENDING | DELETING => rollup.membership_changing = true,
            CONFIG_ERROR => rollup.config_errors = true,
            _ => {}
        }
        if matches!(m.state.as_str(), CREATING | CONFIGURED | DELETE_PENDING | CONFIG_ERROR)
            && matches!(container, "terminated" | "unresponsive" | "absent")
        {
            rollup.members_down = true;
        }
        if container == "waiting"
            || (m.state == CREATE_PENDING && container == "absent")
            || m.state_detail.scheduling_error_message.is_some()
        {
            rollup.members_waiting = true;
        }
        if container == "initializing" {
            rollup.members_initializing = true;
        }
    }
    let configured = members.iter().filter(|m| m.state == CONFIGURED).count();
    st.members_ready = Some(format!("{configured}/{}", members.len()));
    st.member_state_rollup = Some(rollup);
    if changed {
        st.spec_generation_to_process = Some(st.spec_generation_to_process.unwrap_or(0) + 1);
    }
    // Configured members of roles with a setup package must also have the configmeta of
    // the current spec generation (a connection change bumps it without membership changes).
    let generation = st.spec_generation_to_process;
    let stale = st.roles.iter().any(|r| {
        order.iter().any(|w| w.id == r.id && w.setup_package)
            && r.members.iter().any(|m| {
                m.state == CONFIGURED
                    && m.state_detail.last_config_data_generation.is_some()
                    && m.state_detail.last_config_data_generation != generation
            })
    });
    let all_set_up = members.iter().all(|m| m.state == CONFIGURED || m.state == CONFIG_ERROR)
        && members.iter().all(|m| m.state_detail.pending_notify_cmds.is_empty())
        && !stale;
    let roles_complete = order.iter().all(|w| {
        let have = st.roles.iter().find(|r| r.id == w.id).map_or(0, |r| r.members.len() as i32);
        have == w.members
    });
    let settled = !changed && all_set_up && roles_complete && plan.delete_statefulsets.is_empty();
    let previous = st.state.clone().unwrap_or_default();
    if settled {
        if previous != CLUSTER_CONFIGURED {
            events.push(PlannedEvent { warning: false, reason: "Cluster", message: "stable".into() });
        }
        st.state = Some(CLUSTER_CONFIGURED.to_string());
    } else if previous != CLUSTER_CREATING {
        st.state = Some(CLUSTER_UPDATING.to_string());
    }
    plan.settled = settled;
    plan.events.extend(events);
    plan
}

/// Appends members to `role` until it has `want.members` current ones; returns the role and
/// the last node id handed out.
fn grow(mut role: RoleStatus, want: &RoleWanted, mut last_node: i64) -> (RoleStatus, i64) {
    let current = role.members.iter().filter(|m| counts_as_current(&m.state)).count() as i32;
    for _ in current..want.members {
        let ordinal = role.members.iter().filter_map(|m| names::ordinal(&m.pod)).max().map_or(0, |o| o + 1);
        let pod = names::pod(&role.stateful_set, ordinal);
        last_node += 1;
        role.members.push(MemberStatus {
            pvc: want.storage.then(|| names::member_pvc(&pod)),
            pod,
            service: String::new(),
            state: CREATE_PENDING.to_string(),
            node_id: last_node,
            ..MemberStatus::default()
        });
    }
    (role, last_node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(retain: bool) -> ClusterFacts {
        ClusterFacts {
            name: "c".into(),
            uid: "uid".into(),
            naming_scheme: "UID".into(),
            retain_pvcs_when_scaled: retain,
            namespace: "ns".into(),
            domain_base: ".svc.cluster.local".into(),
        }
    }

    fn want(members: i32) -> Vec<RoleWanted> {
        vec![RoleWanted {
            id: "w".into(),
            members,
            storage: true,
            ports: true,
            setup_package: false,
            file_injections: false,
            events: Vec::new(),
        }]
    }

    fn running(status: &KubeDirectorClusterStatus, tag: &str) -> BTreeMap<String, PodView> {
        status
            .roles
            .iter()
            .flat_map(|r| &r.members)
            .map(|m| {
                let view = PodView {
                    phase: "Running".into(),
                    ready: true,
                    app_container_id: Some(format!("id-{}-{tag}", m.pod)),
                    app_state: Some("running".into()),
                    ..PodView::default()
                };
                (m.pod.clone(), view)
            })
            .collect()
    }

    fn states(status: &KubeDirectorClusterStatus) -> Vec<&str> {
        status.roles.iter().flat_map(|r| &r.members).map(|m| m.state.as_str()).collect()
    }

    /// Plans until nothing changes, with every member's pod running.
    fn settle(f: &ClusterFacts, w: &[RoleWanted], mut status: KubeDirectorClusterStatus) -> Plan {
        for _ in 0..10 {
            let pods = running(&status, "a");
            let plan = plan(f, w, &status, &pods, &BTreeSet::new());
            if plan.settled {
                return plan;
            }
            status = plan.status;
        }
        panic!("did not settle: {status:#?}");
    }

    #[test]
    fn without_a_setup_package_a_member_waits_for_its_pod_to_be_ready() {
        let first =
            plan(&facts(false), &want(1), &KubeDirectorClusterStatus::default(), &BTreeMap::new(), &BTreeSet::new());
        let mut pods = running(&first.status, "a");
        pods.values_mut().for_each(|p| p.ready = false);
        let mut status = first.status;
        for _ in 0..3 {
            status = plan(&facts(false), &want(1), &status, &pods, &BTreeSet::new()).status;
        }
        assert_eq!(states(&status), vec![CREATING], "Running but not Ready");
        pods.values_mut().for_each(|p| p.ready = true);
        let ready = plan(&facts(false), &want(1), &status, &pods, &BTreeSet::new());
        assert_eq!(states(&ready.status), vec![CONFIGURED]);
    }

    #[test]
    fn a_new_cluster_creates_members_then_configures_them() {
        let first =
            plan(&facts(false), &want(2), &KubeDirectorClusterStatus::default(), &BTreeMap::new(), &BTreeSet::new());
        assert_eq!(first.status.state.as_deref(), Some(CLUSTER_CREATING));
        assert_eq!(states(&first.status), vec![CREATE_PENDING, CREATE_PENDING]);
        let sts = &first.status.roles[0].stateful_set;
        assert_eq!(first.statefulsets.get(sts), Some(&("w".to_string(), 2)));
        assert_eq!(first.status.roles[0].members[1].pvc.as_deref(), Some(format!("p-{sts}-1").as_str()));
        assert_eq!(first.status.last_node_id, Some(2));
        let fqdn = first.status.roles[0].members[0].fqdn.clone().unwrap_or_default();
        assert!(fqdn.starts_with(&format!("{sts}-0.kdhs-")) && fqdn.ends_with(".ns.svc.cluster.local"), "{fqdn}");
        let done = settle(&facts(false), &want(2), first.status);
        assert_eq!(done.status.state.as_deref(), Some(CLUSTER_CONFIGURED));
        assert_eq!(states(&done.status), vec![CONFIGURED, CONFIGURED]);
        assert_eq!(done.status.members_ready.as_deref(), Some("2/2"));
    }

    #[test]
    fn roles_do_not_change_while_a_member_is_creating() {
        let first =
            plan(&facts(false), &want(1), &KubeDirectorClusterStatus::default(), &BTreeMap::new(), &BTreeSet::new());
        let pods = running(&first.status, "a");
        let creating = plan(&facts(false), &want(1), &first.status, &pods, &BTreeSet::new());
        assert_eq!(states(&creating.status), vec![CREATING]);
        // Simulate the member still creating (setup running) while the user asks for 3.
        let mut status = creating.status.clone();
        status.roles[0].members[0].state = CREATING.into();
        let mut pods = running(&status, "a");
        pods.values_mut()
            .for_each(|p| p.app_container_id = status.roles[0].members[0].state_detail.configuring_container.clone());
        let gated = plan(&facts(false), &want(3), &status, &pods, &BTreeSet::new());
        assert_eq!(gated.status.roles[0].members.len(), 1, "no expansion while creating");
        let grown = plan(&facts(false), &want(3), &gated.status, &running(&gated.status, "a"), &BTreeSet::new());
        assert_eq!(grown.status.roles[0].members.len(), 3);
        assert_eq!(grown.status.state.as_deref(), Some(CLUSTER_CREATING), "still creating until first configured");
    }

    #[test]
    fn shrinking_removes_the_highest_ordinals_and_their_objects() {
        let done = settle(&facts(false), &want(3), KubeDirectorClusterStatus::default());
        let sts = done.status.roles[0].stateful_set.clone();
        let shrink = plan(&facts(false), &want(1), &done.status, &running(&done.status, "a"), &BTreeSet::new());
        assert_eq!(states(&shrink.status), vec![CONFIGURED, DELETING, DELETING]);
        assert_eq!(shrink.statefulsets.get(&sts).map(|(_, n)| *n), Some(1));
        // Pods 1 and 2 are gone now.
        let mut pods = running(&shrink.status, "a");
        pods.retain(|name, _| name.ends_with("-0"));
        let cleaned = plan(&facts(false), &want(1), &shrink.status, &pods, &BTreeSet::new());
        assert_eq!(states(&cleaned.status), vec![CONFIGURED]);
        assert_eq!(cleaned.delete_services, vec![format!("s-{sts}-1"), format!("s-{sts}-2")]);
        assert_eq!(cleaned.delete_pvcs, vec![format!("p-{sts}-1"), format!("p-{sts}-2")]);
        let kept = plan(&facts(true), &want(1), &shrink.status, &pods, &BTreeSet::new());
        assert!(kept.delete_pvcs.is_empty(), "whenScaled: Retain keeps PVCs");
        let again = plan(&facts(false), &want(3), &cleaned.status, &pods, &BTreeSet::new());
        let ids: Vec<i64> = again.status.roles[0].members.iter().map(|m| m.node_id).collect();
        assert_eq!(ids, vec![1, 4, 5], "node ids are never reused");
    }

    #[test]
    fn a_new_container_sends_a_member_back_through_setup() {
        let done = settle(&facts(false), &want(1), KubeDirectorClusterStatus::default());
        let restarted = plan(&facts(false), &want(1), &done.status, &running(&done.status, "b"), &BTreeSet::new());
        assert_eq!(states(&restarted.status), vec![CREATING], "create pending, then creating in the same pass");
        assert!(restarted.events.iter().any(|e| e.message.contains("container ID has changed")));
        assert!(restarted.status.member_state_rollup.as_ref().is_some_and(|r| r.members_restarting));
        assert_eq!(restarted.status.state.as_deref(), Some(CLUSTER_UPDATING));
        let again =
            plan(&facts(false), &want(1), &restarted.status, &running(&restarted.status, "b"), &BTreeSet::new());
        assert_eq!(states(&again.status), vec![CONFIGURED]);
        assert_eq!(again.status.state.as_deref(), Some(CLUSTER_CONFIGURED));
    }

    #[test]
    fn a_role_at_zero_is_cleaned_up() {
        let done = settle(&facts(false), &want(1), KubeDirectorClusterStatus::default());
        let sts = done.status.roles[0].stateful_set.clone();
        let shrink = plan(&facts(false), &want(0), &done.status, &running(&done.status, "a"), &BTreeSet::new());
        let gone = plan(&facts(false), &want(0), &shrink.status, &BTreeMap::new(), &BTreeSet::from([sts.clone()]));
        assert!(gone.status.roles[0].members.is_empty());
        let finished = plan(&facts(false), &want(0), &gone.status, &BTreeMap::new(), &BTreeSet::from([sts.clone()]));
        assert!(finished.status.roles.is_empty());
        assert_eq!(finished.delete_statefulsets, vec![sts]);
    }

    fn package_roles(workers: i32) -> Vec<RoleWanted> {
        let role = |id: &str, members: i32, events: &[&str]| RoleWanted {
            id: id.into(),
            members,
            storage: false,
            ports: false,
            setup_package: true,
            file_injections: false,
            events: events.iter().map(|e| e.to_string()).collect(),
        };
        vec![role("c", 1, &[ADDNODES, DELNODES]), role("w", workers, &[])]
    }

    /// Plans until settled, every member's setup reporting `Done`; delivers notifications.
    fn settle_with_setup(w: &[RoleWanted], mut status: KubeDirectorClusterStatus) -> Plan {
        for _ in 0..10 {
            let pods = running(&status, "a");
            let done: BTreeMap<String, SetupOutcome> = pods.keys().map(|p| (p.clone(), SetupOutcome::Done)).collect();
            let mut plan = plan_with_setup(&facts(false), w, &status, &pods, &BTreeSet::new(), &done);
            if plan.settled {
                return plan;
            }
            let pending: Vec<(String, usize)> = plan
                .status
                .roles
                .iter()
                .flat_map(|r| &r.members)
                .map(|m| (m.pod.clone(), m.state_detail.pending_notify_cmds.len()))
                .collect();
            let generation = plan.status.spec_generation_to_process.unwrap_or(0);
            for (pod, n) in pending {
                notifications_delivered(&mut plan.status, &pod, n);
                configmeta_written(&mut plan.status, &pod, generation);
            }
            status = plan.status;
        }
        panic!("did not settle: {status:#?}");
    }

    fn member<'a>(status: &'a KubeDirectorClusterStatus, role: &str, i: usize) -> &'a MemberStatus {
        &status.roles.iter().find(|r| r.id == role).expect("role").members[i]
    }

    #[test]
    fn setup_outcomes_decide_the_member_state() {
        let w = package_roles(1);
        let first = plan(&facts(false), &w, &KubeDirectorClusterStatus::default(), &BTreeMap::new(), &BTreeSet::new());
        let creating = plan(&facts(false), &w, &first.status, &running(&first.status, "a"), &BTreeSet::new());
        assert_eq!(states(&creating.status), vec![CREATING, CREATING]);
        let pods = running(&creating.status, "a");
        let c0 = member(&creating.status, "c", 0).pod.clone();
        let w0 = member(&creating.status, "w", 0).pod.clone();
        let outcomes = BTreeMap::from([(c0, SetupOutcome::Running), (w0, SetupOutcome::Failed("boom".into()))]);
        let next = plan_with_setup(&facts(false), &w, &creating.status, &pods, &BTreeSet::new(), &outcomes);
        assert_eq!(states(&next.status), vec![CREATING, CONFIG_ERROR]);
        assert_eq!(member(&next.status, "w", 0).state_detail.config_error_detail.as_deref(), Some("boom"));
        let still = plan(&facts(false), &w, &next.status, &pods, &BTreeSet::new());
        assert_eq!(states(&still.status)[0], CREATING, "no outcome: setup goes on");
    }

    #[test]
    fn waiting_and_retrying_setups_stay_creating_with_a_detail() {
        let w = package_roles(1);
        let first = plan(&facts(false), &w, &KubeDirectorClusterStatus::default(), &BTreeMap::new(), &BTreeSet::new());
        let creating = plan(&facts(false), &w, &first.status, &running(&first.status, "a"), &BTreeSet::new());
        let pods = running(&creating.status, "a");
        let c0 = member(&creating.status, "c", 0).pod.clone();
        let w0 = member(&creating.status, "w", 0).pod.clone();
        let outcomes = BTreeMap::from([
            (c0.clone(), SetupOutcome::Waiting(format!("systemd not yet responsive in member{{{c0}}}"))),
            (w0.clone(), SetupOutcome::Retrying("exec in pod w: no answer within 30s; will retry".into())),
        ]);
        let next = plan_with_setup(&facts(false), &w, &creating.status, &pods, &BTreeSet::new(), &outcomes);
        assert_eq!(states(&next.status), vec![CREATING, CREATING]);
        let detail = member(&next.status, "c", 0).state_detail.setup_detail.clone();
        assert_eq!(detail, Some(format!("systemd not yet responsive in member{{{c0}}}")));
        let warned: Vec<bool> = next.events.iter().filter(|e| e.reason == "Member").map(|e| e.warning).collect();
        assert_eq!(warned, vec![false, true], "systemd is news, a failed exec a warning");
        let again = plan_with_setup(&facts(false), &w, &next.status, &pods, &BTreeSet::new(), &outcomes);
        assert!(again.events.iter().all(|e| e.reason != "Member"), "no repeated Events while nothing changes");
        let done: BTreeMap<String, SetupOutcome> = pods.keys().map(|p| (p.clone(), SetupOutcome::Done)).collect();
        let finished = plan_with_setup(&facts(false), &w, &again.status, &pods, &BTreeSet::new(), &done);
        assert_eq!(states(&finished.status), vec![CONFIGURED, CONFIGURED]);
        assert!(finished.status.roles.iter().flat_map(|r| &r.members).all(|m| m.state_detail.setup_detail.is_none()));
    }

    #[test]
    fn a_cluster_with_stale_configmeta_is_not_settled() {
        let done = settle_with_setup(&package_roles(1), KubeDirectorClusterStatus::default());
        let mut bumped = done.status.clone();
        bumped.spec_generation_to_process = bumped.spec_generation_to_process.map(|g| g + 1);
        let pods = running(&bumped, "a");
        let next = plan(&facts(false), &package_roles(1), &bumped, &pods, &BTreeSet::new());
        assert!(!next.settled, "members have not seen the new configmeta");
        assert_eq!(next.status.state.as_deref(), Some(CLUSTER_UPDATING));
        let mut fresh = next.status.clone();
        let generation = fresh.spec_generation_to_process.unwrap_or(0);
        for pod in pods.keys() {
            configmeta_written(&mut fresh, pod, generation);
        }
        assert!(plan(&facts(false), &package_roles(1), &fresh, &pods, &BTreeSet::new()).settled);
    }

    #[test]
    fn new_members_are_announced_to_roles_that_ask() {
        let done = settle_with_setup(&package_roles(1), KubeDirectorClusterStatus::default());
        let mut status = done.status.clone();
        let grown = plan(&facts(false), &package_roles(3), &status, &running(&status, "a"), &BTreeSet::new());
        status = grown.status;
        let pods = running(&status, "a");
        let creating = plan(&facts(false), &package_roles(3), &status, &pods, &BTreeSet::new());
        let all: BTreeMap<String, SetupOutcome> = pods.keys().map(|p| (p.clone(), SetupOutcome::Done)).collect();
        let configured =
            plan_with_setup(&facts(false), &package_roles(3), &creating.status, &pods, &BTreeSet::new(), &all);
        let news = &member(&configured.status, "c", 0).state_detail.pending_notify_cmds;
        let fqdns = format!(
            "{},{}",
            member(&configured.status, "w", 1).fqdn.clone().unwrap_or_default(),
            member(&configured.status, "w", 2).fqdn.clone().unwrap_or_default()
        );
        assert_eq!(news.len(), 1);
        assert_eq!(news[0].arguments, vec!["--addnodes", "--nodegroup", "1", "--role", "w", "--fqdns", fqdns.as_str()]);
        assert!(member(&configured.status, "w", 0).state_detail.pending_notify_cmds.is_empty(), "w asked for nothing");
        assert!(!configured.settled, "not settled while notifications are pending");
    }

    #[test]
    fn leaving_members_keep_their_pods_until_delnodes_is_delivered() {
        let done = settle_with_setup(&package_roles(3), KubeDirectorClusterStatus::default());
        let w_sts = done.status.roles.iter().find(|r| r.id == "w").map(|r| r.stateful_set.clone()).unwrap_or_default();
        let shrink =
            plan(&facts(false), &package_roles(1), &done.status, &running(&done.status, "a"), &BTreeSet::new());
        let w_states: Vec<&str> = shrink
            .status
            .roles
            .iter()
            .find(|r| r.id == "w")
            .expect("w")
            .members
            .iter()
            .map(|m| m.state.as_str())
            .collect();
        assert_eq!(w_states, vec![CONFIGURED, DELETING, DELETING]);
        let news = &member(&shrink.status, "c", 0).state_detail.pending_notify_cmds;
        assert_eq!(news.len(), 1);
        assert_eq!(news[0].arguments[0], "--delnodes");
        assert_eq!(shrink.statefulsets.get(&w_sts).map(|(_, n)| *n), Some(3), "pods stay until delivery");
        let again =
            plan(&facts(false), &package_roles(1), &shrink.status, &running(&shrink.status, "a"), &BTreeSet::new());
        assert_eq!(again.statefulsets.get(&w_sts).map(|(_, n)| *n), Some(3), "still waiting");
        let mut delivered = again.status.clone();
        let c0 = member(&delivered, "c", 0).pod.clone();
        notifications_delivered(&mut delivered, &c0, 1);
        let after = plan(&facts(false), &package_roles(1), &delivered, &running(&delivered, "a"), &BTreeSet::new());
        assert_eq!(after.statefulsets.get(&w_sts).map(|(_, n)| *n), Some(1), "delivered: the pods go");
    }
}
