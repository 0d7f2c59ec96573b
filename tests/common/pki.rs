//! Test certificates: a CA of its own and a server certificate it signed.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

/// A CA and a server certificate it signed, for `localhost` and 127.0.0.1.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("StreamStock test CA {name}"));
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        Pki { dir }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> String {
        self.file("ca.pem").display().to_string()
    }

    /// Copies the server's certificate and key into `dir` (the key private
    /// to its owner, as PostgreSQL demands); returns their paths.
    #[allow(dead_code)] // not every test uses it
    pub fn install_server_files(&self, dir: &Path) -> (String, String) {
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        std::fs::copy(self.file("server.pem"), &cert).unwrap();
        std::fs::copy(self.file("server.key"), &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        (cert.display().to_string(), key.display().to_string())
    }
}
