//! Hub sync: the spoke's side of federation. It connects out to the hub with the member's
//! own identity and runs one loop per concern, each retrying on its own:
//!
//! 1. `credentials`: the hub client, and renewal of the member's token before it ends;
//! 2. `heartbeat`: the member's Lease on the hub, whose renewals also feed self-fencing
//!    ([`crate::fencing`]) and are recorded in a member-local Lease for the fence watchdog
//!    ([`crate::watchdog`]);
//! 3. `report`: capacity, storage classes and cluster counts into the member's status,
//!    written only when they change, after `fencing` fenced the copies whose Work is gone;
//! 4. `work`: each Work in the member's namespace becomes local objects for the director
//!    (`build` makes them, pure; `apply` writes them; `keys` seals secret keys), and the
//!    director's status goes back into the Work.

mod apply;
mod build;
mod confirm;
mod credentials;
mod fencing;
mod heartbeat;
mod keys;
mod memo;
mod report;
mod work;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kdfed_common::ApiError;
use kdfed_crds::federation::member_namespace;
use kube::Client;
use tracing::info;

pub use credentials::hub_client;
pub use keys::Material;
pub use report::Report;

/// Field manager of everything hub sync writes (locally and on the hub).
pub const FIELD_MANAGER: &str = "kdfed-hub-sync";

/// Label on the local copies of one hub sync when several share one member API server
/// (see [`Options::shared_local`]); its value is that option's tag.
pub const LABEL_SHARED_LOCAL: &str = "federation.kubedirector.hpe.com/shared-local";

/// Settings of hub sync.
#[derive(Clone, Debug)]
pub struct Options {
    /// This member's name.
    pub member: String,
    /// Namespace of this member's `KubeDirectorConfig` (its secret-key master key).
    pub system_namespace: String,
    /// The kubeconfig `kdfed member add` printed.
    pub hub_kubeconfig: PathBuf,
    /// Where the current hub token is kept (renewed in place).
    pub token_file: PathBuf,
    /// Lifetime of renewed tokens.
    pub token_seconds: i64,
    /// Time between renewals.
    pub token_renew: Duration,
    /// Heartbeat interval.
    pub lease_interval: Duration,
    /// Interval of capacity reports (written only when something changed).
    pub report_interval: Duration,
    /// Metrics of the hub connection.
    pub metrics: Option<std::sync::Arc<crate::metrics::SpokeMetrics>>,
    /// Counts requests to the hub's API server (`server="hub"`).
    pub api_metrics: Option<std::sync::Arc<kdfed_common::observe::ApiMetrics>>,
    /// How long before its `afterSeconds` a failover-enabled copy stops when the heartbeat
    /// cannot be renewed (see [`crate::fencing`]).
    pub self_fence_margin: Duration,
    /// `None` in every real spoke. `Some(tag)` lets several hub syncs share one member API
    /// server, as the fleet simulator's virtual members do (docs/benchmarks.md): each local
    /// copy carries [`LABEL_SHARED_LOCAL`]`=tag` and every listing and watch of local copies
    /// selects it, so that one hub sync never counts, syncs or fences another's copies. The
    /// self-fencing loop ([`crate::fencing`]) is not run then: it lists every local copy (each
    /// second while a fence can be due) and asks the hub only to lift a self-fence, which a copy without failover
    /// never gets, so leaving it out keeps the shared member API server cheap and changes
    /// nothing on the hub.
    pub shared_local: Option<String>,
    /// The heartbeat's renewals, shared with the director's [`crate::fencing::FenceClock`];
    /// `None`: hub sync keeps its own.
    pub heartbeat: Option<Arc<crate::fencing::Heartbeat>>,
}

impl Options {
    /// The label selector of the local copies this hub sync made.
    fn copies_selector(&self) -> String {
        copies_selector(self.shared_local.as_deref())
    }
}

