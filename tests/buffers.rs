//! The `buffers` of a listener (Pingora's L4 read and write buffers per client connection):
//! every size, unbuffered included, carries large request bodies byte for byte over
//! keep-alive connections, and a size out of bounds is a config error with its key path.

mod support;
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
