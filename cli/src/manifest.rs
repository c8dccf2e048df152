//! Reading manifests (YAML streams) from files or stdin, and applying them.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Scope, pinned_kind};
use kube::{Client, ResourceExt};
use serde_json::Value;

/// Field manager of objects the CLI applies.
pub const FIELD_MANAGER: &str = "kdfed-cli";

/// Reads `path` (`-` for stdin) as text.
pub fn read_input(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// Every non-empty document of a YAML stream, as JSON values; lists (`kind: List`) are flattened.
pub fn documents(text: &str, origin: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).with_context(|| format!("{origin}: not valid YAML"))?;
    let mut out = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        if doc.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"))
            && let Some(items) = doc.get("items").and_then(Value::as_array)
        {
            out.extend(items.iter().cloned());
        } else {
            out.push(doc);
        }
    }
    Ok(out)
}

/// Reads every document of every file (folders: their `.yaml`/`.yml`/`.json` files, sorted).
pub fn read_all(paths: &[std::path::PathBuf]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
                .collect();
            files.sort();
            for f in files {
                out.extend(documents(&read_input(&f)?, &f.display().to_string())?);
            }
        } else {
            out.extend(documents(&read_input(path)?, &path.display().to_string())?);
        }
    }
    Ok(out)
}

/// Server-side applies one object; namespaced objects without a namespace go to `namespace`.
pub async fn apply(client: &Client, object: &Value, namespace: &str) -> Result<String> {
    let mut obj: DynamicObject = serde_json::from_value(object.clone()).context("not a Kubernetes object")?;
    let types = obj.types.clone().context("object has no apiVersion/kind")?;
    let gvk = kube::api::GroupVersionKind::try_from(&types)?;
    let (resource, caps) = pinned_kind(client, &gvk).await.with_context(|| {
        format!("the API server does not serve {}/{} (are the CRDs installed?)", types.api_version, types.kind)
    })?;
    let name = obj.name_any();
    if name.is_empty() {
        bail!("{} without metadata.name", types.kind);
    }
    let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
        let ns = obj.metadata.namespace.clone().unwrap_or_else(|| namespace.to_string());
        obj.metadata.namespace = Some(ns.clone());
        Api::namespaced_with(client.clone(), &ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    obj.metadata.managed_fields = None;
    obj.metadata.resource_version = None;
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&obj)).await?;
    let scope = obj.metadata.namespace.map(|ns| format!("{ns}/")).unwrap_or_default();
    Ok(format!("{}/{scope}{name}", types.kind.to_lowercase()))
}
