//! The launch form: the fields an app offers (name, namespace, members, resources and
//! storage per role, choices, placement labels), the `KubeDirectorCluster` a submitted form
//! makes, and a refusal of the hub (admission webhook or API server) mapped back to the
//! fields it names, so the user sees the message where they typed and keeps their input.

use std::collections::BTreeMap;

use kdfed_crds::KubeDirectorCluster;
use kdfed_crds::cluster::{ClusterStorage, KubeDirectorClusterSpec, Placement, Role};
use serde_json::json;

use super::catalog::AppView;

/// What the user typed, by field name (`name`, `members.<role>`, `choice.<id>`, ...);
/// placement labels come as repeated `label` fields (`key=value`) and free text `labels`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FormInput {
    /// Single-valued fields.
    pub fields: BTreeMap<String, String>,
    /// Every `label` field (checked member labels).
    pub labels: Vec<String>,
}

impl FormInput {
    /// The input from a form's pairs (repeated `label` fields kept).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> FormInput {
        let mut input = FormInput::default();
        for (k, v) in pairs {
            if k == "label" {
                input.labels.push(v);
            } else {
                input.fields.insert(k, v);
            }
        }
        input
    }

    /// A field's value, trimmed ("" when absent).
    pub fn get(&self, field: &str) -> &str {
        self.fields.get(field).map_or("", |v| v.trim())
    }

    /// Whether `label` (`key=value`) was checked.
    pub fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }
}

/// Messages by form field; `""` holds what names no field.
pub type FieldMessages = BTreeMap<String, Vec<String>>;

/// Field name of a role's member count.
pub fn members_field(role: &str) -> String {
    format!("members.{role}")
}

/// Field name of a role's CPU request.
pub fn cpu_field(role: &str) -> String {
    format!("cpu.{role}")
}

/// Field name of a role's memory request.
pub fn memory_field(role: &str) -> String {
    format!("memory.{role}")
}

/// Field name of a role's persistent storage size.
pub fn storage_field(role: &str) -> String {
    format!("storage.{role}")
}

/// Field name of a config choice.
pub fn choice_field(id: &str) -> String {
    format!("choice.{id}")
}

/// The placement labels field (the checked labels and the free text together).
pub const PLACEMENT_FIELD: &str = "labels";

/// The cluster the form asks for, or the fields that cannot become one (the form's own
/// checks: numbers that are not numbers, labels that are not `key=value`). Everything else
/// is for the hub to judge, so its rules stay in one place.
pub fn build_cluster(app: &AppView, input: &FormInput) -> Result<KubeDirectorCluster, FieldMessages> {
    let mut errors = FieldMessages::new();
    let mut say = |field: &str, message: String| errors.entry(field.to_string()).or_default().push(message);
    let name = input.get("name");
    if name.is_empty() {
        say("name", "A name is required.".into());
    }
    let namespace = input.get("namespace");
    if namespace.is_empty() {
        say("namespace", "A namespace is required.".into());
    }
    let mut roles = Vec::new();
    for r in &app.roles {
        let mut role = Role { id: r.id.clone(), ..Role::default() };
        let members = input.get(&members_field(&r.id));
        if !members.is_empty() {
            match members.parse::<i32>() {
                Ok(n) => role.members = Some(n),
                Err(_) => say(&members_field(&r.id), format!("Members of role {} must be a whole number.", r.id)),
            }
        }
        let mut requests = BTreeMap::new();
        for (field, resource) in [(cpu_field(&r.id), "cpu"), (memory_field(&r.id), "memory")] {
            let value = input.get(&field);
            if !value.is_empty() {
                requests.insert(resource.to_string(), value.to_string());
            }
        }
        if !requests.is_empty() {
            role.resources = serde_json::from_value(json!({"requests": requests, "limits": requests}))
                .map_err(|e| say(&cpu_field(&r.id), e.to_string()))
                .unwrap_or_default();
        }
        let storage = input.get(&storage_field(&r.id));
        if !storage.is_empty() {
            role.storage = Some(ClusterStorage { size: storage.to_string(), storage_class_name: None });
        }
        roles.push(role);
    }
    let choices: BTreeMap<String, String> = app
        .choices
        .iter()
        .filter_map(|c| Some((c.id.clone(), input.fields.get(&choice_field(&c.id))?.trim().to_string())))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let placement = match placement_labels(input) {
        Ok(labels) => labels,
        Err(message) => {
            say(PLACEMENT_FIELD, message);
            BTreeMap::new()
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let spec = KubeDirectorClusterSpec {
        app: app.name.clone(),
        app_catalog: Some(app.catalog.to_string()),
        roles,
        config_choices: choices,
        placement: (!placement.is_empty()).then(|| Placement {
            member_selector: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some(placement),
                match_expressions: None,
            }),
            ..Placement::default()
        }),
        ..KubeDirectorClusterSpec::default()
    };
    let mut cluster = KubeDirectorCluster::new(name, spec);
    cluster.metadata.namespace = Some(namespace.to_string());
    Ok(cluster)
}

