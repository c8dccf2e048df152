//! Connections between a cluster and the clusters, ConfigMaps and Secrets named in its
//! `spec.connections`, as upstream KubeDirector tracks them: an MD5 over what was observed
//! (`status.lastConnectionHash`), a counter annotation bumped each time it changes
//! (`hashChangeCounter`, the "connection version" members are brought up to with
//! `startscript --reconnect`), and a counter bumped on connecting clusters when a
//! connected cluster becomes `configured` (`connUpdateCounter`). Also the members' service
//! auth tokens (`hasAuthToken`). Everything here is pure: the director reads the
//! connected objects once per pass ([`Connected`]) and both the hash and configmeta's
//! `connections` are computed from that one read.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kdfed_crds::app::KubeDirectorAppSpec;
use kdfed_crds::cluster::{KubeDirectorCluster, KubeDirectorClusterStatus};
use kdfed_crds::config::KubeDirectorConfigSpec;
use kube::ResourceExt;

use super::{configmeta, members, names};

pub use super::names::{CONN_UPDATE_COUNTER, HASH_CHANGE_COUNTER};

/// What the director saw of the objects a cluster connects to, in `spec.connections` order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Connected clusters: name → `Some(status.specGenerationToProcess)` when found.
    pub clusters: Vec<(String, Option<Option<i64>>)>,
    /// Connected ConfigMaps: name → resourceVersion when found.
    pub configmaps: Vec<(String, Option<String>)>,
    /// Connected Secrets: name → resourceVersion when found.
    pub secrets: Vec<(String, Option<String>)>,
}

/// A connected cluster as read: the cluster (`None` when it does not decode) and its app
/// (`None` when the cluster is malformed, is the connecting cluster itself or its app is not
/// registered).
#[derive(Clone, Debug, Default)]
pub struct ConnectedCluster {
    /// The cluster, when it decodes.
    pub cluster: Option<KubeDirectorCluster>,
    /// Its app's spec as registered (not defaulted).
    pub app: Option<KubeDirectorAppSpec>,
}

/// Everything `spec.connections` names, read once per pass, in `spec.connections` order;
/// `None` for an object that does not exist.
#[derive(Clone, Debug, Default)]
pub struct Connected {
    /// Connected clusters.
    pub clusters: Vec<(String, Option<ConnectedCluster>)>,
    /// Connected ConfigMaps.
    pub configmaps: Vec<(String, Option<ConfigMap>)>,
    /// Connected Secrets.
    pub secrets: Vec<(String, Option<Secret>)>,
}

/// What the connections hash covers of the objects read.
pub fn observed(connected: &Connected) -> Observed {
    let generation = |c: &ConnectedCluster| {
        c.cluster.as_ref().and_then(|c| c.status.as_ref()).and_then(|s| s.spec_generation_to_process)
    };
    Observed {
        clusters: connected.clusters.iter().map(|(name, c)| (name.clone(), c.as_ref().map(generation))).collect(),
        configmaps: connected
            .configmaps
            .iter()
            .map(|(name, cm)| (name.clone(), cm.as_ref().and_then(|c| c.metadata.resource_version.clone())))
            .collect(),
        secrets: connected
            .secrets
            .iter()
            .map(|(name, s)| (name.clone(), s.as_ref().and_then(|s| s.metadata.resource_version.clone())))
            .collect(),
    }
}

/// The connected objects as configmeta shows them. Missing ones are skipped (as upstream),
/// and so are ConfigMaps and Secrets without a type label, the connecting cluster itself
/// and clusters whose app is not registered.
pub fn for_configmeta(
    connected: &Connected,
    own_name: &str,
    ns: &str,
    domain_base: &str,
    config: Option<&KubeDirectorConfigSpec>,
) -> configmeta::Connections {
    let mut out = configmeta::Connections::default();
    for (name, cm) in &connected.configmaps {
        let Some(cm) = cm else { continue };
        let Some(kind) = cm.labels().get(names::LABEL_CONFIGMAP_TYPE).cloned() else { continue };
        let data = cm.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        out.configmaps.push(connected_object(kind, name, data, cm.labels(), cm.annotations()));
    }
    for (name, secret) in &connected.secrets {
        let Some(secret) = secret else { continue };
        let Some(kind) = secret.labels().get(names::LABEL_SECRET_TYPE).cloned() else { continue };
        let data = secret.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        out.secrets.push(connected_object(kind, name, data, secret.labels(), secret.annotations()));
    }
    for (name, found) in &connected.clusters {
        let Some(ConnectedCluster { cluster: Some(other), app: Some(app) }) = found else { continue };
        if name == own_name {
            continue;
        }
        out.clusters.insert(name.clone(), cluster_document(name, other, app, ns, domain_base, config));
    }
    out
}

