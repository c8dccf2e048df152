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
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use kdfed_common::ApiError;
use kdfed_common::conditions::{condition, set_condition};
use kdfed_common::events::Recorder;
use kdfed_common::join::JoinKey;
use kdfed_crds::KubeDirectorCluster;
use kdfed_crds::federation::{
    FEDERATION_GROUP, KubeDirectorMember, KubeDirectorMemberSpec, KubeDirectorMemberStatus, LABEL_MEMBER,
    MEMBER_SERVICE_ACCOUNT, MemberJoinGrant, MemberJoinRequest, member_namespace, member_rbac_name,
};
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
    let spec = kdfed_crds::KubeDirectorMemberSpec::default();
    kdfed_crds::validate::member(name, labels, &spec).map_err(|errors| {
        // `kdfed member add` explains a bad name to the platform team instead of naming the rule.
        let shown: Vec<String> = errors
            .0
            .iter()
            .map(|e| match e.rule {
                "member-name" => format!("{}: {} (lowercase letters, digits, '-')", e.path, e.message),
                _ => e.to_string(),
            })
            .collect();
        RegistryError::Invalid(shown.join("\n"))
    })
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
    let join = MemberJoinRequest {
        public_key: key.public_key().to_string(),
        server: server.to_string(),
        token_seconds: Some(token_seconds.max(kdfed_common::tokens::MIN_TOKEN_SECONDS)),
    };
    let mut request = KubeDirectorMember::new(name, KubeDirectorMemberSpec { join: Some(join), ..Default::default() });
    request.metadata.labels = Some(labels.clone());
    members.patch(name, &pp, &Patch::Apply(&request)).await.map_err(kube_err("apply KubeDirectorMember"))?;
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
    let rule = |groups: &[&str], resource: &str, names: Option<&str>, verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|g| g.to_string()).collect()),
        resources: Some(vec![resource.to_string()]),
        resource_names: names.map(|n| vec![n.to_string()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    let rules = [
        rule(&[FEDERATION_GROUP], "kubedirectorworks", None, &["get", "list", "watch", "update", "patch"]),
        rule(&[FEDERATION_GROUP], "kubedirectorworks/status", None, &["get", "update", "patch"]),
        rule(&[""], "secrets", None, &["get", "list", "watch"]),
        rule(&["coordination.k8s.io"], "leases", None, &["get", "list", "watch", "create", "update", "patch"]),
        rule(&[""], "serviceaccounts/token", Some(MEMBER_SERVICE_ACCOUNT), &["create"]),
        rule(&["", "events.k8s.io"], "events", None, &["create", "patch"]),
    ];
    // PolicyRules always serialise; Null would only come from a serde bug.
    serde_json::to_value(rules).unwrap_or_default()
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
        // Only the fields this manager owns: the spokes and the availability loop own the rest.
        let status = KubeDirectorMemberStatus {
            conditions: registered.into_iter().cloned().collect(),
            join: grant.clone(),
            ..KubeDirectorMemberStatus::default()
        };
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

/// The objects that make a member's identity on the hub (see [`member_objects`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MemberObjects {
    /// The member's namespace `kdfed-member-<name>`, owned by the member.
    pub namespace: Namespace,
    /// The member's identity, `kdfed-spoke` in its namespace.
    pub service_account: ServiceAccount,
    /// Binds the identity to the shared ClusterRole [`MEMBER_CLUSTER_ROLE`] in its namespace only.
    pub role_binding: RoleBinding,
    /// Reading and reporting on its own member object only.
    pub cluster_role: ClusterRole,
    /// Binds the identity to [`MemberObjects::cluster_role`].
    pub cluster_role_binding: ClusterRoleBinding,
}

/// The objects of a member's identity, as applied (pure).
pub fn member_objects(member: &KubeDirectorMember) -> MemberObjects {
    let name = member.name_any();
    let ns = member_namespace(&name);
    let rbac = member_rbac_name(&name);
    let owned = |name: &str, namespace: Option<&str>, owner: bool| ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(String::from),
        labels: Some(BTreeMap::from([(LABEL_MEMBER.to_string(), member.name_any())])),
        // Cluster-scoped objects go with the member when it is deleted.
        owner_references: owner.then(|| {
            vec![OwnerReference {
                api_version: kdfed_crds::FEDERATION_API_VERSION.to_string(),
                kind: "KubeDirectorMember".to_string(),
                name: member.name_any(),
                uid: member.meta().uid.clone().unwrap_or_default(),
                ..OwnerReference::default()
            }]
        }),
        ..ObjectMeta::default()
    };
    let subjects = Some(vec![Subject {
        kind: "ServiceAccount".to_string(),
        name: MEMBER_SERVICE_ACCOUNT.to_string(),
        namespace: Some(ns.clone()),
        ..Subject::default()
    }]);
    let own_member = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![FEDERATION_GROUP.to_string()]),
        resources: Some(vec![resource.to_string()]),
        resource_names: Some(vec![name.clone()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    MemberObjects {
        namespace: Namespace { metadata: owned(&ns, None, true), ..Namespace::default() },
        service_account: ServiceAccount {
            metadata: owned(MEMBER_SERVICE_ACCOUNT, Some(&ns), false),
            ..ServiceAccount::default()
        },
        role_binding: RoleBinding {
            metadata: owned("kdfed-spoke", Some(&ns), false),
            role_ref: role_ref(MEMBER_CLUSTER_ROLE),
            subjects: subjects.clone(),
        },
        cluster_role: ClusterRole {
            metadata: owned(&rbac, None, true),
            rules: Some(vec![
                own_member("kubedirectormembers", &["get", "watch"]),
                own_member("kubedirectormembers/status", &["get", "update", "patch"]),
            ]),
            ..ClusterRole::default()
        },
        cluster_role_binding: ClusterRoleBinding {
            metadata: owned(&rbac, None, true),
            role_ref: role_ref(&rbac),
            subjects,
        },
    }
}

fn role_ref(cluster_role: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".to_string()),
        kind: "ClusterRole".to_string(),
        name: cluster_role.to_string(),
    }
}