/// The placement labels: the checked `label`s and the free text (`k=v`, comma-separated);
/// one value per key.
pub fn placement_labels(input: &FormInput) -> Result<BTreeMap<String, String>, String> {
    let typed = input.get(PLACEMENT_FIELD).split(',').map(str::trim).filter(|s| !s.is_empty());
    let mut labels = BTreeMap::new();
    for pair in input.labels.iter().map(|l| l.trim()).chain(typed) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("Placement label {pair:?} must be key=value."));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(format!("Placement label {pair:?} has no key."));
        }
        if let Some(old) = labels.insert(key.to_string(), value.to_string())
            && old != value
        {
            return Err(format!("Placement label {key} is asked to be both {old} and {value}."));
        }
    }
    Ok(labels)
}

/// The messages of a refusal by the hub's API server, by form field. An admission refusal
/// reads `admission webhook "..." denied the request: PATH: MESSAGE (rule: R)` with one
/// error per line; each path of `cluster` is mapped to the field that set it (its role's
/// members, resources or storage, a choice, the placement, the name); what maps to no field
/// is kept under `""`.
pub fn refusal_fields(message: &str, roles: &[String]) -> FieldMessages {
    let body = message.split_once("denied the request: ").map_or(message, |(_, rest)| rest);
    // The API server's own refusals: `Kind "x" is invalid: metadata.name: ...`.
    let body = body.split_once(" is invalid: ").map_or(body, |(_, rest)| rest);
    let mut fields = FieldMessages::new();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let field = line.split_once(": ").and_then(|(path, _)| field_of(path, roles)).unwrap_or_default();
        fields.entry(field).or_default().push(line.to_string());
    }
    if fields.is_empty() {
        fields.insert(String::new(), vec![message.to_string()]);
    }
    fields
}

/// The form field a JSON path of a cluster names.
fn field_of(path: &str, roles: &[String]) -> Option<String> {
    if path == "metadata.name" || path.starts_with("metadata.name ") {
        return Some("name".into());
    }
    if path.starts_with("spec.placement") {
        return Some(PLACEMENT_FIELD.into());
    }
    if let Some(rest) = path.strip_prefix("spec.configChoices") {
        let id = rest.trim_start_matches(['.', '[']).split(['.', ']', '[']).next().unwrap_or_default();
        let id = id.trim_matches(['"', '\'']);
        return Some(if id.is_empty() { "choices".into() } else { choice_field(id) });
    }
    let rest = path.strip_prefix("spec.roles[")?;
    let (index, after) = rest.split_once(']')?;
    let role = roles.get(index.parse::<usize>().ok()?)?;
    Some(if after.starts_with(".members") {
        members_field(role)
    } else if after.starts_with(".resources") && after.contains("memory") {
        memory_field(role)
    } else if after.starts_with(".resources") {
        cpu_field(role)
    } else if after.starts_with(".storage") {
        storage_field(role)
    } else {
        members_field(role)
    })
}

#[cfg(test)]
mod tests {
    use super::super::catalog::{app_view, tests::greeter};
    use super::*;

