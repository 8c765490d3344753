//! TLS and HTTP/2: certificates by SNI, h2 to clients, verified upstream TLS, h2c upstreams
//! with gRPC-style trailers. Certificates are generated when the tests run.

mod support;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use std::net::{SocketAddr, TcpStream};
use support::tls::{make_cert, tls_backend, TestCert};
use support::*;

/// The protocol the server picks when a client offers h2 and http/1.1.
fn negotiated_alpn(addr: SocketAddr, sni: &str) -> Option<Vec<u8>> {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    let tls = b
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect(sni, tcp)
        .unwrap();
    tls.ssl().selected_alpn_protocol().map(<[u8]>::to_vec)
}

/// The subject alternative names of the certificate the server presents for `sni`.
fn presented_names(addr: SocketAddr, sni: &str) -> Vec<String> {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let conn = b.build();
    let tcp = TcpStream::connect(addr).unwrap();
    let tls = conn
        .configure()
        .unwrap()
        .use_server_name_indication(true)
        .verify_hostname(false)
        .connect(sni, tcp)
        .unwrap();
    let cert = tls.ssl().peer_certificate().unwrap();
    cert.subject_alt_names()
        .map(|s| {
            s.iter()
                .filter_map(|n| n.dnsname().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn https_serves_the_certificate_of_each_sni_name_and_speaks_h2() {
    let b = Backends::start(&["app"]);
    let dir = tempfile::tempdir().unwrap();
    let (a, bb) = (
        make_cert(dir.path(), "a.test"),
        make_cert(dir.path(), "b.test"),
    );
    let gw = Gateway::start(&format!(
        r#"
listeners:
  - name: secure
    address: "{{listen}}"
    protocol: https
    tls:
      certificates:
        - {{ cert: "{}", key: "{}" }}
        - {{ cert: "{}", key: "{}" }}
access_log: off
routes: [{{ name: all, upstream: pool }}]
upstreams: [{{ name: pool, backends: [{{ address: "{}" }}] }}]
"#,
        a.cert.display(),
        a.key.display(),
        bb.cert.display(),
        bb.key.display(),
        b.addr(0)
    ));
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    assert_eq!(presented_names(addr, "a.test"), ["a.test"]);
    assert_eq!(presented_names(addr, "b.test"), ["b.test"]);
    assert_eq!(
        presented_names(addr, "unknown.test"),
        ["a.test"],
        "the first certificate is the default"
    );
    assert_eq!(
        negotiated_alpn(addr, "a.test").as_deref(),
        Some(&b"h2"[..]),
        "h2 is offered through ALPN"
    );

    // A real client, verifying both certificates, negotiates HTTP/2 through ALPN.
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(a.pem.as_bytes()).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(bb.pem.as_bytes()).unwrap())
        .resolve("a.test", addr)
        .resolve("b.test", addr)
        .build()
        .unwrap();
    for host in ["a.test", "b.test"] {
        let r = client
            .get(format!("https://{host}:{}/", gw.port))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "{host}");
        assert_eq!(r.headers()["x-backend"], "app");
    }
}

fn upstream_tls_config(backend: SocketAddr, tls: &str) -> String {
    format!(
        r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
access_log: off
routes: [{{ name: all, upstream: secure }}]
upstreams:
  - name: secure
    retry: {{ attempts: 0 }}
    tls: {tls}
    backends: [{{ address: "{backend}" }}]
"#
    )
}

#[test]
fn upstream_tls_verifies_and_fails_clearly_on_a_bad_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let backend_cert = make_cert(dir.path(), "backend.test");
    let stranger = make_cert(dir.path(), "stranger.test");
    let backend = tls_backend(&backend_cert);
    let c = client();

    let ok = Gateway::start(&upstream_tls_config(
        backend,
        &format!(
            "{{ sni: backend.test, ca_file: \"{}\" }}",
            backend_cert.cert.display()
        ),
    ));
    let r = c.get(ok.url("/")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "secure\n");

    let wrong_ca = Gateway::start(&upstream_tls_config(
        backend,
        &format!(
            "{{ sni: backend.test, ca_file: \"{}\" }}",
            stranger.cert.display()
        ),
    ));
    assert_eq!(c.get(wrong_ca.url("/")).send().unwrap().status(), 502);
    assert!(
        poll_until(std::time::Duration::from_secs(5), || wrong_ca
            .stderr()
            .contains("certificate verify failed")),
        "the log says why: {}",
        wrong_ca.stderr()
    );

    let wrong_name = Gateway::start(&upstream_tls_config(
        backend,
        &format!(
            "{{ sni: other.test, ca_file: \"{}\" }}",
            backend_cert.cert.display()
        ),
    ));
    assert_eq!(
        c.get(wrong_name.url("/")).send().unwrap().status(),
        502,
        "the name is verified too"
    );

    let unverified = Gateway::start(&upstream_tls_config(backend, "{ verify: false }"));
    assert_eq!(c.get(unverified.url("/")).send().unwrap().status(), 200);
}

/// A plaintext HTTP/2 (h2c) backend answering like a gRPC server: body, then trailers.
fn h2c_backend(rt: &tokio::runtime::Runtime) -> SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        let mut got = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            got.extend_from_slice(&chunk);
                        }
                        let resp = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let Ok(mut send) = respond.send_response(resp, false) else {
                            return;
                        };
                        let mut reply = b"echo:".to_vec();
                        reply.extend_from_slice(&got);
                        let _ = send.send_data(reply.into(), false);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        trailers.insert("grpc-message", "fine".parse().unwrap());
                        let _ = send.send_trailers(trailers);
                    });
                }
            });
        }
    });
    addr
}

