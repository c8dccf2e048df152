//! `KubeDirectorApp` (kubedirector.hpe.com/v1beta1): an application described as data.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// The spec of a `KubeDirectorApp`, field-for-field compatible with upstream KubeDirector.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubedirector.hpe.com",
    version = "v1beta1",
    kind = "KubeDirectorApp",
    namespaced,
    shortname = "kdapp",
    category = "kubedirector",
    printcolumn = r#"{"name":"App Name","type":"string","description":"Human-readable app name","jsonPath":".spec.label.name"}"#,
    printcolumn = r#"{"name":"Distro ID","type":"string","description":"Identifier of a series of app versions","jsonPath":".spec.distroID"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorAppSpec {
    /// Short name and description shown to users.
    pub label: Label,
    /// Identifies a series of versions of the same application.
    #[serde(rename = "distroID")]
    #[schemars(length(min = 1, max = 256))]
    pub distro_id: String,
    /// Version of the application.
    #[schemars(length(min = 1, max = 256))]
    pub version: String,
    /// Version of the configmeta schema the setup package expects.
    #[serde(rename = "configSchemaVersion")]
    #[schemars(range(min = 7))]
    pub config_schema_version: i32,
    /// Image used by roles that do not name their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub default_image_repo_tag: Option<String>,
    /// Setup package used by roles that do not name their own. `null` means explicitly none.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "explicit_null")]
    #[schemars(schema_with = "crate::schema::nullable_setup_package")]
    pub default_config_package: Option<Option<SetupPackageUrl>>,
    /// Network endpoints that roles may expose.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub services: Vec<Service>,
    /// The roles (groups of identical members) the app can run.
    pub roles: Vec<NodeRole>,
    /// Which roles are active and which services each role runs.
    pub config: NodeGroupConfig,
    /// Directories persisted for roles that do not name their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = r"^/.*[^/]$")))]
    pub default_persist_dirs: Option<Vec<String>>,
    /// Lifecycle events delivered to roles that do not name their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = r"^configure$|^addnodes$|^delnodes$|^reconnect$")))]
    pub default_event_list: Option<Vec<String>>,
    /// Bytes of setup-script output kept in a member's status, for roles that do not name their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_log_size_dump: Option<i32>,
    /// Linux capabilities added to every container.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    #[schemars(inner(length(min = 1)))]
    pub capabilities: Vec<String>,
    /// Whether the app's containers need systemd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_required: Option<bool>,
    /// Logo shown by user interfaces.
    #[serde(default, rename = "logoURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), regex(pattern = r"^(file|https|http?)://.+\.(jpeg|png)$"))]
    pub logo_url: Option<String>,
    /// kdfed extension: deploy-time choices a cluster makes (`KubeDirectorCluster.spec.configChoices`),
    /// each with its values; `config.conditional` says what each value changes. See
    /// docs/app-lifecycle.md.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub config_choices: Vec<ConfigChoice>,
    /// kdfed extension: names of the apps (same `distroID`) whose running clusters may change
    /// `spec.app` to this app, a live upgrade (or back, a rollback).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    #[schemars(inner(length(min = 1, max = 63)))]
    pub upgrade_from: Vec<String>,
    /// kdfed extension: the order roles are upgraded in (default: the order of `roles`;
    /// roles left out follow in that order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_role_order: Option<Vec<String>>,
}

/// kdfed extension: one deploy-time choice of an app.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ConfigChoice {
    /// Unique id of the choice within the app (the key in a cluster's `configChoices`).
    #[schemars(length(min = 1, max = 63))]
    pub id: String,
    /// Name and description shown to users.
    pub label: Label,
    /// The values a cluster may choose, in the order user interfaces offer them.
    pub values: Vec<String>,
    /// Value of clusters that do not choose; the first of `values` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Whether a running cluster may change its value (default: fixed at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutable: Option<bool>,
}

/// kdfed extension: a config merged over the app's base `config` when every `when` entry
/// matches the cluster's choices: roles and services are added, `configMeta` keys override.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionalConfig {
    /// Choice id → value; the config applies when the cluster chose every one of them.
    pub when: BTreeMap<String, String>,
    /// Roles made active (added to `selectedRoles`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    #[schemars(inner(length(min = 1)))]
    pub selected_roles: Vec<String>,
    /// Services added to roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub role_services: Vec<RoleService>,
    /// Keys set (or overridden) in the setup package's `configMeta`.
    #[serde(default, rename = "configMeta", skip_serializing_if = "Option::is_none")]
    pub config_meta: Option<BTreeMap<String, String>>,
}

/// Short name and long description.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Label {
    /// Short human-readable name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Longer description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Where a setup package comes from (`http(s)://` or `file://` inside the image).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SetupPackageUrl {
    /// URL of the package tarball.
    #[serde(rename = "packageURL")]
    pub package_url: String,
    /// Whether the package should run as a daemon rather than one-shot (kept for compatibility).
    #[serde(default, rename = "useNewSetupLayout", skip_serializing_if = "Option::is_none")]
    pub use_new_setup_layout: Option<bool>,
}

