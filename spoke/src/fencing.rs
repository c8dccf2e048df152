//! Self-fencing: a member that cannot renew its heartbeat on the hub stops its
//! failover-enabled copies on its own clock, before the hub may place them elsewhere.
//!
//! The spoke times the silence with its monotonic clock, from the moment it *sent* its last
//! renewal that succeeded (the hub saw that renewal no earlier), so neither a skewed wall
//! clock nor a slow answer makes it fence late. A copy whose `spec.placement.failover` says
//! `Reschedule` is fenced (annotation [`ANNOTATION_SELF_FENCED`]: the director scales it to
//! zero and keeps its PVCs) once the silence reaches [`fence_after`]: its `afterSeconds`
//! minus the spoke's `self_fence_margin_seconds`, but never less than two heartbeat
//! intervals. The hub fails a cluster over only a heartbeat grace + `afterSeconds` + its
//! clock-skew margin after it last saw the Lease change on its own clock, so the old copy is
//! down first. Copies without failover keep running through any partition.
//!
//! The fence is lifted only when the link is back on both sides: the spoke renews again,
//! the hub shows the member `Available=True`, and the copy's Work is still there with the
//! copy's epoch, all confirmed twice [`LIFT_CONFIRMATION`] apart (a failover the hub had
//! already decided is then visible as a missing Work). A copy whose Work is gone stays
//! fenced, and hub sync marks it fenced for good, as after any failover.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use kdfed_common::Doing;
use kdfed_common::conditions::condition;
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{
    ANNOTATION_EPOCH, ANNOTATION_SELF_FENCED, KubeDirectorMember, KubeDirectorWork, LABEL_WORK, member_namespace,
};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use tracing::{info, warn};

/// Field manager of the self-fence annotation.
pub const FIELD_MANAGER: &str = "kdfed-self-fence";
/// How often the spoke checks its copies against the heartbeat.
pub const CHECK_PERIOD: Duration = Duration::from_secs(1);
/// How long the hub must keep confirming a copy's placement before its fence is lifted.
pub const LIFT_CONFIRMATION: Duration = Duration::from_secs(3);

/// When the spoke last renewed its heartbeat, on its monotonic clock.
#[derive(Debug)]
pub struct Heartbeat {
    started: Instant,
    renewed: Mutex<Option<Instant>>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { started: Instant::now(), renewed: Mutex::new(None) }
    }
}

impl Heartbeat {
    /// Records a renewal that succeeded; `sent` is when its request left, so the hub wrote
    /// it no earlier than that.
    pub fn renewed(&self, sent: Instant) {
        let mut last = self.renewed.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|l| l < sent) {
            *last = Some(sent);
        }
    }

    /// Time without a successful renewal: since the last one, or since the spoke started.
    pub fn silence(&self, now: Instant) -> Duration {
        let last = *self.renewed.lock().unwrap_or_else(PoisonError::into_inner);
        now.saturating_duration_since(last.unwrap_or(self.started))
    }
}

/// How long a copy failing over after `after_seconds` may run without a heartbeat renewal:
/// `after_seconds - margin`, but never less than two heartbeat intervals, so that one late
/// renewal does not stop an app.
pub fn fence_after(after_seconds: i64, margin: Duration, interval: Duration) -> Duration {
    let after = Duration::from_secs(u64::try_from(after_seconds).unwrap_or(0));
    after.saturating_sub(margin).max(interval.saturating_mul(2))
}

/// What the spoke does with one local copy on its own, without asking the hub.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Leave it as it is.
    Keep,
    /// Fence it now (the message says why).
    Fence(String),
    /// Its self-fence may go if the hub confirms its placement.
    LiftIfConfirmed,
}

/// Whether a copy (failover after `after_seconds`, if any; self-fenced or not) is fenced
/// after `silence` without a heartbeat renewal.
pub fn verdict(
    after_seconds: Option<i64>,
    self_fenced: bool,
    silence: Duration,
    margin: Duration,
    interval: Duration,
) -> Verdict {
    match after_seconds {
        Some(after) if silence >= fence_after(after, margin, interval) => {
            if self_fenced {
                Verdict::Keep
            } else {
                Verdict::Fence(format!(
                    "no heartbeat renewal on the hub for {}s; the cluster fails over after {after}s, so this \
                     member stopped its copy after {}s",
                    silence.as_secs(),
                    fence_after(after, margin, interval).as_secs()
                ))
            }
        }
        _ if self_fenced => Verdict::LiftIfConfirmed,
        _ => Verdict::Keep,
    }
}

