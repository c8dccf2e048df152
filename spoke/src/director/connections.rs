//! Connections between a cluster and the clusters, ConfigMaps and Secrets named in its
//! `spec.connections`, as upstream KubeDirector tracks them: an MD5 over what was observed
//! (`status.lastConnectionHash`), a counter annotation bumped each time it changes
//! (`hashChangeCounter`, the "connection version" members are brought up to with
//! `startscript --reconnect`), and a counter bumped on connecting clusters when a
//! connected cluster becomes `configured` (`connUpdateCounter`). Also the members' service
//! auth tokens (`hasAuthToken`). Everything here is pure.

use std::collections::{BTreeMap, BTreeSet};

use kdfed_crds::cluster::KubeDirectorClusterStatus;

use super::members;

/// Annotation: how many times the connections hash changed (upstream's connection version).
pub const HASH_CHANGE_COUNTER: &str = "kubedirector.hpe.com/hashChangeCounter";
/// Annotation: bumped on a cluster when a cluster it connects to becomes `configured`.
pub const CONN_UPDATE_COUNTER: &str = "kubedirector.hpe.com/connUpdateCounter";

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
}
