//! The `portcullis` daemon.

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off unless the operator asks for them (`MIMALLOC_ALLOW_THP=1`).
///
/// With huge pages, each 2 MiB region of mimalloc's arena that the gateway touches becomes a
/// whole resident huge page, and freed memory inside one is not returned: after a load run
/// the gateway held 34.7 MB instead of 21.9 MB, at no CPU difference we could measure
/// (docs/performance.md, "Resting memory: huge pages off, code layout, memory released when
/// idle"). The default has to be set before mimalloc reads its options, which happens in its
/// own constructor, before `main`; so this runs as an earlier constructor (priority 200;
/// mimalloc's has none, so it runs later).
#[cfg(all(target_os = "linux", not(feature = "system-allocator")))]
mod huge_pages_default {
    /// `mi_option_allow_thp` in mimalloc 3.3's `mi_option_t` (libmimalloc-sys has no constant
    /// for it). `tests/allocator.rs` fails if an upgrade moves it.
    const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

    extern "C" fn allow_thp_off_by_default() {
        // SAFETY: runs once, single threaded, before `main`; it only stores the option's default,
        // which mimalloc replaces with the environment's `MIMALLOC_ALLOW_THP` when that is set.
        unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_ALLOW_THP, 0) }
    }

    #[used]
    #[link_section = ".init_array.00200"]
    static SET_DEFAULT: extern "C" fn() = allow_thp_off_by_default;
}

/// Hands the memory mimalloc holds freed back to the system. mimalloc returns freed pages
/// after a delay (1 s), but only when it is next called; a gateway that goes idle after a
/// burst would keep the burst's memory. Housekeeping calls this once a second.
#[cfg(not(feature = "system-allocator"))]
const RELEASE_MEMORY: Option<fn()> = Some(|| {
    // SAFETY: mi_collect may be called from any thread at any time; `false` only returns
    // memory whose purge delay has passed, it frees nothing in use.
    unsafe { libmimalloc_sys::mi_collect(false) }
});
/// The system allocator returns freed memory on its own terms.
#[cfg(feature = "system-allocator")]
const RELEASE_MEMORY: Option<fn()> = None;

fn main() {
    std::process::exit(portcullis::run_with(portcullis::gateway::Extensions {
        release_memory: RELEASE_MEMORY,
        ..portcullis::gateway::Extensions::builtin()
    }));
}
