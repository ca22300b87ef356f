//! The filesystem core: POSIX semantics over a [`Store`](crate::store::Store), with no FUSE in
//! sight. `fuse.rs` translates kernel requests into calls here; unit tests call it directly.

pub mod inode;
pub mod listing;
pub mod names;
mod namespace;
pub mod process;
pub mod write;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::cache::meta::MetaCache;
use crate::reader::{FileReader, ObjectVersion, ReadPath};
use crate::store::{list_all, DynStore, StoreError};
use inode::{InodeTable, ROOT_INO};
use listing::{DirListing, EntryKind};
use write::{Start, WriteConfig, WriteHandle};

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

/// What an open file handle reads (and writes) through.
#[derive(Clone)]
enum OpenFile {
    Read(Arc<dyn FileReader>),
    /// A file with a writer: reads come from its staging file once it was changed, else from
    /// `base` (the object as opened). Only handles opened for writing commit it.
    Write {
        ino: u64,
        w: Arc<WriteHandle>,
        base: Option<Arc<dyn FileReader>>,
        writable: bool,
        /// The process that opened it (when known): only its `close` commits.
        opener: Option<u32>,
    },
}

/// A file being written, shared by all handles open on it.
struct Writer {
    w: Arc<WriteHandle>,
    handles: usize,
}

/// How a file is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenMode {
    pub write: bool,
    pub truncate: bool,
    /// The thread that opens (FUSE's request pid); 0: unknown.
    pub pid: u32,
}

impl OpenMode {
    pub const READ: OpenMode = OpenMode {
        write: false,
        truncate: false,
        pid: 0,
    };
}