fn connected_object(
    kind: String,
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> configmeta::ConnectedObject {
    configmeta::ConnectedObject {
        kind,
        name: name.to_string(),
        data,
        labels: labels.clone(),
        annotations: annotations.clone(),
    }
}

/// A connected cluster's configmeta (without `node`), from its spec and last status.
fn cluster_document(
    name: &str,
    other: &KubeDirectorCluster,
    app: &KubeDirectorAppSpec,
    ns: &str,
    domain_base: &str,
    config: Option<&KubeDirectorConfigSpec>,
) -> serde_json::Value {
    // Only the app is defaulted: the roles are shown as the connected cluster asks for them.
    let resolved = kdfed_crds::resolve::defaulted(app, &other.spec, config);
    let status = other.status.clone().unwrap_or_default();
    let headless = status.cluster_service.clone().unwrap_or_default();
    let roles = other
        .spec
        .roles
        .iter()
        .filter_map(|spec| {
            let role = status.roles.iter().find(|r| r.id == spec.id)?;
            Some(configmeta::RoleMembers { spec, members: role.members.iter().collect(), secret_keys: BTreeMap::new() })
        })
        .collect();
    let uid = other.metadata.uid.clone().unwrap_or_default();
    let view = configmeta::ClusterView {
        name,
        uid: &uid,
        app: &resolved.chosen,
        domain: configmeta::domain(&headless, ns, domain_base),
        roles,
        choices: &resolved.choices,
    };
    configmeta::cluster_document(&view, Some(name))
}

/// Upstream's connections hash: MD5 (hex) of, in order, each connected cluster's name and
/// its `specGenerationToProcess` (`nil` when unset, empty when the cluster is missing),
/// then each ConfigMap's and each Secret's name and resourceVersion (empty when missing).
pub fn hash(observed: &Observed) -> String {
    let mut text = String::new();
    for (name, generation) in &observed.clusters {
        text.push_str(name);
        match generation {
            Some(Some(g)) => text.push_str(&g.to_string()),
            Some(None) => text.push_str("nil"),
            None => {}
        }
    }
    for (name, version) in observed.configmaps.iter().chain(&observed.secrets) {
        text.push_str(name);
        text.push_str(version.as_deref().unwrap_or(""));
    }
    md5_hex(text.as_bytes())
}

/// Records a new connections hash in `status`; a change (not the first hash) is a new spec
/// generation (upstream: configured members get fresh configmeta and `--reconnect`), and
/// the cluster is `updating` unless it is still being created.
pub fn record_hash(status: &mut KubeDirectorClusterStatus, hash: &str, changed: bool) {
    status.last_connection_hash = Some(hash.to_string());
    if changed {
        status.spec_generation_to_process = Some(status.spec_generation_to_process.unwrap_or(0) + 1);
        if status.state.as_deref() != Some(members::CLUSTER_CREATING) {
            status.state = Some(members::CLUSTER_UPDATING.to_string());
        }
    }
}

/// The counter an annotation holds, if it holds a number.
pub fn counter(annotations: &BTreeMap<String, String>, key: &str) -> Option<i64> {
    annotations.get(key).and_then(|v| v.trim().parse().ok())
}

/// The next value of a counter annotation: `1` when absent or not a number (upstream).
pub fn next_counter(annotations: &BTreeMap<String, String>, key: &str) -> i64 {
    counter(annotations, key).map_or(1, |n| n + 1)
}

/// Gives every member of `roles` that lives (or is about to) an auth token if it has none;
/// tokens once given never change. Returns how many were generated.
pub fn assign_auth_tokens(
    status: &mut KubeDirectorClusterStatus,
    roles: &BTreeSet<String>,
    mut generate: impl FnMut() -> String,
) -> usize {
    let mut generated = 0;
    for role in status.roles.iter_mut().filter(|r| roles.contains(&r.id)) {
        for m in &mut role.members {
            let live = matches!(
                m.state.as_str(),
                members::CREATE_PENDING | members::CREATING | members::CONFIGURED | members::CONFIG_ERROR
            );
            if live && m.auth_token.as_deref().is_none_or(str::is_empty) {
                m.auth_token = Some(generate());
                generated += 1;
            }
        }
    }
    generated
}

/// A new auth token in upstream's form: the MD5 (hex) of 16 random bytes.
pub fn new_auth_token() -> std::io::Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| std::io::Error::other("no system randomness"))?;
    Ok(md5_hex(&bytes))
}

