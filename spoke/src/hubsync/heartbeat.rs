//! The heartbeat: the member renews its Lease in its namespace on the hub every
//! `lease_interval`. The hub judges availability from it; each renewal that succeeds is
//! also recorded for self-fencing ([`crate::fencing`]), timed from when it was sent, and
//! in the member-local Lease [`SPOKE_HEARTBEAT_LEASE`] that the fence watchdog reads
//! ([`crate::watchdog`]), by a loop of its own so that a failing local write never delays
//! the next renewal on the hub.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kdfed_crds::federation::{MEMBER_LEASE, SPOKE_HEARTBEAT_LEASE};
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;
use tracing::warn;

use super::{FIELD_MANAGER, SyncContext};

/// The Lease a renewal applies: held by `holder`, valid for three intervals (so one or two
/// late renewals do not make the member look gone), renewed at `now`.
pub fn lease(namespace: &str, holder: &str, interval: Duration, now: jiff::Timestamp) -> Lease {
    named_lease(MEMBER_LEASE, namespace, holder, interval, now)
}

/// The member-local record of a renewal the hub accepted: [`SPOKE_HEARTBEAT_LEASE`] in the
/// spoke's namespace, held by the member, renewed at `sent` (when that renewal was sent).
pub fn local_lease(namespace: &str, member: &str, interval: Duration, sent: jiff::Timestamp) -> Lease {
    named_lease(SPOKE_HEARTBEAT_LEASE, namespace, member, interval, sent)
}

fn named_lease(name: &str, namespace: &str, holder: &str, interval: Duration, now: jiff::Timestamp) -> Lease {
    let seconds = interval.as_secs().max(1).saturating_mul(3);
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(i32::try_from(seconds).unwrap_or(i32::MAX)),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Renews the Lease until the process stops, backing off while the hub refuses the
/// member's credentials. Each renewal that succeeded goes to `record` (when it was sent),
/// for [`record_locally`].
pub(super) async fn run(ctx: Arc<SyncContext>, record: Option<watch::Sender<Option<jiff::Timestamp>>>) {
    let namespace = ctx.namespace();
    let leases: Api<Lease> = Api::namespaced(ctx.hub.clone(), &namespace);
    let holder = format!("{}/{}", ctx.opts.member, std::env::var("HOSTNAME").unwrap_or_else(|_| "spoke".into()));
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    loop {
        let wall = jiff::Timestamp::now();
        let lease = lease(&namespace, &holder, ctx.opts.lease_interval, wall);
        let sent = std::time::Instant::now();
        match leases.patch(MEMBER_LEASE, &pp, &Patch::Apply(lease)).await {
            Ok(_) => {
                ctx.beats.renewed(sent);
                ctx.access.accepted();
                if let Some(record) = &record {
                    record.send_replace(Some(wall));
                }
            }
            Err(e) if crate::hubaccess::is_refusal(&e) => ctx.access.refused(&ctx.opts.member, "heartbeat"),
            Err(e) => warn!("heartbeat not renewed: {e}"),
        }
        tokio::time::sleep(ctx.access.pause(ctx.opts.lease_interval)).await;
    }
}

/// Writes each renewal the hub accepted (from [`run`]) into the member-local Lease, until
/// the process stops. Only the newest counts: renewals that arrive while a write is under
/// way are folded into the next one. A failed write is logged (once per failure streak)
/// and retried with the next renewal; the watchdog then counts silence, which is the safe
/// side.
pub(super) async fn record_locally(ctx: Arc<SyncContext>, mut renewals: watch::Receiver<Option<jiff::Timestamp>>) {
    let namespace = ctx.opts.system_namespace.clone();
    let leases: Api<Lease> = Api::namespaced(ctx.local.clone(), &namespace);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut failing = false;
    while renewals.changed().await.is_ok() {
        let Some(sent) = *renewals.borrow_and_update() else { continue };
        let lease = local_lease(&namespace, &ctx.opts.member, ctx.opts.lease_interval, sent);
        match leases.patch(SPOKE_HEARTBEAT_LEASE, &pp, &Patch::Apply(lease)).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("heartbeat recorded for the fence watchdog again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                warn!("heartbeat not recorded for the fence watchdog (it will count silence): {e}");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_holds_the_lease_for_three_intervals() {
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("time");
        let lease = lease("kdfed-member-east", "east/spoke-0", Duration::from_secs(10), now);
        let json = serde_json::to_value(&lease).expect("json");
        assert_eq!(json["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(json["kind"], "Lease");
        assert_eq!(json["metadata"]["name"], MEMBER_LEASE);
        assert_eq!(json["metadata"]["namespace"], "kdfed-member-east");
        assert_eq!(json["spec"]["holderIdentity"], "east/spoke-0");
        assert_eq!(json["spec"]["leaseDurationSeconds"], 30);
        assert_eq!(lease.spec.and_then(|s| s.renew_time), Some(MicroTime(now)));
        // A sub-second interval still holds it for three seconds.
        let short = super::lease("ns", "h", Duration::from_millis(200), now);
        assert_eq!(short.spec.and_then(|s| s.lease_duration_seconds), Some(3));
    }

    #[test]
    fn the_local_record_names_the_member_and_when_the_accepted_renewal_was_sent() {
        let sent = jiff::Timestamp::from_second(1_800_000_000).expect("time");
        let json =
            serde_json::to_value(local_lease("kdfed-system", "west", Duration::from_secs(10), sent)).expect("json");
        assert_eq!(json["metadata"]["name"], SPOKE_HEARTBEAT_LEASE);
        assert_eq!(json["metadata"]["namespace"], "kdfed-system");
        assert_eq!(json["spec"]["holderIdentity"], "west");
        assert_eq!(json["spec"]["renewTime"], serde_json::to_value(MicroTime(sent)).expect("time"));
    }
}
