//! `kdfed-console`: the end users' web console (issue #12). Users sign in with a bearer
//! token the hub's API server accepts, browse the catalog, launch clusters with choices and
//! placement, watch them across the fleet, reach their endpoints and change or delete them.
//! Every API call is made with the user's own identity (in local mode, the kubeconfig's), so
//! Kubernetes RBAC decides what each user sees and may do.
//!
//! - [`session`]: the sealed session cookie and CSRF tokens;
//! - [`hub`]: clients of the hub per user, sign-in verification;
//! - [`views`]: pure view models (catalog → form, status → page), unit-tested;
//! - [`templates`]: the pages, checked at compile time;
//! - `web`: routes, CSRF checks, request metrics;
//! - [`metrics`]: `kdfed_console_*` on the admin port.

pub mod hub;
pub mod metrics;
pub mod session;
pub mod templates;
pub mod tls;
pub mod views;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::info;

use crate::hub::Hub;
use crate::session::Sealer;

/// `kdfed-console`'s flags (each also from its `KDFED_CONSOLE_*` environment variable).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Local mode: make every call with this kubeconfig's identity, without sign-in; serves
    /// on a loopback address only.
    #[arg(long, env = "KDFED_CONSOLE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// In-cluster mode: the hub's URL and CA from this kubeconfig (its credentials are never
    /// used); default: the in-cluster service account's view of the API server.
    #[arg(long, env = "KDFED_CONSOLE_HUB_KUBECONFIG")]
    pub hub_kubeconfig: Option<PathBuf>,
    /// Address the console serves on.
    #[arg(long, env = "KDFED_CONSOLE_ADDRESS", default_value = "127.0.0.1:8080")]
    pub address: SocketAddr,
    /// Admin server address (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "KDFED_CONSOLE_ADMIN_ADDRESS", default_value = "127.0.0.1:9093")]
    pub admin_address: SocketAddr,
    /// TLS certificate (PEM); re-read when it changes. Without it the console serves plain
    /// HTTP (for loopback, or behind a TLS-terminating proxy).
    #[arg(long, env = "KDFED_CONSOLE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "KDFED_CONSOLE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File with the 32-byte session key (64 hex digits or base64); without it a random key
    /// per process (sessions end when it restarts; replicas need a shared key).
    #[arg(long, env = "KDFED_CONSOLE_SESSION_KEY_FILE")]
    pub session_key_file: Option<PathBuf>,
    /// Hours a session lasts (1-168).
    #[arg(long, env = "KDFED_CONSOLE_SESSION_HOURS", default_value_t = 8)]
    pub session_hours: i64,
    /// Namespace of the system app catalog.
    #[arg(long, env = "KDFED_CONSOLE_SYSTEM_NAMESPACE", default_value = "kdfed-system")]
    pub system_namespace: String,
    /// Log format: text or json.
    #[arg(long, env = "KDFED_CONSOLE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Log filter.
    #[arg(long, env = "KDFED_CONSOLE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl Args {
    /// Checks the flags together; the error names the flag and the rule.
    pub fn validate(&self) -> Result<()> {
        self.validate_mode(self.kubeconfig.is_some())
    }

    /// [`Args::validate`] for local mode (`local`) or sign-in mode.
    fn validate_mode(&self, local: bool) -> Result<()> {
        if local && !self.address.ip().is_loopback() {
            bail!(
                "--address {}: local mode (--kubeconfig) serves on a loopback address only, as it acts with the kubeconfig's identity (rule: local-loopback)",
                self.address
            );
        }
        if self.kubeconfig.is_some() && self.hub_kubeconfig.is_some() {
            bail!("--hub-kubeconfig: not with --kubeconfig; choose local mode or sign-in mode (rule: one-mode)");
        }
        if !(1..=168).contains(&self.session_hours) {
            bail!("--session-hours {}: must be 1 to 168 (rule: session-hours)", self.session_hours);
        }
        Ok(())
    }
}

