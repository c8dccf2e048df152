//! `KubeDirectorConfig` (kubedirector.hpe.com/v1beta1): global director settings.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The name upstream requires for the one `KubeDirectorConfig` object.
pub const CONFIG_NAME: &str = "kd-global-config";

/// Global settings of the director, field-for-field compatible with upstream KubeDirector.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kubedirector.hpe.com",
    version = "v1beta1",
    kind = "KubeDirectorConfig",
    namespaced,
    shortname = "kdconfig",
    category = "kubedirector",
    status = "KubeDirectorConfigStatus",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorConfigSpec {
    /// Storage class for roles that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub default_storage_class_name: Option<String>,
    /// Service type for clusters that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^ClusterIP$|^NodePort$|^LoadBalancer$"))]
    pub default_service_type: Option<String>,
    /// Whether the platform runs systemd containers natively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_systemd_support: Option<bool>,
    /// Prefix every Secret mounted into clusters must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_secret_prefix: Option<String>,
    /// DNS domain base of cluster services (default `svc.cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_svc_domain_base: Option<String>,
    /// Naming scheme for clusters that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^UID$|^CrNameRole$"))]
    pub default_naming_scheme: Option<String>,
    /// AES key (hex) that encrypts `secretKeys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_encryption_key: Option<String>,
    /// Whether cluster status is backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_cluster_status: Option<bool>,
    /// Labels added to every member pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Annotations added to every member pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Labels added to every member Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_labels: Option<BTreeMap<String, String>>,
    /// Annotations added to every member Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_annotations: Option<BTreeMap<String, String>>,
}

/// Observed state of the global config.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeDirectorConfigStatus {
    /// Identifies the status generation.
    #[serde(default, rename = "generationUID", skip_serializing_if = "Option::is_none")]
    pub generation_uid: Option<String>,
    /// State of the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}
