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
    /// Apply to a peer.
    pub fn apply(&self, peer: &mut HttpPeer) {
        peer.scheme = pingora::upstreams::peer::Scheme::HTTPS;
        peer.sni = self.sni.clone();
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca = self.ca.clone();
    }
}
