//! The steps that exec into members: initial setup (file injections, setup package,
//! `--configure`) before the plan, and lifecycle notifications (fresh configmeta,
//! `--reconnect`, `--addnodes`/`--delnodes`) after the apply. Which members to work on and
//! what their results mean for the status are pure functions; the execs run concurrently,
//! each time-bound.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kdfed_crds::app::KubeDirectorAppSpec;
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterSpec, KubeDirectorClusterStatus, NotificationDesc};
use kdfed_crds::resolve::Resolved;
use kube::api::Api;
use tracing::{info, warn};

use super::dereference::Observed;
use super::members::{self, PodView, SetupOutcome};
use super::plan::Desired;
use super::reconcile::Context;
use super::{configmeta, connections, setup};

/// What setup and notifications need to know about the cluster being reconciled.
pub struct SetupView<'a> {
    /// The cluster (Events are recorded on it).
    pub cluster: &'a KubeDirectorCluster,
    /// Its resolved spec.
    pub spec: &'a KubeDirectorClusterSpec,
    /// Its resolved app, its config as the cluster's choices make it.
    pub app: &'a KubeDirectorAppSpec,
    /// What the director wants of it.
    pub desired: &'a Desired,
    /// Master key of `KubeDirectorConfig`, to decrypt secret keys into configmeta only.
    pub master_key: Option<&'a str>,
    /// Its connected objects as configmeta shows them.
    pub connections: configmeta::Connections,
    /// kdfed: the value of each config choice (empty for apps without choices).
    pub choices: &'a BTreeMap<String, String>,
}

impl<'a> SetupView<'a> {
    /// The view of a resolved cluster, from what the dereference step read.
    pub fn new(
        cluster: &'a KubeDirectorCluster,
        resolved: &'a Resolved,
        desired: &'a Desired,
        observed: &'a Observed,
    ) -> SetupView<'a> {
        let config = observed.config.as_ref();
        let facts = &desired.facts;
        SetupView {
            cluster,
            spec: &resolved.cluster,
            app: &resolved.chosen,
            desired,
            master_key: config.and_then(|c| c.master_encryption_key.as_deref()),
            connections: connections::for_configmeta(
                &observed.connected,
                &facts.name,
                &facts.namespace,
                &facts.domain_base,
                config,
            ),
            choices: &resolved.choices,
        }
    }

    /// Per-member configmeta documents of the cluster as `status` describes it.
    pub fn configmeta(&self, status: &KubeDirectorClusterStatus) -> BTreeMap<String, String> {
        let facts = &self.desired.facts;
        let headless = status.cluster_service.clone().unwrap_or_default();
        let roles: Vec<configmeta::RoleMembers<'_>> = self
            .spec
            .roles
            .iter()
            .filter_map(|spec| {
                let role = status.roles.iter().find(|r| r.id == spec.id)?;
                let members: Vec<_> = role
                    .members
                    .iter()
                    .filter(|m| !matches!(m.state.as_str(), members::DELETE_PENDING | members::DELETING))
                    .collect();
                let (secret_keys, unreadable) =
                    kdfed_common::secretkeys::plain_values(&spec.secret_keys, self.master_key);
                for e in unreadable {
                    warn!(role = %spec.id, "{e}");
                }
                (!members.is_empty()).then_some(configmeta::RoleMembers { spec, members, secret_keys })
            })
            .collect();
        let view = configmeta::ClusterView {
            name: &facts.name,
            uid: &facts.uid,
            app: self.app,
            domain: configmeta::domain(&headless, &facts.namespace, &facts.domain_base),
            roles,
            choices: self.choices,
        };
        let base = configmeta::with_connections(configmeta::cluster_document(&view, None), &self.connections);
        view.roles
            .iter()
            .flat_map(|r| &r.members)
            .filter_map(|m| Some((m.pod.clone(), configmeta::for_member(&view, &base, &m.pod)?.to_string())))
            .collect()
    }
}

