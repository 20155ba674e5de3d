//! The process's memory allocator (jemalloc) and handing freed memory back to the
//! operating system.
//!
//! Why jemalloc: a chat server's heap is mostly many small per-connection records that
//! live for hours, allocated in between short-lived buffers of fan-out bursts (a storm
//! of joins, every notice queued for every member). glibc's allocator leaves the
//! long-lived records scattered over pages that the bursts grew, so after a 10,000-
//! connection join storm an idle server held 2.3 KiB per connection even after
//! `malloc_trim`, of which ~1.5 KiB was live data. jemalloc keeps each size class in its
//! own slabs, so the same server holds ~1.5 KiB, and fan-out throughput is the same
//! (docs/benchmarks.md).

/// The allocator the `switchboard` binary installs as its global allocator.
pub type Allocator = tikv_jemallocator::Jemalloc;

/// The control that purges every arena (4096 is jemalloc's "all arenas" index).
const PURGE_ALL_ARENAS: &std::ffi::CStr = c"arena.4096.purge";

/// Hand the memory freed since the last call back to the operating system at once,
/// rather than over jemalloc's ten-second decay: an idle server's resident size then
/// shows what it holds now, not its worst moment. Takes a few milliseconds after a
/// burst, so call it off the async threads. Harmless if jemalloc is not the global
/// allocator (it then purges jemalloc's own, empty, arenas).
pub fn return_freed_memory() {
    // SAFETY: "arena.<all>.purge" is a void control: it reads and writes nothing
    // through the (null) pointers it is given.
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if status != 0 {
        tracing::debug!(status, "jemalloc purge failed");
    }
}
