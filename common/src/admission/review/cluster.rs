//! Clusters: resolved against their app from the catalog (and `KubeDirectorConfig`), their
//! mounted Secrets present and named with the required prefix, and their changes allowed
//! (upstream's update rules).
//!
//! Three steps: [`subject`] picks what needs a review from the request, [`dereference`]
//! reads the app, the config and the mounted Secrets, and [`decide`] is the pure decision
//! on what was read.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kdfed_crds::upgrade::CatalogApp;
use kdfed_crds::validate::ValidationErrors;
use kdfed_crds::{
    FieldError, KubeDirectorApp, KubeDirectorCluster, KubeDirectorClusterSpec, KubeDirectorConfig,
    KubeDirectorConfigSpec,
};
use kube::api::Api;
use kube::core::admission::Operation;

use super::{Refusal, Request, Reviewer, Validate};

impl Validate<KubeDirectorCluster> for Reviewer {
    async fn validate(&self, request: &Request<'_, KubeDirectorCluster>) -> Result<(), Refusal> {
        let Some((old, new)) = subject(request)? else { return Ok(()) };
        decide(dereference(self, request.namespace(), old, new).await?)
    }
}

/// The old and new cluster of a request that needs a review; none for deletes and for
/// changes that never depend on the catalog.
fn subject(
    request: &Request<'_, KubeDirectorCluster>,
) -> Result<Option<(Option<KubeDirectorCluster>, KubeDirectorCluster)>, Refusal> {
    if *request.operation() == Operation::Delete {
        return Ok(None);
    }
    let old = request.old_object()?;
    let Some(new) = request.object()? else { return Ok(None) };
    Ok(needs_review(old.as_ref(), &new).then_some((old, new)))
}

/// Whether a change needs the catalog: metadata-only updates (finalizers, labels) and
/// clusters on their way out never depend on it.
fn needs_review(old: Option<&KubeDirectorCluster>, new: &KubeDirectorCluster) -> bool {
    let same_spec = old.is_some_and(|o| o.spec == new.spec);
    !same_spec && new.metadata.deletion_timestamp.is_none()
}

/// What a cluster's decision needs.
pub(crate) struct ClusterInput {
    /// The cluster as it is stored (updates).
    pub old: Option<KubeDirectorCluster>,
    /// The cluster as it would be stored.
    pub new: KubeDirectorCluster,
    /// Namespace of the cluster.
    pub namespace: String,
    /// The cluster's app from the catalog; none when the catalog does not have it (then
    /// nothing else is read).
    pub app: Option<KubeDirectorApp>,
    /// `KubeDirectorConfig`'s spec (none when there is none or it cannot be read).
    pub config: Option<KubeDirectorConfigSpec>,
    /// The mounted Secrets that exist, by name (only those with the required prefix are
    /// looked up), or the first failed read, kept to refuse with once the spec passes.
    pub secrets: Result<BTreeSet<String>, Refusal>,
    /// The apps a changed `spec.app` may name (a live upgrade's catalog); empty when the app
    /// does not change.
    pub catalog: Vec<KubeDirectorApp>,
}

/// Reads what the decision on `new` needs: its app (a failed read refuses at once), then,
/// when the catalog has it, the config and the mounted Secrets.
async fn dereference(
    reviewer: &Reviewer,
    namespace: &str,
    old: Option<KubeDirectorCluster>,
    new: KubeDirectorCluster,
) -> Result<ClusterInput, Refusal> {
    let app = reviewer.catalog_app(namespace, &new.spec).await?;
    let (config, secrets) = match app {
        None => (None, Ok(BTreeSet::new())),
        Some(_) => {
            let config = reviewer.config().await;
            let prefix = secret_prefix(config.as_ref());
            (config, reviewer.existing_secrets(namespace, &new.spec, &prefix).await)
        }
    };
    let app_changes = old.as_ref().is_some_and(|o| o.spec.app != new.spec.app);
    let catalog = if app_changes { reviewer.catalog_apps(namespace, &new.spec).await? } else { Vec::new() };
    Ok(ClusterInput { old, new, namespace: namespace.to_string(), app, config, secrets, catalog })
}

