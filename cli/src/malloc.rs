//! glibc allocator tuning: the workspace's one `unsafe` exception.
//!
//! glibc raises its mmap threshold as large blocks are freed, after which multi-MiB buffers
//! (delta windows, zstd contexts) are kept in per-thread arenas instead of being returned.
//! On the ruff 0.6.0→0.6.1 update that doubled the client's peak RSS (154 MiB against 62 MiB
//! with the threshold fixed at 128 KiB; docs/benchmarks.md). mimalloc was worse (212 MiB).
#![allow(unsafe_code)]

/// Fixes glibc's mmap threshold at 128 KiB so large buffers go back to the OS when freed.
pub fn return_large_frees_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called first thing in main,
    // before any other thread exists, and takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
