//! Validation of the API kinds as pure functions. Messages keep upstream KubeDirector's
//! wording where upstream has one; every error names the field path and the rule broken.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::app::{Cardinality, KubeDirectorAppSpec};
use crate::cluster::{
    APP_CATALOG_LOCAL, APP_CATALOG_SYSTEM, KubeDirectorClusterSpec, KubeDirectorClusterStatus,
    NAMING_SCHEME_CR_NAME_ROLE, NAMING_SCHEME_UID, Placement,
};
use crate::config::KubeDirectorConfigSpec;
use crate::federation::KubeDirectorMemberSpec;
use crate::quantity;

/// Lowest `configSchemaVersion` upstream's CRD accepts.
pub const MIN_CONFIG_SCHEMA_VERSION: i32 = 7;
/// Highest file mode of a mounted Secret upstream's CRD accepts (0777).
pub const MAX_FILE_MODE: i32 = 511;
/// Most members one cluster may have (upstream's limit).
pub const MAX_MEMBERS: i32 = 1000;
/// Lifecycle events a role may ask for.
pub const EVENTS: &[&str] = &["configure", "addnodes", "delnodes", "reconnect"];
/// Service types a cluster may use.
pub const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer"];
/// Longest `version` of an app. Upstream's CRD sets no maximum (only `minLength: 1`); a
/// version is shown in printer columns, configmeta and the console, so kdfed bounds it.
pub const MAX_VERSION_LENGTH: usize = 256;
/// Longest `distroID` of an app: upstream's CRD sets no maximum (only `minLength: 1`);
/// kdfed bounds it like `version` (it travels in configmeta and in every Work).
pub const MAX_DISTRO_ID_LENGTH: usize = 256;

/// Resource names a container may ask for without a domain prefix (Kubernetes' standard
/// container resources; `hugepages-<size>` too).
pub const STANDARD_CONTAINER_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage"];
/// Cluster state while a spec change waits for the director (upstream's wording).
pub const STATE_SPEC_MODIFIED: &str = "spec modified";

/// One broken rule at one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.roles[1].members`.
    pub path: String,
    /// Short name of the rule, e.g. `cardinality`.
    pub rule: &'static str,
    /// What is wrong, in upstream's words where upstream has them.
    pub message: String,
}

impl FieldError {
    /// The error of `rule` at `path`.
    pub fn new(path: impl Into<String>, rule: &'static str, message: impl Into<String>) -> FieldError {
        FieldError { path: path.into(), rule, message: message.into() }
    }
}

impl fmt::Display for FieldError {
    /// `path: message (rule: rule)`; without the path for rules about the whole object
    /// (for example an app still in use), whose message names it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{} (rule: {})", self.message, self.rule)
        } else {
            write!(f, "{}: {} (rule: {})", self.path, self.message, self.rule)
        }
    }
}

/// All rules an object breaks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// Records that `rule` is broken at `path`.
    pub fn push(&mut self, path: impl Into<String>, rule: &'static str, message: impl Into<String>) {
        self.0.push(FieldError::new(path, rule, message));
    }

    /// `Ok` when nothing is broken.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// Whether nothing is broken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<FieldError> for ValidationErrors {
    fn from(error: FieldError) -> Self {
        ValidationErrors(vec![error])
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ValidationErrors {}

fn duplicates<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<(usize, &'a str)> {
    let mut seen = HashSet::new();
    items.into_iter().enumerate().filter(|(_, s)| !seen.insert(*s)).collect()
}

/// Whether `name` is a DNS-1123 label (lowercase alphanumerics and '-', at most 63).
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Upstream's pattern for a role id: `^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`, 1 to
/// [`MAX_ROLE_ID_LENGTH`] characters. The same form as a label value, so a role id can be
/// the value of the role label as it is; object names derived from it are munged.
pub const ROLE_ID_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// Longest role id upstream accepts.
pub const MAX_ROLE_ID_LENGTH: usize = 63;
/// Upstream's pattern for a service id (a DNS label); ports are named after it.
pub const SERVICE_ID_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Longest service id upstream accepts (a container port name has at most 15 characters).
pub const MAX_SERVICE_ID_LENGTH: usize = 15;

/// Whether `id` is a role id upstream accepts: letters, digits, '-', '_' and '.', starting
/// and ending with a letter or digit, 1 to 63 characters.
pub fn is_role_id(id: &str) -> bool {
    !id.is_empty() && is_label_segment(id)
}

/// Whether `text` is a valid label value (empty, or 1-63 alphanumerics, '-', '_' and '.',
/// starting and ending with an alphanumeric).
pub fn is_label_value(text: &str) -> bool {
    is_label_segment(text)
}

fn is_label_segment(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() <= 63
        && (bytes.is_empty()
            || (bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))))
}

fn is_dns_subdomain(text: &str) -> bool {
    !text.is_empty() && text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// Whether `key` is a Kubernetes qualified name (`[prefix/]name`), as label and annotation
/// keys and resource names are.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    !name.is_empty() && is_label_segment(name) && prefix.is_none_or(is_dns_subdomain)
}

/// Upstream's CRD pattern for a setup package URL: `^(file|https?)://.+\.tgz$`.
pub fn is_package_url(url: &str) -> bool {
    let rest = ["file://", "http://", "https://"].iter().find_map(|scheme| url.strip_prefix(scheme));
    rest.is_some_and(|r| !r.contains('\n') && r.len() > ".tgz".len() && r.ends_with(".tgz"))
}

/// Upstream's CRD pattern for an app logo: `^(file|https|http?)://.+\.(jpeg|png)$` (its
/// `http?` also lets `htt://` through; kdfed accepts exactly what upstream accepts).
pub fn is_logo_url(url: &str) -> bool {
    let rest = ["file://", "https://", "http://", "htt://"].iter().find_map(|scheme| url.strip_prefix(scheme));
    rest.is_some_and(|r| {
        !r.contains('\n') && [".jpeg", ".png"].iter().any(|ext| r.len() > ext.len() && r.ends_with(ext))
    })
}

