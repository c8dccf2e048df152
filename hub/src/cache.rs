//! The hub's watch caches of the fleet: members, intents, Works and the members' heartbeat
//! Leases, each kept current by one watch. The availability loop and the metrics collector
//! read them instead of listing every object and reading every Lease on every pass (at 200
//! members that was ~140 requests/s at idle; now it is the watches' events alone).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::federation::{KubeDirectorMember, KubeDirectorWork, MEMBER_LEASE, member_namespace};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tracing::warn;

/// Read-only views of the fleet, shared by the hub's loops.
#[derive(Clone)]
pub struct FleetCache {
    /// Every `KubeDirectorMember`.
    pub members: Store<KubeDirectorMember>,
    /// Every `KubeDirectorCluster` (malformed ones as errors, so they never stop the watch).
    pub intents: Store<DeserializeGuard<KubeDirectorCluster>>,
    /// Every `KubeDirectorWork`, without its spec (see `trim_work`).
    pub works: Store<KubeDirectorWork>,
    /// The members' heartbeat Leases (named `kdfed-spoke`, in member namespaces).
    pub leases: Store<Lease>,
    /// True once every store has had its first full list. (A kube-runtime store wakes only
    /// one of several tasks waiting for its readiness, so the waiting happens once, in the
    /// driver, and the loops wait on this instead.)
    ready: tokio::sync::watch::Receiver<bool>,
}

impl FleetCache {
    /// The caches and the future that keeps them current (run it as long as they are read).
    pub fn start(client: &Client) -> (Arc<FleetCache>, impl Future<Output = ()> + Send + use<>) {
        let (members, members_writer) = reflector::store();
        let (intents, intents_writer) = reflector::store();
        let (works, works_writer) = reflector::store();
        let (leases, leases_writer) = reflector::store();
        let driver_of =
            |name: &'static str, stream: futures::stream::BoxStream<'static, Result<(), watcher::Error>>| async move {
                stream
                    .for_each(|r| async move {
                        if let Err(e) = r {
                            warn!("{name} watch: {e}");
                        }
                    })
                    .await;
            };
        let cfg = watcher::Config::default;
        let members_stream = reflected(Api::<KubeDirectorMember>::all(client.clone()), cfg(), members_writer, keep);
        let intents_stream =
            reflected(Api::<DeserializeGuard<KubeDirectorCluster>>::all(client.clone()), cfg(), intents_writer, keep);
        let works_stream = reflected(Api::<KubeDirectorWork>::all(client.clone()), cfg(), works_writer, trim_work);
        let leases_stream = reflected(
            Api::<Lease>::all(client.clone()),
            cfg().fields(&format!("metadata.name={MEMBER_LEASE}")),
            leases_writer,
            keep,
        );
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let cache = FleetCache { members, intents, works, leases, ready };
        let stores = cache.clone();
        let announce = async move {
            let _ = stores.members.wait_until_ready().await;
            let _ = stores.intents.wait_until_ready().await;
            let _ = stores.works.wait_until_ready().await;
            let _ = stores.leases.wait_until_ready().await;
            let _ = ready_tx.send(true);
            // Keep the sender: a dropped one would read as "closed" to waiters.
            std::future::pending::<()>().await;
        };
        let driver = async move {
            tokio::join!(
                driver_of("members", members_stream),
                driver_of("clusters", intents_stream),
                driver_of("works", works_stream),
                driver_of("heartbeat leases", leases_stream),
                announce,
            );
        };
        (Arc::new(cache), driver)
    }

    /// Waits until every cache has had its first full list (any number of tasks may wait).
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// When `member`'s spoke last renewed its Lease (`renewTime`, on the member's clock).
    pub fn last_renewal(&self, member: &str) -> Option<jiff::Timestamp> {
        let key = ObjectRef::new(MEMBER_LEASE).within(&member_namespace(member));
        self.leases.get(&key).and_then(|l| l.spec.clone()).and_then(|s| s.renew_time).map(|t| t.0)
    }
}

/// A watch of `api` that keeps `writer`'s store current. After watch errors it pauses
/// briefly (see `TriggerBackoff`): kube-runtime's default grows to 30 s, so after the hub's
/// API server restarts the heartbeat Leases would be read from a cache tens of seconds old,
/// as if every member had stopped renewing.
fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    trim: fn(&mut K),
) -> futures::stream::BoxStream<'static, Result<(), watcher::Error>>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    watcher(api, config)
        .backoff(kdfed_common::reconcile::TriggerBackoff::default())
        .modify(move |o: &mut K| {
            trim_metadata(o.meta_mut());
            trim(o);
        })
        .reflect(writer)
        .map(|r| r.map(|_| ()))
        .boxed()
}

/// Drops what no reader of the caches needs from an object's metadata: the field managers
/// and kubectl's copy of the last applied manifest (together often larger than the spec).
pub fn trim_metadata(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The cached Works keep their metadata and status: the metrics read the state reported,
/// and the intent controller reads a Work it is about to write from the API server. The
/// spec (the resolved app and cluster, a frozen snapshot) is most of a Work's size.
fn trim_work(work: &mut KubeDirectorWork) {
    work.spec = Default::default();
}

fn keep<K>(_: &mut K) {}
