//! The member's credentials on the hub: a client that reads its token from a file, and the
//! loop that renews that token (a bound ServiceAccount token of the member's identity)
//! well before it ends, so the spoke never depends on the join token's lifetime.

use std::path::Path;
use std::sync::Arc;

use kdfed_crds::federation::MEMBER_SERVICE_ACCOUNT;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tracing::{info, warn};

use super::{Error, Options, SyncContext};

/// A hub client that reads its token from `token_file` (re-read by the client as it
/// changes), seeded from the join kubeconfig's token the first time.
pub async fn hub_client(opts: &Options) -> Result<Client, Error> {
    let kc = Kubeconfig::read_from(&opts.hub_kubeconfig).map_err(|e| Error::Credentials(e.to_string()))?;
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Credentials(e.to_string()))?;
    if !opts.token_file.exists() {
        let token = config.auth_info.token.as_ref().map(|t| secrecy::ExposeSecret::expose_secret(t).to_string());
        let Some(token) = token else {
            return Err(Error::Credentials(format!(
                "{} has no token and {} does not exist",
                opts.hub_kubeconfig.display(),
                opts.token_file.display()
            )));
        };
        write_token(&opts.token_file, &token).map_err(|e| Error::Credentials(e.to_string()))?;
    }
    config.auth_info.token = None;
    config.auth_info.token_file = Some(opts.token_file.display().to_string());
    match &opts.api_metrics {
        Some(metrics) => kdfed_common::counted(config, metrics, "hub").map_err(Error::Credentials),
        None => Client::try_from(config).map_err(|e| Error::Credentials(e.to_string())),
    }
}

/// Replaces the token file in one rename, so the client never reads half a token.
fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token)?;
    std::fs::rename(tmp, path)
}

/// Renews the hub token every `token_renew`, until the process stops. A refusal (401) is
/// recorded for the other loops; any other failure is retried at the next period.
pub(super) async fn renew(ctx: Arc<SyncContext>) {
    let lifetime = ctx.opts.token_seconds.max(kdfed_common::tokens::MIN_TOKEN_SECONDS);
    loop {
        tokio::time::sleep(ctx.opts.token_renew).await;
        match kdfed_common::tokens::issue(&ctx.hub, &ctx.namespace(), MEMBER_SERVICE_ACCOUNT, lifetime).await {
            Ok(token) => {
                ctx.access.accepted();
                match write_token(&ctx.opts.token_file, &token) {
                    Ok(()) => info!("hub token renewed"),
                    Err(e) => warn!("cannot store the renewed hub token: {e}"),
                }
            }
            Err(kdfed_common::tokens::TokenError::Kube { source, .. }) if crate::hubaccess::is_refusal(&source) => {
                ctx.access.refused(&ctx.opts.member, "token renewal");
            }
            Err(e) => warn!("cannot renew the hub token: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_token_replaces_the_old_one_whole() {
        let dir = std::env::temp_dir().join(format!("kdfed-token-test-{}", std::process::id()));
        let path = dir.join("hub").join("token");
        write_token(&path, "first").expect("write");
        write_token(&path, "second").expect("rewrite");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "second");
        assert!(!path.with_extension("tmp").exists(), "no temporary file left behind");
        std::fs::remove_dir_all(dir).expect("clean up");
    }
}