/// Upstream's CRD rules for a Secret mounted into members: `mountPath` starts with `/`
/// (pattern `^/[a-zA-Z0-9\/-_]*`, which matches any path starting with `/`), `defaultMode`
/// at most 511 (0777).
fn mounted_secret_errors(secret: &crate::cluster::KdSecret, path: &str, errors: &mut ValidationErrors) {
    if !secret.mount_path.starts_with('/') {
        errors.push(
            format!("{path}.mountPath"),
            "absolute-path",
            format!("mountPath({}) must be an absolute path (pattern ^/[a-zA-Z0-9\\/-_]*).", secret.mount_path),
        );
    }
    if let Some(mode) = secret.default_mode
        && !(0..=MAX_FILE_MODE).contains(&mode)
    {
        errors.push(
            format!("{path}.defaultMode"),
            "file-mode",
            format!("defaultMode({mode}) must be between 0 and {MAX_FILE_MODE} (0777)."),
        );
    }
}

/// Upstream's CRD pattern for a persistent directory: `^/.*[^/]$` (absolute, not `/`, no
/// trailing slash).
pub fn is_persist_dir(dir: &str) -> bool {
    dir.len() >= 2 && dir.starts_with('/') && !dir.ends_with('/') && !dir.contains('\n')
}

fn package_url_errors(url: &str, path: &str, errors: &mut ValidationErrors) {
    if url.is_empty() {
        errors.push(path, "required", "packageURL must not be empty; use null for no setup package.");
    } else if !is_package_url(url) {
        errors.push(
            path,
            "package-url",
            format!("packageURL({url}) must be a file://, http:// or https:// URL of a .tgz file (pattern ^(file|https?)://.+\\.tgz$)."),
        );
    }
}

fn persist_dir_errors(dirs: &[String], path: &str, errors: &mut ValidationErrors) {
    for (j, dir) in dirs.iter().enumerate() {
        if !is_persist_dir(dir) {
            errors.push(
                format!("{path}[{j}]"),
                "persist-dir",
                format!("persistDir({dir}) must be an absolute path other than / and must not end with / (pattern ^/.*[^/]$)."),
            );
        }
    }
}

/// Checks a map of resource quantities (requests, limits, minResources): each name is a
/// standard container resource or a qualified name, each value a non-negative quantity.
fn resource_errors(
    list: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    path: &str,
    errors: &mut ValidationErrors,
) {
    for (key, q) in list {
        let standard = STANDARD_CONTAINER_RESOURCES.contains(&key.as_str()) || key.starts_with("hugepages-");
        if !(standard || key.contains('/') && is_qualified_name(key)) {
            errors.push(
                format!("{path}[{key}]"),
                "resource-name",
                format!("Invalid value: \"{key}\": must be a standard resource for containers ({}, hugepages-<size>) or a fully-qualified name such as nvidia.com/gpu", STANDARD_CONTAINER_RESOURCES.join(", ")),
            );
        }
        match quantity::parse(&q.0) {
            None => errors.push(format!("{path}[{key}]"), "quantity", format!("Invalid quantity \"{}\".", q.0)),
            Some(v) if v < 0.0 => errors.push(
                format!("{path}[{key}]"),
                "non-negative",
                format!("Invalid value: \"{}\": must be greater than or equal to 0", q.0),
            ),
            Some(_) => {}
        }
    }
}

/// Checks that `name`, the name of an object of `kind` the cluster refers to, is a DNS
/// subdomain (what the API server requires of Secrets, ConfigMaps, PVCs, clusters, classes).
fn object_name_errors(name: &str, kind: &str, path: impl Into<String>, errors: &mut ValidationErrors) {
    if !is_dns_subdomain(name) {
        errors.push(
            path,
            "dns-subdomain",
            format!("{kind} name({name}) must be a DNS subdomain: lowercase letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter or digit."),
        );
    }
}

/// Checks a label key (`[prefix/]name`) and value as Kubernetes does.
pub fn label_errors(labels: &BTreeMap<String, String>, path: &str, errors: &mut ValidationErrors) {
    for (key, value) in labels {
        if !is_qualified_name(key) {
            errors.push(
                format!("{path}[{key}]"),
                "label-key",
                format!("Invalid value: \"{key}\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', start and end with an alphanumeric character, at most 63 characters, with an optional DNS subdomain prefix and '/'"),
            );
        }
        if !is_label_segment(value) {
            errors.push(
                format!("{path}[{key}]"),
                "label-value",
                format!("Invalid value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', start and end with an alphanumeric character, at most 63 characters"),
            );
        }
    }
}

/// Checks annotation keys as Kubernetes does (qualified names; values are free text).
pub fn annotation_errors(annotations: &BTreeMap<String, String>, path: &str, errors: &mut ValidationErrors) {
    for key in annotations.keys() {
        if !is_qualified_name(key) {
            errors.push(
                format!("{path}[{key}]"),
                "annotation-key",
                format!("Invalid value: \"{key}\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', start and end with an alphanumeric character, at most 63 characters, with an optional DNS subdomain prefix and '/'"),
            );
        }
    }
}

/// Longest app name upstream's CRD accepts: the name is the value of the
/// `kubedirector.hpe.com/kdapp` label of everything the director creates.
pub const MAX_APP_NAME_LENGTH: usize = 63;

/// Checks an app's `metadata.name` as upstream's CRD does (the API server checks it too;
/// this is for `kdfed validate`).
pub fn app_name(name: &str) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if name.chars().count() > MAX_APP_NAME_LENGTH {
        errors.push(
            "metadata.name",
            "max-length",
            format!("App name({name}) must be at most {MAX_APP_NAME_LENGTH} characters: it is the value of the kubedirector.hpe.com/kdapp label."),
        );
    }
    errors.into_result()
}

