//! Giving memory back once cached metadata expires. The metadata cache drops expired listings
//! only when it does its own housekeeping, which runs on cache use; a mount left idle after a
//! walk of millions of names would keep their memory. A task runs that housekeeping now and
//! then and, when many entries went, hands the freed heap back to the system.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::LakeFs;

/// Cached entries that must have gone since the last trim before the heap is trimmed again.
const GONE_PER_TRIM: u64 = 65_536;

impl LakeFs {
    /// One round of housekeeping: expired metadata dropped, the heap trimmed after a large
    /// release (of cached entries, or of inodes the kernel forgot). Returns the entries
    /// still cached and inodes still held.
    pub async fn upkeep(&self) -> u64 {
        let held = self.meta.upkeep().await + self.inode_count() as u64;
        let before = self.cached_at_trim.load(Ordering::Relaxed);
        if before >= held + GONE_PER_TRIM {
            crate::trim_heap();
        }
        if before >= held + GONE_PER_TRIM || held > before {
            self.cached_at_trim.store(held, Ordering::Relaxed);
        }
        held
    }
}

/// Starts the housekeeping task: every `--metadata-ttl` (at least a second, at most ten
/// seconds). None when the metadata cache is off.
pub fn start(fs: &Arc<LakeFs>) -> Option<tokio::task::JoinHandle<()>> {
    let ttl = fs.meta.ttl();
    if ttl.is_zero() {
        return None;
    }
    let tick = ttl.clamp(Duration::from_secs(1), Duration::from_secs(10));
    let fs: Weak<LakeFs> = Arc::downgrade(fs);
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let Some(fs) = fs.upgrade() else { return };
            fs.upkeep().await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FsConfig, ROOT_INO};
    use crate::reader::DirectReadPath;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn expired_listings_are_dropped_without_any_further_use_of_the_mount() {
        let s = Arc::new(MemoryStore::new());
        for d in 0..20 {
            for f in 0..50 {
                s.put(&format!("d{d}/f{f}"), "x");
            }
        }
        let cfg = FsConfig {
            metadata_ttl: Duration::from_millis(300),
            ..FsConfig::default()
        };
        let fs = LakeFs::new(s.clone(), DirectReadPath::new(s), cfg);
        for d in 0..20 {
            let ino = fs.lookup(ROOT_INO, &format!("d{d}")).await.unwrap().ino;
            let fh = fs.opendir(ino).await.unwrap();
            let n = crate::fs::readdir::read_all(&fs, fh, false, 1000)
                .await
                .len();
            assert_eq!(n, 52);
            fs.releasedir(fh);
            // The kernel lets go of the directory.
            fs.forget(ino, 1);
        }
        assert!(fs.upkeep().await >= 20 * 50, "the listings are cached");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let held = fs.upkeep().await;
            // Only the root's inode stays.
            if held <= 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{held} entries never expired"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