/// Takes every member in `creating` whose role needs exec steps one step further, all at
/// once; each exec is time-bound, so a slow member delays this cluster's pass by at most a
/// few exec timeouts and never blocks other clusters (reconciles run concurrently).
pub async fn run_setups(
    ctx: &Context,
    pods_api: &Api<Pod>,
    view: &SetupView<'_>,
    status: &KubeDirectorClusterStatus,
    pods: &BTreeMap<String, PodView>,
) -> BTreeMap<String, SetupOutcome> {
    let mut work = setups(view, status, pods, ctx.configcli.as_ref());
    if work.is_empty() {
        return BTreeMap::new();
    }
    let documents = view.configmeta(status);
    for w in &mut work {
        w.configmeta = documents.get(&w.pod).cloned().unwrap_or_default();
    }
    let results = futures::future::join_all(work.iter().map(|w| setup::advance(pods_api, w))).await;
    for (w, outcome) in work.iter().zip(&results) {
        observe_configure(ctx, &view.desired.facts.namespace, w, outcome);
    }
    work.into_iter().map(|w| w.pod).zip(results).collect()
}

/// The setups to advance: members in `creating` of roles that need exec steps, whose pod
/// still runs the container their setup started in (configmeta is filled in later).
fn setups(
    view: &SetupView<'_>,
    status: &KubeDirectorClusterStatus,
    pods: &BTreeMap<String, PodView>,
    configcli: Option<&setup::ConfigcliPackage>,
) -> Vec<setup::MemberSetup> {
    let mut work = Vec::new();
    for role in &status.roles {
        let Some(want) = view.desired.role(&role.id).filter(|w| w.needs_exec()) else { continue };
        let Some(spec_role) = view.spec.roles.iter().find(|r| r.id == role.id) else { continue };
        let app_role = view.app.role(&role.id);
        for m in role.members.iter().filter(|m| m.state == members::CREATING) {
            let Some(container) = m.state_detail.configuring_container.clone() else { continue };
            if pods.get(&m.pod).and_then(|p| p.app_container_id.as_ref()) != Some(&container) {
                continue;
            }
            let package_url = if want.setup_package {
                app_role.and_then(|r| r.config_package.clone()).flatten().map(|p| p.package_url)
            } else {
                None
            };
            let injections = spec_role
                .file_injections
                .iter()
                .map(|f| setup::Injection {
                    src_url: f.src_url.clone(),
                    dest_dir: f.dest_dir.clone(),
                    mode: f.permissions.as_ref().and_then(|p| p.file_mode),
                    owner: f.permissions.as_ref().and_then(|p| p.file_owner.clone()),
                    group: f.permissions.as_ref().and_then(|p| p.file_group.clone()),
                })
                .collect();
            let max_log = app_role.and_then(|r| r.max_log_size_dump).unwrap_or(setup::DEFAULT_MAX_LOG_SIZE_DUMP);
            // Upstream: a role that lists its events and leaves out `configure` gets its
            // package and configmeta but no `--configure` run.
            let run_configure = app_role
                .and_then(|r| r.event_list.as_ref())
                .is_none_or(|events| events.iter().any(|e| e == "configure"));
            work.push(setup::MemberSetup {
                pod: m.pod.clone(),
                container_id: container,
                injections,
                package_url,
                configmeta: String::new(),
                max_log_size_dump: usize::try_from(max_log.max(0)).unwrap_or(0),
                systemd_required: view.app.systemd_required == Some(true),
                run_configure,
                configcli: configcli.cloned(),
            });
        }
    }
    work
}