#[test]
fn h2c_end_to_end_passes_grpc_style_trailers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = h2c_backend(&rt);
    let gw = Gateway::start(&format!(
        r#"
listeners: [{{ name: grpc, address: "{{listen}}", http2: true }}]
access_log: off
routes: [{{ name: all, upstream: grpc }}]
upstreams:
  - name: grpc
    http_version: 2
    backends: [{{ address: "{backend}" }}]
"#
    ));
    let port = gw.port;
    let (status, ctype, body, trailers) = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://127.0.0.1:{port}/pkg.Service/Method"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        send.send_data(bytes::Bytes::from_static(b"hello"), true)
            .unwrap();
        let resp = resp.await.unwrap();
        let status = resp.status().as_u16();
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
        let mut recv = resp.into_body();
        let mut body = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.unwrap();
            let _ = recv.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.unwrap().unwrap_or_default();
        (status, ctype, body, trailers)
    });
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/grpc");
    assert_eq!(body, b"echo:hello");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0"),
        "trailers pass through"
    );
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.to_str().unwrap()),
        Some("fine")
    );
}

#[test]
fn bad_certificates_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a.test");
    let other = make_cert(dir.path(), "other.test");
    let check = |tls: &str| {
        let (code, out) = check_config(&format!(
            "listeners:\n  - name: s\n    address: 127.0.0.1:1\n    protocol: https\n    tls: {tls}\nupstreams: []\n"
        ));
        (Some(code), out)
    };
    let (code, err) =
        check("{ certificates: [{ cert: /nonexistent.pem, key: /nonexistent.key }] }");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("listeners[0].tls.certificates[0].cert: cannot read `/nonexistent.pem`"),
        "{err}"
    );
    assert!(
        err.contains("listeners[0].tls.certificates[0].key: cannot read"),
        "{err}"
    );
    let (code, err) = check(&format!(
        "{{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}",
        a.cert.display(),
        other.key.display()
    ));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("listeners[0].tls.certificates[0].key") && err.contains("is not the key of"),
        "{err}"
    );
    let (code, _) = check(&format!(
        "{{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}",
        a.cert.display(),
        a.key.display()
    ));
    assert_eq!(code, Some(0));
}

#[test]
fn a_reload_replaces_certificates() {
    let b = Backends::start(&["app"]);
    let dir = tempfile::tempdir().unwrap();
    let old = make_cert(dir.path(), "a.test");
    let sub = dir.path().join("new");
    std::fs::create_dir(&sub).unwrap();
    let new = make_cert(&sub, "a.test");
    let yaml = |c: &TestCert| {
        format!(
            "listeners: [{{ name: s, address: \"{{listen}}\", protocol: https, tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }} }}]\naccess_log: off\nroutes: [{{ name: all, upstream: p }}]\nupstreams: [{{ name: p, backends: [{{ address: \"{}\" }}] }}]\n",
            c.cert.display(),
            c.key.display(),
            b.addr(0)
        )
    };
    let gw = Gateway::start(&yaml(&old));
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let fingerprint = |addr| {
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        let tls = b
            .build()
            .configure()
            .unwrap()
            .verify_hostname(false)
            .connect("a.test", TcpStream::connect(addr).unwrap())
            .unwrap();
        tls.ssl().peer_certificate().unwrap().to_pem().unwrap()
    };
    let pem_of = |c: &TestCert| X509::from_pem(c.pem.as_bytes()).unwrap().to_pem().unwrap();
    assert_eq!(fingerprint(addr), pem_of(&old));
    gw.write_config(&yaml(&new));
    gw.signal("HUP");
    assert!(
        poll_until(std::time::Duration::from_secs(10), || fingerprint(addr)
            == pem_of(&new)),
        "new handshakes get the new certificate"
    );
}

