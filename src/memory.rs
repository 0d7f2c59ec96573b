//! Keeps a long-running process's RSS close to what it actually holds.
//!
//! Rust's own heap is mimalloc (the global allocator, see src/main.rs),
//! which returns freed pages to the OS by itself. SQLite's C code still
//! allocates through glibc's malloc, and glibc gives each thread that
//! allocates its own arena (up to 8 per core) and keeps freed memory in
//! them. With every allocation on glibc, `scripts/soak.sh` (embedded `all`,
//! 2,000 orders/s) measured RSS creeping from 91 MB at minute 2 to 123 MB
//! at minute 10 with the defaults, 60 to 70 MB with two arenas. (mimalloc
//! 2, tried then, sat at 120 to 139 MB; mimalloc 3, now, holds flat at
//! 80 to 95 MB and buys a third more ingest.) So for what glibc still
//! serves: two arenas, and freed memory handed back to the OS every few
//! seconds.

use std::time::Duration;

/// How often free memory inside the arenas is returned to the OS.
const RELEASE_EVERY: Duration = Duration::from_secs(10);

/// Caps glibc's arenas at two. Call before any thread starts.
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called once, before other
    // threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Starts a thread that returns the arenas' free pages to the OS every
/// `RELEASE_EVERY` (glibc's `malloc_trim`, which releases free pages
/// anywhere in the heap, not only at its top).
pub fn spawn_free_memory_release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("memory-release".into())
            .spawn(|| loop {
                std::thread::sleep(RELEASE_EVERY);
                // SAFETY: malloc_trim is thread-safe; it only releases free pages.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the memory release thread");
        }
    }
}
