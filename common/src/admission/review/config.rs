//! `KubeDirectorConfig`: its spec's rules (`kdfed_crds::validate::config`); nothing is read.

use kdfed_crds::KubeDirectorConfig;

use super::{Refusal, Request, Reviewer, Validate};

impl Validate<KubeDirectorConfig> for Reviewer {
    async fn validate(&self, request: &Request<'_, KubeDirectorConfig>) -> Result<(), Refusal> {
        decide(request.object()?.as_ref())
    }
}

/// The decision on the config as it would be stored (none for deletes, which pass).
pub(crate) fn decide(config: Option<&KubeDirectorConfig>) -> Result<(), Refusal> {
    let Some(config) = config else { return Ok(()) };
    kdfed_crds::validate::config(&config.spec)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::testing::request;
    use serde_json::{Value, json};

    fn config(spec: Value) -> Value {
        json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorConfig",
            "metadata": {"name": "kd-global-config", "namespace": "kdfed-system"}, "spec": spec})
    }

    /// The decision on an update to `object`, read from the request as the webhook reads it.
    fn decided(object: Value) -> Result<(), String> {
        let req = request("UPDATE", Some(config(json!({}))), Some(object));
        let read = Request::<KubeDirectorConfig>::new(&req).object();
        read.and_then(|c| decide(c.as_ref())).map_err(|e| e.to_string())
    }

    #[test]
    fn a_config_s_spec_is_checked_naming_field_and_rule() {
        assert_eq!(decided(config(json!({"defaultServiceType": "NodePort"}))), Ok(()));
        assert_eq!(
            decided(config(json!({"defaultServiceType": "Magic"}))),
            Err("spec.defaultServiceType: defaultServiceType(Magic) must be one of \"ClusterIP,NodePort,LoadBalancer\". (rule: enum)".into())
        );
        let e = decided(config(json!({"masterEncryptionKey": "xyz"}))).expect_err("key");
        assert!(e.starts_with("spec.masterEncryptionKey: masterEncryptionKey is invalid."), "{e}");
        let e = decided(config(json!({"defaultServiceType": 7}))).expect_err("type");
        assert!(e.starts_with("spec.defaultServiceType: malformed object: invalid type: integer `7`"), "{e}");
        assert!(decide(None).is_ok());
    }
}