/// The decision: the app must be known, the cluster valid against it, its mounted Secrets
/// present and prefixed, and its change allowed; the first rule broken answers.
pub(crate) fn decide(input: ClusterInput) -> Result<(), Refusal> {
    let Some(app) = &input.app else { return Err(unknown_app(&input.new.spec.app).into()) };
    // A changed app is first of all a question of which apps it may change to: the user
    // hears the allowed targets, not how the cluster's spec fails against an app it may
    // not move to anyway.
    let app_changes = input.old.as_ref().is_some_and(|o| o.spec.app != input.new.spec.app);
    if app_changes {
        update_allowed(input.old.as_ref(), &input.new, &input.catalog, app)?;
    }
    kdfed_crds::resolve(&app.spec, &input.new.spec, input.config.as_ref())?;
    let prefix = secret_prefix(input.config.as_ref());
    secret_errors(&input.namespace, &input.new.spec, &prefix, &input.secrets?).into_result()?;
    if !app_changes {
        update_allowed(input.old.as_ref(), &input.new, &input.catalog, app)?;
    }
    Ok(())
}

/// The update rules (upstream's, live upgrades' against the catalog, config choices');
/// nothing to check for a create.
fn update_allowed(
    old: Option<&KubeDirectorCluster>,
    new: &KubeDirectorCluster,
    catalog: &[KubeDirectorApp],
    app: &KubeDirectorApp,
) -> Result<(), Refusal> {
    let Some(old) = old else { return Ok(()) };
    let catalog: Vec<CatalogApp<'_>> = catalog
        .iter()
        .map(|a| CatalogApp { name: a.metadata.name.as_deref().unwrap_or_default(), spec: &a.spec })
        .collect();
    kdfed_crds::validate::cluster_update_with_app(&old.spec, &new.spec, old.status.as_ref(), &app.spec, &catalog)?;
    Ok(())
}

impl Reviewer {
    /// The cluster's app, from the catalog as the director will look it up.
    async fn catalog_app(
        &self,
        namespace: &str,
        spec: &KubeDirectorClusterSpec,
    ) -> Result<Option<KubeDirectorApp>, Refusal> {
        let found = crate::catalog::find_app(
            &self.client,
            namespace,
            &self.system_namespace,
            &spec.app,
            spec.app_catalog.as_deref(),
        )
        .await
        .map_err(Refusal::lookup("cannot read the app catalog"))?;
        Ok(found.map(|(app, _)| app))
    }

    /// Every app of the cluster's catalog, for the allowed targets of an app change.
    async fn catalog_apps(
        &self,
        namespace: &str,
        spec: &KubeDirectorClusterSpec,
    ) -> Result<Vec<KubeDirectorApp>, Refusal> {
        crate::catalog::list_apps(&self.client, namespace, &self.system_namespace, spec.app_catalog.as_deref())
            .await
            .map_err(Refusal::lookup("cannot read the app catalog"))
    }

    /// `KubeDirectorConfig`'s spec; a config that cannot be read counts as none, as the
    /// director will then default without it.
    async fn config(&self) -> Option<KubeDirectorConfigSpec> {
        Api::<KubeDirectorConfig>::namespaced(self.client.clone(), &self.system_namespace)
            .get_opt(kdfed_crds::config::CONFIG_NAME)
            .await
            .ok()
            .flatten()
            .map(|c| c.spec)
    }

    /// The Secrets `spec` mounts that exist in `namespace`, by name; names without the
    /// `prefix` are refused anyway, so they are not read. The first failed read stops.
    async fn existing_secrets(
        &self,
        namespace: &str,
        spec: &KubeDirectorClusterSpec,
        prefix: &str,
    ) -> Result<BTreeSet<String>, Refusal> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let mut found = BTreeSet::new();
        for mounted in mounted_secrets(spec).into_iter().filter(|m| m.prefix_error(prefix).is_none()) {
            let name = mounted.name;
            let read = secrets.get_opt(&name).await.map_err(Refusal::lookup(format!("cannot read Secret {name}")))?;
            if read.is_some() {
                found.insert(name);
            }
        }
        Ok(found)
    }
}

