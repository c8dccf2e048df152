//! Apps: valid on their own (defaulted and validated), and, as upstream, not changed or
//! deleted while a cluster uses them.
//!
//! Two steps: [`dereference`] reads the clusters (only when the request changes the spec),
//! and [`decide`] is the pure decision on what was read.

use kdfed_crds::{FieldError, KubeDirectorApp, KubeDirectorCluster};
use kube::ResourceExt;
use kube::api::Api;
use kube::core::admission::Operation;

use super::{Refusal, Request, Reviewer, Validate};

impl Validate<KubeDirectorApp> for Reviewer {
    async fn validate(&self, request: &Request<'_, KubeDirectorApp>) -> Result<(), Refusal> {
        decide(dereference(self, request).await?)
    }
}

/// What an app's decision needs.
pub(crate) struct AppInput {
    /// The app as it would be stored (none for deletes).
    pub new: Option<KubeDirectorApp>,
    /// Name of the app.
    pub name: String,
    /// Namespace of the app.
    pub namespace: String,
    /// Namespace of the system catalog.
    pub system_namespace: String,
    /// Every cluster, when the request deletes the app or changes its spec (none when it
    /// does neither); a failed list is kept, to refuse with it once the app itself passes.
    pub clusters: Option<Result<Vec<KubeDirectorCluster>, Refusal>>,
}

/// Reads the request's objects and, when the spec changes or the app goes, every cluster.
async fn dereference(reviewer: &Reviewer, request: &Request<'_, KubeDirectorApp>) -> Result<AppInput, Refusal> {
    let old = request.old_object()?;
    let new = request.object()?;
    let clusters = if changes_spec(request.operation(), old.as_ref(), new.as_ref()) {
        let listed = Api::<KubeDirectorCluster>::all(reviewer.client.clone())
            .list(&Default::default())
            .await
            .map(|list| list.items)
            .map_err(Refusal::lookup("cannot check app references"));
        Some(listed)
    } else {
        None
    };
    Ok(AppInput {
        new,
        name: request.name().to_string(),
        namespace: request.namespace().to_string(),
        system_namespace: reviewer.system_namespace.clone(),
        clusters,
    })
}

