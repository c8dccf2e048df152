//! Sessions: who is signed in, sealed into one cookie. The user's bearer token lives only
//! inside an AES-256-GCM ciphertext (ring) that the console alone can open, in an
//! `HttpOnly; Secure; SameSite=Strict` cookie with an expiry; every session carries its own
//! CSRF token, which every form repeats and every POST must match.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Name of the session cookie.
pub const COOKIE: &str = "kdfed_session";

/// Bytes of a session key (AES-256).
pub const KEY_LEN: usize = 32;

/// Why a cookie does not open to a session.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not base64, too short, or not sealed with this key (tampered, another process's key).
    #[error("the session cookie does not open with this console's key")]
    Sealed,
    /// Opened, but its content is not a session.
    #[error("the session cookie holds no session")]
    Malformed,
    /// Opened, but past its expiry.
    #[error("the session expired")]
    Expired,
}

/// Why a session key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("session key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key is not 32 bytes (raw, hex or base64).
    #[error("session key {origin}: must be 32 bytes, as 64 hex digits or base64 (rule: aes-256-key)")]
    Length {
        /// Where it came from.
        origin: String,
    },
}

/// A signed-in user: their name as the hub's API server said, their token, the CSRF token
/// of this session and when it ends (Unix seconds).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Username from the hub's `SelfSubjectReview`.
    pub user: String,
    /// The bearer token every API call is made with.
    pub token: String,
    /// The session's CSRF token (hex).
    pub csrf: String,
    /// Expiry, Unix seconds.
    pub expires: i64,
}

// The token must never reach a log through a `{:?}`.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("user", &self.user).field("expires", &self.expires).finish_non_exhaustive()
    }
}

/// Seals sessions into cookie values and opens them again.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer with `key` (32 bytes).
    pub fn new(key: &[u8; KEY_LEN]) -> Sealer {
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key is an AES-256 key");
        Sealer { key: LessSafeKey::new(unbound), random: SystemRandom::new() }
    }

    /// A sealer with a random key: sessions last as long as the process.
    pub fn random() -> Sealer {
        Sealer::new(&random_bytes::<KEY_LEN>())
    }

    /// The cookie value of `session`: base64url(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, session: &Session) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        #[allow(clippy::expect_used)]
        self.random.fill(&mut nonce).expect("the system's random source works");
        #[allow(clippy::expect_used)]
        let mut data = serde_json::to_vec(session).expect("a session serialises");
        #[allow(clippy::expect_used)]
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(COOKIE.as_bytes()), &mut data)
            .expect("sealing a small buffer succeeds");
        let mut out = nonce.to_vec();
        out.extend(data);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The session in `cookie`, if it was sealed with this key and has not expired at `now`.
    pub fn open(&self, cookie: &str, now: i64) -> Result<Session, SessionError> {
        let bytes = URL_SAFE_NO_PAD.decode(cookie.trim()).map_err(|_| SessionError::Sealed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SessionError::Sealed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SessionError::Sealed)?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(COOKIE.as_bytes()), &mut sealed)
            .map_err(|_| SessionError::Sealed)?;
        let session: Session = serde_json::from_slice(plain).map_err(|_| SessionError::Malformed)?;
        if session.expires <= now {
            return Err(SessionError::Expired);
        }
        Ok(session)
    }
}

/// `n` bytes from the system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    #[allow(clippy::expect_used)]
    SystemRandom::new().fill(&mut bytes).expect("the system's random source works");
    bytes
}

/// A new CSRF token (128 random bits, hex).
pub fn new_csrf() -> String {
    hex_string(&random_bytes::<16>())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the CSRF token a form sent matches the session's (compared in constant time).
pub fn csrf_matches(expected: &str, sent: Option<&str>) -> bool {
    let Some(sent) = sent else { return false };
    if expected.is_empty() || expected.len() != sent.len() {
        return false;
    }
    expected.bytes().zip(sent.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// A session key from text: 64 hex digits or base64 of 32 bytes (`origin` names it in errors).
pub fn parse_key(text: &str, origin: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let text = text.trim();
    let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..KEY_LEN).filter_map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()).collect::<Vec<u8>>()
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
    };
    bytes.try_into().map_err(|_| KeyError::Length { origin: origin.to_string() })
}

