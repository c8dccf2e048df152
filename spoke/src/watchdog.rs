//! The fence watchdog (`kdfed-spoke --fence-watchdog`): a second process on the member,
//! with its own Deployment and ServiceAccount, that stops failover-enabled copies when the
//! spoke itself is dead. Self-fencing ([`crate::fencing`]) runs inside the spoke, so a
//! spoke killed for longer than the hub's failover time would otherwise leave its copies
//! running beside the new placement, with nobody on the member to stop them.
//!
//! The spoke records every heartbeat renewal the hub accepted in the member-local Lease
//! [`SPOKE_HEARTBEAT_LEASE`] (its `renewTime` is when that renewal was sent). The watchdog
//! reads the Lease every [`POLL`] and times the silence on its own monotonic clock from the
//! moment it saw the Lease change; the first time it sees the Lease it also counts the age
//! of its `renewTime` on its wall clock ([`Silence`]), so that a watchdog started after the
//! spoke died fences at once; after the Lease could not be read for a while (the member's
//! API server was down, so the spoke could not write it either) it waits two heartbeat
//! intervals before acting. Each failover-enabled copy whose silence reaches
//! [`fence_after`] (the same `self_fence_margin_seconds` as the spoke) has its StatefulSets
//! scaled to zero with their claims retained (the director may be dead too) and is then
//! annotated [`ANNOTATION_SELF_FENCED`] with a reason naming the watchdog. The scale-down
//! comes first because StatefulSets are not behind kdfed's webhook while clusters are: on a
//! member whose spoke serves the webhook, a dead spoke is a dead webhook. The spoke's
//! webhook configurations skip the watchdog's identity (`webhook.unreviewed_user`, and the
//! ValidatingAdmissionPolicy `kdfed-fence-watchdog` lets it change only that annotation);
//! should the annotation still fail, every pass while the silence lasts keeps the
//! StatefulSets at zero, and the failure is reported once per streak ([`Streaks`]). PVCs are
//! never touched. The watchdog never lifts a fence: the spoke does, as after its own self-fence,
//! once it renews again and the hub confirms the placement; a copy whose Work is gone stays
//! fenced for good.
//!
//! Why the old copy is down before the hub places the new one. Let `T` be when the spoke
//! sent its last renewal the hub accepted.
//! - The watchdog fences by `T + w + p + s + (afterSeconds − margin)`, where `w` is the
//!   time to write the local Lease after the hub answered, `p` ≤ [`POLL`] the time until the
//!   watchdog reads it (its silence counts from then, never from earlier), and `s` the time
//!   the scale-down takes to stop the pods.
//! - The hub places the cluster elsewhere at the earliest at
//!   `T + grace + afterSeconds + skew margin`, timing on its own clock from when it saw the
//!   Lease change (no earlier than `T`).
//!
//! So the old copy is down first when `w + p + s < grace + margin + skew margin` (defaults:
//! 30 + 5 + 10 s against about 1 + 1 + a few seconds). The spoke's partition case is the
//! same, since the spoke writes the local Lease only after a renewal succeeded. When
//! `afterSeconds − margin` is less than two heartbeat intervals, [`fence_after`] waits two
//! intervals instead, which the hub's grace (at least three intervals by default) covers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kdfed_common::{ApiError, Doing};
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{ANNOTATION_FENCED, ANNOTATION_SELF_FENCED, LABEL_WORK, SPOKE_HEARTBEAT_LEASE};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use tracing::{info, warn};

use crate::fencing::{annotation, fence_after, scale_to_zero};

/// Field manager of what the watchdog writes.
pub const FIELD_MANAGER: &str = "kdfed-fence-watchdog";
/// How often the watchdog reads the Lease and checks the copies.
pub const POLL: Duration = Duration::from_secs(1);