/// Checks a config's `metadata.name`: upstream's one config is `kd-global-config`.
pub fn config_name(name: &str) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if name != crate::config::CONFIG_NAME {
        errors.push(
            "metadata.name",
            "config-name",
            format!(
                "KubeDirectorConfig name({name}) must be {} (pattern ^{}$).",
                crate::config::CONFIG_NAME,
                crate::config::CONFIG_NAME
            ),
        );
    }
    errors.into_result()
}

/// Validates a `KubeDirectorApp` spec (after or before defaulting).
pub fn app(spec: &KubeDirectorAppSpec) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let role_ids: Vec<&str> = spec.roles.iter().map(|r| r.id.as_str()).collect();
    let service_ids: Vec<&str> = spec.services.iter().map(|s| s.id.as_str()).collect();
    let valid_roles = role_ids.join(",");
    let valid_services = service_ids.join(",");

    if spec.label.name.is_empty() {
        errors.push("spec.label.name", "required", "The app must have a name.");
    }
    if spec.distro_id.is_empty() {
        errors.push("spec.distroID", "required", "The app must have a distroID.");
    }
    if spec.config_schema_version < MIN_CONFIG_SCHEMA_VERSION {
        errors.push(
            "spec.configSchemaVersion",
            "min",
            format!(
                "configSchemaVersion({}) must be at least {MIN_CONFIG_SCHEMA_VERSION}.",
                spec.config_schema_version
            ),
        );
    }
    if let Some(url) = &spec.logo_url
        && !is_logo_url(url)
    {
        errors.push(
            "spec.logoURL",
            "logo-url",
            format!("logoURL({url}) must be a file://, http:// or https:// URL of a .jpeg or .png file (pattern ^(file|https|http?)://.+\\.(jpeg|png)$)."),
        );
    }
    for (i, cap) in spec.capabilities.iter().enumerate() {
        if cap.is_empty() {
            errors.push(format!("spec.capabilities[{i}]"), "required", "A capability must not be empty.");
        }
    }
    if spec.roles.is_empty() {
        errors.push("spec.roles", "required", "The app must define at least one role.");
    }
    if spec.version.is_empty() {
        errors.push("spec.version", "required", "The app must have a version.");
    } else if spec.version.chars().count() > MAX_VERSION_LENGTH {
        errors.push(
            "spec.version",
            "max-length",
            format!(
                "version must be at most {MAX_VERSION_LENGTH} characters (it has {}).",
                spec.version.chars().count()
            ),
        );
    }
    if spec.distro_id.chars().count() > MAX_DISTRO_ID_LENGTH {
        errors.push(
            "spec.distroID",
            "max-length",
            format!(
                "distroID must be at most {MAX_DISTRO_ID_LENGTH} characters (it has {}).",
                spec.distro_id.chars().count()
            ),
        );
    }
    let default_package = spec.default_config_package.as_ref().and_then(Option::as_ref).map(|p| p.package_url.as_str());
    if let Some(url) = default_package {
        package_url_errors(url, "spec.defaultConfigPackage.packageURL", &mut errors);
    }
    if let Some(dirs) = &spec.default_persist_dirs {
        persist_dir_errors(dirs, "spec.defaultPersistDirs", &mut errors);
    }
    for (i, _) in duplicates(role_ids.iter().copied()) {
        errors.push(format!("spec.roles[{i}].id"), "unique-role-id", "Each id in the roles array must be unique.");
    }
    for (i, _) in duplicates(service_ids.iter().copied()) {
        errors.push(
            format!("spec.services[{i}].id"),
            "unique-service-id",
            "Each id in the services array must be unique.",
        );
    }
    for (i, role) in spec.roles.iter().enumerate() {
        let path = format!("spec.roles[{i}]");
        if !is_role_id(&role.id) {
            errors.push(
                format!("{path}.id"),
                "role-id-format",
                format!(
                    "Role id({}) must be 1-{MAX_ROLE_ID_LENGTH} letters, digits, '-', '_' or '.', starting and ending with a letter or digit (pattern {ROLE_ID_PATTERN}).",
                    role.id
                ),
            );
        }
        if Cardinality::parse(&role.cardinality).is_none() {
            errors.push(
                format!("{path}.cardinality"),
                "cardinality-format",
                format!("Cardinality({}) of role({}) must be a number N or N+.", role.cardinality, role.id),
            );
        }
        if role.image_repo_tag.is_none() && spec.default_image_repo_tag.is_none() {
            errors.push(
                format!("{path}.imageRepoTag"),
                "image-required",
                format!("Role({}) has no specified image, and no top-level default image is specified.", role.id),
            );
        }
        if let Some(cs) = &role.container_spec
            && cs.tty == Some(true)
            && cs.stdin != Some(true)
        {
            errors.push(
                format!("{path}.containerSpec.tty"),
                "tty-needs-stdin",
                format!("Role({}) requested TTY without STDIN.", role.id),
            );
        }
        for (j, event) in role.event_list.iter().flatten().enumerate() {
            if !EVENTS.contains(&event.as_str()) {
                errors.push(
                    format!("{path}.eventList[{j}]"),
                    "event-name",
                    format!("Unknown event({event}); valid events: \"{}\"", EVENTS.join(",")),
                );
            }
        }
        // After defaulting a role holds the app's default package and dirs: those are
        // reported once, at the default.
        if let Some(Some(pkg)) = &role.config_package
            && Some(pkg.package_url.as_str()) != default_package
        {
            package_url_errors(&pkg.package_url, &format!("{path}.configPackage.packageURL"), &mut errors);
        }
        if let Some(dirs) = &role.persist_dirs
            && Some(dirs) != spec.default_persist_dirs.as_ref()
        {
            persist_dir_errors(dirs, &format!("{path}.persistDirs"), &mut errors);
        }
        if let Some(min) = &role.min_resources {
            resource_errors(min, &format!("{path}.minResources"), &mut errors);
        }
    }
    for (j, event) in spec.default_event_list.iter().flatten().enumerate() {
        if !EVENTS.contains(&event.as_str()) {
            errors.push(
                format!("spec.defaultEventList[{j}]"),
                "event-name",
                format!("Unknown event({event}); valid events: \"{}\"", EVENTS.join(",")),
            );
        }
    }
    for (i, service) in spec.services.iter().enumerate() {
        let path = format!("spec.services[{i}]");
        if !is_dns_label(&service.id) || service.id.len() > MAX_SERVICE_ID_LENGTH {
            errors.push(
                format!("{path}.id"),
                "service-id-format",
                format!(
                    "Service id({}) must be a DNS label of at most {MAX_SERVICE_ID_LENGTH} characters: lowercase letters, digits and '-' (pattern {SERVICE_ID_PATTERN}); ports are named after it.",
                    service.id
                ),
            );
        } else if !service.id.bytes().any(|b| b.is_ascii_lowercase()) || service.id.contains("--") {
            // Upstream's pattern allows these, but a container port named after such an id
            // (an IANA service name) is refused by the API server when the pods are built.
            errors.push(
                format!("{path}.id"),
                "service-id-port-name",
                format!(
                    "Service id({}) must contain a letter and no \"--\": containers' ports are named after it, and Kubernetes requires port names (IANA service names) to.",
                    service.id
                ),
            );
        }
        if let Some(ep) = &service.endpoint {
            if ep.is_dashboard == Some(true) && ep.url_scheme.as_deref().is_none_or(str::is_empty) {
                errors.push(
                    format!("{path}.endpoint.urlScheme"),
                    "dashboard-needs-url-scheme",
                    format!(
                        "The endpoint for service({}) must include a urlScheme value because isDashboard is true.",
                        service.id
                    ),
                );
            }
            match ep.port {
                Some(p) if (1..=65535).contains(&p) => {}
                Some(p) => errors.push(
                    format!("{path}.endpoint.port"),
                    "port-range",
                    format!("Port {p} of service({}) must be between 1 and 65535.", service.id),
                ),
                None => errors.push(
                    format!("{path}.endpoint.port"),
                    "required",
                    format!("The endpoint for service({}) must include a port.", service.id),
                ),
            }
        }
    }
    for (i, _) in duplicates(spec.config.selected_roles.iter().map(String::as_str)) {
        errors.push(
            format!("spec.config.selectedRoles[{i}]"),
            "unique-selected-role",
            "Each element of selectedRoles array in config section must be unique.",
        );
    }
    for (i, _) in duplicates(spec.config.role_services.iter().map(|rs| rs.role_id.as_str())) {
        errors.push(
            format!("spec.config.roleServices[{i}].roleID"),
            "unique-role-services",
            "Each roleID in roleServices array in config section must be unique.",
        );
    }
    for (i, rs) in spec.config.role_services.iter().enumerate() {
        if !role_ids.contains(&rs.role_id.as_str()) {
            errors.push(
                format!("spec.config.roleServices[{i}].roleID"),
                "known-role",
                format!(
                    "Invalid roleID({}) in roleServices array in config section. Valid roles: \"{valid_roles}\"",
                    rs.role_id
                ),
            );
        }
        for (j, sid) in rs.service_ids.iter().enumerate() {
            if !service_ids.contains(&sid.as_str()) {
                errors.push(format!("spec.config.roleServices[{i}].serviceIDs[{j}]"), "known-service", format!("Invalid service_id({sid}) in roleServices array in config section. Valid services: \"{valid_services}\""));
            }
        }
        // A member Service exposes every port of its role's services once: two services of
        // one role on the same port could never be created (kdfed refuses it here rather than
        // leaving every member of the role without its Service).
        let mut seen: Vec<(i32, &str)> = Vec::new();
        for (j, sid) in rs.service_ids.iter().enumerate() {
            let port = spec.services.iter().find(|s| &s.id == sid).and_then(|s| s.endpoint.as_ref()?.port);
            let Some(port) = port else { continue };
            if let Some((_, other)) = seen.iter().find(|(p, other)| *p == port && *other != sid.as_str()) {
                errors.push(
                    format!("spec.config.roleServices[{i}].serviceIDs[{j}]"),
                    "unique-port",
                    format!(
                        "services {other} and {sid} of role {} both use port {port}; a member's Service cannot expose one port twice.",
                        rs.role_id
                    ),
                );
            }
            seen.push((port, sid.as_str()));
        }
    }
    for (i, role) in spec.config.selected_roles.iter().enumerate() {
        if !role_ids.contains(&role.as_str()) {
            errors.push(
                format!("spec.config.selectedRoles[{i}]"),
                "known-role",
                format!(
                    "Invalid element({role}) in selectedRoles array in config section. Valid roles: \"{valid_roles}\""
                ),
            );
        }
    }
    crate::choices::app_errors(spec, &mut errors);
    crate::upgrade::app_errors(spec, &mut errors);
    errors.into_result()
}

