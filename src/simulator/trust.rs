//! How the simulator trusts an `https://` gateway: the system's CAs, those
//! and the CAs of `--ca-file` (a private CA), or, for the simulator inside
//! `streamstock all`, its own process's listener.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub enum GatewayTrust {
    /// The system's CAs (plain `http://` needs nothing).
    #[default]
    SystemRoots,
    /// The system's CAs and these (from `--ca-file`).
    WithCa(Vec<CertificateDer<'static>>),
    /// The listener of this very process, reached over loopback: `all`
    /// builds its simulator before anyone could stand in between, and the
    /// certificate names a host, not 127.0.0.1, so there is nothing the
    /// check could add.
    OwnListener,
}

impl GatewayTrust {
    /// The system's CAs, and those of `ca_file` when given.
    pub fn from_ca_file(ca_file: Option<&Path>) -> Result<GatewayTrust, String> {
        let Some(path) = ca_file else {
            return Ok(GatewayTrust::SystemRoots);
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--ca-file {} holds no PEM certificate",
                path.display()
            ));
        }
        Ok(GatewayTrust::WithCa(certs))
    }

    /// An HTTP client that trusts what this says.
    pub fn http_client(&self, timeout: Duration) -> reqwest::Client {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        match self {
            GatewayTrust::SystemRoots => {}
            GatewayTrust::WithCa(certs) => {
                for cert in certs {
                    if let Ok(cert) = reqwest::Certificate::from_der(cert) {
                        builder = builder.add_root_certificate(cert);
                    }
                }
            }
            GatewayTrust::OwnListener => builder = builder.danger_accept_invalid_certs(true),
        }
        builder.build().expect("an HTTP client builds")
    }

    /// The TLS set-up of a `wss://` feed, when the default (the system's
    /// CAs) is not it.
    pub fn websocket_connector(&self) -> Option<tokio_tungstenite::Connector> {
        let GatewayTrust::WithCa(certs) = self else {
            return None;
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        for cert in certs {
            let _ = roots.add(cert.clone());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
    }
}
