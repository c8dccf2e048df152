//! `kdfed catalog show APP`: one app of the catalog as a user choosing it sees it — its
//! roles and services, and its config choices with their values (kdfed's extension).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use kdfed_crds::KubeDirectorApp;
use kdfed_crds::app::KubeDirectorAppSpec;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::output::{self, Format, Table};

/// `kdfed catalog show APP` (in every namespace unless `-n`): the description of each app of
/// that name, or the objects with `-o json|yaml|name`.
pub async fn show(client: &Client, namespace: Option<&str>, name: &str, format: Format) -> Result<()> {
    let api: Api<KubeDirectorApp> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let apps: Vec<KubeDirectorApp> =
        api.list(&Default::default()).await?.items.into_iter().filter(|a| a.name_any() == name).collect();
    if apps.is_empty() {
        bail!("kubedirectorapp {name:?} not found");
    }
    if !format.is_table() {
        return output::print_list(&apps, &Table::new(Vec::new(), 0), format);
    }
    let text: Vec<String> = apps.iter().map(describe).collect();
    crate::write_stdout(&text.join("\n"))
}

/// The description `catalog show` prints of one app.
pub fn describe(app: &KubeDirectorApp) -> String {
    let spec = &app.spec;
    let mut out = format!(
        "Name:         {}\nNamespace:    {}\nLabel:        {}\nVersion:      {} ({})\n",
        app.name_any(),
        app.namespace().unwrap_or_default(),
        spec.label.name,
        spec.version,
        spec.distro_id
    );
    if let Some(description) = &spec.label.description {
        out.push_str(&format!("Description:  {description}\n"));
    }
    let roles: Vec<String> = spec.roles.iter().map(|r| format!("{}({})", r.id, r.cardinality)).collect();
    out.push_str(&format!("Roles:        {}\n", roles.join(",")));
    out.push_str(&format!("Selected:     {}\n", spec.config.selected_roles.join(",")));
    if spec.config_choices.is_empty() {
        out.push_str("Choices:      <none>\n");
        return out;
    }
    out.push_str("Choices:\n");
    for line in choices_table(spec).render(Format::Table, true).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// The app's choices: id, values (the default marked `*`), whether a running cluster may
/// change it, the name shown to users and what each value changes.
pub fn choices_table(spec: &KubeDirectorAppSpec) -> Table {
    let mut table = Table::new(vec!["CHOICE", "VALUES", "MUTABLE", "NAME", "CHANGES"], 0);
    for choice in &spec.config_choices {
        let default = kdfed_crds::choices::default_value(choice);
        let values: Vec<String> = choice
            .values
            .iter()
            .map(|v| if Some(v.as_str()) == default { format!("{v}*") } else { v.clone() })
            .collect();
        table.rows.push(vec![
            choice.id.clone(),
            values.join(","),
            if choice.mutable == Some(true) { "yes".into() } else { "no".into() },
            choice.label.name.clone(),
            effects(spec, &choice.id),
        ]);
    }
    table
}

/// What the conditional configs that name `id` change, per value: `v: +role,+role/service,meta key`.
fn effects(spec: &KubeDirectorAppSpec, id: &str) -> String {
    let mut by_value: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for cond in &spec.config.conditional {
        let Some(value) = cond.when.get(id) else { continue };
        let said = by_value.entry(value.as_str()).or_default();
        said.extend(cond.selected_roles.iter().map(|r| format!("+{r}")));
        for rs in &cond.role_services {
            said.extend(rs.service_ids.iter().map(|s| format!("+{}/{s}", rs.role_id)));
        }
        said.extend(cond.config_meta.iter().flatten().map(|(k, v)| format!("{k}={v}")));
    }
    if by_value.is_empty() {
        return "-".into();
    }
    by_value.iter().map(|(v, said)| format!("{v}: {}", said.join(" "))).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_lists_each_choice_with_its_values_default_and_effects() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/apps/spark-notebook.yaml");
        let app: KubeDirectorApp =
            serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse");
        let text = describe(&app);
        assert!(text.starts_with("Name:         spark-notebook\n"), "{text}");
        let rows: Vec<&str> = text.lines().skip_while(|l| *l != "Choices:").skip(1).collect();
        assert!(rows[0].starts_with("  CHOICE "), "{text}");
        assert!(rows[1].starts_with("  jupyter    true*,false   no "), "{text}");
        assert!(rows[1].ends_with("true: +jupyter +jupyter/ssh +jupyter/jupyter spark.notebook=enabled"), "{text}");
        assert!(rows[2].starts_with("  logLevel   INFO*,DEBUG   yes "), "{text}");
        let mut plain = app.clone();
        plain.spec.config_choices.clear();
        assert!(describe(&plain).ends_with("Choices:      <none>\n"));
    }
}
