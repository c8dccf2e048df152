//! The mutating webhook's changes: secret-key values are stored encrypted with the master
//! key of `KubeDirectorConfig` (never in the clear, kubectl's last-applied copy included),
//! hand-made ciphertexts are refused as upstream refuses them, and a config without a master
//! key gets a generated one, as upstream.
//!
//! The only read is the master key, done first and only when a key is to be sealed or
//! verified; [`config_patch`] and [`cluster_patch`] are the pure decisions.

use std::collections::BTreeMap;

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use kdfed_crds::cluster::SecretKey;
use kdfed_crds::config::CONFIG_NAME;
use kdfed_crds::{FieldError, KubeDirectorCluster, KubeDirectorClusterSpec, KubeDirectorConfig};
use serde_json::Value;

use super::review::{Mutate, Refusal, Request, Reviewer};

/// kubectl's record of the last applied manifest, kept in an annotation.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Rule name of every secret-key refusal.
const RULE: &str = "secret-key-encryption";

impl Mutate<KubeDirectorConfig> for Reviewer {
    async fn mutate(&self, request: &Request<'_, KubeDirectorConfig>) -> Result<Vec<PatchOperation>, Refusal> {
        config_patch(request.object()?.as_ref())
    }
}

/// The decision on a config as it would be stored: one without a master key gets a
/// generated one.
pub(crate) fn config_patch(config: Option<&KubeDirectorConfig>) -> Result<Vec<PatchOperation>, Refusal> {
    match config {
        Some(config) if config.spec.master_encryption_key.is_none() => {
            let key = crate::secretkeys::generate_key().map_err(|e| Refusal::Internal(e.to_string()))?;
            let path = PointerBuf::from_tokens(["spec", "masterEncryptionKey"]);
            Ok(vec![PatchOperation::Add(AddOperation { path, value: Value::String(key) })])
        }
        _ => Ok(Vec::new()),
    }
}

impl Mutate<KubeDirectorCluster> for Reviewer {
    async fn mutate(&self, request: &Request<'_, KubeDirectorCluster>) -> Result<Vec<PatchOperation>, Refusal> {
        let Some(new) = request.object()? else { return Ok(Vec::new()) };
        let old = request.old_object()?;
        // Hub sync (this component) stores copies with ciphertexts it made with this
        // member's key; nobody else may set one.
        let own = self.own_user.is_some() && request.user() == self.own_user.as_deref();
        // A config that cannot be read counts as none: values then cannot be sealed.
        let master = if needs_master(&new, old.as_ref(), own) {
            crate::secretkeys::master_key(&self.client, &self.system_namespace).await.ok().flatten()
        } else {
            None
        };
        cluster_patch(&KeysInput { new, old, own, master, system_namespace: self.system_namespace.clone() })
    }
}

/// What the decision on a cluster's secret keys needs.
pub(crate) struct KeysInput {
    /// The cluster as it would be stored.
    pub new: KubeDirectorCluster,
    /// The cluster as it is stored (updates).
    pub old: Option<KubeDirectorCluster>,
    /// Whether this component sent the request (see [`Reviewer::own_user`]).
    pub own: bool,
    /// The master key of `KubeDirectorConfig` (none when there is none, it cannot be read,
    /// or no key needs it).
    pub master: Option<String>,
    /// Namespace of `KubeDirectorConfig`, for refusals.
    pub system_namespace: String,
}

/// Whether the decision needs the master key: a key to seal or verify comes before any
/// forbidden one (which refuses the request before the key is needed).
fn needs_master(new: &KubeDirectorCluster, old: Option<&KubeDirectorCluster>, own: bool) -> bool {
    for (_, role_id, key) in secret_keys(&new.spec) {
        match key_step(key, is_kept(old, role_id, key), own) {
            KeyStep::Seal(_) | KeyStep::Verify(_) => return true,
            KeyStep::Forbid => return false,
            KeyStep::Keep => {}
        }
    }
    false
}

