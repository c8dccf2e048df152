//! The catalog as end users see it: each app with its roles (and how many members each may
//! have), services and config choices; the launch form is built from the same view.

use kdfed_crds::KubeDirectorApp;
use kdfed_crds::app::{Cardinality, KubeDirectorAppSpec};
use kube::ResourceExt;

/// One app of the catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct AppView {
    /// Namespace the app lives in.
    pub namespace: String,
    /// `metadata.name` (what a cluster's `spec.app` names).
    pub name: String,
    /// `local` (the user's namespace) or `system` (the platform's catalog).
    pub catalog: &'static str,
    /// Display name.
    pub label: String,
    /// Description, empty when the app has none.
    pub description: String,
    /// Version.
    pub version: String,
    /// Distro id.
    pub distro: String,
    /// Roles, in the app's order.
    pub roles: Vec<RoleView>,
    /// Services.
    pub services: Vec<ServiceView>,
    /// Config choices (none for most upstream apps).
    pub choices: Vec<ChoiceView>,
}

/// A role of an app.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleView {
    /// Role id.
    pub id: String,
    /// The app's cardinality text (`1`, `2+`).
    pub cardinality: String,
    /// Fewest members.
    pub min: i32,
    /// Most members, when the count is fixed.
    pub max: Option<i32>,
    /// Whether the base config selects the role (others run only with some choices).
    pub selected: bool,
    /// Ids of the services the role runs (base config).
    pub services: Vec<String>,
    /// Smallest storage a member may ask for, if the app says.
    pub min_storage: Option<String>,
}

/// A service of an app.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceView {
    /// Service id.
    pub id: String,
    /// Display name (the id when the app gives none).
    pub name: String,
    /// `http`, `ssh`, ... or empty.
    pub scheme: String,
    /// Port, when the app says.
    pub port: Option<i32>,
    /// Whether users open it in a browser.
    pub dashboard: bool,
}

/// A config choice of an app.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceView {
    /// Choice id (the key of `spec.configChoices`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Description, may be empty.
    pub description: String,
    /// Values in the order offered.
    pub values: Vec<String>,
    /// The value clusters get when they do not choose.
    pub default: String,
    /// Whether a running cluster may change it.
    pub mutable: bool,
}

impl ChoiceView {
    /// Whether `value` is the default.
    pub fn is_default(&self, value: &str) -> bool {
        self.default == value
    }
}

impl RoleView {
    /// How many members the form proposes: the minimum.
    pub fn default_members(&self) -> i32 {
        self.min
    }

    /// `exactly 1`, `2 or more`: the cardinality in words.
    pub fn count_rule(&self) -> String {
        match self.max {
            Some(n) => format!("exactly {n}"),
            None => format!("{} or more", self.min),
        }
    }
}

/// The view of `app`; `system_namespace` tells the platform's catalog apart.
pub fn app_view(app: &KubeDirectorApp, system_namespace: &str) -> AppView {
    let spec = &app.spec;
    let namespace = app.namespace().unwrap_or_default();
    AppView {
        catalog: if namespace == system_namespace { "system" } else { "local" },
        namespace,
        name: app.name_any(),
        label: spec.label.name.clone(),
        description: spec.label.description.clone().unwrap_or_default(),
        version: spec.version.clone(),
        distro: spec.distro_id.clone(),
        roles: roles(spec),
        services: spec
            .services
            .iter()
            .map(|s| {
                let endpoint = s.endpoint.clone().unwrap_or_default();
                ServiceView {
                    id: s.id.clone(),
                    name: s.label.as_ref().map_or_else(|| s.id.clone(), |l| l.name.clone()),
                    scheme: endpoint.url_scheme.unwrap_or_default(),
                    port: endpoint.port,
                    dashboard: endpoint.is_dashboard == Some(true),
                }
            })
            .collect(),
        choices: spec
            .config_choices
            .iter()
            .map(|c| ChoiceView {
                id: c.id.clone(),
                name: c.label.name.clone(),
                description: c.label.description.clone().unwrap_or_default(),
                values: c.values.clone(),
                default: kdfed_crds::choices::default_value(c).unwrap_or_default().to_string(),
                mutable: c.mutable == Some(true),
            })
            .collect(),
    }
}

fn roles(spec: &KubeDirectorAppSpec) -> Vec<RoleView> {
    spec.roles
        .iter()
        .map(|r| {
            let card = Cardinality::parse(&r.cardinality);
            RoleView {
                id: r.id.clone(),
                cardinality: r.cardinality.clone(),
                min: card.as_ref().map_or(0, |c| c.min),
                max: card.as_ref().filter(|c| !c.scale_out).map(|c| c.min),
                selected: spec.config.selected_roles.contains(&r.id),
                services: spec.role_services(&r.id).iter().map(|s| s.id.clone()).collect(),
                min_storage: r.min_storage.as_ref().map(|m| m.size.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn greeter() -> KubeDirectorApp {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorApp",
            "metadata": {"name": "greeter", "namespace": "kdfed-system"},
            "spec": {
                "label": {"name": "Greeter", "description": "Says hello"},
                "distroID": "demo/greeter", "version": "2", "configSchemaVersion": 8,
                "defaultImageRepoTag": "example/greeter:2",
                "services": [
                    {"id": "web", "label": {"name": "Web UI"}, "endpoint": {"urlScheme": "http", "port": 8080, "isDashboard": true}},
                    {"id": "ssh", "endpoint": {"urlScheme": "ssh", "port": 22}}
                ],
                "roles": [
                    {"id": "head", "cardinality": "1", "minStorage": {"size": "1Gi"}},
                    {"id": "worker", "cardinality": "2+"}
                ],
                "config": {"selectedRoles": ["head", "worker"],
                    "roleServices": [{"roleID": "head", "serviceIDs": ["web", "ssh"]}, {"roleID": "worker", "serviceIDs": ["ssh"]}]},
                "configChoices": [
                    {"id": "language", "label": {"name": "Language"}, "values": ["en", "fr"], "default": "fr", "mutable": true},
                    {"id": "size", "label": {"name": "Size"}, "values": ["s", "l"]}
                ]
            }
        }))
        .expect("app")
    }

    #[test]
    fn an_app_shows_roles_with_their_counts_services_and_choices() {
        let view = app_view(&greeter(), "kdfed-system");
        assert_eq!((view.catalog, view.label.as_str(), view.version.as_str()), ("system", "Greeter", "2"));
        let head = &view.roles[0];
        assert_eq!((head.min, head.max, head.count_rule()), (1, Some(1), "exactly 1".to_string()));
        assert_eq!(head.services, ["web", "ssh"]);
        assert_eq!(head.min_storage.as_deref(), Some("1Gi"));
        let worker = &view.roles[1];
        assert_eq!((worker.min, worker.max, worker.count_rule()), (2, None, "2 or more".to_string()));
        assert_eq!(view.services[0].name, "Web UI");
        assert!(view.services[0].dashboard && !view.services[1].dashboard);
        assert_eq!(view.services[1].name, "ssh", "the id when the app names none");
        assert_eq!(view.choices[0].default, "fr");
        assert!(view.choices[0].mutable);
        assert_eq!(view.choices[1].default, "s", "the first value when the app names no default");
        assert!(!view.choices[1].mutable);
    }

    #[test]
    fn an_app_in_the_user_s_namespace_is_local_and_may_have_no_choices() {
        let mut app = greeter();
        app.metadata.namespace = Some("team-a".into());
        app.spec.config_choices.clear();
        let view = app_view(&app, "kdfed-system");
        assert_eq!(view.catalog, "local");
        assert!(view.choices.is_empty());
    }
}
