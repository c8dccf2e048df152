//! Starting a failover-enabled copy only where the hub still places it.
//!
//! A Work can reach the member just as the hub fails its cluster over: the spoke was dead
//! or cut off past the cluster's `afterSeconds`, so no copy existed here for the fence
//! watchdog or self-fencing to stop, and the restarted spoke reads the Work before the hub
//! has seen its first renewal. Creating the copy then would run it beside the new
//! placement until the Work's removal is noticed (found by the random-fault suite, seed
//! 10551407828648329516: a copy ran on both members for 5 s). So before Work sync starts
//! a failover-enabled copy — creates it, or lifts the fence of one whose Work had gone —
//! the hub must show this member `Available=True`, unchanged since a first look at least
//! [`crate::fencing::LIFT_CONFIRMATION`] earlier on the spoke's own clock (the condition's
//! `lastTransitionTime` names the stretch, so no wall clocks are compared), and the Work
//! must still be on the hub with the epoch being applied. The same rule lifts a self-fence
//! ([`crate::fencing`]): a failover the hub had already decided is then visible as a
//! missing Work. Copies without failover start at once, as in any partition.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kdfed_common::Doing;
use kdfed_common::conditions::condition;
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{ANNOTATION_FENCED, KubeDirectorMember, KubeDirectorWork};
use kube::ResourceExt;
use kube::api::Api;
use tracing::{debug, info};

use super::{Error, SyncContext};

/// How soon a pass that found the member not (yet) available looks again.
const RETRY: Duration = Duration::from_secs(2);

/// The stretch of `Available=True` this spoke has seen: the condition's
/// `lastTransitionTime` and when this spoke first read it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stretch {
    since: Option<(jiff::Timestamp, Instant)>,
}

/// What one read of the member's `Available` condition at `now` means: the stretch to keep
/// and `None` when the member has been available for [`crate::fencing::LIFT_CONFIRMATION`]
/// of this spoke's time without a transition, else how long to wait before looking again.
pub fn look(stretch: Stretch, available: Option<&Condition>, now: Instant) -> (Stretch, Option<Duration>) {
    let need = crate::fencing::LIFT_CONFIRMATION;
    let Some(c) = available.filter(|c| c.status == "True") else {
        return (Stretch::default(), Some(RETRY));
    };
    let since = c.last_transition_time.0;
    match stretch.since {
        Some((t, first)) if t == since => {
            let waited = now.saturating_duration_since(first);
            let rest = need.saturating_sub(waited);
            (stretch, (!rest.is_zero()).then_some(rest))
        }
        _ => (Stretch { since: Some((since, now)) }, Some(need)),
    }
}

/// What this member's Work sync has seen of its own availability on the hub.
#[derive(Debug, Default)]
pub struct Confirmation {
    stretch: Mutex<Stretch>,
}

/// Whether the cluster of `work` fails over (its placement has a failover time).
fn fails_over(work: &KubeDirectorWork) -> bool {
    work.spec.cluster.spec.placement.as_ref().and_then(|p| p.failover_after()).is_some()
}

/// Whether `copy` does not run: it does not exist (`None`), or it is fenced because its
/// Work had gone. Applying the Work of a cluster that [`fails_over`] would start such a
/// copy, so that waits for the confirmation.
fn stopped(copy: Option<&KubeDirectorCluster>) -> bool {
    copy.is_none_or(|c| c.annotations().get(ANNOTATION_FENCED).is_some_and(|v| v == "true"))
}

