//! kdfed's deploy-time config choices: an app lists choices (`spec.configChoices`) and
//! conditional configs (`spec.config.conditional`); a cluster picks values
//! (`spec.configChoices`). This module holds their rules as pure functions: the chosen
//! values (defaults filled in), the merge of the matching conditional configs over the
//! base config, and the validation of apps, clusters and changes. The validators in
//! [`crate::validate`] call it with one line each.
//!
//! The merge, in the order the app lists its conditional configs, every one whose `when`
//! entries all match the chosen values: `selectedRoles` are added (a role already selected
//! stays where it is), `roleServices` add their services to the role's entry (or add the
//! entry), `configMeta` keys are set (a later matching config overrides an earlier one, and
//! both override the base). An app without choices is left exactly as it is.

use std::collections::{BTreeMap, BTreeSet};

use crate::app::{ConfigChoice, KubeDirectorAppSpec, NodeGroupConfig};
use crate::cluster::KubeDirectorClusterSpec;
use crate::validate::{ValidationErrors, is_label_value};

/// Whether the app declares choices or conditional configs (else nothing here applies and
/// the app behaves exactly as upstream's).
pub fn has_choices(app: &KubeDirectorAppSpec) -> bool {
    !app.config_choices.is_empty() || !app.config.conditional.is_empty()
}

/// The value a cluster that does not choose gets: `default`, else the first value.
pub fn default_value(choice: &ConfigChoice) -> Option<&str> {
    choice.default.as_deref().or_else(|| choice.values.first().map(String::as_str))
}

/// Every choice of `app` with its value: the cluster's where it names one, else the
/// default. Ids the app does not have are left out (validation reports them).
pub fn chosen_values(app: &KubeDirectorAppSpec, wanted: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    app.config_choices
        .iter()
        .filter_map(|c| {
            let value = wanted.get(&c.id).map(String::as_str).or_else(|| default_value(c))?;
            Some((c.id.clone(), value.to_string()))
        })
        .collect()
}

/// Whether a conditional config's `when` matches `values` (every entry; an empty `when`
/// never matches).
pub fn matches(when: &BTreeMap<String, String>, values: &BTreeMap<String, String>) -> bool {
    !when.is_empty() && when.iter().all(|(id, value)| values.get(id) == Some(value))
}

