//! TLS test helpers: self-signed certificates made when the tests run, and a blocking
//! HTTPS/1.1 backend.

use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::X509;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pem: String,
}

/// A self-signed certificate for `name` (its own subject, so trust stores tell them apart).
pub fn make_cert(dir: &Path, name: &str) -> TestCert {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let c = params.self_signed(&key_pair).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, c.pem()).unwrap();
    std::fs::write(&key, key_pair.serialize_pem()).unwrap();
    TestCert {
        cert,
        key,
        pem: c.pem(),
    }
}

/// A blocking HTTPS/1.1 backend answering `secure\n` with the given certificate.
pub fn tls_backend(cert: &TestCert) -> SocketAddr {
    let mut acc = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acc.set_certificate(&X509::from_pem(&std::fs::read(&cert.cert).unwrap()).unwrap())
        .unwrap();
    acc.set_private_key(&PKey::private_key_from_pem(&std::fs::read(&cert.key).unwrap()).unwrap())
        .unwrap();
    let acceptor = std::sync::Arc::new(acc.build());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let acceptor = acceptor.clone();
            std::thread::spawn(move || {
                let Ok(tls) = acceptor.accept(stream) else {
                    return;
                };
                let mut reader = BufReader::new(tls);
                loop {
                    let mut line = String::new();
                    let mut length = 0usize;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nx-backend: secure\r\n\r\nsecure\n";
                    if reader.get_mut().write_all(resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}