    fn input(pairs: &[(&str, &str)]) -> FormInput {
        FormInput::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn a_filled_form_becomes_the_cluster_it_describes() {
        let app = app_view(&greeter(), "kdfed-system");
        let form = input(&[
            ("name", "hello"),
            ("namespace", "team-a"),
            ("members.head", "1"),
            ("members.worker", "3"),
            ("cpu.worker", "500m"),
            ("memory.worker", "1Gi"),
            ("storage.head", "2Gi"),
            ("choice.language", "en"),
            ("choice.size", ""),
            ("label", "region=eu"),
            ("labels", "gpu=a100, region=eu"),
        ]);
        let c = build_cluster(&app, &form).expect("valid form");
        assert_eq!(c.metadata.name.as_deref(), Some("hello"));
        assert_eq!(c.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!((c.spec.app.as_str(), c.spec.app_catalog.as_deref()), ("greeter", Some("system")));
        let worker = &c.spec.roles[1];
        assert_eq!((worker.id.as_str(), worker.members), ("worker", Some(3)));
        let requests = worker.resources.requests.as_ref().expect("requests");
        assert_eq!(requests["cpu"].0, "500m");
        assert_eq!(requests["memory"].0, "1Gi");
        assert_eq!(c.spec.roles[0].storage.as_ref().map(|s| s.size.as_str()), Some("2Gi"));
        assert_eq!(c.spec.config_choices, BTreeMap::from([("language".to_string(), "en".to_string())]));
        let selector = c.spec.placement.and_then(|p| p.member_selector).and_then(|s| s.match_labels);
        assert_eq!(selector, Some(BTreeMap::from([("gpu".into(), "a100".into()), ("region".into(), "eu".into())])));
    }

    #[test]
    fn blank_counts_are_left_to_the_app_s_defaults_and_bad_input_is_named_by_field() {
        let app = app_view(&greeter(), "kdfed-system");
        let c = build_cluster(&app, &input(&[("name", "x"), ("namespace", "n")])).expect("valid");
        assert!(c.spec.roles.iter().all(|r| r.members.is_none() && r.storage.is_none()));
        assert!(c.spec.placement.is_none());
        let errors = build_cluster(
            &app,
            &input(&[("name", ""), ("namespace", "n"), ("members.worker", "three"), ("labels", "region")]),
        )
        .expect_err("invalid");
        assert_eq!(errors["name"], ["A name is required."]);
        assert_eq!(errors["members.worker"], ["Members of role worker must be a whole number."]);
        assert_eq!(errors["labels"], ["Placement label \"region\" must be key=value."]);
        let clash = placement_labels(&input(&[("label", "region=eu"), ("labels", "region=us")]));
        assert_eq!(clash, Err("Placement label region is asked to be both eu and us.".into()));
    }

    #[test]
    fn a_webhook_refusal_lands_at_the_fields_its_paths_name() {
        let roles = vec!["head".to_string(), "worker".to_string()];
        let message = "admission webhook \"validate.kdfed.hpe.com\" denied the request: spec.roles[1].members: Invalid member count for role(worker). Valid counts: 2+ (rule: cardinality)\nspec.configChoices.language: Value(de) is not a value of choice(language) (rule: choice-value)\nspec.roles[0].resources.requests.memory: too small (rule: min-resources)\nspec.placement.memberSelector: bad (rule: selector)\nspec.defaultSecret: missing (rule: secret-exists)";
        let fields = refusal_fields(message, &roles);
        assert_eq!(
            fields["members.worker"],
            ["spec.roles[1].members: Invalid member count for role(worker). Valid counts: 2+ (rule: cardinality)"]
        );
        assert!(fields["choice.language"][0].contains("(rule: choice-value)"));
        assert!(fields["memory.head"][0].contains("min-resources"));
        assert!(fields["labels"][0].contains("selector"));
        assert_eq!(fields[""], ["spec.defaultSecret: missing (rule: secret-exists)"], "no field: shown on top");
    }

    #[test]
    fn a_refusal_without_paths_is_kept_whole() {
        let fields = refusal_fields("kubedirectorclusters.kubedirector.hpe.com \"x\" already exists", &[]);
        assert_eq!(fields[""], ["kubedirectorclusters.kubedirector.hpe.com \"x\" already exists"]);
        let fields = refusal_fields(
            "KubeDirectorCluster.kubedirector.hpe.com \"A\" is invalid: metadata.name: Invalid value: \"A\": a lowercase RFC 1123 subdomain",
            &[],
        );
        assert!(fields.contains_key("name"));
    }
}
