//! The heartbeat: the member renews its Lease in its namespace on the hub every
//! `lease_interval`. The hub judges availability from it; each renewal that succeeds is
//! also recorded for self-fencing ([`crate::fencing`]), timed from when it was sent.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kdfed_crds::federation::MEMBER_LEASE;
use kube::api::{Api, Patch, PatchParams};
use tracing::warn;

use super::{FIELD_MANAGER, SyncContext};

/// The Lease a renewal applies: held by `holder`, valid for three intervals (so one or two
/// late renewals do not make the member look gone), renewed at `now`.
pub fn lease(namespace: &str, holder: &str, interval: Duration, now: jiff::Timestamp) -> Lease {
    let seconds = interval.as_secs().max(1).saturating_mul(3);
    Lease {
        metadata: ObjectMeta {
            name: Some(MEMBER_LEASE.to_string()),
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
/// member's credentials.
pub(super) async fn run(ctx: Arc<SyncContext>) {
    let namespace = ctx.namespace();
    let leases: Api<Lease> = Api::namespaced(ctx.hub.clone(), &namespace);
    let holder = format!("{}/{}", ctx.opts.member, std::env::var("HOSTNAME").unwrap_or_else(|_| "spoke".into()));
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    loop {
        let lease = lease(&namespace, &holder, ctx.opts.lease_interval, jiff::Timestamp::now());
        let sent = std::time::Instant::now();
        match leases.patch(MEMBER_LEASE, &pp, &Patch::Apply(lease)).await {
            Ok(_) => {
                ctx.beats.renewed(sent);
                ctx.access.accepted();
            }
            Err(e) if crate::hubaccess::is_refusal(&e) => ctx.access.refused(&ctx.opts.member, "heartbeat"),
            Err(e) => warn!("heartbeat not renewed: {e}"),
        }
        tokio::time::sleep(ctx.access.pause(ctx.opts.lease_interval)).await;
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
}
