//! `secretKeys` encryption as upstream KubeDirector does it: AES-GCM with the
//! `KubeDirectorConfig` master key (hex), a random 12-byte nonce, and the value stored as
//! hex(nonce ‖ ciphertext ‖ tag). kdfed supports 16- and 32-byte keys (AES-128/256; upstream
//! generates 32-byte keys); 24-byte keys are refused with a clear message.

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Why a value could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretKeyError {
    /// The master key is not hex, or not 16 or 32 bytes.
    #[error("masterEncryptionKey is invalid: {0}")]
    BadKey(String),
    /// The stored value is not hex or too short.
    #[error("encrypted value is malformed")]
    Malformed,
    /// The value does not decrypt with this key.
    #[error("encrypted value does not decrypt with the master key")]
    Decrypt,
    /// No randomness.
    #[error("no random nonce available")]
    Random,
}

fn key(master_hex: &str) -> Result<LessSafeKey, SecretKeyError> {
    let bytes = hex::decode(master_hex).map_err(|e| SecretKeyError::BadKey(format!("not hex: {e}")))?;
    let algorithm = match bytes.len() {
        16 => &AES_128_GCM,
        32 => &AES_256_GCM,
        24 => {
            return Err(SecretKeyError::BadKey("AES-192 (24-byte) keys are not supported; use 16 or 32 bytes".into()));
        }
        n => return Err(SecretKeyError::BadKey(format!("{n} bytes; must be 16 or 32"))),
    };
    UnboundKey::new(algorithm, &bytes).map(LessSafeKey::new).map_err(|_| SecretKeyError::BadKey("unusable".into()))
}

/// Checks a master key.
pub fn validate_key(master_hex: &str) -> Result<(), SecretKeyError> {
    key(master_hex).map(|_| ())
}

/// A new random 32-byte master key, hex-encoded.
pub fn generate_key() -> Result<String, SecretKeyError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| SecretKeyError::Random)?;
    Ok(hex::encode(bytes))
}

/// The master key of the `KubeDirectorConfig` in `namespace`: `None` when there is no
/// config or it has no key.
pub async fn master_key(client: &kube::Client, namespace: &str) -> Result<Option<String>, crate::ApiError> {
    use crate::Doing;
    let configs: kube::Api<kdfed_crds::KubeDirectorConfig> = kube::Api::namespaced(client.clone(), namespace);
    let config = configs.get_opt(kdfed_crds::config::CONFIG_NAME).await.doing("read KubeDirectorConfig")?;
    Ok(config.and_then(|c| c.spec.master_encryption_key))
}

/// Encrypts `plain` with the master key.
pub fn encrypt(master_hex: &str, plain: &str) -> Result<String, SecretKeyError> {
    let key = key(master_hex)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| SecretKeyError::Random)?;
    let mut data = plain.as_bytes().to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .map_err(|_| SecretKeyError::Random)?;
    let mut out = nonce.to_vec();
    out.extend(data);
    Ok(hex::encode(out))
}

/// Decrypts a value produced by [`encrypt`] (or by upstream KubeDirector).
pub fn decrypt(master_hex: &str, encrypted_hex: &str) -> Result<String, SecretKeyError> {
    let key = key(master_hex)?;
    let bytes = hex::decode(encrypted_hex).map_err(|_| SecretKeyError::Malformed)?;
    if bytes.len() < NONCE_LEN + 16 {
        return Err(SecretKeyError::Malformed);
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretKeyError::Malformed)?;
    let mut sealed = sealed.to_vec();
    let plain = key.open_in_place(nonce, Aad::empty(), &mut sealed).map_err(|_| SecretKeyError::Decrypt)?;
    String::from_utf8(plain.to_vec()).map_err(|_| SecretKeyError::Malformed)
}

/// The ciphertext to store for the secret key `name` with the plain value `plain`: the one
/// `previous` (the keys stored before, same role) holds for that name when it decrypts to
/// the same value, so re-applying an unchanged spec changes nothing (no new nonce, no new
/// generation); otherwise a new encryption.
pub fn seal_value(
    master_hex: &str,
    name: &str,
    plain: &str,
    previous: &[kdfed_crds::cluster::SecretKey],
) -> Result<String, SecretKeyError> {
    let kept = previous.iter().find_map(|k| {
        let sealed = k.encrypted_value.as_deref().filter(|_| k.name == name)?;
        (decrypt(master_hex, sealed).ok()? == plain).then(|| sealed.to_string())
    });
    match kept {
        Some(sealed) => Ok(sealed),
        None => encrypt(master_hex, plain),
    }
}

/// Whether any of `keys` holds a plain value that must be encrypted before it is stored.
pub fn has_plain_values(keys: &[kdfed_crds::cluster::SecretKey]) -> bool {
    keys.iter().any(|k| k.value.as_deref().is_some_and(|v| !v.is_empty()))
}

