//! kdfed extension: live upgrades of a running cluster's app. An app names the apps it
//! upgrades from (`spec.upgradeFrom`, same `distroID`) and optionally the order its roles
//! are upgraded in (`spec.upgradeRoleOrder`); a cluster's `spec.app`, otherwise read-only,
//! may change to such an app, or back to the app a running upgrade came from (a rollback).
//!
//! The rules here are pure: the app's own fields ([`app_errors`], called from
//! [`crate::validate::app`]), which apps a cluster may move to ([`targets`]) and whether a
//! change of a cluster is allowed ([`cluster_update`], for callers that can read the
//! catalog: the admission webhooks and the director).

use std::collections::HashSet;

use crate::app::KubeDirectorAppSpec;
use crate::cluster::{KubeDirectorClusterSpec, KubeDirectorClusterStatus, UpgradeStatus};
use crate::validate::{self, ValidationErrors};

/// Members are moving to the new app.
pub const PHASE_UPGRADING: &str = "Upgrading";
/// An upgrade script failed; the rollout stopped at `failedMember`.
pub const PHASE_FAILED: &str = "Failed";
/// Every member runs the new app.
pub const PHASE_COMPLETED: &str = "Completed";
/// Upgraded members are moving back to the app the upgrade came from.
pub const PHASE_ROLLING_BACK: &str = "RollingBack";
/// A rollback script failed; the rollback stopped at `failedMember`.
pub const PHASE_ROLLBACK_FAILED: &str = "RollbackFailed";
/// Every member runs the app the upgrade came from again.
pub const PHASE_ROLLED_BACK: &str = "RolledBack";

/// An app of the catalog, by name.
#[derive(Clone, Copy, Debug)]
pub struct CatalogApp<'a> {
    /// `metadata.name` of the app (what `spec.app` says).
    pub name: &'a str,
    /// Its spec.
    pub spec: &'a KubeDirectorAppSpec,
}

impl UpgradeStatus {
    /// Whether the rollout has not finished: members still run different apps.
    pub fn in_progress(&self) -> bool {
        !matches!(self.phase.as_str(), PHASE_COMPLETED | PHASE_ROLLED_BACK)
    }

    /// Whether this rollout goes back to the app an upgrade came from.
    pub fn is_rollback(&self) -> bool {
        matches!(self.phase.as_str(), PHASE_ROLLING_BACK | PHASE_ROLLBACK_FAILED | PHASE_ROLLED_BACK)
    }

    /// Whether a cluster now of app `current` may go back to `from` by rollback: during the
    /// rollout, or after an upgrade (not a rollback) completed.
    pub fn rollback_allowed(&self, current: &str) -> bool {
        self.to == current && (self.in_progress() || self.phase == PHASE_COMPLETED)
    }

    /// `Upgrading 2/3`, `Upgrade failed 1/3`, `Rolling back 1/3`, ... for lists; `None`
    /// once the rollout is over.
    pub fn progress(&self) -> Option<String> {
        let done = self.upgraded_members.len();
        let total = self.total_members.map_or(String::from("?"), |t| t.to_string());
        let what = match self.phase.as_str() {
            PHASE_UPGRADING => "Upgrading",
            PHASE_FAILED => "Upgrade failed",
            PHASE_ROLLING_BACK => "Rolling back",
            PHASE_ROLLBACK_FAILED => "Rollback failed",
            _ => return None,
        };
        Some(format!("{what} {done}/{total}"))
    }
}

/// Checks an app's upgrade fields: `upgradeFrom` names are app names, unique and not the
/// app's own; `upgradeRoleOrder` lists roles of the app, each once.
pub fn app_errors(spec: &KubeDirectorAppSpec, errors: &mut ValidationErrors) {
    let mut seen = HashSet::new();
    for (i, name) in spec.upgrade_from.iter().enumerate() {
        let path = format!("spec.upgradeFrom[{i}]");
        if !validate::is_dns_label(name) {
            errors.push(
                path.clone(),
                "app-name",
                format!("upgradeFrom({name}) must be the name of an app: lowercase letters, digits and '-', at most 63 characters."),
            );
        }
        if !seen.insert(name.as_str()) {
            errors.push(path, "unique-upgrade-from", format!("upgradeFrom lists {name} more than once."));
        }
    }
    let role_ids: Vec<&str> = spec.roles.iter().map(|r| r.id.as_str()).collect();
    let mut listed = HashSet::new();
    for (i, id) in spec.upgrade_role_order.iter().flatten().enumerate() {
        let path = format!("spec.upgradeRoleOrder[{i}]");
        if !role_ids.contains(&id.as_str()) {
            errors.push(
                path.clone(),
                "known-role",
                format!("Invalid role({id}) in upgradeRoleOrder. Valid roles: \"{}\"", role_ids.join(",")),
            );
        }
        if !listed.insert(id.as_str()) {
            errors.push(path, "unique-role-id", format!("upgradeRoleOrder lists role({id}) more than once."));
        }
    }
}

