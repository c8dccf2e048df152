//! Identities with exactly the RBAC of a deploy base: the Namespace, ServiceAccount and
//! (Cluster)Roles/(Cluster)RoleBindings that `kubectl kustomize deploy/<base>` renders are
//! applied to a test-bed API server, the ServiceAccount gets a token (TokenRequest API), and
//! a kubeconfig with that token lets a binary run as the deployed workload would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// Field manager of what the test bed applies on behalf of a platform team.
pub const FIELD_MANAGER: &str = "kdfed-testbed";

/// Kinds that make up an identity, its permissions and the admission policies that fence
/// them; everything else in a base (CRDs, Deployments, Services, webhook configurations) is
/// left out.
pub const RBAC_KINDS: [&str; 8] = [
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// kubectl from `tests/testbed/install.sh` (`KDFED_KUBECTL`).
pub fn kubectl() -> Result<PathBuf> {
    let env_file = crate::binaries::cache_dir().join("bin").join("env");
    let from_file = || {
        std::fs::read_to_string(&env_file)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("KDFED_KUBECTL=").map(|v| v.trim().to_string()))
    };
    let path = std::env::var("KDFED_KUBECTL").ok().or_else(from_file).map(PathBuf::from).with_context(|| {
        format!("KDFED_KUBECTL is not set and {} does not name it; run tests/testbed/install.sh", env_file.display())
    })?;
    if !path.exists() {
        bail!("kubectl {} does not exist; run tests/testbed/install.sh", path.display());
    }
    Ok(path)
}

