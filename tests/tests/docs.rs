//! The documentation holds together: every relative link in the Markdown files leads to a
//! file that exists and, with a `#section`, to a heading in it; every alert rule links to
//! its section of the runbook.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// GitHub's anchor of a Markdown heading: lower case, spaces to '-', other punctuation
/// dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_links_to_its_section_of_the_runbook() {
    let runbook = std::fs::read_to_string(root().join("docs/operations.md")).expect("docs/operations.md");
    let anchors = anchors(&runbook);
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root().join("dashboards/alerts.yaml")).expect("alerts"))
            .expect("alerts.yaml");
    let mut checked = 0;
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            let url = rule["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{name}: no runbook_url"));
            let (file, section) = url.split_once('#').unwrap_or_else(|| panic!("{name}: {url} names no section"));
            assert_eq!(file, "docs/operations.md", "{name}");
            assert_eq!(section, name.to_lowercase(), "{name}: the section is named after the alert");
            assert!(anchors.iter().any(|a| a == section), "{name}: docs/operations.md has no section #{section}");
            checked += 1;
        }
    }
    assert_eq!(checked, 10, "every rule has a runbook section");
}

/// The anchors of every heading of a Markdown text.
fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// The Markdown files of the repository: README.md, docs/, dashboards/README.md,
/// tests/compat/README.md.
fn markdown_files() -> Vec<PathBuf> {
    let mut files =
        vec![root().join("README.md"), root().join("dashboards/README.md"), root().join("tests/compat/README.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
}

/// The targets of the inline links `[text](target)` of a Markdown text, outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_leads_to_a_file_and_section_that_exist() {
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        let dir = file.parent().expect("folder");
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, section) = target.split_once('#').map_or((target.as_str(), None), |(p, s)| (p, Some(s)));
            let linked = if path.is_empty() { file.clone() } else { dir.join(path) };
            assert!(linked.exists(), "{}: link {target:?}: {} does not exist", file.display(), linked.display());
            let inside = linked.canonicalize().expect("canonical").starts_with(root().canonicalize().expect("root"));
            assert!(inside, "{}: link {target:?} leaves the repository", file.display());
            if let Some(section) = section {
                let headings = anchors(&std::fs::read_to_string(&linked).expect("linked file"));
                assert!(
                    headings.iter().any(|a| a == section),
                    "{}: link {target:?}: no section #{section} in {}",
                    file.display(),
                    linked.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} links found: is the link parser broken?");
}

/// docs/architecture.md names the file that owns each step; a file that moves or goes must
/// take the page with it.
#[test]
fn every_file_the_architecture_page_names_exists() {
    let page = std::fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md");
    let roots = ["crds/", "common/", "hub/", "spoke/", "cli/", "tests/", "deploy/", "docs/"];
    let mut checked = 0;
    for (i, span) in page.split('`').enumerate() {
        // Odd pieces are inside backticks.
        if i % 2 == 0 || !roots.iter().any(|r| span.starts_with(r)) || span.contains(' ') {
            continue;
        }
        assert!(root().join(span).exists(), "docs/architecture.md names {span}, which does not exist");
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} paths found in docs/architecture.md");
}
