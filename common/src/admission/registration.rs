//! Registration: the validating and mutating webhook configurations for kdfed's kinds, as
//! typed objects built by pure functions, and their server-side apply. With a Service
//! endpoint this fills in the `caBundle` of the configurations `deploy/hub` ships.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kdfed_crds::KUBEDIRECTOR_GROUP;
use kdfed_crds::federation::FEDERATION_GROUP;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use super::server::{MUTATE_PATH, PATH};

/// Seconds the API server waits for an answer before applying `failurePolicy: Fail`.
const TIMEOUT_SECONDS: i32 = 10;

/// Name of the ValidatingWebhookConfiguration (and MutatingWebhookConfiguration) a
/// component registers.
pub fn configuration_name(component: &str) -> String {
    format!("{component}.kubedirector.hpe.com")
}

/// How the API server reaches a webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A URL (a webhook outside the cluster, or on loopback in the test bed).
    Url(String),
    /// A Service in the cluster (the shipped `deploy/hub` configurations use this).
    Service {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
        /// Port of the Service.
        port: u16,
    },
}

impl Endpoint {
    /// Parses `webhook.service`: `namespace/name` or `namespace/name:port` (port 443 by default).
    pub fn service(text: &str) -> Result<Endpoint, String> {
        let rule = "webhook.service: must be namespace/name or namespace/name:port";
        let (namespace, rest) = text.split_once('/').ok_or_else(|| format!("{rule}, not {text:?}"))?;
        let (name, port) = match rest.split_once(':') {
            Some((name, port)) => (name, port.parse::<u16>().map_err(|_| format!("{rule}, not {text:?}"))?),
            None => (rest, 443),
        };
        let label = kdfed_crds::validate::is_dns_label;
        if !label(namespace) || !label(name) || port == 0 {
            return Err(format!("{rule} (DNS labels, port 1-65535), not {text:?}"));
        }
        Ok(Endpoint::Service { namespace: namespace.into(), name: name.into(), port })
    }

    /// How the API server calls `path` of this endpoint, trusting `ca_pem`.
    fn client_config(&self, path: &str, ca_pem: &str) -> WebhookClientConfig {
        let ca_bundle = Some(ByteString(ca_pem.as_bytes().to_vec()));
        match self {
            Endpoint::Url(url) => WebhookClientConfig {
                url: Some(format!("{}{path}", url.trim_end_matches('/'))),
                ca_bundle,
                ..Default::default()
            },
            Endpoint::Service { namespace, name, port } => WebhookClientConfig {
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    port: Some(i32::from(*port)),
                    path: Some(path.to_string()),
                }),
                ca_bundle,
                ..Default::default()
            },
        }
    }
}

/// The user name of deploy/spoke's fence watchdog (ServiceAccount `kdfed-fence-watchdog` in
/// `kdfed-system`): the spoke's webhooks skip its requests by default
/// (`webhook.unreviewed_user`), so that it can annotate a copy while the spoke (and so the
/// webhook) is dead; the ValidatingAdmissionPolicy `kdfed-fence-watchdog` that deploy/spoke
/// ships limits what it may change instead.
pub const FENCE_WATCHDOG_USER: &str = "system:serviceaccount:kdfed-system:kdfed-fence-watchdog";

/// Name of the match condition that skips `webhook.unreviewed_user`.
pub const UNREVIEWED_CONDITION: &str = "not-the-unreviewed-user";

/// The match conditions of every webhook: none, or one that skips requests of `unreviewed`
/// (a user name without quotes or backslashes, see [`check_unreviewed_user`]).
fn match_conditions(unreviewed: Option<&str>) -> Option<Vec<MatchCondition>> {
    let user = unreviewed.filter(|u| !u.is_empty())?;
    Some(vec![MatchCondition {
        name: UNREVIEWED_CONDITION.into(),
        expression: format!("request.userInfo.username != '{user}'"),
    }])
}