/// `requiredSecretPrefix` of the config (empty without one).
fn secret_prefix(config: Option<&KubeDirectorConfigSpec>) -> String {
    config.and_then(|c| c.required_secret_prefix.clone()).unwrap_or_default()
}

/// Secrets mounted into members must carry `prefix` and exist (be in `found`), upstream's
/// rules and wording; every broken one is reported.
fn secret_errors(
    namespace: &str,
    spec: &KubeDirectorClusterSpec,
    prefix: &str,
    found: &BTreeSet<String>,
) -> ValidationErrors {
    let mut errors = ValidationErrors::default();
    for mounted in mounted_secrets(spec) {
        if let Some(error) = mounted.prefix_error(prefix) {
            errors.0.push(error);
        } else if !found.contains(&mounted.name) {
            errors.0.push(mounted.missing_error(namespace));
        }
    }
    errors
}

/// Upstream's refusal of an app the catalog does not have.
fn unknown_app(app: &str) -> FieldError {
    FieldError::new(
        "spec.app",
        "known-app",
        format!("Invalid app({app}). This app resource ID has not been registered."),
    )
}

/// A Secret a cluster mounts into its members.
#[derive(Debug, PartialEq, Eq)]
struct MountedSecret {
    /// Field that names it.
    path: String,
    /// Name of the Secret.
    name: String,
    /// The role that mounts it; none for the cluster's `defaultSecret`.
    role: Option<String>,
}

/// The Secrets `spec` mounts: `defaultSecret`, then each role's `secret`.
fn mounted_secrets(spec: &KubeDirectorClusterSpec) -> Vec<MountedSecret> {
    let default = spec.default_secret.iter().map(|s| MountedSecret {
        path: "spec.defaultSecret.name".into(),
        name: s.name.clone(),
        role: None,
    });
    let roles = spec.roles.iter().enumerate().filter_map(|(i, role)| {
        role.secret.as_ref().map(|s| MountedSecret {
            path: format!("spec.roles[{i}].secret.name"),
            name: s.name.clone(),
            role: Some(role.id.clone()),
        })
    });
    default.chain(roles).collect()
}

impl MountedSecret {
    /// The refusal of a name without the required prefix.
    fn prefix_error(&self, prefix: &str) -> Option<FieldError> {
        let name = &self.name;
        (!name.starts_with(prefix)).then(|| {
            let message = match &self.role {
                None => format!("defaultSecret({name}) does not have the required name prefix({prefix})."),
                Some(r) => format!("Secret({name}) for role({r}) does not have the required name prefix({prefix})."),
            };
            FieldError::new(self.path.clone(), "secret-prefix", message)
        })
    }

