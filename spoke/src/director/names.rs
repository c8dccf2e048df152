//! Names and labels of the objects the director creates, following upstream KubeDirector
//! (prefixes `kdss-`, `kdhs-`, `s-`, claim template `p`, the 46-character munged prefix).
//! Upstream lets the API server pick random suffixes (generateName); kdfed derives the
//! 5-character suffix from the cluster's UID instead, so a restarted director computes the
//! same names before it has recorded them and never creates duplicates.

use std::collections::BTreeMap;

/// Label: the cluster name.
pub const LABEL_CLUSTER: &str = "kubedirector.hpe.com/kdcluster";
/// Label: the app name.
pub const LABEL_APP: &str = "kubedirector.hpe.com/kdapp";
/// Label: where the app was found (`local`/`system`).
pub const LABEL_APP_CATALOG: &str = "kubedirector.hpe.com/appCatalog";
/// Label: the role id.
pub const LABEL_ROLE: &str = "kubedirector.hpe.com/role";
/// Label selecting a cluster's pods for its headless Service.
pub const LABEL_HEADLESS: &str = "kubedirector.hpe.com/headless";
/// Annotation with the app's human-readable name.
pub const ANNOTATION_APP_PRETTY_NAME: &str = "kubedirector.hpe.com/kdapp-prettyName";
/// Annotation on a member Service: the member's auth token (endpoints with `hasAuthToken`).
pub const ANNOTATION_AUTH_TOKEN: &str = "kubedirector.hpe.com/kd-auth-token";
/// Finalizer on clusters the director manages.
pub const FINALIZER: &str = "kubedirector.hpe.com/cleanup";
/// Label Kubernetes puts on StatefulSet pods; member Services select on it.
pub const LABEL_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// Volume claim template of a role's persistent directories; PVCs are `p-<pod>`.
pub const PVC_TEMPLATE: &str = "p";
/// Name of the app container.
pub const APP_CONTAINER: &str = "app";
/// Name of the init container that seeds persistent directories.
pub const INIT_CONTAINER: &str = "init";
/// Member service name recorded when a role exposes no ports.
pub const NO_SERVICE: &str = "n/a";
/// Longest prefix upstream keeps from a cluster/role name: 63 - 10 - 5 - 2.
pub const NAME_PREFIX_LIMIT: usize = 46;

