//! kdfed's generated CRD schemas for KubeDirectorApp, KubeDirectorCluster and
//! KubeDirectorConfig against upstream KubeDirector's CRDs, field by field.
//!
//! The upstream column is what upstream's CRDs say, written down here as data (bluek8s/
//! kubedirector, `deploy/kubedirector/kubedirector.hpe.com_kubedirector{apps,clusters,
//! configs}_crd.yaml`, read at commits 130cb0a, ff952d9 and a659f08). A row whose kdfed
//! column is empty expects kdfed's schema to say exactly the same; a row with a kdfed column
//! is a deliberate difference and needs a reason that docs/compatibility.md repeats.
//!
//! `nullable` is compared only where upstream has it: where upstream's field is not nullable
//! the API server drops a null before storing the object, and kdfed reads a stored null as
//! absent, so both end in the same object.

use std::path::Path;

use kdfed_crds::crdgen;
use serde_json::Value;

/// One rule of a field.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
enum Rule {
    /// The parent object lists the field as required.
    Required,
    /// `nullable: true`.
    Nullable,
    /// `pattern`.
    Pattern(&'static str),
    /// `minLength`.
    MinLength(u64),
    /// `maxLength`.
    MaxLength(u64),
    /// `minimum`.
    Minimum(i64),
    /// `maximum`.
    Maximum(i64),
}

use Rule::*;

/// A field path (`spec.roles[].id`; `.*` is any key of a map), upstream's rules, kdfed's
/// rules where they differ on purpose, and why.
struct Field {
    path: &'static str,
    upstream: &'static [Rule],
    kdfed: Option<&'static [Rule]>,
    reason: &'static str,
}

const fn same(path: &'static str, upstream: &'static [Rule]) -> Field {
    Field { path, upstream, kdfed: None, reason: "" }
}

const fn differs(path: &'static str, upstream: &'static [Rule], kdfed: &'static [Rule], reason: &'static str) -> Field {
    Field { path, upstream, kdfed: Some(kdfed), reason }
}

const ROLE_ID: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
const SERVICE_ID: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const PACKAGE_URL: &str = r"^(file|https?)://.+\.tgz$";
const PERSIST_DIR: &str = "^/.*[^/]$";
const EVENTS: &str = "^configure$|^addnodes$|^delnodes$";
const EVENTS_KDFED: &str = "^configure$|^addnodes$|^delnodes$|^reconnect$";
const QUANTITY: &str = "^([0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";
const MOUNT_PATH: &str = r"^/[a-zA-Z0-9\/-_]*";
const SERVICE_TYPE: &str = "^ClusterIP$|^NodePort$|^LoadBalancer$";

const RECONNECT: &str = "kdfed delivers the reconnect event (startscript --reconnect when connected objects change), which upstream's later releases added; configure, addnodes and delnodes are as upstream";
const QUANTITIES: &str = "quantities of any resource name are Kubernetes' ResourceRequirements values; validation parses each with Kubernetes' quantity rules and refuses it naming the field (rule quantity, non-negative, resource-name)";

const APP: &[Field] = &[
    same("metadata.name", &[MaxLength(63)]),
    same("spec", &[Required]),
    same("spec.label", &[Required]),
    same("spec.label.name", &[Required, MinLength(1)]),
    same("spec.label.description", &[]),
    same("spec.distroID", &[Required, MinLength(1)]),
    differs(
        "spec.version",
        &[Required, MinLength(1)],
        &[Required, MinLength(1), MaxLength(256)],
        "a version is shown in printer columns, configmeta and the console; 256 characters is far above any real version",
    ),
    same("spec.configSchemaVersion", &[Required, Minimum(7)]),
    same("spec.defaultImageRepoTag", &[MinLength(1)]),
    same("spec.defaultConfigPackage", &[Nullable]),
    same("spec.defaultConfigPackage.packageURL", &[Required, Pattern(PACKAGE_URL)]),
    same("spec.services", &[]),
    same("spec.services[].id", &[Required, MinLength(1), MaxLength(15), Pattern(SERVICE_ID)]),
    same("spec.services[].label", &[Nullable]),
    same("spec.services[].label.name", &[Required, MinLength(1)]),
    same("spec.services[].label.description", &[]),
    same("spec.services[].endpoint", &[Nullable]),
    differs(
        "spec.services[].endpoint.port",
        &[Required, Minimum(1), Maximum(65535)],
        &[Minimum(1), Maximum(65535)],
        "optional in the schema, required by validation: an endpoint without a port is refused with upstream's validator message (rule required)",
    ),
    differs(
        "spec.services[].endpoint.urlScheme",
        &[MinLength(1), MaxLength(15), Pattern(SERVICE_ID)],
        &[],
        "capitals are accepted and lowercased in port names, as upstream's own port naming does (HTTP becomes http-<service>)",
    ),
    same("spec.services[].endpoint.path", &[]),
    same("spec.services[].endpoint.isDashboard", &[]),
    same("spec.services[].endpoint.hasAuthToken", &[]),
    same("spec.roles", &[Required]),
    same("spec.roles[].id", &[Required, MinLength(1), MaxLength(63), Pattern(ROLE_ID)]),
    same("spec.roles[].cardinality", &[Required, Pattern(r"^\d+\+?$")]),
    same("spec.roles[].imageRepoTag", &[MinLength(1)]),
    same("spec.roles[].configPackage", &[Nullable]),
    same("spec.roles[].configPackage.packageURL", &[Required, Pattern(PACKAGE_URL)]),
    same("spec.roles[].persistDirs[]", &[Pattern(PERSIST_DIR)]),
    differs("spec.roles[].eventList[]", &[Pattern(EVENTS)], &[Pattern(EVENTS_KDFED)], RECONNECT),
    same("spec.roles[].minResources", &[Nullable]),
    differs("spec.roles[].minResources.*", &[Pattern(QUANTITY)], &[], QUANTITIES),
    same("spec.config", &[Required]),
    same("spec.config.configMeta", &[Nullable]),
    same("spec.config.selectedRoles", &[Required]),
    same("spec.config.selectedRoles[]", &[MinLength(1)]),
    same("spec.config.roleServices", &[Required]),
    same("spec.config.roleServices[].roleID", &[Required, MinLength(1), MaxLength(63), Pattern(ROLE_ID)]),
    same("spec.config.roleServices[].serviceIDs", &[Required]),
    same("spec.config.roleServices[].serviceIDs[]", &[MinLength(1), MaxLength(15), Pattern(SERVICE_ID)]),
    same("spec.defaultPersistDirs[]", &[Pattern(PERSIST_DIR)]),
    differs("spec.defaultEventList[]", &[Pattern(EVENTS)], &[Pattern(EVENTS_KDFED)], RECONNECT),
    same("spec.capabilities[]", &[MinLength(1)]),
    same("spec.systemdRequired", &[]),
    same("spec.logoURL", &[MinLength(1), Pattern(r"^(file|https|http?)://.+\.(jpeg|png)$")]),
];

const CLUSTER: &[Field] = &[
    same("spec", &[Required]),
    same("spec.app", &[Required, MinLength(1)]),
    same("spec.appCatalog", &[Pattern("^local$|^system$")]),
    same("spec.connections", &[]),
    same("spec.connections.clusters[]", &[]),
    same("spec.connections.configmaps[]", &[]),
    same("spec.connections.secrets[]", &[]),
    same("spec.namingScheme", &[Pattern("^UID$|^CrNameRole$")]),
    same("spec.serviceType", &[Pattern(SERVICE_TYPE)]),
    same("spec.defaultSecret", &[Nullable]),
    same("spec.defaultSecret.name", &[Required, MinLength(1)]),
    same("spec.defaultSecret.mountPath", &[Required, MinLength(1), Pattern(MOUNT_PATH)]),
    same("spec.defaultSecret.defaultMode", &[Maximum(511)]),
    same("spec.defaultSecret.readOnly", &[]),
    same("spec.roles", &[Required]),
    // Upstream's pattern here has no anchors, so it matches every string; kdfed keeps it as is.
    same(
        "spec.roles[].id",
        &[Required, MinLength(1), MaxLength(63), Pattern("(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")],
    ),
    same("spec.roles[].podLabels", &[Nullable]),
    same("spec.roles[].serviceLabels", &[Nullable]),
    same("spec.roles[].members", &[Minimum(0)]),
    same("spec.roles[].secret", &[Nullable]),
    same("spec.roles[].secret.name", &[Required, MinLength(1)]),
    same("spec.roles[].secret.mountPath", &[Required, MinLength(1), Pattern(MOUNT_PATH)]),
    same("spec.roles[].secret.defaultMode", &[Maximum(511)]),
    same("spec.roles[].secret.readOnly", &[]),
    differs(
        "spec.roles[].resources",
        &[Required],
        &[],
        "a role may leave resources out or give only requests, as Kubernetes allows for containers; kdfed's placement sums requests, and its examples give no limits",
    ),
    differs(
        "spec.roles[].resources.limits",
        &[Required],
        &[],
        "limits, and memory and cpu in them, are optional as in Kubernetes (upstream requires limits.memory and limits.cpu)",
    ),
    differs("spec.roles[].resources.limits.*", &[Pattern(QUANTITY)], &[], QUANTITIES),
    differs(
        "spec.roles[].resources.requests",
        &[Nullable],
        &[],
        "Kubernetes' ResourceRequirements schema; the API server drops a null, which reads the same as upstream's nil map",
    ),
    differs("spec.roles[].resources.requests.*", &[Pattern(QUANTITY)], &[], QUANTITIES),
    differs(
        "spec.roles[].env[].name",
        &[Required, MinLength(1)],
        &[Required],
        "Kubernetes' EnvVar schema; validation refuses an empty name naming the field (rule env-name)",
    ),
    differs(
        "spec.roles[].env[].value",
        &[Required],
        &[],
        "Kubernetes' EnvVar: a variable may take its value from valueFrom (a Secret or ConfigMap key) instead",
    ),
    same("spec.roles[].storage", &[Nullable]),
    same("spec.roles[].storage.size", &[Required, Pattern(QUANTITY)]),
    same("spec.roles[].storage.storageClassName", &[MinLength(1)]),
    same("spec.roles[].fileInjections[].srcURL", &[Required, Pattern("^https?://.+$")]),
    same("spec.roles[].fileInjections[].destDir", &[Required, MinLength(1), Pattern("^/.*$")]),
    same("spec.roles[].fileInjections[].permissions", &[Nullable]),
    same("spec.roles[].fileInjections[].permissions.fileMode", &[]),
    same("spec.roles[].fileInjections[].permissions.fileOwner", &[]),
    same("spec.roles[].fileInjections[].permissions.fileGroup", &[]),
    same("status", &[Nullable]),
];

const CONFIG: &[Field] = &[
    same("metadata.name", &[Pattern("^kd-global-config$")]),
    differs(
        "spec",
        &[Nullable],
        &[Required],
        "kdfed's typed API has a required spec: a config with every default is written `spec: {}`",
    ),
    same("spec.defaultStorageClassName", &[MinLength(1)]),
    same("spec.defaultServiceType", &[Pattern(SERVICE_TYPE)]),
    same("spec.nativeSystemdSupport", &[]),
    same("spec.requiredSecretPrefix", &[]),
    same("spec.clusterSvcDomainBase", &[]),
    same("status", &[Nullable]),
];

fn schema_of(file: &str) -> Value {
    let (_, crd) = crdgen::all().into_iter().find(|(f, _)| *f == file).expect("crd");
    serde_json::to_value(&crd.spec.versions[0].schema).expect("schema")["openAPIV3Schema"].clone()
}

/// The schema of `path` and of the object holding it (for `required`).
fn resolve<'a>(root: &'a Value, path: &str) -> Option<(&'a Value, &'a Value, String)> {
    let mut parent = root;
    let mut node = root;
    let mut name = String::new();
    for segment in path.split('.') {
        let (key, items) = match segment.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (segment, false),
        };
        parent = node;
        node = if key == "*" { node.get("additionalProperties")? } else { node.get("properties")?.get(key)? };
        name = key.to_string();
        if items {
            parent = node;
            node = node.get("items")?;
            name = String::new();
        }
    }
    Some((node, parent, name))
}

