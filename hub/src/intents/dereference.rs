//! Dereference: what a pass over an intent reads from the hub's API server, each object
//! once: the app, the member cluster it is placed on, its Work, the objects it connects
//! to, and (only when a placement is to be decided) the fleet, from the hub's caches.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kdfed_common::Doing;
use kdfed_crds::app::KubeDirectorApp;
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterSpec};
use kdfed_crds::federation::{KubeDirectorMember, KubeDirectorWork, member_namespace};
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::{Client, ResourceExt};

use super::{Context, Error};

/// The intent's app from its catalog, with the catalog it was found in (`local` or
/// `system`); `None` when it is not registered.
pub async fn app(ctx: &Context, intent: &KubeDirectorCluster) -> Result<Option<(KubeDirectorApp, String)>, Error> {
    let ns = intent.namespace().unwrap_or_else(|| "default".into());
    kdfed_common::catalog::find_app(
        &ctx.client,
        &ns,
        &ctx.system_namespace,
        &intent.spec.app,
        intent.spec.app_catalog.as_deref(),
    )
    .await
    .doing("read app")
    .map_err(Error::Dereference)
}

/// A member cluster by name; `None` when it is not registered.
pub async fn member_cluster(client: &Client, name: &str) -> Result<Option<KubeDirectorMember>, Error> {
    Api::<KubeDirectorMember>::all(client.clone()).get_opt(name).await.doing("read member").map_err(Error::Dereference)
}

/// A member cluster by name from the hub's cache, read from the API server only when the
/// cache does not hold it (not yet synced, or just registered); `None` when it is not
/// registered. The cache may lag a moment; the member's next change wakes the clusters it
/// concerns again (see [`super::wake`]), and a failover reads it fresh.
pub async fn cached_member_cluster(ctx: &Context, name: &str) -> Result<Option<KubeDirectorMember>, Error> {
    let key = kube::runtime::reflector::ObjectRef::new(name);
    match ctx.cache.members.get(&key) {
        Some(m) => Ok(Some((*m).clone())),
        None => member_cluster(&ctx.client, name).await,
    }
}

/// The Work `wname` in `member_cluster`'s namespace.
pub async fn work(client: &Client, member_cluster: &str, wname: &str) -> Result<Option<KubeDirectorWork>, Error> {
    let works: Api<KubeDirectorWork> = Api::namespaced(client.clone(), &member_namespace(member_cluster));
    works.get_opt(wname).await.doing("read work").map_err(Error::Dereference)
}

/// What a placement decision looks at: every member cluster and every intent.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    /// Every registered member cluster.
    pub member_clusters: Vec<KubeDirectorMember>,
    /// Every intent as the cache holds it, shared with the cache, not copied (the placed
    /// ones count against their member cluster's capacity; malformed ones are skipped by
    /// [`Fleet::intents`]). A snapshot is taken every half second while decisions run: a
    /// copy of 10,000 intents each time was most of the hub's memory churn at that size.
    pub cached: Vec<Arc<DeserializeGuard<KubeDirectorCluster>>>,
}

impl Fleet {
    /// A fleet of `member_clusters` and (well-formed) `intents`.
    pub fn new(member_clusters: Vec<KubeDirectorMember>, intents: Vec<KubeDirectorCluster>) -> Fleet {
        Fleet { member_clusters, cached: intents.into_iter().map(|i| Arc::new(DeserializeGuard(Ok(i)))).collect() }
    }

    /// Every well-formed intent.
    pub fn intents(&self) -> impl Iterator<Item = &KubeDirectorCluster> + Clone {
        self.cached.iter().filter_map(|g| g.0.as_ref().ok())
    }
}

/// The fleet from the hub's watch caches, never listed per decision (at 200 waiting
/// clusters and 200 members that made the hub its API server's busiest client). The caches
/// lag behind the hub's own placements: the ledger ([`super::ledger`]) counts those on top.
pub fn fleet(cache: &crate::cache::FleetCache) -> Fleet {
    let member_clusters = cache.members.state().iter().map(|m| (**m).clone()).collect();
    Fleet { member_clusters, cached: cache.intents.state() }
}

