//! The persistent block cache on local disk (on a Batch node: the temp SSD).
//!
//! One plain file per object version, `objects-v2/XX/HASH`, with each cached block at its own
//! offset, and beside it `HASH.sums`, the table of the blocks held with their CRC32C (see
//! `objfile`). HASH is the SHA-256 of the object's identity (object, ETag, size, block size),
//! so a changed blob can never be served from old bytes. A block that fails any check is a
//! miss and is dropped. A complete object's file is what a passthrough open reads (see
//! `open_complete`). Files are 0600 in 0700 directories.
//!
//! A block not held whole may hold pages a random reader fetched (see `pages`); it takes its
//! place in the eviction order like a whole block, counting the bytes of its pages.
//!
//! Eviction is LRU by block within a run (a hole punched in the object's file); after a
//! restart the order is rebuilt from the tables' modification times (touched on hits).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lru::LruCache;

use super::filler::Filler;
use super::known::{Known, Stamp};
use super::objfile::{self, ObjectFiles, ObjectKey};
use super::pages;
pub use super::size::{fs_size, parse_bytes, CacheSize};
use crate::metrics::Metrics;

const SUBDIR: &str = "objects-v2";
/// The layout before objects-v2: one file per block. Nothing reads it any more.
const OLD_SUBDIR: &str = "blocks-v1";
/// How finely a hit's time is written back to the table's mtime.
const RECENCY_STEP: Duration = Duration::from_secs(600);
/// Temporary files older than this were left by a crashed writer.
const STALE_TMP: Duration = Duration::from_secs(600);

type SpaceProbe = Box<dyn Fn() -> io::Result<(u64, u64)> + Send + Sync>;

/// A cached block: its object's hash and its index.
type BlockRef = (Arc<str>, u64);

/// What the disk holds of a block.
#[derive(Clone, Copy)]
struct Slot {
    bytes: u64,
    /// All of it, listed in the table; else some pages.
    whole: bool,
}

struct Index {
    lru: LruCache<BlockRef, Slot>,
    /// Each object with blocks held.
    objects: HashMap<Arc<str>, Held>,
    bytes: u64,
}

struct Held {
    key: ObjectKey,
    /// How many of its blocks, whole or in part.
    blocks: u64,
    /// Its table's modification time as last written: a hit writes it back only when it is
    /// older than RECENCY_STEP, with no stat.
    touched: SystemTime,
}

pub struct DiskCache {
    root: PathBuf,
    capacity: u64,
    /// With `free:PCT`: the bytes to leave free on the file system.
    keep_free: Option<u64>,
    /// Total and available bytes of the cache's file system (a fake one in tests).
    space: SpaceProbe,
    index: Mutex<Index>,
    /// Files checked whole and entries read lately, while their files are unchanged.
    known: Known,
    metrics: Arc<Metrics>,
    /// Runs `write_behind` and `pages_behind` writes, and counts those not finished yet.
    filler: Filler,
}

/// Whether an object is here whole, for a passthrough open.
pub enum Complete {
    File(File),
    /// Maybe: its bytes have not been checked in this process yet.
    NeedsCheck,
    No,
}

/// What `lakemount cache stats` reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Blocks held whole.
    pub blocks: u64,
    /// Blocks of which only pages a random reader fetched are held.
    pub partial: u64,
    pub bytes: u64,
    pub capacity: u64,
}

/// Writes a hit's time into the table's modification time, which the next index rebuild
/// orders eviction by.
fn write_recency(files: &ObjectFiles, at: SystemTime) {
    if let Ok(f) = File::options().write(true).open(&files.sums) {
        let _ = f.set_modified(at);
    }
}

pub(crate) fn mkdir_private(p: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

fn flock(f: &File, op: libc::c_int) -> bool {
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) == 0 }
}

impl DiskCache {
    /// Opens (creating if needed) the cache in `dir` and rebuilds its index from the files there.
    pub fn open(dir: &Path, size: CacheSize, metrics: Arc<Metrics>) -> io::Result<DiskCache> {
        let probe_at = dir.to_path_buf();
        Self::open_with(
            dir,
            size,
            metrics,
            Box::new(move || super::size::fs_space(&probe_at)),
        )
    }