/// The time without a renewal, as the watchdog sees it.
#[derive(Debug)]
pub struct Silence {
    /// The `renewTime` last seen (RFC 3339), if the Lease was seen at all.
    seen: Option<String>,
    /// From when the silence counts, on the monotonic clock...
    since: Instant,
    /// ...plus this much (the Lease's age on the wall clock when it was first seen).
    before: Duration,
    /// When the Lease could be read again after reads failed (the member's API server was
    /// down): the spoke could not record its renewals meanwhile either, so the silence is
    /// trusted only once it had time to write again.
    recovered: Option<Instant>,
    /// Whether the last read failed.
    unreadable: bool,
}

impl Silence {
    /// Silence counted from `started` until the Lease is seen.
    pub fn new(started: Instant) -> Silence {
        Silence { seen: None, since: started, before: Duration::ZERO, recovered: None, unreadable: false }
    }

    /// Records a read of the Lease that failed.
    pub fn unreadable(&mut self) {
        self.unreadable = true;
    }

    /// Whether the silence may be acted on at `now`: always, unless the Lease has just
    /// become readable again after failed reads — then only two heartbeat `interval`s later,
    /// so that a spoke that was alive all along has written its next renewal (a member API
    /// server outage longer than the fence time must not stop copies the hub still sees).
    pub fn trusted(&self, now: Instant, interval: Duration) -> bool {
        self.recovered.is_none_or(|t| now.saturating_duration_since(t) >= interval.saturating_mul(2))
    }

    /// Records one read of the Lease at `now` (monotonic) and `wall` (wall clock): its
    /// `renewTime`, if it has one. A changed `renewTime` restarts the silence at `now`
    /// (the renewal was sent no later). The first one seen also counts its age on the wall
    /// clock: a watchdog started long after the spoke died fences at once. Later changes
    /// trust the monotonic clock alone, so a skewed wall clock (the watchdog's or the
    /// spoke's) cannot keep a copy fenced while renewals arrive.
    pub fn observe(&mut self, renew: Option<jiff::Timestamp>, now: Instant, wall: jiff::Timestamp) {
        if std::mem::take(&mut self.unreadable) {
            self.recovered = Some(now);
        }
        let Some(renew) = renew else { return };
        let text = renew.to_string();
        if self.seen.as_deref() == Some(text.as_str()) {
            return;
        }
        self.before = match self.seen {
            None => wall_age(renew, wall),
            Some(_) => Duration::ZERO,
        };
        self.since = now;
        self.seen = Some(text);
    }

    /// The silence at `now`.
    pub fn at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since).saturating_add(self.before)
    }
}

/// How old `renew` is at `wall`; zero if it lies in the future (a clock ahead of ours).
fn wall_age(renew: jiff::Timestamp, wall: jiff::Timestamp) -> Duration {
    let age = wall.duration_since(renew);
    Duration::try_from(age).unwrap_or(Duration::ZERO)
}

/// What the watchdog does with one local copy.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing: no failover, or the silence is short enough.
    Nothing,
    /// Annotate it self-fenced (the message says why) and scale it to zero.
    Fence(String),
    /// It is fenced already: keep its StatefulSets at zero (the director may be dead).
    HoldDown,
}

/// What to do with a copy that fails over after `after_seconds` (if at all), already
/// fenced or not, after `silence` without a recorded renewal.
pub fn decide(
    after_seconds: Option<i64>,
    fenced: bool,
    silence: Duration,
    margin: Duration,
    interval: Duration,
) -> Action {
    let Some(after) = after_seconds else { return Action::Nothing };
    let limit = fence_after(after, margin, interval);
    if silence < limit {
        return Action::Nothing;
    }
    if fenced {
        return Action::HoldDown;
    }
    Action::Fence(format!(
        "fence watchdog: no heartbeat renewal on the hub recorded for {}s (the spoke is down or cut off from the \
         hub); the cluster fails over after {after}s, so the watchdog stopped its copy after {}s",
        silence.as_secs(),
        limit.as_secs()
    ))
}

