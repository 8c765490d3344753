//! Release builds of the `portcullis` binary on Linux link its functions in the order of
//! `link/symbol-order.txt`: the functions a training run executed, the busiest first (made by
//! `scripts/symbol-order.sh`; docs/performance.md, "Resting memory: huge pages off, code
//! layout, memory released when idle"). The code a gateway runs then sits on a few
//! contiguous pages instead of being spread over the whole text segment, which takes
//! megabytes off its resident memory. A symbol the file names that the binary lacks (renamed
//! code, another toolchain) is skipped; one the file lacks is linked after the listed ones,
//! as before. `PORTCULLIS_SYMBOL_ORDER=off` turns it off, e.g. for a linker other than LLD
//! (rustc's default linker on x86_64 Linux), which may not know the option.

fn main() {
    println!("cargo:rerun-if-changed=link/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=PORTCULLIS_SYMBOL_ORDER");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let off = std::env::var("PORTCULLIS_SYMBOL_ORDER").is_ok_and(|v| v == "off");
    if !release || !linux || off {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = std::path::Path::new(&dir).join("link/symbol-order.txt");
    println!(
        "cargo:rustc-link-arg-bin=portcullis=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bin=portcullis=-Wl,--no-warn-symbol-ordering");
}