/// The decision on a cluster's secret keys: plain values replaced by their ciphertexts
/// (and scrubbed from kubectl's copy), this component's ciphertexts verified, anyone
/// else's refused.
pub(crate) fn cluster_patch(input: &KeysInput) -> Result<Vec<PatchOperation>, Refusal> {
    let (old, master, namespace) = (input.old.as_ref(), input.master.as_deref(), input.system_namespace.as_str());
    let mut sealed = Vec::new();
    for (at, role_id, key) in secret_keys(&input.new.spec) {
        match key_step(key, is_kept(old, role_id, key), input.own) {
            KeyStep::Seal(plain) => {
                let ciphertext = seal(master, namespace, &at, key, plain, &previous_keys(old, role_id))?;
                let stored = SecretKey { name: key.name.clone(), value: None, encrypted_value: Some(ciphertext) };
                sealed.push(Sealed { at, stored });
            }
            KeyStep::Verify(ciphertext) => verify(master, namespace, &at, key, ciphertext)?,
            KeyStep::Forbid => return Err(forbidden(&at, key).into()),
            KeyStep::Keep => {}
        }
    }
    let mut operations = sealed.iter().map(Sealed::replacement).collect::<Result<Vec<_>, _>>()?;
    operations.extend(scrub_last_applied(&input.new, &sealed)?);
    Ok(operations)
}

/// Where a secret key is in a cluster spec: role and key index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyAt {
    role: usize,
    key: usize,
}

impl KeyAt {
    /// The field path refusals name.
    fn path(self) -> String {
        format!("spec.roles[{}].secretKeys[{}]", self.role, self.key)
    }

    /// The JSON pointer patches use.
    fn pointer(self) -> PointerBuf {
        PointerBuf::from_tokens([
            Token::from("spec"),
            Token::from("roles"),
            Token::from(self.role),
            Token::from("secretKeys"),
            Token::from(self.key),
        ])
    }
}

/// Every secret key of `spec`, with where it is and its role's id.
fn secret_keys(spec: &KubeDirectorClusterSpec) -> impl Iterator<Item = (KeyAt, &str, &SecretKey)> {
    spec.roles.iter().enumerate().flat_map(|(role, r)| {
        r.secret_keys.iter().enumerate().map(move |(key, k)| (KeyAt { role, key }, r.id.as_str(), k))
    })
}

/// What the webhook does with one secret key.
#[derive(Debug, PartialEq, Eq)]
enum KeyStep<'a> {
    /// Encrypt this plain value.
    Seal(&'a str),
    /// A ciphertext this component wrote: it must open with the master key.
    Verify(&'a str),
    /// A new ciphertext from anyone else: refused.
    Forbid,
    /// Nothing to do (no value, or the ciphertext already stored).
    Keep,
}

/// The step for `key`; `kept` when its ciphertext is the one already stored, `own` when
/// this component sent the request.
fn key_step(key: &SecretKey, kept: bool, own: bool) -> KeyStep<'_> {
    match (key.value.as_deref().filter(|v| !v.is_empty()), key.encrypted_value.as_deref()) {
        (Some(plain), _) => KeyStep::Seal(plain),
        (None, Some(_)) if kept => KeyStep::Keep,
        (None, Some(ciphertext)) if own => KeyStep::Verify(ciphertext),
        (None, Some(_)) => KeyStep::Forbid,
        (None, None) => KeyStep::Keep,
    }
}

/// The keys the old spec stored for role `role_id`.
fn previous_keys(old: Option<&KubeDirectorCluster>, role_id: &str) -> Vec<SecretKey> {
    old.iter()
        .flat_map(|o| o.spec.roles.iter().filter(|r| r.id == role_id).flat_map(|r| r.secret_keys.clone()))
        .collect()
}

/// Whether the old spec stored exactly this ciphertext for this key of role `role_id`.
fn is_kept(old: Option<&KubeDirectorCluster>, role_id: &str, key: &SecretKey) -> bool {
    key.encrypted_value.is_some()
        && previous_keys(old, role_id).iter().any(|k| k.name == key.name && k.encrypted_value == key.encrypted_value)
}

fn forbidden(at: &KeyAt, key: &SecretKey) -> FieldError {
    FieldError::new(
        format!("{}.encryptedValue", at.path()),
        RULE,
        format!("manually setting secret key ({}) encrypted value is forbidden", key.name),
    )
}