/// Validates a `KubeDirectorCluster` spec against its app. `app_name` is used in messages.
pub fn cluster(
    spec: &KubeDirectorClusterSpec,
    app_name: &str,
    app: &KubeDirectorAppSpec,
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let app_roles: Vec<&str> = app.roles.iter().map(|r| r.id.as_str()).collect();
    let valid_roles = app_roles.join(",");
    // The roles the cluster's choices select (the app's own config when it has no choices).
    let chosen = crate::choices::chosen_app(app, &spec.config_choices);

    if let Some(c) = &spec.app_catalog
        && c != APP_CATALOG_LOCAL
        && c != APP_CATALOG_SYSTEM
    {
        errors.push("spec.appCatalog", "enum", format!("appCatalog({c}) must be \"local\" or \"system\"."));
    }
    if let Some(t) = &spec.service_type
        && !SERVICE_TYPES.contains(&t.as_str())
    {
        errors.push(
            "spec.serviceType",
            "enum",
            format!("serviceType({t}) must be one of \"{}\".", SERVICE_TYPES.join(",")),
        );
    }
    if let Some(n) = &spec.naming_scheme
        && n != NAMING_SCHEME_UID
        && n != NAMING_SCHEME_CR_NAME_ROLE
    {
        errors.push("spec.namingScheme", "enum", format!("namingScheme({n}) must be \"UID\" or \"CrNameRole\"."));
    }
    for (i, _) in duplicates(spec.roles.iter().map(|r| r.id.as_str())) {
        errors.push(format!("spec.roles[{i}].id"), "unique-role-id", "Each id in the roles array must be unique.");
    }
    let mut total: i64 = 0;
    for (i, role) in spec.roles.iter().enumerate() {
        let path = format!("spec.roles[{i}]");
        let Some(app_role) = app.role(&role.id) else {
            errors.push(
                format!("{path}.id"),
                "known-role",
                format!("Invalid role({}) in app({app_name}) specified. Valid roles: \"{valid_roles}\"", role.id),
            );
            continue;
        };
        let card = Cardinality::parse(&app_role.cardinality);
        let members = role.members.or(card.map(|c| c.min)).unwrap_or(0);
        if members < 0 {
            errors.push(
                format!("{path}.members"),
                "non-negative",
                format!("Member count of role({}) must not be negative.", role.id),
            );
        } else if let Some(card) = card
            && !card.allows(members)
            && !crate::choices::role_off(app, &chosen.config, &role.id)
        {
            errors.push(
                format!("{path}.members"),
                "cardinality",
                format!(
                    "Invalid member count for role({}). Specified member count:{members} Role cardinality:{}",
                    role.id, app_role.cardinality
                ),
            );
        }
        total += i64::from(members.max(0));
        for (field, labels) in [("podLabels", &role.pod_labels), ("serviceLabels", &role.service_labels)] {
            if let Some(labels) = labels {
                label_errors(labels, &format!("{path}.{field}"), &mut errors);
            }
        }
        for (field, annotations) in
            [("podAnnotations", &role.pod_annotations), ("serviceAnnotations", &role.service_annotations)]
        {
            if let Some(annotations) = annotations {
                annotation_errors(annotations, &format!("{path}.{field}"), &mut errors);
            }
        }
        if let Some(class) = role.storage.as_ref().and_then(|s| s.storage_class_name.as_deref()) {
            object_name_errors(class, "StorageClass", format!("{path}.storage.storageClassName"), &mut errors);
        }
        if let Some(block) = &role.block_storage {
            if let Some(class) = &block.storage_class_name {
                object_name_errors(class, "StorageClass", format!("{path}.blockStorage.storageClassName"), &mut errors);
            }
            if let Some(size) = &block.size
                && quantity::parse(size).is_none_or(|v| v <= 0.0)
            {
                errors.push(
                    format!("{path}.blockStorage.size"),
                    "positive",
                    format!("Block storage size({size}) for role ({}) must be a quantity greater than zero.", role.id),
                );
            }
        }
        if let Some(secret) = &role.secret {
            object_name_errors(&secret.name, "Secret", format!("{path}.secret.name"), &mut errors);
            mounted_secret_errors(secret, &format!("{path}.secret"), &mut errors);
        }
        for (j, projection) in role.volume_projections.iter().enumerate() {
            let p = format!("{path}.volumeProjections[{j}]");
            object_name_errors(&projection.pvc_name, "PersistentVolumeClaim", format!("{p}.pvcName"), &mut errors);
        }
        for (j, env) in role.env.iter().enumerate() {
            // Kubernetes' rule since 1.34 (RelaxedEnvironmentVariableValidation): printable
            // ASCII other than '='.
            let printable = env.name.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=');
            if env.name.is_empty() || !printable {
                errors.push(
                    format!("{path}.env[{j}].name"),
                    "env-name",
                    format!("Invalid value: \"{}\": a valid environment variable name must consist only of printable ASCII characters other than '='", env.name),
                );
            }
        }
        if let Some(storage) = &role.storage {
            match quantity::parse(&storage.size) {
                None => errors.push(
                    format!("{path}.storage.size"),
                    "quantity",
                    format!("Storage size for role ({}) is incorrectly defined.", role.id),
                ),
                Some(v) if v <= 0.0 => errors.push(
                    format!("{path}.storage.size"),
                    "positive",
                    format!("Storage size for role ({}) should be greater than zero.", role.id),
                ),
                Some(_) => {}
            }
        }
        for (key, min) in app_role.min_resources.iter().flatten() {
            let Some(min_value) = quantity::parse(&min.0) else { continue };
            let requested = role.resources.requests.as_ref().and_then(|r| r.get(key));
            let limited = role.resources.limits.as_ref().and_then(|r| r.get(key));
            for (kind, q) in [("requests", requested), ("limits", limited)] {
                if let Some(q) = q
                    && quantity::parse(&q.0).is_some_and(|v| v < min_value)
                {
                    errors.push(format!("{path}.resources.{kind}[{key}]"), "min-resources", format!("Specified resource(\"{key}\") value(\"{}\") for role(\"{}\") is invalid. Minimum value must be \"{}\".", q.0, role.id, min.0));
                }
            }
        }
        for (kind, list) in [("requests", &role.resources.requests), ("limits", &role.resources.limits)] {
            if let Some(list) = list {
                resource_errors(list, &format!("{path}.resources.{kind}"), &mut errors);
            }
        }
        for (key, request) in role.resources.requests.iter().flatten() {
            let limit = role.resources.limits.as_ref().and_then(|l| l.get(key));
            if let Some(limit) = limit
                && let (Some(r), Some(l)) = (quantity::parse(&request.0), quantity::parse(&limit.0))
                && r > l
                && l >= 0.0
            {
                errors.push(
                    format!("{path}.resources.requests[{key}]"),
                    "requests-within-limits",
                    format!(
                        "Invalid value: \"{}\": must be less than or equal to {key} limit of {}",
                        request.0, limit.0
                    ),
                );
            }
        }
        for (j, key) in role.secret_keys.iter().enumerate() {
            if key.name.is_empty() {
                errors.push(format!("{path}.secretKeys[{j}].name"), "required", "Secret key name must not be empty.");
            }
        }
        for (j, inj) in role.file_injections.iter().enumerate() {
            if inj.src_url.is_empty() {
                errors.push(format!("{path}.fileInjections[{j}].srcURL"), "required", "srcURL must not be empty.");
            } else if !["http://", "https://"]
                .iter()
                .any(|scheme| inj.src_url.strip_prefix(scheme).is_some_and(|r| !r.is_empty() && !r.contains('\n')))
            {
                errors.push(
                    format!("{path}.fileInjections[{j}].srcURL"),
                    "src-url",
                    format!("srcURL({}) must be an http:// or https:// URL (pattern ^https?://.+$).", inj.src_url),
                );
            }
            if !inj.dest_dir.starts_with('/') {
                errors.push(
                    format!("{path}.fileInjections[{j}].destDir"),
                    "absolute-path",
                    format!("destDir({}) must be an absolute path.", inj.dest_dir),
                );
            }
        }
    }
    if total > i64::from(MAX_MEMBERS) {
        errors.push(
            "spec.roles",
            "max-members",
            format!("Maximum number of total members per KD cluster supported is {MAX_MEMBERS}."),
        );
    }
    for selected in &chosen.config.selected_roles {
        if spec.roles.iter().any(|r| &r.id == selected) {
            continue;
        }
        let min = app.role(selected).and_then(|r| Cardinality::parse(&r.cardinality)).map_or(0, |c| c.min);
        if min != 0 {
            errors.push("spec.roles", "selected-role-required", format!("Active role({selected}) in app({app_name}) must have its configuration included in the roles array."));
        }
    }
    if let Some(secret) = &spec.default_secret {
        object_name_errors(&secret.name, "Secret", "spec.defaultSecret.name", &mut errors);
        mounted_secret_errors(secret, "spec.defaultSecret", &mut errors);
    }
    if let Some(connections) = &spec.connections {
        for (field, kind, names) in [
            ("clusters", "KubeDirectorCluster", &connections.clusters),
            ("configmaps", "ConfigMap", &connections.configmaps),
            ("secrets", "Secret", &connections.secrets),
        ] {
            for (j, name) in names.iter().enumerate() {
                object_name_errors(name, kind, format!("spec.connections.{field}[{j}]"), &mut errors);
            }
        }
    }
    if let Some(placement) = &spec.placement {
        placement_errors(placement, &mut errors);
    }
    crate::choices::cluster_errors(spec, app_name, app, &mut errors);
    errors.into_result()
}