    fn open_with(
        dir: &Path,
        size: CacheSize,
        metrics: Arc<Metrics>,
        space: SpaceProbe,
    ) -> io::Result<DiskCache> {
        // A directory we create is private; an existing one (say /mnt) keeps its mode, and the
        // objects live in our own private subdirectory either way.
        mkdir_private(dir)?;
        let old = dir.join(OLD_SUBDIR);
        if old.exists() {
            tracing::info!("disk cache: removing the old layout in {}", old.display());
            let _ = fs::remove_dir_all(&old);
        }
        let root = dir.join(SUBDIR);
        mkdir_private(&root)?;
        fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let total = space()?.0;
        let (capacity, keep_free) = match size {
            CacheSize::Bytes(b) => (b, None),
            CacheSize::PercentOfDisk(p) => ((total as f64 * p / 100.0) as u64, None),
            CacheSize::KeepFree(p) => (total, Some((total as f64 * p / 100.0) as u64)),
        };
        let cache = DiskCache {
            root,
            capacity,
            keep_free,
            space,
            index: Mutex::new(Index {
                lru: LruCache::unbounded(),
                objects: HashMap::new(),
                bytes: 0,
            }),
            known: Known::new(),
            metrics,
            filler: Filler::default(),
        };
        cache.rebuild()?;
        Ok(cache)
    }

    /// The most the cache may hold now: fixed, or (with `free:PCT`) what it holds plus the
    /// space above the reserve.
    pub fn capacity(&self) -> u64 {
        let Some(reserve) = self.keep_free else {
            return self.capacity;
        };
        match (self.space)() {
            Ok((_, avail)) => {
                let held = self.index.lock().unwrap().bytes;
                // Below the reserve, the cache shrinks by the shortfall.
                (held + avail).saturating_sub(reserve).min(self.capacity)
            }
            Err(_) => self.capacity,
        }
    }

    pub fn stats(&self) -> DiskStats {
        let capacity = self.capacity();
        let idx = self.index.lock().unwrap();
        let whole = idx.lru.iter().filter(|(_, s)| s.whole).count() as u64;
        DiskStats {
            blocks: whole,
            partial: idx.lru.len() as u64 - whole,
            bytes: idx.bytes,
            capacity,
        }
    }

    fn files(&self, hash: &str) -> ObjectFiles {
        ObjectFiles::new(&self.root, hash)
    }

    /// Whether a block is indexed whole (it may still turn out corrupt when read).
    pub fn contains(&self, key: &ObjectKey, index: u64) -> bool {
        let hash: Arc<str> = key.hash().into();
        let idx = self.index.lock().unwrap();
        idx.lru.peek(&(hash, index)).is_some_and(|s| s.whole)
    }

    /// Whether the block (or pages of it) may be on disk: indexed here, or its object has a table, written by
    /// another process sharing the directory (`lakemount warm`, another mount). One stat, on
    /// the caller's thread: a block of a new object then costs no trip to a blocking thread.
    pub fn may_hold(&self, key: &ObjectKey, index: u64) -> bool {
        let hash: Arc<str> = key.hash().into();
        let indexed = self
            .index
            .lock()
            .unwrap()
            .lru
            .contains(&(hash.clone(), index));
        indexed || self.files(&hash).sums.symlink_metadata().is_ok()
    }

    /// The block's data if a valid copy is on disk. Anything wrong with it makes it a miss and
    /// drops it.
    pub fn get(&self, key: &ObjectKey, index: u64) -> Option<Bytes> {
        self.get_range(key, index, 0..key.block_len(index))
    }

    /// Bytes `range` (offsets within block `index`) if the block is on disk, reading and
    /// checking only the 64 KiB chunks they fall in: what a random reader needs, not its
    /// whole block; or if every page they fall in was kept. A bad chunk or page drops the
    /// block, as in `get`.
    pub fn get_range(&self, key: &ObjectKey, index: u64, range: Range<u64>) -> Option<Bytes> {
        let hash: Arc<str> = key.hash().into();
        let files = self.files(&hash);
        match self.read_known(&hash, &files, key, index, range) {
            Ok(Some((data, read))) => {
                self.count_hit(&hash, index, read);
                self.touch(&hash, &files);
                Some(data)
            }
            Err(e) => {
                tracing::warn!(
                    "disk cache: dropping bad block {index} of {}: {e}",
                    files.data.display()
                );
                Metrics::add(&self.metrics.disk_corrupt_blocks_total, 1);
                self.drop_block(&hash, key, index);
                None
            }
            Ok(None) => {
                // Gone (another process evicted it): forget it. Pages not all kept: a miss,
                // and the pages that are stay counted.
                if self.contains(key, index) {
                    self.forget(&hash, index);
                }
                None
            }
        }
    }

    /// A hit of `read` bytes of block `index`: its most recent use, counted.
    fn count_hit(&self, hash: &Arc<str>, index: u64, read: u64) {
        self.index
            .lock()
            .unwrap()
            .lru
            .promote(&(hash.clone(), index));
        Metrics::add(&self.metrics.disk_hit_bytes_total, read);
    }