fn rules_of(node: &Value, parent: &Value, name: &str, upstream: &[Rule]) -> Vec<Rule> {
    let mut rules = Vec::new();
    let required = parent["required"].as_array().into_iter().flatten().any(|r| r == name);
    if required && !name.is_empty() {
        rules.push(Required);
    }
    if node["nullable"] == true && upstream.contains(&Nullable) {
        rules.push(Nullable);
    }
    if let Some(p) = node["pattern"].as_str() {
        // The patterns are 'static in the table; compare by text.
        rules.push(Pattern(Box::leak(p.to_string().into_boxed_str())));
    }
    let int = |key: &str| node[key].as_f64().map(|v| v as i64);
    if let Some(v) = node["minLength"].as_u64() {
        rules.push(MinLength(v));
    }
    if let Some(v) = node["maxLength"].as_u64() {
        rules.push(MaxLength(v));
    }
    if let Some(v) = int("minimum") {
        rules.push(Minimum(v));
    }
    if let Some(v) = int("maximum") {
        rules.push(Maximum(v));
    }
    rules.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    rules
}

fn sorted(rules: &[Rule]) -> Vec<Rule> {
    let mut v = rules.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

fn compatibility_doc() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/compatibility.md"))
        .expect("docs/compatibility.md")
}

fn check(kind: &str, file: &str, table: &[Field]) {
    let root = schema_of(file);
    let doc = compatibility_doc();
    let mut failures = Vec::new();
    for field in table {
        let Some((node, parent, name)) = resolve(&root, field.path) else {
            failures.push(format!("{kind} {}: not in kdfed's schema (upstream has it)", field.path));
            continue;
        };
        let actual = rules_of(node, parent, &name, field.upstream);
        let expected = sorted(field.kdfed.unwrap_or(field.upstream));
        if actual != expected {
            let how = if field.kdfed.is_some() { "the documented difference" } else { "upstream" };
            failures.push(format!("{kind} {}: kdfed has {actual:?}, {how} has {expected:?}", field.path));
        }
        if let Some(kdfed) = field.kdfed {
            if sorted(kdfed) == sorted(field.upstream) {
                failures.push(format!("{kind} {}: listed as a difference but the rules are the same", field.path));
            }
            if field.reason.is_empty() {
                failures.push(format!("{kind} {}: a difference needs a reason", field.path));
            }
            let documented =
                doc.lines().any(|l| l.starts_with('|') && l.contains(kind) && l.contains(&format!("`{}`", field.path)));
            if !documented {
                failures.push(format!(
                    "{kind} {}: the difference is not in docs/compatibility.md (a table row naming {kind} and `{}`)",
                    field.path, field.path
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn app_schema_matches_upstream_field_by_field() {
    check("KubeDirectorApp", "kubedirectorapp.yaml", APP);
}

#[test]
fn cluster_schema_matches_upstream_field_by_field() {
    check("KubeDirectorCluster", "kubedirectorcluster.yaml", CLUSTER);
}

#[test]
fn config_schema_matches_upstream_field_by_field() {
    check("KubeDirectorConfig", "kubedirectorconfig.yaml", CONFIG);
}

#[test]
fn the_table_reads_what_it_claims() {
    // The resolver finds fields, items and map values, and a wrong expectation fails.
    let root = schema_of("kubedirectorapp.yaml");
    let (node, parent, name) = resolve(&root, "spec.roles[].id").expect("role id");
    assert_eq!(rules_of(node, parent, &name, &[]), sorted(&[Required, MinLength(1), MaxLength(63), Pattern(ROLE_ID)]));
    assert!(resolve(&root, "spec.roles[].minResources.*").is_some());
    assert!(resolve(&root, "spec.nonexistent").is_none());
    assert!(
        std::panic::catch_unwind(|| check(
            "KubeDirectorApp",
            "kubedirectorapp.yaml",
            &[same("spec.version", &[Required])]
        ))
        .is_err()
    );
}
