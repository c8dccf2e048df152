//! Leader election over a Lease: every hub replica serves the webhook, only the leader runs
//! the controllers. A leader that cannot renew steps down (the process exits and is
//! restarted), so two replicas never write at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tracing::{info, warn};

/// Name of the hub's leader Lease.
pub const LEASE_NAME: &str = "kdfed-hub";

/// One replica's view of the election.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl Elector {
    /// An elector for the Lease in `namespace` (created if missing).
    pub async fn new(
        client: &Client,
        namespace: &str,
        identity: String,
        duration: Duration,
    ) -> Result<Elector, kube::Error> {
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(namespace.to_string()), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        // Read first: a restarted hub writes nothing that is in place already.
        let namespaces = Api::<Namespace>::all(client.clone());
        if namespaces.get_opt(namespace).await?.is_none() {
            namespaces.patch(namespace, &PatchParams::apply("kdfed-hub").force(), &Patch::Apply(&ns)).await?;
        }
        Ok(Elector { api: Api::namespaced(client.clone(), namespace), identity, duration })
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt: `Ok(true)` when this replica holds the Lease afterwards.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEASE_NAME.to_string()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds(self.duration)),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let duration = spec.lease_duration_seconds.map_or(self.duration, |s| Duration::from_secs(s.max(0) as u64));
        let expired = renewed.is_none_or(|t| now.duration_since(t).as_secs_f64() > duration.as_secs_f64());
        if holder != self.identity && !expired {
            return Ok(false);
        }
        if holder != self.identity {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(MicroTime(now));
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds(self.duration));
        lease.spec = Some(spec);
        // replace() carries the resourceVersion: a concurrent writer makes this fail.
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        let mut announced = false;
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    info!(identity = %self.identity, "became the hub leader");
                    return;
                }
                Ok(false) if !announced => {
                    info!(identity = %self.identity, "another replica leads; standing by");
                    announced = true;
                }
                Ok(false) => {}
                Err(e) => warn!("leader election: {e}"),
            }
            tokio::time::sleep(self.duration / 5).await;
        }
    }

    /// Renews the Lease until it cannot; returns when leadership is lost.
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("another replica took the lease");
                    return;
                }
                Err(e) => {
                    warn!("cannot renew the leader lease: {e}");
                    if last_ok.elapsed() >= self.duration {
                        return;
                    }
                }
            }
        }
    }
}
