//! Where the test bed's binaries are: `tests/testbed/install.sh` builds them into a cache
//! outside the repository and writes `$KDFED_CACHE/bin/env`; `KDFED_*` variables override.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Paths of every binary and data folder the test bed runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kube-scheduler.
    pub kube_scheduler: PathBuf,
    /// etcd.
    pub etcd: PathBuf,
    /// kwok.
    pub kwok: PathBuf,
    /// kwok's stage YAML folder (`kustomize/stage`).
    pub kwok_stages: PathBuf,
    /// kwok's CRD YAML folder (`kustomize/crd/bases`).
    pub kwok_crds: PathBuf,
}

/// The cache folder: `$KDFED_CACHE` or `~/.cache/kdfed`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KDFED_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("kdfed")
}

fn read_env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl Binaries {
    /// Finds the binaries, failing with a message that says how to install them.
    pub fn locate() -> Result<Binaries> {
        let env_file = cache_dir().join("bin").join("env");
        let file = read_env_file(&env_file);
        let get = |key: &str| -> Result<PathBuf> {
            let value = std::env::var(key).ok().or_else(|| file.get(key).cloned()).with_context(|| {
                format!("{key} is not set and {} does not name it; run tests/testbed/install.sh", env_file.display())
            })?;
            let path = PathBuf::from(value);
            if !path.exists() {
                bail!("{key}={} does not exist; run tests/testbed/install.sh", path.display());
            }
            Ok(path)
        };
        let kwok_stages = get("KDFED_KWOK_STAGES")?;
        // Older env files do not name the CRD folder; it sits beside the stages.
        let kwok_crds = get("KDFED_KWOK_CRDS").or_else(|_| {
            let dir = kwok_stages.parent().map(|p| p.join("crd/bases")).unwrap_or_default();
            if dir.exists() { Ok(dir) } else { bail!("kwok's CRDs not found; run tests/testbed/install.sh") }
        })?;
        Ok(Binaries {
            kube_apiserver: get("KDFED_KUBE_APISERVER")?,
            kube_controller_manager: get("KDFED_KUBE_CONTROLLER_MANAGER")?,
            kube_scheduler: get("KDFED_KUBE_SCHEDULER")?,
            etcd: get("KDFED_ETCD")?,
            kwok: get("KDFED_KWOK")?,
            kwok_stages,
            kwok_crds,
        })
    }
}
