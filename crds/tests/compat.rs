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

const RECONNECT: &str = "kdfed delivers the reconnect event (startscript --reconnect when connected objects change) to roles that ask for it; configure, addnodes and delnodes are as upstream";
const QUANTITIES: &str = "quantities of any resource name are Kubernetes' ResourceRequirements values; validation parses each with Kubernetes' quantity rules and refuses it naming the field (rule quantity, non-negative, resource-name)";

const APP: &[Field] = &[
    same("metadata.name", &[MaxLength(63)]),
    same("spec", &[Required]),
    same("spec.label", &[Required]),
    same("spec.label.name", &[Required, MinLength(1)]),
    same("spec.label.description", &[]),
    differs(
        "spec.distroID",
        &[Required, MinLength(1)],
        &[Required, MinLength(1), MaxLength(256)],
        "a distroID travels in configmeta and in every Work; 256 characters is far above any real distroID (a 1 MiB one was admitted before)",
    ),
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
        "optional in the schema, required by validation: an endpoint without a port is refused naming the field (rule required)",
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

// Upstream's validating webhook (pkg/validator): the rules a schema cannot say, each with
// the message upstream gives (values filled in), and how kdfed holds it. Pure rules are
// checked here against kdfed's validation; rules that need the API server are checked by
// the webhooks (tests/tests/admission.rs) or differ, with the reason in docs/compatibility.md.

use kdfed_crds::validate::{self, FieldError};
use kdfed_crds::{KubeDirectorAppSpec, KubeDirectorClusterSpec};

fn corpus_app() -> KubeDirectorAppSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat/apps/restserver.yaml");
    let app: kdfed_crds::KubeDirectorApp =
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse");
    app.spec
}

fn corpus_cluster() -> KubeDirectorClusterSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat/clusters/restserver.yaml");
    let cluster: kdfed_crds::KubeDirectorCluster =
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse");
    cluster.spec
}

fn app_errors(change: impl FnOnce(&mut KubeDirectorAppSpec)) -> Vec<FieldError> {
    let mut app = corpus_app();
    change(&mut app);
    validate::app(&app).err().map(|e| e.0).unwrap_or_default()
}

fn cluster_errors(change: impl FnOnce(&mut KubeDirectorClusterSpec, &mut KubeDirectorAppSpec)) -> Vec<FieldError> {
    let (mut cluster, mut app) = (corpus_cluster(), corpus_app());
    change(&mut cluster, &mut app);
    validate::cluster(&cluster, "restserver-compat", &app).err().map(|e| e.0).unwrap_or_default()
}

fn update_errors(change: impl FnOnce(&mut KubeDirectorClusterSpec)) -> Vec<FieldError> {
    let old = corpus_cluster();
    let mut new = old.clone();
    change(&mut new);
    let status = kdfed_crds::KubeDirectorClusterStatus {
        state: Some("configured".into()),
        roles: vec![kdfed_crds::cluster::RoleStatus {
            id: "RESTServer".into(),
            members: vec![kdfed_crds::cluster::MemberStatus { pod: "p".into(), ..Default::default() }],
            ..Default::default()
        }],
        ..Default::default()
    };
    validate::cluster_update(&old, &new, Some(&status)).err().map(|e| e.0).unwrap_or_default()
}

type Check = fn() -> Vec<FieldError>;