/// The stored form of a role's secret keys: every plain `value` replaced by its
/// `encryptedValue` ([`seal_value`] against `previous`); keys without a plain value are kept.
/// An error names the key.
pub fn seal(
    keys: &[kdfed_crds::cluster::SecretKey],
    previous: &[kdfed_crds::cluster::SecretKey],
    master_hex: &str,
) -> Result<Vec<kdfed_crds::cluster::SecretKey>, String> {
    keys.iter()
        .map(|k| match k.value.as_deref().filter(|v| !v.is_empty()) {
            Some(plain) => Ok(kdfed_crds::cluster::SecretKey {
                name: k.name.clone(),
                value: None,
                encrypted_value: Some(
                    seal_value(master_hex, &k.name, plain, previous)
                        .map_err(|e| format!("cannot encrypt secret key {}: {e}", k.name))?,
                ),
            }),
            None => Ok(k.clone()),
        })
        .collect()
}

/// The plain values of a role's secret keys: `value` where given, otherwise `encryptedValue`
/// decrypted with the master key. Keys that cannot be read are left out and returned as errors.
pub fn plain_values(
    keys: &[kdfed_crds::cluster::SecretKey],
    master_hex: Option<&str>,
) -> (std::collections::BTreeMap<String, String>, Vec<String>) {
    let mut values = std::collections::BTreeMap::new();
    let mut errors = Vec::new();
    for k in keys {
        match (k.value.as_deref().filter(|v| !v.is_empty()), k.encrypted_value.as_deref(), master_hex) {
            (Some(v), _, _) => {
                values.insert(k.name.clone(), v.to_string());
            }
            (None, Some(enc), Some(master)) => match decrypt(master, enc) {
                Ok(v) => {
                    values.insert(k.name.clone(), v);
                }
                Err(e) => errors.push(format!("secret key {}: {e}", k.name)),
            },
            (None, Some(_), None) => {
                errors.push(format!("secret key {}: no masterEncryptionKey to decrypt it", k.name))
            }
            (None, None, _) => {
                values.insert(k.name.clone(), String::new());
            }
        }
    }
    (values, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_differ_each_time() {
        let key = generate_key().expect("key");
        assert_eq!(key.len(), 64);
        let a = encrypt(&key, "hunter2").expect("encrypt");
        let b = encrypt(&key, "hunter2").expect("encrypt");
        assert_ne!(a, b, "random nonces");
        assert_eq!(decrypt(&key, &a).expect("decrypt"), "hunter2");
        let short = "00112233445566778899aabbccddeeff";
        assert_eq!(decrypt(short, &encrypt(short, "x").expect("e")).expect("d"), "x");
    }

    #[test]
    fn wrong_keys_and_bad_input_are_refused() {
        let key = generate_key().expect("key");
        let other = generate_key().expect("key");
        let sealed = encrypt(&key, "v").expect("encrypt");
        assert_eq!(decrypt(&other, &sealed), Err(SecretKeyError::Decrypt));
        assert_eq!(decrypt(&key, "zz"), Err(SecretKeyError::Malformed));
        assert!(matches!(validate_key(&"00".repeat(24)), Err(SecretKeyError::BadKey(m)) if m.contains("AES-192")));
        assert!(matches!(validate_key("abc"), Err(SecretKeyError::BadKey(_))));
    }

    #[test]
    fn sealing_keeps_ciphertexts_of_unchanged_values_and_encrypts_changed_ones() {
        use kdfed_crds::cluster::SecretKey;
        let key = generate_key().expect("key");
        let plain = |name: &str, v: &str| SecretKey { name: name.into(), value: Some(v.into()), encrypted_value: None };
        let first = seal(&[plain("a", "one"), plain("b", "two")], &[], &key).expect("seal");
        assert!(first.iter().all(|k| k.value.is_none() && k.encrypted_value.is_some()), "{first:?}");
        assert!(!has_plain_values(&first));
        let again = seal(&[plain("a", "one"), plain("b", "changed")], &first, &key).expect("reseal");
        assert_eq!(again[0], first[0], "an unchanged value keeps its ciphertext");
        assert_ne!(again[1], first[1], "a changed value is encrypted anew");
        assert_eq!(decrypt(&key, again[1].encrypted_value.as_deref().expect("sealed")).expect("d"), "changed");
        // A ciphertext stored under another name is never reused.
        let renamed = seal(&[plain("c", "one")], &first, &key).expect("seal");
        assert_ne!(renamed[0].encrypted_value, first[0].encrypted_value);
        // Keys that are already sealed pass through.
        assert_eq!(seal(&first, &[], &key).expect("pass"), first);
        assert!(seal(&[plain("a", "x")], &[], "abc").expect_err("bad key").contains("secret key a"));
    }

    #[test]
    fn plain_values_decrypt_only_what_they_can() {
        use kdfed_crds::cluster::SecretKey;
        let key = generate_key().expect("key");
        let keys = vec![
            SecretKey { name: "a".into(), value: Some("plain".into()), encrypted_value: None },
            SecretKey { name: "b".into(), value: None, encrypted_value: Some(encrypt(&key, "sealed").expect("e")) },
            SecretKey { name: "c".into(), value: None, encrypted_value: Some("00".into()) },
        ];
        let (values, errors) = plain_values(&keys, Some(&key));
        assert_eq!(values.get("a").map(String::as_str), Some("plain"));
        assert_eq!(values.get("b").map(String::as_str), Some("sealed"));
        assert!(!values.contains_key("c"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (_, errors) = plain_values(&keys, None);
        assert_eq!(errors.len(), 2, "without a key nothing sealed is readable");
    }
}