/// Every object of a kustomize base, as `kubectl kustomize` renders it.
pub fn render(base: &Path) -> Result<Vec<Value>> {
    let out = Command::new(kubectl()?)
        .arg("kustomize")
        .arg(base)
        .output()
        .with_context(|| format!("run kubectl kustomize {}", base.display()))?;
    if !out.status.success() {
        bail!("kubectl kustomize {}: {}", base.display(), String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout).context("kustomize output is not UTF-8")?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).context("parse kustomize output")?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

/// The identity objects of a base (see [`RBAC_KINDS`]), Namespaces first.
pub fn rbac_objects(base: &Path) -> Result<Vec<Value>> {
    let mut objects: Vec<Value> =
        render(base)?.into_iter().filter(|o| o["kind"].as_str().is_some_and(|k| RBAC_KINDS.contains(&k))).collect();
    objects.sort_by_key(|o| RBAC_KINDS.iter().position(|k| o["kind"] == *k));
    Ok(objects)
}

/// A ServiceAccount, `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for ServiceAccountRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The ServiceAccount among `objects` named `name`, or, without a name, the only one (a
/// base with several workload identities, as deploy/spoke with its fence watchdog, needs
/// the name).
pub fn service_account(objects: &[Value], name: Option<&str>) -> Result<ServiceAccountRef> {
    let accounts: Vec<ServiceAccountRef> = objects
        .iter()
        .filter(|o| o["kind"] == "ServiceAccount")
        .map(|o| ServiceAccountRef {
            namespace: o["metadata"]["namespace"].as_str().unwrap_or("default").to_string(),
            name: o["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        })
        .filter(|a| name.is_none_or(|n| a.name == n))
        .collect();
    match (accounts.as_slice(), name) {
        ([one], _) => Ok(one.clone()),
        ([], Some(name)) => bail!("no ServiceAccount {name} in the base"),
        (other, _) => bail!(
            "expected exactly one ServiceAccount, found {}: {}; name the one to use",
            other.len(),
            other.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn api_resource(object: &Value) -> Result<(ApiResource, bool)> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, plural, namespaced) = match kind {
        "Namespace" => ("", "namespaces", false),
        "ServiceAccount" => ("", "serviceaccounts", true),
        "ClusterRole" => ("rbac.authorization.k8s.io", "clusterroles", false),
        "ClusterRoleBinding" => ("rbac.authorization.k8s.io", "clusterrolebindings", false),
        "Role" => ("rbac.authorization.k8s.io", "roles", true),
        "RoleBinding" => ("rbac.authorization.k8s.io", "rolebindings", true),
        "ValidatingAdmissionPolicy" => ("admissionregistration.k8s.io", "validatingadmissionpolicies", false),
        "ValidatingAdmissionPolicyBinding" => {
            ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", false)
        }
        other => bail!("not an identity kind: {other}"),
    };
    let gvk = kube::api::GroupVersionKind::gvk(group, "v1", kind);
    Ok((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

/// Applies `objects` (server-side, as a platform team's `kubectl apply --server-side`).
pub async fn apply(admin: &Client, objects: &[Value]) -> Result<()> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    for object in objects {
        let (resource, namespaced) = api_resource(object)?;
        let obj: DynamicObject = serde_json::from_value(object.clone()).context("identity object")?;
        let api: Api<DynamicObject> = match (namespaced, obj.namespace()) {
            (true, Some(ns)) => Api::namespaced_with(admin.clone(), &ns, &resource),
            (true, None) => Api::namespaced_with(admin.clone(), "default", &resource),
            (false, _) => Api::all_with(admin.clone(), &resource),
        };
        api.patch(&obj.name_any(), &pp, &Patch::Apply(object))
            .await
            .with_context(|| format!("apply {} {}", resource.kind, obj.name_any()))?;
    }
    Ok(())
}

/// Server and CA file of an admin kubeconfig written by the test bed.
fn server_and_ca(admin_kubeconfig: &Path) -> Result<(String, PathBuf)> {
    let kc = Kubeconfig::read_from(admin_kubeconfig).with_context(|| format!("read {}", admin_kubeconfig.display()))?;
    let cluster = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .with_context(|| format!("{} names no cluster", admin_kubeconfig.display()))?;
    let server = cluster.server.with_context(|| format!("{} names no server", admin_kubeconfig.display()))?;
    let ca =
        cluster.certificate_authority.with_context(|| format!("{} names no CA file", admin_kubeconfig.display()))?;
    Ok((server, PathBuf::from(ca)))
}

/// A kubeconfig that authenticates with a ServiceAccount token.
pub fn token_kubeconfig(server: &str, ca: &Path, account: &ServiceAccountRef, token: &str) -> String {
    let user = format!("{}-{}", account.namespace, account.name);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\ncontexts:\n- name: {user}\n  context:\n    cluster: testbed\n    namespace: {ns}\n    user: {user}\ncurrent-context: {user}\nusers:\n- name: {user}\n  user:\n    token: {token}\n",
        ca = ca.display(),
        ns = account.namespace,
    )
}

/// The (Cluster)Roles among `objects` that a binding among `objects` grants to `account`.
fn bound_roles<'a>(objects: &'a [Value], account: &ServiceAccountRef) -> Vec<&'a Value> {
    let granted: Vec<(&str, &str)> = objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
        .filter(|b| {
            b["subjects"].as_array().into_iter().flatten().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == account.name.as_str()
                    && s["namespace"] == account.namespace.as_str()
            })
        })
        .filter_map(|b| Some((b["roleRef"]["kind"].as_str()?, b["roleRef"]["name"].as_str()?)))
        .collect();
    objects
        .iter()
        .filter(|o| {
            let (kind, name) = (o["kind"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or(""));
            granted.contains(&(kind, name))
        })
        .collect()
}

/// Waits until the RBAC authorizer grants `client` the first verb of every rule of
/// `roles`, so that a binary started next does not race the RBAC caches of the API server.
async fn wait_authorized(client: &Client, roles: &[&Value]) -> Result<()> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut checks = Vec::new();
    for role in roles {
        let namespace = role["metadata"]["namespace"].as_str();
        for rule in role["rules"].as_array().into_iter().flatten() {
            let first = |key: &str| rule[key].as_array().and_then(|a| a.first()).and_then(Value::as_str);
            let (Some(verb), Some(group), Some(resource)) = (first("verbs"), first("apiGroups"), first("resources"))
            else {
                continue;
            };
            let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
            checks.push(json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {
                    "verb": verb, "group": group, "resource": resource, "subresource": subresource,
                    "namespace": namespace.unwrap_or(""), "name": first("resourceNames").unwrap_or("")
                }}
            }));
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for check in checks {
        let review: SelfSubjectAccessReview = serde_json::from_value(check.clone())?;
        loop {
            let answer = reviews.create(&PostParams::default(), &review).await.context("SelfSubjectAccessReview")?;
            if answer.status.is_some_and(|s| s.allowed) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("not authorized after 30s: {}", check["spec"]["resourceAttributes"]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Applies the identity objects of the kustomize `base` to the cluster of
/// `admin_kubeconfig`, issues a token valid for `token_seconds` to the base's
/// ServiceAccount and writes a kubeconfig for it to `out`; returns the ServiceAccount.
pub async fn deploy_identity(
    admin_kubeconfig: &Path,
    base: &Path,
    token_seconds: i64,
    out: &Path,
) -> Result<ServiceAccountRef> {
    deploy_identity_as(admin_kubeconfig, base, None, token_seconds, out).await
}

/// As [`deploy_identity`], for the ServiceAccount `account` of the base (when it has
/// several, as deploy/spoke: `kdfed-spoke` and `kdfed-fence-watchdog`).
pub async fn deploy_identity_as(
    admin_kubeconfig: &Path,
    base: &Path,
    account: Option<&str>,
    token_seconds: i64,
    out: &Path,
) -> Result<ServiceAccountRef> {
    let objects = rbac_objects(base)?;
    let account = service_account(&objects, account)?;
    let admin = crate::client_for(admin_kubeconfig).await?;
    apply(&admin, &objects).await?;
    write_identity(&admin, admin_kubeconfig, &account, token_seconds, out, &bound_roles(&objects, &account)).await?;
    Ok(account)
}

/// Issues `account` a token valid for `token_seconds`, writes a kubeconfig with it to `out`
/// and waits until the API server grants it `roles` (see [`wait_authorized`]).
async fn write_identity(
    admin: &Client,
    admin_kubeconfig: &Path,
    account: &ServiceAccountRef,
    token_seconds: i64,
    out: &Path,
    roles: &[&Value],
) -> Result<()> {
    let token = kdfed_common::tokens::issue(admin, &account.namespace, &account.name, token_seconds).await?;
    let (server, ca) = server_and_ca(admin_kubeconfig)?;
    std::fs::write(out, token_kubeconfig(&server, &ca, account, &token))
        .with_context(|| format!("write {}", out.display()))?;
    wait_authorized(&crate::client_for(out).await?, roles).await
}

/// A person's identity for tests: the ServiceAccount `account` (created if missing) bound
/// to the ClusterRole `cluster_role` (which must exist, e.g. from a deploy base), with a
/// token valid for `token_seconds`, written as a kubeconfig to `out`.
pub async fn cluster_role_identity(
    admin_kubeconfig: &Path,
    account: &ServiceAccountRef,
    cluster_role: &str,
    token_seconds: i64,
    out: &Path,
) -> Result<()> {
    let admin = crate::client_for(admin_kubeconfig).await?;
    let binding = format!("{}-{}", account.name, cluster_role);
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": account.namespace}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": account.name, "namespace": account.namespace}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": account.name, "namespace": account.namespace}]}),
    ];
    apply(&admin, &objects).await?;
    let role = Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin.clone())
        .get(cluster_role)
        .await
        .with_context(|| format!("ClusterRole {cluster_role}"))?;
    let role = serde_json::to_value(role)?;
    write_identity(&admin, admin_kubeconfig, account, token_seconds, out, &[&role]).await
}

/// The repository's `deploy/<name>` base.
pub fn deploy_base(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("deploy").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_with_several_service_accounts_needs_the_name_of_the_one_to_use() {
        let sa =
            |name: &str| json!({"kind": "ServiceAccount", "metadata": {"name": name, "namespace": "kdfed-system"}});
        let one = [sa("kdfed-hub"), json!({"kind": "ClusterRole", "metadata": {"name": "x"}})];
        assert_eq!(service_account(&one, None).expect("the only one").to_string(), "kdfed-system/kdfed-hub");
        let two = [sa("kdfed-spoke"), sa("kdfed-fence-watchdog")];
        let err = service_account(&two, None).expect_err("ambiguous").to_string();
        assert!(err.contains("found 2") && err.contains("kdfed-system/kdfed-fence-watchdog"), "{err}");
        let chosen = service_account(&two, Some("kdfed-fence-watchdog")).expect("named");
        assert_eq!(chosen.name, "kdfed-fence-watchdog");
        let missing = service_account(&two, Some("other")).expect_err("not there").to_string();
        assert_eq!(missing, "no ServiceAccount other in the base");
    }
}
