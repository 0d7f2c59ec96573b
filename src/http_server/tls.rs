//! TLS on a listener: rustls, HTTP/2 and HTTP/1.1 offered through ALPN, and
//! a certificate that can be replaced without a restart. The certificate
//! and key are read again on SIGHUP and when their files change (checked
//! every few seconds); new handshakes get the new pair, connections already
//! open keep theirs, so nothing is dropped. A pair that fails to load (a
//! half-written file, a key that does not match) leaves the one in force.

use arc_swap::ArcSwap;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// What keeps a certificate from being served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read --tls-cert {}: {source}", path.display())]
    Cert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("--tls-cert {} holds no PEM certificate", path.display())]
    NoCert { path: PathBuf },
    #[error("cannot read --tls-key {}: {source} (a PEM private key: PKCS#8, PKCS#1 or SEC1)", path.display())]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("--tls-key {} does not go with --tls-cert {}: {source}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The certificate and key a listener serves, by their files.
#[derive(Debug)]
pub struct Certificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The files' modification times when last loaded.
    loaded_at: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

/// How often the files are checked for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert_path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert_path.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Key {
        path: key_path.to_path_buf(),
        source,
    })?;
    let mismatch = |source| TlsError::Mismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        source,
    };
    let certified = CertifiedKey::from_der(chain, key, &default_provider()).map_err(mismatch)?;
    // from_der lets an unknown consistency pass; ring's keys all report
    // their public half, so anything else is a mismatch.
    certified.keys_match().map_err(mismatch)?;
    Ok(certified)
}

impl Certificate {
    /// Loads the pair now: a clear error at start-up beats one at the
    /// first client.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Certificate>, TlsError> {
        let stamps = (modified(cert_path), modified(key_path));
        let certified = load_pair(cert_path, key_path)?;
        Ok(Arc::new(Certificate {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(certified),
            loaded_at: Mutex::new(stamps),
        }))
    }

    /// Loads the pair again; on an error the one in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = (modified(&self.cert_path), modified(&self.key_path));
        let certified = load_pair(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(certified));
        *self.loaded_at.lock().expect("certificate lock") = stamps;
        Ok(())
    }

    fn files_changed(&self) -> bool {
        let stamps = (modified(&self.cert_path), modified(&self.key_path));
        *self.loaded_at.lock().expect("certificate lock") != stamps
    }

    /// Reloads whenever the files change, until `shutdown`.
    pub fn watch(self: &Arc<Self>, listener: &'static str, shutdown: CancellationToken) {
        let certificate = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WATCH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                if certificate.files_changed() {
                    certificate.reload_and_log(listener, "its files changed");
                }
            }
        });
    }

    /// Reloads and says so in the log, naming `why`.
    pub fn reload_and_log(&self, listener: &'static str, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(listener, "TLS certificate reloaded ({why})"),
            Err(error) => tracing::error!(
                listener,
                %error,
                "TLS certificate not reloaded ({why}); the one in force stays"
            ),
        }
    }

    /// The acceptor for this certificate: TLS 1.2 and 1.3, HTTP/2 and
    /// HTTP/1.1 offered through ALPN.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A TLS record starts with its content type: 22 is a handshake. A client
/// that sends anything else (`GET ...`) speaks plain HTTP to a TLS port.
pub fn looks_like_tls(first_byte: u8) -> bool {
    first_byte == 22
}

/// The answer a plain-HTTP client gets from a TLS port, instead of silence.
pub const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain\r\nconnection: close\r\ncontent-length: 49\r\n\r\n\
this port speaks HTTPS: use https:// to reach it\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn start_up_errors_name_the_file_and_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        let (_, other_key) = pair(dir.path(), "b");
        assert!(Certificate::load(&cert, &key).is_ok());
        let missing = Certificate::load(&dir.path().join("none.crt"), &key).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read --tls-cert"),
            "{missing}"
        );
        let mismatched = Certificate::load(&cert, &other_key).unwrap_err();
        assert!(
            mismatched.to_string().contains("does not go with"),
            "{mismatched}"
        );
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let none = Certificate::load(&empty, &key).unwrap_err();
        assert!(none.to_string().contains("no PEM certificate"), "{none}");
        let key_as_cert = Certificate::load(&cert, &cert).unwrap_err();
        assert!(
            key_as_cert.to_string().contains("cannot read --tls-key"),
            "{key_as_cert}"
        );
    }

    #[test]
    fn a_broken_reload_keeps_the_pair_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        let certificate = Certificate::load(&cert, &key).unwrap();
        let before = certificate.current.load_full();
        std::fs::write(&key, "half a key").unwrap();
        assert!(certificate.reload().is_err());
        assert!(Arc::ptr_eq(&before, &certificate.current.load_full()));
        let (new_cert, new_key) = pair(dir.path(), "c");
        std::fs::copy(new_cert, &cert).unwrap();
        std::fs::copy(new_key, &key).unwrap();
        certificate.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &certificate.current.load_full()));
    }

    #[test]
    fn plain_http_is_told_apart_from_a_handshake() {
        assert!(looks_like_tls(0x16));
        assert!(!looks_like_tls(b'G'));
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{text}"
        );
    }
}
