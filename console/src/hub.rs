//! The hub's API server as the console reaches it. In-cluster, the console holds no identity
//! of its own for API calls: it knows the hub's URL and CA, and every call is made with a
//! client built for the signed-in user's token, so the hub's RBAC decides. Locally it makes
//! every call with the kubeconfig's identity.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use kube::config::AuthInfo;
use kube::{Client, Config};

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// No token was given.
    #[error("enter a token")]
    Empty,
    /// The hub's API server does not accept the token.
    #[error("the hub's API server does not accept this token")]
    Rejected,
    /// The hub's API server could not be asked.
    #[error("the hub's API server cannot be reached: {0}")]
    Unreachable(String),
}

impl SignInError {
    /// The `reason` label of `kdfed_console_sign_in_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            SignInError::Empty => "empty",
            SignInError::Rejected => "rejected",
            SignInError::Unreachable(_) => "unreachable",
        }
    }
}

/// How the console reaches the hub.
#[derive(Clone)]
pub enum Hub {
    /// In-cluster: the hub's address and CA, no credentials; a client per user token.
    Users(Box<Config>),
    /// Local: every call with the kubeconfig's identity.
    Local {
        /// The kubeconfig's client.
        client: Client,
        /// The kubeconfig's default namespace.
        namespace: String,
    },
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hub::Users(c) => write!(f, "Hub::Users({})", c.cluster_url),
            Hub::Local { namespace, .. } => write!(f, "Hub::Local({namespace})"),
        }
    }
}

impl Hub {
    /// The hub's address and CA from `config`, its credentials dropped.
    pub fn for_users(mut config: Config) -> Hub {
        config.auth_info = AuthInfo::default();
        Hub::Users(Box::new(config))
    }

    /// A client of the hub that authenticates with `token` only.
    pub fn client_for(&self, token: &str) -> Result<Client, String> {
        match self {
            Hub::Users(base) => {
                let mut config = (**base).clone();
                config.auth_info = AuthInfo { token: Some(token.to_string().into()), ..AuthInfo::default() };
                Client::try_from(config).map_err(|e| e.to_string())
            }
            Hub::Local { client, .. } => Ok(client.clone()),
        }
    }
}

/// The username the hub's API server gives `client`'s identity (`SelfSubjectReview`).
pub async fn who_am_i(client: &Client) -> Result<String, SignInError> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = SelfSubjectReview::default();
    match api.create(&PostParams::default(), &review).await {
        Ok(r) => Ok(r.status.and_then(|s| s.user_info).and_then(|u| u.username).unwrap_or_default()),
        Err(kube::Error::Api(e)) if e.code == 401 => Err(SignInError::Rejected),
        // A token the API server accepts but whose user may not review itself (403) is still
        // a real identity; RBAC decides the rest.
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(String::from("(unnamed user)")),
        Err(e) => Err(SignInError::Unreachable(e.to_string())),
    }
}

/// The namespace a user starts in: a ServiceAccount's own, else `default`.
pub fn home_namespace(user: &str) -> String {
    user.strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(|| "default".to_string(), |(ns, _)| ns.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_account_starts_in_its_namespace() {
        assert_eq!(home_namespace("system:serviceaccount:team-a:alice"), "team-a");
        assert_eq!(home_namespace("alice@example.com"), "default");
    }

    #[test]
    fn a_user_s_client_carries_only_their_token() {
        let mut config = Config::new("https://hub.example:6443".parse().expect("uri"));
        config.auth_info.username = Some("admin".into());
        let Hub::Users(base) = Hub::for_users(config) else { panic!("users") };
        assert!(base.auth_info.username.is_none(), "the console's own credentials are dropped");
        let debug = format!("{:?}", Hub::Users(base.clone()));
        assert!(debug.contains("hub.example"));
    }
}
