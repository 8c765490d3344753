//! TLS from the gateway to an upstream's backends.

use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;

/// TLS to an upstream's backends.
#[derive(Clone)]
pub struct UpstreamTls {
    /// SNI (and verified name).
    pub sni: String,
    /// Verify chain and name.
    pub verify: bool,
    /// Where the CA bundle came from (for comparisons).
    pub ca_file: Option<String>,
    /// CA bundle, when not the default store.
    pub ca: Option<Arc<Box<[pingora::tls::x509::X509]>>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, o: &Self) -> bool {
        self.sni == o.sni && self.verify == o.verify && self.ca_file == o.ca_file
    }
}

impl Eq for UpstreamTls {}

impl UpstreamTls {
    /// Check and load an upstream's `tls` section (the CA file is read here).
    pub fn compile(
        t: &crate::config::model::UpstreamTlsConfig,
    ) -> Result<Self, crate::config::PathError> {
        use crate::config::PathError;
        if t.verify && t.sni.as_deref().is_none_or(str::is_empty) {
            return Err(PathError::at(
                "sni",
                "set the name the backends' certificates carry (or `verify: false`)",
            ));
        }
        let ca = match &t.ca_file {
            Some(path) => Some(super::load_ca(path).map_err(|e| PathError::at("ca_file", e))?),
            None => None,
        };
        Ok(UpstreamTls {
            sni: t.sni.clone().unwrap_or_default(),
            verify: t.verify,
            ca_file: t.ca_file.clone(),
            ca,
        })
    }

    /// Apply to a peer.
    pub fn apply(&self, peer: &mut HttpPeer) {
        peer.scheme = pingora::upstreams::peer::Scheme::HTTPS;
        peer.sni = self.sni.clone();
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca = self.ca.clone();
    }
}
