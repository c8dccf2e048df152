//! Key sealing: a Work's secret material (referenced Secrets' data and the cluster's
//! secret-key values) travels in a Secret beside the Work on the hub, readable only by this
//! member. Secret-key values arrive in the clear and are stored in the local copy encrypted
//! with this member's master key, whether or not the member runs the admission webhook.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kdfed_common::Doing;
use kdfed_crds::KubeDirectorClusterSpec;
use kdfed_crds::cluster::KubeDirectorCluster;
use kdfed_crds::config::{CONFIG_NAME, KubeDirectorConfig, KubeDirectorConfigSpec};
use kdfed_crds::federation::KubeDirectorWork;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tracing::info;

use super::{Error, FIELD_MANAGER, SyncContext};

/// A Work's secret material, read from the Secret beside it on the hub.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Material {
    /// Referenced Secrets' data: secret name → key → base64 value.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Secret-key values: role id → key name → value.
    pub secret_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// One part of the material: a JSON object of objects of strings under `key`.
fn part(data: &BTreeMap<String, ByteString>, key: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    match data.get(key) {
        None => Ok(BTreeMap::new()),
        // serde's message may quote a value: say only where it is wrong.
        Some(bytes) => serde_json::from_slice(&bytes.0).map_err(|e| {
            format!("{key} is not a JSON object of objects of strings (line {}, column {})", e.line(), e.column())
        }),
    }
}

impl Material {
    /// Decodes the Secret's data (`secrets.json`, `secretKeys.json`); a missing key is empty.
    pub fn decode(data: &BTreeMap<String, ByteString>) -> Result<Self, String> {
        Ok(Self {
            secrets: part(data, kdfed_crds::federation::WORK_SECRET_DATA_KEY)?,
            secret_keys: part(data, kdfed_crds::federation::WORK_SECRET_KEYS_KEY)?,
        })
    }

    /// Puts the secret-key values into `spec`'s keys that carry none.
    pub fn fill_secret_keys(&self, spec: &mut KubeDirectorClusterSpec) {
        for role in &mut spec.roles {
            let Some(values) = self.secret_keys.get(&role.id) else { continue };
            for key in &mut role.secret_keys {
                if key.value.is_none()
                    && key.encrypted_value.is_none()
                    && let Some(v) = values.get(&key.name)
                {
                    key.value = Some(v.clone());
                }
            }
        }
    }
}

/// The secret material of `work`: the Secret `spec.secretData` names in this member's
/// namespace on the hub (empty when the Work names none), read once per content of the Work
/// (see [`super::memo`]).
pub(super) async fn work_material(ctx: &SyncContext, work: &KubeDirectorWork) -> Result<Material, Error> {
    let Some(reference) = &work.spec.secret_data else {
        return Ok(Material::default());
    };
    if let Some(kept) = ctx.memo.material(work) {
        return Ok(kept);
    }
    let what = format!("secret material of Work {}", work.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.hub.clone(), &ctx.namespace());
    let secret = secrets
        .get(&reference.name)
        .await
        .doing(format!("read {what} (Secret {})", reference.name))
        .map_err(Error::ReadMaterial)?;
    let material = Material::decode(&secret.data.unwrap_or_default())
        .map_err(|message| Error::SecretKeys { cluster: what, message: format!("malformed: {message}") })?;
    ctx.memo.keep_material(work, &material);
    Ok(material)
}

/// `spec` with every plain secret-key value encrypted with `master`. A value the stored
/// copy (`existing`) already holds keeps its ciphertext, so re-syncing changes nothing.
/// `cluster` (`namespace/name`) names the copy in errors.
pub fn seal(
    mut spec: KubeDirectorClusterSpec,
    existing: Option<&KubeDirectorCluster>,
    master: &str,
    cluster: &str,
) -> Result<KubeDirectorClusterSpec, Error> {
    for role in &mut spec.roles {
        let previous: Vec<_> = existing
            .iter()
            .flat_map(|c| c.spec.roles.iter().filter(|r| r.id == role.id).flat_map(|r| r.secret_keys.clone()))
            .collect();
        role.secret_keys = kdfed_common::secretkeys::seal(&role.secret_keys, &previous, master).map_err(|e| {
            Error::SecretKeys { cluster: cluster.to_string(), message: format!("role {}: {e}", role.id) }
        })?;
    }
    Ok(spec)
}

/// The cluster spec to store on this member: `spec` as it is when it has no plain
/// secret-key values (the hub decrypts them with its own key into the Work's Secret, which
/// only this member can read), otherwise [`seal`]ed with this member's master key.
pub(super) async fn sealed_spec(
    ctx: &SyncContext,
    work: &KubeDirectorWork,
    spec: KubeDirectorClusterSpec,
) -> Result<KubeDirectorClusterSpec, Error> {
    if !spec.roles.iter().any(|r| kdfed_common::secretkeys::has_plain_values(&r.secret_keys)) {
        return Ok(spec);
    }
    let cluster = &work.spec.cluster;
    let master = member_master_key(ctx).await?;
    let copies: Api<KubeDirectorCluster> = Api::namespaced(ctx.local.clone(), &cluster.namespace);
    let existing = copies.get_opt(&cluster.name).await.doing("read local cluster").map_err(Error::Seal)?;
    seal(spec, existing.as_ref(), &master, &format!("{}/{}", cluster.namespace, cluster.name))
}