/// Runs the rollout's scripts (`--upgrade` or `--rollback`) one exec step further in the
/// members whose pods were recreated from the target app's template, all at once; the
/// members of roles without a setup package need none (the planner moves them when Ready).
pub async fn run_upgrade_steps(
    pods_api: &Api<Pod>,
    view: &SetupView<'_>,
    status: &KubeDirectorClusterStatus,
    steps: &[super::upgrade::Step],
) -> BTreeMap<String, SetupOutcome> {
    let work: Vec<setup::UpgradeSetup> = steps
        .iter()
        .filter_map(|step| {
            let role = view.app.role(&step.role)?;
            let package = role.config_package.clone().flatten()?;
            let max_log = role.max_log_size_dump.unwrap_or(setup::DEFAULT_MAX_LOG_SIZE_DUMP);
            Some(setup::UpgradeSetup {
                pod: step.pod.clone(),
                container_id: step.container_id.clone(),
                package_url: package.package_url,
                configmeta: String::new(),
                arguments: step.arguments.clone(),
                max_log_size_dump: usize::try_from(max_log.max(0)).unwrap_or(0),
            })
        })
        .collect();
    if work.is_empty() {
        return BTreeMap::new();
    }
    let documents = view.configmeta(status);
    let work: Vec<setup::UpgradeSetup> = work
        .into_iter()
        .map(|mut w| {
            w.configmeta = documents.get(&w.pod).cloned().unwrap_or_default();
            w
        })
        .collect();
    let results = futures::future::join_all(work.iter().map(|w| setup::advance_upgrade(pods_api, w))).await;
    work.into_iter().map(|w| w.pod).zip(results).collect()
}

/// Counts and times initial setups (`configure` step): a run is timed from the pass that
/// saw it running in this process to the pass that saw it finish.
fn observe_configure(ctx: &Context, ns: &str, setup: &setup::MemberSetup, outcome: &SetupOutcome) {
    let key = format!("{ns}/{}/{}", setup.pod, setup.container_id);
    let Ok(mut started) = ctx.configure_started.lock() else { return };
    match outcome {
        SetupOutcome::Running => {
            started.entry(key).or_insert_with(Instant::now);
        }
        SetupOutcome::Done => {
            // A run this process never saw start (finished before a restart) is not counted.
            if let Some(t) = started.remove(&key) {
                ctx.metrics.observe_setup("configure", false, Some(t.elapsed().as_secs_f64()));
            } else if setup.package_url.is_none() {
                ctx.metrics.observe_setup("configure", false, None);
            }
        }
        SetupOutcome::Failed(_) => {
            let seconds = started.remove(&key).map(|t| t.elapsed().as_secs_f64());
            ctx.metrics.observe_setup("configure", true, seconds);
        }
        SetupOutcome::Interrupted => {
            started.remove(&key);
        }
        SetupOutcome::Waiting(_) | SetupOutcome::Retrying(_) => {}
    }
}

/// A configured member with something to hear.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    pod: String,
    role: String,
    /// Its configmeta is of an older spec generation.
    stale: bool,
    /// It is behind the connection version: `--reconnect` after the new configmeta.
    reconnect: bool,
    /// It was configured with other config choices: `--reconfigure` after the new configmeta.
    reconfigure: bool,
    /// Its pending notifications, in order.
    cmds: Vec<NotificationDesc>,
}

/// What reached one member.
#[derive(Debug, Default, PartialEq, Eq)]
struct Delivery {
    /// Fresh configmeta was written (and `--reconnect` run, if it was due).
    written: bool,
    /// `--reconnect` ran.
    reconnected: bool,
    /// `--reconfigure` ran.
    reconfigured: bool,
    /// How many pending notifications were delivered, in order.
    delivered: usize,
    /// What failed, for the log and a Warning Event.
    problems: Vec<String>,
}

/// Brings configured members of roles with a setup package up to date, each in order:
/// fresh configmeta when the spec generation moved; then `startscript --reconnect` when the
/// connection version moved past the member's (upstream: whatever the role's `eventList`);
/// then its pending `--addnodes`/`--delnodes`. A failed step is reported and retried on a
/// later pass (configmeta counts as written only once `--reconnect` succeeded; a failed
/// notification stays queued and blocks the ones after it). Returns whether any member was
/// worked on.
pub async fn deliver_notifications(
    ctx: &Context,
    pods_api: &Api<Pod>,
    view: &SetupView<'_>,
    status: &mut KubeDirectorClusterStatus,
    pods: &BTreeMap<String, PodView>,
    connection_version: i64,
) -> bool {
    let targets = targets(view.desired, status, pods, connection_version);
    if targets.is_empty() {
        return false;
    }
    let documents = view.configmeta(status);
    let work = targets.iter().map(|t| deliver(ctx, pods_api, t, documents.get(&t.pod).map(String::as_str)));
    let deliveries = futures::future::join_all(work).await;
    let problems = record(status, &targets, &deliveries, connection_version);
    for message in problems {
        warn!("{message}");
        ctx.recorder.publish(view.cluster, true, "Member", &message).await;
    }
    true
}