    /// `objfile::read_range`, taking the block's entry from memory while its data file is
    /// unchanged: a read then opens and reads no table. A block not held whole is read from
    /// its kept pages, if they cover the range.
    fn read_known(
        &self,
        hash: &Arc<str>,
        files: &ObjectFiles,
        key: &ObjectKey,
        index: u64,
        range: Range<u64>,
    ) -> io::Result<Option<(Bytes, u64)>> {
        let Ok(data) = File::open(&files.data) else {
            // The table decides what that means, as ever.
            return objfile::read_range(files, key, index, range);
        };
        let stamp = Stamp::of(&data.metadata()?);
        let entry = match self.known.entry(hash, index, stamp) {
            Some(e) => e,
            None => {
                let Some(e) = objfile::held_entry(files, key, index)? else {
                    return pages::read(files, &data, key, index, range);
                };
                let e = Arc::new(e);
                self.known.remember(hash, index, stamp, e.clone());
                e
            }
        };
        objfile::read_checked(&data, key, index, &entry, range).map(Some)
    }

    fn forget(&self, hash: &Arc<str>, index: u64) {
        let mut idx = self.index.lock().unwrap();
        if let Some(slot) = idx.lru.pop(&(hash.clone(), index)) {
            idx.bytes -= slot.bytes;
            if let Some(h) = idx.objects.get_mut(hash) {
                h.blocks -= 1;
                if h.blocks == 0 {
                    idx.objects.remove(hash);
                }
            }
        }
    }

    /// Stores a block. A full disk evicts older blocks and tries once more; failing that the
    /// block is simply not cached (readers never see a cache write error).
    pub fn put(&self, key: &ObjectKey, index: u64, data: &[u8]) {
        let len = data.len() as u64;
        self.keep(key, index, len, true, |files| {
            objfile::write_block(files, key, index, data).map(|()| len)
        });
    }

    /// Keeps pages of block `index` a random reader fetched: `data`, from `offset` (a page
    /// boundary) to a page boundary or the block's end. Nothing to do when the block is held
    /// whole.
    pub fn put_pages(&self, key: &ObjectKey, index: u64, offset: u64, data: &[u8]) {
        if self.contains(key, index) {
            return;
        }
        self.keep(key, index, data.len() as u64, false, |files| {
            pages::write(files, key, index, offset, data)
        });
    }

