//! pingora-core patch 13 (vendor/README.md): an upstream response whose whole body arrived
//! with its header is held in a buffer of its own size. Pingora allocated a 64 KiB body
//! buffer for every response with a `Content-Length`, so each small response held 64 KiB
//! while it was proxied (and, through the bytes that share it, until the client took them).
//! Pingora's HTTP/1 client reads from a real loopback backend here; the counting allocator
//! records the largest allocation made while the response is read.

use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

#[path = "support/alloc_count.rs"]
mod alloc_count;
use alloc_count::take_largest;

/// A backend that reads one request head and answers with `parts`, written one by one with a
/// pause between them (so that the client has to read again for each later part).
fn backend(parts: Vec<Vec<u8>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "the client closed before its request head");
            head.extend_from_slice(&b[..n]);
        }
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            s.write_all(p).unwrap();
        }
        // Hold the connection until the client is done.
        let _ = s.read(&mut b);
    });
    addr
}

/// The body read through Pingora's client, and the largest allocation made reading it.
fn fetch(addr: std::net::SocketAddr) -> (Vec<u8>, usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream: pingora::protocols::l4::stream::Stream = tcp.into();
        let mut session = HttpSession::new(Box::new(stream));
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("host", "b.test").unwrap();
        session.write_request_header(Box::new(req)).await.unwrap();
        take_largest();
        session.read_response().await.unwrap();
        let mut body = Vec::new();
        while let Some(chunk) = session.read_body_bytes().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        (body, take_largest())
    })
}

#[test]
fn a_body_that_came_with_its_header_gets_a_buffer_of_its_size() {
    let addr = backend(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world".to_vec(),
    ]);
    let (body, largest) = fetch(addr);
    assert_eq!(body, b"hello world");
    assert!(
        largest < 16 * 1024,
        "largest allocation while reading: {largest} bytes"
    );
}

#[test]
fn a_body_that_needs_more_reads_arrives_whole() {
    let tail: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let first = b"HTTP/1.1 200 OK\r\nContent-Length: 100005\r\n\r\nstart".to_vec();
    let addr = backend(vec![first, tail.clone()]);
    let (body, _) = fetch(addr);
    assert_eq!(body.len(), 100_005);
    assert_eq!(&body[..5], b"start");
    assert!(body[5..] == tail[..], "the body's bytes changed");
}