/// The label selector of local copies: every Work's copy, or only those tagged `shared`.
fn copies_selector(shared: Option<&str>) -> String {
    match shared {
        None => kdfed_crds::federation::LABEL_WORK.to_string(),
        Some(tag) => format!("{},{LABEL_SHARED_LOCAL}={tag}", kdfed_crds::federation::LABEL_WORK),
    }
}

/// Errors of hub sync, one variant per step that can fail. API errors display as they
/// always did (`action: error`): that text is what a Work's `ApplyFailed` condition shows.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The hub kubeconfig or token file could not be used.
    #[error("hub credentials: {0}")]
    Credentials(String),
    /// The capacity report could not read what it counts.
    #[error(transparent)]
    Report(ApiError),
    /// Copies whose Work is gone could not be checked or fenced.
    #[error(transparent)]
    Fence(ApiError),
    /// A deleted Work's local copy, Secrets or ConfigMaps could not be removed, or the
    /// Work not released.
    #[error(transparent)]
    Release(ApiError),
    /// The Work's secret material could not be read from the hub.
    #[error(transparent)]
    ReadMaterial(ApiError),
    /// A Secret or ConfigMap the Work carries could not be built (data that is not base64).
    #[error("{object}: {message}")]
    Build {
        /// The object (`Secret namespace/name`).
        object: String,
        /// What is wrong.
        message: String,
    },
    /// The namespace, app, Secrets or ConfigMaps of the copy could not be applied, or
    /// those the Work no longer carries not removed.
    #[error(transparent)]
    ApplyInputs(ApiError),
    /// Secret keys could not be sealed: this member's master key could not be read or
    /// stored, or the keys the local copy holds could not be read.
    #[error(transparent)]
    Seal(ApiError),
    /// A cluster's secret keys could not be encrypted for this member.
    #[error("secret keys of {cluster}: {message}")]
    SecretKeys {
        /// The cluster (`namespace/name`).
        cluster: String,
        /// What went wrong.
        message: String,
    },
    /// The member's availability or the Work could not be read from the hub before a
    /// failover-enabled copy starts.
    #[error(transparent)]
    Confirm(ApiError),
    /// The local copy of the cluster could not be applied or its fence lifted.
    #[error(transparent)]
    ApplyCopy(ApiError),
    /// The director's status could not be written into the Work.
    #[error(transparent)]
    ReportStatus(ApiError),
}

impl Error {
    /// The step that failed, as a bounded label (for metrics and logs).
    pub fn step(&self) -> &'static str {
        match self {
            Error::Credentials(_) => "credentials",
            Error::Report(_) => "report",
            Error::Fence(_) => "fence",
            Error::Release(_) => "release",
            Error::ReadMaterial(_) => "read_material",
            Error::Build { .. } => "build",
            Error::ApplyInputs(_) => "apply_inputs",
            Error::Seal(_) => "seal",
            Error::SecretKeys { .. } => "secret_keys",
            Error::Confirm(_) => "confirm",
            Error::ApplyCopy(_) => "apply_copy",
            Error::ReportStatus(_) => "report_status",
        }
    }

    /// The API error behind this one, if an API server refused a request.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::Report(e)
            | Error::Fence(e)
            | Error::Release(e)
            | Error::ReadMaterial(e)
            | Error::ApplyInputs(e)
            | Error::Seal(e)
            | Error::Confirm(e)
            | Error::ApplyCopy(e)
            | Error::ReportStatus(e) => Some(e),
            Error::Credentials(_) | Error::Build { .. } | Error::SecretKeys { .. } => None,
        }
    }

    /// Whether the hub refused this member's credentials (a 401).
    pub fn is_refusal(&self) -> bool {
        self.api_error().is_some_and(|e| crate::hubaccess::is_refusal(&e.source))
    }
}

