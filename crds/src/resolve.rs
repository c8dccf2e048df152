//! The one step every consumer of a cluster spec runs first: defaulting and validation
//! against its app (and `KubeDirectorConfig`), plus the facts derived from them that
//! admission, the hub, hub sync, the director, `render` and `kdfed validate` all need.
//!
//! Builders take a [`Resolved`] and never see an undefaulted or invalid spec.

use std::collections::BTreeMap;

use crate::app::{KubeDirectorAppSpec, NodeGroupConfig, NodeRole, Service};
use crate::cluster::{KubeDirectorClusterSpec, Role};
use crate::config::KubeDirectorConfigSpec;
use crate::validate::{self, ValidationErrors};
use crate::{choices, defaults};

/// A cluster spec and its app, both defaulted and validated together.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The app's spec with its role-level defaults filled in.
    pub app: KubeDirectorAppSpec,
    /// The cluster's spec with config choices, member counts, service type, naming scheme
    /// and storage class filled in.
    pub cluster: KubeDirectorClusterSpec,
    /// The value of each of the app's config choices: the cluster's, else the default.
    pub choices: BTreeMap<String, String>,
    /// The app as these choices make it: `app` with its `config` merged with every matching
    /// conditional config ([`choices::merged_config`]). Builders and configmeta read this;
    /// it equals `app` for apps without choices.
    pub chosen: KubeDirectorAppSpec,
}

/// One role of a resolved cluster, with what the app says of it.
#[derive(Clone, Copy, Debug)]
pub struct ResolvedRole<'a> {
    /// The role as the cluster asks for it.
    pub spec: &'a Role,
    /// The app's definition of the role.
    pub app: &'a NodeRole,
    /// Members wanted (the cluster's count, else the app's minimum cardinality).
    pub members: i32,
}

/// Defaults the app and the cluster, then validates both; the first failing step's
/// errors are returned (the app's before the cluster's), each naming field and rule.
pub fn resolve(
    app: &KubeDirectorAppSpec,
    cluster: &KubeDirectorClusterSpec,
    config: Option<&KubeDirectorConfigSpec>,
) -> Result<Resolved, ValidationErrors> {
    let resolved = defaulted(app, cluster, config);
    validate::app(&resolved.app)?;
    validate::cluster(&resolved.cluster, &cluster.app, &resolved.app)?;
    Ok(resolved)
}

/// Defaults only, without validation: for callers that must act on a spec that no longer
/// validates (for example to tear down what an older, valid spec built).
pub fn defaulted(
    app: &KubeDirectorAppSpec,
    cluster: &KubeDirectorClusterSpec,
    config: Option<&KubeDirectorConfigSpec>,
) -> Resolved {
    let mut app = app.clone();
    defaults::app(&mut app);
    let mut spec = cluster.clone();
    defaults::cluster(&mut spec, &app, config);
    let choices = choices::chosen_values(&app, &spec.config_choices);
    let chosen = choices::chosen_app(&app, &spec.config_choices);
    Resolved { app, cluster: spec, choices, chosen }
}

/// Defaults and validates an app on its own (an app's admission, `kdfed validate`).
pub fn resolve_app(app: &KubeDirectorAppSpec) -> Result<KubeDirectorAppSpec, ValidationErrors> {
    let mut app = app.clone();
    defaults::app(&mut app);
    validate::app(&app)?;
    Ok(app)
}

impl Resolved {
    /// The cluster's roles in the order it lists them, with the app's definition; roles
    /// the app does not define cannot occur (validation refuses them).
    pub fn roles(&self) -> impl Iterator<Item = ResolvedRole<'_>> {
        self.cluster.roles.iter().filter_map(move |r| {
            Some(ResolvedRole { spec: r, app: self.app.role(&r.id)?, members: self.members(&r.id) })
        })
    }

    /// Roles that run at least one member.
    pub fn active_roles(&self) -> impl Iterator<Item = ResolvedRole<'_>> {
        self.roles().filter(|r| r.members > 0)
    }

    /// Members wanted for a role; 0 for a role the cluster does not list.
    pub fn members(&self, role_id: &str) -> i32 {
        self.cluster.roles.iter().find(|r| r.id == role_id).and_then(|r| r.members).unwrap_or(0)
    }

    /// Members wanted over all roles.
    pub fn total_members(&self) -> i32 {
        self.roles().map(|r| r.members).sum()
    }

    /// Services a role runs under the chosen config, in the order the app lists them.
    pub fn services(&self, role_id: &str) -> Vec<&Service> {
        self.chosen.role_services(role_id)
    }

    /// The config in effect: active roles, role services and `configMeta` after the choices.
    pub fn config(&self) -> &NodeGroupConfig {
        &self.chosen.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::SetupPackageUrl;

    fn app() -> KubeDirectorAppSpec {
        serde_json::from_value(serde_json::json!({
            "label": {"name": "t"}, "distroID": "t", "version": "1", "configSchemaVersion": 7,
            "defaultImageRepoTag": "img:1",
            "services": [{"id": "ui", "endpoint": {"port": 8080, "urlScheme": "http"}}],
            "roles": [
                {"id": "head", "cardinality": "1"},
                {"id": "worker", "cardinality": "0+"}
            ],
            "config": {"selectedRoles": ["head", "worker"],
                       "roleServices": [{"roleID": "head", "serviceIDs": ["ui"]}]}
        }))
        .expect("app parses")
    }

    fn cluster(roles: serde_json::Value) -> KubeDirectorClusterSpec {
        serde_json::from_value(serde_json::json!({"app": "t", "roles": roles})).expect("cluster parses")
    }

    #[test]
    fn defaults_fill_member_counts_and_role_images() {
        let r = resolve(&app(), &cluster(serde_json::json!([{"id": "head"}, {"id": "worker"}])), None).expect("valid");
        assert_eq!(r.members("head"), 1);
        assert_eq!(r.members("worker"), 0);
        assert_eq!(r.total_members(), 1);
        assert_eq!(r.app.role("head").and_then(|h| h.image_repo_tag.clone()).as_deref(), Some("img:1"));
        let active: Vec<&str> = r.active_roles().map(|r| r.spec.id.as_str()).collect();
        assert_eq!(active, ["head"]);
        assert_eq!(r.services("head").len(), 1);
        assert!(r.services("worker").is_empty());
        assert_eq!(r.cluster.service_type.as_deref(), Some(defaults::DEFAULT_SERVICE_TYPE));
    }

    #[test]
    fn config_defaults_apply() {
        let config = KubeDirectorConfigSpec { default_service_type: Some("NodePort".into()), ..Default::default() };
        let r = resolve(&app(), &cluster(serde_json::json!([{"id": "head"}])), Some(&config)).expect("valid");
        assert_eq!(r.cluster.service_type.as_deref(), Some("NodePort"));
    }

    #[test]
    fn cluster_errors_name_the_field() {
        let err = resolve(&app(), &cluster(serde_json::json!([{"id": "head", "members": 2}])), None)
            .expect_err("head is exactly 1");
        assert!(err.to_string().contains("spec.roles"), "{err}");
    }

    #[test]
    fn app_errors_come_first() {
        let mut bad = app();
        bad.roles[0].config_package =
            Some(Some(SetupPackageUrl { package_url: "ftp://nowhere".into(), ..Default::default() }));
        let err = resolve(&bad, &cluster(serde_json::json!([{"id": "head", "members": 2}])), None)
            .expect_err("bad package URL");
        assert!(err.to_string().contains("configPackage"), "{err}");
    }
}