/// The ciphertext to store for `plain` (the stored one when it still holds `plain`);
/// refused without a `master` key of the config in `namespace`.
fn seal(
    master: Option<&str>,
    namespace: &str,
    at: &KeyAt,
    key: &SecretKey,
    plain: &str,
    previous: &[SecretKey],
) -> Result<String, FieldError> {
    let Some(master) = master else {
        return Err(FieldError::new(
            at.path(),
            RULE,
            format!(
                "cannot encrypt secret key {}: no masterEncryptionKey in KubeDirectorConfig {namespace}/{CONFIG_NAME}",
                key.name
            ),
        ));
    };
    crate::secretkeys::seal_value(master, &key.name, plain, previous)
        .map_err(|e| FieldError::new(at.path(), RULE, format!("cannot encrypt secret key {}: {e}", key.name)))
}

/// Checks that `ciphertext` opens with the `master` key of the config in `namespace`.
fn verify(
    master: Option<&str>,
    namespace: &str,
    at: &KeyAt,
    key: &SecretKey,
    ciphertext: &str,
) -> Result<(), FieldError> {
    if master.is_some_and(|m| crate::secretkeys::decrypt(m, ciphertext).is_ok()) {
        return Ok(());
    }
    Err(FieldError::new(
        format!("{}.encryptedValue", at.path()),
        RULE,
        format!(
            "secret key ({}) does not decrypt with the master key of KubeDirectorConfig {namespace}/{CONFIG_NAME}",
            key.name
        ),
    ))
}

/// A secret key the webhook encrypted: where it is and how it is stored.
#[derive(Debug)]
struct Sealed {
    at: KeyAt,
    stored: SecretKey,
}

impl Sealed {
    /// The patch operation that stores it.
    fn replacement(&self) -> Result<PatchOperation, Refusal> {
        Ok(PatchOperation::Replace(ReplaceOperation { path: self.at.pointer(), value: to_json(&self.stored)? }))
    }
}

fn to_json(key: &SecretKey) -> Result<Value, Refusal> {
    serde_json::to_value(key).map_err(|e| Refusal::Internal(e.to_string()))
}

/// How each key of `cluster` is stored, by role id and key name: the ones just sealed, and
/// the others with the ciphertext they carry.
fn stored_keys(cluster: &KubeDirectorCluster, sealed: &[Sealed]) -> BTreeMap<(String, String), SecretKey> {
    let mut stored = BTreeMap::new();
    for (at, role_id, key) in secret_keys(&cluster.spec) {
        let just_sealed = sealed.iter().find(|s| s.at == at).map(|s| s.stored.clone());
        let kept = key.encrypted_value.as_ref().map(|e| SecretKey {
            name: key.name.clone(),
            value: None,
            encrypted_value: Some(e.clone()),
        });
        if let Some(s) = just_sealed.or(kept) {
            stored.insert((role_id.to_string(), key.name.clone()), s);
        }
    }
    stored
}

