//! The spoke's configuration: defaults, then `--config FILE`, then `KDFED_SPOKE_<KEY>`
//! environment variables, then flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The default heartbeat interval: five renewals a minute, so a member's idle traffic to the
/// hub (heartbeats plus its watches' reconnects) stays within six requests a minute (issue
/// #13's target, docs/benchmarks.md); the hub's default grace (30 s) still tolerates one
/// missed renewal.
pub const DEFAULT_LEASE_INTERVAL_SECONDS: u64 = 12;

/// Every setting of the spoke. The reference of keys is in docs/configuration.md.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Kubeconfig of the member's own API server; empty means in-cluster or `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig the hub issued to this member (`kdfed member add`).
    pub hub_kubeconfig: Option<PathBuf>,
    /// This member's name on the hub.
    pub member: Option<String>,
    /// Run only the director, as a single-cluster KubeDirector, without a hub.
    pub standalone: bool,
    /// Run as the member's fence watchdog instead of the spoke: stop failover-enabled
    /// copies when the spoke records no heartbeat renewal for too long (the spoke is dead
    /// or cut off from the hub). Needs no hub credentials.
    pub fence_watchdog: bool,
    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    pub admin_address: SocketAddr,
    /// `text` or `json`.
    pub log_format: String,
    /// Log filter.
    pub log_level: String,
    /// Seconds between heartbeat Lease renewals.
    pub lease_interval_seconds: u64,
    /// Seconds between capacity reports (written to the hub only when something changed).
    pub report_interval_seconds: u64,
    /// Seconds before its `failover.afterSeconds` that a failover-enabled copy is stopped
    /// when this member cannot renew its heartbeat on the hub (never sooner than two
    /// heartbeat intervals after the last renewal).
    pub self_fence_margin_seconds: u64,
    /// File holding the current hub token, renewed in place (default: `<hub_kubeconfig>.token`).
    pub hub_token_file: Option<PathBuf>,
    /// Lifetime of renewed hub tokens in seconds (at least 600).
    pub hub_token_seconds: i64,
    /// Seconds between token renewals (default: a third of the lifetime).
    pub hub_token_renew_seconds: Option<u64>,
    /// Admission webhook.
    pub webhook: kdfed_common::admission::WebhookSettings,
    /// Namespace of the system app catalog and the `KubeDirectorConfig`.
    pub system_namespace: String,
    /// configcli package (tgz) installed in members of roles with a setup package; none: no
    /// injection.
    pub configcli_package: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            kubeconfig: None,
            hub_kubeconfig: None,
            member: None,
            standalone: false,
            fence_watchdog: false,
            admin_address: SocketAddr::from(([127, 0, 0, 1], 9091)),
            log_format: "text".into(),
            log_level: "info".into(),
            lease_interval_seconds: DEFAULT_LEASE_INTERVAL_SECONDS,
            report_interval_seconds: 10,
            self_fence_margin_seconds: 5,
            hub_token_file: None,
            hub_token_seconds: 3600,
            hub_token_renew_seconds: None,
            system_namespace: "kdfed-system".into(),
            // The fence watchdog annotates copies while the spoke (its webhook) is dead.
            webhook: kdfed_common::admission::WebhookSettings {
                unreviewed_user: Some(kdfed_common::admission::FENCE_WATCHDOG_USER.into()),
                ..kdfed_common::admission::WebhookSettings::default()
            },
            configcli_package: None,
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
        if self.lease_interval_seconds == 0 {
            return Err("lease_interval_seconds: must be at least 1".into());
        }
        if self.report_interval_seconds == 0 {
            return Err("report_interval_seconds: must be at least 1".into());
        }
        if self.hub_token_seconds < 600 {
            return Err("hub_token_seconds: must be at least 600".into());
        }
        if self.hub_token_renew_seconds.is_some_and(|r| r == 0 || r as i64 >= self.hub_token_seconds) {
            return Err("hub_token_renew_seconds: must be between 1 and hub_token_seconds".into());
        }
        if let Some(path) = &self.configcli_package {
            // Opening proves it readable; reading it all waits for start-up proper.
            let file = std::fs::File::open(path)
                .map_err(|e| format!("configcli_package: cannot read {}: {e}", path.display()))?;
            let meta =
                file.metadata().map_err(|e| format!("configcli_package: cannot read {}: {e}", path.display()))?;
            if !meta.is_file() {
                return Err(format!("configcli_package: {} is not a file", path.display()));
            }
        }
        if self.fence_watchdog && self.standalone {
            return Err(
                "fence_watchdog: a standalone director has no hub to fail over from; not with standalone".into()
            );
        }
        if !self.standalone && !self.fence_watchdog {
            if self.hub_kubeconfig.is_none() {
                return Err("hub_kubeconfig: required unless standalone is true".into());
            }
            if self.member.as_deref().is_none_or(str::is_empty) {
                return Err("member: required unless standalone is true".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdfed_common::settings::Component;

    #[test]
    fn federated_mode_needs_hub_credentials_and_a_member_name() {
        let s = Settings::default();
        assert!(s.validate().unwrap_err().starts_with("hub_kubeconfig"));
        let s = Settings { hub_kubeconfig: Some("hub.kubeconfig".into()), ..Settings::default() };
        assert!(s.validate().unwrap_err().starts_with("member"));
        let s = Settings { standalone: true, ..Settings::default() };
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn the_fence_watchdog_needs_no_hub_and_is_never_standalone() {
        let s = Settings { fence_watchdog: true, ..Settings::default() };
        assert_eq!(s.validate(), Ok(()));
        let s = Settings { fence_watchdog: true, standalone: true, ..Settings::default() };
        assert!(s.validate().unwrap_err().starts_with("fence_watchdog: "));
    }

    #[test]
    fn a_configcli_package_must_be_a_readable_file() {
        let standalone = Settings { standalone: true, ..Settings::default() };
        let missing = Settings { configcli_package: Some("/nonexistent/configcli.tgz".into()), ..standalone.clone() };
        let err = missing.validate().unwrap_err();
        assert!(err.starts_with("configcli_package: cannot read /nonexistent/configcli.tgz: "), "{err}");
        let folder = Settings { configcli_package: Some(std::env::temp_dir()), ..standalone.clone() };
        assert!(folder.validate().unwrap_err().starts_with("configcli_package: "));
        let file = std::env::temp_dir().join(format!("kdfed-configcli-{}.tgz", std::process::id()));
        std::fs::write(&file, b"tgz").expect("write");
        let present = Settings { configcli_package: Some(file.clone()), ..standalone };
        assert_eq!(present.validate(), Ok(()));
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn every_key_is_in_the_configuration_reference() {
        let reference = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md"))
            .expect("docs/configuration.md");
        let missing = kdfed_common::settings::undocumented_keys(&Settings::default(), &reference, "## kdfed-spoke");
        assert_eq!(missing, Vec::<String>::new(), "keys not documented in docs/configuration.md");
    }
}
