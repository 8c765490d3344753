//! TLS: certificates for HTTPS listeners (chosen by SNI, reloadable) and CA bundles for
//! upstream verification. Every file problem is a config error with its key path.

pub mod upstream;

pub use upstream::UpstreamTls;

use crate::config::model::CertConfig;
use crate::config::PathError;
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::tls::ext::{ssl_add_chain_cert, ssl_use_certificate, ssl_use_private_key};
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::{NameType, SslRef};
use pingora::tls::x509::X509;
use std::sync::Arc;

/// One certificate with its chain, key and the names it serves.
pub struct CertEntry {
    /// Lower-case names; `*.example.com` entries match one extra label.
    pub names: Vec<String>,
    /// Leaf certificate.
    pub cert: X509,
    /// Intermediates.
    pub chain: Vec<X509>,
    /// Private key.
    pub key: PKey<Private>,
}

/// The certificates of one HTTPS listener.
pub struct CertStore {
    entries: Vec<CertEntry>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.names))
            .finish()
    }
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))
}

fn names_of(cert: &X509) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        if let Some(cn) = cert
            .subject_name()
            .entries_by_nid(pingora::tls::nid::Nid::COMMONNAME)
            .next()
            .and_then(|e| e.data().to_string().ok())
        {
            names.push(cn.to_ascii_lowercase());
        }
    }
    names
}

impl CertStore {
    /// Load and check every certificate (errors relative to `certificates`).
    pub fn load(certs: &[CertConfig]) -> Result<Self, Vec<PathError>> {
        let mut errors = Vec::new();
        let mut entries = Vec::new();
        if certs.is_empty() {
            errors.push(PathError::here("at least one certificate is required"));
        }
        for (i, c) in certs.iter().enumerate() {
            let at = |k: &str| format!("[{i}].{k}");
            let chain = read(&c.cert).and_then(|pem| {
                X509::stack_from_pem(&pem)
                    .map_err(|e| format!("`{}` is not a PEM certificate: {e}", c.cert))
            });
            let key = read(&c.key).and_then(|pem| {
                PKey::private_key_from_pem(&pem)
                    .map_err(|e| format!("`{}` is not a PEM private key: {e}", c.key))
            });
            let (mut chain, key) = match (chain, key) {
                (Ok(chain), Ok(key)) if !chain.is_empty() => (chain, key),
                (Ok(_), Ok(_)) => {
                    errors.push(PathError::at(
                        at("cert"),
                        format!("`{}` holds no certificate", c.cert),
                    ));
                    continue;
                }
                (chain, key) => {
                    if let Err(e) = chain {
                        errors.push(PathError::at(at("cert"), e));
                    }
                    if let Err(e) = key {
                        errors.push(PathError::at(at("key"), e));
                    }
                    continue;
                }
            };
            let cert = chain.remove(0);
            let matches = cert
                .public_key()
                .map(|pk| pk.public_eq(&key))
                .unwrap_or(false);
            if !matches {
                errors.push(PathError::at(
                    at("key"),
                    format!("`{}` is not the key of `{}`", c.key, c.cert),
                ));
                continue;
            }
            let names = if c.hosts.is_empty() {
                names_of(&cert)
            } else {
                c.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
            };
            entries.push(CertEntry {
                names,
                cert,
                chain,
                key,
            });
        }
        if errors.is_empty() {
            Ok(CertStore { entries })
        } else {
            Err(errors)
        }
    }

    /// The certificate for an SNI name: exact name, then wildcard, then the first one.
    pub fn select(&self, sni: Option<&str>) -> Option<&CertEntry> {
        let by_name = sni.map(str::to_ascii_lowercase).and_then(|name| {
            let exact = self.entries.iter().find(|e| e.names.contains(&name));
            exact.or_else(|| {
                let parent = name.split_once('.').map(|(_, rest)| rest)?;
                self.entries
                    .iter()
                    .find(|e| e.names.iter().any(|n| n.strip_prefix("*.") == Some(parent)))
            })
        });
        by_name.or_else(|| self.entries.first())
    }
}

/// Load a CA bundle for upstream verification.
pub fn load_ca(path: &str) -> Result<Arc<Box<[X509]>>, String> {
    let pem = read(path)?;
    let certs =
        X509::stack_from_pem(&pem).map_err(|e| format!("`{path}` is not a PEM CA bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!("`{path}` holds no certificate"));
    }
    Ok(Arc::new(certs.into_boxed_slice()))
}

/// Where the live certificates of a listener are found (the gateway's current config).
pub trait CertSource: Send + Sync {
    /// The certificates of listener `listener` in the live config.
    fn certificates(&self, listener: &str) -> Option<Arc<CertStore>>;
}

/// Picks the certificate of each TLS handshake from the live config, so certificates are
/// replaced by a reload.
pub struct SniCertificates {
    source: Arc<dyn CertSource>,
    listener: String,
}

impl SniCertificates {
    /// The resolver of listener `listener`.
    pub fn new(source: Arc<dyn CertSource>, listener: &str) -> Self {
        SniCertificates {
            source,
            listener: listener.to_string(),
        }
    }
}

#[async_trait]
impl TlsAccept for SniCertificates {
    async fn certificate_callback(&self, ssl: &mut SslRef) {
        let Some(store) = self.source.certificates(&self.listener) else {
            log::error!(
                "listener {}: no certificates in the live config",
                self.listener
            );
            return;
        };
        let sni = ssl.servername(NameType::HOST_NAME).map(str::to_string);
        let Some(entry) = store.select(sni.as_deref()) else {
            return;
        };
        let result = ssl_use_certificate(ssl, &entry.cert)
            .and_then(|_| ssl_use_private_key(ssl, &entry.key))
            .and_then(|_| {
                entry
                    .chain
                    .iter()
                    .try_for_each(|c| ssl_add_chain_cert(ssl, c))
            });
        if let Err(e) = result {
            log::error!(
                "listener {}: cannot use certificate for {sni:?}: {e}",
                self.listener
            );
        }
    }
}