/// The session key in `path` (see [`parse_key`]).
pub fn read_key(path: &std::path::Path) -> Result<[u8; KEY_LEN], KeyError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.display().to_string(), source })?;
    parse_key(&text, &path.display().to_string())
}

/// The `Set-Cookie` value that stores `value` for `max_age` seconds.
pub fn set_cookie(value: &str, max_age: i64) -> String {
    format!("{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict")
}

/// The `Set-Cookie` value that clears the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// The session cookie's value among the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    headers
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires: i64) -> Session {
        Session { user: "alice".into(), token: "secret-token-123".into(), csrf: new_csrf(), expires }
    }

    #[test]
    fn a_sealed_session_opens_with_its_key_until_it_expires() {
        let sealer = Sealer::random();
        let s = session(1_000);
        let cookie = sealer.seal(&s);
        assert!(!cookie.contains("secret-token-123"), "the token is not readable in the cookie");
        assert_eq!(sealer.open(&cookie, 999), Ok(s));
        assert_eq!(sealer.open(&cookie, 1_000), Err(SessionError::Expired));
    }

    #[test]
    fn a_tampered_cookie_or_another_key_opens_nothing() {
        let sealer = Sealer::random();
        let cookie = sealer.seal(&session(1_000));
        let mut bytes = URL_SAFE_NO_PAD.decode(&cookie).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(sealer.open(&URL_SAFE_NO_PAD.encode(&bytes), 0), Err(SessionError::Sealed));
        bytes[last] ^= 1;
        bytes[NONCE_LEN + 2] ^= 0x20;
        assert_eq!(sealer.open(&URL_SAFE_NO_PAD.encode(&bytes), 0), Err(SessionError::Sealed));
        assert_eq!(Sealer::random().open(&cookie, 0), Err(SessionError::Sealed), "another process's key");
        assert_eq!(sealer.open("not base64 !", 0), Err(SessionError::Sealed));
        assert_eq!(sealer.open("", 0), Err(SessionError::Sealed));
    }

    #[test]
    fn each_seal_of_the_same_session_differs() {
        let sealer = Sealer::random();
        let s = session(1_000);
        assert_ne!(sealer.seal(&s), sealer.seal(&s), "a fresh nonce each time");
    }

    #[test]
    fn csrf_must_be_sent_and_equal() {
        let token = new_csrf();
        assert_eq!(token.len(), 32);
        assert!(csrf_matches(&token, Some(&token)));
        assert!(!csrf_matches(&token, None), "missing");
        assert!(!csrf_matches(&token, Some("")), "empty");
        assert!(!csrf_matches(&token, Some(&new_csrf())), "another session's");
        assert!(!csrf_matches(&token, Some(&token[1..])), "cut");
        assert!(!csrf_matches("", Some("")), "a session without a token accepts nothing");
    }

    #[test]
    fn keys_are_32_bytes_as_hex_or_base64_and_a_wrong_length_is_named() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        assert_eq!(parse_key(hex, "flag").expect("hex")[1], 0x11);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(parse_key(&format!("{b64}\n"), "file").expect("base64"), [7u8; 32]);
        let e = parse_key("abcd", "/etc/key").expect_err("short");
        assert_eq!(
            e.to_string(),
            "session key /etc/key: must be 32 bytes, as 64 hex digits or base64 (rule: aes-256-key)"
        );
    }

    #[test]
    fn the_cookie_carries_the_flags_and_is_found_among_others() {
        let set = set_cookie("abc", 3600);
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age=3600", "Path=/"] {
            assert!(set.contains(flag), "{flag} in {set}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
        let headers = ["theme=dark; kdfed_session=xyz", "other=1"];
        assert_eq!(cookie_value(headers.into_iter()), Some("xyz"));
        assert_eq!(cookie_value(["kdfed_sessionx=1"].into_iter()), None);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let text = format!("{:?}", session(5));
        assert!(text.contains("alice") && !text.contains("secret-token-123"), "{text}");
    }
}
