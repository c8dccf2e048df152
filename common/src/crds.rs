//! Installing kdfed's CRDs into a cluster.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

/// Field manager used when installing CRDs.
pub const FIELD_MANAGER: &str = "kdfed-crd-installer";

/// Why the CRDs could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The API server refused a CRD.
    #[error("apply CRD {name}: {source}")]
    Apply {
        /// CRD name.
        name: String,
        /// API error.
        #[source]
        source: kube::Error,
    },
    /// A CRD did not become established in time.
    #[error("CRD {0} not established after 60s")]
    NotEstablished(String),
}

/// Server-side applies every kdfed CRD and waits until each is established. Returns their names.
pub async fn install(client: Client) -> Result<Vec<String>, InstallError> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let mut names = Vec::new();
    for (_, crd) in kdfed_crds::crdgen::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let apply = |source| InstallError::Apply { name: name.clone(), source };
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd)).await.map_err(apply)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let current = api.get(&name).await.map_err(apply)?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
            if established {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(InstallError::NotEstablished(name));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        names.push(name);
    }
    Ok(names)
}
