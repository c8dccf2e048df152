//! `KubeDirectorCluster` (kubedirector.hpe.com/v1beta1): an instance of an app, plus
//! kdfed's optional `spec.placement` and the hub's federation status fields.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Naming scheme that appends generated suffixes (upstream's original scheme).
pub const NAMING_SCHEME_UID: &str = "UID";
/// Naming scheme built from the cluster name and role id.
pub const NAMING_SCHEME_CR_NAME_ROLE: &str = "CrNameRole";
/// App looked up in the cluster's own namespace.
pub const APP_CATALOG_LOCAL: &str = "local";
/// App looked up in the system namespace.
pub const APP_CATALOG_SYSTEM: &str = "system";

/// The spec of a `KubeDirectorCluster`, field-for-field compatible with upstream KubeDirector.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubedirector.hpe.com",
    version = "v1beta1",
    kind = "KubeDirectorCluster",
    namespaced,
    shortname = "kdcluster",
    category = "kubedirector",
    status = "KubeDirectorClusterStatus",
    printcolumn = r#"{"name":"App","type":"string","description":"The KubeDirectorApp instantiated","jsonPath":".spec.app"}"#,
    printcolumn = r#"{"name":"State","type":"string","description":"Overall state of the cluster","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Member","type":"string","description":"Member cluster it is placed on","jsonPath":".status.placement.member"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","description":"Members configured / total","jsonPath":".status.membersReady"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(oldSelf.appCatalog) || (has(self.appCatalog) && self.appCatalog == oldSelf.appCatalog)",
     "message": "The appCatalog property is read-only."},
    {"rule": "!has(oldSelf.namingScheme) || (has(self.namingScheme) && self.namingScheme == oldSelf.namingScheme)",
     "message": "The namingScheme property is read-only."}
]))]
pub struct KubeDirectorClusterSpec {
    /// Name of the `KubeDirectorApp` to instantiate. Read-only, except for a live upgrade
    /// (kdfed): an app that lists this one in `upgradeFrom`, or back during a rollout; the
    /// admission webhooks and the director check it against the catalog.
    #[schemars(length(min = 1))]
    pub app: String,
    /// Where the app is found: `local` (cluster's namespace) or `system`. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^local$|^system$"))]
    pub app_catalog: Option<String>,
    /// Service type for member services: `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^ClusterIP$|^NodePort$|^LoadBalancer$"))]
    pub service_type: Option<String>,
    /// Requested roles and their members.
    pub roles: Vec<Role>,
    /// Secret mounted into every role that does not name its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_secret: Option<KdSecret>,
    /// Other clusters, ConfigMaps and Secrets this cluster is connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Connections>,
    /// `UID` or `CrNameRole`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^UID$|^CrNameRole$"))]
    pub naming_scheme: Option<String>,
    /// kdfed extension: where in the fleet the cluster may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// kdfed extension: what happens to members' PVCs when the cluster is deleted or a
    /// role shrinks. Default: both `Delete` (upstream's behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_retention_policy: Option<PvcRetentionPolicy>,
    /// kdfed extension: the app's config choices this cluster makes (choice id → value);
    /// choices left out take the app's default. Fixed after creation unless the app marks
    /// the choice `mutable`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub config_choices: BTreeMap<String, String>,
}

/// Whether PVCs are deleted or kept when the cluster is deleted and when members are removed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// `Delete` (default) or `Retain`: PVCs when the cluster is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(Delete|Retain)$"))]
    pub when_deleted: Option<String>,
    /// `Delete` (default) or `Retain`: a removed member's PVC when its role shrinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(Delete|Retain)$"))]
    pub when_scaled: Option<String>,
}

impl KubeDirectorClusterSpec {
    /// Whether PVCs are kept when the cluster is deleted.
    pub fn retain_pvcs_when_deleted(&self) -> bool {
        self.persistent_volume_claim_retention_policy.as_ref().and_then(|p| p.when_deleted.as_deref()) == Some("Retain")
    }

    /// Whether a removed member's PVC is kept when its role shrinks.
    pub fn retain_pvcs_when_scaled(&self) -> bool {
        self.persistent_volume_claim_retention_policy.as_ref().and_then(|p| p.when_scaled.as_deref()) == Some("Retain")
    }
}

/// Label that makes a ConfigMap a connectable one (configmeta's `connections.configmaps`
/// lists it; the hub copies it with a cluster that connects it). One definition for the hub
/// and the director.
pub const LABEL_CONFIGMAP_TYPE: &str = "kubedirector.hpe.com/cmType";
/// Label that makes a Secret a connectable one (configmeta's `connections.secrets`).
pub const LABEL_SECRET_TYPE: &str = "kubedirector.hpe.com/secretType";

/// Objects connected to a cluster; their changes are announced to its members.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Connections {
    /// Connected `KubeDirectorCluster` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub clusters: Vec<String>,
    /// Connected ConfigMap names.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub configmaps: Vec<String>,
    /// Connected Secret names.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub secrets: Vec<String>,
}