/// `result` of a delete, with an object already gone counting as deleted.
fn missing_ok<T>(result: Result<T, kube::Error>, action: &str) -> Result<(), RegistryError> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map(|_| ()).map_err(kube_err(action)),
    }
}

/// The member's namespace, identity and RBAC, applied (idempotent).
async fn provision(client: &Client, member: &KubeDirectorMember) -> Result<(), RegistryError> {
    let objects = member_objects(member);
    let ns = member_namespace(&member.name_any());
    apply_if_drifted(&Api::<Namespace>::all(client.clone()), &ns, &objects.namespace, "apply namespace").await?;
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    apply_if_drifted(&accounts, MEMBER_SERVICE_ACCOUNT, &objects.service_account, "apply ServiceAccount").await?;

    // Namespaced permissions: the shared ClusterRole kdfed-member, bound in its namespace
    // only (the hub holds `bind` on that one role, not its permissions).
    let roles: Api<ClusterRole> = Api::all(client.clone());
    if roles.get_opt(MEMBER_CLUSTER_ROLE).await.map_err(kube_err("read ClusterRole kdfed-member"))?.is_none() {
        return Err(RegistryError::Invalid(format!(
            "the ClusterRole {MEMBER_CLUSTER_ROLE} that member identities are bound to is missing: apply deploy/hub (it ships the role)"
        )));
    }
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    // A roleRef cannot change: a binding of an earlier kdfed (to a per-member Role) is replaced.
    if let Some(old) = bindings.get_opt("kdfed-spoke").await.map_err(kube_err("read RoleBinding"))?
        && old.role_ref.kind != "ClusterRole"
    {
        bindings.delete("kdfed-spoke", &DeleteParams::default()).await.map_err(kube_err("replace RoleBinding"))?;
        let old_roles: Api<Role> = Api::namespaced(client.clone(), &ns);
        missing_ok(old_roles.delete("kdfed-spoke", &DeleteParams::default()).await, "delete the earlier Role")?;
    }
    apply_if_drifted(&bindings, "kdfed-spoke", &objects.role_binding, "apply RoleBinding").await?;

    // Cluster-scoped permissions: read and report on its own member object only.
    let rbac = member_rbac_name(&member.name_any());
    apply_if_drifted(&roles, &rbac, &objects.cluster_role, "apply ClusterRole").await?;
    let role_bindings = Api::<ClusterRoleBinding>::all(client.clone());
    apply_if_drifted(&role_bindings, &rbac, &objects.cluster_role_binding, "apply ClusterRoleBinding").await
}