/// The objects a Work carries: the Secrets the cluster references, the ConfigMaps it
/// connects to (missing ones are skipped, as configmeta skips them), and the master key
/// when a secret key is encrypted with it.
#[derive(Clone, Debug, Default)]
pub struct Connected {
    /// Referenced Secrets (default secret, role secrets, connected secrets), by name.
    pub secrets: Vec<Secret>,
    /// Connected ConfigMaps, by name.
    pub config_maps: Vec<ConfigMap>,
    /// The hub's master key, read only when a secret key needs it.
    pub master_key: Option<String>,
}

/// Reads the objects a cluster's Work carries (see [`Connected`]).
pub async fn connected(ctx: &Context, ns: &str, spec: &KubeDirectorClusterSpec) -> Result<Connected, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = Connected::default();
    for name in referenced_secrets(spec) {
        if let Some(secret) = secrets.get_opt(&name).await.doing("read secret").map_err(Error::Dereference)? {
            out.secrets.push(secret);
        }
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    for name in connected_configmaps(spec) {
        if let Some(cm) = config_maps.get_opt(&name).await.doing("read configmap").map_err(Error::Dereference)? {
            out.config_maps.push(cm);
        }
    }
    if needs_master_key(spec) {
        out.master_key = kdfed_common::secretkeys::master_key(&ctx.client, &ctx.system_namespace)
            .await
            .map_err(Error::Dereference)?;
    }
    Ok(out)
}

/// Names of the Secrets a cluster references: its default secret, its roles' secrets and
/// the Secrets it connects to, sorted, each once.
pub fn referenced_secrets(spec: &KubeDirectorClusterSpec) -> Vec<String> {
    let mut names: Vec<String> = spec.default_secret.iter().map(|s| s.name.clone()).collect();
    names.extend(spec.roles.iter().filter_map(|r| r.secret.as_ref().map(|s| s.name.clone())));
    names.extend(spec.connections.iter().flat_map(|c| c.secrets.clone()));
    names.sort();
    names.dedup();
    names
}

/// Names of the ConfigMaps a cluster connects to, sorted, each once.
pub fn connected_configmaps(spec: &KubeDirectorClusterSpec) -> Vec<String> {
    let mut names: Vec<String> = spec.connections.iter().flat_map(|c| c.configmaps.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// Whether a secret key of the cluster is encrypted (its value needs the master key).
pub fn needs_master_key(spec: &KubeDirectorClusterSpec) -> bool {
    spec.roles.iter().any(|r| r.secret_keys.iter().any(|k| k.encrypted_value.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intents::fixtures::spec;

    #[test]
    fn a_work_reads_each_referenced_secret_and_connected_configmap_once_in_name_order() {
        let spec = spec(serde_json::json!({
            "app": "a",
            "defaultSecret": {"name": "shared", "mountPath": "/s"},
            "roles": [
                {"id": "x", "secret": {"name": "x-secret", "mountPath": "/s"}},
                {"id": "y", "secret": {"name": "shared", "mountPath": "/s"}},
            ],
            "connections": {"secrets": ["linked", "x-secret"], "configmaps": ["conf", "b-conf", "conf"]},
        }));
        assert_eq!(referenced_secrets(&spec), ["linked", "shared", "x-secret"]);
        assert_eq!(connected_configmaps(&spec), ["b-conf", "conf"]);
        assert!(!needs_master_key(&spec));
    }

    #[test]
    fn the_master_key_is_read_only_for_encrypted_secret_keys() {
        let plain = spec(serde_json::json!({
            "app": "a", "roles": [{"id": "x", "secretKeys": [{"name": "k", "value": "v"}]}],
        }));
        assert!(!needs_master_key(&plain));
        let encrypted = spec(serde_json::json!({
            "app": "a", "roles": [{"id": "x", "secretKeys": [{"name": "k", "encryptedValue": "00ff"}]}],
        }));
        assert!(needs_master_key(&encrypted));
    }
}