/// Checks `webhook.unreviewed_user`: empty (no user skipped) or a user name that can be
/// quoted in CEL as is.
pub fn check_unreviewed_user(user: &str) -> Result<(), String> {
    if user.chars().any(|c| matches!(c, '\'' | '\\' | '"') || c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "webhook.unreviewed_user: must be a user name without quotes, backslashes or spaces \
             (e.g. {FENCE_WATCHDOG_USER}), not {user:?}"
        ));
    }
    Ok(())
}

/// One webhook's rule: `operations` on `resources` of `group`, every version, any scope.
fn rule(group: &str, resources: &[&str], operations: &[&str]) -> RuleWithOperations {
    let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    RuleWithOperations {
        api_groups: strings(&[group]),
        api_versions: strings(&["*"]),
        operations: strings(operations),
        resources: strings(resources),
        scope: Some("*".into()),
    }
}

/// The validating webhooks: apps on every change (an app in use cannot change or go),
/// clusters, configs and members on create and update; none of them for `unreviewed`.
pub fn validating_configuration(
    component: &str,
    endpoint: &Endpoint,
    ca_pem: &str,
    unreviewed: Option<&str>,
) -> ValidatingWebhookConfiguration {
    let hook = |name: &str, group: &str, resources: &[&str], operations: &[&str]| ValidatingWebhook {
        name: format!("{name}.{component}.kubedirector.hpe.com"),
        client_config: endpoint.client_config(PATH, ca_pem),
        rules: Some(vec![rule(group, resources, operations)]),
        failure_policy: Some("Fail".into()),
        side_effects: "None".into(),
        admission_review_versions: vec!["v1".into()],
        timeout_seconds: Some(TIMEOUT_SECONDS),
        match_conditions: match_conditions(unreviewed),
        ..Default::default()
    };
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(configuration_name(component)), ..Default::default() },
        webhooks: Some(vec![
            hook("apps", KUBEDIRECTOR_GROUP, &["kubedirectorapps"], &["CREATE", "UPDATE", "DELETE"]),
            hook("clusters", KUBEDIRECTOR_GROUP, &["kubedirectorclusters"], &["CREATE", "UPDATE"]),
            hook("configs", KUBEDIRECTOR_GROUP, &["kubedirectorconfigs"], &["CREATE", "UPDATE"]),
            hook("members", FEDERATION_GROUP, &["kubedirectormembers"], &["CREATE", "UPDATE"]),
        ]),
    }
}

/// The mutating webhooks: secret-key encryption for clusters, a generated master key for
/// configs; none of them for `unreviewed`.
pub fn mutating_configuration(
    component: &str,
    endpoint: &Endpoint,
    ca_pem: &str,
    unreviewed: Option<&str>,
) -> MutatingWebhookConfiguration {
    let hook = |name: &str, resources: &[&str]| MutatingWebhook {
        name: format!("{name}.mutate.{component}.kubedirector.hpe.com"),
        client_config: endpoint.client_config(MUTATE_PATH, ca_pem),
        rules: Some(vec![rule(KUBEDIRECTOR_GROUP, resources, &["CREATE", "UPDATE"])]),
        failure_policy: Some("Fail".into()),
        side_effects: "None".into(),
        reinvocation_policy: Some("Never".into()),
        admission_review_versions: vec!["v1".into()],
        timeout_seconds: Some(TIMEOUT_SECONDS),
        match_conditions: match_conditions(unreviewed),
        ..Default::default()
    };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some(configuration_name(component)), ..Default::default() },
        webhooks: Some(vec![hook("clusters", &["kubedirectorclusters"]), hook("configs", &["kubedirectorconfigs"])]),
    }
}