    /// The refusal of a Secret that does not exist in `namespace`.
    fn missing_error(&self, namespace: &str) -> FieldError {
        let name = &self.name;
        let message = match &self.role {
            None => format!("Unable to find defaultSecret({name}) in namespace({namespace})."),
            Some(r) => format!("Unable to find secret({name}) for role({r}) in namespace({namespace})."),
        };
        FieldError::new(self.path.clone(), "secret-exists", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::testing::{failed_read, request};
    use serde_json::{Value, json};

    fn manifest(spec: Value) -> Value {
        json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "hello", "namespace": "default"}, "spec": spec})
    }

    fn cluster(spec: Value) -> KubeDirectorCluster {
        serde_json::from_value(manifest(spec)).expect("cluster")
    }

    fn app() -> KubeDirectorApp {
        serde_json::from_value(json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"label": {"name": "web"}, "distroID": "t", "version": "1", "configSchemaVersion": 7,
                "defaultImageRepoTag": "img:1", "roles": [{"id": "web", "cardinality": "1+"}],
                "config": {"selectedRoles": ["web"], "roleServices": []}}}))
        .expect("app")
    }

    /// A new cluster of `spec` whose app `web` is in the catalog, no config, and `secrets`
    /// found.
    fn input(spec: Value, secrets: &[&str]) -> ClusterInput {
        ClusterInput {
            old: None,
            new: cluster(spec),
            namespace: "default".into(),
            app: Some(app()),
            config: None,
            secrets: Ok(secrets.iter().map(|s| s.to_string()).collect()),
            catalog: Vec::new(),
        }
    }

    fn decided(input: ClusterInput) -> Result<(), String> {
        decide(input).map_err(|e| e.to_string())
    }

    /// What [`subject`] makes of a request: `Ok(true)` when it needs a review.
    fn needs(operation: &str, old: Option<Value>, new: Option<Value>) -> Result<bool, String> {
        let req = request(operation, old, new);
        subject(&Request::<KubeDirectorCluster>::new(&req)).map(|s| s.is_some()).map_err(|e| e.to_string())
    }

    #[test]
    fn deletes_metadata_changes_and_clusters_going_away_need_no_catalog() {
        let cluster = manifest(json!({"app": "nowhere", "roles": [{"id": "web"}]}));
        assert_eq!(needs("DELETE", Some(cluster.clone()), None), Ok(false));
        let mut labelled = cluster.clone();
        labelled["metadata"]["labels"] = json!({"team": "a"});
        assert_eq!(needs("UPDATE", Some(cluster.clone()), Some(labelled)), Ok(false));
        let mut leaving = cluster.clone();
        leaving["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        leaving["spec"]["roles"][0]["members"] = json!(3);
        assert_eq!(needs("UPDATE", Some(cluster.clone()), Some(leaving)), Ok(false));
        assert_eq!(needs("CREATE", None, Some(cluster)), Ok(true));
    }

    #[test]
    fn a_cluster_of_an_unknown_app_is_refused_in_upstream_s_words() {
        let mut unknown = input(json!({"app": "nope", "roles": [{"id": "web"}]}), &[]);
        unknown.app = None;
        assert_eq!(
            decided(unknown),
            Err("spec.app: Invalid app(nope). This app resource ID has not been registered. (rule: known-app)".into())
        );
    }

    #[test]
    fn a_type_error_names_its_field() {
        let cluster = manifest(json!({"app": "web", "roles": [{"id": "web", "members": "seven"}]}));
        let e = needs("CREATE", None, Some(cluster)).expect_err("type");
        assert!(e.starts_with("spec.roles[0].members: malformed object: invalid type: string \"seven\""), "{e}");
        assert!(e.ends_with("(rule: type)"), "{e}");
    }

    fn secretive() -> Value {
        json!({"app": "web", "defaultSecret": {"name": "creds", "mountPath": "/etc/creds"},
            "roles": [{"id": "web", "secret": {"name": "role-creds", "mountPath": "/etc/r"}}]})
    }

    #[test]
    fn cardinality_and_missing_secrets_are_checked_against_the_catalog() {
        let e = decided(input(json!({"app": "web", "roles": [{"id": "web", "members": 0}]}), &[]))
            .expect_err("cardinality");
        assert!(e.contains("Role cardinality:1+ (rule: cardinality)"), "{e}");
        assert_eq!(
            decided(input(secretive(), &[])),
            Err("spec.defaultSecret.name: Unable to find defaultSecret(creds) in namespace(default). (rule: secret-exists)\n\
                 spec.roles[0].secret.name: Unable to find secret(role-creds) for role(web) in namespace(default). (rule: secret-exists)"
                .into())
        );
        assert_eq!(decided(input(secretive(), &["creds", "role-creds"])), Ok(()));
    }

    #[test]
    fn secrets_without_the_configured_prefix_are_refused_with_the_missing_ones() {
        let mut prefixed = input(secretive(), &[]);
        prefixed.config = Some(serde_json::from_value(json!({"requiredSecretPrefix": "role-"})).expect("config"));
        assert_eq!(
            decided(prefixed),
            Err("spec.defaultSecret.name: defaultSecret(creds) does not have the required name prefix(role-). (rule: secret-prefix)\n\
                 spec.roles[0].secret.name: Unable to find secret(role-creds) for role(web) in namespace(default). (rule: secret-exists)"
                .into())
        );
    }

    #[test]
    fn a_failed_secret_read_refuses_only_a_cluster_that_is_otherwise_valid() {
        let failed = || Err(failed_read("cannot read Secret creds"));
        let mut unreadable = input(secretive(), &[]);
        unreadable.secrets = failed();
        let e = decided(unreadable).expect_err("unreadable");
        assert!(e.starts_with("cannot read Secret creds: "), "{e}");
        let mut invalid = input(
            json!({"app": "web", "defaultSecret": {"name": "creds", "mountPath": "/etc/creds"},
            "roles": [{"id": "web", "members": 0}]}),
            &[],
        );
        invalid.secrets = failed();
        let e = decided(invalid).expect_err("cardinality");
        assert!(e.contains("(rule: cardinality)"), "{e}");
    }

    #[test]
    fn a_change_is_refused_by_upstream_s_update_rules() {
        let mut grown = input(json!({"app": "web", "roles": [{"id": "web", "members": 2}]}), &[]);
        grown.old = Some(cluster(json!({"app": "web", "roles": [{"id": "web", "members": 1}]})));
        assert_eq!(
            decided(grown),
            Err("spec: Change to spec not allowed before previous spec change has been processed. (rule: one-change-at-a-time)".into())
        );
    }

    #[test]
    fn an_app_change_names_the_allowed_targets_before_the_spec_s_faults_against_the_new_app() {
        // The role `db` does not exist in `web` either: the user still hears which apps the
        // cluster may change to.
        let mut moved = input(json!({"app": "web", "roles": [{"id": "db", "members": 1}]}), &[]);
        moved.old = Some(cluster(json!({"app": "other", "roles": [{"id": "db", "members": 1}]})));
        let refusal = decided(moved).expect_err("not an upgrade target");
        assert!(refusal.contains("(rule: upgrade-target)") && refusal.contains("Allowed: none"), "{refusal}");
    }

    #[test]
    fn mounted_secrets_need_the_prefix_and_name_their_role() {
        let spec: KubeDirectorClusterSpec = serde_json::from_value(json!({"app": "web",
            "defaultSecret": {"name": "kd-default", "mountPath": "/d"},
            "roles": [{"id": "a"}, {"id": "b", "secret": {"name": "other", "mountPath": "/b"}}]}))
        .expect("spec");
        let mounted = mounted_secrets(&spec);
        assert_eq!(
            mounted,
            [
                MountedSecret { path: "spec.defaultSecret.name".into(), name: "kd-default".into(), role: None },
                MountedSecret {
                    path: "spec.roles[1].secret.name".into(),
                    name: "other".into(),
                    role: Some("b".into())
                },
            ]
        );
        assert_eq!(mounted[0].prefix_error("kd-"), None);
        assert_eq!(
            mounted[1].prefix_error("kd-").map(|e| e.to_string()),
            Some("spec.roles[1].secret.name: Secret(other) for role(b) does not have the required name prefix(kd-). (rule: secret-prefix)".into())
        );
        assert_eq!(
            mounted[0].prefix_error("x-").map(|e| e.to_string()),
            Some("spec.defaultSecret.name: defaultSecret(kd-default) does not have the required name prefix(x-). (rule: secret-prefix)".into())
        );
    }

    #[test]
    fn only_spec_changes_of_live_clusters_need_a_review() {
        let cluster = cluster(json!({"app": "web", "roles": [{"id": "web"}]}));
        assert!(needs_review(None, &cluster));
        assert!(!needs_review(Some(&cluster), &cluster));
        let mut grown = cluster.clone();
        grown.spec.roles[0].members = Some(2);
        assert!(needs_review(Some(&cluster), &grown));
    }
}
