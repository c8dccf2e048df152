//! The member registry. The platform team only creates, labels and deletes
//! `KubeDirectorMember` objects ([`add_member`], [`remove_member`]: `kdfed member add` and
//! `remove`, with deploy/hub's `kdfed-fleet-admin` role, which holds no power over
//! namespaces, ServiceAccounts, tokens or RBAC). The hub's registry controller ([`run`])
//! does the rest with its own identity, fenced to kdfed's namespaces: each member's
//! namespace `kdfed-member-<name>`, its identity (ServiceAccount `kdfed-spoke`), the RBAC
//! that lets that identity see only its own namespace and report only its own status, and
//! the spoke's first token, sealed to the requester's one-time key (see
//! [`kdfed_common::join`]). Deleting a member revokes its identity at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kdfed_common::ApiError;
use kdfed_common::conditions::{condition, set_condition};
use kdfed_common::events::Recorder;
use kdfed_common::join::JoinKey;
use kdfed_crds::KubeDirectorCluster;
use kdfed_crds::federation::{
    KubeDirectorMember, LABEL_MEMBER, MEMBER_SERVICE_ACCOUNT, MemberJoinGrant, member_namespace, member_rbac_name,
};
use kdfed_crds::validate::is_dns_label;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

/// Field manager of the hub's registry writes.
pub const FIELD_MANAGER: &str = "kdfed-registry";
/// Field manager of the platform team's writes (`kdfed member add`).
pub const PLATFORM_FIELD_MANAGER: &str = "kdfed-member-add";
/// Finalizer the registry keeps on members until their identity is revoked.
pub const FINALIZER_REGISTRY: &str = "federation.kubedirector.hpe.com/registry";
/// Default lifetime of a member's token; the spoke renews it well before it ends.
pub const DEFAULT_TOKEN_SECONDS: i64 = 24 * 3600;
/// How long `kdfed member add`/`remove` wait for the hub.
pub const HUB_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The name or a label is not acceptable, or the hub refused.
    #[error("{0}")]
    Invalid(String),
    /// The API server refused a request (shown with the API server's message alone: the
    /// CLI prints the whole chain, and kube's error repeats it).
    #[error("{action}: {}", brief(error))]
    Kube {
        /// What was being done.
        action: String,
        /// The API error.
        error: kube::Error,
    },
    /// Clusters still run on a member that is to be removed.
    #[error(
        "member {member} still runs {} cluster(s): {}; removing it leaves them running there, unmanaged, with their data (their intents wait for an explicit decision); pass --force to remove it anyway",
        clusters.len(), clusters.join(", ")
    )]
    StillRunning {
        /// The member.
        member: String,
        /// `namespace/name` of the clusters placed there.
        clusters: Vec<String>,
    },
    /// The hub did not answer in time.
    #[error("{0}")]
    Timeout(String),
}

fn kube_err(action: &str) -> impl FnOnce(kube::Error) -> RegistryError + '_ {
    move |error| RegistryError::Kube { action: action.to_string(), error }
}

/// The API server's own message for API errors, else the error.
fn brief(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(e) => e.message.clone(),
        other => other.to_string(),
    }
}

impl From<ApiError> for RegistryError {
    fn from(e: ApiError) -> Self {
        RegistryError::Kube { action: e.action, error: e.source }
    }
}

/// Checks a member's name and labels (the rules `kdfed member add` and the hub's admission
/// apply).
pub fn validate_member(name: &str, labels: &BTreeMap<String, String>) -> Result<(), RegistryError> {
    if !is_dns_label(name) || name.len() > 40 {
        return Err(RegistryError::Invalid(format!(
            "metadata.name: member name {name:?} must be a DNS label of at most 40 characters (lowercase letters, digits, '-')"
        )));
    }
    let mut label_errors = kdfed_crds::validate::ValidationErrors::default();
    kdfed_crds::validate::label_errors(labels, "metadata.labels", &mut label_errors);
    label_errors.into_result().map_err(|e| RegistryError::Invalid(e.to_string()))
}