/// The watchdog's metrics (`kdfed_fence_watchdog_*`).
#[derive(Debug, Default)]
pub struct WatchdogMetrics {
    /// Copies the watchdog fenced.
    pub fences: Counter,
    /// The current silence in seconds.
    pub silence: Gauge<f64, AtomicU64>,
    /// Streaks of failures to annotate a copy it scaled down (one per copy and streak).
    pub annotation_failures: Counter,
}

impl WatchdogMetrics {
    /// Creates the metrics and registers them under `kdfed_fence_watchdog_*`.
    pub fn register(registry: &mut Registry) -> Arc<WatchdogMetrics> {
        let m = WatchdogMetrics::default();
        let r = registry.sub_registry_with_prefix("fence_watchdog");
        r.register("fences", "Failover-enabled copies the fence watchdog fenced", m.fences.clone());
        r.register(
            "annotation_failures",
            "Copies the fence watchdog scaled down but could not annotate self-fenced (once per streak of failures)",
            m.annotation_failures.clone(),
        );
        r.register_with_unit(
            "heartbeat_silence",
            "Time since the spoke last recorded a heartbeat renewal, as the watchdog counts it",
            Unit::Seconds,
            m.silence.clone(),
        );
        Arc::new(m)
    }
}

/// What the watchdog needs.
pub struct Watchdog {
    /// Client of the member's API server.
    pub local: Client,
    /// The namespace of the spoke's heartbeat Lease.
    pub namespace: String,
    /// `self_fence_margin_seconds`.
    pub margin: Duration,
    /// The spoke's heartbeat interval.
    pub interval: Duration,
    /// Metrics.
    pub metrics: Arc<WatchdogMetrics>,
    /// Events on the copies it fences.
    pub recorder: kdfed_common::events::Recorder,
}

/// What the watchdog remembers of the copies it fenced while the silence lasts (by uid).
#[derive(Debug, Default)]
pub struct Streaks {
    /// Copies fenced in this silence: counted and reported once.
    fenced: BTreeSet<String>,
    /// Copies whose self-fenced annotation could not be written: reported once per streak.
    unannotated: BTreeSet<String>,
}

impl Streaks {
    /// Records that `uid` was scaled down for a fence; true the first time in this silence.
    pub fn fenced(&mut self, uid: &str) -> bool {
        self.fenced.insert(uid.to_string())
    }

    /// Records that the annotation of `uid` could not be written; true the first time in a
    /// streak of failures (the one to report).
    pub fn annotation_failed(&mut self, uid: &str) -> bool {
        self.unannotated.insert(uid.to_string())
    }

    /// Records that the annotation of `uid` was written; true if that ends a streak of failures.
    pub fn annotated(&mut self, uid: &str) -> bool {
        self.unannotated.remove(uid)
    }

    /// Forgets `uid`: its silence ended (the spoke is back) or it is not to be fenced.
    pub fn forget(&mut self, uid: &str) {
        self.fenced.remove(uid);
        self.unannotated.remove(uid);
    }

    /// Keeps only the copies in `present` (the others are gone).
    pub fn retain(&mut self, present: &BTreeSet<String>) {
        self.fenced.retain(|u| present.contains(u));
        self.unannotated.retain(|u| present.contains(u));
    }
}

