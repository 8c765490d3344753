//! pingora-core patch 5 (vendor/README.md): a parsed HTTP/1 head has room for the headers a
//! proxy adds, so inserting them does not grow (and rehash) its header maps on every request.
//! Without the patch a head with 3 headers has room for exactly 3.

use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::server::HttpSession as ServerSession;
use pingora::protocols::l4::stream::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Headers portcullis adds to a request on its way upstream, at most (forwarding, id, trace).
const ADDED: usize = 6;

/// A connected loopback pair: (the side we read with Pingora, the side we write raw bytes to).
async fn pair() -> (Stream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (ours, _) = l.accept().await.unwrap();
    (Stream::from(ours), raw)
}

#[tokio::test]
async fn a_parsed_request_takes_added_headers_without_growing() {
    let (stream, mut raw) = pair().await;
    raw.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n")
        .await
        .unwrap();
    let mut s = ServerSession::new(Box::new(stream));
    s.read_request().await.unwrap().expect("a request");
    let req = s.req_header_mut();
    let before = req.headers.capacity();
    assert!(
        before >= 3 + ADDED,
        "room for {before} headers, want 3 + {ADDED}"
    );
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-request-id"] {
        req.insert_header(name, "v").unwrap();
    }
    for name in ["traceparent", "forwarded", "x-forwarded-host"] {
        req.insert_header(name, "v").unwrap();
    }
    assert_eq!(req.headers.len(), 3 + ADDED);
    assert_eq!(req.headers.capacity(), before, "the map grew");
}

#[tokio::test]
async fn a_parsed_response_takes_added_headers_without_growing() {
    let (stream, mut raw) = pair().await;
    raw.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: b\r\n\r\n")
        .await
        .unwrap();
    let mut c = ClientSession::new(Box::new(stream));
    let mut resp = c.read_resp_header_parts().await.unwrap();
    let before = resp.headers.capacity();
    assert!(before >= 2 + 4, "room for {before} headers");
    for name in ["x-request-id", "date", "connection", "set-cookie"] {
        resp.insert_header(name, "v").unwrap();
    }
    assert_eq!(resp.headers.capacity(), before, "the map grew");
}