    /// Writes (with `write`, which says how many bytes it added) `len` bytes of block
    /// `index`, all of it when `whole`, and counts them.
    fn keep(
        &self,
        key: &ObjectKey,
        index: u64,
        len: u64,
        whole: bool,
        write: impl Fn(&ObjectFiles) -> io::Result<u64>,
    ) {
        let hash: Arc<str> = key.hash().into();
        let files = self.files(&hash);
        self.known.changed(&hash, Some(index), key.blocks());
        let mut result = write(&files);
        if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::ENOSPC)) {
            let held = self.index.lock().unwrap().bytes;
            self.evict_to(held.saturating_sub(held / 4 + len));
            result = write(&files);
        }
        match result {
            Ok(added) => {
                let mut idx = self.index.lock().unwrap();
                let at = (hash.clone(), index);
                let fresh = !idx.lru.contains(&at);
                let slot = idx.lru.get_or_insert_mut(at, || Slot {
                    bytes: 0,
                    whole: false,
                });
                let before = slot.bytes;
                if whole {
                    *slot = Slot {
                        bytes: added,
                        whole: true,
                    };
                } else if !slot.whole {
                    slot.bytes += added;
                }
                let after = slot.bytes;
                idx.bytes = idx.bytes - before + after;
                let h = idx.objects.entry(hash).or_insert(Held {
                    key: key.clone(),
                    blocks: 0,
                    touched: SystemTime::now(),
                });
                h.blocks += u64::from(fresh);
                // The bytes just written gave its table a fresh modification time.
                h.touched = SystemTime::now();
                drop(idx);
                self.evict_to(self.capacity());
            }
            Err(e) => {
                // A cache disk that stays broken must not flood the log: failures 1, 2, 4, 8,
                // ... and every 1000th are logged; the metric counts them all.
                let n = self
                    .metrics
                    .disk_write_errors_total
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if n.is_power_of_two() || n.is_multiple_of(1000) {
                    tracing::warn!(
                        "disk cache: cannot write {} ({n} failed writes so far): {e}",
                        files.data.display()
                    );
                }
            }
        }
    }

    /// Stores a block from a fill thread (see `filler`), so a slow or full cache disk never
    /// delays the reader that fetched it, nor does writing it take CPU from readers.
    /// `data` is held until then: a block's lease, so the memory budget counts it.
    pub fn write_behind(
        self: &Arc<Self>,
        key: ObjectKey,
        index: u64,
        data: impl AsRef<[u8]> + Send + 'static,
    ) {
        self.behind(move |me| me.put(&key, index, data.as_ref()));
    }

    /// `put_pages` from a fill thread, as `write_behind`.
    pub fn pages_behind(
        self: &Arc<Self>,
        key: ObjectKey,
        index: u64,
        offset: u64,
        data: impl AsRef<[u8]> + Send + 'static,
    ) {
        self.behind(move |me| me.put_pages(&key, index, offset, data.as_ref()));
    }

    fn behind(self: &Arc<Self>, job: impl FnOnce(&DiskCache) + Send + 'static) {
        let me = self.clone();
        // The job owns its data, and lets go of it (and its memory budget) when done.
        self.filler.run(move || job(&me));
    }

    /// Waits (polling, at most `limit`) until every `write_behind` has landed; false on timeout.
    /// Called at unmount so blocks fetched last are not lost with the daemon.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        self.filler.wait_idle(limit)
    }

    /// Persists a hit's recency for the next index rebuild, coarsely: one timestamp write per
    /// object per RECENCY_STEP, not one per hit, and no stat (a hit's open costs no disk
    /// read of the table).
    fn touch(&self, hash: &Arc<str>, files: &ObjectFiles) {
        if let Some(now) = self.recency_due(hash) {
            write_recency(files, now);
        }
    }

    /// The time to write back as `hash`'s recency, when the last one is older than
    /// RECENCY_STEP (it counts as written from now on).
    fn recency_due(&self, hash: &Arc<str>) -> Option<SystemTime> {
        let now = SystemTime::now();
        match self.index.lock().unwrap().objects.get_mut(hash) {
            Some(h) if now.duration_since(h.touched).unwrap_or_default() > RECENCY_STEP => {
                h.touched = now;
                Some(now)
            }
            _ => None,
        }
    }

    /// Removes least recently used blocks until at most `target` bytes remain.
    fn evict_to(&self, target: u64) {
        loop {
            let (hash, index, key) = {
                let mut idx = self.index.lock().unwrap();
                if idx.bytes <= target {
                    return;
                }
                let Some(((hash, index), _)) = idx.lru.peek_lru() else {
                    return;
                };
                let (hash, index) = (hash.clone(), *index);
                let Some(Held { key, .. }) = idx.objects.get(&hash) else {
                    // Not expected: an indexed block of an unknown object. Forget it.
                    let gone = idx.lru.pop(&(hash, index)).map_or(0, |s| s.bytes);
                    idx.bytes -= gone;
                    continue;
                };
                (hash, index, key.clone())
            };
            self.drop_block(&hash, &key, index);
            Metrics::add(&self.metrics.disk_evictions_total, 1);
        }
    }

    /// Drops one block: a hole in the object's file, unless the file is held whole or a
    /// passthrough open (of any process) holds it: then the whole object goes, by unlinking,
    /// which leaves the bytes of whoever still reads the file as they are. A file held whole
    /// may have been opened with passthrough and mapped by a program that then closed it: a
    /// hole would turn its mapped pages into zeros. Checked under the exclusive lock, which
    /// keeps any new passthrough open away meanwhile.
    fn drop_block(&self, hash: &Arc<str>, key: &ObjectKey, index: u64) {
        let files = self.files(hash);
        self.known.changed(hash, Some(index), key.blocks());
        let punched = match File::options().write(true).open(&files.data) {
            Ok(f) if flock(&f, libc::LOCK_EX) => {
                // Also not a file another process just unlinked: its readers keep it.
                let linked = f.metadata().is_ok_and(|m| m.nlink() > 0);
                linked
                    && !objfile::may_be_whole(&files, key, &f)
                    && objfile::punch_block(&files, key, index, &f).is_ok()
            }
            Ok(_) => false,
            // No data file: nothing to punch, the block is gone.
            Err(_) => true,
        };
        if punched {
            self.forget(hash, index);
            if !self.index.lock().unwrap().objects.contains_key(hash) {
                // Its last block: no files left behind.
                objfile::remove(&files);
            }
        } else {
            self.drop_object(hash, key);
        }
    }

    fn drop_object(&self, hash: &Arc<str>, key: &ObjectKey) {
        objfile::remove(&self.files(hash));
        self.known.changed(hash, None, key.blocks());
        for i in 0..key.blocks() {
            self.forget(hash, i);
        }
    }

    /// Deletes every object.
    pub fn clear(&self) -> io::Result<u64> {
        let mut idx = self.index.lock().unwrap();
        let n = idx.lru.len() as u64;
        idx.lru.clear();
        idx.objects.clear();
        idx.bytes = 0;
        drop(idx);
        self.known.clear();
        fs::remove_dir_all(&self.root)?;
        mkdir_private(&self.root)?;
        Ok(n)
    }
}

#[path = "disk_complete.rs"]
mod complete;
#[path = "disk_nowait.rs"]
mod nowait;
#[cfg(test)]
pub(crate) use nowait::inline_reads_work_in;
#[path = "disk_rebuild.rs"]
mod rebuild;
#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