/// Upstream's message, kdfed's rule name, and an input that breaks the rule.
const WEBHOOK: &[(&str, &str, Check)] = &[
    ("Each id in the roles array must be unique.", "unique-role-id", || {
        app_errors(|a| a.roles[1].id = "LoadBalancer".into())
    }),
    ("Each id in the services array must be unique.", "unique-service-id", || {
        app_errors(|a| a.services[1].id = "http".into())
    }),
    ("Each element of selectedRoles array in config section must be unique.", "unique-selected-role", || {
        app_errors(|a| a.config.selected_roles.push("RESTServer".into()))
    }),
    ("Each roleID in roleServices array in config section must be unique.", "unique-role-services", || {
        app_errors(|a| a.config.role_services[1].role_id = "LoadBalancer".into())
    }),
    (
        "Invalid roleID(Ghost) in roleServices array in config section. Valid roles: \"LoadBalancer,RESTServer,spark.worker\"",
        "known-role",
        || app_errors(|a| a.config.role_services[0].role_id = "Ghost".into()),
    ),
    (
        "Invalid element(Ghost) in selectedRoles array in config section. Valid roles: \"LoadBalancer,RESTServer,spark.worker\"",
        "known-role",
        || app_errors(|a| a.config.selected_roles[0] = "Ghost".into()),
    ),
    (
        "Invalid service_id(ghost) in roleServices array in config section. Valid services: \"http,lb-admin,metrics\"",
        "known-service",
        || app_errors(|a| a.config.role_services[0].service_ids[0] = "ghost".into()),
    ),
    ("Role(RESTServer) has no specified image, and no top-level default image is specified.", "image-required", || {
        app_errors(|a| a.default_image_repo_tag = None)
    }),
    ("Role(LoadBalancer) requested TTY without STDIN.", "tty-needs-stdin", || {
        app_errors(|a| {
            a.roles[0].container_spec = Some(kdfed_crds::app::ContainerSpec { stdin: None, tty: Some(true) })
        })
    }),
    (
        "The endpoint for service(lb-admin) must include a urlScheme value because isDashboard is true.",
        "dashboard-needs-url-scheme",
        || {
            app_errors(|a| {
                let ep = a.services[1].endpoint.as_mut().expect("endpoint");
                ep.url_scheme = None;
                ep.is_dashboard = Some(true);
            })
        },
    ),
    ("Invalid member count for role(LoadBalancer). Specified member count:2 Role cardinality:1", "cardinality", || {
        cluster_errors(|c, _| c.roles[0].members = Some(2))
    }),
    (
        "Invalid role(Ghost) in app(restserver-compat) specified. Valid roles: \"LoadBalancer,RESTServer,spark.worker\"",
        "known-role",
        || cluster_errors(|c, _| c.roles[0].id = "Ghost".into()),
    ),
    (
        "Active role(LoadBalancer) in app(restserver-compat) must have its configuration included in the roles array.",
        "selected-role-required",
        || {
            cluster_errors(|c, _| {
                c.roles.remove(0);
            })
        },
    ),
    ("Storage size for role (RESTServer) is incorrectly defined.", "quantity", || {
        cluster_errors(|c, _| c.roles[1].storage.as_mut().expect("storage").size = "lots".into())
    }),
    ("Storage size for role (RESTServer) should be greater than zero.", "positive", || {
        cluster_errors(|c, _| c.roles[1].storage.as_mut().expect("storage").size = "0".into())
    }),
    (
        "Specified resource(\"memory\") value(\"32Mi\") for role(\"LoadBalancer\") is invalid. Minimum value must be \"64Mi\".",
        "min-resources",
        || {
            cluster_errors(|c, _| {
                let limits = c.roles[0].resources.limits.get_or_insert_with(Default::default);
                limits.insert("memory".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("32Mi".into()));
            })
        },
    ),
    ("Maximum number of total members per KD cluster supported is 1000.", "max-members", || {
        cluster_errors(|c, _| c.roles[1].members = Some(1001))
    }),
    (
        "Role(RESTServer) properties other than the members count cannot be modified while role members exist.",
        "role-immutable-while-members-exist",
        || update_errors(|c| c.roles[1].pod_labels = Some([("a".to_string(), "b".to_string())].into())),
    ),
];

#[test]
fn upstreams_webhook_rules_give_upstreams_messages() {
    let mut failures = Vec::new();
    for (message, rule, check) in WEBHOOK {
        let errors = check();
        if !errors.iter().any(|e| e.rule == *rule && e.message == *message) {
            failures.push(format!("{rule}: expected {message:?}, got {errors:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn upstreams_webhook_rules_that_need_the_api_server_are_documented() {
    // Upstream's messages for the rules kdfed's webhooks check against the API server (or
    // does not check); each must be in docs/compatibility.md with what kdfed does.
    let doc = compatibility_doc();
    for message in [
        "Unable to find defaultSecret",
        "does not have the required name prefix",
        "cannot be deleted or modified while referenced",
        "manually setting secret key",
        "Unable to fetch storageClassName",
        "Unable to access the specified URL",
        "Change to spec not allowed before previous spec change has been processed.",
        // kdfed's live upgrades: an app change is checked against the catalog.
        "The app property is read-only.",
    ] {
        assert!(doc.contains(message), "docs/compatibility.md does not say what kdfed does for {message:?}");
    }
}
