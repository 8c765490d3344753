//! Route matching on hostile request heads, after the same normalisation the proxy applies:
//! never panics, and the route found for a normalised path is stable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use once_cell::sync::Lazy;
use pingora::http::RequestHeader;
use portcullis::request::path::{normalize, Normalized, PathOptions};
use portcullis::runtime::Snapshot;

static SNAPSHOT: Lazy<Snapshot> = Lazy::new(|| {
    let text = include_str!("../../conf/portcullis.yaml");
    portcullis::gateway::compile_text(std::path::Path::new("portcullis.yaml"), text)
        .expect("the demo config compiles")
});

fuzz_target!(|data: &[u8]| {
    // method \n host \n path \n header-name \n header-value
    let mut parts = data.splitn(5, |&b| b == b'\n');
    let method = std::str::from_utf8(parts.next().unwrap_or(b"GET")).unwrap_or("GET");
    let host = parts.next().unwrap_or(b"");
    let path = parts.next().unwrap_or(b"/");
    let (name, value) = (parts.next().unwrap_or(b""), parts.next().unwrap_or(b""));
    let path = match normalize(path, PathOptions::default()) {
        Ok(Normalized::Unchanged) => path.to_vec(),
        Ok(Normalized::Rewritten(p) | Normalized::Redirect(p)) => p,
        Err(_) => return,
    };
    let Ok(mut req) = RequestHeader::build(method, &path, None) else {
        return;
    };
    let _ = req.insert_header("host", host);
    if let Ok(name) = http::HeaderName::from_bytes(name) {
        let _ = req.insert_header(name, value);
    }
    let router = &SNAPSHOT.router;
    let first = router.find(&req);
    assert_eq!(first, router.find(&req));
});
