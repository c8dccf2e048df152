//! Layered configuration: built-in defaults, then a YAML file, then `<PREFIX>_<KEY>`
//! environment variables, then command-line flags. Unknown keys and bad values stop
//! start-up with a message naming the key.

use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file is missing or not YAML.
    #[error("configuration file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A key is unknown or a value has the wrong type or fails validation.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Loads settings of type `T`. `env_prefix` is e.g. `KDFED_HUB` (variables such as
/// `KDFED_HUB_ADMIN_ADDRESS`); `overrides` are flags given on the command line.
pub fn load<T>(file: Option<&Path>, env_prefix: &str, overrides: &[(&str, Option<String>)]) -> Result<T, SettingsError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let defaults = Config::try_from(&T::default()).map_err(|e| SettingsError::Invalid(e.to_string()))?;
    let mut builder = Config::builder().add_source(defaults);
    if let Some(path) = file {
        if !path.exists() {
            return Err(SettingsError::File { path: path.display().to_string(), message: "does not exist".into() });
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Yaml).required(true));
    }
    builder = builder
        .add_source(Environment::with_prefix(env_prefix).prefix_separator("_").separator("__").try_parsing(true));
    for (key, value) in overrides {
        if let Some(value) = value {
            builder = builder.set_override(*key, value.clone()).map_err(|e| SettingsError::Invalid(e.to_string()))?;
        }
    }
    let built = builder.build().map_err(|e| match (file, &e) {
        (Some(path), config::ConfigError::FileParse { .. } | config::ConfigError::Foreign(_)) => {
            SettingsError::File { path: path.display().to_string(), message: e.to_string() }
        }
        _ => SettingsError::Invalid(e.to_string()),
    })?;
    built.try_deserialize().map_err(|e| SettingsError::Invalid(e.to_string()))
}

/// The keys of `settings` (nested ones joined with `.`, e.g. `webhook.cert_file`) that the
/// section of the configuration reference `reference` under `heading` does not name as
/// `` `key` `` (or as `` `webhook.*` `` for the nested ones): what is left to document.
pub fn undocumented_keys<T: Serialize>(settings: &T, reference: &str, heading: &str) -> Vec<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let section = reference.find(heading).map_or("", |start| {
        let rest = &reference[start + heading.len()..];
        rest.find("\n## ").map_or(rest, |end| &rest[..end])
    });
    let mut keys = Vec::new();
    walk("", &serde_json::to_value(settings).unwrap_or_default(), &mut keys);
    keys.sort();
    keys.retain(|key| {
        let wildcard = key.split_once('.').map(|(head, _)| format!("`{head}.*`"));
        !section.contains(&format!("`{key}`")) && !wildcard.is_some_and(|w| section.contains(&w))
    });
    keys
}

/// Settings of one of kdfed's long-running binaries.
pub trait Component: DeserializeOwned + Serialize + Default {
    /// Checks values that the types alone cannot; the message names the key.
    fn validate(&self) -> Result<(), String>;
    /// Log format (`text` or `json`) and filter.
    fn logging(&self) -> (&str, &str);
}

/// Checks a log format value.
pub fn validate_log_format(format: &str) -> Result<(), String> {
    match format {
        "text" | "json" => Ok(()),
        other => Err(format!("log_format: must be \"text\" or \"json\", not {other:?}")),
    }
}

/// The start-up every binary shares: load settings (exit status 2 naming the key when they
/// are bad), validate them, initialise logging, then `run` them (exit status 1 when it
/// fails, after logging the error chain).
pub async fn launch<T, F, E>(
    program: &str,
    env_prefix: &str,
    file: Option<&Path>,
    overrides: &[(&str, Option<String>)],
    run: impl FnOnce(T) -> F,
) -> std::process::ExitCode
where
    T: Component,
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let settings: T = match load(file, env_prefix, overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{program}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(e) = settings.validate() {
        eprintln!("{program}: invalid configuration: {e}");
        return std::process::ExitCode::from(2);
    }
    let (format, level) = settings.logging();
    crate::telemetry::init(format, level);
    match run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Example {
        admin_address: String,
        grace_seconds: u64,
    }

    impl Default for Example {
        fn default() -> Self {
            Example { admin_address: "127.0.0.1:9090".into(), grace_seconds: 30 }
        }
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "grace_seconds: 45\nadmin_address: 127.0.0.1:1\n").expect("write");
        let loaded: Example = load(Some(&path), "KDFED_SETTINGS_TEST_A", &[]).expect("load");
        assert_eq!(loaded, Example { admin_address: "127.0.0.1:1".into(), grace_seconds: 45 });
        let loaded: Example =
            load(Some(&path), "KDFED_SETTINGS_TEST_A", &[("admin_address", Some("127.0.0.1:2".into()))]).expect("load");
        assert_eq!(loaded.admin_address, "127.0.0.1:2");
        let loaded: Example = load(None, "KDFED_SETTINGS_TEST_A", &[]).expect("load");
        assert_eq!(loaded, Example::default());
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "grace_secnds: 45\n").expect("write");
        let err = load::<Example>(Some(&path), "KDFED_SETTINGS_TEST_B", &[]).expect_err("must fail");
        assert!(err.to_string().contains("grace_secnds"), "{err}");
    }

    #[test]
    fn bad_value_is_named_in_the_error() {
        let err = load::<Example>(None, "KDFED_SETTINGS_TEST_C", &[("grace_seconds", Some("soon".into()))])
            .expect_err("must fail");
        assert!(err.to_string().contains("grace_seconds"), "{err}");
    }
}
