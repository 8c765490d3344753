//! Response compression per route (Pingora's compression module): gzip, brotli and zstd
//! negotiated from `Accept-Encoding`, a media-type list, a minimum size, never twice, and
//! routes without `compression` untouched. A small backend in the test serves known bodies.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use support::Gateway;

/// A backend that answers by path: `/text` 20 KB of text, `/small` 100 bytes of text,
/// `/png` 20 KB as image/png, `/gz` a gzip-encoded text body.
fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

fn text(n: usize) -> Vec<u8> {
    let line = b"portcullis compresses text that repeats itself, line after line.\n";
    line.iter().copied().cycle().take(n).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn serve(s: std::net::TcpStream) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
        }
        let last = path.rsplit('/').next().unwrap_or("");
        let (ct, extra, body) = match last {
            "small" => ("text/plain", "", text(100)),
            "png" => ("image/png", "", text(20_000)),
            "gz" => (
                "text/plain",
                "content-encoding: gzip\r\n",
                gzip(&text(20_000)),
            ),
            _ => ("text/html; charset=utf-8", "", text(20_000)),
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\n{extra}content-length: {}\r\n\r\n",
            body.len()
        );
        if w.write_all(head.as_bytes())
            .and_then(|()| w.write_all(&body))
            .is_err()
        {
            return;
        }
    }
}

fn config(addr: SocketAddr) -> String {
    format!(
        r#"
listeners:
  - {{ name: web, address: "{{listen}}" }}
access_log: off
routes:
  - name: packed
    match: {{ path: {{ prefix: /packed }} }}
    upstream: pool
    compression: {{ min_size: 1024, content_types: ["text/"] }}
  - name: plain
    upstream: pool
upstreams:
  - {{ name: pool, backends: [{{ address: "{addr}" }}] }}
"#
    )
}

/// GET `path` with `Accept-Encoding: accept` (none when empty): status, content-encoding,
/// raw body bytes. reqwest decodes nothing here (no compression features enabled).
fn fetch(g: &Gateway, path: &str, accept: &str) -> (u16, String, Vec<u8>) {
    let c = support::client();
    let mut req = c.get(g.url(path));
    if !accept.is_empty() {
        req = req.header("accept-encoding", accept);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let ce = r
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ce, r.bytes().unwrap().to_vec())
}

fn decode(ce: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match ce {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            if let Err(e) = brotli::Decompressor::new(body, 4096).read_to_end(&mut out) {
                panic!(
                    "br: {e} after {} bytes out (of {}): {} bytes, starting {:02x?}",
                    out.len(),
                    out == text(20_000)[..out.len()],
                    body.len(),
                    &body[..body.len().min(16)]
                );
            }
        }
        "zstd" => out = zstd::decode_all(body).unwrap(),
        _ => out = body.to_vec(),
    }
    out
}

#[test]
fn each_encoding_is_negotiated_and_decodes_to_the_original() {
    let g = Gateway::start(&config(backend()));
    let want = text(20_000);
    for (accept, ce) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("br;q=1, gzip;q=0.5", "br"),
        ("gzip;q=0.2, zstd", "zstd"),
        ("br;q=0, gzip", "gzip"),
    ] {
        let (status, got_ce, body) = fetch(&g, "/packed/text", accept);
        assert_eq!(
            (status, got_ce.as_str()),
            (200, ce),
            "Accept-Encoding: {accept}"
        );
        assert!(body.len() < want.len() / 4, "{ce}: {} bytes", body.len());
        assert_eq!(decode(ce, &body), want, "{ce} decodes to the original");
    }
}

#[test]
fn only_what_is_listed_large_enough_and_not_yet_encoded() {
    let g = Gateway::start(&config(backend()));
    // No Accept-Encoding: as it is.
    let (_, ce, body) = fetch(&g, "/packed/text", "");
    assert_eq!((ce.as_str(), body.len()), ("", 20_000));
    // Below min_size, or a media type not listed: as it is.
    let (_, ce, body) = fetch(&g, "/packed/small", "gzip");
    assert_eq!((ce.as_str(), body.len()), ("", 100));
    let (_, ce, body) = fetch(&g, "/packed/png", "gzip");
    assert_eq!((ce.as_str(), body.len()), ("", 20_000));
    // Already gzip and the client takes gzip: passed through, not compressed twice.
    let (_, ce, body) = fetch(&g, "/packed/gz", "gzip, br");
    assert_eq!(ce, "gzip");
    assert_eq!(body, gzip(&text(20_000)));
    // A route without `compression`: never compressed.
    let (_, ce, body) = fetch(&g, "/text", "gzip, br, zstd");
    assert_eq!((ce.as_str(), body.len()), ("", 20_000));
}

#[test]
fn bad_compression_settings_are_located() {
    let yaml = config("127.0.0.1:9".parse().unwrap()).replace(
        "compression: { min_size: 1024, content_types: [\"text/\"] }",
        "compression: { level: 12, algorithms: [gzip, lz4] }",
    );
    let (code, out) = support::check_config(&yaml);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("routes[0].compression.algorithms[1]: unknown variant `lz4`"),
        "{out}"
    );
    let yaml = yaml.replace("algorithms: [gzip, lz4]", "algorithms: [gzip]");
    let (code, out) = support::check_config(&yaml);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("routes[0].compression.level: must be between 1 and 9, got 12"),
        "{out}"
    );
}
