//! Federation kinds (federation.kubedirector.hpe.com/v1alpha1): the member registry and
//! the per-placement Work objects the hub hands to spokes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::KubeDirectorAppSpec;
use crate::cluster::{KubeDirectorClusterSpec, KubeDirectorClusterStatus};

/// API group of the federation kinds.
pub const FEDERATION_GROUP: &str = "federation.kubedirector.hpe.com";
/// Prefix of each member's namespace on the hub.
pub const MEMBER_NAMESPACE_PREFIX: &str = "kdfed-member-";

/// The hub namespace that belongs to a member.
pub fn member_namespace(member: &str) -> String {
    format!("{MEMBER_NAMESPACE_PREFIX}{member}")
}

/// A member cluster registered with the hub. Placement labels are the object's labels.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "federation.kubedirector.hpe.com",
    version = "v1alpha1",
    kind = "KubeDirectorMember",
    shortname = "kdmember",
    category = "kubedirector",
    status = "KubeDirectorMemberStatus",
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.kubernetesVersion"}"#,
    printcolumn = r#"{"name":"Clusters","type":"integer","jsonPath":".status.clustersPlaced"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorMemberSpec {
    /// Taints keep clusters off unless they tolerate them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Cordoned members keep what they run but receive no new placements.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,
    /// Seconds without a heartbeat before the member is `Available=Unknown` (default from hub config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub heartbeat_grace_seconds: Option<i64>,
    /// A request for spoke credentials (`kdfed member add` sets it and removes it once
    /// served): the hub issues a token for the member's identity and seals a kubeconfig
    /// with it to `publicKey`, so only the requester can open it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<MemberJoinRequest>,
}

/// A request for a member's spoke credentials.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberJoinRequest {
    /// The requester's X25519 public key (base64, 32 bytes), used once.
    #[schemars(length(min = 44, max = 44))]
    pub public_key: String,
    /// The hub API server URL the spoke's kubeconfig names.
    #[schemars(length(min = 1, max = 2048))]
    pub server: String,
    /// Lifetime of the issued token in seconds (the spoke renews it well before it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 600, max = 31_536_000))]
    pub token_seconds: Option<i64>,
}

/// The hub's answer to a [`MemberJoinRequest`]: a kubeconfig sealed to the request's key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberJoinGrant {
    /// The request's public key this answers.
    pub request_key: String,
    /// The hub's one-time X25519 public key (base64).
    pub hub_key: String,
    /// Nonce and AES-256-GCM ciphertext of the kubeconfig (base64).
    pub sealed: String,
    /// When the token was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_time: Option<Time>,
}

/// What the spoke reports and the hub concludes about a member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorMemberStatus {
    /// Kubernetes version of the member's API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Version of the spoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoke_version: Option<String>,
    /// Allocatable and requested resources over schedulable nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<MemberCapacity>,
    /// Storage classes of the member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_classes: Vec<String>,
    /// Local clusters by state.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clusters_by_state: BTreeMap<String, i64>,
    /// Local copies fenced because their placement moved away (`namespace/name`): scaled
    /// to zero, their PVCs kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fenced_clusters: Vec<String>,
    /// Clusters the hub placed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters_placed: Option<i64>,
    /// When the spoke last wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<Time>,
    /// The hub's answer to the pending join request, sealed to the requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<MemberJoinGrant>,
    /// `Available` (the hub, from heartbeats), `Registered` (the hub's registry: namespace,
    /// identity and RBAC in place). Each condition type has one owner (a map list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Resources of a member, summed over its schedulable nodes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberCapacity {
    /// Allocatable `cpu`, `memory`, `nvidia.com/gpu`.
    #[serde(default)]
    pub allocatable: BTreeMap<String, Quantity>,
    /// Requested by running pods.
    #[serde(default)]
    pub requested: BTreeMap<String, Quantity>,
    /// Schedulable nodes counted.
    #[serde(default)]
    pub nodes: i64,
}

/// Everything a member needs to run one placed cluster: written by the hub into the
/// member's namespace, read by that member's spoke.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "federation.kubedirector.hpe.com",
    version = "v1alpha1",
    kind = "KubeDirectorWork",
    namespaced,
    shortname = "kdwork",
    category = "kubedirector",
    status = "KubeDirectorWorkStatus",
    printcolumn = r#"{"name":"Origin","type":"string","jsonPath":".spec.origin.name"}"#,
    printcolumn = r#"{"name":"Epoch","type":"integer","jsonPath":".spec.placementEpoch"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.clusterStatus.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorWorkSpec {
    /// The user's `KubeDirectorCluster` on the hub.
    pub origin: WorkOrigin,
    /// Placement epoch; a spoke holding an older epoch for the same origin must stand down.
    pub placement_epoch: i64,
    /// Frozen snapshot of the app definition.
    pub app: WorkApp,
    /// The cluster spec to apply on the member.
    pub cluster: WorkCluster,
    /// The Secrets the cluster references (only those), without their data: their values,
    /// and the cluster's secret-key values, travel in the Secret `secretData` names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<WorkSecret>,
    /// The Secret in this member's namespace on the hub that holds the secret material of
    /// this Work (never a custom resource: Secrets are what etcd encryption and RBAC on
    /// Secrets cover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_data: Option<WorkSecretData>,
    /// The ConfigMaps the cluster connects to (`spec.connections.configmaps`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_maps: Vec<WorkConfigMap>,
}

