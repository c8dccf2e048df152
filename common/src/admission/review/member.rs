//! Members: the hub's rules for a member's name, placement labels, join key and taints
//! (`kdfed_crds::validate::member`, which `kdfed member add` applies too); nothing is read.

use kdfed_crds::KubeDirectorMember;
use kube::ResourceExt;

use super::{Refusal, Request, Reviewer, Validate};

impl Validate<KubeDirectorMember> for Reviewer {
    async fn validate(&self, request: &Request<'_, KubeDirectorMember>) -> Result<(), Refusal> {
        decide(request.object()?.as_ref())
    }
}

/// The decision on the member as it would be stored (none for deletes, which pass).
pub(crate) fn decide(member: Option<&KubeDirectorMember>) -> Result<(), Refusal> {
    let Some(member) = member else { return Ok(()) };
    kdfed_crds::validate::member(&member.name_any(), member.labels(), &member.spec)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::testing::request;
    use serde_json::{Value, json};

    fn member(name: &str, labels: Value, spec: Value) -> Value {
        json!({"apiVersion": "federation.kubedirector.hpe.com/v1alpha1", "kind": "KubeDirectorMember",
            "metadata": {"name": name, "labels": labels}, "spec": spec})
    }

    fn decided(object: Value) -> Result<(), String> {
        let member: KubeDirectorMember = serde_json::from_value(object).expect("member");
        decide(Some(&member)).map_err(|e| e.to_string())
    }

    #[test]
    fn members_are_checked_by_the_registry_s_rules() {
        assert_eq!(decided(member("east", json!({"region": "us-east"}), json!({}))), Ok(()));
        assert_eq!(
            decided(member("edge", json!({}), json!({"taints": [{"key": "k", "effect": "Sometimes"}]}))),
            Err("spec.taints[0].effect: effect(Sometimes) must be NoSchedule, PreferNoSchedule or NoExecute (rule: taint-effect)".into())
        );
        assert_eq!(
            decided(member(&"a".repeat(41), json!({}), json!({}))),
            Err(format!(
                "metadata.name: member name {:?} must be a DNS label of at most 40 characters (rule: member-name)",
                "a".repeat(41)
            ))
        );
        let join = json!({"join": {"publicKey": "short", "server": "https://hub"}});
        assert_eq!(
            decided(member("east", json!({}), join)),
            Err("spec.join.publicKey: public key is not base64 of 32 bytes (rule: join-key)".into())
        );
        let e = decided(member("east", json!({"bad key!": "x"}), json!({}))).expect_err("label");
        assert!(e.starts_with("metadata.labels[bad key!]: Invalid value: \"bad key!\""), "{e}");
        assert!(e.ends_with("(rule: label-key)"), "{e}");
    }

    #[test]
    fn a_member_going_away_is_not_checked() {
        let req = request("DELETE", Some(member("Bad Name", json!({}), json!({}))), None);
        let gone = Request::<KubeDirectorMember>::new(&req).object().expect("read");
        assert!(gone.is_none());
        assert!(decide(gone.as_ref()).is_ok());
    }
}
