//! The deploy manifests (kustomize) are accepted by a real API server (server-side apply),
//! and the shipped webhook configurations are the ones the hub and the spoke register
//! themselves.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use kdfed_testbed::Testbed;
use kube::Api;
use serde_json::Value;

#[tokio::test]
async fn hub_and_spoke_manifests_apply_to_a_real_api_server() {
    let bed = Testbed::start(&["hub", "east", "west"]).await.expect("test bed");
    for (cluster, base) in [("hub", "deploy/hub"), ("east", "deploy/spoke"), ("west", "deploy/standalone")] {
        let text = apply(&bed, cluster, base);
        for expected in [
            "customresourcedefinition.apiextensions.k8s.io/kubedirectorclusters.kubedirector.hpe.com",
            "clusterrole.rbac.authorization.k8s.io/kdfed-",
            "deployment.apps/kdfed-",
        ] {
            assert!(text.contains(expected), "{base}: {expected} not applied:\n{text}");
        }
    }
    let hub = bed.client("hub").await.expect("hub");
    let east = bed.client("east").await.expect("east");
    let west = bed.client("west").await.expect("west");

    // The standalone spoke runs the director alone with its webhook: no hub credentials.
    let deployment: Deployment = Api::namespaced(west.clone(), "kdfed-system").get("kdfed-spoke").await.expect("spoke");
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod spec");
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("--standalone"), "{args:?}");
    assert!(args.iter().any(|a| a == "--webhook-cert-file=/etc/kdfed/tls/tls.crt"), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--member") || a.starts_with("--hub-")), "{args:?}");
    let volumes: Vec<String> = pod.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
    assert!(volumes.contains(&"tls".to_string()) && !volumes.contains(&"hub".to_string()), "{volumes:?}");

    console_has_no_rbac_of_its_own(&bed, &hub).await;

    // What each binary registers with --webhook-url (on a cluster without the shipped ones)
    // is what deploy/ ships, apart from how the API server reaches it.
    shipped_matches_registration(&hub, &east, "kdfed-hub").await;
    shipped_matches_registration(&west, &hub, "kdfed-spoke").await;
}

