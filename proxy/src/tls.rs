//! TLS for the AMQP listener (amqps) and the management API: the
//! certificate chain and private key from PEM files, TLS 1.2 and 1.3, and
//! optionally a CA whose client certificates are verified (and may log in
//! with EXTERNAL: `identity`).
//!
//! The files are looked at every few seconds; when one changes they are
//! read again and new connections get the new certificate, while open ones
//! keep theirs. A file that does not load is logged and the last good
//! certificate stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::Config;

/// How often the certificate files are looked at.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// What the TLS settings name.
#[derive(Debug, Clone)]
pub struct Files {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// Client certificates are verified against it (and asked for).
    pub ca: Option<PathBuf>,
    /// With `ca`: a client without a certificate is refused.
    pub require_client_certificate: bool,
}

impl Files {
    /// The files the configuration names, or None without a certificate.
    pub fn from_config(config: &Config) -> Option<Files> {
        if config.tls_certificate.is_empty() {
            return None;
        }
        Some(Files {
            certificate: config.tls_certificate.clone().into(),
            key: config.tls_key.clone().into(),
            ca: (!config.tls_ca.is_empty()).then(|| config.tls_ca.clone().into()),
            require_client_certificate: config.tls_fail_if_no_peer_cert,
        })
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut stamps = vec![modified(&self.certificate), modified(&self.key)];
        stamps.extend(self.ca.as_deref().map(modified));
        stamps
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS settings refused: {0}")]
    Rustls(String),
}

/// The TLS settings in force, replaced when the files change.
pub struct Tls {
    files: Files,
    current: RwLock<Loaded>,
}

struct Loaded {
    server: Arc<ServerConfig>,
    /// How this gateway checks other gateways' management APIs over HTTPS:
    /// against `tls_ca` and the certificates of its own chain.
    peers: Arc<ClientConfig>,
    stamps: Vec<Option<SystemTime>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: Files) -> Result<Arc<Tls>, TlsError> {
        let loaded = load(&files)?;
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new(loaded),
        }))
    }

    // A panic elsewhere while holding the lock leaves the settings whole
    // (each write replaces a value): a poisoned lock is still usable.
    fn loaded(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn loaded_mut(&self) -> std::sync::RwLockWriteGuard<'_, Loaded> {
        self.current.write().unwrap_or_else(|p| p.into_inner())
    }

    /// An acceptor with the settings in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.loaded().server.clone())
    }

    /// A connector to other gateways' management APIs over HTTPS.
    pub fn peer_connector(&self) -> TlsConnector {
        TlsConnector::from(self.loaded().peers.clone())
    }

    /// Reads the files again if they changed since the last read; says
    /// whether the settings were replaced.
    pub fn reload_if_changed(&self) -> bool {
        let stamps = self.files.stamps();
        if self.loaded().stamps == stamps {
            return false;
        }
        match load(&self.files) {
            Ok(loaded) => {
                *self.loaded_mut() = loaded;
                tracing::info!(certificate = %self.files.certificate.display(), "TLS certificate files changed; new connections use them.");
                true
            }
            Err(error) => {
                // Not again until they change once more.
                self.loaded_mut().stamps = stamps;
                tracing::error!(%error, "TLS certificate files changed but do not load; the previous certificate stays in use.");
                false
            }
        }
    }

    /// Looks at the files every few seconds for as long as `tls` is held
    /// elsewhere.
    pub async fn watch(tls: std::sync::Weak<Tls>) {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let Some(tls) = tls.upgrade() else { return };
            tls.reload_if_changed();
        }
    }
}

fn file_error(path: &Path, reason: String) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason,
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| file_error(path, e.to_string()))
}

fn load(files: &Files) -> Result<Loaded, TlsError> {
    // Stamped before reading: a change while reading is read again.
    let stamps = files.stamps();
    let server = server_config(files)?;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certificates(&files.certificate)?);
    if let Some(ca) = &files.ca {
        roots.add_parsable_certificates(certificates(ca)?);
    }
    let peers = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Loaded {
        server: Arc::new(server),
        peers: Arc::new(peers),
        stamps,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(files: &Files) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.certificate)?;
    if chain.is_empty() {
        return Err(file_error(
            &files.certificate,
            "no PEM certificate in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&files.key, e.to_string()))?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &files.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certificates(ca)?);
            if added == 0 {
                return Err(file_error(ca, "no usable CA certificate in it".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(format!("certificate and key: {e}")))
}

/// Who a verified client certificate names: its subject's common name and
/// its whole distinguished name (RFC 4514), as RabbitMQ's
/// `ssl_cert_login_from` takes either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub common_name: Option<String>,
    pub distinguished_name: String,
}

/// The identity in a client's leaf certificate (None if it does not parse).
pub fn identity(leaf: &CertificateDer<'_>) -> Option<PeerIdentity> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref()).ok()?;
    let subject = &cert.tbs_certificate.subject;
    let common_name = subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == x509_cert::der::oid::db::rfc4519::CN)
        .find_map(|atv| attribute_text(&atv.value));
    Some(PeerIdentity {
        common_name,
        distinguished_name: subject.to_string(),
    })
}

fn attribute_text(value: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    value
        .decode_as::<Utf8StringRef<'_>>()
        .map(|s| s.as_str().to_owned())
        .or_else(|_| {
            value
                .decode_as::<PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_owned())
        })
        .or_else(|_| {
            value
                .decode_as::<Ia5StringRef<'_>>()
                .map(|s| s.as_str().to_owned())
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/certs")
            .join(name)
    }

    #[test]
    fn a_client_certificate_names_its_common_name_and_distinguished_name() {
        let der = CertificateDer::from_pem_file(cert("client.pem")).unwrap();
        let identity = identity(&der).expect("parses");
        assert_eq!(identity.common_name.as_deref(), Some("tls-user"));
        assert_eq!(
            identity.distinguished_name,
            "CN=tls-user,O=amqp-gateway tests"
        );
    }

    #[test]
    fn files_that_do_not_load_are_named_in_the_error() {
        let files = Files {
            certificate: cert("server.pem"),
            key: cert("missing.key"),
            ca: None,
            require_client_certificate: false,
        };
        let error = Tls::load(files).unwrap_err().to_string();
        assert!(error.contains("missing.key"), "{error}");
        let files = Files {
            certificate: cert("server.pem"),
            key: cert("client.key"),
            ca: None,
            require_client_certificate: false,
        };
        let error = Tls::load(files).unwrap_err().to_string();
        assert!(
            error.contains("certificate and key"),
            "a key of another certificate: {error}"
        );
    }
}
