//! The trusted roots are loaded once. Every Pingora connector used to build its own TLS
//! context, and each parsed the whole CA bundle into its own store: four for the proxy (HTTP/1
//! and HTTP/2, each loading it twice), four more for HTTP health checks and four for mirroring.
//! With vendor patch 6 connectors with the same settings share one context. The test points
//! `SSL_CERT_FILE` at a bundle of its own, counts how often the gateway opens it (inotify),
//! and checks that upstream TLS is still verified against it.

mod support;
use std::time::Duration;
use support::tls::{make_cert, tls_backend};
use support::*;

/// Counts the opens of one file through inotify. Opens and closes are both watched so that
/// two opens are never adjacent events, which inotify would merge into one.
struct OpenCounter(i32);

impl OpenCounter {
    fn watch(path: &std::path::Path) -> Self {
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: plain syscalls on a descriptor this struct owns; the path is NUL-terminated.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0, "inotify_init1 failed");
            let mask = libc::IN_OPEN | libc::IN_CLOSE_NOWRITE | libc::IN_CLOSE_WRITE;
            assert!(libc::inotify_add_watch(fd, c_path.as_ptr(), mask) >= 0);
            OpenCounter(fd)
        }
    }

    /// The opens seen since the watch began.
    fn opens(&self) -> usize {
        let (mut opens, mut buf) = (0, [0u8; 4096]);
        loop {
            // SAFETY: reads into a buffer of the given length.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return opens;
            }
            let mut at = 0;
            while at + 16 <= n as usize {
                let word =
                    |i: usize| u32::from_ne_bytes(buf[at + i..at + i + 4].try_into().unwrap());
                opens += usize::from(word(4) & libc::IN_OPEN != 0);
                at += 16 + word(12) as usize;
            }
        }
    }
}

impl Drop for OpenCounter {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this struct owns, once.
        unsafe { libc::close(self.0) };
    }
}

#[test]
fn the_ca_bundle_is_loaded_once_and_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = make_cert(dir.path(), "backend.test");
    let stranger = make_cert(dir.path(), "stranger.test");
    let (secure, untrusted) = (tls_backend(&trusted), tls_backend(&stranger));
    let plain = Backends::start(&["plain", "shadow"]);
    let bundle = dir.path().join("roots.pem");
    std::fs::write(&bundle, &trusted.pem).unwrap();
    let counter = OpenCounter::watch(&bundle);
    let empty_dir = dir.path().join("no-hashed-certs");
    std::fs::create_dir(&empty_dir).unwrap();

    let gw = Gateway::start_with_env(
        &binary(),
        &format!(
            r#"
listeners: [{{ name: web, address: "{{listen}}" }}]
metrics: {{ address: "{{metrics}}" }}
access_log: off
routes:
  - {{ name: secure, match: {{ path: {{ prefix: /secure }} }}, upstream: secure }}
  - {{ name: stranger, match: {{ path: {{ prefix: /stranger }} }}, upstream: stranger }}
  - {{ name: plain, upstream: plain, mirror: {{ upstream: shadow }} }}
upstreams:
  - {{ name: secure, retry: {{ attempts: 0 }}, tls: {{ sni: backend.test }}, backends: [{{ address: "{secure}" }}] }}
  - {{ name: stranger, retry: {{ attempts: 0 }}, tls: {{ sni: stranger.test }}, backends: [{{ address: "{untrusted}" }}] }}
  - name: plain
    health_check: {{ kind: http, path: /, interval: 100ms }}
    backends: [{{ address: "{}" }}]
  - {{ name: shadow, backends: [{{ address: "{}" }}] }}
"#,
            plain.addr(0),
            plain.addr(1)
        ),
        &[
            ("SSL_CERT_FILE", bundle.to_str().unwrap()),
            ("SSL_CERT_DIR", empty_dir.to_str().unwrap()),
        ],
    );
    let c = client();

    // Every connector has been built: the proxy's, the health checks' and the mirror's.
    assert!(
        poll_until(Duration::from_secs(10), || plain.requests(0) >= 1),
        "the HTTP health check reached its backend"
    );
    assert_eq!(get(&c, &gw.url("/mirrored")).0, 200);
    assert!(
        poll_until(Duration::from_secs(10), || plain.requests(1) >= 1),
        "the mirror copy arrived"
    );

    // The shared context verifies against the bundle, and only against it.
    assert_eq!(get(&c, &gw.url("/secure")), (200, "secure".to_string()));
    assert_eq!(
        get(&c, &gw.url("/stranger")).0,
        502,
        "a certificate outside the bundle"
    );

    let opens = counter.opens();
    eprintln!("the gateway opened SSL_CERT_FILE {opens} times");
    assert!(
        opens >= 1,
        "the gateway never read SSL_CERT_FILE: the test sees nothing"
    );
    assert!(
        opens <= 2,
        "the CA bundle was opened {opens} times: one TLS context per setting reads it (twice: \
         the openssl crate's builder, then Pingora); each further context holds its own copy"
    );
}