/// Whether the hub still places a copy of epoch `copy_epoch` on this member: the member is
/// available again and the Work is there, not being deleted, with the same epoch.
pub fn placement_confirmed(member_available: bool, work: Option<&KubeDirectorWork>, copy_epoch: Option<&str>) -> bool {
    member_available
        && work.is_some_and(|w| {
            w.metadata.deletion_timestamp.is_none()
                && copy_epoch.is_some_and(|e| e == w.spec.placement_epoch.to_string())
        })
}

/// A JSON merge patch of one annotation of an object's metadata.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnnotationPatch<'a> {
    metadata: AnnotationsOnly<'a>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct AnnotationsOnly<'a> {
    annotations: BTreeMap<&'a str, Option<&'a str>>,
}

/// A merge patch that sets annotation `key` to `value`, or removes it for `None` (sent as
/// `null`, which is how a merge patch removes a key).
pub fn annotation<'a>(key: &'a str, value: Option<&'a str>) -> AnnotationPatch<'a> {
    AnnotationPatch { metadata: AnnotationsOnly { annotations: BTreeMap::from([(key, value)]) } }
}

/// Whether a StatefulSet of a fenced copy still needs [`zero_replicas_patch`]: it has
/// replicas, or its claims are not retained both when scaled and when deleted.
pub fn needs_scale_down(sts: &StatefulSet) -> bool {
    let spec = sts.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(0);
    let retained = spec
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .is_some_and(|p| p.when_scaled.as_deref() == Some("Retain") && p.when_deleted.as_deref() == Some("Retain"));
    replicas != 0 || !retained
}

/// The merge patch that stops a fenced copy's StatefulSet: zero replicas, and its claims
/// retained in the same patch, so that scaling down never takes a PVC with it (a cluster
/// may say `whenScaled: Delete`).
pub fn zero_replicas_patch() -> serde_json::Value {
    serde_json::json!({"spec": {"replicas": 0,
        "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Retain", "whenDeleted": "Retain"}}})
}

/// Scales every StatefulSet of the copy `cluster` in `namespace` to zero with its claims
/// retained (PVCs are never deleted) and returns the names of those it changed. The
/// director does this for a fenced copy, and the fence watchdog when the director is dead.
pub async fn scale_to_zero(
    client: &Client,
    namespace: &str,
    cluster: &str,
    pp: &PatchParams,
) -> Result<Vec<String>, kdfed_common::ApiError> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let lp = ListParams::default().labels(&format!("{}={cluster}", crate::director::names::LABEL_CLUSTER));
    let mut scaled = Vec::new();
    for sts in statefulsets.list(&lp).await.doing("list statefulsets")?.items {
        if needs_scale_down(&sts) {
            statefulsets
                .patch(&sts.name_any(), pp, &Patch::Merge(zero_replicas_patch()))
                .await
                .doing("fence statefulset")?;
            scaled.push(sts.name_any());
        }
    }
    Ok(scaled)
}

/// The spoke's own heartbeat silence, for the director: a failover-enabled copy that
/// self-fencing is about to annotate (or the fence watchdog is fencing) is never scaled up
/// meanwhile. The watchdog scales a copy's StatefulSets to zero before it annotates it, and a
/// director pass woken by that scale-down in between saw no fence and scaled them back up
/// (CI, `a_partitioned_member_stops_its_failover_copy_before_the_hub_places_the_new_one`):
/// the watchdog's silence is never longer than the spoke's, so the spoke's verdict already
/// says fence whenever the watchdog does.
#[derive(Clone, Debug)]
pub struct FenceClock {
    /// The heartbeat's last renewal.
    pub heartbeat: Arc<Heartbeat>,
    /// `self_fence_margin_seconds`.
    pub margin: Duration,
    /// Heartbeat interval.
    pub interval: Duration,
}

impl FenceClock {
    /// Why `copy` must be down now by the heartbeat alone (not annotated yet), if it must.
    pub fn due(&self, copy: &KubeDirectorCluster) -> Option<String> {
        let after = copy.spec.placement.as_ref().and_then(|p| p.failover_after());
        match verdict(after, false, self.heartbeat.silence(Instant::now()), self.margin, self.interval) {
            Verdict::Fence(why) => Some(why),
            _ => None,
        }
    }
}

