//! Keeps a long-running process's RSS close to what it actually holds.
//!
//! glibc's malloc gives each thread that allocates its own arena (up to 8
//! per core) and keeps freed memory in them. Under tokio, batches are
//! allocated and freed on whichever worker or blocking thread runs them,
//! so every new high-water batch grew some arena for good. Measured with
//! `scripts/soak.sh` (embedded `all`, 2,000 orders/s): RSS crept from 91 MB
//! at minute 2 to 123 MB at minute 10 with the defaults, 60 to 70 MB in
//! 4 minutes with two arenas. (mimalloc, tried as the global allocator, sat
//! higher still: 120 to 139 MB.) So: two arenas, and freed memory handed
//! back to the OS every few seconds.

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
