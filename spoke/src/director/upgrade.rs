//! Live upgrades (and rollbacks) of a running cluster's app, as pure steps. A change of
//! `spec.app` to an app that upgrades from the running one starts a rollout recorded in
//! `status.upgrade`: every member, role by role in the target app's `upgradeRoleOrder` and
//! within a role from the highest ordinal down, is marked `upgrading`; the next pass lowers
//! its role's StatefulSet partition to it, so the StatefulSet controller recreates that pod
//! (and only it) from the new app's template on the same PVCs; once the new container runs,
//! the setup package of the new app runs `startscript --upgrade --from <old version>` in it,
//! and the others hear `--upgraded`. A failed script stops the rollout at that member
//! (`upgrade error`). Changing `spec.app` back reverses the rollout: the members that moved
//! go back the same way (`--rollback --from <version>`), last moved first.
//!
//! Everything the next pass needs is in the status (`status.upgrade` and the members'
//! states), written before any pod is touched, so a director killed at any point continues
//! where it stopped without redoing finished members.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetUpdateStrategy};
use kdfed_crds::cluster::{KubeDirectorClusterStatus, MemberStatus, NotificationDesc, UpgradeStatus};
use kdfed_crds::upgrade::{
    PHASE_COMPLETED, PHASE_FAILED, PHASE_ROLLBACK_FAILED, PHASE_ROLLED_BACK, PHASE_ROLLING_BACK, PHASE_UPGRADING,
};

use super::members::{self, PlannedEvent, PodView, SetupOutcome};
use super::names;

/// Reason of the Events of a rollout.
pub const EVENT_REASON: &str = "Upgrade";

/// An app of a rollout: its name and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppVersion<'a> {
    /// `metadata.name` of the app.
    pub name: &'a str,
    /// `spec.version` of the app.
    pub version: &'a str,
}

/// Where the cluster's app stands at the start of a pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Begin {
    /// No rollout: the members run `spec.app`.
    Steady,
    /// A rollout (new, continuing or just reversed) to record and advance.
    Rollout(UpgradeStatus),
    /// `spec.app` names an app the running rollout can go to neither way.
    Refused(String),
}

/// Which app a role's StatefulSet template is built from this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The app the rollout leaves (`status.upgrade.from`).
    From,
    /// The app the rollout goes to (`spec.app`).
    To,
}

/// A role's template this pass: from which app, and the StatefulSet partition (pods at or
/// above it run the template; those below keep what they run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    /// The app the template is built from.
    pub side: Side,
    /// `updateStrategy.rollingUpdate.partition`, while the role is part-way.
    pub partition: Option<i32>,
}

/// The app the members run when no rollout is under way: the last rollout's target, else
/// the app the StatefulSets select (their `kdapp` selector label never changes), else none
/// (a cluster not built yet).
pub fn running_app<'a>(status: &'a KubeDirectorClusterStatus, selector_app: Option<&'a str>) -> Option<&'a str> {
    match &status.upgrade {
        Some(u) => Some(u.to.as_str()),
        None => selector_app,
    }
}

/// Decides the rollout of this pass from `spec.app` (`to`), the last status and the app
/// the members run. `from` is the running app when a new upgrade starts; `order` is the
/// target app's role order ([`kdfed_crds::upgrade::role_order`]). Admission and the
/// validate step have already checked that `to` may follow the running app.
pub fn begin(
    to: AppVersion<'_>,
    from: Option<AppVersion<'_>>,
    status: &KubeDirectorClusterStatus,
    order: &[String],
    pods: &BTreeMap<String, PodView>,
) -> Begin {
    if let Some(rec) = status.upgrade.as_ref().filter(|u| u.in_progress()) {
        if rec.to == to.name {
            return Begin::Rollout(rec.clone());
        }
        if rec.from == to.name {
            return Begin::Rollout(reverse(rec, status, order, pods));
        }
        return Begin::Refused(format!(
            "app({}) cannot be reached while the rollout from app({}) to app({}) runs; set spec.app to app({}) to finish it or to app({}) to go back",
            to.name, rec.from, rec.to, rec.to, rec.from
        ));
    }
    if let Some(rec) = status.upgrade.as_ref().filter(|u| u.rollback_allowed(u.to.as_str()) && u.from == to.name) {
        // A completed upgrade rolled back: every member runs its target now.
        let mut everyone = rec.clone();
        everyone.upgraded_members = member_order(status, order, false);
        everyone.phase = PHASE_UPGRADING.to_string();
        return Begin::Rollout(reverse(&everyone, status, order, pods));
    }
    match from {
        Some(f) if f.name != to.name => {
            let plan = member_order(status, order, false);
            Begin::Rollout(UpgradeStatus {
                from: f.name.to_string(),
                to: to.name.to_string(),
                phase: PHASE_UPGRADING.to_string(),
                message: Some(format!(
                    "upgrading from app({}) version {} to app({}) version {}",
                    f.name, f.version, to.name, to.version
                )),
                total_members: Some(plan.len() as i32),
                from_version: Some(f.version.to_string()),
                to_version: Some(to.version.to_string()),
                plan,
                ..UpgradeStatus::default()
            })
        }
        _ => Begin::Steady,
    }
}