/// Registers (or re-registers) a member as the platform team and returns a kubeconfig for
/// its spoke: applies the member with a one-time join key, waits for the hub to answer
/// with credentials sealed to that key, opens them and withdraws the request.
pub async fn add_member(
    client: &Client,
    name: &str,
    labels: &BTreeMap<String, String>,
    server: &str,
    token_seconds: i64,
) -> Result<String, RegistryError> {
    validate_member(name, labels)?;
    let key = JoinKey::generate().map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    let pp = PatchParams::apply(PLATFORM_FIELD_MANAGER).force();
    let request = json!({
        "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember",
        "metadata": {"name": name, "labels": labels},
        "spec": {"join": {"publicKey": key.public_key(), "server": server,
                          "tokenSeconds": token_seconds.max(kdfed_common::tokens::MIN_TOKEN_SECONDS)}}
    });
    members.patch(name, &pp, &Patch::Apply(request)).await.map_err(kube_err("apply KubeDirectorMember"))?;
    let deadline = tokio::time::Instant::now() + HUB_ANSWER_TIMEOUT;
    let grant = loop {
        let member = members.get(name).await.map_err(kube_err("read KubeDirectorMember"))?;
        let status = member.status.clone().unwrap_or_default();
        if let Some(grant) = status.join.filter(|g| g.request_key == key.public_key()) {
            break grant;
        }
        if let Some(c) = condition(&status.conditions, "Registered")
            && c.status == "False"
            && c.observed_generation == member.metadata.generation
        {
            return Err(RegistryError::Invalid(format!("the hub cannot register member {name}: {}", c.message)));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(RegistryError::Timeout(format!(
                "member {name} is recorded, but the hub issued no credentials within {}s: is kdfed-hub running? Run `kdfed member add {name}` again once it is",
                HUB_ANSWER_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let kubeconfig = key
        .open(name, &grant.hub_key, &grant.sealed)
        .map_err(|e| RegistryError::Invalid(format!("the hub's answer for member {name}: {e}")))?;
    // Withdraw the request: the hub then drops its sealed answer from the status. (A merge
    // patch: an apply without the field would leave `spec` null.)
    let withdraw = Patch::Merge(json!({"spec": {"join": null}}));
    members.patch(name, &PatchParams::default(), &withdraw).await.map_err(kube_err("withdraw the join request"))?;
    String::from_utf8(kubeconfig).map_err(|_| RegistryError::Invalid("the hub's kubeconfig is not UTF-8".into()))
}

/// The clusters (`namespace/name`) the hub placed on `member`.
pub async fn clusters_on(client: &Client, member: &str) -> Result<Vec<String>, RegistryError> {
    let clusters: Api<KubeDirectorCluster> = Api::all(client.clone());
    let mut on: Vec<String> = clusters
        .list(&Default::default())
        .await
        .map_err(kube_err("list clusters"))?
        .items
        .into_iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.placement.as_ref()).is_some_and(|p| p.member == member))
        .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
        .collect();
    on.sort();
    Ok(on)
}

/// Removes a member as the platform team: refused while clusters run there unless `force`;
/// then deletes the member and waits until the hub has revoked its identity.
pub async fn remove_member(client: &Client, name: &str, force: bool) -> Result<Vec<String>, RegistryError> {
    let running = clusters_on(client, name).await?;
    if !running.is_empty() && !force {
        return Err(RegistryError::StillRunning { member: name.to_string(), clusters: running });
    }
    let members: Api<KubeDirectorMember> = Api::all(client.clone());
    match members.delete(name, &DeleteParams::background()).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            return Err(RegistryError::Invalid(format!("member {name} is not registered")));
        }
        other => other.map_err(kube_err("delete KubeDirectorMember"))?,
    };
    let deadline = tokio::time::Instant::now() + HUB_ANSWER_TIMEOUT;
    while members.get_opt(name).await.map_err(kube_err("read KubeDirectorMember"))?.is_some() {
        if tokio::time::Instant::now() > deadline {
            return Err(RegistryError::Timeout(format!(
                "member {name} is being removed, but the hub has not revoked its identity within {}s: is kdfed-hub running?",
                HUB_ANSWER_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(running)
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

/// A new token for a member's ServiceAccount, valid for `seconds`.
pub async fn issue_token(client: &Client, namespace: &str, seconds: i64) -> Result<String, RegistryError> {
    kdfed_common::tokens::issue(client, namespace, MEMBER_SERVICE_ACCOUNT, seconds)
        .await
        .map_err(|e| RegistryError::Invalid(e.to_string()))
}

/// The kubeconfig a spoke uses to reach the hub as its member identity.
pub fn member_kubeconfig(member: &str, server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kdfed-hub\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: kdfed-member-{member}\n  context:\n    cluster: kdfed-hub\n    namespace: {ns}\n    user: kdfed-member-{member}\ncurrent-context: kdfed-member-{member}\nusers:\n- name: kdfed-member-{member}\n  user:\n    token: {token}\n",
        ns = member_namespace(member)
    )
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

// ---- the hub's registry controller ----

/// What the registry controller works with.
pub struct Registry {
    client: Client,
    recorder: Recorder,
    /// Consecutive failures per member, for exponential back-off.
    failures: Mutex<HashMap<String, u32>>,
    /// Members fully served (uid, generation) and when: the spokes' and the hub's own
    /// status writes wake the controller, and a member whose spec did not change since it
    /// was served needs nothing until the periodic drift repair.
    served: Mutex<HashMap<String, (String, i64, std::time::Instant)>>,
}

/// How often a served member is provisioned again, repairing hand-made drift.
pub const DRIFT_REPAIR: Duration = Duration::from_secs(600);

impl Registry {
    /// When `member` (as cached) was last served, if its spec is unchanged since.
    fn served_at(&self, member: &KubeDirectorMember) -> Option<std::time::Instant> {
        let served = self.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (uid, generation, at) = served.get(&member.name_any())?;
        (Some(uid) == member.metadata.uid.as_ref() && Some(*generation) == member.metadata.generation).then_some(*at)
    }
}

/// Runs the registry controller until the process ends (the hub runs it while leader).
pub async fn run(client: Client) {
    let ctx = Arc::new(Registry {
        recorder: Recorder::new(client.clone(), "kdfed-hub"),
        client: client.clone(),
        failures: Mutex::new(HashMap::new()),
        served: Mutex::new(HashMap::new()),
    });
    let members: Api<KubeDirectorMember> = Api::all(client);
    Controller::new(members, watcher::Config::default())
        .trigger_backoff(kdfed_common::reconcile::TriggerBackoff::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("registry: {e}");
            }
        })
        .await;
}

/// Back-off after `failures` consecutive failures: 2 s doubling to 5 min.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(2u64.saturating_mul(1 << failures.min(8)).min(300))
}

fn error_policy(member: Arc<KubeDirectorMember>, error: &RegistryError, ctx: Arc<Registry>) -> Action {
    let name = member.name_any();
    let n = {
        let mut failures = ctx.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(name.clone()).or_default();
        *n = n.saturating_add(1);
        *n
    };
    warn!(member = %name, failures = n, "registry: {error}");
    Action::requeue(backoff(n - 1))
}

async fn reconcile(cached: Arc<KubeDirectorMember>, ctx: Arc<Registry>) -> Result<Action, RegistryError> {
    let members: Api<KubeDirectorMember> = Api::all(ctx.client.clone());
    let name = cached.name_any();
    if cached.metadata.deletion_timestamp.is_none()
        && let Some(at) = ctx.served_at(&cached)
        && at.elapsed() < DRIFT_REPAIR
    {
        return Ok(Action::requeue(DRIFT_REPAIR - at.elapsed()));
    }
    let Some(member) = members.get_opt(&name).await.map_err(kube_err("read member"))? else {
        return Ok(Action::await_change());
    };
    if member.metadata.deletion_timestamp.is_some() {
        if member.finalizers().iter().any(|f| f == FINALIZER_REGISTRY) {
            revoke(&ctx.client, &name).await?;
            kdfed_common::reconcile::remove_finalizer(&members, &member, FINALIZER_REGISTRY).await?;
            ctx.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&name);
            info!(member = %name, "member removed: identity revoked, namespace deleted");
        }
        return Ok(Action::await_change());
    }
    if kdfed_common::reconcile::add_finalizer(&members, &member, FINALIZER_REGISTRY).await? {
        return Ok(Action::requeue(Duration::from_millis(50)));
    }
    let outcome = match provision(&ctx.client, &member).await {
        Ok(()) => answer_join(&ctx.client, &member).await,
        Err(e) => Err(e),
    };
    let old = member.status.clone().unwrap_or_default();
    let generation = member.metadata.generation;
    let (grant, conditions, failed) = match outcome {
        Ok(grant) => {
            let message = format!("namespace {} and identity in place", member_namespace(&name));
            (grant, set_condition(&old.conditions, "Registered", "True", "Registered", &message, generation), None)
        }
        Err(e) => {
            let message = e.to_string();
            let c = set_condition(&old.conditions, "Registered", "False", "RegistrationFailed", &message, generation);
            (old.join.clone(), c, Some(message))
        }
    };
    let registered: Vec<&Condition> = conditions.iter().filter(|c| c.type_ == "Registered").collect();
    let before: Vec<&Condition> = old.conditions.iter().filter(|c| c.type_ == "Registered").collect();
    if grant != old.join || registered != before {
        let mut status = json!({"conditions": registered});
        if let Some(g) = &grant {
            status["join"] = json!(g);
        }
        let patch =
            json!({"apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember", "status": status});
        members
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(patch))
            .await
            .map_err(kube_err("write member status"))?;
        if let Some(message) = &failed {
            ctx.recorder.publish(&member, true, "RegistrationFailed", message).await;
        } else if grant.is_some() && grant != old.join {
            ctx.recorder
                .publish(&member, false, "CredentialsIssued", "spoke credentials issued to the join request")
                .await;
        }
    }
    if let Some(message) = failed {
        return Err(RegistryError::Invalid(message));
    }
    ctx.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&name);
    if let (Some(uid), Some(generation)) = (member.metadata.uid.clone(), generation) {
        let mut served = ctx.served.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        served.insert(name, (uid, generation, std::time::Instant::now()));
    }
    // Drift (an identity object deleted by hand) is repaired on the next periodic pass.
    Ok(Action::requeue(DRIFT_REPAIR))
}

/// The member's namespace, identity and RBAC, applied (idempotent).
async fn provision(client: &Client, member: &KubeDirectorMember) -> Result<(), RegistryError> {
    let name = member.name_any();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let owner = json!([{
        "apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember",
        "name": name, "uid": member.meta().uid.clone().unwrap_or_default()
    }]);
    let ns = member_namespace(&name);
    let member_label = json!({LABEL_MEMBER: name});
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": member_label, "ownerReferences": owner}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &pp, &Patch::Apply(namespace))
        .await
        .map_err(kube_err("apply namespace"))?;
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": MEMBER_SERVICE_ACCOUNT, "namespace": ns, "labels": member_label}});
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .patch(MEMBER_SERVICE_ACCOUNT, &pp, &Patch::Apply(sa))
        .await
        .map_err(kube_err("apply ServiceAccount"))?;

    // Namespaced permissions: the shared ClusterRole kdfed-member, bound in its namespace
    // only (the hub holds `bind` on that one role, not its permissions).
    let roles: Api<ClusterRole> = Api::all(client.clone());
    if roles.get_opt(MEMBER_CLUSTER_ROLE).await.map_err(kube_err("read ClusterRole kdfed-member"))?.is_none() {
        return Err(RegistryError::Invalid(format!(
            "the ClusterRole {MEMBER_CLUSTER_ROLE} that member identities are bound to is missing: apply deploy/hub (it ships the role)"
        )));
    }
    let subject = json!([{"kind": "ServiceAccount", "name": MEMBER_SERVICE_ACCOUNT, "namespace": ns}]);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    // A roleRef cannot change: a binding of an earlier kdfed (to a per-member Role) is replaced.
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
    let rbac = member_rbac_name(&name);
    let cluster_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
    "metadata": {"name": rbac, "labels": member_label, "ownerReferences": owner},
    "rules": [
        {"apiGroups": ["federation.kubedirector.hpe.com"], "resources": ["kubedirectormembers"], "resourceNames": [name], "verbs": ["get", "watch"]},
        {"apiGroups": ["federation.kubedirector.hpe.com"], "resources": ["kubedirectormembers/status"], "resourceNames": [name], "verbs": ["get", "update", "patch"]}
    ]});
    roles.patch(&rbac, &pp, &Patch::Apply(cluster_role)).await.map_err(kube_err("apply ClusterRole"))?;
    let cluster_binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": rbac, "labels": member_label, "ownerReferences": owner},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac},
        "subjects": subject});
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(&rbac, &pp, &Patch::Apply(cluster_binding))
        .await
        .map_err(kube_err("apply ClusterRoleBinding"))?;
    Ok(())
}