/// The decision: an invalid app is refused first, then an app in use that would change.
pub(crate) fn decide(input: AppInput) -> Result<(), Refusal> {
    if let Some(app) = &input.new {
        kdfed_crds::resolve::resolve_app(&app.spec)?;
    }
    let Some(clusters) = input.clusters else { return Ok(()) };
    let users = users(&clusters?, &input.name, &input.namespace, &input.system_namespace);
    match in_use(&users) {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// Whether the request deletes the app or changes its spec (metadata changes are free).
fn changes_spec(operation: &Operation, old: Option<&KubeDirectorApp>, new: Option<&KubeDirectorApp>) -> bool {
    match (operation, old, new) {
        (Operation::Delete, _, _) => true,
        (Operation::Update, Some(o), Some(n)) => o.spec != n.spec,
        _ => false,
    }
}

/// `namespace/name` of the clusters that use app `name` of `namespace`: clusters of the
/// same namespace, and every cluster for an app of the system catalog. A cluster whose
/// live upgrade may still go back to the app (under way, or completed) uses it too.
fn users(clusters: &[KubeDirectorCluster], name: &str, namespace: &str, system_namespace: &str) -> Vec<String> {
    let may_go_back = |c: &KubeDirectorCluster| {
        let upgrade = c.status.as_ref().and_then(|s| s.upgrade.as_ref());
        upgrade.is_some_and(|u| u.from == name && u.rollback_allowed(&c.spec.app))
    };
    clusters
        .iter()
        .filter(|c| c.spec.app == name || may_go_back(c))
        .filter(|c| c.namespace().as_deref() == Some(namespace) || namespace == system_namespace)
        .map(|c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()))
        .collect()
}

/// Upstream's rule: an app in use cannot change or go.
fn in_use(users: &[String]) -> Option<FieldError> {
    (!users.is_empty()).then(|| {
        FieldError::new(
            "",
            "app-in-use",
            format!(
                "KubeDirectorApp resource cannot be deleted or modified while referenced by the following KubeDirectorCluster resources: {}",
                users.join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::testing::failed_read;
    use serde_json::json;

    fn app(name: &str, label: &str) -> KubeDirectorApp {
        serde_json::from_value(json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"label": {"name": label}, "distroID": "t", "version": "1", "configSchemaVersion": 7,
                "defaultImageRepoTag": "img:1", "roles": [{"id": "web", "cardinality": "1+"}],
                "config": {"selectedRoles": ["web"], "roleServices": []}}}))
        .expect("app")
    }

    fn cluster(namespace: &str, name: &str, app: &str) -> KubeDirectorCluster {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace},
            "spec": {"app": app, "roles": [{"id": "web"}]}}))
        .expect("cluster")
    }

    /// The input for app `name` of `default`, with `clusters` read.
    fn input(
        new: Option<KubeDirectorApp>,
        name: &str,
        clusters: Option<Result<Vec<KubeDirectorCluster>, Refusal>>,
    ) -> AppInput {
        AppInput {
            new,
            name: name.into(),
            namespace: "default".into(),
            system_namespace: "kdfed-system".into(),
            clusters,
        }
    }

    #[test]
    fn only_deletes_and_spec_changes_need_the_users_of_an_app() {
        let a = app("a", "A");
        let mut relabelled = a.clone();
        relabelled.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        let b = app("a", "B");
        assert!(changes_spec(&Operation::Delete, Some(&a), None));
        assert!(changes_spec(&Operation::Update, Some(&a), Some(&b)));
        assert!(!changes_spec(&Operation::Update, Some(&a), Some(&relabelled)));
        assert!(!changes_spec(&Operation::Create, None, Some(&a)));
    }

    #[test]
    fn the_app_a_live_upgrade_may_go_back_to_is_in_use() {
        let mut upgraded = cluster("default", "db", "b");
        upgraded.status = Some(kdfed_crds::KubeDirectorClusterStatus {
            upgrade: Some(kdfed_crds::cluster::UpgradeStatus {
                from: "a".into(),
                to: "b".into(),
                phase: kdfed_crds::upgrade::PHASE_COMPLETED.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(users(std::slice::from_ref(&upgraded), "a", "default", "kdfed-system"), ["default/db"]);
        if let Some(u) = upgraded.status.as_mut().and_then(|s| s.upgrade.as_mut()) {
            u.phase = kdfed_crds::upgrade::PHASE_ROLLED_BACK.into();
        }
        assert!(users(&[upgraded], "a", "default", "kdfed-system").is_empty(), "a rolled-back rollout is over");
    }

    #[test]
    fn users_are_clusters_of_the_namespace_or_any_for_a_system_app() {
        let clusters =
            [cluster("default", "hello", "a"), cluster("team", "other", "a"), cluster("default", "unrelated", "b")];
        assert_eq!(users(&clusters, "a", "default", "kdfed-system"), ["default/hello"]);
        assert_eq!(users(&clusters, "a", "kdfed-system", "kdfed-system"), ["default/hello", "team/other"]);
        assert!(users(&clusters, "c", "default", "kdfed-system").is_empty());
        assert_eq!(in_use(&[]), None);
        assert_eq!(
            in_use(&["default/hello".into(), "team/other".into()]).map(|e| e.to_string()),
            Some("KubeDirectorApp resource cannot be deleted or modified while referenced by the following KubeDirectorCluster resources: default/hello, team/other (rule: app-in-use)".into())
        );
    }

    #[test]
    fn an_invalid_app_is_refused_before_its_users_count() {
        let mut bad = serde_json::to_value(app("broken", "B")).expect("json");
        bad["spec"]["services"] = json!([{"id": "ui", "endpoint": {"port": 80, "isDashboard": true}}]);
        let bad: KubeDirectorApp = serde_json::from_value(bad).expect("app");
        let e = decide(input(Some(bad.clone()), "broken", None)).expect_err("bad");
        assert!(e.to_string().contains("spec.services[0].endpoint.urlScheme"), "{e}");
        // Even when the clusters could not be listed, the app's own error is the answer.
        let e =
            decide(input(Some(bad), "broken", Some(Err(failed_read("cannot check app references"))))).expect_err("bad");
        assert!(e.to_string().contains("spec.services[0].endpoint.urlScheme"), "{e}");
        assert!(decide(input(Some(app("a", "A")), "a", None)).is_ok());
    }

    #[test]
    fn an_app_in_use_cannot_be_deleted_and_an_unused_one_can() {
        let clusters = || Some(Ok(vec![cluster("default", "hello", "a")]));
        let e = decide(input(None, "a", clusters())).expect_err("in use");
        assert!(e.to_string().ends_with("resources: default/hello (rule: app-in-use)"), "{e}");
        assert!(decide(input(None, "b", clusters())).is_ok());
        // Without the list of clusters the webhook cannot decide, and says so.
        let e = decide(input(None, "a", Some(Err(failed_read("cannot check app references"))))).expect_err("no list");
        assert!(e.to_string().starts_with("cannot check app references: "), "{e}");
    }
}