/// The `KubeDirectorConfig` that stores a new master key (and nothing else hub sync owns).
pub fn config_with_key(namespace: &str, key: &str) -> KubeDirectorConfig {
    let spec = KubeDirectorConfigSpec { master_encryption_key: Some(key.to_string()), ..Default::default() };
    let mut config = KubeDirectorConfig::new(CONFIG_NAME, spec);
    config.metadata.namespace = Some(namespace.to_string());
    config
}

/// This member's secret-key master key: the one in its `KubeDirectorConfig`, or a new one
/// written there (applied as hub sync, without force, so a key someone else set at the same
/// moment wins and is used on the next pass) when the config has none or does not exist,
/// as upstream's admission generates one for a config without a key.
async fn member_master_key(ctx: &SyncContext) -> Result<String, Error> {
    let ns = &ctx.opts.system_namespace;
    if let Some(key) = kdfed_common::secretkeys::master_key(&ctx.local, ns).await.map_err(Error::Seal)? {
        return Ok(key);
    }
    let configs: Api<KubeDirectorConfig> = Api::namespaced(ctx.local.clone(), ns);
    let key = kdfed_common::secretkeys::generate_key()
        .map_err(|e| Error::SecretKeys { cluster: format!("{ns}/{CONFIG_NAME}"), message: e.to_string() })?;
    let stored = configs
        .patch(CONFIG_NAME, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(config_with_key(ns, &key)))
        .await
        .doing("write a master key into KubeDirectorConfig")
        .map_err(Error::Seal)?;
    info!(config = %format!("{ns}/{CONFIG_NAME}"), "generated this member's secret-key master key");
    Ok(stored.spec.master_encryption_key.unwrap_or(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdfed_crds::cluster::{Role, SecretKey};

    fn key(name: &str, value: Option<&str>, encrypted: Option<&str>) -> SecretKey {
        SecretKey { name: name.into(), value: value.map(Into::into), encrypted_value: encrypted.map(Into::into) }
    }

    fn spec(keys: Vec<SecretKey>) -> KubeDirectorClusterSpec {
        let role = Role { id: "worker".into(), secret_keys: keys, ..Role::default() };
        KubeDirectorClusterSpec { roles: vec![role], ..Default::default() }
    }

    #[test]
    fn material_fills_only_keys_that_carry_no_value() {
        let data = BTreeMap::from([(
            kdfed_crds::federation::WORK_SECRET_KEYS_KEY.to_string(),
            ByteString(br#"{"worker": {"a": "1", "b": "2", "c": "3"}}"#.to_vec()),
        )]);
        let material = Material::decode(&data).expect("decode");
        assert!(material.secrets.is_empty(), "a missing part is empty");
        let mut spec = spec(vec![key("a", None, None), key("b", Some("own"), None), key("c", None, Some("00"))]);
        material.fill_secret_keys(&mut spec);
        assert_eq!(
            spec.roles[0].secret_keys,
            [key("a", Some("1"), None), key("b", Some("own"), None), key("c", None, Some("00"))]
        );
    }

    #[test]
    fn malformed_material_says_where_without_quoting_values() {
        let data = BTreeMap::from([(
            kdfed_crds::federation::WORK_SECRET_DATA_KEY.to_string(),
            ByteString(br#"{"s": {"k": 42}}"#.to_vec()),
        )]);
        let message = Material::decode(&data).expect_err("numbers are not strings");
        assert!(message.starts_with("secrets.json is not a JSON object of objects of strings (line 1"), "{message}");
        assert!(!message.contains("42"), "{message}");
    }

    #[test]
    fn sealing_again_keeps_the_ciphertext_of_an_unchanged_value() {
        let master = kdfed_common::secretkeys::generate_key().expect("key");
        let first = seal(spec(vec![key("k", Some("v1"), None)]), None, &master, "team/db").expect("seal");
        let sealed = first.roles[0].secret_keys[0].clone();
        assert_eq!(sealed.value, None, "no plain value is stored");
        let stored = KubeDirectorCluster::new("db", first);
        let again = seal(spec(vec![key("k", Some("v1"), None)]), Some(&stored), &master, "team/db").expect("seal");
        assert_eq!(again.roles[0].secret_keys[0], sealed, "re-syncing changes nothing");
        let changed = seal(spec(vec![key("k", Some("v2"), None)]), Some(&stored), &master, "team/db").expect("seal");
        assert_ne!(changed.roles[0].secret_keys[0], sealed);
        let e = seal(spec(vec![key("k", Some("v"), None)]), None, "not a key", "team/db").expect_err("bad key");
        assert_eq!(e.step(), "secret_keys");
        assert!(e.to_string().starts_with("secret keys of team/db: role worker: "), "{e}");
    }

    #[test]
    fn a_new_master_key_is_the_only_field_hub_sync_applies_to_the_config() {
        let config = serde_json::to_value(config_with_key("kd-system", "abcd")).expect("json");
        assert_eq!(
            config,
            serde_json::json!({
                "apiVersion": kdfed_crds::KUBEDIRECTOR_API_VERSION, "kind": "KubeDirectorConfig",
                "metadata": {"name": CONFIG_NAME, "namespace": "kd-system"},
                "spec": {"masterEncryptionKey": "abcd"},
            })
        );
    }
}