/// The answer to the member's pending join request: the existing one when it answers the
/// same key, a new token sealed to the key otherwise, nothing without a request.
async fn answer_join(client: &Client, member: &KubeDirectorMember) -> Result<Option<MemberJoinGrant>, RegistryError> {
    let Some(request) = &member.spec.join else {
        return Ok(None);
    };
    let old = member.status.as_ref().and_then(|s| s.join.clone());
    if let Some(grant) = old.filter(|g| g.request_key == request.public_key) {
        return Ok(Some(grant));
    }
    kdfed_common::join::validate_public_key(&request.public_key)
        .map_err(|e| RegistryError::Invalid(format!("spec.join.publicKey: {e}")))?;
    let name = member.name_any();
    let ns = member_namespace(&name);
    let seconds = request.token_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
    let token = issue_token(client, &ns, seconds).await?;
    let ca = hub_ca(client, &ns).await?;
    let kubeconfig = member_kubeconfig(&name, &request.server, &ca, &token);
    let sealed = kdfed_common::join::seal(&name, &request.public_key, kubeconfig.as_bytes())
        .map_err(|e| RegistryError::Invalid(format!("spec.join.publicKey: {e}")))?;
    info!(member = %name, "spoke credentials issued to a join request");
    Ok(Some(MemberJoinGrant {
        request_key: request.public_key.clone(),
        hub_key: sealed.hub_key,
        sealed: sealed.sealed,
        issue_time: Some(Time(jiff::Timestamp::now())),
    }))
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(RegistryError::Invalid(format!(
        "cannot find the hub's CA certificate (ConfigMap kube-root-ca.crt in {namespace})"
    )))
}

/// Revokes a member: its identity first (its tokens stop working at once), then its RBAC
/// and namespace with its Works.
async fn revoke(client: &Client, name: &str) -> Result<(), RegistryError> {
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
    missing_ok(Api::<Namespace>::all(client.clone()).delete(&ns, &dp).await.map(|_| ()), "delete namespace")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(2));
        assert_eq!(backoff(1), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(64));
        assert_eq!(backoff(8), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn member_names_and_labels_are_checked() {
        assert!(validate_member("east", &BTreeMap::new()).is_ok());
        let long = "a".repeat(41);
        let e = validate_member(&long, &BTreeMap::new()).expect_err("too long");
        assert!(e.to_string().contains("metadata.name"), "{e}");
        let bad = BTreeMap::from([("bad key!".to_string(), "x".to_string())]);
        assert!(validate_member("east", &bad).is_err());
    }
}
