//! `lakemount cache stats|clear`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::disk::{fs_size, CacheSize, DiskCache};
use crate::metrics::Metrics;

fn open_existing(dir: &Path) -> Result<DiskCache> {
    if !dir.is_dir() {
        bail!(
            "{} is not a cache directory (it does not exist)",
            dir.display()
        );
    }
    // Unbounded: looking at a cache must not evict from it.
    DiskCache::open(
        dir,
        CacheSize::Bytes(u64::MAX),
        Arc::new(Metrics::default()),
    )
    .with_context(|| format!("cache directory {}", dir.display()))
}

pub fn stats(dir: &Path) -> Result<()> {
    let s = open_existing(dir)?.stats();
    println!("cache directory: {}", dir.display());
    println!("blocks:          {}", s.blocks);
    if s.partial > 0 {
        println!(
            "partly held:     {} (pages random reads fetched)",
            s.partial
        );
    }
    println!(
        "bytes:           {} ({:.1} MiB)",
        s.bytes,
        s.bytes as f64 / 1048576.0
    );
    if let Ok(total) = fs_size(dir) {
        println!(
            "file system:     {:.1} GiB",
            total as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

pub fn clear(dir: &Path) -> Result<()> {
    let n = open_existing(dir)?.clear()?;
    println!("removed {n} blocks from {}", dir.display());
    Ok(())
}
