//! The review: each admission request read as its kind and decided by that kind's
//! [`Validate`] (validating webhook) or [`Mutate`] (mutating webhook) implementation, behind
//! a `tower::Service` over typed `AdmissionReview`s ([`Review`], from [`validation`] and
//! [`mutation`]).
//!
//! Each kind's review has two steps: a dereference that reads what the decision needs
//! through the client into a plain input, and a pure `decide` on that input (unit-tested
//! without a server; the reads are tested against the test bed, `tests/tests/admission.rs`).
//!
//! Refusals are typed ([`Refusal`]): field errors render to `path: message (rule: rule)`,
//! the text users see in `kubectl`'s "denied the request" message.

mod app;
mod cluster;
mod config;
mod member;
#[cfg(test)]
pub(crate) mod testing;

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use kdfed_crds::{FieldError, ValidationErrors};
use kube::Client;
use kube::api::Api;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, ConvertAdmissionReviewError, Operation,
};
use kube::core::{DynamicObject, Resource};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

/// What the webhook checks against: the API server it guards.
#[derive(Clone)]
pub struct Reviewer {
    /// Client of that API server.
    pub client: Client,
    /// Namespace of the system catalog and `KubeDirectorConfig`.
    pub system_namespace: String,
    /// The user name of the one writer trusted to store secret-key ciphertexts it made:
    /// a federated spoke's own identity (from a `SelfSubjectReview`), since hub sync stores
    /// the member's copies already encrypted with the member's key. None for everyone else,
    /// whose hand-made ciphertexts are refused as upstream refuses them.
    pub own_user: Option<String>,
}

/// The user name `client` acts as, from a `SelfSubjectReview` (None when the API server
/// does not say).
pub async fn own_user(client: &Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &SelfSubjectReview::default())
        .await;
    match review {
        Ok(r) => r.status.and_then(|s| s.user_info).and_then(|u| u.username),
        Err(e) => {
            warn!("cannot learn this component's own user name (SelfSubjectReview): {e}");
            None
        }
    }
}

/// Why a request is refused; its text is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The object breaks rules (each error names field and rule).
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    /// A read the decision needs failed, so the webhook cannot decide (and refuses).
    #[error("{action}: {source}")]
    Lookup {
        /// What was being read.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The request's object could not be handled as JSON at all.
    #[error("malformed object: {0}")]
    Malformed(String),
    /// The webhook itself failed (key generation, patch encoding).
    #[error("{0}")]
    Internal(String),
}

impl From<FieldError> for Refusal {
    fn from(error: FieldError) -> Self {
        Refusal::Invalid(error.into())
    }
}

impl Refusal {
    /// A failed read, with what was being read.
    pub fn lookup(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Refusal {
        move |source| Refusal::Lookup { action: action.into(), source }
    }
}

/// One admission request for kind `K`; its objects are read as `K` when asked for, so a
/// kind that looks only at the new object is not refused for a malformed old one.
pub struct Request<'a, K> {
    raw: &'a AdmissionRequest<DynamicObject>,
    kind: PhantomData<fn() -> K>,
}

impl<'a, K: DeserializeOwned> Request<'a, K> {
    /// The request `raw`, to be read as `K`.
    pub fn new(raw: &'a AdmissionRequest<DynamicObject>) -> Self {
        Request { raw, kind: PhantomData }
    }

    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub fn operation(&self) -> &Operation {
        &self.raw.operation
    }

    /// Name of the object.
    pub fn name(&self) -> &str {
        &self.raw.name
    }

    /// Namespace of the object (empty for cluster-scoped kinds).
    pub fn namespace(&self) -> &str {
        self.raw.namespace.as_deref().unwrap_or_default()
    }

    /// The user who sent the request.
    pub fn user(&self) -> Option<&str> {
        self.raw.user_info.username.as_deref()
    }

    /// The object as it would be stored (none for deletes).
    pub fn object(&self) -> Result<Option<K>, Refusal> {
        typed(self.raw.object.as_ref())
    }

    /// The object as it is stored (updates and deletes).
    pub fn old_object(&self) -> Result<Option<K>, Refusal> {
        typed(self.raw.old_object.as_ref())
    }
}

