//! Gives freed heap memory back to the kernel after a burst of allocation.
//!
//! Parsing a large config allocates several times the config's size for a moment (the TOML
//! document, the raw accounts), and glibc's allocator keeps what was freed in the middle of its
//! heap: at 10,000 accounts about 20 MiB that the daemon never uses again would stay resident.
//! `malloc_trim(3)` returns those pages. Other allocators (musl's, in the static image) give
//! memory back on their own, and there this does nothing.

/// Returns the heap's free pages to the kernel (glibc); a no-op elsewhere.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and has no precondition; glibc locks each arena while
    // it trims it, so it is safe to call while other threads allocate.
    unsafe {
        libc::malloc_trim(0);
    }
}