/// A Secret mounted into containers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KdSecret {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// File mode of the mounted keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 511))]
    pub default_mode: Option<i32>,
    /// Mount path in the container.
    #[schemars(length(min = 1), regex(pattern = r"^/[a-zA-Z0-9\/-_]*"))]
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// Permissions of an injected file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilePermissions {
    /// File mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<i32>,
    /// Owner user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_owner: Option<String>,
    /// Owner group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_group: Option<String>,
}

/// A file downloaded into every member of a role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileInjection {
    /// Source URL.
    #[serde(rename = "srcURL")]
    #[schemars(regex(pattern = r"^https?://.+$"))]
    pub src_url: String,
    /// Destination directory in the container.
    #[schemars(length(min = 1), regex(pattern = r"^/.*$"))]
    pub dest_dir: String,
    /// Mode and ownership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<FilePermissions>,
}

/// A value only the setup package sees (through configmeta); stored encrypted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKey {
    /// Key name.
    pub name: String,
    /// Plain value; replaced by `encryptedValue` at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Value encrypted with the master key of `KubeDirectorConfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_value: Option<String>,
}

/// Persistent storage of a role's members.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStorage {
    /// Size, a Kubernetes quantity such as `10Gi`.
    #[schemars(regex(pattern = r"^([0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"))]
    pub size: String,
    /// Storage class; defaults from `KubeDirectorConfig` or the platform.
    #[serde(default, rename = "storageClassName", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub storage_class_name: Option<String>,
}

/// Raw block devices attached to a role's members.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockStorage {
    /// Storage class of the block volumes.
    #[serde(default, rename = "storageClassName", skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Device path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Size of each device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Devices per member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_devices: Option<i32>,
}

/// An existing PVC mounted into every member of a role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeProjection {
    /// PVC name.
    pub pvc_name: String,
    /// Mount path.
    pub mount_path: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A requested role of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// Role id from the app (checked against the app at admission).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"))]
    pub id: String,
    /// Labels added to the role's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the role's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Labels added to the role's member Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the role's member Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_annotations: Option<BTreeMap<String, String>>,
    /// Member count; defaults to the role's minimum cardinality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub members: Option<i32>,
    /// Resources of each member.
    #[serde(default, deserialize_with = "crate::nulls::or_default")]
    pub resources: ResourceRequirements,
    /// Pod affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Persistent storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<ClusterStorage>,
    /// Raw block storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_storage: Option<BlockStorage>,
    /// Environment of the containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub env: Vec<EnvVar>,
    /// Files downloaded into each member.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub file_injections: Vec<FileInjection>,
    /// Secret mounted into each member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<KdSecret>,
    /// Values given only to the setup package.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub secret_keys: Vec<SecretKey>,
    /// Existing PVCs mounted into each member.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub volume_projections: Vec<VolumeProjection>,
}

/// kdfed extension: where in the fleet a cluster may run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Only members whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_selector: Option<LabelSelector>,
    /// Soft preferences; matching members score the weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub preferences: Vec<PlacementPreference>,
    /// Only these members (by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub members: Vec<String>,
    /// Member taints this cluster tolerates.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub tolerations: Vec<Toleration>,
    /// What happens when the member is lost; default: never move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
}

/// A weighted placement preference.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementPreference {
    /// Score added for a matching member, 1..=100.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    /// Members this preference matches.
    pub preference: LabelSelector,
}

/// Failover policy of a placed cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failover {
    /// `Never` (default) or `Reschedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(Never|Reschedule)$"))]
    pub policy: Option<String>,
    /// Seconds a member must be unavailable before the cluster moves (default 300, at least 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10))]
    pub after_seconds: Option<i64>,
}

/// Observed state of a `KubeDirectorCluster`: upstream's shape plus kdfed's federation fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorClusterStatus {
    /// Overall state: `creating`, `configuring`, `configured`, `updating`, `deleting`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Backup-restore progress (kept for compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_progress: Option<RestoreProgress>,
    /// Whether any member has problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_state_rollup: Option<StateRollup>,
    /// Identifies the status generation.
    #[serde(default, rename = "generationUID", skip_serializing_if = "Option::is_none")]
    pub generation_uid: Option<String>,
    /// Spec generation the director is working on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_generation_to_process: Option<i64>,
    /// Name of the cluster's headless Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_service: Option<String>,
    /// Last member id handed out.
    #[serde(default, rename = "lastNodeID", skip_serializing_if = "Option::is_none")]
    pub last_node_id: Option<i64>,
    /// Per-role state.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub roles: Vec<RoleStatus>,
    /// Hash of the connected objects last announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connection_hash: Option<String>,
    /// kdfed: members configured / members total, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_ready: Option<String>,
    /// kdfed: where the hub placed the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementStatus>,
    /// kdfed: when the member-side fields were last reported; stale when the member is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_status_time: Option<Time>,
    /// kdfed: generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kdfed: conditions `Placed`, `Applied`, `Ready`, `MemberAvailable`, `Valid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub conditions: Vec<Condition>,
    /// kdfed: the config choices in effect (every choice of the app, defaults included).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub config_choices: BTreeMap<String, String>,
    /// kdfed: the live upgrade (or rollback) of the cluster's app, while it runs and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
}

