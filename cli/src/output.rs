//! Output of the list commands, as kubectl prints it: a table, a wider table, the objects as
//! a JSON or YAML `List`, or `kind.group/name` lines.

use anyhow::Result;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;

/// `-o`: how a list command prints what it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The table (what no `-o` prints).
    #[default]
    #[value(skip)]
    Table,
    /// The table with more columns.
    Wide,
    /// The objects as a JSON `List`.
    Json,
    /// The objects as a YAML `List`.
    Yaml,
    /// One `kind.group/name` line per object.
    Name,
}

impl Format {
    /// Whether the output is a table (`-o wide` or none).
    pub fn is_table(self) -> bool {
        matches!(self, Format::Table | Format::Wide)
    }
}

/// A table: a header and rows of cells, each row as long as the header. `wide` columns
/// (the last `wide` cells of each row) are shown only with `-o wide`.
pub struct Table {
    /// Column titles, the wide ones last.
    pub header: Vec<&'static str>,
    /// How many of the last columns only `-o wide` shows.
    pub wide: usize,
    /// The rows.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these columns, the last `wide` of them only in `-o wide`.
    pub fn new(header: Vec<&'static str>, wide: usize) -> Self {
        Table { header, wide, rows: Vec::new() }
    }

    /// How many columns `format` shows.
    fn shown(&self, format: Format) -> usize {
        if format == Format::Wide { self.header.len() } else { self.header.len().saturating_sub(self.wide) }
    }

    /// The table as text (with a header line when `header`), columns aligned over the
    /// header and every row.
    pub fn render(&self, format: Format, header: bool) -> String {
        let shown = self.shown(format);
        let mut lines: Vec<Vec<&str>> = Vec::new();
        if header {
            lines.push(self.header.iter().take(shown).copied().collect());
        }
        lines.extend(self.rows.iter().map(|r| r.iter().take(shown).map(String::as_str).collect()));
        let mut widths = vec![0; shown];
        for line in std::iter::once(&self.header.iter().take(shown).copied().collect::<Vec<_>>()).chain(&lines) {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in lines {
            let cells: Vec<String> = line.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            out.push_str(cells.join("   ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// `kind.group/name` of an object, as `kubectl get -o name` prints it.
pub fn name_of<K: Resource<DynamicType = ()>>(object: &K) -> String {
    let group = K::group(&());
    let kind = K::kind(&()).to_lowercase();
    if group.is_empty() {
        format!("{kind}/{}", object.name_any())
    } else {
        format!("{kind}.{group}/{}", object.name_any())
    }
}

/// An object as JSON for `-o json|yaml`, without its managed fields (as kubectl shows it).
pub fn object_value<K: Serialize>(object: &K) -> Result<Value> {
    let mut value = serde_json::to_value(object)?;
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    Ok(value)
}

/// The objects as one `List` in `format` (json or yaml).
pub fn list_text(items: Vec<Value>, format: Format) -> Result<String> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items});
    one_text(&list, format)
}

/// One object in `format` (json or yaml); a YAML document starts with `---`.
pub fn one_text(value: &Value, format: Format) -> Result<String> {
    Ok(match format {
        Format::Yaml => format!("---\n{}", serde_saphyr::to_string(value)?),
        _ => format!("{}\n", serde_json::to_string_pretty(value)?),
    })
}

/// Prints a list in `format`: the table, the objects or their names.
pub fn print_list<K: Resource<DynamicType = ()> + Serialize>(
    objects: &[K],
    table: &Table,
    format: Format,
) -> Result<()> {
    let text = match format {
        Format::Table | Format::Wide => table.render(format, true),
        Format::Name => objects.iter().map(|o| name_of(o) + "\n").collect(),
        Format::Json | Format::Yaml => list_text(objects.iter().map(object_value).collect::<Result<_>>()?, format)?,
    };
    crate::write_stdout(&text)
}

/// Keeps the objects named in `names` (all when it is empty), in the order listed; a name
/// not found is an error naming it and `what` (`kubedirectorcluster`), as kubectl says.
pub fn only_named<K: ResourceExt>(objects: Vec<K>, names: &[String], what: &str) -> Result<Vec<K>> {
    if names.is_empty() {
        return Ok(objects);
    }
    let missing: Vec<&String> = names.iter().filter(|n| !objects.iter().any(|o| &o.name_any() == *n)).collect();
    if !missing.is_empty() {
        let missing: Vec<String> = missing.iter().map(|n| format!("{n:?}")).collect();
        anyhow::bail!("{what} {} not found", missing.join(", "));
    }
    Ok(objects.into_iter().filter(|o| names.contains(&o.name_any())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_columns_show_only_with_wide() {
        let mut table = Table::new(vec!["NAME", "STATE", "AGE"], 1);
        table.rows.push(vec!["a-long-name".into(), "ok".into(), "5s".into()]);
        assert_eq!(table.render(Format::Table, true), "NAME          STATE\na-long-name   ok\n");
        assert_eq!(table.render(Format::Wide, true), "NAME          STATE   AGE\na-long-name   ok      5s\n");
        // Rows printed later (a watch) keep the header's alignment.
        assert_eq!(table.render(Format::Table, false), "a-long-name   ok\n");
    }

    #[test]
    fn names_and_lists_look_like_kubectl_s() {
        let member = kdfed_crds::KubeDirectorMember::new("east", Default::default());
        assert_eq!(name_of(&member), "kubedirectormember.federation.kubedirector.hpe.com/east");
        let text = list_text(vec![object_value(&member).expect("json")], Format::Json).expect("list");
        let list: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"][0]["metadata"]["name"], "east");
        assert!(list_text(vec![], Format::Yaml).expect("yaml").starts_with("---\napiVersion: v1\n"));
        let err = only_named(vec![member], &["west".to_string()], "kubedirectormember").expect_err("missing");
        assert_eq!(err.to_string(), "kubedirectormember \"west\" not found");
    }
}