/// Upstream's name munging: at most 46 bytes, lowercase, `.` and `_` become `-`
/// (dropped at the last position).
pub fn munge(name: &str) -> String {
    let mut out = String::with_capacity(NAME_PREFIX_LIMIT);
    for (i, c) in name.chars().take(NAME_PREFIX_LIMIT).enumerate() {
        match c {
            '.' | '_' if i == NAME_PREFIX_LIMIT - 1 => {}
            '.' | '_' => out.push('-'),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// A 5-character suffix in the alphabet Kubernetes uses for generated names, derived from
/// `seed` (FNV-1a), so it is stable across restarts.
pub fn suffix(seed: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..5)
        .map(|_| {
            let i = (hash % ALPHABET.len() as u64) as usize;
            hash /= ALPHABET.len() as u64;
            char::from(ALPHABET[i])
        })
        .collect()
}

/// Name of a role's StatefulSet for a new role (a recorded name always wins).
pub fn statefulset(naming_scheme: &str, cluster_name: &str, cluster_uid: &str, role: &str) -> String {
    let sfx = suffix(&format!("{cluster_uid}/statefulset/{role}"));
    if naming_scheme == kdfed_crds::cluster::NAMING_SCHEME_CR_NAME_ROLE {
        format!("{}-{sfx}", munge(&format!("{cluster_name}-{role}")))
    } else {
        format!("kdss-{sfx}")
    }
}

/// Name of the cluster's headless Service for a new cluster (a recorded name always wins).
pub fn headless_service(cluster_uid: &str) -> String {
    format!("kdhs-{}", suffix(&format!("{cluster_uid}/headless")))
}

/// Pod name of a member: `<statefulset>-<ordinal>`.
pub fn pod(statefulset: &str, ordinal: usize) -> String {
    format!("{statefulset}-{ordinal}")
}

/// Ordinal of a StatefulSet pod name.
pub fn ordinal(pod: &str) -> Option<usize> {
    pod.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

/// Name of a member's Service: `s-<pod>`.
pub fn member_service(pod: &str) -> String {
    format!("s-{pod}")
}

/// Name of a member's PVC: `p-<pod>`.
pub fn member_pvc(pod: &str) -> String {
    format!("{PVC_TEMPLATE}-{pod}")
}

/// Member FQDN: `<pod>.<headless>.<namespace><domain base>`; the base starts with a dot.
pub fn fqdn(pod: &str, headless: &str, namespace: &str, domain_base: &str) -> String {
    let base = if domain_base.starts_with('.') { domain_base.to_string() } else { format!(".{domain_base}") };
    format!("{pod}.{headless}.{namespace}{base}")
}

/// Labels every object of a cluster carries.
pub fn cluster_labels(cluster: &str, app: &str, app_catalog: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
        (LABEL_APP.to_string(), app.to_string()),
        (LABEL_APP_CATALOG.to_string(), app_catalog.to_string()),
    ])
}

/// Labels that make ConfigMaps and Secrets connectable (defined once, beside the cluster type).
pub use kdfed_crds::cluster::{LABEL_CONFIGMAP_TYPE, LABEL_SECRET_TYPE};
/// Annotation: how many times the connections hash changed (upstream's connection version).
pub const HASH_CHANGE_COUNTER: &str = "kubedirector.hpe.com/hashChangeCounter";
/// Annotation: bumped on a cluster when a cluster it connects to becomes `configured`.
pub const CONN_UPDATE_COUNTER: &str = "kubedirector.hpe.com/connUpdateCounter";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn munge_follows_upstream() {
        assert_eq!(munge("My_Cluster.Role"), "my-cluster-role");
        let long = "a".repeat(45) + "_tail";
        assert_eq!(munge(&long), "a".repeat(45), "separator at the last position is dropped");
        assert_eq!(munge(&"b".repeat(80)).len(), 46);
    }

    #[test]
    fn names_are_stable_and_scheme_dependent() {
        let a = statefulset("UID", "spark", "uid-1", "worker");
        assert_eq!(a, statefulset("UID", "spark", "uid-1", "worker"));
        assert!(a.starts_with("kdss-") && a.len() == 10, "{a}");
        assert_ne!(a, statefulset("UID", "spark", "uid-2", "worker"));
        let b = statefulset("CrNameRole", "spark", "uid-1", "worker");
        assert!(b.starts_with("spark-worker-") && b.len() == "spark-worker-".len() + 5, "{b}");
        assert!(headless_service("uid-1").starts_with("kdhs-"));
        let long = statefulset("CrNameRole", &"x".repeat(60), "u", "worker");
        // The controller-revision-hash label value `<sts>-<10 chars>` and the member Service
        // `s-<sts>-<ordinal>` both stay within 63 characters.
        assert!(long.len() + 1 + 10 <= 63, "{long}");
        assert!(member_service(&pod(&long, 999)).len() <= 63, "{long}");
    }

    #[test]
    fn upstream_role_ids_give_valid_object_names() {
        use kdfed_crds::validate::{is_dns_label, is_label_value};
        for role in ["RESTServer", "vanilla_centos", "LoadBalancer", "spark.worker", &("R_".repeat(31) + "R")] {
            let cr = statefulset("CrNameRole", "my.cluster", "uid", role);
            let (prefix, sfx) = cr.rsplit_once('-').unwrap_or_default();
            assert_eq!(sfx.len(), 5, "{cr}");
            assert_eq!(prefix, munge(&format!("my.cluster-{role}")), "{cr}");
            let uid = statefulset("UID", "my.cluster", "uid", role);
            for sts in [&cr, &uid] {
                let pod = pod(sts, 999);
                for name in [sts.clone(), pod.clone(), member_service(&pod), member_pvc(&pod)] {
                    assert!(is_dns_label(&name), "{name} (role {role}) must be a DNS label");
                }
                // StatefulSet controller's revision label: `<sts>-<10 characters>`.
                assert!(is_label_value(&format!("{sts}-0123456789")), "{sts}");
            }
            // The role label carries the id as it is: upstream's role form is a label value.
            assert!(is_label_value(role), "{role}");
        }
        assert_eq!(munge("RESTServer"), "restserver");
        assert_eq!(munge("hello-vanilla_centos"), "hello-vanilla-centos");
        assert_eq!(munge("db-spark.worker"), "db-spark-worker");
        assert!(statefulset("CrNameRole", "hello", "u", "vanilla_centos").starts_with("hello-vanilla-centos-"));
    }

    #[test]
    fn member_object_names() {
        assert_eq!(pod("kdss-abcde", 2), "kdss-abcde-2");
        assert_eq!(ordinal("kdss-abcde-12"), Some(12));
        assert_eq!(member_service("kdss-abcde-2"), "s-kdss-abcde-2");
        assert_eq!(member_pvc("kdss-abcde-2"), "p-kdss-abcde-2");
        assert_eq!(fqdn("p-0", "kdhs-x", "ns", ".svc.cluster.local"), "p-0.kdhs-x.ns.svc.cluster.local");
        assert_eq!(fqdn("p-0", "kdhs-x", "ns", "svc.example"), "p-0.kdhs-x.ns.svc.example");
    }
}