/// `object` as `K`; a type error names the field it is at (the mutating webhook runs before
/// the API server's schema validation, so it meets them first).
fn typed<K: DeserializeOwned>(object: Option<&DynamicObject>) -> Result<Option<K>, Refusal> {
    let Some(o) = object else { return Ok(None) };
    let value = serde_json::to_value(o).map_err(|e| Refusal::Malformed(e.to_string()))?;
    serde_path_to_error::deserialize(value).map(Some).map_err(|e| {
        let path = e.path().to_string();
        let error = e.into_inner();
        FieldError::new(path, "type", format!("malformed object: {error}")).into()
    })
}

/// The validating webhook's decision for one kind.
pub trait Validate<K> {
    /// `Ok` admits the request; a refusal denies it with its text.
    fn validate(&self, request: &Request<'_, K>) -> impl Future<Output = Result<(), Refusal>> + Send;
}

/// The mutating webhook's changes for one kind, as JSON patch operations.
pub trait Mutate<K> {
    /// The operations to apply (none to admit as is); a refusal denies the request.
    fn mutate(
        &self,
        request: &Request<'_, K>,
    ) -> impl Future<Output = Result<Vec<json_patch::PatchOperation>, Refusal>> + Send;
}

/// Whether `request` is about kind `K` (group and kind; any version).
fn is_kind<K: Resource<DynamicType = ()>>(request: &AdmissionRequest<DynamicObject>) -> bool {
    request.kind.group == K::group(&()) && request.kind.kind == K::kind(&())
}

/// The validating webhook's answer to `request`.
pub async fn validate(reviewer: &Reviewer, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    use kdfed_crds::{KubeDirectorApp, KubeDirectorCluster, KubeDirectorConfig, KubeDirectorMember};
    let verdict = if is_kind::<KubeDirectorApp>(request) {
        reviewer.validate(&Request::<KubeDirectorApp>::new(request)).await
    } else if is_kind::<KubeDirectorCluster>(request) {
        reviewer.validate(&Request::<KubeDirectorCluster>::new(request)).await
    } else if is_kind::<KubeDirectorMember>(request) {
        reviewer.validate(&Request::<KubeDirectorMember>::new(request)).await
    } else if is_kind::<KubeDirectorConfig>(request) {
        reviewer.validate(&Request::<KubeDirectorConfig>::new(request)).await
    } else {
        Ok(())
    };
    match verdict {
        Ok(()) => AdmissionResponse::from(request),
        Err(refusal) => deny(request, &refusal),
    }
}

/// The mutating webhook's answer to `request`: deletes are never changed.
pub async fn mutate(reviewer: &Reviewer, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    use kdfed_crds::{KubeDirectorCluster, KubeDirectorConfig};
    if request.operation == Operation::Delete {
        return AdmissionResponse::from(request);
    }
    let operations = if is_kind::<KubeDirectorCluster>(request) {
        reviewer.mutate(&Request::<KubeDirectorCluster>::new(request)).await
    } else if is_kind::<KubeDirectorConfig>(request) {
        reviewer.mutate(&Request::<KubeDirectorConfig>::new(request)).await
    } else {
        Ok(Vec::new())
    };
    match operations {
        Ok(operations) if operations.is_empty() => AdmissionResponse::from(request),
        Ok(operations) => AdmissionResponse::from(request)
            .with_patch(json_patch::Patch(operations))
            .unwrap_or_else(|e| AdmissionResponse::from(request).deny(e.to_string())),
        Err(refusal) => deny(request, &refusal),
    }
}

fn deny(request: &AdmissionRequest<DynamicObject>, refusal: &Refusal) -> AdmissionResponse {
    info!(kind = %request.kind.kind, name = %request.name, "rejected: {refusal}");
    AdmissionResponse::from(request).deny(refusal)
}

/// Which webhook a service answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    /// The validating webhook ([`validate`]).
    Validate,
    /// The mutating webhook ([`mutate`]).
    Mutate,
}

impl Webhook {
    /// The `webhook` label of its metrics.
    pub fn label(self) -> &'static str {
        match self {
            Webhook::Validate => "validate",
            Webhook::Mutate => "mutate",
        }
    }
}

/// The review as a `tower::Service`: an `AdmissionReview` in, the review with the answer
/// out; a review without a request is an error (the server answers it with 400).
#[derive(Clone)]
pub struct Review {
    reviewer: Arc<Reviewer>,
    webhook: Webhook,
}

/// The validating webhook's service.
pub fn validation(reviewer: Arc<Reviewer>) -> Review {
    Review { reviewer, webhook: Webhook::Validate }
}

/// The mutating webhook's service.
pub fn mutation(reviewer: Arc<Reviewer>) -> Review {
    Review { reviewer, webhook: Webhook::Mutate }
}

