//! The member registry: registering a member creates its namespace, its identity (a
//! ServiceAccount) and RBAC that lets that identity see only its own namespace and patch
//! only its own `KubeDirectorMember` status; it returns a kubeconfig for the spoke.
//! Removing a member revokes the identity at once.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kdfed_crds::federation::{
    KubeDirectorMember, LABEL_MEMBER, MEMBER_SERVICE_ACCOUNT, member_namespace, member_rbac_name,
};
use kdfed_crds::validate::is_dns_label;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

/// Field manager of registry writes.
pub const FIELD_MANAGER: &str = "kdfed-registry";
/// Default lifetime of a member's token; the spoke renews it well before it ends.
pub const DEFAULT_TOKEN_SECONDS: i64 = 24 * 3600;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The name or a label is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The API server refused a request.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The hub's API server gave no CA certificate to put into the kubeconfig.
    #[error("cannot find the hub's CA certificate (ConfigMap kube-root-ca.crt in {0})")]
    NoCa(String),
}

fn kube_err(action: &str) -> impl FnOnce(kube::Error) -> RegistryError + '_ {
    move |source| RegistryError::Kube { action: action.to_string(), source }
}

/// Registers (or re-registers) a member and returns a kubeconfig for its spoke.
pub async fn add_member(
    client: &Client,
    name: &str,
    labels: &BTreeMap<String, String>,
    server: &str,
    token_seconds: i64,
) -> Result<String, RegistryError> {
    if !is_dns_label(name) || name.len() > 40 {
        return Err(RegistryError::Invalid(format!(
            "member name {name:?} must be a DNS label of at most 40 characters (lowercase letters, digits, '-')"
        )));
    }
    let mut label_errors = kdfed_crds::validate::ValidationErrors::default();
    kdfed_crds::validate::label_errors(labels, "metadata.labels", &mut label_errors);
    if let Err(e) = label_errors.into_result() {
        return Err(RegistryError::Invalid(e.to_string()));
    }
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    let member = json!({
        "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember",
        "metadata": {"name": name, "labels": labels},
        "spec": {}
    });
    let member = members.patch(name, &pp, &Patch::Apply(member)).await.map_err(kube_err("apply KubeDirectorMember"))?;
    let owner = json!([{
        "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember",
        "name": name, "uid": member.meta().uid.clone().unwrap_or_default(), "blockOwnerDeletion": true
    }]);
    let ns = member_namespace(name);
    let member_label = json!({LABEL_MEMBER: name});
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": member_label, "ownerReferences": owner}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &pp, &Patch::Apply(namespace))
        .await
        .map_err(kube_err("apply namespace"))?;
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": MEMBER_SERVICE_ACCOUNT, "namespace": ns, "labels": member_label}});
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    accounts.patch(MEMBER_SERVICE_ACCOUNT, &pp, &Patch::Apply(sa)).await.map_err(kube_err("apply ServiceAccount"))?;

    // Namespaced permissions (its Works and their status, the Secrets they carry, its Lease,
    // renewing its own token, Events): the shared ClusterRole kdfed-member, bound in its
    // namespace only. Binding it needs `bind` on that one ClusterRole, not its permissions,
    // so a platform team without cluster-admin can register members (kdfed-fleet-admin).
    ensure_member_role(client).await?;
    let subject = json!([{"kind": "ServiceAccount", "name": MEMBER_SERVICE_ACCOUNT, "namespace": ns}]);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    // A roleRef cannot change: a binding from before (to the per-member Role) is replaced.
    if let Some(old) = bindings.get_opt("kdfed-spoke").await.map_err(kube_err("read RoleBinding"))?
        && old.role_ref.kind != "ClusterRole"
    {
        bindings.delete("kdfed-spoke", &DeleteParams::default()).await.map_err(kube_err("replace RoleBinding"))?;
        let _ = Api::<Role>::namespaced(client.clone(), &ns).delete("kdfed-spoke", &DeleteParams::default()).await;
    }
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "kdfed-spoke", "namespace": ns, "labels": member_label},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": MEMBER_CLUSTER_ROLE},
        "subjects": subject});
    bindings.patch("kdfed-spoke", &pp, &Patch::Apply(binding)).await.map_err(kube_err("apply RoleBinding"))?;

    // Cluster-scoped permissions: read and report on its own member object only.
    let rbac = member_rbac_name(name);
    let cluster_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
    "metadata": {"name": rbac, "labels": member_label, "ownerReferences": owner},
    "rules": [
        {"apiGroups": ["federation.kubedirector.hpe.com"], "resources": ["kubedirectormembers"], "resourceNames": [name], "verbs": ["get", "watch"]},
        {"apiGroups": ["federation.kubedirector.hpe.com"], "resources": ["kubedirectormembers/status"], "resourceNames": [name], "verbs": ["get", "update", "patch"]}
    ]});
    Api::<ClusterRole>::all(client.clone())
        .patch(&rbac, &pp, &Patch::Apply(cluster_role))
        .await
        .map_err(kube_err("apply ClusterRole"))?;
    let cluster_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": rbac, "labels": member_label, "ownerReferences": owner},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac},
        "subjects": subject});
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(&rbac, &pp, &Patch::Apply(cluster_binding))
        .await
        .map_err(kube_err("apply ClusterRoleBinding"))?;

    let token = issue_token(client, &ns, token_seconds).await?;
    let ca = hub_ca(client, &ns).await?;
    Ok(member_kubeconfig(name, server, &ca, &token))
}

