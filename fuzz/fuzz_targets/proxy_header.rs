//! Any bytes as the start of a connection on a PROXY-protocol listener: the reader either
//! returns a header or refuses, never panics, never reads past its bound, and a header it
//! accepts re-encodes to bytes it reads back the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::l4::proxy_protocol::{encode_v1, encode_v2, read_header, Header, MAX_V2_LEN};

fn read(bytes: &[u8]) -> (Result<Header, String>, usize) {
    let mut r = bytes;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let h = rt.block_on(read_header(&mut r)).map_err(|e| e.0);
    (h, bytes.len() - r.len())
}

fuzz_target!(|data: &[u8]| {
    let (h, used) = read(data);
    assert!(used <= 16 + MAX_V2_LEN, "read {used} bytes");
    if let Ok(Header::Proxied { source, destination }) = h {
        for enc in [encode_v1(source, destination), encode_v2(source, destination)] {
            let (again, n) = read(&enc);
            assert_eq!(n, enc.len());
            assert!(matches!(again, Ok(Header::Proxied { .. })));
        }
    }
});