fn selector_errors(selector: &LabelSelector, path: &str, errors: &mut ValidationErrors) {
    if let Some(labels) = &selector.match_labels {
        label_errors(labels, &format!("{path}.matchLabels"), errors);
    }
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let values = expr.values.as_ref().map_or(0, Vec::len);
        match expr.operator.as_str() {
            "In" | "NotIn" if values == 0 => errors.push(
                format!("{p}.values"),
                "selector-values",
                format!("values must be non-empty when operator is {}", expr.operator),
            ),
            "Exists" | "DoesNotExist" if values > 0 => errors.push(
                format!("{p}.values"),
                "selector-values",
                format!("values must be empty when operator is {}", expr.operator),
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errors.push(
                format!("{p}.operator"),
                "selector-operator",
                format!("operator({other}) must be one of In, NotIn, Exists, DoesNotExist"),
            ),
        }
    }
}

fn placement_errors(placement: &Placement, errors: &mut ValidationErrors) {
    if let Some(sel) = &placement.member_selector {
        selector_errors(sel, "spec.placement.memberSelector", errors);
    }
    for (i, pref) in placement.preferences.iter().enumerate() {
        if !(1..=100).contains(&pref.weight) {
            errors.push(
                format!("spec.placement.preferences[{i}].weight"),
                "weight-range",
                format!("weight({}) must be between 1 and 100.", pref.weight),
            );
        }
        selector_errors(&pref.preference, &format!("spec.placement.preferences[{i}].preference"), errors);
    }
    for (i, name) in placement.members.iter().enumerate() {
        if !is_dns_label(name) {
            errors.push(
                format!("spec.placement.members[{i}]"),
                "member-name",
                format!("member name({name}) must be a DNS label."),
            );
        }
    }
    for (i, t) in placement.tolerations.iter().enumerate() {
        let op = t.operator.as_deref().unwrap_or("Equal");
        if op != "Equal" && op != "Exists" {
            errors.push(
                format!("spec.placement.tolerations[{i}].operator"),
                "toleration-operator",
                format!("operator({op}) must be Equal or Exists."),
            );
        }
        if op == "Exists" && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errors.push(
                format!("spec.placement.tolerations[{i}].value"),
                "toleration-value",
                "value must be empty when operator is Exists.",
            );
        }
        if let Some(effect) = &t.effect
            && !["NoSchedule", "PreferNoSchedule", "NoExecute", ""].contains(&effect.as_str())
        {
            errors.push(
                format!("spec.placement.tolerations[{i}].effect"),
                "toleration-effect",
                format!("effect({effect}) must be NoSchedule, PreferNoSchedule or NoExecute."),
            );
        }
    }
    if let Some(f) = &placement.failover {
        if let Some(p) = &f.policy
            && p != "Never"
            && p != "Reschedule"
        {
            errors.push("spec.placement.failover.policy", "enum", format!("policy({p}) must be Never or Reschedule."));
        }
        if f.after_seconds.is_some_and(|s| s < 10) {
            errors.push("spec.placement.failover.afterSeconds", "min", "afterSeconds must be at least 10.");
        }
    }
}