/// A network endpoint of the app.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Unique id of the service within the app; ports are named after it.
    #[schemars(length(min = 1, max = 15), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub id: String,
    /// Name shown to users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
    /// Protocol, port and path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<ServiceEndpoint>,
    /// Name under which the service is exported to other clusters.
    #[serde(default, rename = "exported_service", skip_serializing_if = "Option::is_none")]
    pub exported_service: Option<String>,
}

/// Network address and protocol of a service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEndpoint {
    /// URL scheme such as `http`; required for dashboards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_scheme: Option<String>,
    /// Container port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Path appended to the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether users open this endpoint in a browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_dashboard: Option<bool>,
    /// Whether an auth token is generated for this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_auth_token: Option<bool>,
}

/// A role: members that share an image, resources and services.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRole {
    /// Unique id of the role within the app (upstream's form: capitals, `_` and `.` allowed).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"))]
    pub id: String,
    /// Member count: `N` (exactly N) or `N+` (at least N).
    #[schemars(regex(pattern = r"^\d+\+?$"))]
    pub cardinality: String,
    /// Image of this role's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image_repo_tag: Option<String>,
    /// Setup package of this role; `null` means explicitly none.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "explicit_null")]
    #[schemars(schema_with = "crate::schema::nullable_setup_package")]
    pub config_package: Option<Option<SetupPackageUrl>>,
    /// Directories persisted on the role's volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = r"^/.*[^/]$")))]
    pub persist_dirs: Option<Vec<String>>,
    /// Lifecycle events (`configure`, `addnodes`, `delnodes`, `reconnect`) this role wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = r"^configure$|^addnodes$|^delnodes$|^reconnect$")))]
    pub event_list: Option<Vec<String>>,
    /// Smallest resources a member of this role may request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resources: Option<BTreeMap<String, Quantity>>,
    /// Smallest storage a member of this role may request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_storage: Option<MinStorage>,
    /// Bytes of setup-script output kept in a member's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_size_dump: Option<i32>,
    /// Container options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_spec: Option<ContainerSpec>,
}

/// Container stdin/tty options.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ContainerSpec {
    /// Keep stdin open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
    /// Allocate a TTY (needs stdin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
}

/// Minimum persistent storage for a role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MinStorage {
    /// Minimum size, a Kubernetes quantity.
    pub size: String,
    /// Whether storage is required for this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_mode_supported: Option<bool>,
}

/// Active roles and the services of each role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupConfig {
    /// Services run by each role.
    pub role_services: Vec<RoleService>,
    /// Roles that are active in this app.
    #[schemars(inner(length(min = 1)))]
    pub selected_roles: Vec<String>,
    /// Free-form key/values passed to the setup package.
    #[serde(default, rename = "configMeta", skip_serializing_if = "Option::is_none")]
    pub config_meta: Option<BTreeMap<String, String>>,
    /// kdfed extension: configs merged over this one, in order, when a cluster's choices
    /// match their `when`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub conditional: Vec<ConditionalConfig>,
}

/// Associates services with a role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RoleService {
    /// Service ids run by the role.
    #[serde(rename = "serviceIDs")]
    #[schemars(inner(length(min = 1, max = 15), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")))]
    pub service_ids: Vec<String>,
    /// The role.
    #[serde(rename = "roleID")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"))]
    pub role_id: String,
}

/// Keeps an explicit `null` apart from an absent field: absent is `None`, null is `Some(None)`.
fn explicit_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Cardinality of a role: the minimum member count and whether more are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cardinality {
    /// Members required (exact count unless `scale_out`).
    pub min: i32,
    /// `N+`: any count of at least `min`.
    pub scale_out: bool,
}

impl Cardinality {
    /// Parses `N` or `N+`; `None` when the text is neither.
    pub fn parse(text: &str) -> Option<Cardinality> {
        let (digits, scale_out) = match text.strip_suffix('+') {
            Some(d) => (d, true),
            None => (text, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(|min| Cardinality { min, scale_out })
    }

    /// Whether `members` satisfies this cardinality.
    pub fn allows(&self, members: i32) -> bool {
        if self.scale_out { members >= self.min } else { members == self.min }
    }
}

impl KubeDirectorAppSpec {
    /// The role with this id.
    pub fn role(&self, id: &str) -> Option<&NodeRole> {
        self.roles.iter().find(|r| r.id == id)
    }

    /// The service with this id.
    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.id == id)
    }

    /// Services run by a role, in the order the app lists them.
    pub fn role_services(&self, role_id: &str) -> Vec<&Service> {
        self.config
            .role_services
            .iter()
            .filter(|rs| rs.role_id == role_id)
            .flat_map(|rs| rs.service_ids.iter())
            .filter_map(|id| self.service(id))
            .collect()
    }
}
