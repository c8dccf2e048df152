//! Fold (pure): the member cluster's report (the Work's status) folded into the intent's
//! status, never showing stale data as current: `MemberAvailable`, `Applied` and `Ready`,
//! with the Events their changes send.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kdfed_common::conditions::{condition, set_condition};
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus, PlacementStatus};
use kdfed_crds::federation::{KubeDirectorMember, KubeDirectorWork, KubeDirectorWorkStatus};
use kube::ResourceExt;

use super::Event;

/// The intent's status after a fold, and what follows from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Folded {
    /// The new status.
    pub status: KubeDirectorClusterStatus,
    /// Events to publish: a new apply failure, a change of `Ready`.
    pub events: Vec<Event>,
    /// The member cluster is available and applied the latest Work: the next look can wait.
    pub settled: bool,
    /// `Ready` just turned `True` from `False` or from nothing (the cluster's configured latency).
    pub configured: bool,
}

/// Folds the report of `work` (from `member_cluster`, placed per `placement`) into
/// `status`, for the intent's `generation`.
pub fn fold_report(
    status: &KubeDirectorClusterStatus,
    member_cluster: Option<&KubeDirectorMember>,
    work: Option<&KubeDirectorWork>,
    placement: &PlacementStatus,
    generation: Option<i64>,
) -> Folded {
    let old = status;
    let mut status = status.clone();
    let mut events = Vec::new();
    let available = member_cluster.and_then(|m| m.status.as_ref()).and_then(|s| condition(&s.conditions, "Available"));
    let member_ok = available.is_some_and(|c| c.status == "True");
    let report = work.and_then(|w| w.status.clone()).unwrap_or_default();
    copy_cluster_status(&mut status, &report);
    status.member_status_time = report.report_time.clone();
    status.observed_generation = generation;
    let (ms, mr, mm) = member_available(&placement.member, member_cluster.is_some(), available);
    status.conditions = set_condition(&status.conditions, "MemberAvailable", ms, mr, &mm, generation);

    let work_generation = work.and_then(|w| w.metadata.generation);
    let applied = report.observed_generation.is_some()
        && report.observed_generation == work_generation
        && report.applied_epoch == Some(placement.epoch);
    let (a_status, a_reason, a_message) =
        applied_condition(&placement.member, generation, applied, &report, work_generation);
    let was_failed =
        condition(&old.conditions, "Applied").is_some_and(|c| c.reason == "ApplyFailed" && c.message == a_message);
    status.conditions = set_condition(&status.conditions, "Applied", a_status, a_reason, &a_message, generation);
    if a_reason == "ApplyFailed" && !was_failed {
        events.push(Event::new(true, "ApplyFailed", a_message));
    }

    let (r_status, r_reason, r_message) = ready_condition(&status, &placement.member, member_ok, applied, &report);
    status.conditions = set_condition(&status.conditions, "Ready", r_status, r_reason, &r_message, generation);
    let was_ready = condition(&old.conditions, "Ready").map(|c| c.status.as_str());
    let mut configured = false;
    if was_ready != Some(r_status) {
        configured = r_status == "True" && was_ready.is_none_or(|s| s == "False");
        events.push(Event::new(r_status == "Unknown", r_reason, r_message));
    }
    Folded { status, events, settled: member_ok && applied, configured }
}

/// The director's status of the member's copy, where the member reported one.
fn copy_cluster_status(status: &mut KubeDirectorClusterStatus, report: &KubeDirectorWorkStatus) {
    if let Some(cs) = report.cluster_status.clone() {
        status.state = cs.state;
        status.member_state_rollup = cs.member_state_rollup;
        status.roles = cs.roles;
        status.members_ready = cs.members_ready;
        status.cluster_service = cs.cluster_service;
        status.last_node_id = cs.last_node_id;
        status.spec_generation_to_process = cs.spec_generation_to_process;
        status.generation_uid = cs.generation_uid;
        status.last_connection_hash = cs.last_connection_hash;
        status.config_choices = cs.config_choices;
        // A live upgrade's progress, as the member's director reports it.
        status.upgrade = cs.upgrade;
    }
}

/// The `MemberAvailable` condition (status, reason, message): the member cluster's own
/// `Available`, or why there is none.
fn member_available<'a>(member: &str, exists: bool, available: Option<&'a Condition>) -> (&'a str, &'a str, String) {
    match (exists, available) {
        (false, _) => ("False", "MemberGone", format!("member {member} is not registered")),
        (true, Some(c)) => (c.status.as_str(), c.reason.as_str(), format!("member {member}: {}", c.message)),
        (true, None) => ("Unknown", "NotJoined", format!("member {member} has not joined yet")),
    }
}