struct OpenDir {
    ino: u64,
    parent: u64,
    entries: Vec<(String, EntryKind)>,
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
    dirs: Mutex<HashMap<u64, Arc<OpenDir>>>,
    next_fh: AtomicU64,
    mounted_at: SystemTime,
    warned: Mutex<HashSet<String>>,
}

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
            next_fh: AtomicU64::new(1),
            mounted_at: now,
            warned: Mutex::new(HashSet::new()),
        }
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    fn attr(&self, ino: u64, kind: &EntryKind) -> Attr {
        match kind {
            EntryKind::File { size, mtime, .. } => Attr {
                ino,
                kind: Kind::File,
                size: *size,
                mtime: *mtime,
                perm: self.cfg.file_mode,
                uid: self.cfg.uid,
                gid: self.cfg.gid,
                nlink: 1,
            },
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

    /// The listing of directory `prefix`, from the cache or the store; odd names are skipped
    /// with one warning each.
    async fn listing(&self, prefix: &str) -> FsResult<Arc<DirListing>> {
        let load = async {
            let page = list_all(self.store.as_ref(), prefix).await?;
            let (listing, skipped) = listing::build(prefix, page);
            let mut warned = self.warned.lock().unwrap();
            for s in skipped {
                if warned.insert(s.key.clone()) {
                    tracing::warn!("skipping blob name {:?}: {}", s.key, s.reason);
                }
            }
            Ok(Arc::new(listing))
        };
        Ok(self.meta.dir(prefix, load).await?)
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
            (false, Some(h)) => Some(EntryKind::File {
                size: h.size,
                mtime: h.mtime,
                etag: h.etag,
            }),
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
        self.inodes.lock().unwrap().forget(ino, n);
    }

    /// Attributes of `ino`, re-checked against the store once the metadata TTL has passed.
    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let node = self.node(ino)?;
        if let Some(w) = self.writer(ino) {
            let mut a = self.attr(ino, &node.kind);
            a.size = w.size();
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

    /// Opens a file. Writing needs a writable mount (else EROFS). Also says whether the kernel
    /// may keep the pages it cached at earlier opens: only when the file is still the
    /// version (ETag) it was then.
    pub async fn open(&self, ino: u64, mode: OpenMode) -> FsResult<(u64, bool)> {
        if mode.write && self.cfg.read_only {
            return Err(FsError(libc::EROFS));
        }
        self.getattr(ino).await?;
        if let Some(fh) = self.open_on_writer(ino, mode).await? {
            return Ok((fh, true));
        }
        let (node, keep_cache) = {
            let mut t = self.inodes.lock().unwrap();
            let n = t.get_mut(ino).ok_or(FsError(libc::ENOENT))?;
            let EntryKind::File { etag, .. } = &n.kind else {
                return Err(FsError(libc::EISDIR));
            };
            let keep = n.opened_etag.as_ref() == Some(etag) && !mode.truncate;
            n.opened_etag = Some(etag.clone());
            (n.clone(), keep)
        };
        let EntryKind::File { size, etag, .. } = node.kind else {
            return Err(FsError(libc::EISDIR));
        };
        let version = ObjectVersion {
            key: node.key.clone(),
            etag,
            size,
        };
        let reader: Arc<dyn FileReader> = Arc::from(self.read_path.open(version.clone()));
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if !mode.write {
            self.files
                .lock()
                .unwrap()
                .insert(fh, OpenFile::Read(reader));
            return Ok((fh, keep_cache));
        }
        let start = if mode.truncate || size == 0 {
            Start::Empty
        } else {
            Start::Existing(version)
        };
        let w = self.new_writer(&node.key, start)?;
        self.attach_writer(ino, fh, w, Some(reader), true, mode.pid);
        Ok((fh, keep_cache))
    }

    /// A handle on the writer `ino` already has, if it has one: all handles of a file being
    /// written see the same bytes.
    async fn open_on_writer(&self, ino: u64, mode: OpenMode) -> FsResult<Option<u64>> {
        let Some(w) = self.writer(ino) else {
            return Ok(None);
        };
        if mode.truncate {
            w.set_size(0).await?;
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.attach_writer(ino, fh, w, None, mode.write, mode.pid);
        Ok(Some(fh))
    }

    fn new_writer(&self, key: &str, start: Start) -> FsResult<Arc<WriteHandle>> {
        WriteHandle::create(
            self.store.clone(),
            key,
            start,
            &self.cfg.write,
            self.upload_slots.clone(),
        )
        .map_err(|e| {
            tracing::error!("cannot write {key}: {e}");
            FsError(libc::EIO)
        })
    }

    fn attach_writer(
        &self,
        ino: u64,
        fh: u64,
        w: Arc<WriteHandle>,
        base: Option<Arc<dyn FileReader>>,
        writable: bool,
        pid: u32,
    ) {
        self.writers
            .lock()
            .unwrap()
            .entry(ino)
            .or_insert_with(|| Writer {
                w: w.clone(),
                handles: 0,
            })
            .handles += 1;
        let file = OpenFile::Write {
            ino,
            w,
            base,
            writable,
            opener: if writable {
                process::of_thread(pid)
            } else {
                None
            },
        };
        self.files.lock().unwrap().insert(fh, file);
    }

    fn writer(&self, ino: u64) -> Option<Arc<WriteHandle>> {
        self.writers.lock().unwrap().get(&ino).map(|w| w.w.clone())
    }

    /// The inode of `name` in `parent` if it is a file being written (maybe not in the lake yet).
    fn pending_child(&self, parent: u64, name: &str) -> Option<u64> {
        let ino = self.inodes.lock().unwrap().child(parent, name)?;
        self.writers
            .lock()
            .unwrap()
            .contains_key(&ino)
            .then_some(ino)
    }

    fn open_file(&self, fh: u64) -> FsResult<OpenFile> {
        self.files
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(FsError(libc::EBADF))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        match self.open_file(fh)? {
            OpenFile::Read(r) => Ok(r.read(offset, size).await?),
            OpenFile::Write { w, base, .. } => match base {
                Some(base) if !w.is_loaded() => Ok(base.read(offset, size).await?),
                _ => Ok(w.read(offset, size).await?),
            },
        }
    }

    /// Writes through handle `fh`; returns the bytes taken.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        match self.open_file(fh)? {
            OpenFile::Write {
                w, writable: true, ..
            } => Ok(w.write(offset, data).await.map_err(|e| {
                // Staging failures keep their errno (ENOSPC); copying in the original
                // object (for a write into an existing file) fails as reads do.
                tracing::error!("writing {}: {e}", w.key());
                FsError(e.errno())
            })?),
            _ => Err(FsError(libc::EBADF)),
        }
    }

    /// close(2) of a descriptor of `fh` by thread `pid`. The process that opened the file
    /// commits, as [`flush`](Self::flush) does. Another process closing a descriptor it
    /// inherited (a fork; every exec closes one) does not: the writer may still be writing,
    /// and what it wrote so far must not reach the lake as the file. The last close
    /// ([`release`](Self::release)) commits then.
    pub async fn close(&self, fh: u64, pid: u32) -> FsResult<()> {
        if let Ok(OpenFile::Write {
            opener: Some(opener),
            writable: true,
            w,
            ..
        }) = self.open_file(fh)
        {
            if let Some(closer) = process::of_thread(pid) {
                if closer != opener {
                    tracing::debug!(
                        "{}: closed by process {closer}, opened by {opener}: committed at the last close",
                        w.key()
                    );
                    return Ok(());
                }
            }
        }
        self.flush(fh).await
    }

    /// fsync(2), and close(2) by the opener: commits what the handle wrote, so the file is in
    /// the lake, complete, when this returns. EIO if the upload failed (the data stays staged).
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let OpenFile::Write {
            ino,
            w,
            writable: true,
            ..
        } = self.open_file(fh)?
        else {
            return Ok(());
        };
        self.commit(ino, &w).await
    }

    async fn commit(&self, ino: u64, w: &Arc<WriteHandle>) -> FsResult<()> {
        match w.commit().await {
            Ok(None) => Ok(()),
            Ok(Some((done, size))) => {
                let kind = EntryKind::File {
                    size,
                    mtime: done.mtime,
                    etag: done.etag.clone(),
                };
                let key = w.key();
                if let Some(n) = self.inodes.lock().unwrap().get_mut(ino) {
                    n.kind = kind.clone();
                    n.checked = std::time::Instant::now();
                    // The kernel's pages are what was just written.
                    n.opened_etag = Some(done.etag);
                }
                self.changed(&key, Some(kind)).await;
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    "upload of {} failed: {e}; the data is kept in {}",
                    w.key(),
                    w.staging_path().display()
                );
                Err(FsError(libc::EIO))
            }
        }
    }

    /// The last close of a handle. A writer's leftovers are committed (errors are only
    /// logged: nobody is left to tell) and its staging file removed once safe.
    pub async fn release(&self, fh: u64) {
        let Some(file) = self.files.lock().unwrap().remove(&fh) else {
            return;
        };
        let OpenFile::Write {
            ino, w, writable, ..
        } = file
        else {
            return;
        };
        if writable && w.awaits_commit() {
            let _ = self.commit(ino, &w).await;
        }
        let last = {
            let mut writers = self.writers.lock().unwrap();
            match writers.get_mut(&ino) {
                Some(entry) if Arc::ptr_eq(&entry.w, &w) => {
                    entry.handles -= 1;
                    let last = entry.handles == 0;
                    if last {
                        writers.remove(&ino);
                    }
                    last
                }
                _ => true,
            }
        };
        if last {
            w.finish();
        }
    }

    /// Records a change this mount made to `key`: its own writes are visible at once.
    async fn changed(&self, key: &str, kind: Option<EntryKind>) {
        self.meta.put_entry(key, kind).await;
        self.meta.invalidate_dir(&parent_prefix(key)).await;
    }

    /// Opens a directory: its listing is taken once here, so offsets stay valid while it is read.
    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        let node = self.node(ino)?;
        if !node.kind.is_dir() {
            return Err(FsError(libc::ENOTDIR));
        }
        let listing = self.listing(&node.dir_prefix()).await?;
        let mut entries: Vec<(String, EntryKind)> = listing
            .entries
            .iter()
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect();
        // Files being written here that are not in the lake yet.
        let pending: Vec<(u64, Arc<WriteHandle>)> = self
            .writers
            .lock()
            .unwrap()
            .iter()
            .map(|(ino, w)| (*ino, w.w.clone()))
            .collect();
        for (child, w) in pending {
            let name = match self.inodes.lock().unwrap().get(child) {
                Some(n) if n.parent == ino => n.name.clone(),
                _ => continue,
            };
            if !listing.entries.contains_key(&name) {
                let kind = EntryKind::File {
                    size: w.size(),
                    mtime: SystemTime::now(),
                    etag: String::new(),
                };
                entries.push((name, kind));
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let dir = OpenDir {
            ino,
            parent: node.parent,
            entries,
        };
        self.dirs.lock().unwrap().insert(fh, Arc::new(dir));
        Ok(fh)
    }

    /// Hands entries from `offset` on to `add` until it reports the reply buffer full (`true`).
    /// With `plus`, every entry handed over counts as a kernel lookup (READDIRPLUS), except
    /// `.` and `..`, which the kernel does not count.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> FsResult<()> {
        let dir = self
            .dirs
            .lock()
            .unwrap()
            .get(&fh)
            .cloned()
            .ok_or(FsError(libc::EBADF))?;
        let dot_kind = EntryKind::Dir { mtime: None };
        let mut i = offset;
        while i < 2 + dir.entries.len() as u64 {
            let (ino, name, kind) = match i {
                0 => (dir.ino, ".", &dot_kind),
                1 => (dir.parent, "..", &dot_kind),
                _ => {
                    let (name, kind) = &dir.entries[(i - 2) as usize];
                    let key = {
                        let t = self.inodes.lock().unwrap();
                        let parent = t.get(dir.ino).map(|n| n.dir_prefix()).unwrap_or_default();
                        join_key(&parent, name)
                    };
                    let ino = if plus {
                        self.inodes
                            .lock()
                            .unwrap()
                            .upsert(dir.ino, name, key, kind.clone(), 0)
                    } else {
                        self.inodes
                            .lock()
                            .unwrap()
                            .child(dir.ino, name)
                            .unwrap_or(u64::MAX)
                    };
                    (ino, name.as_str(), kind)
                }
            };
            let entry = DirEntry {
                ino,
                next_offset: i + 1,
                name,
                attr: self.attr(ino, kind),
            };
            if add(entry) {
                if plus && i >= 2 {
                    // Not sent: drop the inode again if nothing else holds it.
                    self.inodes.lock().unwrap().forget(ino, 0);
                }
                break;
            }
            if plus && i >= 2 {
                self.inodes.lock().unwrap().add_lookup(ino);
            }
            i += 1;
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().unwrap().remove(&fh);
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

    /// create(2): a new, empty file, written when closed. An existing file is replaced
    /// (unless `exclusive`), as with O_TRUNC.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        exclusive: bool,
        pid: u32,
    ) -> FsResult<(Attr, u64)> {
        self.writable()?;
        let (dir, key) = self.new_name(parent, name)?;
        match self.existing(parent, &dir, name).await? {
            Some(k) if k.is_dir() => return Err(FsError(libc::EISDIR)),
            Some(_) if exclusive => return Err(FsError(libc::EEXIST)),
            _ => {}
        }
        let kind = EntryKind::File {
            size: 0,
            mtime: SystemTime::now(),
            etag: String::new(),
        };
        let ino = self
            .inodes
            .lock()
            .unwrap()
            .upsert(parent, name, key.clone(), kind.clone(), 1);
        if let Some(fh) = self
            .open_on_writer(
                ino,
                OpenMode {
                    write: true,
                    truncate: true,
                    pid,
                },
            )
            .await?
        {
            return Ok((self.getattr(ino).await?, fh));
        }
        let w = self.new_writer(&key, Start::Empty)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.attach_writer(ino, fh, w, None, true, pid);
        Ok((self.attr(ino, &kind), fh))
    }

    /// Sets the size (truncate(2), ftruncate(2), O_TRUNC); other attributes (mode, owner,
    /// times) are accepted and not stored: the mount shows its configured ones.
    pub async fn setattr(&self, ino: u64, size: Option<u64>, fh: Option<u64>) -> FsResult<Attr> {
        let Some(size) = size else {
            return self.getattr(ino).await;
        };
        self.writable()?;
        let node = self.node(ino)?;
        if node.kind.is_dir() {
            return Err(FsError(libc::EISDIR));
        }
        let via_handle = match fh.map(|fh| self.open_file(fh)) {
            Some(Ok(OpenFile::Write { w, .. })) => Some(w),
            _ => self.writer(ino),
        };
        if let Some(w) = via_handle {
            w.set_size(size).await.map_err(|e| {
                tracing::error!("truncating {}: {e}", w.key());
                FsError(e.errno())
            })?;
            return self.getattr(ino).await;
        }
        // No open writer: `truncate -s N path`. Done as a whole write of the new content.
        let current = self.getattr(ino).await?;
        if current.size == size {
            return Ok(current);
        }
        let (fh, _) = self
            .open(
                ino,
                OpenMode {
                    write: true,
                    truncate: size == 0,
                    pid: 0,
                },
            )
            .await?;
        let result = async {
            if let OpenFile::Write { w, .. } = self.open_file(fh)? {
                w.set_size(size).await.map_err(|_| FsError(libc::EIO))?;
            }
            self.flush(fh).await
        }
        .await;
        self.release(fh).await;
        result?;
        self.getattr(ino).await
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
mod model_tests;
#[cfg(test)]
mod tests;
