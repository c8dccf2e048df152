//! The webhook's settings (the `webhook.*` keys and `--webhook-*` flags both binaries
//! share) and its start-up: serve, then register when an endpoint and CA are given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kube::Client;
use tracing::info;

use super::registration::{Endpoint, check_unreviewed_user, register};
use super::review::{Reviewer, own_user};
use super::server::{ServeError, serve};
use crate::observe::WebhookMetrics;

/// Webhook settings shared by the hub and the spoke (standalone mode).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Address the webhook listens on.
    pub address: SocketAddr,
    /// Serving certificate (PEM); the webhook is off unless this and `key_file` are set.
    pub cert_file: Option<PathBuf>,
    /// Serving key (PEM).
    pub key_file: Option<PathBuf>,
    /// CA that signed the serving certificate, for the registration's `caBundle`.
    pub ca_file: Option<PathBuf>,
    /// URL the API server calls; with `ca_file`, the component registers the webhook itself.
    pub url: Option<String>,
    /// Service the API server calls (`namespace/name[:port]`, port 443 by default); with
    /// `ca_file`, the component registers the webhook itself through that Service (and so
    /// fills in the `caBundle` of the configurations `deploy/hub` ships).
    pub service: Option<String>,
    /// A user whose requests skip every webhook of the registration (`matchConditions`;
    /// empty: none). The spoke's default is its fence watchdog's ServiceAccount
    /// ([`super::FENCE_WATCHDOG_USER`]), which must annotate copies while the spoke (and so
    /// its webhook) is dead; the hub skips nobody.
    pub unreviewed_user: Option<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            address: SocketAddr::from(([127, 0, 0, 1], 9443)),
            cert_file: None,
            key_file: None,
            ca_file: None,
            url: None,
            service: None,
            unreviewed_user: None,
        }
    }
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A setting is unusable (the message names the key).
    #[error("{0}")]
    Settings(String),
    /// The server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The CA file could not be read.
    #[error("webhook.ca_file {path}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API server refused the registration.
    #[error("register the webhook")]
    Register(#[source] kube::Error),
}

impl WebhookSettings {
    /// Checks that the settings are complete where they need to be.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(user) = &self.unreviewed_user {
            check_unreviewed_user(user)?;
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("webhook.cert_file and webhook.key_file: set both or neither".into());
        }
        if self.url.is_some() && self.service.is_some() {
            return Err("webhook.service and webhook.url: set one or the other".into());
        }
        if self.url.is_some() && (self.ca_file.is_none() || self.cert_file.is_none()) {
            return Err("webhook.url: registering the webhook needs webhook.ca_file and a serving certificate".into());
        }
        if let Some(service) = &self.service {
            if self.ca_file.is_none() || self.cert_file.is_none() {
                return Err(
                    "webhook.service: registering the webhook needs webhook.ca_file and a serving certificate".into()
                );
            }
            Endpoint::service(service)?;
        }
        Ok(())
    }

    /// Where the API server is told to call the webhook, if it is to be registered.
    pub fn endpoint(&self) -> Result<Option<Endpoint>, String> {
        match (&self.url, &self.service) {
            (Some(url), _) => Ok(Some(Endpoint::Url(url.clone()))),
            (None, Some(service)) => Endpoint::service(service).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Starts the webhook (if configured) and registers it (if an endpoint is given).
    /// `trust_own_ciphertexts`: the component's own writes may carry secret-key ciphertexts
    /// (see [`Reviewer::own_user`]).
    pub async fn start(
        &self,
        client: &Client,
        system_namespace: &str,
        component: &str,
        metrics: Arc<WebhookMetrics>,
        trust_own_ciphertexts: bool,
    ) -> Result<Option<SocketAddr>, WebhookError> {
        let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) else { return Ok(None) };
        let reviewer = Reviewer {
            client: client.clone(),
            system_namespace: system_namespace.to_string(),
            own_user: if trust_own_ciphertexts { own_user(client).await } else { None },
        };
        let bound = serve(self.address, cert.clone(), key.clone(), reviewer, metrics).await?;
        let endpoint = self.endpoint().map_err(WebhookError::Settings)?;
        if let (Some(endpoint), Some(ca)) = (endpoint, &self.ca_file) {
            let ca_pem = std::fs::read_to_string(ca)
                .map_err(|source| WebhookError::CaFile { path: ca.display().to_string(), source })?;
            register(client, component, &endpoint, &ca_pem, component, self.unreviewed_user.as_deref())
                .await
                .map_err(WebhookError::Register)?;
            info!(?endpoint, "admission webhook registered");
        }
        Ok(Some(bound))
    }
}

