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
/// kdfed: member being moved to another app by a live upgrade or rollback (its pod is
/// recreated, then its setup package runs `--upgrade` or `--rollback`).
pub const UPGRADING: &str = "upgrading";
/// kdfed: member whose upgrade (or rollback) script failed; the rollout stopped there.
pub const UPGRADE_ERROR: &str = "upgrade error";
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
    matches!(state, CONFIGURED | CONFIG_ERROR | CREATE_PENDING | UPGRADING | UPGRADE_ERROR)
}

fn runs_pod(state: &str) -> bool {
    matches!(state, CREATE_PENDING | CREATING | CONFIGURED | CONFIG_ERROR | UPGRADING | UPGRADE_ERROR)
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
/// outcome of this pass's setup steps (by pod). The steps, in order, each pure:
/// [`start`] → [`check_containers`] → [`resize_roles`] → [`advance_members`] →
/// [`announce`] → [`size_objects`] → [`conclude`].
pub fn plan_with_setup(
    facts: &ClusterFacts,
    wanted: &[RoleWanted],
    old: &KubeDirectorClusterStatus,
    pods: &BTreeMap<String, PodView>,
    existing_statefulsets: &BTreeSet<String>,
    setup: &BTreeMap<String, SetupOutcome>,
) -> Plan {
    let mut plan = Plan { status: old.clone(), ..Plan::default() };
    start(&mut plan, facts);
    check_containers(&mut plan, wanted, pods);
    // Roles the spec no longer lists are planned as wanted with no members.
    let order = with_removed_roles(wanted, &plan.status);
    let changed = resize_roles(&mut plan, facts, &order, existing_statefulsets);
    let moves = advance_members(&mut plan, facts, &order, pods, setup);
    announce(&mut plan.status, &order, &moves);
    size_objects(&mut plan, facts, &order);
    conclude(&mut plan, &order, changed);
    plan
}

/// Step 1: a cluster seen for the first time gets its headless Service name, the
/// `creating` state and spec generation 0 (and a "new" Event).
fn start(plan: &mut Plan, facts: &ClusterFacts) {
    let st = &mut plan.status;
    if st.cluster_service.as_deref().is_none_or(str::is_empty) {
        st.cluster_service = Some(names::headless_service(&facts.uid));
    }
    if st.state.is_none() {
        st.state = Some(CLUSTER_CREATING.to_string());
        st.spec_generation_to_process = Some(0);
        plan.events.push(PlannedEvent { warning: false, reason: "Cluster", message: "new".into() });
    }
}

/// Step 2: records each member's container state and scheduling error; a set-up member
/// whose app container has a new id restarted and goes back through setup (keeping what
/// its persistent storage keeps).
fn check_containers(plan: &mut Plan, wanted: &[RoleWanted], pods: &BTreeMap<String, PodView>) {
    for role in &mut plan.status.roles {
        let role_storage = wanted.iter().find(|w| w.id == role.id).is_some_and(|w| w.storage);
        for m in &mut role.members {
            let pod = pods.get(&m.pod);
            m.state_detail.last_known_container_state = Some(container_state(pod).to_string());
            m.state_detail.scheduling_error_message = pod.and_then(|p| p.unschedulable.clone());
            if m.state != CONFIGURED && m.state != CONFIG_ERROR {
                continue;
            }
            let current = pod.and_then(|p| p.app_container_id.clone()).unwrap_or_default();
            let last = m.state_detail.last_configured_container.clone().unwrap_or_default();
            if current == last {
                continue;
            }
            m.state = CREATE_PENDING.to_string();
            let message = if role_storage && m.pvc.is_some() {
                format!("container ID has changed for member{{{}}}; will re-check setup", m.pod)
            } else {
                m.state_detail.last_config_data_generation = None;
                m.state_detail.last_setup_generation = None;
                m.state_detail.pending_notify_cmds.clear();
                format!("container ID has changed for member{{{}}}; no persistent storage, will re-run setup", m.pod)
            };
            plan.events.push(PlannedEvent { warning: false, reason: "Member", message });
        }
    }
}

/// The wanted roles, then every role the status has and the spec no longer lists, wanted
/// with no members (so it shrinks and is finished).
fn with_removed_roles(wanted: &[RoleWanted], status: &KubeDirectorClusterStatus) -> Vec<RoleWanted> {
    let mut order = wanted.to_vec();
    for role in &status.roles {
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
    order
}

fn role_event(message: String) -> PlannedEvent {
    PlannedEvent { warning: false, reason: "Role", message }
}

/// Step 3: roles are created, grown, shrunk or finished; nothing changes while a member is
/// being set up. Returns whether membership changed (a new spec generation).
fn resize_roles(
    plan: &mut Plan,
    facts: &ClusterFacts,
    order: &[RoleWanted],
    existing_statefulsets: &BTreeSet<String>,
) -> bool {
    let st = &mut plan.status;
    // Roles do not change under a member being set up or moved by an upgrade either.
    let gate = st.roles.iter().flat_map(|r| &r.members).any(|m| m.state == CREATING || m.state == UPGRADING);
    let mut changed = false;
    let mut finished: Vec<String> = Vec::new();
    for want in order {
        let Some(index) = st.roles.iter().position(|r| r.id == want.id) else {
            if want.members > 0 && !gate {
                let sts = names::statefulset(&facts.naming_scheme, &facts.name, &facts.uid, &want.id);
                plan.events.push(role_event(format!("creating role{{{}}}", want.id)));
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
            plan.events.push(role_event(format!("finishing cleanup on role{{{}}}", want.id)));
            finished.push(role.id.clone());
            continue;
        }
        role.members.sort_by_key(|m| names::ordinal(&m.pod).unwrap_or(usize::MAX));
        let current = role.members.iter().filter(|m| counts_as_current(&m.state)).count() as i32;
        let removing = role.members.iter().any(|m| m.state == DELETE_PENDING || m.state == DELETING);
        if want.members > current && !removing {
            plan.events.push(role_event(format!("expanding role{{{}}}", want.id)));
            let (grown, next_node) = grow(role.clone(), want, st.last_node_id.unwrap_or(0));
            *role = grown;
            st.last_node_id = Some(next_node);
            changed = true;
        } else if want.members < current {
            plan.events.push(role_event(format!("shrinking role{{{}}}", want.id)));
            shrink(role, want.members);
            changed = true;
        }
    }
    st.roles.retain(|r| !finished.contains(&r.id));
    changed
}

/// Marks the current members past the first `keep` (highest ordinals, the members being
/// sorted) for removal: those without a pod yet go at once, the others tell first.
fn shrink(role: &mut RoleStatus, keep: i32) {
    let mut keep = keep.max(0) as usize;
    for m in role.members.iter_mut().filter(|m| counts_as_current(&m.state)) {
        if keep > 0 {
            keep -= 1;
            continue;
        }
        m.state = if m.state == CREATE_PENDING { DELETING.to_string() } else { DELETE_PENDING.to_string() };
    }
}

/// What moving members along this pass means for the others.
#[derive(Debug, Default, PartialEq, Eq)]
struct Moves {
    /// Newly configured members by role: (pod, FQDN).
    added: BTreeMap<String, Vec<(String, String)>>,
    /// Members leaving by role: (pod, FQDN).
    removed: BTreeMap<String, Vec<(String, String)>>,
    /// Members whose pod is gone: (role, pod); they leave the status.
    gone: Vec<(String, String)>,
}

/// Where one member went this pass.
#[derive(Debug, PartialEq, Eq)]
enum Moved {
    /// Nothing the others need to know.
    Quiet,
    /// Configured for the first time.
    Added,
    /// About to leave: the others are told before its pod goes.
    Leaving,
    /// Its pod is gone.
    Gone,
}

/// What a member's role means for its setup.
#[derive(Clone, Copy, Debug)]
struct RoleSetup<'a> {
    id: &'a str,
    needs_exec: bool,
    setup_package: bool,
}

/// Step 4: moves each member one state along; a gone member's Service and (unless
/// retained) PVC are deleted.
fn advance_members(
    plan: &mut Plan,
    facts: &ClusterFacts,
    order: &[RoleWanted],
    pods: &BTreeMap<String, PodView>,
    setup: &BTreeMap<String, SetupOutcome>,
) -> Moves {
    let st = &mut plan.status;
    let headless = st.cluster_service.clone().unwrap_or_default();
    let fqdn_of = |pod: &str| names::fqdn(pod, &headless, &facts.namespace, &facts.domain_base);
    let generation = st.spec_generation_to_process;
    let mut moves = Moves::default();
    for role in &mut st.roles {
        let want = order.iter().find(|w| w.id == role.id);
        let role_setup = RoleSetup {
            id: &role.id,
            needs_exec: want.is_some_and(RoleWanted::needs_exec),
            setup_package: want.is_some_and(|w| w.setup_package),
        };
        for m in &mut role.members {
            let (pod, outcome) = (pods.get(&m.pod), setup.get(&m.pod));
            match advance_member(m, role_setup, pod, outcome, generation, &mut plan.events) {
                Moved::Quiet => {}
                Moved::Added => moves.added.entry(role.id.clone()).or_default().push((m.pod.clone(), fqdn_of(&m.pod))),
                Moved::Leaving => {
                    moves.removed.entry(role.id.clone()).or_default().push((m.pod.clone(), fqdn_of(&m.pod)))
                }
                Moved::Gone => {
                    if !m.service.is_empty() && m.service != names::NO_SERVICE {
                        plan.delete_services.push(m.service.clone());
                    }
                    if let Some(pvc) = m.pvc.clone().filter(|p| !p.is_empty())
                        && !facts.retain_pvcs_when_scaled
                    {
                        plan.delete_pvcs.push(pvc);
                    }
                    moves.gone.push((role.id.clone(), m.pod.clone()));
                }
            }
        }
    }
    moves
}

/// One member's next state from its pod and its setup outcome.
fn advance_member(
    m: &mut MemberStatus,
    role: RoleSetup<'_>,
    pod: Option<&PodView>,
    outcome: Option<&SetupOutcome>,
    generation: Option<i64>,
    events: &mut Vec<PlannedEvent>,
) -> Moved {
    match m.state.as_str() {
        CREATE_PENDING => {
            start_setup(m, pod, events);
            Moved::Quiet
        }
        CREATING => finish_setup(m, role, pod, outcome, generation, events),
        DELETE_PENDING => {
            m.state_detail.pending_notify_cmds.clear();
            m.state = DELETING.to_string();
            Moved::Leaving
        }
        DELETING if pod.is_none() => Moved::Gone,
        _ => Moved::Quiet,
    }
}

fn member_event(warning: bool, message: String) -> PlannedEvent {
    PlannedEvent { warning, reason: "Member", message }
}

/// A member waiting for its pod starts setup once the pod runs with an app container.
fn start_setup(m: &mut MemberStatus, pod: Option<&PodView>, events: &mut Vec<PlannedEvent>) {
    let Some(id) = pod.filter(|p| p.phase == "Running" && !p.deleting).and_then(|p| p.app_container_id.as_ref()) else {
        return;
    };
    m.state_detail.configuring_container = Some(id.clone());
    m.state = CREATING.to_string();
    if m.state_detail.config_error_detail.take().is_some() {
        // Upstream: a failed member whose container changed starts over.
        m.state_detail.last_setup_generation = None;
        m.state_detail.pending_notify_cmds.clear();
        let message = format!("member{{{}}} was previously in config error state; re-trying setup", m.pod);
        events.push(member_event(false, message));
    }
}

/// A member being set up: interrupted (back to `create pending`), still going (with what
/// it waits for), failed (`config error`) or done (`configured`; `Added` the first time).
fn finish_setup(
    m: &mut MemberStatus,
    role: RoleSetup<'_>,
    pod: Option<&PodView>,
    outcome: Option<&SetupOutcome>,
    generation: Option<i64>,
    events: &mut Vec<PlannedEvent>,
) -> Moved {
    let current = pod.and_then(|p| p.app_container_id.clone());
    if current.is_none()
        || current != m.state_detail.configuring_container
        || outcome == Some(&SetupOutcome::Interrupted)
    {
        m.state = CREATE_PENDING.to_string();
        let message = format!("previous setup for member{{{}}} interrupted; re-trying setup", m.pod);
        events.push(member_event(false, message));
        return Moved::Quiet;
    }
    let first_time = m.state_detail.last_configured_container.as_deref().is_none_or(str::is_empty);
    let mut moved = Moved::Quiet;
    match (role.needs_exec, outcome) {
        (true, Some(SetupOutcome::Waiting(detail) | SetupOutcome::Retrying(detail))) => {
            if m.state_detail.setup_detail.as_ref() != Some(detail) {
                events.push(member_event(matches!(outcome, Some(SetupOutcome::Retrying(_))), detail.clone()));
                m.state_detail.setup_detail = Some(detail.clone());
            }
            return Moved::Quiet;
        }
        (true, Some(SetupOutcome::Running)) => {
            m.state_detail.setup_detail = None;
            return Moved::Quiet;
        }
        (true, None | Some(SetupOutcome::Interrupted)) => return Moved::Quiet,
        // Without a setup package a member is configured once its pod is Ready.
        (false, _) if !pod.is_some_and(|p| p.ready) => return Moved::Quiet,
        (true, Some(SetupOutcome::Failed(detail))) => {
            m.state = CONFIG_ERROR.to_string();
            m.state_detail.config_error_detail = Some(detail.clone());
            let message = format!("failed to run initial config for member{{{}}} in role{{{}}}", m.pod, role.id);
            events.push(member_event(true, message));
        }
        (true, Some(SetupOutcome::Done)) | (false, _) => {
            m.state = CONFIGURED.to_string();
            m.state_detail.config_error_detail = None;
            let done = if role.setup_package { "done" } else { "skipped" };
            events.push(member_event(
                false,
                format!("initial config {done} for member{{{}}} in role{{{}}}", m.pod, role.id),
            ));
            // Restarted members are not news to the others.
            if first_time {
                moved = Moved::Added;
            }
        }
    }
    m.state_detail.setup_detail = None;
    m.state_detail.last_configured_container = m.state_detail.configuring_container.take();
    m.state_detail.last_setup_generation = generation;
    m.state_detail.last_config_data_generation = generation;
    moved
}

/// Step 5: tells the others about new members once they are configured and about leaving
/// members before they go (their pods stay until every `--delnodes` naming them is
/// delivered); then drops the members whose pods are gone.
fn announce(status: &mut KubeDirectorClusterStatus, order: &[RoleWanted], moves: &Moves) {
    if !moves.added.is_empty() {
        queue(status, order, ADDNODES, &moves.added);
    }
    if !moves.removed.is_empty() {
        queue(status, order, DELNODES, &moves.removed);
    }
    for role in &mut status.roles {
        role.members.retain(|m| !moves.gone.iter().any(|(r, pod)| r == &role.id && pod == &m.pod));
    }
}

/// Step 6: every member's FQDN; StatefulSets sized to the members that run pods
/// (including leaving members whose `--delnodes` is not delivered yet); Services for the
/// members that stay, in roles that expose ports.
fn size_objects(plan: &mut Plan, facts: &ClusterFacts, order: &[RoleWanted]) {
    let st = &mut plan.status;
    let headless = st.cluster_service.clone().unwrap_or_default();
    let awaiting = awaiting_delnodes(st);
    for role in &mut st.roles {
        for m in &mut role.members {
            m.fqdn = Some(names::fqdn(&m.pod, &headless, &facts.namespace, &facts.domain_base));
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
        for m in role.members.iter_mut().filter(|m| runs_pod(&m.state)) {
            if ports {
                m.service = names::member_service(&m.pod);
                plan.member_services.push((role.id.clone(), m.pod.clone()));
            } else {
                // A role whose services a changed config choice took away loses its
                // members' Services.
                if !m.service.is_empty() && m.service != names::NO_SERVICE {
                    plan.delete_services.push(m.service.clone());
                }
                m.service = names::NO_SERVICE.to_string();
            }
        }
    }
}

/// The roll-up of the members' states that the cluster status shows.
fn rollup(members: &[&MemberStatus]) -> StateRollup {
    let mut rollup = StateRollup::default();
    for m in members {
        let restarted = m.state_detail.last_configured_container.as_deref().is_some_and(|c| !c.is_empty());
        let container = m.state_detail.last_known_container_state.as_deref().unwrap_or("unknown");
        match m.state.as_str() {
            CREATE_PENDING | CREATING if restarted => rollup.members_restarting = true,
            CREATE_PENDING | CREATING => rollup.membership_changing = true,
            DELETE_PENDING | DELETING => rollup.membership_changing = true,
            CONFIG_ERROR | UPGRADE_ERROR => rollup.config_errors = true,
            UPGRADING => rollup.members_restarting = true,
            _ => {}
        }
        if matches!(m.state.as_str(), CREATING | CONFIGURED | DELETE_PENDING | CONFIG_ERROR | UPGRADE_ERROR)
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
    rollup
}

/// Whether configured members of roles with a setup package miss the configmeta of the
/// current spec generation (a connection change bumps it without membership changes).
fn configmeta_stale(status: &KubeDirectorClusterStatus, order: &[RoleWanted]) -> bool {
    let generation = status.spec_generation_to_process;
    status.roles.iter().any(|r| {
        order.iter().any(|w| w.id == r.id && w.setup_package)
            && r.members.iter().any(|m| {
                m.state == CONFIGURED
                    && m.state_detail.last_config_data_generation.is_some()
                    && m.state_detail.last_config_data_generation != generation
            })
    })
}

/// Step 7: roll-up, counts, a new spec generation when membership changed, and the
/// cluster's state: `configured` (with a "stable" Event the first time) once every member
/// is set up, told and current and nothing changes; `updating` otherwise (after the first
/// configuration).
fn conclude(plan: &mut Plan, order: &[RoleWanted], changed: bool) {
    let st = &mut plan.status;
    let members: Vec<&MemberStatus> = st.roles.iter().flat_map(|r| &r.members).collect();
    let configured = members.iter().filter(|m| m.state == CONFIGURED).count();
    let all_set_up = members.iter().all(|m| m.state == CONFIGURED || m.state == CONFIG_ERROR)
        && members.iter().all(|m| m.state_detail.pending_notify_cmds.is_empty());
    st.members_ready = Some(format!("{configured}/{}", members.len()));
    st.member_state_rollup = Some(rollup(&members));
    if changed {
        st.spec_generation_to_process = Some(st.spec_generation_to_process.unwrap_or(0) + 1);
    }
    let all_set_up = all_set_up && !configmeta_stale(st, order);
    let roles_complete = order.iter().all(|w| {
        let have = st.roles.iter().find(|r| r.id == w.id).map_or(0, |r| r.members.len() as i32);
        have == w.members
    });
    let settled = !changed && all_set_up && roles_complete && plan.delete_statefulsets.is_empty();
    let previous = st.state.clone().unwrap_or_default();
    if settled {
        if previous != CLUSTER_CONFIGURED {
            plan.events.push(PlannedEvent { warning: false, reason: "Cluster", message: "stable".into() });
        }
        st.state = Some(CLUSTER_CONFIGURED.to_string());
    } else if previous != CLUSTER_CREATING {
        st.state = Some(CLUSTER_UPDATING.to_string());
    }
    plan.settled = settled;
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

    fn member_in(pod: &str, state: &str) -> MemberStatus {
        MemberStatus { pod: pod.into(), state: state.into(), ..MemberStatus::default() }
    }

    fn role_of(id: &str, members: Vec<MemberStatus>) -> RoleStatus {
        RoleStatus { id: id.into(), stateful_set: format!("kdss-{id}"), members, ..RoleStatus::default() }
    }

    fn status_of(roles: Vec<RoleStatus>) -> KubeDirectorClusterStatus {
        KubeDirectorClusterStatus {
            state: Some(CLUSTER_CONFIGURED.into()),
            cluster_service: Some("kdhs-x".into()),
            spec_generation_to_process: Some(3),
            roles,
            ..KubeDirectorClusterStatus::default()
        }
    }

    #[test]
    fn start_names_a_new_cluster_once() {
        let mut plan = Plan::default();
        start(&mut plan, &facts(false));
        assert_eq!(plan.status.cluster_service, Some(names::headless_service("uid")));
        assert_eq!(plan.status.state.as_deref(), Some(CLUSTER_CREATING));
        assert_eq!(plan.status.spec_generation_to_process, Some(0));
        assert_eq!(plan.events.len(), 1);
        let mut again = Plan { status: status_of(Vec::new()), ..Plan::default() };
        start(&mut again, &facts(false));
        assert_eq!(again.status, status_of(Vec::new()), "a recorded name and state are kept");
        assert!(again.events.is_empty());
    }

    #[test]
    fn check_containers_sends_restarted_members_back_keeping_what_storage_keeps() {
        let mut stored = member_in("kdss-w-0", CONFIGURED);
        stored.pvc = Some("p-kdss-w-0".into());
        stored.state_detail.last_configured_container = Some("old".into());
        stored.state_detail.last_setup_generation = Some(2);
        let mut bare = stored.clone();
        bare.pod = "kdss-w-1".into();
        bare.pvc = None;
        let same = MemberStatus { pod: "kdss-w-2".into(), ..stored.clone() };
        let mut plan = Plan { status: status_of(vec![role_of("w", vec![stored, bare, same])]), ..Plan::default() };
        let pods = BTreeMap::from([
            ("kdss-w-0".to_string(), PodView { app_container_id: Some("new".into()), ..PodView::default() }),
            ("kdss-w-1".to_string(), PodView { app_container_id: Some("new".into()), ..PodView::default() }),
            ("kdss-w-2".to_string(), PodView { app_container_id: Some("old".into()), ..PodView::default() }),
        ]);
        check_containers(&mut plan, &want(1), &pods);
        assert_eq!(states(&plan.status), vec![CREATE_PENDING, CREATE_PENDING, CONFIGURED]);
        let m = &plan.status.roles[0].members;
        assert_eq!(m[0].state_detail.last_setup_generation, Some(2), "storage keeps the setup");
        assert_eq!(m[1].state_detail.last_setup_generation, None, "no storage: setup runs again");
        assert_eq!(m[2].state_detail.last_known_container_state.as_deref(), Some("unknown"));
        assert_eq!(plan.events.len(), 2);
        assert!(plan.events[1].message.contains("no persistent storage"));
    }

    #[test]
    fn roles_the_spec_dropped_are_wanted_with_no_members() {
        let status = status_of(vec![role_of("w", Vec::new()), role_of("gone", Vec::new())]);
        let order = with_removed_roles(&want(2), &status);
        let ids: Vec<(&str, i32)> = order.iter().map(|w| (w.id.as_str(), w.members)).collect();
        assert_eq!(ids, vec![("w", 2), ("gone", 0)]);
    }

    #[test]
    fn resize_roles_waits_for_members_being_set_up_and_finishes_empty_roles() {
        let mut gated =
            Plan { status: status_of(vec![role_of("w", vec![member_in("kdss-w-0", CREATING)])]), ..Plan::default() };
        assert!(!resize_roles(&mut gated, &facts(false), &want(3), &BTreeSet::new()), "gated");
        assert_eq!(gated.status.roles[0].members.len(), 1);
        let mut empty = Plan { status: status_of(vec![role_of("w", Vec::new())]), ..Plan::default() };
        let existing = BTreeSet::from(["kdss-w".to_string()]);
        assert!(!resize_roles(&mut empty, &facts(false), &want(0), &existing));
        assert!(empty.status.roles.is_empty());
        assert_eq!(empty.delete_statefulsets, vec!["kdss-w".to_string()]);
        let mut fresh = Plan { status: status_of(Vec::new()), ..Plan::default() };
        assert!(resize_roles(&mut fresh, &facts(false), &want(2), &BTreeSet::new()));
        assert_eq!(states(&fresh.status), vec![CREATE_PENDING, CREATE_PENDING]);
        assert_eq!(fresh.status.last_node_id, Some(2));
    }

    #[test]
    fn shrink_keeps_the_lowest_current_members() {
        let mut role = role_of(
            "w",
            vec![
                member_in("kdss-w-0", CONFIGURED),
                member_in("kdss-w-1", DELETING),
                member_in("kdss-w-2", CONFIGURED),
                member_in("kdss-w-3", CREATE_PENDING),
            ],
        );
        shrink(&mut role, 1);
        let after: Vec<&str> = role.members.iter().map(|m| m.state.as_str()).collect();
        assert_eq!(after, vec![CONFIGURED, DELETING, DELETE_PENDING, DELETING], "no pod yet: gone at once");
    }

    #[test]
    fn a_member_moves_one_state_per_pass() {
        let role = RoleSetup { id: "w", needs_exec: true, setup_package: true };
        let running = PodView { phase: "Running".into(), app_container_id: Some("c1".into()), ..PodView::default() };
        let mut events = Vec::new();
        let mut m = member_in("kdss-w-0", CREATE_PENDING);
        assert_eq!(advance_member(&mut m, role, Some(&running), None, Some(1), &mut events), Moved::Quiet);
        assert_eq!((m.state.as_str(), m.state_detail.configuring_container.as_deref()), (CREATING, Some("c1")));
        let done = SetupOutcome::Done;
        assert_eq!(advance_member(&mut m, role, Some(&running), Some(&done), Some(1), &mut events), Moved::Added);
        assert_eq!(m.state, CONFIGURED);
        assert_eq!(m.state_detail.last_configured_container.as_deref(), Some("c1"));
        assert_eq!(m.state_detail.last_config_data_generation, Some(1));
        m.state = DELETE_PENDING.into();
        m.state_detail.pending_notify_cmds.push(notification(ADDNODES, "w", &[]));
        assert_eq!(advance_member(&mut m, role, Some(&running), None, Some(1), &mut events), Moved::Leaving);
        assert!(m.state == DELETING && m.state_detail.pending_notify_cmds.is_empty());
        assert_eq!(advance_member(&mut m, role, Some(&running), None, Some(1), &mut events), Moved::Quiet);
        assert_eq!(advance_member(&mut m, role, None, None, Some(1), &mut events), Moved::Gone);
        let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, vec!["initial config done for member{kdss-w-0} in role{w}"]);
    }

    #[test]
    fn a_setup_interrupted_or_failed_is_said_so() {
        let role = RoleSetup { id: "w", needs_exec: true, setup_package: true };
        let running = PodView { phase: "Running".into(), app_container_id: Some("c1".into()), ..PodView::default() };
        let mut events = Vec::new();
        let mut m = member_in("kdss-w-0", CREATING);
        m.state_detail.configuring_container = Some("c0".into());
        assert_eq!(finish_setup(&mut m, role, Some(&running), None, None, &mut events), Moved::Quiet);
        assert_eq!(m.state, CREATE_PENDING, "another container: start over");
        m.state = CREATING.into();
        m.state_detail.configuring_container = Some("c1".into());
        let failed = SetupOutcome::Failed("boom".into());
        assert_eq!(finish_setup(&mut m, role, Some(&running), Some(&failed), None, &mut events), Moved::Quiet);
        assert_eq!((m.state.as_str(), m.state_detail.config_error_detail.as_deref()), (CONFIG_ERROR, Some("boom")));
        assert!(events[1].warning);
        // A member in config error whose container changed starts over, detail cleared.
        m.state = CREATE_PENDING.into();
        let restarted = PodView { app_container_id: Some("c2".into()), ..running.clone() };
        start_setup(&mut m, Some(&restarted), &mut events);
        assert_eq!((m.state.as_str(), m.state_detail.config_error_detail.as_deref()), (CREATING, None));
        assert!(events[2].message.contains("previously in config error state"));
    }

    #[test]
    fn announce_queues_news_and_drops_gone_members() {
        let mut status = status_of(vec![
            role_of("c", vec![member_in("kdss-c-0", CONFIGURED)]),
            role_of("w", vec![member_in("kdss-w-0", CONFIGURED), member_in("kdss-w-1", DELETING)]),
        ]);
        let w = want(1)[0].clone();
        let order =
            vec![RoleWanted { id: "c".into(), setup_package: true, events: vec![DELNODES.into()], ..w.clone() }, w];
        let moves = Moves {
            removed: BTreeMap::from([("w".to_string(), vec![("kdss-w-1".to_string(), "w1.fqdn".to_string())])]),
            gone: vec![("w".to_string(), "kdss-w-1".to_string())],
            ..Moves::default()
        };
        announce(&mut status, &order, &moves);
        let news = &status.roles[0].members[0].state_detail.pending_notify_cmds;
        assert_eq!(news.len(), 1);
        assert_eq!(news[0].arguments.first().map(String::as_str), Some("--delnodes"));
        assert_eq!(news[0].arguments.last().map(String::as_str), Some("w1.fqdn"));
        assert!(status.roles[1].members[0].state_detail.pending_notify_cmds.is_empty(), "w asked for nothing");
        assert_eq!(status.roles[1].members.len(), 1, "the gone member left the status");
    }

    #[test]
    fn size_objects_counts_pods_and_gives_services_where_roles_expose_ports() {
        let mut leaving = member_in("kdss-w-1", DELETING);
        leaving.pvc = None;
        let mut teller = member_in("kdss-w-0", CONFIGURED);
        let fqdn = names::fqdn("kdss-w-1", "kdhs-x", "ns", ".svc.cluster.local");
        teller.state_detail.pending_notify_cmds.push(notification(DELNODES, "w", std::slice::from_ref(&fqdn)));
        let mut plan = Plan {
            status: status_of(vec![role_of("w", vec![teller, leaving, member_in("kdss-w-2", DELETING)])]),
            ..Plan::default()
        };
        size_objects(&mut plan, &facts(false), &want(1));
        assert_eq!(plan.statefulsets.get("kdss-w"), Some(&("w".to_string(), 2)), "the leaving member waits");
        assert_eq!(plan.member_services, vec![("w".to_string(), "kdss-w-0".to_string())]);
        let m = &plan.status.roles[0].members;
        assert_eq!((m[0].service.as_str(), m[1].fqdn.as_deref()), ("s-kdss-w-0", Some(fqdn.as_str())));
        let mut closed =
            Plan { status: status_of(vec![role_of("w", vec![member_in("kdss-w-0", CONFIGURED)])]), ..Plan::default() };
        let no_ports = vec![RoleWanted { ports: false, ..want(1)[0].clone() }];
        size_objects(&mut closed, &facts(false), &no_ports);
        assert_eq!(closed.status.roles[0].members[0].service, names::NO_SERVICE);
        assert!(closed.member_services.is_empty());
        assert!(closed.delete_services.is_empty(), "it never had a Service");
    }

    #[test]
    fn a_role_whose_choice_took_its_services_away_loses_its_member_services() {
        let mut served = member_in("kdss-w-0", CONFIGURED);
        served.service = names::member_service("kdss-w-0");
        let mut plan = Plan { status: status_of(vec![role_of("w", vec![served])]), ..Plan::default() };
        let no_ports = vec![RoleWanted { ports: false, ..want(1)[0].clone() }];
        size_objects(&mut plan, &facts(false), &no_ports);
        assert_eq!(plan.delete_services, vec!["s-kdss-w-0".to_string()]);
        assert_eq!(plan.status.roles[0].members[0].service, names::NO_SERVICE);
        size_objects(&mut plan, &facts(false), &no_ports);
        assert_eq!(plan.delete_services.len(), 1, "deleted once: the status says it is gone");
    }

    #[test]
    fn the_rollup_flags_what_members_go_through() {
        let mut restarting = member_in("a", CREATING);
        restarting.state_detail.last_configured_container = Some("c".into());
        let mut down = member_in("b", CONFIGURED);
        down.state_detail.last_known_container_state = Some("terminated".into());
        let mut waiting = member_in("c", CREATE_PENDING);
        waiting.state_detail.last_known_container_state = Some("absent".into());
        let broken = member_in("d", CONFIG_ERROR);
        let r = rollup(&[&restarting, &down, &waiting, &broken]);
        assert!(r.members_restarting && r.members_down && r.members_waiting && r.config_errors);
        assert!(r.membership_changing, "a new member being created");
        assert!(!r.members_initializing);
        assert_eq!(rollup(&[]), StateRollup::default());
    }

    #[test]
    fn conclude_settles_only_a_quiet_complete_cluster() {
        let configured = |pod: &str| {
            let mut m = member_in(pod, CONFIGURED);
            m.state_detail.last_config_data_generation = Some(3);
            m
        };
        let mut quiet = Plan { status: status_of(vec![role_of("w", vec![configured("kdss-w-0")])]), ..Plan::default() };
        quiet.status.state = Some(CLUSTER_UPDATING.into());
        conclude(&mut quiet, &want(1), false);
        assert!(quiet.settled);
        assert_eq!(quiet.status.state.as_deref(), Some(CLUSTER_CONFIGURED));
        assert_eq!(quiet.status.members_ready.as_deref(), Some("1/1"));
        assert_eq!(quiet.events.len(), 1, "stable");
        let mut changed =
            Plan { status: status_of(vec![role_of("w", vec![configured("kdss-w-0")])]), ..Plan::default() };
        conclude(&mut changed, &want(1), true);
        assert!(!changed.settled);
        assert_eq!(changed.status.spec_generation_to_process, Some(4));
        assert_eq!(changed.status.state.as_deref(), Some(CLUSTER_UPDATING));
        let packaged = vec![RoleWanted { setup_package: true, ..want(1)[0].clone() }];
        let mut stale = Plan { status: status_of(vec![role_of("w", vec![configured("kdss-w-0")])]), ..Plan::default() };
        stale.status.spec_generation_to_process = Some(4);
        assert!(configmeta_stale(&stale.status, &packaged));
        conclude(&mut stale, &packaged, false);
        assert!(!stale.settled, "configmeta of an older generation");
    }
}