async fn hub(args: &Args) -> Result<Hub> {
    let read = |path: &PathBuf| {
        Kubeconfig::read_from(path).with_context(|| format!("cannot read kubeconfig {}", path.display()))
    };
    match (&args.kubeconfig, &args.hub_kubeconfig) {
        (Some(path), _) => {
            let config = kube::Config::from_custom_kubeconfig(read(path)?, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("cannot configure a client from {}", path.display()))?;
            local_hub(config).with_context(|| format!("local mode with {}", path.display()))
        }
        (None, Some(path)) => {
            let config = kube::Config::from_custom_kubeconfig(read(path)?, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("cannot configure a client from {}", path.display()))?;
            Ok(Hub::for_users(config))
        }
        (None, None) => Ok(Hub::for_users(kube::Config::infer().await.context("in-cluster configuration of the hub")?)),
    }
}

/// Local mode's hub: every call with `config`'s identity.
fn local_hub(config: kube::Config) -> Result<Hub> {
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).context("client from the kubeconfig")?;
    Ok(Hub::Local { client, namespace })
}

/// Runs the console until the process is stopped.
pub async fn run(args: Args) -> Result<()> {
    args.validate()?;
    kdfed_common::telemetry::init(&args.log_format, &args.log_level);
    let hub = hub(&args).await?;
    serve(args, hub, |url| info!("console serving on {url}")).await
}

/// Runs the console in local mode with a client configuration the caller built (`kdfed
/// console`, from its `--kubeconfig` and `--context`; `args.kubeconfig` and
/// `args.hub_kubeconfig` are ignored), on a loopback address only; `announce` gets the URL
/// once the console listens. Logs go to stderr at `args.log_level`.
pub async fn run_local(args: Args, config: kube::Config, announce: impl FnOnce(&str)) -> Result<()> {
    args.validate_mode(true)?;
    kdfed_common::telemetry::init(&args.log_format, &args.log_level);
    serve(args, local_hub(config)?, announce).await
}

/// Serves the console with `hub` until the process is stopped; `announce` gets its URL.
async fn serve(args: Args, hub: Hub, announce: impl FnOnce(&str)) -> Result<()> {
    let mut admin = kdfed_common::admin::Admin::new();
    let metrics = metrics::ConsoleMetrics::register(&mut admin.registry);
    let admin = Arc::new(admin);
    kdfed_common::admin::serve(args.admin_address, admin.clone()).await.context("admin server")?;
    let sealer = match &args.session_key_file {
        Some(path) => Sealer::new(&session::read_key(path)?),
        None => Sealer::random(),
    };
    let local_user = match &hub {
        Hub::Local { client, .. } => hub::who_am_i(client).await.unwrap_or_else(|_| "the kubeconfig's identity".into()),
        Hub::Users(_) => String::new(),
    };
    let console = Arc::new(web::Console {
        hub,
        sealer,
        session_seconds: args.session_hours * 3600,
        system_namespace: args.system_namespace.clone(),
        local_csrf: session::new_csrf(),
        local_user,
        metrics,
    });
    let router = web::router(console);
    let listener =
        tokio::net::TcpListener::bind(args.address).await.with_context(|| format!("listen on {}", args.address))?;
    let bound = listener.local_addr()?;
    admin.set_ready(true);
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = kdfed_common::admission::tls::acceptor(cert.clone(), key.clone())?;
            announce(&format!("https://{bound}"));
            axum::serve(tls::TlsListener { tcp: listener, acceptor }, router).await?;
        }
        _ => {
            if !bound.ip().is_loopback() {
                tracing::warn!(
                    "serving plain HTTP on {bound}: the session cookie is Secure, so browsers keep it only over HTTPS; give --tls-cert/--tls-key or put a TLS-terminating proxy in front"
                );
            }
            announce(&format!("http://{bound}"));
            axum::serve(listener, router).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn local_mode_serves_only_on_loopback_and_bad_flags_are_named() {
        let local = Cli::parse_from(["c", "--kubeconfig", "k", "--address", "0.0.0.0:8080"]).args;
        let e = local.validate().expect_err("not loopback");
        assert!(e.to_string().starts_with("--address 0.0.0.0:8080: local mode"), "{e}");
        let ok = Cli::parse_from(["c", "--kubeconfig", "k"]).args;
        assert!(ok.validate().is_ok());
        let hours = Cli::parse_from(["c", "--session-hours", "0"]).args;
        assert!(hours.validate().expect_err("0 hours").to_string().contains("(rule: session-hours)"));
        assert!(Cli::try_parse_from(["c", "--tls-cert", "a"]).is_err(), "a certificate needs its key");
    }
}