/// Validates a change of a cluster: immutable fields, role changes while members exist,
/// and upstream's spec-change gating (one unprocessed change at a time, no change while
/// notifications are pending). `old_status` is the status at the time of the change.
pub fn cluster_update(
    old: &KubeDirectorClusterSpec,
    new: &KubeDirectorClusterSpec,
    old_status: Option<&KubeDirectorClusterStatus>,
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if old.app != new.app {
        errors.push("spec.app", "immutable", "The app property is read-only.");
    }
    if old.app_catalog.is_some() && old.app_catalog != new.app_catalog {
        errors.push("spec.appCatalog", "immutable", "The appCatalog property is read-only.");
    }
    if old.naming_scheme.is_some() && old.naming_scheme != new.naming_scheme {
        errors.push("spec.namingScheme", "immutable", "The namingScheme property is read-only.");
    }
    let roles_with_members: HashSet<&str> = old_status
        .map(|s| s.roles.iter().filter(|r| !r.members.is_empty()).map(|r| r.id.as_str()).collect())
        .unwrap_or_default();
    for (i, role) in new.roles.iter().enumerate() {
        if !roles_with_members.contains(role.id.as_str()) {
            continue;
        }
        let unchanged = old.roles.iter().find(|r| r.id == role.id).is_some_and(|prev| {
            let mut compare = role.clone();
            compare.members = prev.members;
            &compare == prev
        });
        if !unchanged {
            errors.push(
                format!("spec.roles[{i}]"),
                "role-immutable-while-members-exist",
                format!(
                    "Role({}) properties other than the members count cannot be modified while role members exist.",
                    role.id
                ),
            );
        }
    }
    if old != new {
        match old_status {
            None => errors.push(
                "spec",
                "one-change-at-a-time",
                "Change to spec not allowed before previous spec change has been processed.",
            ),
            Some(status) => {
                let pending = status
                    .roles
                    .iter()
                    .flat_map(|r| &r.members)
                    .any(|m| !m.state_detail.pending_notify_cmds.is_empty());
                if pending {
                    errors.push("spec", "pending-notifications", "Change to spec not allowed because some members have not processed notifications of previous change.");
                } else if status.state.as_deref() == Some(STATE_SPEC_MODIFIED) {
                    errors.push(
                        "spec",
                        "one-change-at-a-time",
                        "Change to spec not allowed before previous spec change has been processed.",
                    );
                }
            }
        }
    }
    errors.into_result()
}