/// The `Ready` condition: `Unknown` while the member cluster is unavailable (its data is
/// only "last seen at" then), `True` once it applied the latest spec and reports
/// `configured`, `False` while it gets there.
fn ready_condition(
    status: &KubeDirectorClusterStatus,
    member: &str,
    member_ok: bool,
    applied: bool,
    report: &KubeDirectorWorkStatus,
) -> (&'static str, &'static str, String) {
    if !member_ok {
        let seen = report.report_time.as_ref().map(|t| t.0.to_string()).unwrap_or_else(|| "never".into());
        let message = format!("member {member} is unavailable; member data last seen at {seen}");
        ("Unknown", "MemberUnavailable", message)
    } else if applied && status.state.as_deref() == Some("configured") {
        ("True", "Configured", "every member is configured".to_string())
    } else {
        ("False", "Reconciling", format!("state {}", status.state.clone().unwrap_or_else(|| "pending".into())))
    }
}

/// The `Applied` condition from a member's report (status, reason, message): the Work's
/// generation applied, unless the member's director says its API server refused an object
/// of the cluster; or the member's report of why it could not apply the Work; or pending.
pub fn applied_condition(
    member: &str,
    generation: Option<i64>,
    applied: bool,
    report: &KubeDirectorWorkStatus,
    work_generation: Option<i64>,
) -> (&'static str, &'static str, String) {
    // Hub sync's report of why it could not apply this Work's generation, if it did.
    let failed = condition(&report.conditions, "Applied")
        .filter(|c| c.status == "False" && c.reason == "ApplyFailed" && c.observed_generation == work_generation);
    // The director's: the local copy is there, but an object it needs was refused.
    let refused = report
        .cluster_status
        .as_ref()
        .and_then(|s| condition(&s.conditions, "Applied"))
        .filter(|c| c.status == "False" && c.reason == "ApplyFailed");
    match (applied, refused, failed) {
        (true, Some(r), _) => ("False", "ApplyFailed", format!("member {member} cannot apply it: {}", r.message)),
        (true, None, _) => {
            ("True", "Applied", format!("member {member} applied generation {}", generation.unwrap_or(0)))
        }
        (false, _, Some(f)) => ("False", "ApplyFailed", format!("member {member} cannot apply it: {}", f.message)),
        (false, _, None) => ("False", "Pending", format!("waiting for member {member} to apply the latest spec")),
    }
}