/// Reads the Lease and checks the copies every [`POLL`], until the process stops.
pub async fn run(w: Watchdog) {
    let mut silence = Silence::new(Instant::now());
    let mut streaks = Streaks::default();
    info!(namespace = %w.namespace, lease = SPOKE_HEARTBEAT_LEASE, "fence watchdog started");
    loop {
        if let Err(e) = pass(&w, &mut silence, &mut streaks).await {
            warn!("fence watchdog: {e}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn pass(w: &Watchdog, silence: &mut Silence, streaks: &mut Streaks) -> Result<(), ApiError> {
    let leases: Api<Lease> = Api::namespaced(w.local.clone(), &w.namespace);
    let lease = match leases.get_opt(SPOKE_HEARTBEAT_LEASE).await {
        Ok(lease) => lease,
        Err(e) => {
            silence.unreadable();
            return Err(e).doing("read the spoke's heartbeat lease");
        }
    };
    let renew = lease.and_then(|l| l.spec).and_then(|s| s.renew_time).map(|t| t.0);
    silence.observe(renew, Instant::now(), jiff::Timestamp::now());
    let quiet = silence.at(Instant::now());
    w.metrics.silence.set(quiet.as_secs_f64());
    if !silence.trusted(Instant::now(), w.interval) {
        return Ok(());
    }
    if quiet < w.interval.saturating_mul(2) {
        // No copy can need anything before two intervals (the least `fence_after`), so the
        // copies are not even listed (every copy's streak ends, as `Action::Nothing` would).
        streaks.retain(&BTreeSet::new());
        return Ok(());
    }
    let clusters: Api<KubeDirectorCluster> = Api::all(w.local.clone());
    let copies = clusters.list(&ListParams::default().labels(LABEL_WORK)).await.doing("list local clusters")?.items;
    streaks.retain(&copies.iter().filter_map(|c| c.metadata.uid.clone()).collect());
    let mut first_error = None;
    for copy in copies.iter().filter(|c| c.metadata.deletion_timestamp.is_none()) {
        let after = copy.spec.placement.as_ref().and_then(|p| p.failover_after());
        let fenced = copy.annotations().contains_key(ANNOTATION_SELF_FENCED)
            || copy.annotations().get(ANNOTATION_FENCED).is_some_and(|v| v == "true");
        let uid = copy.metadata.uid.clone().unwrap_or_default();
        let done = match decide(after, fenced, quiet, w.margin, w.interval) {
            Action::Nothing => {
                streaks.forget(&uid);
                Ok(())
            }
            Action::Fence(why) => fence(w, streaks, copy, &uid, &why).await,
            Action::HoldDown => hold_down(w, copy).await,
        };
        // One copy's failure never keeps the others running.
        if let Err(e) = done {
            warn!(cluster = %copy.name_any(), "fence watchdog: {e}");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Scales `copy` to zero first (StatefulSets are not behind kdfed's webhook), then annotates
/// it self-fenced. A failed annotation never undoes the scale-down: every pass while the
/// silence lasts scales it again; the failure is reported (Event, log, metric) once per
/// streak.
async fn fence(
    w: &Watchdog,
    streaks: &mut Streaks,
    copy: &KubeDirectorCluster,
    uid: &str,
    why: &str,
) -> Result<(), ApiError> {
    let ns = copy.namespace().unwrap_or_default();
    let name = format!("{ns}/{}", copy.name_any());
    let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
    let scaled = scale_to_zero(&w.local, &ns, &copy.name_any(), &pp).await?;
    if streaks.fenced(uid) {
        w.metrics.fences.inc();
        warn!(cluster = %name, statefulsets = ?scaled, "fenced (scaled to zero, PVCs kept): {why}");
        let message = format!("fenced: {why}: scaled to zero, PVCs kept, until the spoke is back and the hub confirms");
        w.recorder.publish(copy, true, "SelfFenced", &message).await;
    } else if !scaled.is_empty() {
        warn!(cluster = %name, statefulsets = ?scaled, "fence watchdog: scaled to zero again (PVCs kept)");
    }
    let api: Api<KubeDirectorCluster> = Api::namespaced(w.local.clone(), &ns);
    let patch = Patch::Merge(annotation(ANNOTATION_SELF_FENCED, Some(why)));
    match api.patch(&copy.name_any(), &pp, &patch).await.doing("annotate the copy self-fenced") {
        Ok(_) => {
            if streaks.annotated(uid) {
                info!(cluster = %name, "fence watchdog: the self-fenced annotation is written at last");
            }
            Ok(())
        }
        Err(e) => {
            if streaks.annotation_failed(uid) {
                w.metrics.annotation_failures.inc();
                warn!(cluster = %name, "fence watchdog: {e}; its StatefulSets stay at zero, retrying every pass");
                let message = format!(
                    "fence watchdog: scaled to zero (PVCs kept) but could not annotate the copy self-fenced: {e}; \
                     it keeps the StatefulSets at zero and retries while the spoke is silent"
                );
                w.recorder.publish(copy, true, "SelfFenceAnnotationFailed", &message).await;
            }
            Ok(())
        }
    }
}

/// Keeps a fenced copy's StatefulSets at zero.
async fn hold_down(w: &Watchdog, copy: &KubeDirectorCluster) -> Result<(), ApiError> {
    let ns = copy.namespace().unwrap_or_default();
    let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
    let scaled = scale_to_zero(&w.local, &ns, &copy.name_any(), &pp).await?;
    if !scaled.is_empty() {
        let message = format!("fence watchdog: scaled {} to zero (PVCs kept): the copy is fenced", scaled.join(", "));
        warn!(cluster = %format!("{ns}/{}", copy.name_any()), "{message}");
        w.recorder.publish(copy, true, "SelfFenced", &message).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: Duration = Duration::from_secs(5);
    const INTERVAL: Duration = Duration::from_secs(1);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn wall(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    #[test]
    fn silence_restarts_whenever_the_lease_changes_and_grows_while_it_does_not() {
        let start = Instant::now();
        let mut s = Silence::new(start);
        // No Lease yet: counted from the watchdog's start.
        s.observe(None, start + secs(3), wall(3));
        assert_eq!(s.at(start + secs(3)), secs(3));
        // A fresh Lease (renewed 1 s ago on the wall clock).
        s.observe(Some(wall(2)), start + secs(3), wall(3));
        assert_eq!(s.at(start + secs(3)), secs(1));
        assert_eq!(s.at(start + secs(5)), secs(3));
        // Read again unchanged: the silence keeps growing.
        s.observe(Some(wall(2)), start + secs(6), wall(6));
        assert_eq!(s.at(start + secs(9)), secs(7));
        // A new renewal seen at 10 s: from then on the monotonic clock alone.
        s.observe(Some(wall(9)), start + secs(10), wall(10));
        assert_eq!(s.at(start + secs(10)), Duration::ZERO);
        assert_eq!(s.at(start + secs(16)), secs(6));
        // A spoke that died: no change for a minute.
        s.observe(Some(wall(9)), start + secs(70), wall(70));
        assert_eq!(s.at(start + secs(70)), secs(60));
    }

    #[test]
    fn after_the_lease_was_unreadable_the_spoke_gets_two_intervals_to_record_again() {
        let start = Instant::now();
        let mut s = Silence::new(start);
        s.observe(Some(wall(0)), start, wall(0));
        assert!(s.trusted(start, INTERVAL), "a watchdog that can read acts at once");
        // The member's API server is down for 30 s: neither side can read or write.
        s.unreadable();
        s.observe(Some(wall(0)), start + secs(30), wall(30));
        assert_eq!(s.at(start + secs(30)), secs(30));
        assert!(!s.trusted(start + secs(31), INTERVAL), "the spoke may not have written yet");
        assert!(s.trusted(start + secs(32), INTERVAL));
        // The spoke was alive: its next renewal shows, and the silence is short again.
        s.observe(Some(wall(31)), start + secs(31), wall(31));
        assert_eq!(s.at(start + secs(32)), secs(1));
    }

    #[test]
    fn a_fresh_watchdog_with_an_old_lease_fences_at_once() {
        let start = Instant::now();
        let mut s = Silence::new(start);
        // The spoke died 100 s before the watchdog (re)started.
        s.observe(Some(wall(0)), start, wall(100));
        assert_eq!(s.at(start), secs(100));
        assert!(matches!(decide(Some(10), false, s.at(start), MARGIN, INTERVAL), Action::Fence(_)));
    }

    #[test]
    fn a_skewed_wall_clock_never_keeps_a_copy_fenced_while_renewals_arrive() {
        let start = Instant::now();
        // The watchdog's clock runs 100 s ahead of the spoke's: the first sight looks old
        // (fencing at once is the safe side)...
        let mut ahead = Silence::new(start);
        ahead.observe(Some(wall(0)), start, wall(100));
        assert_eq!(ahead.at(start), secs(100));
        // ...but once a renewal is seen, the monotonic clock alone counts.
        ahead.observe(Some(wall(1)), start + secs(1), wall(101));
        assert_eq!(ahead.at(start + secs(2)), secs(1));
        assert_eq!(decide(Some(10), false, ahead.at(start + secs(2)), MARGIN, INTERVAL), Action::Nothing);
        // The watchdog's clock runs behind: a renewTime in the future is no silence at all,
        // and the monotonic clock still grows while the spoke is dead.
        let mut behind = Silence::new(start);
        behind.observe(Some(wall(100)), start, wall(0));
        assert_eq!(behind.at(start), Duration::ZERO);
        behind.observe(Some(wall(100)), start + secs(8), wall(8));
        assert_eq!(behind.at(start + secs(8)), secs(8));
        assert!(matches!(decide(Some(10), false, behind.at(start + secs(8)), MARGIN, INTERVAL), Action::Fence(_)));
    }

    #[test]
    fn before_two_intervals_of_silence_no_copy_needs_anything_so_none_is_listed() {
        // The pass skips listing the copies below two intervals; that is only right while
        // every copy's decision there is `Nothing`, fenced or not, whatever its afterSeconds.
        let interval = secs(12);
        for after in [None, Some(0), Some(1), Some(10), Some(30), Some(300)] {
            for fenced in [false, true] {
                let d = decide(after, fenced, secs(23), secs(5), interval);
                assert_eq!(d, Action::Nothing, "after {after:?} fenced {fenced}");
            }
        }
    }

    #[test]
    fn only_failover_copies_are_fenced_after_their_time_minus_the_margin() {
        assert_eq!(decide(None, false, secs(86_400), MARGIN, INTERVAL), Action::Nothing);
        assert_eq!(decide(Some(10), false, secs(4), MARGIN, INTERVAL), Action::Nothing);
        let Action::Fence(why) = decide(Some(10), false, secs(5), MARGIN, INTERVAL) else {
            panic!("not fenced after 5 s of silence with afterSeconds 10 and a 5 s margin")
        };
        assert!(why.starts_with("fence watchdog: "), "{why}");
        assert!(why.contains("for 5s") && why.contains("after 10s") && why.contains("after 5s"), "{why}");
        assert_eq!(decide(Some(10), true, secs(5), MARGIN, INTERVAL), Action::HoldDown);
        // Never sooner than two heartbeat intervals.
        assert_eq!(decide(Some(10), false, secs(19), MARGIN, secs(10)), Action::Nothing);
        // A fenced copy with a short silence is the spoke's to lift, not the watchdog's.
        assert_eq!(decide(Some(10), true, secs(1), MARGIN, INTERVAL), Action::Nothing);
    }

    #[test]
    fn fences_and_annotation_failures_are_reported_once_per_streak() {
        let mut s = Streaks::default();
        assert!(s.fenced("a"), "first fence of a copy is counted");
        assert!(!s.fenced("a"), "the next passes of the same silence are not");
        assert!(s.annotation_failed("a"), "the first failure of a streak is reported");
        assert!(!s.annotation_failed("a") && !s.annotation_failed("a"), "the rest of the streak is not");
        assert!(s.annotated("a"), "written at last: the streak ends");
        assert!(!s.annotated("a"));
        assert!(s.annotation_failed("a"), "a new streak is reported again");
        // The silence ends: the next one counts again.
        s.forget("a");
        assert!(s.fenced("a"));
        // Copies that are gone are forgotten.
        assert!(s.fenced("b") && s.annotation_failed("b"));
        s.retain(&BTreeSet::from(["a".to_string()]));
        assert!(s.fenced("b") && s.annotation_failed("b"), "b was forgotten");
        assert!(!s.fenced("a"), "a is kept");
    }
}