/// The order an app's roles are upgraded in: `upgradeRoleOrder`, then the roles it leaves
/// out in the order of `roles`. A rollback goes through the same order.
pub fn role_order(app: &KubeDirectorAppSpec) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let listed = app.upgrade_role_order.iter().flatten();
    for id in listed.chain(app.roles.iter().map(|r| &r.id)) {
        if app.role(id).is_some() && !order.contains(id) {
            order.push(id.clone());
        }
    }
    order
}

/// The apps of `catalog` a cluster of app `current` may be upgraded to: those of the same
/// `distroID` that list `current` in `upgradeFrom`, by name.
pub fn targets<'a>(current: &str, catalog: &[CatalogApp<'a>]) -> Vec<&'a str> {
    let distro = catalog.iter().find(|a| a.name == current).map(|a| a.spec.distro_id.as_str());
    let mut names: Vec<&'a str> = catalog
        .iter()
        .filter(|a| a.name != current && a.spec.upgrade_from.iter().any(|f| f == current))
        .filter(|a| distro.is_none_or(|d| d == a.spec.distro_id))
        .map(|a| a.name)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The apps a cluster now of app `current` may change `spec.app` to: during a rollout only
/// back to the app it came from (a rollback, or forward again after one); after a completed
/// upgrade its upgrade targets and the app it came from (a rollback); else its targets.
pub fn allowed_apps<'a>(
    current: &'a str,
    status: Option<&'a KubeDirectorClusterStatus>,
    catalog: &[CatalogApp<'a>],
) -> Vec<&'a str> {
    match status.and_then(|s| s.upgrade.as_ref()) {
        Some(u) if u.in_progress() && u.to == current => vec![u.from.as_str()],
        Some(u) if u.rollback_allowed(current) => {
            let mut allowed = targets(current, catalog);
            allowed.push(u.from.as_str());
            allowed.sort_unstable();
            allowed.dedup();
            allowed
        }
        _ => targets(current, catalog),
    }
}

