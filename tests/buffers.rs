//! The `buffers` of a listener (Pingora's L4 read and write buffers per client connection):
//! every size, unbuffered included, carries large request bodies byte for byte over
//! keep-alive connections, and a size out of bounds is a config error with its key path.

mod support;
use std::time::Duration;
use support::*;

fn config(b: &Backends, read: usize, write: usize) -> String {
    one_route(
        b,
        &format!(", buffers: {{ read: {read}, write: {write} }}"),
        "",
        "",
    )
}

#[test]
fn every_buffer_size_carries_bodies_byte_for_byte() {
    let b = Backends::start(&["a"]);
    let mut expected = 0u64;
    for (read, write) in [(0, 0), (4096, 1460), (16384, 0), (65536, 1460)] {
        let gw = Gateway::start(&config(&b, read, write));
        let c = client();
        for i in 0..3u32 {
            let body: Vec<u8> = (0..(1 << 20) + i * 4099)
                .map(|j| (j * 31 + i) as u8)
                .collect();
            expected += u64::from(crc32fast::hash(&body));
            let r = c.post(gw.url("/upload")).body(body).send().expect("answer");
            assert_eq!(r.status(), 200, "read {read}, write {write}");
            assert_eq!(r.text().unwrap(), "a\n");
        }
        for _ in 0..20 {
            assert_eq!(
                get(&c, &gw.url("/")),
                (200, "a".to_string()),
                "read {read}, write {write}"
            );
        }
    }
    assert_eq!(
        b.state(0).body_crcs(),
        expected,
        "every body arrived intact"
    );
}

#[test]
fn a_buffer_out_of_bounds_is_a_config_error() {
    let b = Backends::start(&["a"]);
    let (code, out) = check_config(&config(&b, 2 << 20, 1460));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("listeners[0].buffers.read: must be between 0 and 1048576, got 2097152"),
        "{out}"
    );
}

/// Segments that carried data to `s` so far (Linux `tcpi_data_segs_in`).
fn data_segments_in(s: &std::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: `info` is a plain C struct of integers and `len` holds its size.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_data_segs_in
}

/// The data segments 20 keep-alive responses of the listener `buffers` took to arrive.
fn segments_for_20_responses(b: &Backends, listener_extra: &str) -> u32 {
    use std::io::Write;
    let gw = Gateway::start(&one_route(b, listener_extra, "", ""));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ask = |s: &mut std::net::TcpStream| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        let r = parse_raw(&read_response(s));
        assert_eq!((r.status, r.body.as_str()), (200, "a\n"));
    };
    ask(&mut s); // the first response also warms the upstream connection
    let before = data_segments_in(&s);
    for _ in 0..20 {
        ask(&mut s);
    }
    data_segments_in(&s) - before
}

/// A small response's header and body leave the gateway together, in one TCP segment, with
/// the default buffers (a listener without a `buffers` key once got a write buffer of 0 and
/// sent them apart: one more send and segment per response, about 7% of the CPU per request).
/// Unbuffered writes, still available as `write: 0`, send them apart.
#[test]
fn a_small_response_leaves_in_one_segment() {
    let b = Backends::start(&["a"]);
    assert_eq!(segments_for_20_responses(&b, ""), 20, "default buffers");
    assert_eq!(
        segments_for_20_responses(&b, ", buffers: { read: 0, write: 1460 }"),
        20,
        "write: 1460"
    );
    // Unbuffered, each response takes at least two segments (header, body); how many more
    // depends on how Pingora splits its writes (CI once saw 41 of 40).
    let unbuffered = segments_for_20_responses(&b, ", buffers: { write: 0 }");
    assert!(
        unbuffered >= 40,
        "write: 0 sends the header and the body apart: {unbuffered} segments"
    );
}