/// `kubectl apply` keeps the applied manifest, plain secret-key values included, in the
/// [`LAST_APPLIED`] annotation. The patch that stores each such value as it is stored in
/// the spec (its ciphertext), or without the value where the spec has none; `None` when
/// the annotation holds no plain value.
fn scrub_last_applied(cluster: &KubeDirectorCluster, sealed: &[Sealed]) -> Result<Option<PatchOperation>, Refusal> {
    let Some(text) = cluster.metadata.annotations.as_ref().and_then(|a| a.get(LAST_APPLIED)) else {
        return Ok(None);
    };
    // The annotation is the manifest as the user wrote it, unknown fields and all: it stays
    // JSON, only its secret-key entries are replaced.
    let Ok(mut applied) = serde_json::from_str::<Value>(text) else { return Ok(None) };
    let stored = stored_keys(cluster, sealed);
    let Some(roles) = applied.pointer_mut("/spec/roles").and_then(Value::as_array_mut) else { return Ok(None) };
    let mut changed = false;
    for role in roles {
        let id = role["id"].as_str().unwrap_or_default().to_string();
        let Some(keys) = role.get_mut("secretKeys").and_then(Value::as_array_mut) else { continue };
        for key in keys.iter_mut().filter(|k| k.get("value").is_some()) {
            let name = key["name"].as_str().unwrap_or_default().to_string();
            let without_value = SecretKey { name: name.clone(), ..Default::default() };
            *key = to_json(stored.get(&(id.clone(), name)).unwrap_or(&without_value))?;
            changed = true;
        }
    }
    let path = PointerBuf::from_tokens(["metadata", "annotations", LAST_APPLIED]);
    Ok(changed
        .then(|| PatchOperation::Replace(ReplaceOperation { path, value: Value::String(format!("{applied}\n")) })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectl_s_copy_of_a_secret_value_is_stored_as_the_spec_stores_it() {
        let applied = json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "c"}, "spec": {"app": "a", "roles": [
                {"id": "w", "members": 1, "secretKeys": [{"name": "pw", "value": "hunter2"}, {"name": "old", "value": "x"}]},
                {"id": "m", "members": 1}]}});
        let cluster: KubeDirectorCluster = serde_json::from_value(json!({
            "apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "c", "annotations": {LAST_APPLIED: format!("{applied}\n")}},
            "spec": {"app": "a", "roles": [
                {"id": "w", "members": 1, "secretKeys": [{"name": "pw", "value": "hunter2"}, {"name": "old", "encryptedValue": "abcd"}]},
                {"id": "m", "members": 1}]}}))
        .expect("cluster");
        let sealed = vec![Sealed {
            at: KeyAt { role: 0, key: 0 },
            stored: SecretKey { name: "pw".into(), value: None, encrypted_value: Some("0123".into()) },
        }];
        let op =
            serde_json::to_value(scrub_last_applied(&cluster, &sealed).expect("json").expect("scrubbed")).expect("op");
        let text = op["value"].as_str().expect("string");
        assert!(!text.contains("hunter2") && !text.contains("\"x\""), "{text}");
        let scrubbed: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(scrubbed["spec"]["roles"][0]["secretKeys"][0], json!({"name": "pw", "encryptedValue": "0123"}));
        assert_eq!(scrubbed["spec"]["roles"][0]["secretKeys"][1], json!({"name": "old", "encryptedValue": "abcd"}));
        assert_eq!(op["path"], "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration");
        // Nothing to scrub: no patch.
        let mut clean = cluster.clone();
        clean.metadata.annotations =
            Some([(LAST_APPLIED.to_string(), format!("{}", json!({"spec": {"roles": []}})))].into());
        assert_eq!(scrub_last_applied(&clean, &sealed).expect("json"), None);
    }

    fn key(value: Option<&str>, encrypted: Option<&str>) -> SecretKey {
        SecretKey { name: "pw".into(), value: value.map(Into::into), encrypted_value: encrypted.map(Into::into) }
    }

    #[test]
    fn plain_values_are_sealed_and_only_this_component_brings_ciphertexts() {
        assert_eq!(key_step(&key(Some("hunter2"), None), false, false), KeyStep::Seal("hunter2"));
        assert_eq!(key_step(&key(Some("hunter2"), Some("ab")), true, true), KeyStep::Seal("hunter2"));
        assert_eq!(key_step(&key(Some(""), None), false, false), KeyStep::Keep);
        assert_eq!(key_step(&key(None, Some("ab")), true, false), KeyStep::Keep);
        assert_eq!(key_step(&key(None, Some("ab")), false, true), KeyStep::Verify("ab"));
        assert_eq!(key_step(&key(None, Some("ab")), false, false), KeyStep::Forbid);
        assert_eq!(key_step(&key(None, None), false, false), KeyStep::Keep);
    }

    fn cluster(keys: serde_json::Value) -> KubeDirectorCluster {
        serde_json::from_value(json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {"app": "a", "roles": [{"id": "w", "secretKeys": keys}]}}))
        .expect("cluster")
    }

    /// A new cluster with `keys`, sent by a user (not this component), with `master` read.
    fn input(keys: serde_json::Value, master: Option<&str>) -> KeysInput {
        KeysInput {
            new: cluster(keys),
            old: None,
            own: false,
            master: master.map(Into::into),
            system_namespace: "kdfed-system".into(),
        }
    }

    #[test]
    fn the_master_key_is_read_only_for_a_key_to_seal_or_verify_before_any_forbidden_one() {
        let plain = json!({"name": "pw", "value": "hunter2"});
        let forged = json!({"name": "f", "encryptedValue": "ab"});
        assert!(needs_master(&cluster(json!([plain])), None, false));
        assert!(needs_master(&cluster(json!([forged])), None, true));
        assert!(!needs_master(&cluster(json!([forged])), None, false));
        assert!(!needs_master(&cluster(json!([forged, plain])), None, false));
        assert!(needs_master(&cluster(json!([plain, forged])), None, false));
        let stored = cluster(json!([forged]));
        assert!(!needs_master(&stored, Some(&stored), true), "the stored ciphertext is kept");
        assert!(!needs_master(&cluster(json!([])), None, false));
    }

    #[test]
    fn a_plain_value_is_replaced_by_its_ciphertext() {
        let master = crate::secretkeys::generate_key().expect("key");
        let ops = cluster_patch(&input(json!([{"name": "pw", "value": "hunter2"}]), Some(&master))).expect("sealed");
        let ops = serde_json::to_value(ops).expect("json");
        assert_eq!(ops[0]["op"], "replace");
        assert_eq!(ops[0]["path"], "/spec/roles/0/secretKeys/0");
        assert_eq!(ops[0]["value"]["name"], "pw");
        assert!(ops[0]["value"].get("value").is_none(), "{ops}");
        let sealed = ops[0]["value"]["encryptedValue"].as_str().expect("ciphertext");
        assert_eq!(crate::secretkeys::decrypt(&master, sealed).expect("opens"), "hunter2");
    }

    #[test]
    fn without_a_master_key_a_value_cannot_be_stored() {
        let e = cluster_patch(&input(json!([{"name": "pw", "value": "hunter2"}]), None)).expect_err("no key");
        assert_eq!(
            e.to_string(),
            "spec.roles[0].secretKeys[0]: cannot encrypt secret key pw: no masterEncryptionKey in KubeDirectorConfig kdfed-system/kd-global-config (rule: secret-key-encryption)"
        );
    }

    #[test]
    fn hand_made_ciphertexts_are_refused_unless_this_component_made_them() {
        let master = crate::secretkeys::generate_key().expect("key");
        let good = crate::secretkeys::encrypt(&master, "hunter2").expect("encrypt");
        let forged = json!([{"name": "pw", "encryptedValue": good}]);
        let e = cluster_patch(&input(forged.clone(), Some(&master))).expect_err("forged");
        assert_eq!(
            e.to_string(),
            "spec.roles[0].secretKeys[0].encryptedValue: manually setting secret key (pw) encrypted value is forbidden (rule: secret-key-encryption)"
        );
        let by_sync = KeysInput { own: true, ..input(forged, Some(&master)) };
        assert!(cluster_patch(&by_sync).expect("own ciphertext").is_empty());
        let other = crate::secretkeys::generate_key().expect("key");
        let unreadable = json!([{"name": "pw", "encryptedValue": crate::secretkeys::encrypt(&other, "x").expect("e")}]);
        let by_sync = KeysInput { own: true, ..input(unreadable, Some(&master)) };
        let e = cluster_patch(&by_sync).expect_err("wrong key");
        assert!(e.to_string().ends_with("does not decrypt with the master key of KubeDirectorConfig kdfed-system/kd-global-config (rule: secret-key-encryption)"), "{e}");
        // Re-sending what is stored is no change, whoever sends it.
        let stored = cluster(json!([{"name": "pw", "encryptedValue": good}]));
        let again = KeysInput { old: Some(stored.clone()), new: stored, ..input(json!([]), None) };
        assert!(cluster_patch(&again).expect("kept").is_empty());
    }

    #[test]
    fn a_config_without_a_master_key_gets_one() {
        let config: KubeDirectorConfig = serde_json::from_value(json!({"apiVersion": "kubedirector.hpe.com/v1beta1",
            "kind": "KubeDirectorConfig", "metadata": {"name": CONFIG_NAME, "namespace": "kdfed-system"}, "spec": {}}))
        .expect("config");
        let ops = serde_json::to_value(config_patch(Some(&config)).expect("ops")).expect("json");
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["path"], "/spec/masterEncryptionKey");
        assert_eq!(ops[0]["value"].as_str().map(str::len), Some(64));
        let mut keyed = config;
        keyed.spec.master_encryption_key = Some("00".repeat(32));
        assert!(config_patch(Some(&keyed)).expect("ops").is_empty());
        assert!(config_patch(None).expect("ops").is_empty());
    }
}
