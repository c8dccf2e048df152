//! What the hub and the spoke share: the [`runtime`] both start from (admin server,
//! metrics registry, counted API clients, the [`admission`] webhook), layered
//! configuration ([`settings`]), telemetry and metrics ([`observe`]), and the pieces their
//! controllers use alike: app catalog lookup, conditions, Events, reconcile plumbing, CRD
//! installation, join sealing, secret-key encryption and tokens.

pub mod admin;
pub mod admission;
pub mod catalog;
pub mod conditions;
pub mod crds;
pub mod events;
pub mod join;
pub mod observe;
pub mod reconcile;
pub mod runtime;
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
    let config = config(kubeconfig).await?;
    Client::try_from(config).map_err(|e| ClientError::Configure { origin: origin(kubeconfig), message: e.to_string() })
}

/// Like [`client`], with every request counted in `metrics` under the API server name
/// `server` (`kdfed_<component>_api_requests_total{server=...}`).
pub async fn counted_client(
    kubeconfig: Option<&Path>,
    metrics: &std::sync::Arc<observe::ApiMetrics>,
    server: &str,
) -> Result<Client, ClientError> {
    let config = config(kubeconfig).await?;
    counted(config, metrics, server).map_err(|e| ClientError::Configure { origin: origin(kubeconfig), message: e })
}

/// A client from `config` whose requests are counted in `metrics` under `server`.
pub fn counted(config: Config, metrics: &std::sync::Arc<observe::ApiMetrics>, server: &str) -> Result<Client, String> {
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| e.to_string())?;
    Ok(builder.with_layer(&metrics.layer(server)).build())
}

fn origin(kubeconfig: Option<&Path>) -> String {
    kubeconfig.map_or("the environment".into(), |p| p.display().to_string())
}

async fn config(kubeconfig: Option<&Path>) -> Result<Config, ClientError> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|source| ClientError::Read { path: path.display().to_string(), source })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| ClientError::Configure { origin: path.display().to_string(), message: e.to_string() })
        }
        None => Config::infer()
            .await
            .map_err(|e| ClientError::Configure { origin: "the environment".into(), message: e.to_string() }),
    }
}

/// A Kubernetes API call that failed, with what was being done (`"apply status of
/// default/x"`), so logs, Events and conditions say more than the API error alone.
#[derive(Debug, thiserror::Error)]
#[error("{action}: {source}")]
pub struct ApiError {
    /// What was being done.
    pub action: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// Attaches what was being done to a failed API call: `api.get(..).await.doing("get x")?`.
pub trait Doing<T> {
    /// The result, with `action` attached to its error.
    fn doing(self, action: impl Into<String>) -> Result<T, ApiError>;
}

impl<T> Doing<T> for Result<T, kube::Error> {
    fn doing(self, action: impl Into<String>) -> Result<T, ApiError> {
        self.map_err(|source| ApiError { action: action.into(), source })
    }
}