/// Whether a cluster placed on `member` shows another availability of it than the member's
/// `Available` condition has now (its heartbeat stopped or came back since the cluster's
/// status was written). Without this, `Ready=True` would stay on a cluster until its next
/// periodic pass (30 s) although its member's heartbeat is gone.
pub fn availability_outdated(intent: &KubeDirectorCluster, member: &KubeDirectorMember) -> bool {
    let status = intent.status.as_ref();
    if status.and_then(|s| s.placement.as_ref()).is_none_or(|p| p.member != member.name_any()) {
        return false;
    }
    let now = member
        .status
        .as_ref()
        .and_then(|s| condition(&s.conditions, "Available"))
        .map_or("Unknown", |c| c.status.as_str());
    let shown = status.and_then(|s| condition(&s.conditions, "MemberAvailable")).map(|c| c.status.as_str());
    shown != Some(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intents::fixtures::{at, condition_since, intent, member_cluster};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kdfed_crds::federation::KubeDirectorWorkSpec;
    use serde_json::json;

    fn applied_report(work: Option<(&str, &str)>, director: Option<(&str, &str)>) -> KubeDirectorWorkStatus {
        let c = |(status, reason): (&str, &str), generation| {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>(json!({
                "type": "Applied", "status": status, "reason": reason, "message": format!("{reason} here"),
                "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": generation,
            }))
            .expect("condition")
        };
        KubeDirectorWorkStatus {
            conditions: work.map(|w| c(w, 3)).into_iter().collect(),
            cluster_status: Some(KubeDirectorClusterStatus {
                conditions: director.map(|d| c(d, 1)).into_iter().collect(),
                ..KubeDirectorClusterStatus::default()
            }),
            ..KubeDirectorWorkStatus::default()
        }
    }

    #[test]
    fn a_refusal_by_the_members_api_server_shows_as_apply_failed_on_the_hub() {
        let refused = applied_report(Some(("True", "Applied")), Some(("False", "ApplyFailed")));
        assert_eq!(
            applied_condition("east", Some(2), true, &refused, Some(3)),
            ("False", "ApplyFailed", "member east cannot apply it: ApplyFailed here".to_string())
        );
        let fine = applied_report(Some(("True", "Applied")), Some(("True", "Applied")));
        assert_eq!(
            applied_condition("east", Some(2), true, &fine, Some(3)),
            ("True", "Applied", "member east applied generation 2".to_string())
        );
        let copy_refused = applied_report(Some(("False", "ApplyFailed")), None);
        assert_eq!(applied_condition("east", Some(2), false, &copy_refused, Some(3)).1, "ApplyFailed");
        assert_eq!(applied_condition("east", Some(2), false, &copy_refused, Some(4)).1, "Pending", "older generation");
    }

    #[test]
    fn a_member_s_lost_heartbeat_wakes_the_clusters_that_still_show_it_available() {
        let member_with = |available: &str| -> KubeDirectorMember {
            serde_json::from_value(json!({
                "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember",
                "metadata": {"name": "east"}, "spec": {},
                "status": {"conditions": [{"type": "Available", "status": available, "reason": "r", "message": "",
                    "lastTransitionTime": "2026-12-01T00:00:00Z"}]}
            }))
            .expect("member")
        };
        let mut shown_available = intent("db", Some("east"), &[]);
        if let Some(s) = shown_available.status.as_mut() {
            s.conditions = set_condition(&[], "MemberAvailable", "True", "HeartbeatRenewed", "", Some(1));
        }
        assert!(availability_outdated(&shown_available, &member_with("Unknown")), "heartbeat lost: fold again");
        assert!(!availability_outdated(&shown_available, &member_with("True")), "nothing changed");
        let never_folded = intent("db", Some("east"), &[]);
        assert!(availability_outdated(&never_folded, &member_with("True")));
        assert!(!availability_outdated(&intent("db", Some("west"), &[]), &member_with("Unknown")), "another member");
        assert!(!availability_outdated(&intent("db", None, &[]), &member_with("Unknown")), "not placed");
    }

    const EPOCH: i64 = 2;

    fn placement() -> PlacementStatus {
        PlacementStatus { member: "east".into(), epoch: EPOCH, time: None }
    }

    /// A Work of generation 5 whose member applied `applied` (generation, epoch) and reports
    /// `state` at `reported`.
    fn work(applied: Option<(i64, i64)>, state: &str, reported: Option<jiff::Timestamp>) -> KubeDirectorWork {
        let mut w = KubeDirectorWork::new("default.db", KubeDirectorWorkSpec::default());
        w.metadata.generation = Some(5);
        w.status = Some(KubeDirectorWorkStatus {
            observed_generation: applied.map(|a| a.0),
            applied_epoch: applied.map(|a| a.1),
            cluster_status: Some(KubeDirectorClusterStatus {
                state: Some(state.into()),
                members_ready: Some("1/1".into()),
                ..Default::default()
            }),
            report_time: reported.map(Time),
            conditions: vec![],
        });
        w
    }

    fn shown(status: &KubeDirectorClusterStatus, type_: &str) -> Option<(String, String)> {
        condition(&status.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
    }

    fn pair(status: &str, reason: &str) -> Option<(String, String)> {
        Some((status.into(), reason.into()))
    }

    #[test]
    fn a_configured_report_of_the_latest_work_from_an_available_member_makes_the_cluster_ready() {
        let east = member_cluster("east", Some("True"), at(0), "4");
        let report = work(Some((5, EPOCH)), "configured", Some(at(30)));
        let folded = fold_report(&Default::default(), Some(&east), Some(&report), &placement(), Some(7));
        let status = &folded.status;
        assert_eq!((status.state.as_deref(), status.members_ready.as_deref()), (Some("configured"), Some("1/1")));
        assert_eq!(status.member_status_time, Some(Time(at(30))));
        assert_eq!(status.observed_generation, Some(7));
        assert_eq!(shown(status, "MemberAvailable"), pair("True", "HeartbeatRenewed"));
        assert_eq!(shown(status, "Applied"), pair("True", "Applied"));
        assert_eq!(shown(status, "Ready"), pair("True", "Configured"));
        assert!(folded.settled && folded.configured);
        assert_eq!(folded.events, [Event::new(false, "Configured", "every member is configured")]);

        let again = fold_report(status, Some(&east), Some(&report), &placement(), Some(7));
        assert_eq!(&again.status, status, "a second fold of the same report changes nothing");
        assert!(again.events.is_empty() && !again.configured);
    }

    #[test]
    fn a_live_upgrade_s_progress_on_the_member_shows_on_the_hub() {
        let east = member_cluster("east", Some("True"), at(0), "4");
        let mut report = work(Some((5, EPOCH)), "updating", Some(at(30)));
        let upgrade = kdfed_crds::cluster::UpgradeStatus {
            from: "db-1".into(),
            to: "db-2".into(),
            phase: kdfed_crds::upgrade::PHASE_UPGRADING.into(),
            upgraded_members: vec!["db-worker-1".into(), "db-worker-0".into()],
            total_members: Some(3),
            ..Default::default()
        };
        if let Some(cs) = report.status.as_mut().and_then(|s| s.cluster_status.as_mut()) {
            cs.upgrade = Some(upgrade.clone());
        }
        let folded = fold_report(&Default::default(), Some(&east), Some(&report), &placement(), Some(7));
        assert_eq!(folded.status.upgrade.as_ref(), Some(&upgrade));
        assert_eq!(folded.status.upgrade.as_ref().and_then(|u| u.progress()).as_deref(), Some("Upgrading 2/3"));
        assert_eq!(shown(&folded.status, "Ready"), pair("False", "Reconciling"));
    }

    #[test]
    fn an_unavailable_member_s_data_is_shown_as_last_seen_never_as_current() {
        let lost = member_cluster("east", Some("Unknown"), at(0), "4");
        let report = work(Some((5, EPOCH)), "configured", Some(at(30)));
        let ready = fold_report(
            &Default::default(),
            Some(&member_cluster("east", Some("True"), at(0), "4")),
            Some(&report),
            &placement(),
            Some(7),
        );
        let folded = fold_report(&ready.status, Some(&lost), Some(&report), &placement(), Some(7));
        let r = condition(&folded.status.conditions, "Ready").expect("ready");
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("Unknown", "MemberUnavailable"));
        assert_eq!(r.message, format!("member east is unavailable; member data last seen at {}", at(30)));
        assert_eq!(shown(&folded.status, "MemberAvailable"), pair("Unknown", "HeartbeatRenewed"));
        assert!(!folded.settled && !folded.configured);
        assert_eq!(folded.events.len(), 1);
        assert!(folded.events[0].warning, "turning Unknown is a warning");

        let never = fold_report(&Default::default(), Some(&lost), None, &placement(), Some(7));
        let message = condition(&never.status.conditions, "Ready").map(|c| c.message.clone());
        assert_eq!(message.as_deref(), Some("member east is unavailable; member data last seen at never"));
    }

    #[test]
    fn a_gone_or_unjoined_member_is_not_shown_available() {
        let gone = fold_report(&Default::default(), None, None, &placement(), Some(1));
        assert_eq!(shown(&gone.status, "MemberAvailable"), pair("False", "MemberGone"));
        assert_eq!(shown(&gone.status, "Ready"), pair("Unknown", "MemberUnavailable"));
        let unjoined = member_cluster("east", None, at(0), "4");
        let waiting = fold_report(&Default::default(), Some(&unjoined), None, &placement(), Some(1));
        assert_eq!(shown(&waiting.status, "MemberAvailable"), pair("Unknown", "NotJoined"));
    }

    #[test]
    fn a_report_of_an_older_work_or_epoch_is_not_applied() {
        let east = member_cluster("east", Some("True"), at(0), "4");
        for stale in [Some((4, EPOCH)), Some((5, EPOCH - 1)), None] {
            let report = work(stale, "configured", Some(at(30)));
            let folded = fold_report(&Default::default(), Some(&east), Some(&report), &placement(), Some(7));
            assert_eq!(shown(&folded.status, "Applied"), pair("False", "Pending"), "{stale:?}");
            assert_eq!(shown(&folded.status, "Ready"), pair("False", "Reconciling"), "{stale:?}");
            assert!(!folded.settled);
        }
    }

    #[test]
    fn an_apply_failure_sends_one_event_until_its_message_changes() {
        let east = member_cluster("east", Some("True"), at(0), "4");
        let mut report = work(None, "creating", None);
        if let Some(s) = report.status.as_mut() {
            s.conditions = vec![Condition {
                observed_generation: Some(5),
                ..condition_since("Applied", "False", "ApplyFailed", at(0))
            }];
        }
        let first = fold_report(&Default::default(), Some(&east), Some(&report), &placement(), Some(7));
        let failed = Event::new(true, "ApplyFailed", "member east cannot apply it: ApplyFailed here");
        assert_eq!(first.events.first(), Some(&failed));
        let again = fold_report(&first.status, Some(&east), Some(&report), &placement(), Some(7));
        assert!(again.events.is_empty(), "{:?}", again.events);
    }

    #[test]
    fn a_cluster_that_was_ready_before_does_not_count_as_newly_configured_after_unknown() {
        let east = member_cluster("east", Some("True"), at(0), "4");
        let report = work(Some((5, EPOCH)), "configured", Some(at(30)));
        let was_unknown = KubeDirectorClusterStatus {
            conditions: vec![condition_since("Ready", "Unknown", "MemberUnavailable", at(0))],
            ..Default::default()
        };
        let folded = fold_report(&was_unknown, Some(&east), Some(&report), &placement(), Some(7));
        assert_eq!(shown(&folded.status, "Ready"), pair("True", "Configured"));
        assert!(!folded.configured, "back from Unknown is not a first configuration");
        assert_eq!(folded.events.len(), 1);
    }
}
