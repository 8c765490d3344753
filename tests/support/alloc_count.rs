//! A global allocator that counts the allocations made on the current thread, for tests that
//! check a path allocates nothing. A test binary opts in with
//! `#[path = "support/alloc_count.rs"] mod alloc_count;` (it is not part of `support`, since a
//! binary has one global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn count(size: usize) {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) made on this thread so far.
#[allow(dead_code)] // not every test binary that counts allocations asks for the count
pub fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

/// The largest allocation (or reallocation) made on this thread since the last call, in bytes.
#[allow(dead_code)] // not every test binary that counts allocations asks for sizes
pub fn take_largest() -> usize {
    LARGEST.with(|c| c.replace(0))
}
