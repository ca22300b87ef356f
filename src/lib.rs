//! lakemount: an Azure Data Lake / Blob container as a POSIX tree, for training jobs and people.
//!
//! Data flows one way: [`fuse`] (kernel edge) -> [`fs`] (POSIX core) -> [`reader`] / [`cache`]
//! -> [`store`] (Azure, local directory, in-memory).

pub mod agent;
pub mod cache;
pub mod cli;
pub mod config;
pub mod fs;
pub mod fuse;
pub mod lake_url;
pub mod metrics;
pub mod mount;
pub mod prefetch;
pub mod reader;
pub mod store;
pub mod transfer;

/// glibc raises its mmap threshold after the first large free, after which multi-MiB block
/// buffers come from per-thread arenas that never shrink: RSS would drift far above
/// --max-memory. A fixed threshold keeps block buffers mmapped (returned on free), and a few
/// arenas keep the many I/O threads from each hoarding memory. Call first thing in `main`.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