/// deploy/console on the hub (after deploy/hub): a ServiceAccount that no binding names, the
/// Deployment serving HTTPS with the session key from Secrets, probes on the admin port 9093.
async fn console_has_no_rbac_of_its_own(bed: &Testbed, hub: &kube::Client) {
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
    let text = apply(bed, "hub", "deploy/console");
    for expected in ["serviceaccount/kdfed-console", "deployment.apps/kdfed-console", "service/kdfed-console"] {
        assert!(text.contains(expected), "deploy/console: {expected} not applied:\n{text}");
    }
    let kinds: Vec<String> = kdfed_testbed::rbac::render(&kdfed_testbed::rbac::deploy_base("console"))
        .expect("kustomize deploy/console")
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(kinds.len(), 3, "only the ServiceAccount, Service and Deployment: {kinds:?}");
    let names_console = |subjects: Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.unwrap_or_default().iter().any(|s| s.kind == "ServiceAccount" && s.name == "kdfed-console")
    };
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(hub.clone());
    for b in cluster_bindings.list(&Default::default()).await.expect("list").items {
        assert!(!names_console(b.subjects), "{:?} binds the console", b.metadata.name);
    }
    let bindings: Api<RoleBinding> = Api::all(hub.clone());
    for b in bindings.list(&Default::default()).await.expect("list").items {
        assert!(!names_console(b.subjects), "{:?} binds the console", b.metadata.name);
    }
    let deployment: Deployment =
        Api::namespaced(hub.clone(), "kdfed-system").get("kdfed-console").await.expect("console");
    let pod = deployment.spec.and_then(|s| s.template.spec).expect("pod spec");
    assert_eq!(pod.automount_service_account_token, Some(false));
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default();
    for arg in ["--tls-cert=/etc/kdfed/tls/tls.crt", "--session-key-file=/etc/kdfed/session/session.key"] {
        assert!(args.contains(&arg.to_string()), "{arg} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--kubeconfig")), "never local mode in a pod: {args:?}");
    let ports = serde_json::to_value(&container.ports).expect("json");
    assert!(ports.to_string().contains(r#""containerPort":9093,"name":"metrics""#), "{ports}");
    let security = container.security_context.clone().expect("securityContext");
    assert_eq!((security.run_as_non_root, security.read_only_root_filesystem), (Some(true), Some(true)));
}

/// Applies the kustomize base `base` to `cluster` (server-side); returns kubectl's output.
fn apply(bed: &Testbed, cluster: &str, base: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let kubectl = kdfed_testbed::rbac::kubectl().expect("kubectl");
    let out = Command::new(&kubectl)
        .arg(format!("--kubeconfig={}", bed.cluster(cluster).kubeconfig.display()))
        .args(["apply", "--server-side", "--field-manager=kdfed-test", "-k"])
        .arg(root.join(base))
        .output()
        .expect("kubectl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{base}: {text}");
    text
}

/// Checks the webhook configurations `component` ships (applied on `shipped_on`) against
/// what it registers itself (on `registered_on`, which has none shipped): the same but for
/// the client config; self-registration by URL beside the shipped ones is refused; and
/// registration through the Service only fills in their caBundle.
async fn shipped_matches_registration(shipped_on: &kube::Client, registered_on: &kube::Client, component: &str) {
    let url = kdfed_common::admission::Endpoint::Url("https://127.0.0.1:9443".into());
    // Each component registers with its default settings: the spoke's skip its fence watchdog.
    let unreviewed = match component {
        "kdfed-spoke" => kdfed_spoke::settings::Settings::default().webhook.unreviewed_user,
        _ => kdfed_hub::settings::Settings::default().webhook.unreviewed_user,
    };
    let unreviewed = unreviewed.as_deref();
    kdfed_common::admission::register(registered_on, component, &url, "ca", component, unreviewed)
        .await
        .expect("self-registration");
    let name = kdfed_common::admission::configuration_name(component);
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
    assert_eq!(comparable(get_validating(shipped_on).await), comparable(get_validating(registered_on).await));
    assert_eq!(comparable(get_mutating(shipped_on).await), comparable(get_mutating(registered_on).await));
    let shipped = get_validating(shipped_on).await;
    assert_eq!(shipped[0]["clientConfig"]["service"]["name"], component, "{shipped:#}");
    assert_eq!(shipped[0]["clientConfig"]["service"]["namespace"], "kdfed-system", "{shipped:#}");
    // The spoke's webhooks skip its fence watchdog (and only the spoke's).
    let conditions = &shipped[0]["matchConditions"];
    match component {
        "kdfed-spoke" => assert!(
            conditions.to_string().contains("system:serviceaccount:kdfed-system:kdfed-fence-watchdog"),
            "{shipped:#}"
        ),
        _ => assert!(conditions.is_null(), "{shipped:#}"),
    }

    // Self-registration next to the shipped configurations is refused rather than silently
    // mixed (docs/install.md: use one or the other), and leaves them as they were.
    let mixed = kdfed_common::admission::register(shipped_on, component, &url, "ca", component, unreviewed).await;
    assert!(matches!(&mixed, Err(kube::Error::Api(e)) if e.code == 422), "{mixed:?}");
    assert_eq!(get_validating(shipped_on).await, shipped);

    // Registration through the Service (`--webhook-service kdfed-system/<component>`) fills
    // in the shipped configurations' caBundle and changes nothing else: the way to run the
    // shipped manifests without cert-manager.
    let service = kdfed_common::admission::Endpoint::service(&format!("kdfed-system/{component}")).expect("service");
    kdfed_common::admission::register(shipped_on, component, &service, "a CA", component, unreviewed)
        .await
        .expect("registration through the Service");
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode("a CA");
    for webhooks in [get_validating(shipped_on).await, get_mutating(shipped_on).await] {
        for h in webhooks.as_array().expect("webhooks") {
            assert_eq!(h["clientConfig"]["caBundle"], ca.as_str(), "{h:#}");
            assert_eq!(h["clientConfig"]["service"]["name"], component, "{h:#}");
            assert!(h["clientConfig"]["url"].is_null(), "{h:#}");
        }
    }
    let without_ca = |mut hooks: Value| {
        for h in hooks.as_array_mut().expect("webhooks") {
            h["clientConfig"].as_object_mut().expect("clientConfig").remove("caBundle");
        }
        hooks
    };
    assert_eq!(without_ca(get_validating(shipped_on).await), without_ca(shipped));
}

/// The ClusterRole kdfed-member that deploy/hub ships is the one `kdfed member add` creates
/// when it is missing.
#[test]
fn the_shipped_member_role_is_the_registry_s() {
    let base = kdfed_testbed::rbac::deploy_base("hub");
    let objects = kdfed_testbed::rbac::render(&base).expect("kustomize deploy/hub");
    let shipped = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == kdfed_hub::registry::MEMBER_CLUSTER_ROLE)
        .expect("deploy/hub ships the ClusterRole kdfed-member");
    assert_eq!(shipped["rules"], kdfed_hub::registry::member_role_rules());
}