/// The rollout that undoes `rec`: the members it moved (finished, failed or under way) go
/// back, the last moved first.
fn reverse(
    rec: &UpgradeStatus,
    status: &KubeDirectorClusterStatus,
    order: &[String],
    pods: &BTreeMap<String, PodView>,
) -> UpgradeStatus {
    // A member marked but whose pod was not recreated yet never left: it stays out.
    let left = |p: &&str| {
        let m = status.roles.iter().flat_map(|r| &r.members).find(|m| m.pod == *p);
        m.is_none_or(|m| m.state != members::UPGRADING || fresh_container(m, pods.get(&m.pod)).is_some())
    };
    let moved: BTreeSet<&str> = moved_members(rec, status).into_iter().filter(left).collect();
    let plan: Vec<String> =
        member_order(status, order, true).into_iter().filter(|p| moved.contains(p.as_str())).collect();
    let back = !rec.is_rollback();
    UpgradeStatus {
        from: rec.to.clone(),
        to: rec.from.clone(),
        phase: if back { PHASE_ROLLING_BACK } else { PHASE_UPGRADING }.to_string(),
        message: Some(format!(
            "{} {} member(s) from app({}) to app({})",
            if back { "rolling back" } else { "upgrading again" },
            plan.len(),
            rec.to,
            rec.from
        )),
        total_members: Some(plan.len() as i32),
        from_version: rec.to_version.clone(),
        to_version: rec.from_version.clone(),
        plan,
        ..UpgradeStatus::default()
    }
}

/// Members of `rec` that run (or are being moved to) its target: the finished ones, the
/// failed one and the one under way.
fn moved_members<'a>(rec: &'a UpgradeStatus, status: &'a KubeDirectorClusterStatus) -> Vec<&'a str> {
    let mut moved: Vec<&str> = rec.upgraded_members.iter().map(String::as_str).collect();
    moved.extend(rec.failed_member.as_deref());
    for m in status.roles.iter().flat_map(|r| &r.members) {
        if m.state == members::UPGRADING && rec.plan.contains(&m.pod) {
            moved.push(&m.pod);
        }
    }
    moved.sort_unstable();
    moved.dedup();
    moved
}

/// The cluster's current members in rollout order: roles in `order` (reversed for a
/// rollback), then roles `order` does not list; within a role the highest ordinal first
/// (what a StatefulSet partition can express).
pub fn member_order(status: &KubeDirectorClusterStatus, order: &[String], reversed: bool) -> Vec<String> {
    let mut roles: Vec<&str> = order.iter().map(String::as_str).collect();
    roles.extend(status.roles.iter().map(|r| r.id.as_str()).filter(|id| !order.iter().any(|o| o == id)));
    if reversed {
        roles.reverse();
    }
    let mut out = Vec::new();
    for id in roles {
        let Some(role) = status.roles.iter().find(|r| r.id == id) else { continue };
        let mut pods: Vec<&MemberStatus> = role
            .members
            .iter()
            .filter(|m| !matches!(m.state.as_str(), members::DELETE_PENDING | members::DELETING))
            .collect();
        pods.sort_by_key(|m| std::cmp::Reverse(names::ordinal(&m.pod)));
        out.extend(pods.into_iter().map(|m| m.pod.clone()));
    }
    out
}