/// `None` when `work` may be applied now; else how long to wait (see the module). Reads
/// the member and the Work from the hub only for a failover-enabled copy about to start.
pub(super) async fn before_start(ctx: &SyncContext, work: &KubeDirectorWork) -> Result<Option<Duration>, Error> {
    if !fails_over(work) {
        return Ok(None);
    }
    let cluster = &work.spec.cluster;
    let copies: Api<KubeDirectorCluster> = Api::namespaced(ctx.local.clone(), &cluster.namespace);
    let copy = copies.get_opt(&cluster.name).await.doing("read local cluster").map_err(Error::Confirm)?;
    if !stopped(copy.as_ref()) {
        return Ok(None);
    }
    let member = Api::<KubeDirectorMember>::all(ctx.hub.clone())
        .get_opt(&ctx.opts.member)
        .await
        .doing("read member")
        .map_err(Error::Confirm)?;
    let available = member.as_ref().and_then(|m| m.status.as_ref()).and_then(|s| condition(&s.conditions, "Available"));
    let wait = {
        let mut stretch = ctx.confirmation.stretch.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, wait) = look(*stretch, available, Instant::now());
        *stretch = next;
        wait
    };
    if let Some(wait) = wait {
        debug!(work = %work.name_any(), "failover-enabled copy: starting once the hub confirms this placement");
        return Ok(Some(wait));
    }
    let works: Api<KubeDirectorWork> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let fresh = works.get_opt(&work.name_any()).await.doing("read work").map_err(Error::Confirm)?;
    let epoch = work.spec.placement_epoch.to_string();
    if !crate::fencing::placement_confirmed(true, fresh.as_ref(), Some(&epoch)) {
        info!(work = %work.name_any(), "the hub no longer places this copy here: not started");
        return Ok(Some(RETRY));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn available(status: &str, since: i64) -> Condition {
        Condition {
            type_: "Available".into(),
            status: status.into(),
            reason: String::new(),
            message: String::new(),
            last_transition_time: Time(jiff::Timestamp::from_second(since).expect("time")),
            observed_generation: None,
        }
    }

    #[test]
    fn a_copy_starts_only_after_the_member_stayed_available_for_the_confirmation() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (s, wait) = look(Stretch::default(), Some(&available("True", 100)), at(0));
        assert_eq!(wait, Some(crate::fencing::LIFT_CONFIRMATION), "a first look never confirms");
        let (s, wait) = look(s, Some(&available("True", 100)), at(1));
        assert_eq!(wait, Some(Duration::from_secs(2)));
        let (s2, wait) = look(s, Some(&available("True", 100)), at(3));
        assert_eq!(wait, None, "the same stretch, long enough");
        // Later looks in the same stretch need no new wait, however far apart.
        assert_eq!(look(s2, Some(&available("True", 100)), at(3600)).1, None);
        // A new transition (the member was lost and came back in between) starts over.
        let (s3, wait) = look(s2, Some(&available("True", 200)), at(3601));
        assert_eq!(wait, Some(crate::fencing::LIFT_CONFIRMATION));
        // Not available, or no condition: wait, and forget the stretch.
        let (s4, wait) = look(s3, Some(&available("Unknown", 300)), at(3602));
        assert_eq!((s4, wait), (Stretch::default(), Some(RETRY)));
        assert_eq!(look(s3, None, at(3602)), (Stretch::default(), Some(RETRY)));
    }

    #[test]
    fn only_a_failover_enabled_copy_that_is_not_running_waits() {
        let starts_copy =
            |work: &KubeDirectorWork, copy: Option<&KubeDirectorCluster>| fails_over(work) && stopped(copy);
        let mut work = KubeDirectorWork::new("default.db", Default::default());
        assert!(!starts_copy(&work, None), "no failover: starts at once");
        work.spec.cluster.spec.placement = Some(
            serde_json::from_value(serde_json::json!({"failover": {"policy": "Reschedule", "afterSeconds": 60}}))
                .expect("placement"),
        );
        assert!(starts_copy(&work, None), "no copy yet");
        let mut copy = KubeDirectorCluster::new("db", Default::default());
        assert!(!starts_copy(&work, Some(&copy)), "runs already");
        copy.annotations_mut().insert(ANNOTATION_FENCED.into(), "true".into());
        assert!(starts_copy(&work, Some(&copy)), "fenced since its Work had gone");
    }
}
