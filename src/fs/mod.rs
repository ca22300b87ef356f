//! The filesystem core: POSIX semantics over a [`Store`](crate::store::Store), with no FUSE in
//! sight. `fuse/` translates kernel requests into calls here; unit tests call it directly.

mod attrs;
mod dirstream;
mod files;
pub mod inode;
pub mod listing;
pub mod live;
pub mod names;
mod namespace;
pub mod passthrough;
pub mod process;
mod readdir;
mod rename_tree;
mod retain;
pub mod upkeep;
pub mod write;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::cache::meta::MetaCache;
use crate::metrics::Metrics;
use crate::reader::ReadPath;
use crate::store::{DynStore, StoreError};
pub use files::OpenMode;
pub use files::Opened;
use files::{OpenFile, Writer};
use inode::{InodeTable, ROOT_INO};
use listing::{DirListing, EntryKind};
use write::{WriteConfig, WriteHandle};

/// An errno for the kernel. Store failures are logged where they are converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsError(pub i32);

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> Self {
        if !matches!(e, StoreError::NotFound(_)) {
            tracing::warn!("store: {e}");
        }
        FsError(e.errno())
    }
}

impl From<Arc<StoreError>> for FsError {
    fn from(e: Arc<StoreError>) -> Self {
        tracing::warn!("store: {e}");
        FsError(e.errno())
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// What one cached directory entry (a listing's or a lookup's) costs in memory, as measured
/// over a million of them (benches/snapshot_scale): how `--metadata-budget` becomes a count.
pub const BYTES_PER_CACHED_ENTRY: u64 = 256;

/// A checkpoint directory of a few thousand shards moves in seconds (32 copies at once).
pub const DEFAULT_RENAME_DIR_LIMIT: u64 = 10_000;

#[derive(Clone, Debug)]
pub struct FsConfig {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    /// How long metadata (listings, lookups, attributes) is trusted, here and in the kernel.
    pub metadata_ttl: Duration,
    /// Bound on directory entries held by the metadata cache.
    pub max_cached_entries: u64,
    /// Refuse every change with EROFS.
    pub read_only: bool,
    /// Staging and upload block size of writes.
    pub write: WriteConfig,
    /// Blocks being uploaded at once, across all files.
    pub upload_slots: usize,
    /// Most objects a directory rename on a flat account copies; EXDEV beyond (0: always).
    pub rename_dir_limit: u64,
    /// Files the disk cache holds whole are read by the kernel from the cache file.
    pub passthrough: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
            metadata_ttl: Duration::from_secs(60),
            max_cached_entries: 1_000_000,
            read_only: false,
            write: WriteConfig {
                staging_dir: std::env::temp_dir().join("lakemount-staging"),
                block_size: 8 << 20,
            },
            upload_slots: 8,
            rename_dir_limit: DEFAULT_RENAME_DIR_LIMIT,
            passthrough: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// Attributes as the core reports them; the adapter maps them onto the kernel's struct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
}

/// One directory entry handed to a readdir callback.
#[derive(Debug)]
pub struct DirEntry<'a> {
    pub ino: u64,
    /// The offset of the entry after this one.
    pub next_offset: u64,
    pub name: &'a str,
    pub attr: Attr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

pub struct LakeFs {
    store: DynStore,
    read_path: Arc<dyn ReadPath>,
    cfg: FsConfig,
    meta: MetaCache,
    inodes: Mutex<InodeTable>,
    files: Mutex<HashMap<u64, OpenFile>>,
    /// Files with a writer, by inode.
    writers: Mutex<HashMap<u64, Writer>>,
    upload_slots: Arc<tokio::sync::Semaphore>,
    dirs: Mutex<HashMap<u64, Arc<readdir::OpenDir>>>,
    /// Listings being read now, by prefix: concurrent readers of a directory share one.
    streams: Mutex<HashMap<String, std::sync::Weak<dirstream::DirStream>>>,
    next_fh: AtomicU64,
    mounted_at: SystemTime,
    warned: Mutex<HashSet<String>>,
    /// The mount's device number, once mounted: tells its files among a process's descriptors.
    device: std::sync::OnceLock<u64>,
    /// The version each read handle reads (see `retain`).
    readers: Mutex<HashMap<u64, crate::reader::ObjectVersion>>,
    /// Inodes the kernel forgot, for trimming the heap now and then.
    forgotten: AtomicU64,
    /// Metadata entries cached at the last trim of the heap (see `upkeep`).
    cached_at_trim: AtomicU64,
    /// The kernel I/O mode of each open file (see `passthrough`).
    iomodes: passthrough::IoModes,
    metrics: Arc<Metrics>,
}

/// Inodes forgotten between two trims of the heap.
const FORGOTTEN_PER_TRIM: u64 = 65_536;

fn join_key(dir_prefix: &str, name: &str) -> String {
    format!("{dir_prefix}{name}")
}

/// The listing prefix of the directory holding `key`: `a/b/` for `a/b/c`, `` for `c`.
fn parent_prefix(key: &str) -> String {
    key.rfind('/')
        .map_or(String::new(), |i| key[..=i].to_string())
}

impl LakeFs {
    pub fn new(store: DynStore, read_path: Arc<dyn ReadPath>, cfg: FsConfig) -> Self {
        let now = SystemTime::now();
        let slots = Arc::new(tokio::sync::Semaphore::new(cfg.upload_slots.max(1)));
        let cfg_passthrough = cfg.passthrough;
        LakeFs {
            store,
            read_path,
            meta: MetaCache::new(cfg.metadata_ttl, cfg.max_cached_entries),
            cfg,
            inodes: Mutex::new(InodeTable::new(now)),
            files: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            upload_slots: slots,
            dirs: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            forgotten: AtomicU64::new(0),
            cached_at_trim: AtomicU64::new(0),
            mounted_at: now,
            warned: Mutex::new(HashSet::new()),
            device: std::sync::OnceLock::new(),
            readers: Mutex::new(HashMap::new()),
            iomodes: passthrough::IoModes::new(
                cfg_passthrough,
                passthrough::IdleBackings::new(
                    passthrough::IDLE_BACKINGS.min(crate::open_file_limit() / 2),
                    passthrough::IDLE_BACKING_BYTES,
                    passthrough::IDLE_BACKING_FILE,
                ),
            ),
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// Counters the mount exports (a private set by default).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Turns passthrough off for the rest of the mount (see `passthrough::IoModes::disable`).
    pub fn disable_passthrough(&self, why: &str) {
        self.iomodes.disable(why);
    }

    /// Passthrough for handle `fh` was refused by the kernel: it reads the normal way.
    pub fn passthrough_refused(&self, fh: u64, why: &str) {
        if self.iomodes.refused(fh, why) {
            // Counted when the open was decided; it reads the normal way after all.
            self.metrics
                .passthrough_opens_total
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Records the device number the kernel gave the mount (`st_dev` of its root).
    pub fn set_device(&self, dev: u64) {
        let _ = self.device.set(dev);
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    fn attr(&self, ino: u64, kind: &EntryKind) -> Attr {
        match kind {
            EntryKind::File {
                size, mtime, posix, ..
            } => {
                let p = posix.as_deref();
                Attr {
                    ino,
                    kind: Kind::File,
                    size: *size,
                    mtime: *mtime,
                    perm: p
                        .and_then(|p| p.mode)
                        .map_or(self.cfg.file_mode, |m| m as u16),
                    uid: p.and_then(|p| p.uid).unwrap_or(self.cfg.uid),
                    gid: p.and_then(|p| p.gid).unwrap_or(self.cfg.gid),
                    nlink: 1,
                }
            }
            EntryKind::Dir { mtime } => Attr {
                ino,
                kind: Kind::Dir,
                size: 0,
                mtime: mtime.unwrap_or(self.mounted_at),
                perm: self.cfg.dir_mode,
                uid: self.cfg.uid,
                gid: self.cfg.gid,
                nlink: 2,
            },
        }
    }

    fn node(&self, ino: u64) -> FsResult<inode::Node> {
        let t = self.inodes.lock().unwrap();
        t.get(ino).cloned().ok_or(FsError(libc::ENOENT))
    }

    /// The directory a listing of `prefix` shows; odd names are skipped, one warning each.
    fn built(&self, prefix: &str, page: crate::store::ListPage) -> Arc<DirListing> {
        let (listing, skipped) = listing::build(prefix, page);
        let mut warned = self.warned.lock().unwrap();
        for s in skipped {
            if warned.insert(s.key.clone()) {
                tracing::warn!("skipping blob name {:?}: {}", s.key, s.reason);
            }
        }
        Arc::new(listing)
    }

    /// A lookup in a directory not listed yet lists it (one request: its first page)
    /// rather than asking for the one name (two requests): zarr, HF datasets and loaders
    /// that open paths directly look up name after name of the same directories. A
    /// complete first page answers every lookup in the directory, negative ones too, for
    /// the TTL; a directory with more pages is remembered as such for the TTL, and its
    /// names are asked for one by one.
    async fn listed_for_lookup(&self, prefix: &str) -> FsResult<Option<Arc<DirListing>>> {
        if !self.store.lookups_list() {
            return Ok(None);
        }
        let load = async {
            let page = self.store.list_page(prefix, None).await?;
            let complete = page.next.as_deref().is_none_or(str::is_empty);
            Ok(complete.then(|| self.built(prefix, page)))
        };
        Ok(self.meta.first_page(prefix, load).await?)
    }

    /// What `name` in directory `dir_prefix` is now (within the metadata TTL).
    async fn resolve(&self, dir_prefix: &str, name: &str) -> FsResult<Option<EntryKind>> {
        if name.len() > 255 {
            return Err(FsError(libc::ENAMETOOLONG));
        }
        if names::invalid_reason(name).is_some() {
            return Ok(None);
        }
        if let Some(listing) = self.meta.cached_dir(dir_prefix).await {
            return Ok(listing.entries.get(name).cloned());
        }
        let key = join_key(dir_prefix, name);
        if let Some(known) = self.meta.cached_entry(&key).await {
            return Ok(known);
        }
        if let Some(listing) = self.listed_for_lookup(dir_prefix).await? {
            return Ok(listing.entries.get(name).cloned());
        }
        // A name may be a file, a directory marker, a virtual directory (some key under it),
        // or both a file and a directory: ask both questions at once; the directory wins.
        let sub = format!("{key}/");
        let (head, is_dir) = tokio::join!(self.store.head(&key), self.store.dir_exists(&sub));
        let head = head?;
        let kind = match (is_dir?, head) {
            (true, h) => Some(EntryKind::Dir {
                mtime: h.filter(|h| h.is_dir_marker).map(|h| h.mtime),
            }),
            (false, Some(h)) if h.is_dir_marker => Some(EntryKind::Dir {
                mtime: Some(h.mtime),
            }),
            (false, Some(h)) => Some(EntryKind::file(&h)),
            (false, None) => None,
        };
        self.meta.put_entry(&key, kind.clone()).await;
        Ok(kind)
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let dir = self.node(parent)?;
        if !dir.kind.is_dir() {
            return Err(FsError(libc::ENOTDIR));
        }
        if let Some(ino) = self.pending_child(parent, name) {
            self.inodes.lock().unwrap().add_lookup(ino);
            return self.getattr(ino).await;
        }
        let kind = self
            .resolve(&dir.dir_prefix(), name)
            .await?
            .ok_or(FsError(libc::ENOENT))?;
        let key = join_key(&dir.dir_prefix(), name);
        Ok(self.entered(parent, name, key, kind))
    }

    /// Records `name` in `parent` as `kind`, with one kernel reference, and its attributes.
    fn entered(&self, parent: u64, name: &str, key: String, kind: EntryKind) -> Attr {
        let ino = self
            .inodes
            .lock()
            .unwrap()
            .upsert(parent, name, key, kind.clone(), 1);
        self.attr(ino, &kind)
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if !self.inodes.lock().unwrap().forget(ino, n) {
            return;
        }
        // The heap keeps what is freed (the allocator's trim threshold is high, for speed):
        // after many inodes went, it is handed back to the system.
        let gone = self.forgotten.fetch_add(1, Ordering::Relaxed) + 1;
        if gone.is_multiple_of(FORGOTTEN_PER_TRIM) {
            crate::trim_heap();
        }
    }

    /// Attributes of `ino`, re-checked against the store once the metadata TTL has passed.
    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let mut a = self.current_attr(ino).await?;
        // An open file whose name is gone (unlinked, or replaced by a rename) has no links,
        // as on a local disk: tools that follow a log see it was removed.
        if ino != ROOT_INO {
            let t = self.inodes.lock().unwrap();
            let linked = t
                .get(ino)
                .is_some_and(|n| t.child(n.parent, &n.name) == Some(ino));
            if !linked {
                a.nlink = 0;
            }
        }
        Ok(a)
    }

    async fn current_attr(&self, ino: u64) -> FsResult<Attr> {
        let node = self.node(ino)?;
        if let Some(w) = self.writer(ino) {
            let mut a = self.attr(ino, &node.kind);
            let p = w.posix();
            a.size = w.size();
            a.mtime = w.modified();
            a.perm = p.mode.map_or(a.perm, |m| m as u16);
            a.uid = p.uid.unwrap_or(a.uid);
            a.gid = p.gid.unwrap_or(a.gid);
            return Ok(a);
        }
        if ino == ROOT_INO || node.checked.elapsed() < self.cfg.metadata_ttl {
            return Ok(self.attr(ino, &node.kind));
        }
        let parent = self.node(node.parent)?;
        let kind = self
            .resolve(&parent.dir_prefix(), &node.name)
            .await?
            .ok_or(FsError(libc::ENOENT))?;
        if kind.is_dir() != node.kind.is_dir() {
            // Replaced by the other kind: this inode is gone; a new lookup finds the new one.
            return Err(FsError(libc::ENOENT));
        }
        if let Some(n) = self.inodes.lock().unwrap().get_mut(ino) {
            n.kind = kind.clone();
            n.checked = std::time::Instant::now();
        }
        Ok(self.attr(ino, &kind))
    }

    /// Records a change this mount made to `key`: its own writes are visible at once.
    async fn changed(&self, key: &str, kind: Option<EntryKind>) {
        self.meta.put_entry(key, kind).await;
        self.dir_changed(&parent_prefix(key)).await;
    }

    fn writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(FsError(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// The directory node `parent` and the key `name` would have in it, for a new name.
    fn new_name(&self, parent: u64, name: &str) -> FsResult<(inode::Node, String)> {
        if name.len() > 255 {
            return Err(FsError(libc::ENAMETOOLONG));
        }
        if names::invalid_reason(name).is_some() {
            return Err(FsError(libc::EINVAL));
        }
        let dir = self.node(parent)?;
        if !dir.kind.is_dir() {
            return Err(FsError(libc::ENOTDIR));
        }
        let key = join_key(&dir.dir_prefix(), name);
        Ok((dir, key))
    }

    /// What `name` in `parent` is now, files being written included.
    async fn existing(
        &self,
        parent: u64,
        dir: &inode::Node,
        name: &str,
    ) -> FsResult<Option<EntryKind>> {
        if let Some(ino) = self.pending_child(parent, name) {
            return Ok(self.node(ino).ok().map(|n| n.kind));
        }
        self.resolve(&dir.dir_prefix(), name).await
    }

    pub fn statfs(&self) -> StatFs {
        // An object store has no fixed capacity: report a large, constant one (1 PiB) so
        // tools that check free space before writing do not refuse.
        const BSIZE: u32 = 1 << 20;
        let blocks = (1u64 << 50) / BSIZE as u64;
        StatFs {
            blocks,
            bfree: blocks,
            bavail: blocks,
            files: 1 << 40,
            ffree: 1 << 40,
            bsize: BSIZE,
            namelen: 255,
            frsize: BSIZE,
        }
    }

    /// Inodes currently held (root included); for tests and metrics.
    pub fn inode_count(&self) -> usize {
        self.inodes.lock().unwrap().len()
    }
}

#[cfg(test)]
mod handle_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod readdir_tests;
#[cfg(test)]
mod tests;
