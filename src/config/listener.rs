//! The `listeners` section: sockets, their protocol, and per-listener client settings.

use super::model::FilterSpec;
use serde::Deserialize;

/// A socket clients connect to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name (used in logs and metrics).
    pub name: String,
    /// `ip:port` to bind, e.g. `0.0.0.0:8080` or `[::]:8080`.
    pub address: String,
    /// `http` (default), `https`, or `tcp` (L4 proxying to `upstream`).
    #[serde(default)]
    pub protocol: Protocol,
    /// Certificates, for `https` (required there, refused elsewhere).
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// HTTP/2 to clients: for `https`, offered through ALPN (default true); for `http`,
    /// accepted with prior knowledge, h2c (default false).
    #[serde(default)]
    pub http2: Option<bool>,
    /// Request-path normalisation (see [`super::client::PathOptions`]).
    #[serde(default)]
    pub path: super::client::PathOptions,
    /// Client timeouts and size limits (see [`super::client::ClientConfig`]).
    #[serde(default)]
    pub client: super::client::ClientConfig,
    /// Client address and forwarded headers (see [`super::client::ForwardedConfig`]).
    #[serde(default)]
    pub forwarded: super::client::ForwardedConfig,
    /// `tcp` listeners: the upstream every connection goes to (required there only).
    #[serde(default)]
    pub upstream: Option<String>,
    /// `tcp` listeners: limits and timeouts (see [`super::tcp::TcpOptions`]).
    #[serde(default)]
    pub tcp: Option<super::tcp::TcpOptions>,
    /// `tcp` listeners: filters with only `accept_backend`/`on_outcome` hooks (a circuit breaker).
    #[serde(default)]
    pub filters: Vec<FilterSpec>,
    /// Accept a PROXY protocol header from trusted peers (any protocol).
    #[serde(default)]
    pub proxy_protocol: Option<super::tcp::ProxyAcceptConfig>,
    /// The read and write buffers of each client connection (see [`BufferConfig`]).
    #[serde(default)]
    pub buffers: BufferConfig,
}

/// Bytes of the buffers each client connection holds below HTTP and TLS (Pingora's L4
/// buffers), for as long as it is open, idle or not. 0 = unbuffered.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Read buffer, 0-1048576 (0 = unbuffered). Default: 0 for `http` and `tcp` (HTTP and
    /// the TCP proxy read into buffers of their own; measured: no CPU cost, 26 instead of 91
    /// KiB per idle connection), 65536 for `https` (TLS reads records in small pieces;
    /// Pingora's default).
    #[serde(default)]
    pub read: Option<usize>,
    /// Write buffer. Default: 1460 (one Ethernet segment, as Pingora).
    #[serde(default = "default_write_buffer")]
    pub write: usize,
}

/// A listener without `buffers` gets the same defaults as one with `buffers: {}` (a derived
/// `Default` would make its write buffer 0: every response header and body would then be
/// sent apart, one more send and TCP segment per response).
impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            read: None,
            write: default_write_buffer(),
        }
    }
}

impl BufferConfig {
    /// The read buffer for a listener of `protocol`.
    pub fn read_for(&self, protocol: Protocol) -> usize {
        self.read.unwrap_or(match protocol {
            Protocol::Https => 64 * 1024,
            Protocol::Http | Protocol::Tcp => 0,
        })
    }
}

fn default_write_buffer() -> usize {
    1460
}

/// The certificates of an HTTPS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// One or more certificates, chosen by the SNI name a client sends; the first one is the
    /// default for clients without SNI or with an unknown name.
    pub certificates: Vec<CertConfig>,
}

/// One certificate and its key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    /// PEM file: the certificate, then its chain.
    pub cert: String,
    /// PEM private key file.
    pub key: String,
    /// Names this certificate serves (`*.example.com` allowed). Default: the certificate's
    /// DNS subject alternative names (or its common name).
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// Listener protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Plain HTTP/1.1 (and h2c with prior knowledge).
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
    /// Raw TCP proxying.
    Tcp,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `buffers`, with `buffers: {}` and with only `read`, the write buffer is the
    /// documented 1460 bytes.
    #[test]
    fn a_missing_buffers_key_gets_the_documented_defaults() {
        let base = "{ name: web, address: \"127.0.0.1:8080\"";
        for extra in ["", ", buffers: {}", ", buffers: { read: 4096 }"] {
            let l: ListenerConfig = serde_yaml::from_str(&format!("{base}{extra} }}")).unwrap();
            assert_eq!(l.buffers.write, 1460, "{extra:?}");
        }
        let l: ListenerConfig = serde_yaml::from_str(&format!("{base} }}")).unwrap();
        assert_eq!(l.buffers.read_for(Protocol::Http), 0);
        assert_eq!(l.buffers.read_for(Protocol::Https), 65536);
    }
}
