//! What the review's unit tests share: admission requests built from objects (no client,
//! no server: decisions are tested on inputs built in the test).

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use serde_json::{Value, json};

/// An admission request of `operation` (`CREATE`, `UPDATE`, `DELETE`) by a user of the
/// cluster on the objects (full manifests with `apiVersion` and `kind`).
pub fn request(operation: &str, old: Option<Value>, new: Option<Value>) -> AdmissionRequest<DynamicObject> {
    let object = new.as_ref().or(old.as_ref()).cloned().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "0", "operation": operation, "userInfo": {"username": "jane"},
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
        "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
        "object": new, "oldObject": old}});
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review).expect("admission review");
    review.try_into().expect("request")
}

/// The refusal of a read (`action`) the API server forbade, as the dereference steps keep it.
pub fn failed_read(action: &str) -> super::Refusal {
    let status = kube::core::Status::failure("forbidden by the test", "Forbidden").with_code(403).boxed();
    super::Refusal::lookup(action)(kube::Error::Api(status))
}
