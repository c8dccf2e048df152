//! The runtime both binaries start from, in the spirit of kubert's `Runtime`: one metrics
//! registry (the component's metrics, plus its API-request and webhook metrics under
//! `kdfed_<component>_*`), the admin server on it, a client of the component's API server
//! whose requests are counted, and the admission webhook. The hub and the spoke each call
//! [`Runtime::builder`] and then run their own controllers with what it returns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kube::Client;
use prometheus_client::registry::Registry;
use tracing::info;

use crate::admin::Admin;
use crate::admission::{WebhookError, WebhookSettings};
use crate::observe::{ApiMetrics, WebhookMetrics};

/// Command-line flags every binary has (configuration file, client, admin server,
/// logging, webhook), flattened into each binary's arguments.
#[derive(clap::Args, Debug, Default)]
pub struct RuntimeArgs {
    /// YAML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kubeconfig of the component's API server (default: in-cluster or $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<String>,
    /// Admin server address (metrics, health).
    #[arg(long)]
    pub admin_address: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Log filter.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Admission webhook.
    #[command(flatten)]
    pub webhook: crate::admission::WebhookArgs,
}

impl RuntimeArgs {
    /// The configuration file, and the flags as configuration overrides (by key).
    pub fn into_overrides(self) -> (Option<PathBuf>, Vec<(&'static str, Option<String>)>) {
        let mut overrides = vec![
            ("kubeconfig", self.kubeconfig),
            ("admin_address", self.admin_address),
            ("log_format", self.log_format),
            ("log_level", self.log_level),
        ];
        overrides.extend(self.webhook.overrides());
        (self.config, overrides)
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The admin server could not listen.
    #[error("admin server on {address}")]
    Admin {
        /// Its address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No client could be built from the kubeconfig or the environment.
    #[error(transparent)]
    Client(#[from] crate::ClientError),
    /// The API server did not answer.
    #[error("connect to the {cluster}'s API server")]
    Connect {
        /// Which cluster (`hub`, `member`).
        cluster: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The admission webhook could not start.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
}

/// The API server a component talks to first.
#[derive(Clone, Copy, Debug)]
pub struct ApiServer {
    /// The `server` label of its request metrics (`hub`, `local`).
    pub label: &'static str,
    /// The cluster it is, for logs and errors (`hub`, `member`).
    pub cluster: &'static str,
}

/// What the runtime starts; see [`Runtime::builder`].
#[derive(Debug)]
pub struct Builder {
    component: &'static str,
    admin_address: SocketAddr,
    kubeconfig: Option<PathBuf>,
    server: ApiServer,
    webhook: Option<Webhook>,
}

#[derive(Debug)]
struct Webhook {
    settings: WebhookSettings,
    system_namespace: String,
    trust_own_ciphertexts: bool,
}

/// A started runtime: what the component's controllers need.
pub struct Runtime<M> {
    /// The admin server's state (readiness, the registry).
    pub admin: Arc<Admin>,
    /// Client of the component's API server, its requests counted.
    pub client: Client,
    /// The component's own metrics, as its registration returned them.
    pub metrics: M,
    /// Request metrics, for further clients (the spoke's client of the hub).
    pub api_metrics: Arc<ApiMetrics>,
    /// Where the admission webhook listens, when it is configured.
    pub webhook: Option<SocketAddr>,
}

impl Runtime<()> {
    /// A builder for `component` (`hub`, `spoke`): its metrics are `kdfed_<component>_*`
    /// and its webhook registers as `kdfed-<component>`.
    pub fn builder(component: &'static str) -> Builder {
        Builder {
            component,
            admin_address: SocketAddr::from(([127, 0, 0, 1], 9090)),
            kubeconfig: None,
            server: ApiServer { label: component, cluster: component },
            webhook: None,
        }
    }
}

/// The admin state with every metric of `component`: its own (from `register`, given the
/// root registry), its API requests and its webhook answers (`kdfed_<component>_*`).
fn registry<M>(
    component: &str,
    register: impl FnOnce(&mut Registry) -> M,
) -> (Admin, M, Arc<ApiMetrics>, Arc<WebhookMetrics>) {
    let mut admin = Admin::new();
    let metrics = register(&mut admin.registry);
    let api_metrics = ApiMetrics::register(admin.registry.sub_registry_with_prefix(component));
    let webhook_metrics = WebhookMetrics::register(admin.registry.sub_registry_with_prefix(component));
    (admin, metrics, api_metrics, webhook_metrics)
}

impl Builder {
    /// Where the admin server listens (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin(mut self, address: SocketAddr) -> Self {
        self.admin_address = address;
        self
    }

    /// The API server to connect to: from `kubeconfig`, else in-cluster or `$KUBECONFIG`.
    pub fn client(mut self, kubeconfig: Option<PathBuf>, server: ApiServer) -> Self {
        self.kubeconfig = kubeconfig;
        self.server = server;
        self
    }

    /// Serves the admission webhook as `settings` say (nothing unless a certificate is
    /// set), reviewing against the client's API server. `trust_own_ciphertexts`: see
    /// [`crate::admission::Reviewer::own_user`].
    pub fn webhook(mut self, settings: WebhookSettings, system_namespace: &str, trust_own_ciphertexts: bool) -> Self {
        self.webhook =
            Some(Webhook { settings, system_namespace: system_namespace.to_string(), trust_own_ciphertexts });
        self
    }

    /// Starts it all: registers the component's metrics with `register` (given the root
    /// registry, prefixed `kdfed`), serves the admin endpoints, connects (and then reports
    /// ready), and starts the webhook.
    pub async fn build<M>(self, register: impl FnOnce(&mut Registry) -> M) -> Result<Runtime<M>, RuntimeError> {
        let (admin, metrics, api_metrics, webhook_metrics) = registry(self.component, register);
        let admin = Arc::new(admin);
        crate::admin::serve(self.admin_address, admin.clone())
            .await
            .map_err(|source| RuntimeError::Admin { address: self.admin_address, source })?;
        let client = self.connect(&api_metrics).await?;
        admin.set_ready(true);
        let webhook = match &self.webhook {
            Some(w) => self.start_webhook(w, &client, webhook_metrics).await?,
            None => None,
        };
        Ok(Runtime { admin, client, metrics, api_metrics, webhook })
    }

    async fn connect(&self, api_metrics: &Arc<ApiMetrics>) -> Result<Client, RuntimeError> {
        let ApiServer { label, cluster } = self.server;
        let client = crate::counted_client(self.kubeconfig.as_deref(), api_metrics, label).await?;
        let version = client.apiserver_version().await.map_err(|source| RuntimeError::Connect { cluster, source })?;
        info!(version = %version.git_version, "connected to the {cluster} API server");
        Ok(client)
    }

    async fn start_webhook(
        &self,
        webhook: &Webhook,
        client: &Client,
        metrics: Arc<WebhookMetrics>,
    ) -> Result<Option<SocketAddr>, RuntimeError> {
        let component = format!("kdfed-{}", self.component);
        let bound = webhook
            .settings
            .start(client, &webhook.system_namespace, &component, metrics, webhook.trust_own_ciphertexts)
            .await?;
        if let Some(addr) = bound {
            info!(%addr, "admission webhook serving");
        }
        Ok(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_admin_address_is_named_and_nothing_connects() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = taken.local_addr().expect("address");
        let built = Runtime::builder("hub").admin(address).build(|_| ()).await;
        let Err(e) = built else { panic!("the admin address is taken") };
        assert!(matches!(&e, RuntimeError::Admin { address: a, .. } if *a == address), "{e:?}");
        assert_eq!(e.to_string(), format!("admin server on {address}"));
    }

    #[test]
    fn common_flags_become_overrides_of_their_keys() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            runtime: RuntimeArgs,
        }
        let args =
            Args::parse_from(["kdfed-x", "--config", "c.yaml", "--admin-address", "0.0.0.0:1", "--webhook-url", "u"]);
        let (config, overrides) = args.runtime.into_overrides();
        assert_eq!(config, Some(PathBuf::from("c.yaml")));
        let set: Vec<_> = overrides.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
        assert_eq!(set, [("admin_address", "0.0.0.0:1".to_string()), ("webhook.url", "u".to_string())]);
    }

    #[test]
    fn the_component_s_metrics_share_one_registry_with_its_request_and_webhook_metrics() {
        let (admin, metrics, api, webhook) = registry("spoke", |registry| {
            let example = prometheus_client::metrics::counter::Counter::<u64>::default();
            registry.sub_registry_with_prefix("spoke").register("example", "An example", example.clone());
            example
        });
        metrics.inc();
        api.record("local", "GET", "2xx", 0.01);
        webhook.record("validate", "KubeDirectorCluster", "CREATE", true, 0.01);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &admin.registry).expect("encode");
        for line in [
            "kdfed_spoke_example_total 1",
            "kdfed_spoke_api_requests_total{server=\"local\",verb=\"GET\",code=\"2xx\"} 1",
            "kdfed_spoke_webhook_requests_total{webhook=\"validate\",kind=\"KubeDirectorCluster\",operation=\"CREATE\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_kubeconfig_that_cannot_be_read_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nowhere.kubeconfig");
        let server = ApiServer { label: "local", cluster: "member" };
        let built = Runtime::builder("spoke")
            .admin(SocketAddr::from(([127, 0, 0, 1], 0)))
            .client(Some(missing.clone()), server)
            .build(|_| ())
            .await;
        let Err(e) = built else { panic!("the kubeconfig does not exist") };
        assert!(e.to_string().starts_with(&format!("cannot read kubeconfig {}", missing.display())), "{e}");
    }
}