/// Identity of the user's intent on the hub.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkOrigin {
    /// Namespace of the intent.
    pub namespace: String,
    /// Name of the intent.
    pub name: String,
    /// UID of the intent.
    pub uid: String,
    /// `metadata.generation` of the intent this Work reflects.
    pub generation: i64,
}

/// Frozen app definition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkApp {
    /// App name.
    pub name: String,
    /// App spec, defaulted.
    pub spec: KubeDirectorAppSpec,
}

/// The cluster to create on the member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkCluster {
    /// Namespace on the member.
    pub namespace: String,
    /// Name on the member.
    pub name: String,
    /// Labels to copy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The cluster spec.
    pub spec: KubeDirectorClusterSpec,
}

/// Where a Work's secret material is: a Secret beside the Work. Its `resourceVersion` is
/// part of the Work so that a changed value reaches the member as a new Work generation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkSecretData {
    /// Name of the Secret (the Work's name).
    pub name: String,
    /// `resourceVersion` of the Secret this Work was built with.
    pub resource_version: String,
}

/// Key in a Work's Secret: the referenced Secrets' data, JSON `{secret: {key: base64}}`.
pub const WORK_SECRET_DATA_KEY: &str = "secrets.json";
/// Key in a Work's Secret: the cluster's secret-key values, JSON `{role: {name: value}}`.
pub const WORK_SECRET_KEYS_KEY: &str = "secretKeys.json";

/// A Secret carried to the member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkSecret {
    /// Secret name.
    pub name: String,
    /// Secret type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Base64 data, as in a Secret. Empty in Works: the data travels in the Work's Secret
    /// (`secretData`); hub sync fills it in from there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Labels to copy (connected Secrets carry `kubedirector.hpe.com/secretType`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to copy (configmeta shows them for connected Secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A ConfigMap a cluster connects to, copied to the member.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkConfigMap {
    /// ConfigMap name.
    pub name: String,
    /// Labels to copy (connected ConfigMaps carry `kubedirector.hpe.com/cmType`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to copy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Text data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Binary data (base64).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
}

/// What the spoke reports back for a Work.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorWorkStatus {
    /// Work generation the spoke last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Placement epoch the spoke last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_epoch: Option<i64>,
    /// The director's status of the local copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_status: Option<KubeDirectorClusterStatus>,
    /// When the spoke last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_time: Option<Time>,
    /// `Applied` and `Ready` ([`WORK_CONDITION_APPLIED`], [`WORK_CONDITION_READY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Work condition: the spoke applied the Work's generation to its local copy.
pub const WORK_CONDITION_APPLIED: &str = "Applied";
/// Work condition: the local copy is configured (the director finished it).
pub const WORK_CONDITION_READY: &str = "Ready";

/// Label on the member's namespace and RBAC objects on the hub.
pub const LABEL_MEMBER: &str = "federation.kubedirector.hpe.com/member";
/// Label on local copies (cluster, app, Secrets) a spoke applies for a Work: the Work's name.
pub const LABEL_WORK: &str = "federation.kubedirector.hpe.com/work";
/// Annotation on local copies: the placement epoch they were applied from.
pub const ANNOTATION_EPOCH: &str = "federation.kubedirector.hpe.com/epoch";
/// Annotation on local copies: the origin `namespace/name` on the hub.
pub const ANNOTATION_ORIGIN: &str = "federation.kubedirector.hpe.com/origin";
/// Finalizer the hub puts on intents (user clusters) it placed.
pub const FINALIZER_INTENT: &str = "federation.kubedirector.hpe.com/placement";
/// Finalizer on Works, released by the spoke once the member-side cleanup is done.
pub const FINALIZER_WORK: &str = "federation.kubedirector.hpe.com/member-cleanup";
/// Annotation on a local copy whose placement moved away: the director scales it to zero
/// and keeps its PVCs; it never runs beside the new placement.
pub const ANNOTATION_FENCED: &str = "federation.kubedirector.hpe.com/fenced";
/// Annotation on a failover-enabled local copy whose spoke has gone too long without
/// renewing its heartbeat (the hub may be failing it over): the director scales it to zero
/// and keeps its PVCs until the spoke lifts it. Its value says why.
pub const ANNOTATION_SELF_FENCED: &str = "federation.kubedirector.hpe.com/self-fenced";
/// Annotation on a Work: a digest of what the hub wrote (the Work's spec, labels and
/// finalizers, and the secret material beside it). The hub writes nothing when a pass would
/// write the same again; the spoke skips re-applying and re-reading what it already applied
/// for the same digest and generation.
pub const ANNOTATION_DESIRED_DIGEST: &str = "federation.kubedirector.hpe.com/desired-digest";
/// Annotation an admin sets on an intent to let it go without the member's cleanup.
pub const ANNOTATION_ORPHAN: &str = "federation.kubedirector.hpe.com/orphan";
/// Name of the ServiceAccount that is a member's identity on the hub.
pub const MEMBER_SERVICE_ACCOUNT: &str = "kdfed-spoke";
/// Name of a member's heartbeat Lease in its namespace.
pub const MEMBER_LEASE: &str = "kdfed-spoke";
/// Name of the Lease on the member's own API server (in the spoke's namespace) where the
/// spoke records each heartbeat renewal the hub accepted; the fence watchdog reads it.
pub const SPOKE_HEARTBEAT_LEASE: &str = "kdfed-spoke-heartbeat";
/// Name of a member's cluster-scoped RBAC objects on the hub.
pub fn member_rbac_name(member: &str) -> String {
    format!("kdfed-member-{member}")
}

/// Name of the Work for an intent: `<namespace>.<name>` (unique within a member namespace).
pub fn work_name(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}