/// Each role's template this pass, from the status at the start of the pass: a role with
/// no member to move runs the target; a role whose members wait keeps the app they run; a
/// role part-way runs the target from the lowest ordinal moved or being moved up.
pub fn templates(rec: Option<&UpgradeStatus>, status: &KubeDirectorClusterStatus) -> BTreeMap<String, Template> {
    let steady = Template { side: Side::To, partition: None };
    let Some(rec) = rec.filter(|u| u.in_progress()) else {
        return status.roles.iter().map(|r| (r.id.clone(), steady)).collect();
    };
    let moved: BTreeSet<&str> = moved_members(rec, status).into_iter().collect();
    let mut out = BTreeMap::new();
    for role in &status.roles {
        let planned: Vec<&MemberStatus> = role.members.iter().filter(|m| rec.plan.contains(&m.pod)).collect();
        let lowest_moved =
            planned.iter().filter(|m| moved.contains(m.pod.as_str())).filter_map(|m| names::ordinal(&m.pod)).min();
        let template = match (planned.is_empty(), lowest_moved) {
            (true, _) => steady,
            (false, None) => Template { side: Side::From, partition: None },
            (false, Some(p)) => Template { side: Side::To, partition: Some(p as i32) },
        };
        out.insert(role.id.clone(), template);
    }
    out
}

/// Gives a built StatefulSet the selector it was created with (a selector and the claim
/// templates cannot change; their `kdapp` label stays the app the cluster was created with,
/// as do its pods') and the partition of the rollout, if any.
pub fn pin_statefulset(sts: &mut StatefulSet, selector_app: &str, partition: Option<i32>) {
    let Some(spec) = sts.spec.as_mut() else { return };
    let pin = |labels: &mut BTreeMap<String, String>| {
        if labels.contains_key(names::LABEL_APP) {
            labels.insert(names::LABEL_APP.to_string(), selector_app.to_string());
        }
    };
    if let Some(labels) = spec.selector.match_labels.as_mut() {
        pin(labels);
    }
    if let Some(labels) = spec.template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        pin(labels);
    }
    // Claim templates cannot change either.
    for claim in spec.volume_claim_templates.iter_mut().flatten() {
        if let Some(labels) = claim.metadata.labels.as_mut() {
            pin(labels);
        }
    }
    spec.update_strategy = partition.map(|p| StatefulSetUpdateStrategy {
        type_: Some("RollingUpdate".to_string()),
        rolling_update: Some(RollingUpdateStatefulSetStrategy { partition: Some(p), max_unavailable: None }),
    });
}

/// What the rollout's setup steps need of one member this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Pod name.
    pub pod: String,
    /// Role id.
    pub role: String,
    /// The new container the script runs in.
    pub container_id: String,
    /// `startscript` arguments: `--upgrade --from V` or `--rollback --from V`.
    pub arguments: Vec<String>,
}

/// The `startscript` arguments of a member moved by `rec`.
pub fn script_arguments(rec: &UpgradeStatus) -> Vec<String> {
    let verb = if rec.is_rollback() { "--rollback" } else { "--upgrade" };
    vec![verb.to_string(), "--from".to_string(), rec.from_version.clone().unwrap_or_default()]
}

/// Members being moved whose pod now runs a new container (the StatefulSet recreated it):
/// their scripts run this pass.
pub fn steps(rec: &UpgradeStatus, status: &KubeDirectorClusterStatus, pods: &BTreeMap<String, PodView>) -> Vec<Step> {
    let mut out = Vec::new();
    for role in &status.roles {
        for m in role.members.iter().filter(|m| m.state == members::UPGRADING) {
            let Some(container) = fresh_container(m, pods.get(&m.pod)) else { continue };
            out.push(Step {
                pod: m.pod.clone(),
                role: role.id.clone(),
                container_id: container,
                arguments: script_arguments(rec),
            });
        }
    }
    out
}

/// The id of a member's container when its pod runs one it was not configured in.
fn fresh_container(m: &MemberStatus, pod: Option<&PodView>) -> Option<String> {
    let pod = pod.filter(|p| p.phase == "Running" && !p.deleting)?;
    let id = pod.app_container_id.clone()?;
    (m.state_detail.last_configured_container.as_ref() != Some(&id)).then_some(id)
}

/// What the rollout needs to know of each role of the target app.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleFacts {
    /// Roles whose members run a setup package in the target app.
    pub setup_package: BTreeSet<String>,
}