/// What the self-fencing loop needs.
pub struct Fencing {
    /// Client of the hub (with the member's identity).
    pub hub: Client,
    /// Client of the member's own API server.
    pub local: Client,
    /// This member's name.
    pub member: String,
    /// `self_fence_margin_seconds`.
    pub margin: Duration,
    /// Heartbeat interval.
    pub interval: Duration,
    /// The heartbeat's last renewal.
    pub heartbeat: Arc<Heartbeat>,
}

/// How often the local copies are listed while nothing can need fencing (see [`must_look`]).
pub const QUIET_CHECK_PERIOD: Duration = Duration::from_secs(10);

/// Whether a pass must list the local copies: always while the heartbeat has been silent for
/// two intervals (the least [`fence_after`] can be, so before that no copy can need a fence)
/// or while a copy is self-fenced (its fence may be lifted), and otherwise every
/// [`QUIET_CHECK_PERIOD`] (`since_last`: since the last pass that listed; `None`: never).
/// A healthy member so lists its copies 6 times a minute instead of 60.
pub fn must_look(silence: Duration, interval: Duration, any_self_fenced: bool, since_last: Option<Duration>) -> bool {
    silence >= interval.saturating_mul(2) || any_self_fenced || since_last.is_none_or(|d| d >= QUIET_CHECK_PERIOD)
}

/// Checks the local copies against the heartbeat every [`CHECK_PERIOD`] (listing them as
/// [`must_look`] says), until the process stops. Only the member's own API server is needed
/// to fence; lifting asks the hub.
pub async fn run(fencing: Fencing) {
    let mut confirmed_since = BTreeMap::new();
    let (mut listed, mut any_self_fenced) = (None::<Instant>, true);
    loop {
        let now = Instant::now();
        let silence = fencing.heartbeat.silence(now);
        let since_last = listed.map(|t| now.saturating_duration_since(t));
        if must_look(silence, fencing.interval, any_self_fenced, since_last) {
            match pass(&fencing, &mut confirmed_since).await {
                Ok(fenced) => (listed, any_self_fenced) = (Some(now), fenced),
                Err(e) => {
                    // Look again next time.
                    any_self_fenced = true;
                    warn!("self-fencing: {e}");
                }
            }
        }
        tokio::time::sleep(CHECK_PERIOD).await;
    }
}