impl Review {
    /// Which webhook this service answers for.
    pub fn webhook(&self) -> Webhook {
        self.webhook
    }
}

impl tower::Service<AdmissionReview<DynamicObject>> for Review {
    type Response = AdmissionReview<DynamicObject>;
    type Error = ConvertAdmissionReviewError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, review: AdmissionReview<DynamicObject>) -> Self::Future {
        let reviewer = self.reviewer.clone();
        let webhook = self.webhook;
        Box::pin(async move {
            let request: AdmissionRequest<DynamicObject> = review.try_into()?;
            let response = match webhook {
                Webhook::Validate => validate(&reviewer, &request).await,
                Webhook::Mutate => mutate(&reviewer, &request).await,
            };
            Ok(response.into_review())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdfed_crds::KubeDirectorCluster;
    use serde_json::json;
    use testing::request;
    use tower::ServiceExt;

    /// A reviewer whose client points at a closed port, for the paths that decide without
    /// reading: any read there would fail the test.
    fn unconnected() -> Reviewer {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("url"));
        Reviewer {
            client: Client::try_from(config).expect("client"),
            system_namespace: "kdfed-system".into(),
            own_user: None,
        }
    }

    #[test]
    fn type_errors_name_the_field() {
        let cluster = |roles: serde_json::Value| -> Option<DynamicObject> {
            Some(
                serde_json::from_value(json!({
                    "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
                    "metadata": {"name": "db", "namespace": "default"},
                    "spec": {"app": "cassandra", "roles": roles},
                }))
                .expect("dynamic object"),
            )
        };
        let typed = |o: Option<DynamicObject>| typed::<KubeDirectorCluster>(o.as_ref()).map_err(|e| e.to_string());
        let e = typed(cluster(json!([{"id": "seed", "members": "seven"}]))).expect_err("type");
        assert!(e.starts_with("spec.roles[0].members: malformed object: invalid type: string \"seven\""), "{e}");
        assert!(e.ends_with("(rule: type)"), "{e}");
        let e = typed(cluster(json!([{"id": 7}]))).expect_err("type");
        assert!(e.starts_with("spec.roles[0].id: malformed object: invalid type: integer `7`"), "{e}");
        let e = typed(cluster(json!("seed"))).expect_err("type");
        assert!(e.starts_with("spec.roles: malformed object: invalid type: string"), "{e}");
        let ok = typed(cluster(json!([{"id": "seed", "members": 2}]))).expect("well typed");
        assert_eq!(ok.map(|c| c.spec.roles[0].members), Some(Some(2)));
        assert!(matches!(typed(None), Ok(None)));
    }

    fn review_of(request: AdmissionRequest<DynamicObject>) -> AdmissionReview<DynamicObject> {
        let value = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": serde_json::to_value(&request).expect("json")});
        serde_json::from_value(value).expect("review")
    }

    #[tokio::test]
    async fn the_service_answers_a_review_with_the_kind_s_decision() {
        let reviewer = Arc::new(unconnected());
        let taint = json!({"apiVersion": "federation.kubedirector.hpe.com/v1alpha1", "kind": "KubeDirectorMember",
            "metadata": {"name": "edge"}, "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}});
        let answer = validation(reviewer.clone()).oneshot(review_of(request("CREATE", None, Some(taint)))).await;
        let response = answer.expect("answered").response.expect("response");
        assert!(!response.allowed);
        assert!(response.result.message.starts_with("spec.taints[0].effect: effect(Sometimes)"), "{response:?}");
        assert_eq!(response.uid, "0");
        // Kinds kdfed does not review pass.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}});
        let answer = validation(reviewer.clone()).oneshot(review_of(request("CREATE", None, Some(pod)))).await;
        assert!(answer.expect("answered").response.expect("response").allowed);
        // A review without a request cannot be answered.
        let empty: AdmissionReview<DynamicObject> =
            serde_json::from_value(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}))
                .expect("review");
        assert!(mutation(reviewer).oneshot(empty).await.is_err());
    }

    #[tokio::test]
    async fn deletes_are_never_mutated() {
        let cluster = json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {"app": "a", "roles": [{"id": "w", "secretKeys": [{"name": "pw", "value": "x"}]}]}});
        let response = mutate(&unconnected(), &request("DELETE", Some(cluster), None)).await;
        assert!(response.allowed && response.patch.is_none(), "{response:?}");
    }
}