/// Advances the rollout in the planned status: outcomes of this pass's scripts move members
/// to `configured` (and the others hear of it) or to `upgrade error` (the rollout stops);
/// with no member under way the next one is marked `upgrading`, or the rollout finishes.
pub fn advance(
    rec: &mut UpgradeStatus,
    plan: &mut members::Plan,
    roles: &RoleFacts,
    pods: &BTreeMap<String, PodView>,
    outcomes: &BTreeMap<String, SetupOutcome>,
) {
    if !rec.in_progress() {
        return;
    }
    // A member marked by a rollout that was reversed before its pod was recreated runs what
    // it ran: it is configured as before.
    for m in plan.status.roles.iter_mut().flat_map(|r| r.members.iter_mut()) {
        if m.state == members::UPGRADING && !rec.plan.contains(&m.pod) {
            m.state = members::CONFIGURED.to_string();
        }
    }
    let under_way = finish_steps(rec, plan, roles, pods, outcomes);
    if under_way || matches!(rec.phase.as_str(), PHASE_FAILED | PHASE_ROLLBACK_FAILED) {
        return;
    }
    let present: BTreeSet<String> = plan.status.roles.iter().flat_map(|r| &r.members).map(|m| m.pod.clone()).collect();
    let next = rec.plan.iter().find(|p| !rec.upgraded_members.contains(p) && present.contains(*p)).cloned();
    let (verb, done_phase) =
        if rec.is_rollback() { ("rolling back", PHASE_ROLLED_BACK) } else { ("upgrading", PHASE_COMPLETED) };
    match next {
        Some(pod) => {
            let running = pods.get(&pod).and_then(|p| p.app_container_id.clone());
            if let Some(m) = member_mut(&mut plan.status, &pod) {
                m.state = members::UPGRADING.to_string();
                m.state_detail.setup_detail = None;
                // The container it runs now is not the one to set up (a member whose script
                // failed runs a container it was never configured in): wait for a new one.
                if running.is_some() {
                    m.state_detail.last_configured_container = running;
                }
            }
            let message = format!("{verb} member{{{pod}}} from app({}) to app({})", rec.from, rec.to);
            plan.events.push(event(false, message.clone()));
            rec.message = Some(message);
        }
        None => {
            rec.phase = done_phase.to_string();
            let message = format!(
                "{} member(s) moved from app({}) to app({}); {}",
                rec.upgraded_members.len(),
                rec.from,
                rec.to,
                if done_phase == PHASE_COMPLETED { "upgrade complete" } else { "rollback complete" }
            );
            plan.events.push(event(false, message.clone()));
            rec.message = Some(message);
        }
    }
}

/// Applies this pass's outcomes to the members under way; whether one is still under way.
fn finish_steps(
    rec: &mut UpgradeStatus,
    plan: &mut members::Plan,
    roles: &RoleFacts,
    pods: &BTreeMap<String, PodView>,
    outcomes: &BTreeMap<String, SetupOutcome>,
) -> bool {
    let mut under_way = false;
    let mut finished: Vec<(String, String)> = Vec::new();
    for role in &mut plan.status.roles {
        let package = roles.setup_package.contains(&role.id);
        for m in role.members.iter_mut().filter(|m| m.state == members::UPGRADING) {
            let pod = pods.get(&m.pod);
            let fresh = fresh_container(m, pod);
            let outcome = match (package, &fresh) {
                (_, None) => None,
                (true, Some(_)) => outcomes.get(&m.pod).cloned(),
                // Without a setup package a member has moved once its new pod is Ready.
                (false, Some(_)) => pod.filter(|p| p.ready).map(|_| SetupOutcome::Done),
            };
            match outcome {
                Some(SetupOutcome::Done) => {
                    m.state = members::CONFIGURED.to_string();
                    m.state_detail.last_configured_container = fresh;
                    m.state_detail.config_error_detail = None;
                    m.state_detail.setup_detail = None;
                    rec.upgraded_members.push(m.pod.clone());
                    let message = format!("member{{{}}} in role{{{}}} now runs app({})", m.pod, role.id, rec.to);
                    plan.events.push(event(false, message.clone()));
                    rec.message = Some(message);
                    finished.push((role.id.clone(), m.pod.clone()));
                }
                Some(SetupOutcome::Failed(detail)) => {
                    m.state = members::UPGRADE_ERROR.to_string();
                    m.state_detail.config_error_detail = Some(detail.clone());
                    let verb = if rec.is_rollback() { "rollback" } else { "upgrade" };
                    rec.phase = if rec.is_rollback() { PHASE_ROLLBACK_FAILED } else { PHASE_FAILED }.to_string();
                    rec.failed_member = Some(m.pod.clone());
                    let message = format!(
                        "{verb} of member{{{}}} in role{{{}}} to app({}) failed; the rollout stopped there: {}",
                        m.pod,
                        role.id,
                        rec.to,
                        first_line(&detail)
                    );
                    plan.events.push(event(true, message.clone()));
                    rec.message = Some(message);
                }
                Some(SetupOutcome::Waiting(d) | SetupOutcome::Retrying(d)) => {
                    m.state_detail.setup_detail = Some(d);
                    under_way = true;
                }
                _ => under_way = true,
            }
        }
    }
    tell_the_others(rec, plan, roles, &finished);
    under_way
}