/// Configured members of roles with a setup package that have stale configmeta or pending
/// notifications, and still run the container they were configured in.
fn targets(
    desired: &Desired,
    status: &KubeDirectorClusterStatus,
    pods: &BTreeMap<String, PodView>,
    connection_version: i64,
) -> Vec<Target> {
    let generation = status.spec_generation_to_process.unwrap_or(0);
    let mut targets = Vec::new();
    for role in &status.roles {
        if !desired.role(&role.id).is_some_and(|w| w.setup_package) {
            continue;
        }
        for m in role.members.iter().filter(|m| m.state == members::CONFIGURED) {
            let stale = m.state_detail.last_config_data_generation.is_some_and(|g| g != generation);
            if !stale && m.state_detail.pending_notify_cmds.is_empty() {
                continue;
            }
            let live = pods.get(&m.pod).and_then(|p| p.app_container_id.as_ref());
            if live.is_none() || live != m.state_detail.last_configured_container.as_ref() {
                continue;
            }
            let behind = m.state_detail.last_connection_version.is_some_and(|v| v < connection_version);
            let seen = &m.state_detail.last_config_choices;
            targets.push(Target {
                pod: m.pod.clone(),
                role: role.id.clone(),
                stale,
                reconnect: stale && behind,
                reconfigure: stale && !seen.is_empty() && seen != &status.config_choices,
                cmds: m.state_detail.pending_notify_cmds.clone(),
            });
        }
    }
    targets
}

/// Brings one member up to date (see [`deliver_notifications`]); stops at its first failure.
async fn deliver(ctx: &Context, pods_api: &Api<Pod>, t: &Target, document: Option<&str>) -> Delivery {
    let mut result = Delivery::default();
    let pod = t.pod.as_str();
    if t.stale
        && let Some(document) = document
    {
        match setup::write_file(pods_api, pod, configmeta::PATH, document).await {
            Ok(out) if setup::succeeded(&out) => {}
            Ok(_) | Err(_) => {
                result.problems.push(format!("failed to update config in member{{{pod}}} in role{{{}}}", t.role));
                return result;
            }
        }
        if t.reconnect {
            info!(member = %pod, "--reconnect will be called for pod : {pod}");
            if !notify_timed(ctx, pods_api, pod, &["--reconnect".to_string()]).await {
                let message =
                    format!("failed to run startscript with --reconnect in member{{{pod}}} in role{{{}}}", t.role);
                result.problems.push(message);
                return result;
            }
            result.reconnected = true;
        }
        if t.reconfigure {
            info!(member = %pod, "--reconfigure will be called for pod : {pod}");
            if !notify_timed(ctx, pods_api, pod, &["--reconfigure".to_string()]).await {
                let message =
                    format!("failed to run startscript with --reconfigure in member{{{pod}}} in role{{{}}}", t.role);
                result.problems.push(message);
                return result;
            }
            result.reconfigured = true;
        }
        result.written = true;
    }
    for cmd in &t.cmds {
        info!(member = %pod, "will notify member{{{pod}}}: {}", cmd.arguments.join(" "));
        if !notify_timed(ctx, pods_api, pod, &cmd.arguments).await {
            result.problems.push(format!("failed to notify member{{{pod}}} about member changes"));
            break;
        }
        result.delivered += 1;
    }
    result
}

/// Records what reached each member in `status`; returns the problems, in target order.
fn record(
    status: &mut KubeDirectorClusterStatus,
    targets: &[Target],
    deliveries: &[Delivery],
    connection_version: i64,
) -> Vec<String> {
    let generation = status.spec_generation_to_process.unwrap_or(0);
    let mut problems = Vec::new();
    for (t, result) in targets.iter().zip(deliveries) {
        if result.written {
            members::configmeta_written(status, &t.pod, generation);
        }
        if result.reconnected
            && let Some(m) = status.roles.iter_mut().flat_map(|r| r.members.iter_mut()).find(|m| m.pod == t.pod)
        {
            m.state_detail.last_connection_version = Some(connection_version);
        }
        if result.reconfigured
            && let Some(m) = status.roles.iter_mut().flat_map(|r| r.members.iter_mut()).find(|m| m.pod == t.pod)
        {
            m.state_detail.last_config_choices = status.config_choices.clone();
        }
        members::notifications_delivered(status, &t.pod, result.delivered);
        problems.extend(result.problems.iter().cloned());
    }
    problems
}