/// The `x-seen-path` values of the responses read from `s` until it closes.
fn seen_paths(s: &mut impl std::io::Read) -> Vec<String> {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf); // a hang ends at the read timeout, and the paths miss
    String::from_utf8_lossy(&buf)
        .lines()
        .filter_map(|l| l.strip_prefix("x-seen-path: ").map(String::from))
        .collect()
}

/// Pingora waits for each next request on a keep-alive connection by asking the stream
/// whether a read would find bytes (vendor patches 4 and 9). Over TLS those bytes can sit in
/// OpenSSL (the rest of a record), in the listener's read buffer (further records) or in the
/// socket: every case must wake the connection, or the test's reads time out.
#[test]
fn https_keep_alive_serves_pipelined_and_later_requests() {
    use std::io::Write;
    let b = Backends::start(&["app"]);
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "a.test");
    let gw = Gateway::start(&one_route(
        &b,
        &format!(
            r#", protocol: https, http2: false, tls: {{ certificates: [{{ cert: "{}", key: "{}" }}] }}"#,
            cert.cert.display(),
            cert.key.display()
        ),
        "",
        "",
    ));
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.port).parse().unwrap();
    let connect = || {
        let mut c = SslConnector::builder(SslMethod::tls()).unwrap();
        c.set_verify(SslVerifyMode::NONE);
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        c.build()
            .configure()
            .unwrap()
            .verify_hostname(false)
            .connect("a.test", tcp)
            .unwrap()
    };
    let req = |path: &str, last: bool| {
        let close = if last { "Connection: close\r\n" } else { "" };
        format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n{close}\r\n")
    };

    // Three requests in one TLS record.
    let mut s = connect();
    let all = req("/r1", false) + &req("/r2", false) + &req("/r3", true);
    s.write_all(all.as_bytes()).unwrap();
    assert_eq!(seen_paths(&mut s), ["/r1", "/r2", "/r3"], "one record");

    // One record whose first request fills Pingora's first read (4,096 bytes) exactly: the
    // rest of the record stays in OpenSSL. (Pingora reads on while it proxies, to notice a
    // client that goes away, and keeps what it reads as the next request's start, so this
    // passes without patch 9's SSL_has_pending check too; the check is for bytes no read
    // has taken yet.)
    let mut s = connect();
    let head = "GET /p1 HTTP/1.1\r\nHost: a.test\r\nx-pad: ";
    let pad = "p".repeat(4096 - head.len() - 4);
    let all = format!("{head}{pad}\r\n\r\n") + &req("/p2", false) + &req("/p3", true);
    s.write_all(all.as_bytes()).unwrap();
    assert_eq!(
        seen_paths(&mut s),
        ["/p1", "/p2", "/p3"],
        "bytes left in OpenSSL"
    );

    // Three records sent at once.
    let mut s = connect();
    for (p, last) in [("/s1", false), ("/s2", false), ("/s3", true)] {
        s.write_all(req(p, last).as_bytes()).unwrap();
    }
    assert_eq!(seen_paths(&mut s), ["/s1", "/s2", "/s3"], "three records");

    // A request after the connection has been idle.
    let mut s = connect();
    s.write_all(req("/t1", false).as_bytes()).unwrap();
    let first = String::from_utf8_lossy(&read_response(&mut s)).into_owned();
    assert!(
        first.starts_with("HTTP/1.1 200") && first.contains("x-seen-path: /t1"),
        "{first}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300)); // idle on purpose
    s.write_all(req("/t2", true).as_bytes()).unwrap();
    assert_eq!(seen_paths(&mut s), ["/t2"], "after an idle pause");
}