/// Applies `desired` unless the object already holds every field of it: the periodic
/// drift repair and a restarted hub read the identity objects and write none that is intact.
async fn apply_if_drifted<K>(api: &Api<K>, name: &str, desired: &K, action: &str) -> Result<(), RegistryError>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    if let Some(actual) = api.get_opt(name).await.map_err(kube_err(action))?
        && covers(
            &serde_json::to_value(&actual).unwrap_or_default(),
            &serde_json::to_value(desired).unwrap_or_default(),
        )
    {
        return Ok(());
    }
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &pp, &Patch::Apply(desired)).await.map_err(kube_err(action)).map(|_| ())
}

pub use kdfed_common::reconcile::covers;

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
    fn an_intact_identity_object_is_not_written_again_and_a_changed_one_is() {
        let member = KubeDirectorMember::new("east", Default::default());
        let desired = serde_json::to_value(member_objects(&member).cluster_role_binding).expect("json");
        // What the API server returns: the same fields and its own (uid, subjects' defaults).
        let mut actual = desired.clone();
        actual["metadata"]["uid"] = "abc".into();
        actual["metadata"]["resourceVersion"] = "7".into();
        actual["subjects"][0]["apiGroup"] = "".into();
        assert!(covers(&actual, &desired));
        let mut edited = actual.clone();
        edited["subjects"][0]["name"] = "someone-else".into();
        assert!(!covers(&edited, &desired), "a changed subject is repaired");
        let mut extra = actual.clone();
        extra["subjects"].as_array_mut().expect("list").push(serde_json::json!({"kind": "User", "name": "x"}));
        assert!(!covers(&extra, &desired), "an added subject is repaired");
        let mut unlabelled = actual;
        unlabelled["metadata"]["labels"] = serde_json::Value::Null;
        assert!(!covers(&unlabelled, &desired));
    }

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

    #[test]
    fn a_member_s_identity_sees_only_its_own_namespace_and_member_object() {
        let mut member = KubeDirectorMember::new("east", KubeDirectorMemberSpec::default());
        member.metadata.uid = Some("u-1".into());
        let objects = member_objects(&member);
        let ns = wire(&objects.namespace);
        assert_eq!(ns["metadata"]["name"], "kdfed-member-east");
        assert_eq!(ns["metadata"]["labels"][LABEL_MEMBER], "east");
        assert_eq!(
            ns["metadata"]["ownerReferences"],
            serde_json::json!([{"apiVersion": kdfed_crds::FEDERATION_API_VERSION, "kind": "KubeDirectorMember",
                "name": "east", "uid": "u-1"}])
        );
        let sa = wire(&objects.service_account);
        assert_eq!(
            (sa["metadata"]["namespace"].as_str(), sa["metadata"].get("ownerReferences")),
            (Some("kdfed-member-east"), None)
        );
        let binding = wire(&objects.role_binding);
        assert_eq!(
            binding["roleRef"],
            serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": MEMBER_CLUSTER_ROLE})
        );
        assert_eq!(
            binding["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "kdfed-spoke", "namespace": "kdfed-member-east"}])
        );
        let role = wire(&objects.cluster_role);
        assert_eq!(role["metadata"]["name"], "kdfed-member-east");
        assert_eq!(
            role["rules"],
            serde_json::json!([
                {"apiGroups": [FEDERATION_GROUP], "resources": ["kubedirectormembers"], "resourceNames": ["east"], "verbs": ["get", "watch"]},
                {"apiGroups": [FEDERATION_GROUP], "resources": ["kubedirectormembers/status"], "resourceNames": ["east"], "verbs": ["get", "update", "patch"]}
            ])
        );
        assert_eq!(wire(&objects.cluster_role_binding)["roleRef"]["name"], "kdfed-member-east");
    }

    /// The JSON an object goes over the wire as.
    fn wire<T: serde::Serialize>(object: &T) -> serde_json::Value {
        serde_json::to_value(object).expect("json")
    }
}