/// Validates a change of a cluster with what the catalog says: a change of `spec.app` must
/// be to an allowed app (see [`allowed_apps`]) and must come alone; every other rule is
/// [`validate::cluster_update`]'s. The message of a refused change names the allowed apps.
pub fn cluster_update(
    old: &KubeDirectorClusterSpec,
    new: &KubeDirectorClusterSpec,
    old_status: Option<&KubeDirectorClusterStatus>,
    catalog: &[CatalogApp<'_>],
) -> Result<(), ValidationErrors> {
    if old.app == new.app {
        let rollout = old_status.and_then(|s| s.upgrade.as_ref()).filter(|u| u.in_progress());
        if let Some(u) = rollout.filter(|_| old != new) {
            let mut errors = ValidationErrors::default();
            errors.push(
                "spec",
                "upgrade-in-progress",
                format!(
                    "Change to spec not allowed while the app changes from app({}) to app({}) ({}); set spec.app to app({}) to go back.",
                    u.from, u.to, u.phase, u.from
                ),
            );
            return errors.into_result();
        }
        return validate::cluster_update(old, new, old_status);
    }
    let mut errors = ValidationErrors::default();
    let allowed = allowed_apps(&old.app, old_status, catalog);
    if !allowed.contains(&new.app.as_str()) {
        let list = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
        errors.push(
            "spec.app",
            "upgrade-target",
            format!(
                "The app property can change only to an app that upgrades from app({}) (its upgradeFrom lists it, same distroID) or back to the app a running upgrade came from. Allowed: {list}.",
                old.app
            ),
        );
    }
    let mut same_app = new.clone();
    same_app.app = old.app.clone();
    if &same_app != old {
        errors.push(
            "spec",
            "upgrade-alone",
            "An upgrade changes spec.app alone: change the other fields before or after it.",
        );
    }
    errors.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(version: &str, distro: &str, upgrade_from: &[&str]) -> KubeDirectorAppSpec {
        serde_json::from_value(json!({
            "label": {"name": "t"}, "distroID": distro, "version": version, "configSchemaVersion": 7,
            "defaultImageRepoTag": "img:1",
            "roles": [{"id": "head", "cardinality": "1"}, {"id": "worker", "cardinality": "0+"}],
            "config": {"selectedRoles": ["head", "worker"], "roleServices": []},
            "upgradeFrom": upgrade_from,
        }))
        .expect("app parses")
    }

    fn cluster(app: &str) -> KubeDirectorClusterSpec {
        serde_json::from_value(json!({"app": app, "roles": [{"id": "head"}, {"id": "worker", "members": 2}]}))
            .expect("cluster parses")
    }

    struct Catalog(Vec<(&'static str, KubeDirectorAppSpec)>);

    impl Catalog {
        fn standard() -> Catalog {
            Catalog(vec![
                ("db-1", app("1", "db", &[])),
                ("db-2", app("2", "db", &["db-1"])),
                ("db-3", app("3", "db", &["db-1", "db-2"])),
                ("other-2", app("2", "other", &["db-1"])),
            ])
        }

        fn apps(&self) -> Vec<CatalogApp<'_>> {
            self.0.iter().map(|(name, spec)| CatalogApp { name, spec }).collect()
        }
    }

    fn upgrading(from: &str, to: &str, phase: &str) -> KubeDirectorClusterStatus {
        KubeDirectorClusterStatus {
            upgrade: Some(UpgradeStatus {
                from: from.into(),
                to: to.into(),
                phase: phase.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn targets_list_apps_of_the_same_distro_that_upgrade_from_the_current_one() {
        let catalog = Catalog::standard();
        assert_eq!(targets("db-1", &catalog.apps()), ["db-2", "db-3"]);
        assert_eq!(targets("db-2", &catalog.apps()), ["db-3"]);
        assert!(targets("db-3", &catalog.apps()).is_empty());
    }

    #[test]
    fn an_upgrade_to_a_listed_app_is_allowed_and_others_name_the_allowed_ones() {
        let catalog = Catalog::standard();
        assert_eq!(cluster_update(&cluster("db-1"), &cluster("db-2"), None, &catalog.apps()), Ok(()));
        let err = cluster_update(&cluster("db-2"), &cluster("db-1"), None, &catalog.apps()).expect_err("downgrade");
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].path, "spec.app");
        assert_eq!(err.0[0].rule, "upgrade-target");
        assert!(err.0[0].message.ends_with("Allowed: db-3."), "{err}");
        let err = cluster_update(&cluster("db-1"), &cluster("other-2"), None, &catalog.apps()).expect_err("distro");
        assert!(err.to_string().contains("Allowed: db-2, db-3."), "{err}");
        let err = cluster_update(&cluster("db-3"), &cluster("db-1"), None, &catalog.apps()).expect_err("latest");
        assert!(err.to_string().contains("Allowed: none."), "{err}");
    }

    #[test]
    fn during_an_upgrade_only_the_way_back_is_allowed() {
        let catalog = Catalog::standard();
        let status = upgrading("db-1", "db-2", PHASE_FAILED);
        assert_eq!(cluster_update(&cluster("db-2"), &cluster("db-1"), Some(&status), &catalog.apps()), Ok(()));
        let err =
            cluster_update(&cluster("db-2"), &cluster("db-3"), Some(&status), &catalog.apps()).expect_err("mid-way");
        assert!(err.to_string().contains("Allowed: db-1."), "{err}");
        // A finished upgrade is the starting point of the next one.
        let done = upgrading("db-1", "db-2", PHASE_COMPLETED);
        assert_eq!(cluster_update(&cluster("db-2"), &cluster("db-3"), Some(&done), &catalog.apps()), Ok(()));
        // ... and it may still be rolled back.
        assert_eq!(cluster_update(&cluster("db-2"), &cluster("db-1"), Some(&done), &catalog.apps()), Ok(()));
        let rolled_back = upgrading("db-2", "db-1", PHASE_ROLLED_BACK);
        let err = cluster_update(&cluster("db-1"), &cluster("db-3"), Some(&rolled_back), &catalog.apps());
        assert_eq!(err, Ok(()), "db-3 upgrades from db-1");
        let mut only_from_2 = Catalog::standard();
        only_from_2.0[2].1.upgrade_from = vec!["db-2".into()];
        let err = cluster_update(&cluster("db-1"), &cluster("db-3"), Some(&rolled_back), &only_from_2.apps());
        assert!(err.expect_err("not from db-1").to_string().contains("Allowed: db-2."));
    }

    #[test]
    fn an_upgrade_changes_nothing_else() {
        let catalog = Catalog::standard();
        let mut grown = cluster("db-2");
        grown.roles[1].members = Some(3);
        let err = cluster_update(&cluster("db-1"), &grown, None, &catalog.apps()).expect_err("two changes");
        assert_eq!(err.0.iter().map(|e| e.rule).collect::<Vec<_>>(), ["upgrade-alone"]);
    }

    #[test]
    fn without_an_app_change_the_usual_update_rules_apply() {
        let catalog = Catalog::standard();
        let status = KubeDirectorClusterStatus { state: Some("configured".into()), ..Default::default() };
        let mut grown = cluster("db-1");
        grown.roles[1].members = Some(3);
        assert_eq!(cluster_update(&cluster("db-1"), &grown, Some(&status), &catalog.apps()), Ok(()));
        let mut relabelled = cluster("db-1");
        relabelled.naming_scheme = Some("UID".into());
        let mut named = cluster("db-1");
        named.naming_scheme = Some("CrNameRole".into());
        assert!(cluster_update(&named, &relabelled, Some(&status), &catalog.apps()).is_err());
    }

    #[test]
    fn nothing_else_changes_while_a_rollout_runs() {
        let catalog = Catalog::standard();
        let status = upgrading("db-1", "db-2", PHASE_UPGRADING);
        let mut grown = cluster("db-2");
        grown.roles[1].members = Some(3);
        let err = cluster_update(&cluster("db-2"), &grown, Some(&status), &catalog.apps()).expect_err("mid-upgrade");
        assert_eq!(err.0[0].rule, "upgrade-in-progress");
        assert!(err.0[0].message.contains("set spec.app to app(db-1) to go back"), "{err}");
        assert_eq!(cluster_update(&cluster("db-2"), &cluster("db-2"), Some(&status), &catalog.apps()), Ok(()));
    }

    #[test]
    fn app_fields_are_checked_with_their_paths() {
        let mut a = app("2", "db", &["db-1", "DB_1", "db-1"]);
        a.upgrade_role_order = Some(vec!["worker".into(), "ghost".into(), "worker".into()]);
        let mut errors = ValidationErrors::default();
        app_errors(&a, &mut errors);
        let found: Vec<(String, &str)> = errors.0.iter().map(|e| (e.path.clone(), e.rule)).collect();
        assert_eq!(
            found,
            [
                ("spec.upgradeFrom[1]".to_string(), "app-name"),
                ("spec.upgradeFrom[2]".to_string(), "unique-upgrade-from"),
                ("spec.upgradeRoleOrder[1]".to_string(), "known-role"),
                ("spec.upgradeRoleOrder[2]".to_string(), "unique-role-id"),
            ]
        );
    }

    #[test]
    fn roles_upgrade_in_the_listed_order_then_the_app_s_order() {
        let mut a = app("2", "db", &[]);
        assert_eq!(role_order(&a), ["head", "worker"]);
        a.upgrade_role_order = Some(vec!["worker".into()]);
        assert_eq!(role_order(&a), ["worker", "head"]);
    }

    #[test]
    fn progress_reads_like_a_list_column() {
        let mut u = upgrading("db-1", "db-2", PHASE_UPGRADING).upgrade.expect("upgrade");
        u.upgraded_members = vec!["a".into(), "b".into()];
        u.total_members = Some(3);
        assert_eq!(u.progress().as_deref(), Some("Upgrading 2/3"));
        u.phase = PHASE_COMPLETED.into();
        assert_eq!(u.progress(), None);
        assert!(!u.in_progress());
    }
}
