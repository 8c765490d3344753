//! pingora-http patch 1 (vendor/README.md): a header inserted under a lowercase `&'static str`
//! (or a standard `http::HeaderName`) is stored without parsing and copying its name. Before the patch,
//! every insert under a name outside http's standard list allocated twice: once to parse the
//! name into a `HeaderName`, once to share it with the map that keeps the name's case.
//! Whatever the path, the stored names, the case on the wire and the lookups are unchanged.

use http::header::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

#[path = "support/alloc_count.rs"]
mod alloc_count;
use alloc_count::allocations;

/// A request head that keeps header case (as a parsed one does), with room for `n` headers.
fn request(n: usize) -> RequestHeader {
    RequestHeader::build("GET", b"/a", Some(n)).unwrap()
}

fn wire(req: &RequestHeader) -> String {
    let mut buf = Vec::new();
    req.header_to_h1_wire(&mut buf);
    String::from_utf8(buf).unwrap()
}

#[test]
fn inserting_under_a_static_lowercase_name_allocates_nothing() {
    let mut req = request(16);
    let mut resp = ResponseHeader::build(200, Some(16)).unwrap();
    let value = HeaderValue::from_static("v");
    // Warm up: thread locals, and the maps' room for a second value under one name.
    req.insert_header("x-warm", value.clone()).unwrap();
    req.append_header("x-warm", value.clone()).unwrap();
    resp.insert_header("x-warm", value.clone()).unwrap();
    let before = allocations();
    for name in [
        "x-request-id",
        "traceparent",
        "x-forwarded-for",
        "x-forwarded-proto",
    ] {
        req.insert_header(name, value.clone()).unwrap();
        resp.insert_header(name, value.clone()).unwrap();
    }
    req.append_header("x-forwarded-for", value.clone()).unwrap();
    req.insert_header(http::header::CONNECTION, value.clone())
        .unwrap();
    assert_eq!(allocations() - before, 0, "allocations for 10 inserts");

    // The counter does count: a name with capitals is parsed and copied, as before.
    let before = allocations();
    req.insert_header("X-Mixed-Case", value.clone()).unwrap();
    assert!(
        allocations() > before,
        "a mixed-case name allocated nothing"
    );
}

#[test]
fn every_kind_of_name_is_stored_and_sent_as_before() {
    let mut req = request(8);
    req.insert_header("x-request-id", "1").unwrap();
    req.insert_header("X-Mixed-Case", "2").unwrap();
    req.insert_header("content-type", "text/plain").unwrap();
    req.insert_header(HeaderName::from_static("x-custom"), "3")
        .unwrap();
    req.insert_header(http::header::CONNECTION, "close")
        .unwrap();
    req.append_header("x-request-id", "4").unwrap();
    req.insert_header("traceparent", "5").unwrap();

    let got: Vec<_> = req.headers.get_all("x-request-id").iter().collect();
    assert_eq!(got, ["1", "4"]);
    assert_eq!(req.headers["x-mixed-case"], "2");
    assert_eq!(req.headers["Content-Type"], "text/plain");
    assert_eq!(req.headers["x-custom"], "3");
    assert_eq!(req.headers["connection"], "close");
    assert_eq!(
        wire(&req),
        "x-request-id: 1\r\nx-request-id: 4\r\nX-Mixed-Case: 2\r\ncontent-type: text/plain\r\n\
         x-custom: 3\r\nConnection: close\r\ntraceparent: 5\r\n"
    );

    // A name no header may have is still refused, whatever the path.
    assert!(req.insert_header("bad name", "x").is_err());
    assert!(req.insert_header("", "x").is_err());
    assert!(req.insert_header("caf\u{e9}", "x").is_err());
    assert_eq!(req.headers.len(), 7);
}

#[test]
fn a_head_without_case_takes_static_names_too() {
    let mut req = RequestHeader::build_no_case("GET", b"/a", None).unwrap();
    req.insert_header("x-request-id", "1").unwrap();
    req.insert_header("Accept", "*/*").unwrap();
    assert_eq!(wire(&req), "x-request-id: 1\r\naccept: */*\r\n");
}
