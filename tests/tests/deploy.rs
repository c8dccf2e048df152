//! The deploy manifests (kustomize) are accepted by a real API server (server-side apply),
//! and the shipped webhook configurations are the ones the hub registers itself.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use kdfed_testbed::Testbed;
use kube::Api;
use serde_json::Value;

#[tokio::test]
async fn hub_and_spoke_manifests_apply_to_a_real_api_server() {
    let bed = Testbed::start(&["hub", "east"]).await.expect("test bed");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let kubectl = kdfed_testbed::rbac::kubectl().expect("kubectl");
    for (cluster, base) in [("hub", "deploy/hub"), ("east", "deploy/spoke")] {
        let out = Command::new(&kubectl)
            .arg(format!("--kubeconfig={}", bed.cluster(cluster).kubeconfig.display()))
            .args(["apply", "--server-side", "--field-manager=kdfed-test", "-k"])
            .arg(root.join(base))
            .output()
            .expect("kubectl");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{base}: {text}");
        for expected in [
            "customresourcedefinition.apiextensions.k8s.io/kubedirectorclusters.kubedirector.hpe.com",
            "clusterrole.rbac.authorization.k8s.io/kdfed-",
            "deployment.apps/kdfed-",
        ] {
            assert!(text.contains(expected), "{base}: {expected} not applied:\n{text}");
        }
    }

    // What the hub registers with --webhook-url (here on east, which has no shipped ones) is
    // what deploy/hub ships, apart from how the API server reaches it.
    let hub = bed.client("hub").await.expect("hub");
    let east = bed.client("east").await.expect("east");
    let url = kdfed_common::admission::Endpoint::Url("https://127.0.0.1:9443".into());
    kdfed_common::admission::register(&east, "kdfed-hub", &url, "ca", "kdfed-hub").await.expect("self-registration");
    let name = kdfed_common::admission::configuration_name("kdfed-hub");
    let comparable = |webhooks: Value| -> Vec<Value> {
        let mut hooks: Vec<Value> = webhooks.as_array().expect("webhooks").clone();
        for h in &mut hooks {
            let path = h["clientConfig"]["service"]["path"].take();
            let path = if path.is_null() {
                let url = h["clientConfig"]["url"].as_str().expect("url").to_string();
                Value::String(url.trim_start_matches("https://127.0.0.1:9443").to_string())
            } else {
                path
            };
            h["clientConfig"] = serde_json::json!({"path": path});
        }
        hooks
    };
    let get_validating = |c: &kube::Client| {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(c.clone());
        let name = name.clone();
        async move { serde_json::to_value(api.get(&name).await.expect("validating").webhooks).expect("json") }
    };
    let get_mutating = |c: &kube::Client| {
        let api: Api<MutatingWebhookConfiguration> = Api::all(c.clone());
        let name = name.clone();
        async move { serde_json::to_value(api.get(&name).await.expect("mutating").webhooks).expect("json") }
    };
    assert_eq!(comparable(get_validating(&hub).await), comparable(get_validating(&east).await));
    assert_eq!(comparable(get_mutating(&hub).await), comparable(get_mutating(&east).await));
    let shipped = get_validating(&hub).await;
    assert_eq!(shipped[0]["clientConfig"]["service"]["name"], "kdfed-hub", "{shipped:#}");
    assert_eq!(shipped[0]["clientConfig"]["service"]["namespace"], "kdfed-system", "{shipped:#}");

    // Self-registration next to the shipped configurations is refused rather than silently
    // mixed (docs/install.md: use one or the other), and leaves them as they were.
    let mixed = kdfed_common::admission::register(&hub, "kdfed-hub", &url, "ca", "kdfed-hub").await;
    assert!(matches!(&mixed, Err(kube::Error::Api(e)) if e.code == 422), "{mixed:?}");
    assert_eq!(get_validating(&hub).await, shipped);

    // Registration through the Service (`--webhook-service kdfed-system/kdfed-hub`) fills in
    // the shipped configurations' caBundle and changes nothing else: the way to run the
    // shipped manifests without cert-manager.
    let service = kdfed_common::admission::Endpoint::service("kdfed-system/kdfed-hub").expect("service");
    kdfed_common::admission::register(&hub, "kdfed-hub", &service, "a CA", "kdfed-hub")
        .await
        .expect("registration through the Service");
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode("a CA");
    for webhooks in [get_validating(&hub).await, get_mutating(&hub).await] {
        for h in webhooks.as_array().expect("webhooks") {
            assert_eq!(h["clientConfig"]["caBundle"], ca.as_str(), "{h:#}");
            assert_eq!(h["clientConfig"]["service"]["name"], "kdfed-hub", "{h:#}");
            assert!(h["clientConfig"]["url"].is_null(), "{h:#}");
        }
    }
    let without_ca = |mut hooks: Value| {
        for h in hooks.as_array_mut().expect("webhooks") {
            h["clientConfig"].as_object_mut().expect("clientConfig").remove("caBundle");
        }
        hooks
    };
    assert_eq!(without_ca(get_validating(&hub).await), without_ca(shipped));
}