/// Queues `--upgraded` (or `--rolledback`) about the members that just moved to every other
/// configured member of the roles with a setup package.
fn tell_the_others(rec: &UpgradeStatus, plan: &mut members::Plan, roles: &RoleFacts, finished: &[(String, String)]) {
    let verb = if rec.is_rollback() { "--rolledback" } else { "--upgraded" };
    for (role_id, pod) in finished {
        let fqdn = plan
            .status
            .roles
            .iter()
            .flat_map(|r| &r.members)
            .find(|m| &m.pod == pod)
            .and_then(|m| m.fqdn.clone())
            .unwrap_or_else(|| pod.clone());
        let cmd = notification(verb, role_id, &fqdn, rec);
        for role in plan.status.roles.iter_mut().filter(|r| roles.setup_package.contains(&r.id)) {
            for m in role.members.iter_mut().filter(|m| m.state == members::CONFIGURED && &m.pod != pod) {
                m.state_detail.pending_notify_cmds.push(cmd.clone());
            }
        }
    }
}

/// The notification about one moved member: `--addnodes`' shape plus both versions.
pub fn notification(verb: &str, role: &str, fqdn: &str, rec: &UpgradeStatus) -> NotificationDesc {
    let mut cmd = members::notification(verb.trim_start_matches("--"), role, &[fqdn.to_string()]);
    cmd.arguments.extend([
        "--from".to_string(),
        rec.from_version.clone().unwrap_or_default(),
        "--to".to_string(),
        rec.to_version.clone().unwrap_or_default(),
    ]);
    cmd
}