/// The base config with every matching conditional config merged over it, in listed order
/// (see the module header). The conditional configs stay listed (builders declare every
/// port a role may ever serve from them); they are not applied again.
pub fn merged_config(config: &NodeGroupConfig, values: &BTreeMap<String, String>) -> NodeGroupConfig {
    let mut out = config.clone();
    for cond in config.conditional.iter().filter(|c| matches(&c.when, values)) {
        for role in &cond.selected_roles {
            if !out.selected_roles.contains(role) {
                out.selected_roles.push(role.clone());
            }
        }
        for rs in &cond.role_services {
            match out.role_services.iter_mut().find(|e| e.role_id == rs.role_id) {
                Some(entry) => {
                    for id in &rs.service_ids {
                        if !entry.service_ids.contains(id) {
                            entry.service_ids.push(id.clone());
                        }
                    }
                }
                None => out.role_services.push(rs.clone()),
            }
        }
        if let Some(meta) = &cond.config_meta {
            out.config_meta.get_or_insert_default().extend(meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    out
}

/// The app as a cluster's choices make it: `config` merged (see [`merged_config`]). An app
/// without choices is returned unchanged.
pub fn chosen_app(app: &KubeDirectorAppSpec, wanted: &BTreeMap<String, String>) -> KubeDirectorAppSpec {
    let mut out = app.clone();
    if has_choices(app) {
        out.config = merged_config(&app.config, &chosen_values(app, wanted));
    }
    out
}

/// Whether the chosen config of a choice app leaves `role_id` out (such a role runs no
/// members); always false for apps without choices, which keep upstream's rules.
pub fn role_off(app: &KubeDirectorAppSpec, chosen: &NodeGroupConfig, role_id: &str) -> bool {
    has_choices(app) && !chosen.selected_roles.iter().any(|r| r == role_id)
}

/// `id=value,...` of chosen values, for messages.
pub fn described(values: &BTreeMap<String, String>) -> String {
    values.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn quoted_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items.into_iter().collect::<Vec<_>>().join(",")
}

/// The app's rules for choices and conditional configs, added to `errors`.
pub fn app_errors(app: &KubeDirectorAppSpec, errors: &mut ValidationErrors) {
    let mut seen = BTreeSet::new();
    for (i, choice) in app.config_choices.iter().enumerate() {
        choice_errors(choice, &format!("spec.configChoices[{i}]"), errors);
        if !seen.insert(choice.id.as_str()) {
            errors.push(
                format!("spec.configChoices[{i}].id"),
                "unique-choice-id",
                "Each id in the configChoices array must be unique.",
            );
        }
    }
    for (j, cond) in app.config.conditional.iter().enumerate() {
        conditional_errors(app, j, cond, errors);
    }
}

fn choice_errors(choice: &ConfigChoice, path: &str, errors: &mut ValidationErrors) {
    if choice.id.is_empty() || !is_label_value(&choice.id) {
        errors.push(
            format!("{path}.id"),
            "choice-id-format",
            format!(
                "Choice id({}) must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit.",
                choice.id
            ),
        );
    }
    if choice.label.name.is_empty() {
        errors.push(format!("{path}.label.name"), "required", format!("Choice({}) must have a name.", choice.id));
    }
    if choice.values.is_empty() {
        errors.push(
            format!("{path}.values"),
            "required",
            format!("Choice({}) must list at least one value.", choice.id),
        );
    }
    let mut seen = BTreeSet::new();
    for (k, value) in choice.values.iter().enumerate() {
        if value.is_empty() || !is_label_value(value) {
            errors.push(
                format!("{path}.values[{k}]"),
                "choice-value-format",
                format!("Value({value}) of choice({}) must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit.", choice.id),
            );
        }
        if !seen.insert(value.as_str()) {
            errors.push(
                format!("{path}.values[{k}]"),
                "unique-choice-value",
                format!("Each value of choice({}) must be unique.", choice.id),
            );
        }
    }
    if let Some(default) = &choice.default
        && !choice.values.contains(default)
    {
        errors.push(
            format!("{path}.default"),
            "choice-value",
            format!(
                "Default({default}) of choice({}) is not one of its values. Valid values: \"{}\"",
                choice.id,
                quoted_list(choice.values.iter().map(String::as_str))
            ),
        );
    }
}

fn conditional_errors(
    app: &KubeDirectorAppSpec,
    j: usize,
    cond: &crate::app::ConditionalConfig,
    errors: &mut ValidationErrors,
) {
    let path = format!("spec.config.conditional[{j}]");
    let valid_choices = quoted_list(app.config_choices.iter().map(|c| c.id.as_str()));
    if cond.when.is_empty() {
        errors.push(
            format!("{path}.when"),
            "required",
            "A conditional config must name at least one choice and value in when.",
        );
    }
    for (id, value) in &cond.when {
        match app.config_choices.iter().find(|c| &c.id == id) {
            None => errors.push(
                format!("{path}.when[{id}]"),
                "known-choice",
                format!("Invalid choice({id}) in conditional config. Valid choices: \"{valid_choices}\""),
            ),
            Some(choice) if !choice.values.contains(value) => errors.push(
                format!("{path}.when[{id}]"),
                "choice-value",
                format!(
                    "Invalid value({value}) of choice({id}) in conditional config. Valid values: \"{}\"",
                    quoted_list(choice.values.iter().map(String::as_str))
                ),
            ),
            Some(_) => {}
        }
    }
    let role_ids: Vec<&str> = app.roles.iter().map(|r| r.id.as_str()).collect();
    let valid_roles = quoted_list(role_ids.iter().copied());
    for (k, role) in cond.selected_roles.iter().enumerate() {
        if !role_ids.contains(&role.as_str()) {
            errors.push(
                format!("{path}.selectedRoles[{k}]"),
                "known-role",
                format!("Invalid element({role}) in selectedRoles array in conditional config. Valid roles: \"{valid_roles}\""),
            );
        }
    }
    let valid_services = quoted_list(app.services.iter().map(|s| s.id.as_str()));
    for (k, rs) in cond.role_services.iter().enumerate() {
        if !role_ids.contains(&rs.role_id.as_str()) {
            errors.push(
                format!("{path}.roleServices[{k}].roleID"),
                "known-role",
                format!(
                    "Invalid roleID({}) in roleServices array in conditional config. Valid roles: \"{valid_roles}\"",
                    rs.role_id
                ),
            );
        }
        for (m, sid) in rs.service_ids.iter().enumerate() {
            if app.service(sid).is_none() {
                errors.push(
                    format!("{path}.roleServices[{k}].serviceIDs[{m}]"),
                    "known-service",
                    format!("Invalid service_id({sid}) in roleServices array in conditional config. Valid services: \"{valid_services}\""),
                );
            }
        }
    }
}

/// The cluster's rules for choices, added to `errors`: known choice ids, values the choice
/// offers, no members on a role the chosen config does not select, and no role serving
/// two services on one port once merged. `spec` is defaulted.
pub fn cluster_errors(
    spec: &KubeDirectorClusterSpec,
    app_name: &str,
    app: &KubeDirectorAppSpec,
    errors: &mut ValidationErrors,
) {
    let valid_choices = quoted_list(app.config_choices.iter().map(|c| c.id.as_str()));
    for (id, value) in &spec.config_choices {
        let path = format!("spec.configChoices[{id}]");
        match app.config_choices.iter().find(|c| &c.id == id) {
            None if app.config_choices.is_empty() => errors.push(
                path,
                "known-choice",
                format!("Invalid choice({id}): app({app_name}) has no config choices."),
            ),
            None => errors.push(
                path,
                "known-choice",
                format!("Invalid choice({id}) for app({app_name}). Valid choices: \"{valid_choices}\""),
            ),
            Some(choice) if !choice.values.contains(value) => errors.push(
                path,
                "choice-value",
                format!(
                    "Invalid value({value}) of choice({id}) for app({app_name}). Valid values: \"{}\"",
                    quoted_list(choice.values.iter().map(String::as_str))
                ),
            ),
            Some(_) => {}
        }
    }
    if !has_choices(app) {
        return;
    }
    let chosen = chosen_app(app, &spec.config_choices);
    let selected = quoted_list(chosen.config.selected_roles.iter().map(String::as_str));
    let said = described(&chosen_values(app, &spec.config_choices));
    for (i, role) in spec.roles.iter().enumerate() {
        if role.members.unwrap_or(0) > 0 && role_off(app, &chosen.config, &role.id) {
            errors.push(
                format!("spec.roles[{i}].members"),
                "role-not-selected",
                format!(
                    "Role({}) is not selected by the config of choices({said}) and cannot have members. Selected roles: \"{selected}\"",
                    role.id
                ),
            );
        }
    }
    port_errors(&chosen, &said, errors);
}

/// Two services of one role on the same port, once the conditional configs are merged: a
/// member's Service could not be created.
fn port_errors(chosen: &KubeDirectorAppSpec, said: &str, errors: &mut ValidationErrors) {
    for rs in &chosen.config.role_services {
        let mut seen: BTreeMap<i32, &str> = BTreeMap::new();
        for sid in &rs.service_ids {
            let Some(port) = chosen.service(sid).and_then(|s| s.endpoint.as_ref()?.port) else { continue };
            if let Some(other) = seen.insert(port, sid.as_str())
                && other != sid
            {
                errors.push(
                    "spec.configChoices",
                    "unique-port",
                    format!(
                        "With choices({said}) services {other} and {sid} of role {} both use port {port}; a member's Service cannot expose one port twice.",
                        rs.role_id
                    ),
                );
            }
        }
    }
}

/// The rule for changes of a cluster's choices: a value in effect (chosen or defaulted)
/// changes only where the app marks the choice `mutable`.
pub fn update_errors(
    old: &KubeDirectorClusterSpec,
    new: &KubeDirectorClusterSpec,
    app: &KubeDirectorAppSpec,
    errors: &mut ValidationErrors,
) {
    let (before, after) = (chosen_values(app, &old.config_choices), chosen_values(app, &new.config_choices));
    let mutable: Vec<&str> =
        app.config_choices.iter().filter(|c| c.mutable == Some(true)).map(|c| c.id.as_str()).collect();
    for choice in &app.config_choices {
        let id = choice.id.as_str();
        if before.get(id) == after.get(id) || mutable.contains(&id) {
            continue;
        }
        let allowed = if mutable.is_empty() {
            "none".to_string()
        } else {
            format!("\"{}\"", quoted_list(mutable.iter().copied()))
        };
        errors.push(
            format!("spec.configChoices[{id}]"),
            "choice-immutable",
            format!(
                "Choice({id}) is fixed once the cluster is created (it was {}). Choices that may change: {allowed}",
                before.get(id).map(String::as_str).unwrap_or("unset")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate;
    use serde_json::json;

    /// Spark-like: `jupyter` (fixed) adds the notebook role and its service; `logLevel`
    /// (mutable) sets a configMeta key; both `true` and `DEBUG` add a debug service.
    fn app() -> KubeDirectorAppSpec {
        serde_json::from_value(json!({
            "label": {"name": "s"}, "distroID": "s", "version": "1", "configSchemaVersion": 8,
            "defaultImageRepoTag": "img:1",
            "services": [
                {"id": "ui", "endpoint": {"port": 8080}},
                {"id": "nb", "endpoint": {"port": 8888}},
                {"id": "dbg", "endpoint": {"port": 5005}},
                {"id": "clash", "endpoint": {"port": 8080}}
            ],
            "roles": [{"id": "head", "cardinality": "1"}, {"id": "notebook", "cardinality": "1"}],
            "configChoices": [
                {"id": "jupyter", "label": {"name": "Notebook"}, "values": ["true", "false"], "default": "false"},
                {"id": "logLevel", "label": {"name": "Log level"}, "values": ["INFO", "DEBUG"], "mutable": true}
            ],
            "config": {
                "selectedRoles": ["head"],
                "roleServices": [{"roleID": "head", "serviceIDs": ["ui"]}],
                "configMeta": {"level": "INFO", "keep": "yes"},
                "conditional": [
                    {"when": {"jupyter": "true"}, "selectedRoles": ["notebook", "head"],
                     "roleServices": [{"roleID": "notebook", "serviceIDs": ["nb"]}],
                     "configMeta": {"notebook": "on"}},
                    {"when": {"logLevel": "DEBUG"}, "configMeta": {"level": "DEBUG"}},
                    {"when": {"logLevel": "DEBUG", "jupyter": "true"},
                     "roleServices": [{"roleID": "head", "serviceIDs": ["dbg", "ui"]}],
                     "configMeta": {"level": "TRACE"}}
                ]
            }
        }))
        .expect("app")
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    fn cluster(choices: &[(&str, &str)], roles: serde_json::Value) -> KubeDirectorClusterSpec {
        let mut spec: KubeDirectorClusterSpec =
            serde_json::from_value(json!({"app": "s", "roles": roles})).expect("cluster");
        spec.config_choices = values(choices);
        spec
    }

    #[test]
    fn defaults_fill_the_choices_a_cluster_leaves_out() {
        let app = app();
        assert_eq!(chosen_values(&app, &BTreeMap::new()), values(&[("jupyter", "false"), ("logLevel", "INFO")]));
        assert_eq!(
            chosen_values(&app, &values(&[("logLevel", "DEBUG"), ("ghost", "x")])),
            values(&[("jupyter", "false"), ("logLevel", "DEBUG")]),
            "the first value without a default; unknown ids are left to validation"
        );
    }

    #[test]
    fn matching_conditionals_add_roles_and_services_and_override_meta_in_listed_order() {
        let app = app();
        let base = merged_config(&app.config, &values(&[("jupyter", "false"), ("logLevel", "INFO")]));
        assert_eq!(base, app.config, "nothing matches: the base config");
        let all = merged_config(&app.config, &values(&[("jupyter", "true"), ("logLevel", "DEBUG")]));
        assert_eq!(all.selected_roles, ["head", "notebook"], "added once, in order");
        let services: Vec<(&str, Vec<&str>)> = all
            .role_services
            .iter()
            .map(|rs| (rs.role_id.as_str(), rs.service_ids.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(services, [("head", vec!["ui", "dbg"]), ("notebook", vec!["nb"])]);
        let meta = all.config_meta.expect("meta");
        assert_eq!(meta, values(&[("keep", "yes"), ("level", "TRACE"), ("notebook", "on")]), "the last match wins");
        let debug = merged_config(&app.config, &values(&[("jupyter", "false"), ("logLevel", "DEBUG")]));
        assert_eq!(debug.config_meta.and_then(|m| m.get("level").cloned()).as_deref(), Some("DEBUG"));
        assert!(!matches(&BTreeMap::new(), &values(&[("jupyter", "true")])), "an empty when never matches");
    }

    #[test]
    fn an_app_without_choices_is_left_as_it_is() {
        let mut plain = app();
        plain.config_choices.clear();
        plain.config.conditional.clear();
        assert!(!has_choices(&plain));
        assert_eq!(chosen_app(&plain, &values(&[("jupyter", "true")])), plain);
        assert!(!role_off(&plain, &plain.config, "notebook"), "upstream's rules for roles outside selectedRoles");
    }

    #[test]
    fn bad_choices_and_conditionals_are_refused_naming_the_field() {
        let mut bad = app();
        bad.config_choices[0].default = Some("maybe".into());
        bad.config_choices[1].values.push("INFO".into());
        bad.config_choices.push(bad.config_choices[0].clone());
        bad.config.conditional[0].when = values(&[("ghost", "x")]);
        bad.config.conditional[1].when = values(&[("logLevel", "LOUD")]);
        bad.config.conditional[2].selected_roles = vec!["nobody".into()];
        let e = validate::app(&bad).expect_err("invalid");
        let found: Vec<(&str, &str)> = e.0.iter().map(|e| (e.path.as_str(), e.rule)).collect();
        assert_eq!(
            found,
            [
                ("spec.configChoices[0].default", "choice-value"),
                ("spec.configChoices[1].values[2]", "unique-choice-value"),
                ("spec.configChoices[2].default", "choice-value"),
                ("spec.configChoices[2].id", "unique-choice-id"),
                ("spec.config.conditional[0].when[ghost]", "known-choice"),
                ("spec.config.conditional[1].when[logLevel]", "choice-value"),
                ("spec.config.conditional[2].selectedRoles[0]", "known-role"),
            ]
        );
        assert!(e.0[0].message.ends_with("Valid values: \"true,false\""), "{}", e.0[0].message);
        assert!(e.0[4].message.ends_with("Valid choices: \"jupyter,logLevel,jupyter\""), "{}", e.0[4].message);
        assert_eq!(validate::app(&app()), Ok(()));
    }

    #[test]
    fn a_cluster_names_known_choices_and_offered_values() {
        let roles = json!([{"id": "head"}]);
        let resolve = |c: &KubeDirectorClusterSpec| crate::resolve(&app(), c, None);
        let r = resolve(&cluster(&[], roles.clone())).expect("defaults are valid");
        assert_eq!(r.choices, values(&[("jupyter", "false"), ("logLevel", "INFO")]));
        assert_eq!(r.cluster.config_choices, r.choices, "defaulted into the spec");
        let e = resolve(&cluster(&[("jupyter", "maybe"), ("color", "red")], roles)).expect_err("bad");
        assert_eq!(
            e.to_string(),
            "spec.configChoices[color]: Invalid choice(color) for app(s). Valid choices: \"jupyter,logLevel\" (rule: known-choice)\n\
             spec.configChoices[jupyter]: Invalid value(maybe) of choice(jupyter) for app(s). Valid values: \"true,false\" (rule: choice-value)"
        );
    }

    #[test]
    fn only_selected_roles_take_members_and_required_ones_must_be_listed() {
        let resolve = |c: &KubeDirectorClusterSpec| crate::resolve(&app(), c, None);
        // jupyter=false: the notebook role (cardinality 1) defaults to no members.
        let off = resolve(&cluster(&[], json!([{"id": "head"}, {"id": "notebook"}]))).expect("valid");
        assert_eq!(off.members("notebook"), 0);
        assert_eq!(off.active_roles().map(|r| r.spec.id.clone()).collect::<Vec<_>>(), ["head"]);
        let e = resolve(&cluster(&[], json!([{"id": "head"}, {"id": "notebook", "members": 1}]))).expect_err("off");
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!((e.0[0].path.as_str(), e.0[0].rule), ("spec.roles[1].members", "role-not-selected"));
        assert!(e.0[0].message.ends_with("Selected roles: \"head\""), "{e}");
        // jupyter=true: the notebook role is selected, so its cardinality holds again.
        let e = resolve(&cluster(&[("jupyter", "true")], json!([{"id": "head"}]))).expect_err("missing");
        assert_eq!(e.0[0].rule, "selected-role-required");
        let on = resolve(&cluster(&[("jupyter", "true")], json!([{"id": "head"}, {"id": "notebook"}]))).expect("on");
        assert_eq!(on.members("notebook"), 1);
        assert_eq!(on.services("notebook").iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["nb"]);
        assert!(on.services("head").iter().all(|s| s.id != "dbg"));
        assert_eq!(on.app.config, app().config, "the app itself is untouched");
    }

    #[test]
    fn a_merged_port_clash_is_refused() {
        let mut clashing = app();
        clashing.config.conditional[1].role_services =
            vec![crate::app::RoleService { role_id: "head".into(), service_ids: vec!["clash".into()] }];
        let spec = cluster(&[("logLevel", "DEBUG")], json!([{"id": "head"}]));
        let e = crate::resolve(&clashing, &spec, None).expect_err("clash");
        assert_eq!((e.0[0].path.as_str(), e.0[0].rule), ("spec.configChoices", "unique-port"));
    }

    #[test]
    fn only_mutable_choices_change_after_creation() {
        let app = app();
        let old = cluster(&[], json!([{"id": "head"}]));
        let update = |choices: &[(&str, &str)]| {
            let new = cluster(choices, json!([{"id": "head"}]));
            let status = crate::cluster::KubeDirectorClusterStatus::default();
            validate::cluster_update_with_app(&old, &new, Some(&status), &app, &[])
        };
        assert_eq!(update(&[("logLevel", "DEBUG")]), Ok(()));
        assert_eq!(update(&[("jupyter", "false")]), Ok(()), "spelling out the default changes nothing");
        let e = update(&[("jupyter", "true")]).expect_err("fixed");
        assert_eq!(
            e.to_string(),
            "spec.configChoices[jupyter]: Choice(jupyter) is fixed once the cluster is created (it was false). Choices that may change: \"logLevel\" (rule: choice-immutable)"
        );
    }
}