/// The ClusterRole every member's identity is bound to in its own namespace (deploy/hub
/// ships it; [`member_role_rules`] are its rules).
pub const MEMBER_CLUSTER_ROLE: &str = "kdfed-member";

/// What a member's spoke may do in its own namespace on the hub: its Works (and their
/// status), the Secrets they carry, its heartbeat Lease, renewing its own token, Events.
pub fn member_role_rules() -> serde_json::Value {
    json!([
        {"apiGroups": ["federation.kubedirector.hpe.com"], "resources": ["kubedirectorworks"], "verbs": ["get", "list", "watch", "update", "patch"]},
        {"apiGroups": ["federation.kubedirector.hpe.com"], "resources": ["kubedirectorworks/status"], "verbs": ["get", "update", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": [MEMBER_SERVICE_ACCOUNT], "verbs": ["create"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
    ])
}

/// Makes sure the ClusterRole [`MEMBER_CLUSTER_ROLE`] exists: deploy/hub ships it; without
/// it, it is created here, which takes the permissions it grants (a cluster admin's).
async fn ensure_member_role(client: &Client) -> Result<(), RegistryError> {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    if roles.get_opt(MEMBER_CLUSTER_ROLE).await.map_err(kube_err("read ClusterRole kdfed-member"))?.is_some() {
        return Ok(());
    }
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": MEMBER_CLUSTER_ROLE, "labels": {"app.kubernetes.io/part-of": "kdfed"}},
        "rules": member_role_rules()});
    match roles.patch(MEMBER_CLUSTER_ROLE, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(role)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 403 => Err(RegistryError::Invalid(format!(
            "the ClusterRole {MEMBER_CLUSTER_ROLE} that member identities are bound to is missing, and these credentials may not create it: apply deploy/hub (it ships the role) or register once as a cluster admin"
        ))),
        Err(e) => Err(kube_err("apply ClusterRole kdfed-member")(e)),
    }
}

/// A new token for a member's ServiceAccount, valid for `seconds`.
pub async fn issue_token(client: &Client, namespace: &str, seconds: i64) -> Result<String, RegistryError> {
    kdfed_common::tokens::issue(client, namespace, MEMBER_SERVICE_ACCOUNT, seconds)
        .await
        .map_err(|e| RegistryError::Invalid(e.to_string()))
}

async fn hub_ca(client: &Client, namespace: &str) -> Result<String, RegistryError> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    // The controller manager publishes the CA into every namespace shortly after creation.
    for _ in 0..100 {
        if let Some(cm) = maps.get_opt("kube-root-ca.crt").await.map_err(kube_err("read kube-root-ca.crt"))?
            && let Some(ca) = cm.data.and_then(|d| d.get("ca.crt").cloned())
        {
            return Ok(ca);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(RegistryError::NoCa(namespace.to_string()))
}

/// The kubeconfig a spoke uses to reach the hub as its member identity.
pub fn member_kubeconfig(member: &str, server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kdfed-hub\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: kdfed-member-{member}\n  context:\n    cluster: kdfed-hub\n    namespace: {ns}\n    user: kdfed-member-{member}\ncurrent-context: kdfed-member-{member}\nusers:\n- name: kdfed-member-{member}\n  user:\n    token: {token}\n",
        ns = member_namespace(member)
    )
}

/// Removes a member: its identity and RBAC go at once (tokens stop working), then its
/// namespace and Works. Clusters placed there keep their intents' finalizers until cleaned.
pub async fn remove_member(client: &Client, name: &str) -> Result<(), RegistryError> {
    let dp = DeleteParams::background();
    let ns = member_namespace(name);
    let rbac = member_rbac_name(name);
    let missing_ok = |r: Result<(), kube::Error>, action: &str| match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map_err(kube_err(action)),
    };
    missing_ok(
        Api::<ServiceAccount>::namespaced(client.clone(), &ns).delete(MEMBER_SERVICE_ACCOUNT, &dp).await.map(|_| ()),
        "delete ServiceAccount",
    )?;
    missing_ok(
        Api::<ClusterRoleBinding>::all(client.clone()).delete(&rbac, &dp).await.map(|_| ()),
        "delete ClusterRoleBinding",
    )?;
    missing_ok(Api::<ClusterRole>::all(client.clone()).delete(&rbac, &dp).await.map(|_| ()), "delete ClusterRole")?;
    missing_ok(
        Api::<RoleBinding>::namespaced(client.clone(), &ns).delete("kdfed-spoke", &dp).await.map(|_| ()),
        "delete RoleBinding",
    )?;
    missing_ok(
        Api::<KubeDirectorMember>::all(client.clone()).delete(name, &dp).await.map(|_| ()),
        "delete KubeDirectorMember",
    )?;
    missing_ok(Api::<Namespace>::all(client.clone()).delete(&ns, &dp).await.map(|_| ()), "delete namespace")?;
    Ok(())
}

/// Cordons a member (`spec.unschedulable`: it keeps what it runs and receives no new
/// placements) or lifts that (`cordoned = false`).
pub async fn set_cordoned(client: &Client, name: &str, cordoned: bool) -> Result<(), RegistryError> {
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    let patch = json!({"spec": {"unschedulable": if cordoned { json!(true) } else { serde_json::Value::Null }}});
    members.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.map_err(kube_err("patch member"))?;
    Ok(())
}

/// Members with their labels and status, for `kdfed member list`.
pub async fn list_members(client: &Client) -> Result<Vec<KubeDirectorMember>, RegistryError> {
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    let mut list = members.list(&Default::default()).await.map_err(kube_err("list members"))?.items;
    list.sort_by_key(ResourceExt::name_any);
    Ok(list)
}