fn member_mut<'a>(status: &'a mut KubeDirectorClusterStatus, pod: &str) -> Option<&'a mut MemberStatus> {
    status.roles.iter_mut().flat_map(|r| r.members.iter_mut()).find(|m| m.pod == pod)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn event(warning: bool, message: String) -> PlannedEvent {
    PlannedEvent { warning, reason: EVENT_REASON, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdfed_crds::cluster::RoleStatus;

    fn member(pod: &str, state: &str, container: &str) -> MemberStatus {
        let mut m = MemberStatus { pod: pod.into(), state: state.into(), ..Default::default() };
        m.state_detail.last_configured_container = Some(container.into());
        m
    }

    /// A cluster of a `head` (1 member) and `worker` (2) role, all configured in containers `c-<pod>`.
    fn cluster() -> KubeDirectorClusterStatus {
        let role = |id: &str, pods: &[&str]| RoleStatus {
            id: id.into(),
            members: pods.iter().map(|p| member(p, members::CONFIGURED, &format!("c-{p}"))).collect(),
            ..Default::default()
        };
        KubeDirectorClusterStatus {
            roles: vec![role("head", &["head-0"]), role("worker", &["worker-0", "worker-1"])],
            ..Default::default()
        }
    }

    fn running(status: &KubeDirectorClusterStatus, fresh: &[&str]) -> BTreeMap<String, PodView> {
        status
            .roles
            .iter()
            .flat_map(|r| &r.members)
            .map(|m| {
                let id =
                    if fresh.contains(&m.pod.as_str()) { format!("new-{}", m.pod) } else { format!("c-{}", m.pod) };
                let view =
                    PodView { phase: "Running".into(), ready: true, app_container_id: Some(id), ..Default::default() };
                (m.pod.clone(), view)
            })
            .collect()
    }

    const V1: AppVersion<'static> = AppVersion { name: "app-1", version: "1" };
    const V2: AppVersion<'static> = AppVersion { name: "app-2", version: "2" };

    fn order() -> Vec<String> {
        vec!["worker".into(), "head".into()]
    }

    fn started(status: &KubeDirectorClusterStatus) -> UpgradeStatus {
        match begin(V2, Some(V1), status, &order(), &BTreeMap::new()) {
            Begin::Rollout(rec) => rec,
            other => panic!("expected a rollout, got {other:?}"),
        }
    }

    fn packages() -> RoleFacts {
        RoleFacts { setup_package: ["head".to_string(), "worker".to_string()].into() }
    }

    /// One pass: the rollout advances over `status` with `pods` and the scripts' outcomes.
    fn pass(
        rec: &mut UpgradeStatus,
        status: &KubeDirectorClusterStatus,
        pods: &BTreeMap<String, PodView>,
        outcomes: &[(&str, SetupOutcome)],
    ) -> members::Plan {
        let mut plan = members::Plan { status: status.clone(), ..Default::default() };
        let outcomes = outcomes.iter().map(|(p, o)| (p.to_string(), o.clone())).collect();
        advance(rec, &mut plan, &packages(), pods, &outcomes);
        plan.status.upgrade = Some(rec.clone());
        plan
    }

    fn state_of<'a>(status: &'a KubeDirectorClusterStatus, pod: &str) -> &'a str {
        status.roles.iter().flat_map(|r| &r.members).find(|m| m.pod == pod).map_or("", |m| m.state.as_str())
    }

    #[test]
    fn a_new_app_starts_a_rollout_in_role_order_highest_ordinal_first() {
        let status = cluster();
        assert_eq!(begin(V1, Some(V1), &status, &order(), &BTreeMap::new()), Begin::Steady);
        assert_eq!(begin(V1, None, &status, &order(), &BTreeMap::new()), Begin::Steady);
        let rec = started(&status);
        assert_eq!(rec.plan, ["worker-1", "worker-0", "head-0"]);
        assert_eq!((rec.from.as_str(), rec.to.as_str(), rec.phase.as_str()), ("app-1", "app-2", PHASE_UPGRADING));
        assert_eq!(rec.total_members, Some(3));
        assert_eq!(script_arguments(&rec), ["--upgrade", "--from", "1"]);
    }

    #[test]
    fn members_move_one_at_a_time_and_the_partition_follows_the_status() {
        let mut status = cluster();
        let mut rec = started(&status);
        // Before any member is marked, every role keeps the app it runs.
        let t = templates(Some(&rec), &status);
        assert_eq!(t["worker"], Template { side: Side::From, partition: None });
        // Pass 1 marks worker-1; its pod is not touched in the same pass.
        status = pass(&mut rec, &status, &running(&status, &[]), &[]).status;
        assert_eq!(state_of(&status, "worker-1"), members::UPGRADING);
        assert_eq!(state_of(&status, "worker-0"), members::CONFIGURED);
        // Pass 2 plans from that status: worker's partition goes down to 1.
        let t = templates(status.upgrade.as_ref(), &status);
        assert_eq!(t["worker"], Template { side: Side::To, partition: Some(1) });
        assert_eq!(t["head"], Template { side: Side::From, partition: None });
        // The old pod still runs: nothing to run yet, nothing else marked.
        assert!(steps(&rec, &status, &running(&status, &[])).is_empty());
        status = pass(&mut rec, &status, &running(&status, &[]), &[]).status;
        assert_eq!(state_of(&status, "worker-0"), members::CONFIGURED);
        // The recreated pod runs: its script starts, then succeeds.
        let pods = running(&status, &["worker-1"]);
        let s = steps(&rec, &status, &pods);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].pod.as_str(), s[0].container_id.as_str()), ("worker-1", "new-worker-1"));
        status = pass(&mut rec, &status, &pods, &[("worker-1", SetupOutcome::Running)]).status;
        assert_eq!(state_of(&status, "worker-1"), members::UPGRADING);
        let plan = pass(&mut rec, &status, &pods, &[("worker-1", SetupOutcome::Done)]);
        status = plan.status;
        assert_eq!(state_of(&status, "worker-1"), members::CONFIGURED);
        assert_eq!(rec.upgraded_members, ["worker-1"]);
        assert_eq!(state_of(&status, "worker-0"), members::UPGRADING, "the next member follows at once");
        assert_eq!(rec.progress().as_deref(), Some("Upgrading 1/3"));
        // The others heard of it, --addnodes-style.
        let head = &status.roles[0].members[0];
        assert_eq!(
            head.state_detail.pending_notify_cmds[0].arguments,
            ["--upgraded", "--nodegroup", "1", "--role", "worker", "--fqdns", "worker-1", "--from", "1", "--to", "2"]
        );
        assert!(plan.events.iter().any(|e| e.message.contains("member{worker-1} in role{worker} now runs app(app-2)")));
    }

    #[test]
    fn the_rollout_completes_after_the_last_member_and_templates_settle() {
        let mut status = cluster();
        let mut rec = started(&status);
        let mut fresh: Vec<&str> = Vec::new();
        for pod in ["worker-1", "worker-0", "head-0"] {
            status = pass(&mut rec, &status, &running(&status, &fresh), &[]).status;
            assert_eq!(state_of(&status, pod), members::UPGRADING);
            fresh.push(pod);
            status = pass(&mut rec, &status, &running(&status, &fresh), &[(pod, SetupOutcome::Done)]).status;
        }
        assert_eq!(rec.phase, PHASE_COMPLETED);
        assert_eq!(rec.upgraded_members, ["worker-1", "worker-0", "head-0"]);
        assert!(!rec.in_progress());
        let t = templates(Some(&rec), &status);
        assert!(t.values().all(|t| *t == Template { side: Side::To, partition: None }));
        // A finished rollout stays as it is.
        let again = rec.clone();
        pass(&mut rec, &status, &running(&status, &fresh), &[]);
        assert_eq!(rec, again);
    }

    #[test]
    fn a_failed_script_stops_the_rollout_at_that_member() {
        let mut status = cluster();
        let mut rec = started(&status);
        status = pass(&mut rec, &status, &running(&status, &[]), &[]).status;
        status = pass(&mut rec, &status, &running(&status, &["worker-1"]), &[("worker-1", SetupOutcome::Done)]).status;
        let pods = running(&status, &["worker-1", "worker-0"]);
        let failed = SetupOutcome::Failed("upgrade failed with exit status {4}\nmore".into());
        let plan = pass(&mut rec, &status, &pods, &[("worker-0", failed)]);
        status = plan.status;
        assert_eq!(state_of(&status, "worker-0"), members::UPGRADE_ERROR);
        assert_eq!(state_of(&status, "head-0"), members::CONFIGURED, "nothing after it moves");
        assert_eq!(rec.phase, PHASE_FAILED);
        assert_eq!(rec.failed_member.as_deref(), Some("worker-0"));
        let message = rec.message.clone().unwrap_or_default();
        assert!(message.contains("member{worker-0}") && message.contains("exit status {4}"), "{message}");
        assert!(plan.events.iter().any(|e| e.warning && e.reason == EVENT_REASON));
        // Later passes leave it there.
        pass(&mut rec, &status, &pods, &[]);
        assert_eq!(rec.phase, PHASE_FAILED);
        assert_eq!(rec.progress().as_deref(), Some("Upgrade failed 1/3"));
        // Rolled back, the failed member waits for a new container: the failed one is not it.
        let Begin::Rollout(mut back) = begin(V1, None, &status, &order(), &pods) else { panic!("rollback") };
        status = pass(&mut back, &status, &pods, &[]).status;
        status = pass(&mut back, &status, &running(&status, &["worker-0"]), &[("worker-1", SetupOutcome::Done)]).status;
        assert_eq!(state_of(&status, "worker-0"), members::UPGRADING);
        assert!(steps(&back, &status, &running(&status, &["worker-0"])).is_empty(), "still the failed container");
        let mut recreated = running(&status, &[]);
        recreated
            .insert("worker-0".into(), PodView { app_container_id: Some("newer".into()), ..pods["worker-0"].clone() });
        assert_eq!(steps(&back, &status, &recreated).len(), 1);
    }

    #[test]
    fn setting_the_app_back_rolls_back_the_moved_members_last_first() {
        let mut status = cluster();
        let mut rec = started(&status);
        status = pass(&mut rec, &status, &running(&status, &[]), &[]).status;
        status = pass(&mut rec, &status, &running(&status, &["worker-1"]), &[("worker-1", SetupOutcome::Done)]).status;
        let failed = SetupOutcome::Failed("no".into());
        let pods = running(&status, &["worker-1", "worker-0"]);
        status = pass(&mut rec, &status, &pods, &[("worker-0", failed)]).status;
        // spec.app back to app-1.
        let Begin::Rollout(mut back) = begin(V1, None, &status, &order(), &pods) else { panic!("rollback") };
        assert_eq!((back.from.as_str(), back.to.as_str(), back.phase.as_str()), ("app-2", "app-1", PHASE_ROLLING_BACK));
        assert_eq!(back.plan, ["worker-1", "worker-0"], "the moved and the failed member");
        assert_eq!(script_arguments(&back), ["--rollback", "--from", "2"]);
        // The failed member still counts as moved for the partition until it is back.
        let t = templates(Some(&back), &status);
        assert_eq!(t["worker"], Template { side: Side::From, partition: None });
        assert_eq!(t["head"], Template { side: Side::To, partition: None }, "head never moved: it runs app-1");
        status = pass(&mut back, &status, &pods, &[]).status;
        assert_eq!(state_of(&status, "worker-1"), members::UPGRADING);
        assert_eq!(templates(Some(&back), &status)["worker"], Template { side: Side::To, partition: Some(1) });
        // A third app is refused while the rollback runs.
        let v3 = AppVersion { name: "app-3", version: "3" };
        assert!(matches!(begin(v3, None, &status, &order(), &pods), Begin::Refused(_)));
    }

    #[test]
    fn a_completed_upgrade_rolls_back_every_member_and_a_new_upgrade_moves_everyone() {
        let mut status = cluster();
        status.upgrade = Some(UpgradeStatus {
            from: "app-1".into(),
            to: "app-2".into(),
            phase: PHASE_COMPLETED.into(),
            upgraded_members: vec!["worker-1".into(), "worker-0".into()],
            from_version: Some("1".into()),
            to_version: Some("2".into()),
            ..Default::default()
        });
        let Begin::Rollout(back) = begin(V1, None, &status, &order(), &BTreeMap::new()) else { panic!("rollback") };
        assert_eq!(back.phase, PHASE_ROLLING_BACK);
        assert_eq!(back.plan, ["head-0", "worker-1", "worker-0"], "every member, roles in reverse order");
        assert_eq!(script_arguments(&back), ["--rollback", "--from", "2"]);
        // After a rollback, the next upgrade starts over with every member.
        status.upgrade = Some(UpgradeStatus { phase: PHASE_ROLLED_BACK.into(), ..back });
        let rec = started(&status);
        assert_eq!(rec.plan, ["worker-1", "worker-0", "head-0"]);
        assert_eq!(rec.phase, PHASE_UPGRADING);
    }

    #[test]
    fn a_member_marked_but_not_yet_recreated_is_not_rolled_back() {
        let mut status = cluster();
        let mut rec = started(&status);
        status = pass(&mut rec, &status, &running(&status, &[]), &[]).status;
        assert_eq!(state_of(&status, "worker-1"), members::UPGRADING);
        // Back to app-1 before worker-1's pod was recreated: nothing moved, nothing to undo.
        let pods = running(&status, &[]);
        let Begin::Rollout(mut back) = begin(V1, None, &status, &order(), &pods) else { panic!("rollback") };
        assert!(back.plan.is_empty());
        assert_eq!(templates(Some(&back), &status)["worker"], Template { side: Side::To, partition: None });
        let plan = pass(&mut back, &status, &pods, &[]);
        assert_eq!(state_of(&plan.status, "worker-1"), members::CONFIGURED);
        assert_eq!(back.phase, PHASE_ROLLED_BACK);
    }

    #[test]
    fn members_without_a_setup_package_move_once_their_new_pod_is_ready() {
        let mut status = cluster();
        let mut rec = started(&status);
        let mut plan = members::Plan { status: status.clone(), ..Default::default() };
        advance(&mut rec, &mut plan, &RoleFacts::default(), &running(&status, &[]), &BTreeMap::new());
        status = plan.status;
        let mut pods = running(&status, &["worker-1"]);
        pods.get_mut("worker-1").expect("pod").ready = false;
        let mut plan = members::Plan { status: status.clone(), ..Default::default() };
        advance(&mut rec, &mut plan, &RoleFacts::default(), &pods, &BTreeMap::new());
        assert_eq!(state_of(&plan.status, "worker-1"), members::UPGRADING);
        pods.get_mut("worker-1").expect("pod").ready = true;
        let mut plan = members::Plan { status: plan.status.clone(), ..Default::default() };
        advance(&mut rec, &mut plan, &RoleFacts::default(), &pods, &BTreeMap::new());
        assert_eq!(state_of(&plan.status, "worker-1"), members::CONFIGURED);
        assert!(
            plan.status.roles.iter().flat_map(|r| &r.members).all(|m| m.state_detail.pending_notify_cmds.is_empty())
        );
    }

    #[test]
    fn pinning_keeps_the_selector_and_sets_the_partition() {
        let mut sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "spec": {
                "selector": {"matchLabels": {names::LABEL_APP: "app-2", "x": "y"}},
                "serviceName": "h",
                "template": {"metadata": {"labels": {names::LABEL_APP: "app-2", "x": "y"}}}
            }
        }))
        .expect("sts");
        pin_statefulset(&mut sts, "app-1", Some(2));
        let spec = sts.spec.as_ref().expect("spec");
        assert_eq!(spec.selector.match_labels.as_ref().expect("labels")[names::LABEL_APP], "app-1");
        let template_labels = spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref()).expect("labels");
        assert_eq!(template_labels[names::LABEL_APP], "app-1");
        let strategy = spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
        assert_eq!(strategy.and_then(|r| r.partition), Some(2));
        pin_statefulset(&mut sts, "app-1", None);
        assert_eq!(sts.spec.as_ref().and_then(|s| s.update_strategy.as_ref()), None);
    }
}