/// Registers (server-side apply) the webhook for kdfed's kinds with `failurePolicy: Fail`,
/// reached at `endpoint`, trusted through `ca_pem`. With a Service endpoint this fills in
/// the `caBundle` of the configurations `deploy/hub` ships (same names and webhooks).
/// Requests of the user `unreviewed` (if any) skip every webhook (`matchConditions`).
pub async fn register(
    client: &Client,
    component: &str,
    endpoint: &Endpoint,
    ca_pem: &str,
    field_manager: &str,
    unreviewed: Option<&str>,
) -> Result<(), kube::Error> {
    let name = configuration_name(component);
    let validating = validating_configuration(component, endpoint, ca_pem, unreviewed);
    apply_unless_covered(
        &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        &name,
        &validating,
        field_manager,
    )
    .await?;
    let mutating = mutating_configuration(component, endpoint, ca_pem, unreviewed);
    apply_unless_covered(&Api::<MutatingWebhookConfiguration>::all(client.clone()), &name, &mutating, field_manager)
        .await
}

/// Applies `desired` unless the stored object already holds all of it (a restart with
/// nothing changed writes nothing).
async fn apply_unless_covered<K>(api: &Api<K>, name: &str, desired: &K, field_manager: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    if let Some(stored) = api.get_opt(name).await?
        && crate::reconcile::covers(
            &serde_json::to_value(&stored).unwrap_or_default(),
            &serde_json::to_value(desired).unwrap_or_default(),
        )
    {
        return Ok(());
    }
    api.patch(name, &PatchParams::apply(field_manager).force(), &Patch::Apply(desired)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn webhook_services_are_namespace_name_and_port() {
        assert_eq!(
            Endpoint::service("kdfed-system/kdfed-hub"),
            Ok(Endpoint::Service { namespace: "kdfed-system".into(), name: "kdfed-hub".into(), port: 443 })
        );
        assert_eq!(
            Endpoint::service("ops/hub:8443"),
            Ok(Endpoint::Service { namespace: "ops".into(), name: "hub".into(), port: 8443 })
        );
        for bad in ["kdfed-hub", "ns/", "/hub", "ns/hub:0", "ns/hub:http", "NS/hub", "ns/hub:70000"] {
            let e = Endpoint::service(bad).expect_err(bad);
            assert!(e.starts_with("webhook.service: must be namespace/name"), "{bad}: {e}");
        }
    }

    /// The configurations as applied before they were typed: the same document, field for
    /// field, so the server-side apply owns exactly the same fields.
    #[test]
    fn a_url_registration_applies_the_webhooks_it_always_did() {
        let url = Endpoint::Url("https://127.0.0.1:9443/".into());
        let ca = "Y2E="; // base64 of "ca"
        let rule = |group: &str, resource: &str, ops: serde_json::Value| json!([{"apiGroups": [group], "apiVersions": ["*"], "operations": ops, "resources": [resource], "scope": "*"}]);
        let hook = |name: &str, path: &str, rules: serde_json::Value| {
            json!({"name": name, "clientConfig": {"url": format!("https://127.0.0.1:9443{path}"), "caBundle": ca},
                   "rules": rules, "failurePolicy": "Fail", "sideEffects": "None",
                   "admissionReviewVersions": ["v1"], "timeoutSeconds": 10})
        };
        let validating = serde_json::to_value(validating_configuration("kdfed-hub", &url, "ca", None)).expect("json");
        let create_update = json!(["CREATE", "UPDATE"]);
        assert_eq!(
            validating,
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "kdfed-hub.kubedirector.hpe.com"},
            "webhooks": [
                hook("apps.kdfed-hub.kubedirector.hpe.com", "/validate",
                    rule("kubedirector.hpe.com", "kubedirectorapps", json!(["CREATE", "UPDATE", "DELETE"]))),
                hook("clusters.kdfed-hub.kubedirector.hpe.com", "/validate",
                    rule("kubedirector.hpe.com", "kubedirectorclusters", create_update.clone())),
                hook("configs.kdfed-hub.kubedirector.hpe.com", "/validate",
                    rule("kubedirector.hpe.com", "kubedirectorconfigs", create_update.clone())),
                hook("members.kdfed-hub.kubedirector.hpe.com", "/validate",
                    rule("federation.kubedirector.hpe.com", "kubedirectormembers", create_update.clone())),
            ]})
        );
        let mutating = serde_json::to_value(mutating_configuration("kdfed-hub", &url, "ca", None)).expect("json");
        let mut clusters = hook(
            "clusters.mutate.kdfed-hub.kubedirector.hpe.com",
            "/mutate",
            rule("kubedirector.hpe.com", "kubedirectorclusters", create_update.clone()),
        );
        clusters["reinvocationPolicy"] = json!("Never");
        let mut configs = hook(
            "configs.mutate.kdfed-hub.kubedirector.hpe.com",
            "/mutate",
            rule("kubedirector.hpe.com", "kubedirectorconfigs", create_update),
        );
        configs["reinvocationPolicy"] = json!("Never");
        assert_eq!(
            mutating,
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "kdfed-hub.kubedirector.hpe.com"}, "webhooks": [clusters, configs]})
        );
    }

    #[test]
    fn a_service_registration_names_the_service_path_and_port() {
        let service = Endpoint::service("kdfed-system/kdfed-spoke:8443").expect("service");
        let config = validating_configuration("kdfed-spoke", &service, "a CA", Some(FENCE_WATCHDOG_USER));
        let hooks = config.webhooks.expect("webhooks");
        assert_eq!(hooks.len(), 4);
        for hook in &hooks {
            assert_eq!(hook.client_config.url, None);
            assert_eq!(hook.client_config.ca_bundle, Some(ByteString(b"a CA".to_vec())));
            assert_eq!(
                hook.client_config.service,
                Some(ServiceReference {
                    namespace: "kdfed-system".into(),
                    name: "kdfed-spoke".into(),
                    port: Some(8443),
                    path: Some("/validate".into()),
                })
            );
        }
        let mutating = mutating_configuration("kdfed-spoke", &service, "a CA", Some(FENCE_WATCHDOG_USER))
            .webhooks
            .expect("webhooks");
        assert!(
            mutating
                .iter()
                .all(|h| h.client_config.service.as_ref().and_then(|s| s.path.as_deref()) == Some("/mutate"))
        );
    }

    #[test]
    fn the_unreviewed_user_skips_every_webhook_and_must_quote_safely() {
        let url = Endpoint::Url("https://127.0.0.1:9443".into());
        let expected = json!([{"name": "not-the-unreviewed-user",
            "expression": "request.userInfo.username != 'system:serviceaccount:kdfed-system:kdfed-fence-watchdog'"}]);
        let validating =
            serde_json::to_value(validating_configuration("kdfed-spoke", &url, "ca", Some(FENCE_WATCHDOG_USER)))
                .expect("json");
        let mutating =
            serde_json::to_value(mutating_configuration("kdfed-spoke", &url, "ca", Some(FENCE_WATCHDOG_USER)))
                .expect("json");
        let hooks: Vec<&serde_json::Value> = validating["webhooks"]
            .as_array()
            .expect("hooks")
            .iter()
            .chain(mutating["webhooks"].as_array().expect("hooks"))
            .collect();
        assert_eq!(hooks.len(), 6);
        for hook in hooks {
            assert_eq!(hook["matchConditions"], expected, "{hook:#}");
        }
        // None, or an empty user: no match conditions at all.
        for none in [None, Some("")] {
            let v = validating_configuration("kdfed-spoke", &url, "ca", none);
            assert!(v.webhooks.expect("hooks").iter().all(|h| h.match_conditions.is_none()));
        }
        assert_eq!(check_unreviewed_user(FENCE_WATCHDOG_USER), Ok(()));
        assert_eq!(check_unreviewed_user(""), Ok(()));
        for bad in ["x' || true || '", "a\\b", "two words", "q\""] {
            let e = check_unreviewed_user(bad).expect_err(bad);
            assert!(e.starts_with("webhook.unreviewed_user: must be a user name"), "{e}");
        }
    }
}