/// [`cluster_update`] plus the rules that need the catalog: `spec.app` changes only as a
/// live upgrade allows (`catalog`: the apps it may name; see [`crate::upgrade`]), and a
/// config choice changes only where the cluster's app marks it `mutable`. Admission calls
/// this one.
pub fn cluster_update_with_app(
    old: &KubeDirectorClusterSpec,
    new: &KubeDirectorClusterSpec,
    old_status: Option<&KubeDirectorClusterStatus>,
    app: &KubeDirectorAppSpec,
    catalog: &[crate::upgrade::CatalogApp<'_>],
) -> Result<(), ValidationErrors> {
    let mut errors = crate::upgrade::cluster_update(old, new, old_status, catalog).err().unwrap_or_default();
    crate::choices::update_errors(old, new, app, &mut errors);
    errors.into_result()
}

/// Validates a `KubeDirectorConfig` spec.
pub fn config(spec: &KubeDirectorConfigSpec) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if let Some(t) = &spec.default_service_type
        && !SERVICE_TYPES.contains(&t.as_str())
    {
        errors.push(
            "spec.defaultServiceType",
            "enum",
            format!("defaultServiceType({t}) must be one of \"{}\".", SERVICE_TYPES.join(",")),
        );
    }
    if let Some(n) = &spec.default_naming_scheme
        && n != NAMING_SCHEME_UID
        && n != NAMING_SCHEME_CR_NAME_ROLE
    {
        errors.push(
            "spec.defaultNamingScheme",
            "enum",
            format!("defaultNamingScheme({n}) must be \"UID\" or \"CrNameRole\"."),
        );
    }
    if let Some(key) = &spec.master_encryption_key {
        let hex_ok = key.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_ok || ![32, 64].contains(&key.len()) {
            errors.push(
                "spec.masterEncryptionKey",
                "aes-key",
                "masterEncryptionKey is invalid. error: must be 16 or 32 bytes written as hex (AES-128 or AES-256).",
            );
        }
    }
    if let Some(base) = &spec.cluster_svc_domain_base
        && !is_dns_subdomain(base.strip_prefix('.').unwrap_or(base))
    {
        errors.push(
            "spec.clusterSvcDomainBase",
            "dns-subdomain",
            format!("clusterSvcDomainBase({base}) must be a DNS subdomain."),
        );
    }
    for (field, labels) in [("podLabels", &spec.pod_labels), ("serviceLabels", &spec.service_labels)] {
        if let Some(labels) = labels {
            label_errors(labels, &format!("spec.{field}"), &mut errors);
        }
    }
    errors.into_result()
}

/// Longest member name: the member's hub namespace (`kdfed-member-<name>`) and RBAC
/// object names are derived from it.
pub const MAX_MEMBER_NAME_LENGTH: usize = 40;
/// Effects a member taint may have (Kubernetes' node taint effects).
pub const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
/// Length of a join request's X25519 public key, in bytes.
pub const JOIN_KEY_LENGTH: usize = 32;

/// Validates a `KubeDirectorMember`: its name, placement labels, join key and taints (the
/// hub's admission and `kdfed member add`, which passes an empty spec, both use this).
/// A bad name, join key or taint is reported alone, the first found, in that order, as the
/// hub always has; label errors are reported all together.
pub fn member(
    name: &str,
    labels: &BTreeMap<String, String>,
    spec: &KubeDirectorMemberSpec,
) -> Result<(), ValidationErrors> {
    if let Some(first) = member_name_error(name).or_else(|| join_key_error(spec)).or_else(|| taint_error(spec)) {
        return Err(first.into());
    }
    let mut errors = ValidationErrors::default();
    label_errors(labels, "metadata.labels", &mut errors);
    errors.into_result()
}

fn member_name_error(name: &str) -> Option<FieldError> {
    (!is_dns_label(name) || name.len() > MAX_MEMBER_NAME_LENGTH).then(|| {
        FieldError::new(
            "metadata.name",
            "member-name",
            format!("member name {name:?} must be a DNS label of at most {MAX_MEMBER_NAME_LENGTH} characters"),
        )
    })
}