/// One check of every local copy; whether one is self-fenced afterwards.
async fn pass(f: &Fencing, confirmed_since: &mut BTreeMap<String, Instant>) -> Result<bool, kdfed_common::ApiError> {
    let silence = f.heartbeat.silence(Instant::now());
    let clusters: Api<KubeDirectorCluster> = Api::all(f.local.clone());
    let copies = clusters.list(&ListParams::default().labels(LABEL_WORK)).await.doing("list local clusters")?.items;
    let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
    let mut to_lift = Vec::new();
    let mut fenced_now = false;
    for copy in copies {
        if copy.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let key = format!("{}/{}", copy.namespace().unwrap_or_default(), copy.name_any());
        let after = copy.spec.placement.as_ref().and_then(|p| p.failover_after());
        let self_fenced = copy.annotations().contains_key(ANNOTATION_SELF_FENCED);
        match verdict(after, self_fenced, silence, f.margin, f.interval) {
            Verdict::Keep => {
                confirmed_since.remove(&key);
            }
            Verdict::Fence(why) => {
                confirmed_since.remove(&key);
                let api: Api<KubeDirectorCluster> =
                    Api::namespaced(f.local.clone(), &copy.namespace().unwrap_or_default());
                let patch = annotation(ANNOTATION_SELF_FENCED, Some(&why));
                api.patch(&copy.name_any(), &pp, &Patch::Merge(patch)).await.doing("self-fence local copy")?;
                fenced_now = true;
                warn!(cluster = %key, "self-fenced (scaled to zero, PVCs kept): {why}");
            }
            Verdict::LiftIfConfirmed => to_lift.push((key, copy)),
        }
    }
    confirmed_since.retain(|k, _| to_lift.iter().any(|(key, _)| key == k));
    if to_lift.is_empty() {
        return Ok(fenced_now);
    }
    let member = Api::<KubeDirectorMember>::all(f.hub.clone()).get_opt(&f.member).await.doing("read member")?;
    let available = member
        .and_then(|m| m.status)
        .is_some_and(|s| condition(&s.conditions, "Available").is_some_and(|c| c.status == "True"));
    let works: Api<KubeDirectorWork> = Api::namespaced(f.hub.clone(), &member_namespace(&f.member));
    for (key, copy) in to_lift {
        let Some(work_name) = copy.labels().get(LABEL_WORK) else { continue };
        let work = works.get_opt(work_name).await.doing("read work")?;
        if !placement_confirmed(available, work.as_ref(), copy.annotations().get(ANNOTATION_EPOCH).map(String::as_str))
        {
            confirmed_since.remove(&key);
            continue;
        }
        let now = Instant::now();
        let since = *confirmed_since.entry(key.clone()).or_insert(now);
        if now.saturating_duration_since(since) < LIFT_CONFIRMATION {
            continue;
        }
        let api: Api<KubeDirectorCluster> = Api::namespaced(f.local.clone(), &copy.namespace().unwrap_or_default());
        let patch = annotation(ANNOTATION_SELF_FENCED, None);
        api.patch(&copy.name_any(), &pp, &Patch::Merge(patch)).await.doing("lift self-fence")?;
        confirmed_since.remove(&key);
        info!(cluster = %key, "the hub still places this copy here: self-fence lifted");
    }
    // There were self-fenced copies: the next pass looks again.
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: Duration = Duration::from_secs(5);
    const INTERVAL: Duration = Duration::from_secs(1);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_director_holds_a_failover_copy_at_zero_once_its_fence_is_due() {
        let heartbeat = Arc::new(Heartbeat::default());
        let clock = FenceClock { heartbeat: heartbeat.clone(), margin: MARGIN, interval: INTERVAL };
        let mut copy = KubeDirectorCluster::new("db", Default::default());
        copy.spec.placement = Some(
            serde_json::from_value(serde_json::json!({"failover": {"policy": "Reschedule", "afterSeconds": 10}}))
                .expect("placement"),
        );
        heartbeat.renewed(Instant::now());
        assert_eq!(clock.due(&copy), None, "just renewed");
        let Some(now) = Instant::now().checked_sub(secs(6)) else { return };
        let stale = Arc::new(Heartbeat::default());
        stale.renewed(now);
        let clock = FenceClock { heartbeat: stale, ..clock };
        assert!(clock.due(&copy).is_some_and(|why| why.contains("after 10s")), "6 s silent, fence after 5 s");
        copy.spec.placement = None;
        assert_eq!(clock.due(&copy), None, "no failover: never held");
    }

    #[test]
    fn copies_are_listed_every_second_only_when_a_fence_can_be_due_or_lifted() {
        let interval = secs(12);
        assert!(must_look(secs(0), interval, false, None), "the first pass lists");
        assert!(!must_look(secs(11), interval, false, Some(secs(9))), "healthy: every 10 s");
        assert!(must_look(secs(11), interval, false, Some(secs(10))));
        // Two intervals without a renewal: the least time after which a copy is fenced.
        assert!(must_look(secs(24), interval, false, Some(secs(1))));
        assert!(secs(24) <= fence_after(0, MARGIN, interval), "no fence can be due before");
        assert!(must_look(secs(1), interval, true, Some(secs(1))), "a self-fenced copy may be lifted");
    }

    #[test]
    fn a_copy_is_fenced_after_its_failover_time_minus_the_margin() {
        assert_eq!(fence_after(300, MARGIN, INTERVAL), secs(295));
        assert_eq!(verdict(Some(300), false, secs(294), MARGIN, INTERVAL), Verdict::Keep);
        let Verdict::Fence(why) = verdict(Some(300), false, secs(295), MARGIN, INTERVAL) else {
            panic!("not fenced at 295 s of silence");
        };
        assert!(why.contains("for 295s") && why.contains("after 300s"), "{why}");
        // Already fenced: nothing more to do while the silence lasts.
        assert_eq!(verdict(Some(300), true, secs(400), MARGIN, INTERVAL), Verdict::Keep);
    }

    #[test]
    fn one_late_renewal_never_fences() {
        // afterSeconds 10 with a 10 s heartbeat: 10 - 5 = 5 s would fence between renewals.
        let interval = secs(10);
        assert_eq!(fence_after(10, MARGIN, interval), secs(20));
        assert_eq!(verdict(Some(10), false, secs(19), MARGIN, interval), Verdict::Keep);
        assert!(matches!(verdict(Some(10), false, secs(20), MARGIN, interval), Verdict::Fence(_)));
        // A margin larger than afterSeconds saturates instead of wrapping.
        assert_eq!(fence_after(10, secs(60), INTERVAL), secs(2));
        assert_eq!(fence_after(-1, MARGIN, INTERVAL), secs(2));
    }

    #[test]
    fn copies_without_failover_keep_running_through_any_partition() {
        assert_eq!(verdict(None, false, secs(86_400), MARGIN, INTERVAL), Verdict::Keep);
    }

    #[test]
    fn a_self_fence_is_lifted_only_once_renewals_resume_and_the_hub_confirms() {
        assert_eq!(verdict(Some(10), true, secs(5), MARGIN, INTERVAL), Verdict::Keep);
        assert_eq!(verdict(Some(10), true, secs(1), MARGIN, INTERVAL), Verdict::LiftIfConfirmed);
        // Failover switched off while fenced: the copy may run again once the hub agrees.
        assert_eq!(verdict(None, true, secs(100), MARGIN, INTERVAL), Verdict::LiftIfConfirmed);

        let mut work = KubeDirectorWork::new("default.db", Default::default());
        work.spec.placement_epoch = 2;
        assert!(placement_confirmed(true, Some(&work), Some("2")));
        assert!(!placement_confirmed(false, Some(&work), Some("2")), "the hub still sees the member unavailable");
        assert!(!placement_confirmed(true, Some(&work), Some("1")), "the placement moved on (newer epoch)");
        assert!(!placement_confirmed(true, Some(&work), None));
        assert!(!placement_confirmed(true, None, Some("2")), "failed over: the Work is gone");
        work.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(1_000_000).expect("time"),
        ));
        assert!(!placement_confirmed(true, Some(&work), Some("2")), "the Work is being released");
    }

    #[test]
    fn an_annotation_is_set_or_removed_by_a_merge_patch() {
        let set = serde_json::to_value(annotation("a/b", Some("why"))).expect("json");
        assert_eq!(set, serde_json::json!({"metadata": {"annotations": {"a/b": "why"}}}));
        let removed = serde_json::to_value(annotation("a/b", None)).expect("json");
        assert_eq!(removed, serde_json::json!({"metadata": {"annotations": {"a/b": null}}}));
    }

    #[test]
    fn a_fenced_statefulset_goes_to_zero_with_its_claims_retained() {
        let sts = |replicas: i32, scaled: &str, deleted: &str| -> StatefulSet {
            serde_json::from_value(serde_json::json!({"spec": {"replicas": replicas, "selector": {},
                "serviceName": "s", "template": {},
                "persistentVolumeClaimRetentionPolicy": {"whenScaled": scaled, "whenDeleted": deleted}}}))
            .expect("sts")
        };
        assert!(needs_scale_down(&sts(2, "Retain", "Retain")));
        assert!(needs_scale_down(&sts(0, "Delete", "Retain")), "claims not retained when scaled");
        assert!(needs_scale_down(&sts(0, "Retain", "Delete")), "claims not retained when deleted");
        assert!(!needs_scale_down(&sts(0, "Retain", "Retain")));
        assert!(needs_scale_down(&StatefulSet::default()), "no retention policy at all");
        let patch = zero_replicas_patch();
        assert_eq!(patch["spec"]["replicas"], 0);
        assert_eq!(patch["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"], "Retain");
        assert_eq!(patch["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"], "Retain");
    }

    #[test]
    fn silence_counts_from_the_last_renewal_sent_or_from_the_start() {
        let beat = Heartbeat::default();
        let start = beat.started;
        assert_eq!(beat.silence(start + secs(7)), secs(7));
        beat.renewed(start + secs(3));
        assert_eq!(beat.silence(start + secs(7)), secs(4));
        // A slow answer to an older request never moves the last renewal back.
        beat.renewed(start + secs(1));
        assert_eq!(beat.silence(start + secs(7)), secs(4));
        assert_eq!(beat.silence(start), Duration::ZERO);
    }
}