/// Runs hub sync until the process stops. Each loop retries on its own, so a hub that
/// cannot be reached never stops the director or the other loops.
pub async fn run(local: Client, opts: Options) -> Result<(), Error> {
    let hub = hub_client(&opts).await?;
    info!(member = %opts.member, "hub sync starting");
    let beats = opts.heartbeat.clone().unwrap_or_default();
    let self_fencing = crate::fencing::Fencing {
        hub: hub.clone(),
        local: local.clone(),
        member: opts.member.clone(),
        margin: opts.self_fence_margin,
        interval: opts.lease_interval,
        heartbeat: beats.clone(),
    };
    let access = Arc::new(crate::hubaccess::HubAccess::default());
    let shared_local = opts.shared_local.is_some();
    let ctx = Arc::new(SyncContext {
        hub,
        local,
        opts,
        beats,
        access,
        works: std::sync::OnceLock::new(),
        memo: memo::Memo::default(),
        confirmation: confirm::Confirmation::default(),
        works_gone: tokio::sync::Notify::new(),
    });
    let self_fence = async move {
        if !shared_local {
            crate::fencing::run(self_fencing).await;
        }
    };
    // The member-local record for the fence watchdog (not for the simulator's virtual
    // members, which share one member API server and run no watchdog).
    let (record, renewals) = tokio::sync::watch::channel(None);
    let record = (!shared_local).then_some(record);
    let record_locally = {
        let ctx = ctx.clone();
        async move {
            if !shared_local {
                heartbeat::record_locally(ctx, renewals).await;
            }
        }
    };
    tokio::join!(
        credentials::renew(ctx.clone()),
        heartbeat::run(ctx.clone(), record),
        record_locally,
        report::run(ctx.clone()),
        work::run(ctx),
        self_fence
    );
    Ok(())
}

/// What every loop of hub sync shares.
struct SyncContext {
    /// Client of the hub (with the member's identity).
    hub: Client,
    /// Client of the member's own API server.
    local: Client,
    /// Settings.
    opts: Options,
    /// Successful heartbeat renewals, for self-fencing.
    beats: Arc<crate::fencing::Heartbeat>,
    /// Whether the hub accepts this member's credentials.
    access: Arc<crate::hubaccess::HubAccess>,
    /// Work sync's cache of this member's Works (set once Work sync started).
    works: std::sync::OnceLock<kube::runtime::reflector::Store<kdfed_crds::federation::KubeDirectorWork>>,
    /// What Work sync applied and read, per Work.
    memo: memo::Memo,
    /// This member's availability on the hub as Work sync saw it.
    confirmation: confirm::Confirmation,
    /// Work sync saw a Work deleted on the hub: the fencing check runs at once.
    works_gone: tokio::sync::Notify,
}

impl SyncContext {
    /// This member's namespace on the hub.
    fn namespace(&self) -> String {
        member_namespace(&self.opts.member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> ApiError {
        let status = kube::core::Status::failure("no", "Reason").with_code(code).boxed();
        ApiError { action: "apply local cluster".into(), source: kube::Error::Api(status) }
    }

    #[test]
    fn errors_name_their_step_and_read_as_before() {
        let e = Error::ApplyCopy(api_error(422));
        assert_eq!(e.step(), "apply_copy");
        assert!(e.to_string().starts_with("apply local cluster: "), "{e}");
        assert!(!e.is_refusal());
        assert!(Error::ReadMaterial(api_error(401)).is_refusal());
        let keys = Error::SecretKeys { cluster: "ns/db".into(), message: "bad".into() };
        assert_eq!((keys.step(), keys.to_string().as_str()), ("secret_keys", "secret keys of ns/db: bad"));
        assert!(keys.api_error().is_none());
    }

    #[test]
    fn a_shared_member_api_server_scopes_the_copies_by_tag() {
        assert_eq!(copies_selector(None), kdfed_crds::federation::LABEL_WORK);
        assert_eq!(
            copies_selector(Some("sim-7")),
            format!("{},{LABEL_SHARED_LOCAL}=sim-7", kdfed_crds::federation::LABEL_WORK)
        );
    }
}