/// MD5 (RFC 1321) as lowercase hex. Used only where upstream's format must be matched (the
/// connections hash, token shape), never for security.
pub fn md5_hex(input: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(input))
}

#[cfg(test)]
mod tests {
    use kdfed_crds::cluster::{MemberStatus, RoleStatus};

    use super::*;

    #[test]
    fn md5_matches_the_rfc_1321_test_suite() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"a"), "0cc175b9c0f1b6a831c399e269772661");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(md5_hex(b"message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
        assert_eq!(md5_hex(b"abcdefghijklmnopqrstuvwxyz"), "c3fcd3d76192e4007dfb496cca67e13b");
        let long = "1234567890".repeat(8);
        assert_eq!(md5_hex(long.as_bytes()), "57edf4a22be3c955ac49da2e2107b67a");
    }

    #[test]
    fn the_hash_covers_names_generations_and_resource_versions_in_upstream_order() {
        let observed = Observed {
            clusters: vec![("db".into(), Some(Some(3))), ("gone".into(), None), ("new".into(), Some(None))],
            configmaps: vec![("settings".into(), Some("41".into())), ("absent".into(), None)],
            secrets: vec![("creds".into(), Some("7".into()))],
        };
        assert_eq!(hash(&observed), md5_hex(b"db3gonenewnilsettings41absentcreds7"));
        assert_eq!(hash(&Observed::default()), md5_hex(b""), "no connections");
        let mut changed = observed.clone();
        changed.configmaps[0].1 = Some("42".into());
        assert_ne!(hash(&changed), hash(&observed), "a new resourceVersion changes the hash");
        let mut regenerated = observed.clone();
        regenerated.clusters[0].1 = Some(Some(4));
        assert_ne!(hash(&regenerated), hash(&observed), "a connected cluster's new spec generation changes it");
    }

    #[test]
    fn counters_start_at_one_and_count_up() {
        let mut annotations = BTreeMap::new();
        assert_eq!(counter(&annotations, HASH_CHANGE_COUNTER), None);
        assert_eq!(next_counter(&annotations, HASH_CHANGE_COUNTER), 1);
        annotations.insert(HASH_CHANGE_COUNTER.to_string(), "4".to_string());
        assert_eq!(next_counter(&annotations, HASH_CHANGE_COUNTER), 5);
        annotations.insert(CONN_UPDATE_COUNTER.to_string(), "junk".to_string());
        assert_eq!(next_counter(&annotations, CONN_UPDATE_COUNTER), 1, "not a number: start over");
    }

    fn member(pod: &str, state: &str, token: Option<&str>) -> MemberStatus {
        MemberStatus {
            pod: pod.into(),
            state: state.into(),
            auth_token: token.map(str::to_string),
            ..MemberStatus::default()
        }
    }

    #[test]
    fn auth_tokens_are_generated_once_per_live_member_of_token_roles() {
        let mut status = KubeDirectorClusterStatus {
            roles: vec![
                RoleStatus {
                    id: "web".into(),
                    members: vec![
                        member("web-0", members::CONFIGURED, Some("kept")),
                        member("web-1", members::CREATE_PENDING, None),
                        member("web-2", members::DELETING, None),
                    ],
                    ..RoleStatus::default()
                },
                RoleStatus {
                    id: "db".into(),
                    members: vec![member("db-0", members::CONFIGURED, None)],
                    ..RoleStatus::default()
                },
            ],
            ..KubeDirectorClusterStatus::default()
        };
        let roles = BTreeSet::from(["web".to_string()]);
        let mut n = 0;
        let generated = assign_auth_tokens(&mut status, &roles, || {
            n += 1;
            format!("t{n}")
        });
        assert_eq!(generated, 1);
        let tokens: Vec<Option<&str>> =
            status.roles.iter().flat_map(|r| &r.members).map(|m| m.auth_token.as_deref()).collect();
        assert_eq!(tokens, vec![Some("kept"), Some("t1"), None, None]);
        let again = assign_auth_tokens(&mut status, &roles, || "other".to_string());
        assert_eq!(again, 0, "a token never changes once given");
    }

    #[test]
    fn new_tokens_look_like_upstreams_and_differ() {
        let a = new_auth_token().expect("token");
        let b = new_auth_token().expect("token");
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{a}");
        assert_ne!(a, b);
    }

    fn configmap(name: &str, version: &str, kind: Option<&str>) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.resource_version = Some(version.into());
        if let Some(kind) = kind {
            cm.metadata.labels = Some(BTreeMap::from([(names::LABEL_CONFIGMAP_TYPE.to_string(), kind.to_string())]));
        }
        cm.data = Some(BTreeMap::from([("k".to_string(), "v".to_string())]));
        cm
    }

    fn app() -> KubeDirectorAppSpec {
        serde_json::from_value(serde_json::json!({
            "label": {"name": "t"}, "distroID": "t", "version": "1", "configSchemaVersion": 7,
            "defaultImageRepoTag": "img:1", "roles": [{"id": "head", "cardinality": "1"}],
            "config": {"selectedRoles": ["head"], "roleServices": []}
        }))
        .expect("app")
    }

    fn cluster(name: &str, generation: Option<i64>) -> KubeDirectorCluster {
        let mut c: KubeDirectorCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": name, "uid": "u"}, "spec": {"app": "t", "roles": [{"id": "head"}]}
        }))
        .expect("cluster");
        c.status = Some(KubeDirectorClusterStatus {
            spec_generation_to_process: generation,
            cluster_service: Some("kdhs-db".into()),
            roles: vec![RoleStatus {
                id: "head".into(),
                members: vec![member("db-0", members::CONFIGURED, None)],
                ..RoleStatus::default()
            }],
            ..KubeDirectorClusterStatus::default()
        });
        c
    }

    fn connected() -> Connected {
        Connected {
            clusters: vec![
                ("db".into(), Some(ConnectedCluster { cluster: Some(cluster("db", Some(3))), app: Some(app()) })),
                ("broken".into(), Some(ConnectedCluster::default())),
                ("gone".into(), None),
                ("me".into(), Some(ConnectedCluster { cluster: Some(cluster("me", None)), app: None })),
            ],
            configmaps: vec![
                ("settings".into(), Some(configmap("settings", "41", Some("tuning")))),
                ("plain".into(), Some(configmap("plain", "9", None))),
                ("absent".into(), None),
            ],
            secrets: vec![("creds".into(), None)],
        }
    }

    #[test]
    fn one_read_gives_the_hash_inputs() {
        let observed = observed(&connected());
        assert_eq!(
            observed.clusters,
            vec![
                ("db".to_string(), Some(Some(3))),
                ("broken".to_string(), Some(None)),
                ("gone".to_string(), None),
                ("me".to_string(), Some(None))
            ],
            "a cluster that does not decode is found without a generation"
        );
        assert_eq!(
            observed.configmaps,
            vec![
                ("settings".to_string(), Some("41".to_string())),
                ("plain".to_string(), Some("9".to_string())),
                ("absent".to_string(), None)
            ]
        );
        assert_eq!(observed.secrets, vec![("creds".to_string(), None)]);
    }

    #[test]
    fn configmeta_shows_typed_objects_and_other_clusters_with_an_app() {
        let shown = for_configmeta(&connected(), "me", "ns", ".svc.cluster.local", None);
        assert_eq!(shown.configmaps.len(), 1, "only the typed ConfigMap");
        assert_eq!(shown.configmaps[0].kind, "tuning");
        assert_eq!(shown.configmaps[0].data.get("k").map(Vec::as_slice), Some(b"v".as_slice()));
        assert!(shown.secrets.is_empty());
        assert_eq!(shown.clusters.keys().collect::<Vec<_>>(), vec!["db"], "not itself, broken or gone");
    }

    #[test]
    fn a_changed_hash_is_a_new_spec_generation() {
        let mut status = KubeDirectorClusterStatus {
            state: Some(members::CLUSTER_CONFIGURED.into()),
            spec_generation_to_process: Some(2),
            ..KubeDirectorClusterStatus::default()
        };
        record_hash(&mut status, "first", false);
        assert_eq!(status.last_connection_hash.as_deref(), Some("first"));
        assert_eq!((status.spec_generation_to_process, status.state.as_deref()), (Some(2), Some("configured")));
        record_hash(&mut status, "second", true);
        assert_eq!((status.spec_generation_to_process, status.state.as_deref()), (Some(3), Some("updating")));
        status.state = Some(members::CLUSTER_CREATING.into());
        record_hash(&mut status, "third", true);
        assert_eq!(status.state.as_deref(), Some(members::CLUSTER_CREATING), "creating stays creating");
    }
}
