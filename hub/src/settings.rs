//! The hub's configuration: defaults, then `--config FILE`, then `KDFED_HUB_<KEY>`
//! environment variables, then flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Every setting of the hub. The reference of keys is in docs/configuration.md.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Kubeconfig of the hub's API server; empty means in-cluster or `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    pub admin_address: SocketAddr,
    /// `text` or `json`.
    pub log_format: String,
    /// Log filter, e.g. `info` or `kdfed_hub=debug,info`.
    pub log_level: String,
    /// Seconds without a heartbeat before a member is `Available=Unknown`.
    pub heartbeat_grace_seconds: u64,
    /// Seconds a failover waits beyond the heartbeat grace and `afterSeconds`, for clock
    /// skew and the member's fence to take effect.
    pub failover_skew_margin_seconds: u64,
    /// Run controllers only while holding the `kdfed-hub` Lease in the system namespace.
    pub leader_election: bool,
    /// Seconds a leader's Lease lasts without renewal before another replica takes over.
    pub lease_duration_seconds: u64,
    /// Admission webhook.
    pub webhook: kdfed_common::admission::WebhookSettings,
    /// Namespace of the system app catalog (`appCatalog: system`).
    pub system_namespace: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            kubeconfig: None,
            admin_address: SocketAddr::from(([127, 0, 0, 1], 9090)),
            log_format: "text".into(),
            log_level: "info".into(),
            heartbeat_grace_seconds: 30,
            failover_skew_margin_seconds: 10,
            system_namespace: "kdfed-system".into(),
            webhook: kdfed_common::admission::WebhookSettings::default(),
            leader_election: true,
            lease_duration_seconds: 15,
        }
    }
}

impl kdfed_common::settings::Component for Settings {
    fn logging(&self) -> (&str, &str) {
        (&self.log_format, &self.log_level)
    }

    /// Checks values that the types alone cannot.
    fn validate(&self) -> Result<(), String> {
        self.webhook.validate()?;
        kdfed_common::settings::validate_log_format(&self.log_format)?;
        if self.heartbeat_grace_seconds == 0 {
            return Err("heartbeat_grace_seconds: must be at least 1".into());
        }
        if self.lease_duration_seconds < 3 {
            return Err("lease_duration_seconds: must be at least 3".into());
        }
        if self.system_namespace.is_empty() {
            return Err("system_namespace: must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_in_the_configuration_reference() {
        let reference = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md"))
            .expect("docs/configuration.md");
        let missing = kdfed_common::settings::undocumented_keys(&Settings::default(), &reference, "## kdfed-hub");
        assert_eq!(missing, Vec::<String>::new(), "keys not documented in docs/configuration.md");
    }
}
