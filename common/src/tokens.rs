//! ServiceAccount tokens for member identities (TokenRequest API).

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};

/// Shortest token lifetime the API server accepts.
pub const MIN_TOKEN_SECONDS: i64 = 600;

/// Why no token could be issued.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The API server refused.
    #[error("request a token for {account}: {source}")]
    Kube {
        /// `namespace/name` of the ServiceAccount.
        account: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The API server answered without a token.
    #[error("the API server issued no token for {0}")]
    Empty(String),
}

/// A new token for `namespace/account`, valid for `seconds` (at least 10 minutes).
pub async fn issue(client: &Client, namespace: &str, account: &str, seconds: i64) -> Result<String, TokenError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let who = format!("{namespace}/{account}");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(seconds.max(MIN_TOKEN_SECONDS)), ..Default::default() }),
        ..Default::default()
    };
    let issued: TokenRequest = accounts
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .map_err(|source| TokenError::Kube { account: who.clone(), source })?;
    issued.status.and_then(|s| s.token).filter(|t| !t.is_empty()).ok_or(TokenError::Empty(who))
}