/// Runs one notification and records it in the metrics; whether it succeeded.
async fn notify_timed(ctx: &Context, pods_api: &Api<Pod>, pod: &str, arguments: &[String]) -> bool {
    let started = Instant::now();
    let result = setup::notify(pods_api, pod, arguments).await;
    let ok = matches!(&result, Ok(out) if setup::succeeded(out));
    if let Err(e) = &result {
        warn!(member = %pod, "notification not delivered: {e}");
    }
    let step = arguments.first().map(|a| a.trim_start_matches('-')).unwrap_or_default();
    if crate::metrics::SETUP_STEPS.contains(&step) {
        ctx.metrics.observe_setup(step, !ok, Some(started.elapsed().as_secs_f64()));
    }
    ok
}

#[cfg(test)]
mod tests {
    use kdfed_crds::cluster::{MemberStatus, RoleStatus};

    use super::*;
    use crate::director::members::{ClusterFacts, RoleWanted};

    fn desired() -> Desired {
        let role = |id: &str, setup_package: bool| RoleWanted {
            id: id.into(),
            members: 1,
            storage: false,
            ports: false,
            setup_package,
            file_injections: false,
            events: Vec::new(),
        };
        Desired {
            facts: ClusterFacts {
                name: "c".into(),
                uid: "u".into(),
                naming_scheme: "UID".into(),
                retain_pvcs_when_scaled: false,
                namespace: "ns".into(),
                domain_base: ".svc.cluster.local".into(),
            },
            roles: vec![role("pkg", true), role("plain", false)],
            token_roles: Default::default(),
            choices: Default::default(),
        }
    }

    /// A configured member running container `c-<pod>`, with configmeta of generation 2,
    /// at connection version 1.
    fn configured(pod: &str) -> MemberStatus {
        let mut m = MemberStatus { pod: pod.into(), state: members::CONFIGURED.into(), ..MemberStatus::default() };
        m.state_detail.last_configured_container = Some(format!("c-{pod}"));
        m.state_detail.last_config_data_generation = Some(2);
        m.state_detail.last_connection_version = Some(1);
        m
    }

    fn status(generation: i64, roles: Vec<(&str, Vec<MemberStatus>)>) -> KubeDirectorClusterStatus {
        KubeDirectorClusterStatus {
            spec_generation_to_process: Some(generation),
            roles: roles
                .into_iter()
                .map(|(id, members)| RoleStatus { id: id.into(), members, ..RoleStatus::default() })
                .collect(),
            ..KubeDirectorClusterStatus::default()
        }
    }

    fn pods(status: &KubeDirectorClusterStatus) -> BTreeMap<String, PodView> {
        let container = |pod: &str| PodView { app_container_id: Some(format!("c-{pod}")), ..PodView::default() };
        status.roles.iter().flat_map(|r| &r.members).map(|m| (m.pod.clone(), container(&m.pod))).collect()
    }

