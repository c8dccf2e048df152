//! The code keeps the shape docs/architecture.md describes: every reconcile a list of named
//! steps, so no function in the controllers' crates runs past one screen. Validators in
//! `crds/` that are plain lists of rules are exempt (issue #10).

use std::path::{Path, PathBuf};

/// Longest function allowed, from its `fn` line to its closing brace.
const MAX_LINES: usize = 100;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A line without string and char literals and `//` comments, so braces inside them do
/// not count.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '/' if chars.peek() == Some(&'/') => break,
            '\'' => {
                // A char literal ('{', '\'', '\\') or a lifetime ('a): skip a literal only.
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with('\\') {
                    chars.nth(2);
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.nth(1);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// `(name, first line, length)` of every function in `source`.
fn functions(source: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, later) in lines[start..].iter().enumerate() {
            let code = code_of(later);
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth == 0 {
                found.push((name.clone(), start + 1, offset + 1));
                break;
            }
            if !opened && code.trim_end().ends_with(';') {
                break;
            }
        }
    }
    found
}

/// The name of a function declared on `line`, if one is.
fn fn_name(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "fn")?;
    let before_ok = words[..at]
        .iter()
        .all(|w| matches!(*w, "pub" | "async" | "const" | "unsafe" | "extern") || w.starts_with("pub("));
    if !before_ok {
        return None;
    }
    let name: String = words.get(at + 1)?.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

#[test]
fn no_function_in_the_controllers_runs_past_one_screen() {
    let mut files = Vec::new();
    for dir in ["hub/src", "spoke/src", "common/src", "cli/src", "console/src"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 40, "only {} files found", files.len());
    let mut long = Vec::new();
    let mut counted = 0;
    for file in &files {
        let source = std::fs::read_to_string(file).expect("source file");
        for (name, line, length) in functions(&source) {
            counted += 1;
            if length > MAX_LINES {
                let shown = file.strip_prefix(root()).unwrap_or(file).display().to_string();
                long.push(format!("{shown}:{line} {name} ({length} lines)"));
            }
        }
    }
    assert!(counted > 500, "only {counted} functions found: the scan is broken");
    assert!(long.is_empty(), "functions longer than {MAX_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn the_scan_measures_what_it_should() {
    let source = "fn a() {\n    let s = \"}\";\n    let c = '{';\n}\n\npub async fn b<'x>(v: &'x str) -> usize {\n    // }\n    v.len()\n}\nfn decl();\n";
    let found = functions(source);
    assert_eq!(found, vec![("a".to_string(), 1, 4), ("b".to_string(), 6, 4)]);
}