/// Command-line flags of the webhook, shared by the hub and the spoke.
#[derive(clap::Args, Debug, Default)]
pub struct WebhookArgs {
    /// Webhook listen address.
    #[arg(long)]
    pub webhook_address: Option<String>,
    /// Webhook serving certificate (PEM).
    #[arg(long)]
    pub webhook_cert_file: Option<String>,
    /// Webhook serving key (PEM).
    #[arg(long)]
    pub webhook_key_file: Option<String>,
    /// CA of the webhook certificate (for registration).
    #[arg(long)]
    pub webhook_ca_file: Option<String>,
    /// URL the API server calls the webhook at; set to register it.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Service the API server calls the webhook through (namespace/name[:port]); set to
    /// register it (fills in the caBundle of the shipped configurations).
    #[arg(long)]
    pub webhook_service: Option<String>,
    /// User whose requests skip the webhooks (matchConditions; empty: none).
    #[arg(long)]
    pub webhook_unreviewed_user: Option<String>,
}

impl WebhookArgs {
    /// The flags as configuration overrides (`webhook.*` keys).
    pub fn overrides(self) -> [(&'static str, Option<String>); 7] {
        [
            ("webhook.address", self.webhook_address),
            ("webhook.cert_file", self.webhook_cert_file),
            ("webhook.key_file", self.webhook_key_file),
            ("webhook.ca_file", self.webhook_ca_file),
            ("webhook.url", self.webhook_url),
            ("webhook.service", self.webhook_service),
            ("webhook.unreviewed_user", self.webhook_unreviewed_user),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_needs_a_ca_a_certificate_and_one_endpoint() {
        let settings = WebhookSettings {
            service: Some("kdfed-system/kdfed-hub".into()),
            url: Some("https://127.0.0.1:9443".into()),
            ..WebhookSettings::default()
        };
        assert_eq!(settings.validate(), Err("webhook.service and webhook.url: set one or the other".into()));
        let settings = WebhookSettings { service: Some("kdfed-system/kdfed-hub".into()), ..WebhookSettings::default() };
        assert!(settings.validate().unwrap_err().contains("needs webhook.ca_file"));
        let half = WebhookSettings { cert_file: Some("tls.crt".into()), ..WebhookSettings::default() };
        assert_eq!(half.validate(), Err("webhook.cert_file and webhook.key_file: set both or neither".into()));
        let complete = WebhookSettings {
            cert_file: Some("tls.crt".into()),
            key_file: Some("tls.key".into()),
            ca_file: Some("ca.crt".into()),
            service: Some("ops/hub:8443".into()),
            ..WebhookSettings::default()
        };
        assert_eq!(complete.validate(), Ok(()));
        assert_eq!(
            complete.endpoint(),
            Ok(Some(Endpoint::Service { namespace: "ops".into(), name: "hub".into(), port: 8443 }))
        );
        assert_eq!(WebhookSettings::default().endpoint(), Ok(None));
    }

    #[test]
    fn flags_override_the_webhook_keys() {
        let args = WebhookArgs { webhook_url: Some("https://x".into()), ..Default::default() };
        let overrides = args.overrides();
        assert_eq!(overrides[4], ("webhook.url", Some("https://x".into())));
        assert!(overrides.iter().filter(|(_, v)| v.is_some()).count() == 1);
    }
}