    #[test]
    fn targets_are_live_configured_members_of_package_roles_with_news() {
        let mut news = configured("pkg-1");
        news.state_detail.pending_notify_cmds.push(members::notification(members::ADDNODES, "w", &[]));
        let mut restarted = configured("pkg-2");
        restarted.state_detail.pending_notify_cmds = news.state_detail.pending_notify_cmds.clone();
        let current = status(
            2,
            vec![("pkg", vec![configured("pkg-0"), news, restarted]), ("plain", vec![configured("plain-0")])],
        );
        let mut live = pods(&current);
        live.insert("pkg-2".into(), PodView { app_container_id: Some("other".into()), ..PodView::default() });
        let found: Vec<(String, bool, bool, usize)> = targets(&desired(), &current, &live, 1)
            .into_iter()
            .map(|t| (t.pod, t.stale, t.reconnect, t.cmds.len()))
            .collect();
        assert_eq!(found, vec![("pkg-1".to_string(), false, false, 1)], "nothing new, restarted or plain: skipped");
        let moved = status(3, vec![("pkg", vec![configured("pkg-0")])]);
        let behind: Vec<(bool, bool)> =
            targets(&desired(), &moved, &pods(&moved), 2).into_iter().map(|t| (t.stale, t.reconnect)).collect();
        assert_eq!(behind, vec![(true, true)], "a new generation and a new connection version");
        let same_version: Vec<bool> =
            targets(&desired(), &moved, &pods(&moved), 1).into_iter().map(|t| t.reconnect).collect();
        assert_eq!(same_version, vec![false]);
    }

    #[test]
    fn record_keeps_what_reached_each_member() {
        let mut member = configured("pkg-0");
        let cmd = members::notification(members::ADDNODES, "w", &[]);
        member.state_detail.pending_notify_cmds = vec![cmd.clone(), cmd.clone()];
        let mut current = status(3, vec![("pkg", vec![member, configured("pkg-1")])]);
        let target = |pod: &str| Target {
            pod: pod.into(),
            role: "pkg".into(),
            stale: true,
            reconnect: true,
            reconfigure: false,
            cmds: vec![cmd.clone(), cmd.clone()],
        };
        let deliveries = [
            Delivery {
                written: true,
                reconnected: true,
                delivered: 1,
                problems: vec!["second failed".into()],
                ..Delivery::default()
            },
            Delivery { problems: vec!["config failed".into()], ..Delivery::default() },
        ];
        let problems = record(&mut current, &[target("pkg-0"), target("pkg-1")], &deliveries, 5);
        assert_eq!(problems, vec!["second failed", "config failed"]);
        let first = &current.roles[0].members[0].state_detail;
        assert_eq!(first.last_config_data_generation, Some(3));
        assert_eq!(first.last_connection_version, Some(5));
        assert_eq!(first.pending_notify_cmds.len(), 1, "the failed one stays queued");
        let second = &current.roles[0].members[1].state_detail;
        assert_eq!((second.last_config_data_generation, second.last_connection_version), (Some(2), Some(1)));
    }

    #[test]
    fn members_configured_with_other_choices_are_reconfigured_after_fresh_configmeta() {
        let choices = |v: &str| BTreeMap::from([("jupyter".to_string(), v.to_string())]);
        let mut old = configured("pkg-0");
        old.state_detail.last_config_choices = choices("false");
        let mut current = configured("pkg-1");
        current.state_detail.last_config_choices = choices("true");
        let mut moved = status(3, vec![("pkg", vec![old, current, configured("pkg-2")])]);
        moved.config_choices = choices("true");
        let found: Vec<(String, bool)> =
            targets(&desired(), &moved, &pods(&moved), 1).into_iter().map(|t| (t.pod, t.reconfigure)).collect();
        assert_eq!(
            found,
            [("pkg-0".into(), true), ("pkg-1".into(), false), ("pkg-2".into(), false)],
            "only the member that saw other choices; one that recorded none is not told"
        );
        let t = targets(&desired(), &moved, &pods(&moved), 1).remove(0);
        let done = Delivery { written: true, reconfigured: true, ..Delivery::default() };
        assert!(record(&mut moved, std::slice::from_ref(&t), &[done], 1).is_empty());
        assert_eq!(moved.roles[0].members[0].state_detail.last_config_choices, choices("true"));
        assert_eq!(moved.roles[0].members[0].state_detail.last_config_data_generation, Some(3));
        let failed = Delivery { problems: vec!["no".into()], ..Delivery::default() };
        let mut again = status(3, vec![("pkg", vec![configured("pkg-0")])]);
        again.roles[0].members[0].state_detail.last_config_choices = choices("false");
        record(&mut again, &[t], &[failed], 1);
        assert_eq!(again.roles[0].members[0].state_detail.last_config_choices, choices("false"), "retried later");
    }
}
