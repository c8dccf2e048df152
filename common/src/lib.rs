//! Plumbing shared by kdfed's binaries: layered configuration, telemetry and Kubernetes
//! client set-up.

pub mod admin;
pub mod admission;
pub mod catalog;
pub mod conditions;
pub mod crds;
pub mod events;
pub mod secretkeys;
pub mod settings;
pub mod telemetry;
pub mod tokens;

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Why a Kubernetes client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read.
    #[error("cannot read kubeconfig {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The configuration could not be turned into a client.
    #[error("cannot configure a client from {origin}: {message}")]
    Configure {
        /// Kubeconfig path or "the environment".
        origin: String,
        /// What went wrong.
        message: String,
    },
}

/// A client from a kubeconfig file, or from the environment (in-cluster or `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|source| ClientError::Read { path: path.display().to_string(), source })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| ClientError::Configure { origin: path.display().to_string(), message: e.to_string() })?
        }
        None => Config::infer()
            .await
            .map_err(|e| ClientError::Configure { origin: "the environment".into(), message: e.to_string() })?,
    };
    Client::try_from(config).map_err(|e| ClientError::Configure {
        origin: kubeconfig.map_or("the environment".into(), |p| p.display().to_string()),
        message: e.to_string(),
    })
}
