//! Defaulting, as upstream KubeDirector's admission webhook does it, as pure functions.
//! Defaulting only adds values; it never removes what the user wrote.

use crate::app::{Cardinality, KubeDirectorAppSpec};
use crate::cluster::{KubeDirectorClusterSpec, NAMING_SCHEME_UID};
use crate::config::KubeDirectorConfigSpec;

/// Service type when neither the cluster nor `KubeDirectorConfig` names one (upstream's default).
pub const DEFAULT_SERVICE_TYPE: &str = "LoadBalancer";
/// Naming scheme when neither the cluster nor `KubeDirectorConfig` names one (upstream's default).
pub const DEFAULT_NAMING_SCHEME: &str = NAMING_SCHEME_UID;
/// DNS domain base of services when `KubeDirectorConfig` names none.
pub const DEFAULT_SVC_DOMAIN_BASE: &str = ".svc.cluster.local";
/// Bytes of setup-script output kept in status when the app names no limit.
pub const DEFAULT_MAX_LOG_SIZE_DUMP: i32 = 1024;

/// Fills each role's image, setup package, persistent dirs, event list and log size from
/// the app-level defaults, as upstream does at admission.
pub fn app(spec: &mut KubeDirectorAppSpec) {
    let image = spec.default_image_repo_tag.clone();
    let package = spec.default_config_package.clone();
    let persist = spec.default_persist_dirs.clone();
    let events = spec.default_event_list.clone();
    let log_size = spec.default_max_log_size_dump;
    for role in &mut spec.roles {
        if role.image_repo_tag.is_none() {
            role.image_repo_tag = image.clone();
        }
        if role.config_package.is_none() {
            // An unset role package inherits the default; an unset default means "none".
            role.config_package = Some(package.clone().flatten());
        }
        if role.persist_dirs.is_none() {
            role.persist_dirs = persist.clone();
        }
        if role.event_list.is_none() {
            role.event_list = events.clone();
        }
        if role.max_log_size_dump.is_none() {
            role.max_log_size_dump = log_size;
        }
    }
}

/// Fills config choices from the app's defaults, member counts from the app's cardinalities
/// (0 for roles the chosen config leaves out), and service type and naming scheme
/// from `KubeDirectorConfig` or upstream's defaults.
pub fn cluster(spec: &mut KubeDirectorClusterSpec, app: &KubeDirectorAppSpec, config: Option<&KubeDirectorConfigSpec>) {
    // Choices the cluster leaves out take the app's defaults; roles the chosen config does
    // not select default to no members.
    for (id, value) in crate::choices::chosen_values(app, &spec.config_choices) {
        spec.config_choices.entry(id).or_insert(value);
    }
    let chosen = crate::choices::chosen_app(app, &spec.config_choices);
    for role in &mut spec.roles {
        if role.members.is_none()
            && let Some(card) = app.role(&role.id).and_then(|r| Cardinality::parse(&r.cardinality))
        {
            let off = crate::choices::role_off(app, &chosen.config, &role.id);
            role.members = Some(if off { 0 } else { card.min });
        }
    }
    if spec.service_type.is_none() {
        let configured = config.and_then(|c| c.default_service_type.clone());
        spec.service_type = Some(configured.unwrap_or_else(|| DEFAULT_SERVICE_TYPE.to_string()));
    }
    if spec.naming_scheme.is_none() {
        let configured = config.and_then(|c| c.default_naming_scheme.clone());
        spec.naming_scheme = Some(configured.unwrap_or_else(|| DEFAULT_NAMING_SCHEME.to_string()));
    }
    if let Some(default_class) = config.and_then(|c| c.default_storage_class_name.as_ref()) {
        for role in &mut spec.roles {
            if let Some(storage) = role.storage.as_mut()
                && storage.storage_class_name.is_none()
            {
                storage.storage_class_name = Some(default_class.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{NodeRole, SetupPackageUrl};
    use crate::cluster::{ClusterStorage, Role};

    fn two_role_app() -> KubeDirectorAppSpec {
        KubeDirectorAppSpec {
            default_image_repo_tag: Some("img:1".into()),
            default_config_package: Some(Some(SetupPackageUrl {
                package_url: "file:///opt/pkg.tgz".into(),
                use_new_setup_layout: None,
            })),
            default_persist_dirs: Some(vec!["/data".into()]),
            roles: vec![
                NodeRole { id: "a".into(), cardinality: "1".into(), ..Default::default() },
                NodeRole {
                    id: "b".into(),
                    cardinality: "2+".into(),
                    image_repo_tag: Some("own:2".into()),
                    config_package: Some(None),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn roles_inherit_app_defaults_but_keep_their_own_values() {
        let mut app = two_role_app();
        super::app(&mut app);
        assert_eq!(app.roles[0].image_repo_tag.as_deref(), Some("img:1"));
        assert_eq!(app.roles[1].image_repo_tag.as_deref(), Some("own:2"));
        let inherited = app.roles[0].config_package.clone().flatten();
        assert_eq!(inherited.map(|p| p.package_url).as_deref(), Some("file:///opt/pkg.tgz"));
        assert_eq!(app.roles[1].config_package, Some(None), "explicit null stays null");
        assert_eq!(app.roles[0].persist_dirs, Some(vec!["/data".to_string()]));
        assert!(app.default_image_repo_tag.is_some(), "defaults are kept, not removed");
    }

    #[test]
    fn members_default_to_minimum_cardinality_and_config_fills_globals() {
        let app = two_role_app();
        let mut spec = KubeDirectorClusterSpec {
            app: "x".into(),
            roles: vec![
                Role { id: "a".into(), ..Default::default() },
                Role {
                    id: "b".into(),
                    members: Some(5),
                    storage: Some(ClusterStorage { size: "1Gi".into(), storage_class_name: None }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let config = KubeDirectorConfigSpec {
            default_service_type: Some("NodePort".into()),
            default_storage_class_name: Some("fast".into()),
            ..Default::default()
        };
        cluster(&mut spec, &app, Some(&config));
        assert_eq!(spec.roles[0].members, Some(1));
        assert_eq!(spec.roles[1].members, Some(5));
        assert_eq!(spec.service_type.as_deref(), Some("NodePort"));
        assert_eq!(spec.naming_scheme.as_deref(), Some("UID"));
        let class = spec.roles[1].storage.as_ref().and_then(|s| s.storage_class_name.as_deref());
        assert_eq!(class, Some("fast"));
    }
}
