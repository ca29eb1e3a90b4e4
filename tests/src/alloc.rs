//! A global allocator that counts live heap bytes, remembers the peak, and refuses any
//! allocation beyond a set bound (the process then aborts with "memory allocation failed"
//! instead of touching gigabytes), so a test can state and check how much a piece of code
//! may allocate.
//!
//! A test binary opts in with
//! `#[global_allocator] static ALLOC: CountingAlloc = CountingAlloc;`, starts every test
//! with `let _serial = serial();` (the counters are global, so tests running alongside
//! would count each other's allocations) and wraps the code under test in [`measure`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The counting allocator (the system allocator underneath).
pub struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Live bytes allowed; `usize::MAX` outside [`measure`].
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds off the other tests of the binary that call it while the guard lives.
pub fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Accounts for `size` more bytes; false (and nothing accounted) when that passes the limit.
fn grow(size: usize) -> bool {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    if live > LIMIT.load(Ordering::Relaxed) {
        LIVE.fetch_sub(size, Ordering::Relaxed);
        return false;
    }
    PEAK.fetch_max(live, Ordering::Relaxed);
    true
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; the
// counters only observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `alloc`'s contract, which `System.alloc` shares.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (hence from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grows = new_size > layout.size();
        if grows && !grow(new_size - layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `realloc`'s contract, which `System.realloc` shares.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        match (p.is_null(), grows) {
            (true, true) => {
                LIVE.fetch_sub(new_size - layout.size(), Ordering::Relaxed);
            }
            (false, false) => {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
            _ => {}
        }
        p
    }
}

/// Runs `f` with at most `limit` bytes allocated beyond what is live when it starts (an
/// allocation past that aborts the process), and returns its result and its peak: the most
/// bytes it held at once beyond the start. Only meaningful in a binary whose global
/// allocator is [`CountingAlloc`], inside a test holding [`serial`].
pub fn measure<T>(limit: usize, f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    LIMIT.store(start.saturating_add(limit), Ordering::Relaxed);
    let result = f();
    LIMIT.store(usize::MAX, Ordering::Relaxed);
    (result, PEAK.load(Ordering::Relaxed).saturating_sub(start))
}
