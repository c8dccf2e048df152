//! Sealed delivery of a member's spoke credentials. `kdfed member add` puts a one-time
//! X25519 public key into the member's `spec.join`; the hub, which alone creates the
//! member's identity and token, answers in `status.join` with a kubeconfig sealed to that
//! key: X25519 agreement with a one-time key of the hub's, HKDF-SHA256 over the shared
//! secret and both public keys, AES-256-GCM with the member's name as associated data.
//! Whoever reads the member object learns nothing; only the process holding the private
//! key (in memory, never written) opens it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::agreement::{EphemeralPrivateKey, UnparsedPublicKey, X25519, agree_ephemeral};
use ring::hkdf::{HKDF_SHA256, KeyType, Salt};
use ring::rand::{SecureRandom, SystemRandom};

/// Salt of the key derivation; a new format gets a new salt.
const SALT: &[u8] = b"kdfed-member-join-v1";

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    /// A public key is not base64 of 32 bytes.
    #[error("public key is not base64 of 32 bytes")]
    BadKey,
    /// The sealed data is malformed or does not open with this key.
    #[error("the sealed credentials do not open with this request's key")]
    Open,
    /// The platform's randomness or key agreement failed.
    #[error("cryptography failed: {0}")]
    Crypto(&'static str),
}

/// A one-time key pair of a join request. The private half lives only in this value.
pub struct JoinKey {
    private: EphemeralPrivateKey,
    public: String,
}

impl JoinKey {
    /// A new key pair.
    pub fn generate() -> Result<Self, JoinError> {
        let rng = SystemRandom::new();
        let private = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| JoinError::Crypto("key generation"))?;
        let public = private.compute_public_key().map_err(|_| JoinError::Crypto("public key"))?;
        Ok(Self { private, public: STANDARD.encode(public.as_ref()) })
    }

    /// The public key to put into `spec.join.publicKey` (base64).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// Opens what the hub sealed to this key for `member`.
    pub fn open(self, member: &str, hub_key: &str, sealed: &str) -> Result<Vec<u8>, JoinError> {
        let hub = decode_key(hub_key)?;
        let key = agree_ephemeral(self.private, &UnparsedPublicKey::new(&X25519, hub.as_slice()), |shared| {
            derive(shared, &self.public, hub_key)
        })
        .map_err(|_| JoinError::Open)??;
        let mut bytes = STANDARD.decode(sealed).map_err(|_| JoinError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(JoinError::Open);
        }
        let mut data = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| JoinError::Open)?;
        let plain = key.open_in_place(nonce, Aad::from(member.as_bytes()), &mut data).map_err(|_| JoinError::Open)?;
        Ok(plain.to_vec())
    }
}

/// What the hub puts into `status.join`: its one-time public key and the sealed data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The hub's one-time public key (base64).
    pub hub_key: String,
    /// Nonce ‖ ciphertext ‖ tag (base64).
    pub sealed: String,
}

/// Seals `plain` for `member` to the requester's public key.
pub fn seal(member: &str, request_key: &str, plain: &[u8]) -> Result<Sealed, JoinError> {
    let peer = decode_key(request_key)?;
    let rng = SystemRandom::new();
    let private = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| JoinError::Crypto("key generation"))?;
    let hub_key = STANDARD.encode(private.compute_public_key().map_err(|_| JoinError::Crypto("public key"))?.as_ref());
    let key = agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, peer.as_slice()), |shared| {
        derive(shared, request_key, &hub_key)
    })
    .map_err(|_| JoinError::BadKey)??;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| JoinError::Crypto("randomness"))?;
    let mut data = plain.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(member.as_bytes()), &mut data)
        .map_err(|_| JoinError::Crypto("seal"))?;
    let mut out = nonce.to_vec();
    out.extend(data);
    Ok(Sealed { hub_key, sealed: STANDARD.encode(out) })
}

fn decode_key(b64: &str) -> Result<Vec<u8>, JoinError> {
    let bytes = STANDARD.decode(b64).map_err(|_| JoinError::BadKey)?;
    if bytes.len() != kdfed_crds::validate::JOIN_KEY_LENGTH {
        return Err(JoinError::BadKey);
    }
    Ok(bytes)
}

struct Aes256;

impl KeyType for Aes256 {
    fn len(&self) -> usize {
        32
    }
}

fn derive(shared: &[u8], request_key: &str, hub_key: &str) -> Result<LessSafeKey, JoinError> {
    let info = [request_key.as_bytes(), b"|", hub_key.as_bytes()];
    let prk = Salt::new(HKDF_SHA256, SALT).extract(shared);
    let okm = prk.expand(&info, Aes256).map_err(|_| JoinError::Crypto("key derivation"))?;
    let mut bytes = [0u8; 32];
    okm.fill(&mut bytes).map_err(|_| JoinError::Crypto("key derivation"))?;
    UnboundKey::new(&AES_256_GCM, &bytes).map(LessSafeKey::new).map_err(|_| JoinError::Crypto("cipher key"))
}

/// Validates a request's public key (for the hub; admission applies the same rule through
/// `kdfed_crds::validate::member`): base64 of 32 bytes.
pub fn validate_public_key(b64: &str) -> Result<(), JoinError> {
    if kdfed_crds::validate::is_join_key(b64) { Ok(()) } else { Err(JoinError::BadKey) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_requester_opens_what_the_hub_sealed() {
        let request = JoinKey::generate().expect("key");
        let sealed = seal("east", request.public_key(), b"kubeconfig with a token").expect("seal");
        assert!(!sealed.sealed.contains("token"));
        let other = JoinKey::generate().expect("key");
        assert_eq!(other.open("east", &sealed.hub_key, &sealed.sealed), Err(JoinError::Open));
        assert_eq!(request.open("east", &sealed.hub_key, &sealed.sealed).expect("open"), b"kubeconfig with a token");
    }

    #[test]
    fn sealed_credentials_are_bound_to_their_member() {
        let request = JoinKey::generate().expect("key");
        let sealed = seal("east", request.public_key(), b"secret").expect("seal");
        assert_eq!(request.open("west", &sealed.hub_key, &sealed.sealed), Err(JoinError::Open));
    }

    #[test]
    fn tampered_or_malformed_input_is_refused() {
        let request = JoinKey::generate().expect("key");
        let mut sealed = seal("east", request.public_key(), b"secret").expect("seal");
        let mut bytes = STANDARD.decode(&sealed.sealed).expect("b64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        sealed.sealed = STANDARD.encode(bytes);
        assert_eq!(request.open("east", &sealed.hub_key, &sealed.sealed), Err(JoinError::Open));
        assert_eq!(seal("east", "not a key", b"x"), Err(JoinError::BadKey));
        assert_eq!(validate_public_key(&STANDARD.encode([0u8; 31])), Err(JoinError::BadKey));
    }
}