/// kdfed: where a live upgrade of a cluster's app (or its rollback) stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// The app the members leave.
    pub from: String,
    /// The app the members move to.
    pub to: String,
    /// `Upgrading`, `Failed`, `Completed`, `RollingBack`, `RollbackFailed` or `RolledBack`.
    pub phase: String,
    /// Pods already running `to` and set up by its package, in the order they finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub upgraded_members: Vec<String>,
    /// The pod whose upgrade (or rollback) script failed; the rollout stops there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_member: Option<String>,
    /// What happened last, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Members the rollout moves (for `Upgrading 2/3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_members: Option<i32>,
    /// Version of `from` (what `startscript --upgrade --from` is told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// Version of `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    /// The pods the rollout moves, in order (fixed when it starts, so a restarted director
    /// goes on with the same list).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub plan: Vec<String>,
}

/// Where and when the hub placed a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// Member name.
    pub member: String,
    /// Placement epoch; increases on every (re)placement and fences older copies.
    pub epoch: i64,
    /// When the decision was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// Default seconds of member unavailability before a `Reschedule` cluster moves.
pub const DEFAULT_FAILOVER_SECONDS: i64 = 300;

impl Placement {
    /// Seconds after which the cluster moves off an unavailable member, if it may move.
    pub fn failover_after(&self) -> Option<i64> {
        let f = self.failover.as_ref()?;
        (f.policy.as_deref() == Some("Reschedule")).then(|| f.after_seconds.unwrap_or(DEFAULT_FAILOVER_SECONDS))
    }
}

/// Backup-restore progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreProgress {
    /// Waiting for the app.
    pub awaiting_app: bool,
    /// Waiting for the status.
    pub awaiting_status: bool,
    /// Waiting for resources.
    pub awaiting_resources: bool,
    /// Error text.
    #[serde(default, deserialize_with = "crate::nulls::or_default")]
    pub error: String,
}

/// Summary flags over all members.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateRollup {
    /// Members are being added or removed.
    pub membership_changing: bool,
    /// Some members are down.
    pub members_down: bool,
    /// Some members are being set up.
    pub members_initializing: bool,
    /// Some members wait for resources.
    pub members_waiting: bool,
    /// Some members are restarting.
    pub members_restarting: bool,
    /// Some members are in `config error`.
    pub config_errors: bool,
}

/// Objects implementing a role.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleStatus {
    /// Role id.
    pub id: String,
    /// StatefulSet name.
    #[serde(default, deserialize_with = "crate::nulls::or_default")]
    pub stateful_set: String,
    /// Members of the role.
    #[serde(default, deserialize_with = "crate::nulls::or_default")]
    pub members: Vec<MemberStatus>,
    /// Encrypted secret keys of the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_secret_keys: Option<BTreeMap<String, String>>,
}

/// Objects and state of one member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub pod: String,
    /// Member Service name.
    #[serde(default, deserialize_with = "crate::nulls::or_default")]
    pub service: String,
    /// Auth token of endpoints with `hasAuthToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// PVC name, if the role has storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<String>,
    /// `create pending`, `creating`, `configured`, `config error`, `delete pending`, `deleting`;
    /// kdfed: `upgrading`, `upgrade error` during a live upgrade.
    pub state: String,
    /// Progress of setup and notifications.
    #[serde(default, deserialize_with = "crate::nulls::or_default")]
    pub state_detail: MemberStateDetail,
    /// Member id within the cluster.
    #[serde(rename = "nodeID")]
    pub node_id: i64,
    /// kdfed: the member's DNS name, `<pod>.<headless service>.<namespace><domain base>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    /// Block device paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub block_device_paths: Vec<String>,
}

/// Progress of configmeta, setup scripts and notifications in a member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStateDetail {
    /// Why the member is in `config error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error_detail: Option<String>,
    /// Spec generation of the last configmeta written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_config_data_generation: Option<i64>,
    /// Spec generation of the last setup run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_setup_generation: Option<i64>,
    /// Container id being configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuring_container: Option<String>,
    /// Container id last configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_configured_container: Option<String>,
    /// Last seen container state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_container_state: Option<String>,
    /// Lifecycle notifications not yet delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub pending_notify_cmds: Vec<NotificationDesc>,
    /// Connection version last announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_connection_version: Option<i64>,
    /// kdfed: why the pod is not scheduled or running, copied from its conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_error_message: Option<String>,
    /// kdfed: what the member's setup is waiting for or retrying (e.g. systemd not yet
    /// responsive, an exec that timed out); cleared when setup moves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_detail: Option<String>,
    /// kdfed: the config choices this member was last configured (or reconfigured) with;
    /// a member behind the cluster's gets `startscript --reconfigure`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub last_config_choices: BTreeMap<String, String>,
}

/// Arguments of a pending notification.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NotificationDesc {
    /// `startscript` arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "crate::nulls::or_default")]
    pub arguments: Vec<String>,
}
