//! Any text through the config reader and compiler (what `-t` and a reload run): errors are
//! fine, a panic, an abort or a stack overflow is not.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = portcullis::gateway::compile_text(std::path::Path::new("fuzz.yaml"), text);
    }
});
