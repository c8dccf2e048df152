//! Conversion of manifests in the first KubeDirector releases' format
//! (`kubedirector.bluedata.io/v1alpha1`, snake_case fields) to `kubedirector.hpe.com/v1beta1`.

use serde_json::{Map, Value};

/// API version of the old format.
pub const V1ALPHA1: &str = "kubedirector.bluedata.io/v1alpha1";

/// Why a document could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input is not YAML/JSON.
    #[error("document {index}: cannot parse: {message}")]
    Parse {
        /// Position of the document in the stream (0-based).
        index: usize,
        /// Parser message.
        message: String,
    },
    /// The document is not an object with `kind`.
    #[error("document {index}: not a Kubernetes object (field `kind` is missing)")]
    NotAnObject {
        /// Position of the document in the stream (0-based).
        index: usize,
    },
}

/// Keys whose values are free-form maps: their own keys are data, not field names.
const OPAQUE_MAPS: &[&str] = &[
    "metadata",
    "labels",
    "annotations",
    "config_meta",
    "configMeta",
    "pod_labels",
    "podLabels",
    "service_labels",
    "serviceLabels",
    "pod_annotations",
    "podAnnotations",
    "service_annotations",
    "serviceAnnotations",
    "requests",
    "limits",
    "min_resources",
    "minResources",
    "matchLabels",
    "nodeSelector",
    "data",
    "stringData",
];

/// Field names that upstream kept in snake_case in v1beta1.
const KEPT_SNAKE: &[&str] = &["exported_service"];

/// `package_url` → `packageURL`, `role_id` → `roleID`, `service_ids` → `serviceIDs`,
/// `url_scheme` → `urlScheme`: camelCase with upstream's ID/URL acronyms after the first word.
pub fn camel_case(key: &str) -> String {
    if !key.contains('_') || KEPT_SNAKE.contains(&key) {
        return key.to_string();
    }
    let mut out = String::with_capacity(key.len());
    for (i, word) in key.split('_').filter(|w| !w.is_empty()).enumerate() {
        if i == 0 {
            out.push_str(word);
            continue;
        }
        match word {
            "id" => out.push_str("ID"),
            "ids" => out.push_str("IDs"),
            "url" => out.push_str("URL"),
            _ => {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    out.extend(first.to_uppercase());
                    out.push_str(chars.as_str());
                }
            }
        }
    }
    out
}

fn convert_value(value: Value, parent_key: Option<&str>) -> Value {
    match value {
        Value::Object(map) => {
            if parent_key.is_some_and(|k| OPAQUE_MAPS.contains(&k)) {
                return Value::Object(map);
            }
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let converted = convert_value(v, Some(&k));
                out.insert(camel_case(&k), converted);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| convert_value(v, parent_key)).collect()),
        other => other,
    }
}

/// Converts one object. Objects in other API versions are returned unchanged.
pub fn convert_object(object: Value) -> Value {
    let is_old = object.get("apiVersion").and_then(Value::as_str) == Some(V1ALPHA1);
    if !is_old {
        return object;
    }
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let Value::Object(mut map) = object else { return object };
    map.insert("apiVersion".into(), Value::String(crate::KUBEDIRECTOR_API_VERSION.into()));
    if let Some(spec) = map.remove("spec") {
        let mut spec = convert_value(spec, Some("spec"));
        // v1alpha1 clusters named roles with `name`; v1beta1 uses `id`.
        if kind == "KubeDirectorCluster"
            && let Some(roles) = spec.get_mut("roles").and_then(Value::as_array_mut)
        {
            for role in roles.iter_mut().filter_map(Value::as_object_mut) {
                if !role.contains_key("id")
                    && let Some(name) = role.remove("name")
                {
                    role.insert("id".into(), name);
                }
                // The first releases called the member count `replicas`.
                if !role.contains_key("members")
                    && let Some(count) = role.remove("replicas")
                {
                    role.insert("members".into(), count);
                }
            }
        }
        map.insert("spec".into(), spec);
    }
    map.remove("status");
    Value::Object(map)
}

/// Converts a YAML stream; returns the converted YAML stream.
pub fn convert_yaml(input: &str) -> Result<String, ConvertError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(input).map_err(|e| ConvertError::Parse { index: 0, message: e.to_string() })?;
    let mut out = String::new();
    for (index, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        if doc.get("kind").is_none() {
            return Err(ConvertError::NotAnObject { index });
        }
        let converted = convert_object(doc);
        let text =
            serde_saphyr::to_string(&converted).map_err(|e| ConvertError::Parse { index, message: e.to_string() })?;
        out.push_str("---\n");
        out.push_str(&text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_becomes_upstream_camel_case() {
        assert_eq!(camel_case("default_image_repo_tag"), "defaultImageRepoTag");
        assert_eq!(camel_case("package_url"), "packageURL");
        assert_eq!(camel_case("distro_id"), "distroID");
        assert_eq!(camel_case("role_id"), "roleID");
        assert_eq!(camel_case("service_ids"), "serviceIDs");
        assert_eq!(camel_case("url_scheme"), "urlScheme");
        assert_eq!(camel_case("is_dashboard"), "isDashboard");
        assert_eq!(camel_case("exported_service"), "exported_service");
        assert_eq!(camel_case("cardinality"), "cardinality");
    }
}
