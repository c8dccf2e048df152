//! The webhook's TLS: a rustls configuration whose certificate is re-read when its files
//! change, so a rotated certificate (cert-manager, the test bed) is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// Why the webhook's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate or key unusable.
    #[error("webhook certificate {path}: {message}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Config(String),
}

/// A TLS acceptor serving the pair in `cert` and `key` (PEM), re-read when they change.
/// Fails when the files do not hold a usable pair now.
pub fn acceptor(cert: PathBuf, key: PathBuf) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let resolver = ReloadingCert { cert, key, current: RwLock::new((None, None)) };
    resolver.load()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The serving pair, with the modification time of the files it was read from.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Option<SystemTime>, Option<Arc<CertifiedKey>>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let bad = |path: &Path, message: String| TlsError::Certificate { path: path.display().to_string(), message };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| bad(&self.cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&self.cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(bad(&self.cert, "no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| bad(&self.key, e.to_string()))?;
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad(&self.key, e.to_string()))?;
        let pair = CertifiedKey::new(certs, signing);
        // A rotation caught between writing the key and the certificate: not a pair yet.
        pair.keys_match().map_err(|e| bad(&self.cert, format!("certificate and key do not match: {e}")))?;
        Ok(Arc::new(pair))
    }

    fn stamp(&self) -> Option<SystemTime> {
        modified(&self.cert).max(modified(&self.key))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamp = self.stamp();
        if let Ok(guard) = self.current.read()
            && guard.0 == stamp
            && guard.1.is_some()
        {
            return guard.1.clone();
        }
        match self.load() {
            Ok(key) if self.stamp() == stamp => {
                if let Ok(mut guard) = self.current.write() {
                    if guard.1.is_some() {
                        info!("webhook certificate reloaded");
                    }
                    *guard = (stamp, Some(key.clone()));
                }
                Some(key)
            }
            // The files changed while being read: serve this pair, re-read next time.
            Ok(key) => Some(key),
            Err(e) => {
                // Keep serving the last good certificate while a rotation is half-written.
                warn!("{e}");
                self.current.read().ok().and_then(|g| g.1.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_mismatched_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        let e = acceptor(cert.clone(), key.clone()).err().expect("no files");
        assert!(e.to_string().starts_with(&format!("webhook certificate {}:", cert.display())), "{e}");
        std::fs::write(&cert, "not a certificate\n").expect("write");
        let e = acceptor(cert.clone(), key).err().expect("no certificate");
        assert_eq!(e.to_string(), format!("webhook certificate {}: no certificate", cert.display()));
    }
}