/// Whether `key` is base64 of a 32-byte X25519 public key.
pub fn is_join_key(key: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|bytes| bytes.len() == JOIN_KEY_LENGTH)
}

fn join_key_error(spec: &KubeDirectorMemberSpec) -> Option<FieldError> {
    let join = spec.join.as_ref()?;
    (!is_join_key(&join.public_key))
        .then(|| FieldError::new("spec.join.publicKey", "join-key", "public key is not base64 of 32 bytes"))
}

fn taint_error(spec: &KubeDirectorMemberSpec) -> Option<FieldError> {
    spec.taints.iter().enumerate().find(|(_, t)| !TAINT_EFFECTS.contains(&t.effect.as_str())).map(|(i, t)| {
        FieldError::new(
            format!("spec.taints[{i}].effect"),
            "taint-effect",
            format!("effect({}) must be NoSchedule, PreferNoSchedule or NoExecute", t.effect),
        )
    })
}

/// Paths present in `original` but missing (or different) in `typed`, the same object after a
/// round trip through the Rust types: fields the API does not know, usually typos.
pub fn unknown_fields(original: &serde_json::Value, typed: &serde_json::Value) -> Vec<String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(ma), Value::Object(mb)) => {
                for (k, va) in ma {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    match mb.get(k) {
                        Some(vb) => walk(va, vb, &p, out),
                        None => out.push(p),
                    }
                }
            }
            (Value::Array(xa), Value::Array(xb)) if xa.len() == xb.len() => {
                for (i, (va, vb)) in xa.iter().zip(xb).enumerate() {
                    walk(va, vb, &format!("{path}[{i}]"), out);
                }
            }
            (Value::Number(na), Value::Number(nb)) if na.as_f64() == nb.as_f64() => {}
            _ if a == b => {}
            _ => out.push(path.to_string()),
        }
    }
    let mut out = Vec::new();
    walk(original, typed, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Taint;

    use crate::federation::MemberJoinRequest;

    fn taint(effect: &str) -> Taint {
        Taint { key: "k".into(), effect: effect.into(), ..Default::default() }
    }

    fn join(public_key: &str) -> Option<MemberJoinRequest> {
        Some(MemberJoinRequest { public_key: public_key.into(), ..Default::default() })
    }

    #[test]
    fn a_member_with_a_good_name_labels_key_and_taints_is_valid() {
        let labels = BTreeMap::from([("region".to_string(), "east".to_string())]);
        let spec = KubeDirectorMemberSpec {
            taints: vec![taint("NoSchedule"), taint("PreferNoSchedule"), taint("NoExecute")],
            join: join(&format!("{}=", "A".repeat(43))),
            ..Default::default()
        };
        assert_eq!(member("east", &labels, &spec), Ok(()));
        assert_eq!(member("east", &BTreeMap::new(), &KubeDirectorMemberSpec::default()), Ok(()));
    }

    #[test]
    fn member_names_are_dns_labels_of_at_most_40_characters() {
        let spec = KubeDirectorMemberSpec::default();
        assert_eq!(member(&"a".repeat(40), &BTreeMap::new(), &spec), Ok(()));
        for bad in ["a".repeat(41), "East".into(), "-east".into(), String::new()] {
            let e = member(&bad, &BTreeMap::new(), &spec).expect_err(&bad);
            assert_eq!(
                e.to_string(),
                format!(
                    "metadata.name: member name {bad:?} must be a DNS label of at most 40 characters (rule: member-name)"
                )
            );
        }
    }

    #[test]
    fn a_bad_join_key_or_taint_effect_names_its_field() {
        let spec = KubeDirectorMemberSpec { join: join("not a key"), ..Default::default() };
        let e = member("east", &BTreeMap::new(), &spec).expect_err("bad key");
        assert_eq!(e.to_string(), "spec.join.publicKey: public key is not base64 of 32 bytes (rule: join-key)");
        let spec =
            KubeDirectorMemberSpec { taints: vec![taint("NoSchedule"), taint("Sometimes")], ..Default::default() };
        let e = member("east", &BTreeMap::new(), &spec).expect_err("bad effect");
        assert_eq!(
            e.to_string(),
            "spec.taints[1].effect: effect(Sometimes) must be NoSchedule, PreferNoSchedule or NoExecute (rule: taint-effect)"
        );
    }

    #[test]
    fn the_name_is_reported_alone_and_label_errors_together() {
        let labels = BTreeMap::from([("bad key!".to_string(), "x".to_string()), ("ok".to_string(), "-x".to_string())]);
        let spec = KubeDirectorMemberSpec { taints: vec![taint("Sometimes")], ..Default::default() };
        let e = member("East", &labels, &spec).expect_err("bad name");
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].rule, "member-name");
        let e = member("east", &labels, &spec).expect_err("bad taint");
        assert_eq!(e.0.iter().map(|e| e.rule).collect::<Vec<_>>(), ["taint-effect"]);
        let e = member("east", &labels, &KubeDirectorMemberSpec::default()).expect_err("bad labels");
        assert_eq!(e.0.iter().map(|e| e.rule).collect::<Vec<_>>(), ["label-key", "label-value"]);
        assert!(e.0.iter().all(|e| e.path.starts_with("metadata.labels[")), "{e}");
    }

    #[test]
    fn errors_about_the_whole_object_render_without_a_path() {
        let e = FieldError::new("", "app-in-use", "in use");
        assert_eq!(e.to_string(), "in use (rule: app-in-use)");
        assert_eq!(FieldError::new("spec", "r", "m").to_string(), "spec: m (rule: r)");
        let all = ValidationErrors(vec![FieldError::new("a", "r", "m"), FieldError::new("b", "s", "n")]);
        assert_eq!(all.to_string(), "a: m (rule: r)\nb: n (rule: s)");
    }
}
