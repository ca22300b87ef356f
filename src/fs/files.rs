//! Open files: which handle reads what, and who commits a file being written.
//!
//! Every handle open on a file that is being written on this mount shares one
//! [`WriteHandle`] (a [`Writer`]): they all see the same bytes. Until the writer has copied
//! the original object in, reads come from that object (the `base` of the writer, shared by
//! all its handles), never from a staging file that is not filled yet.
//!
//! Who commits (SEMANTICS.md, "Who commits what"):
//! - fsync(2) through any handle;
//! - close(2) by the process that opened a writable handle (other processes closing a
//!   descriptor they inherited commit nothing: the opener may still be writing);
//! - the release of the last writable handle of the file: whatever is not committed by then.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use super::listing::EntryKind;
use super::passthrough::{Backing, ReadSlot};
use super::write::{Start, WriteHandle, MAX_FILE_SIZE};
use super::{process, Attr, FsError, FsResult, LakeFs};
use crate::reader::{FileReader, ObjectVersion};

/// What an open file handle reads (and writes) through.
#[derive(Clone)]
pub(super) enum OpenFile {
    Read(Arc<dyn FileReader>),
    /// A handle of a file being written.
    Write {
        ino: u64,
        w: Arc<WriteHandle>,
        /// The object as it was when the writer started; read until the writer copies it in.
        base: Option<Arc<dyn FileReader>>,
        writable: bool,
        /// The process that opened it (when known): only its `close` commits.
        opener: Option<u32>,
        /// Other processes seen closing a copy of this handle (a child at exec): they may
        /// still hold another copy (`Popen(stdout=f)`).
        sharers: Arc<Mutex<HashSet<u32>>>,
    },
}

/// A file being written, shared by all handles open on it.
pub(super) struct Writer {
    pub(super) w: Arc<WriteHandle>,
    base: Option<Arc<dyn FileReader>>,
    handles: usize,
    /// Handles that can write: the release of the last one commits.
    writable: usize,
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

/// An open handle, as the FUSE layer replies it.
pub struct Opened {
    pub fh: u64,
    /// The kernel may keep the pages it cached at earlier opens.
    pub keep_cache: bool,
    /// The cache file the kernel reads instead of asking us (passthrough).
    pub passthrough: Option<Arc<Backing>>,
}

impl LakeFs {
    /// Opens a file. Writing needs a writable mount (else EROFS). Also says whether the kernel
    /// may keep the pages it cached at earlier opens: only when the file is still the
    /// version (ETag) it was then.
    pub async fn open(&self, ino: u64, mode: OpenMode) -> FsResult<(u64, bool)> {
        self.open_for_kernel(ino, mode)
            .await
            .map(|o| (o.fh, o.keep_cache))
    }

    /// [`open`](Self::open), and with passthrough on (`FsConfig::passthrough`) the cache file
    /// the kernel is to read instead (see `passthrough`).
    pub async fn open_for_kernel(&self, ino: u64, mode: OpenMode) -> FsResult<Opened> {
        if mode.write && self.cfg.read_only {
            return Err(FsError(libc::EROFS));
        }
        self.getattr(ino).await?;
        let tracked = self.cfg.passthrough;
        let slot = match (tracked, mode.write) {
            (false, _) => None,
            (true, true) => Some(ReadSlot::Decided(self.iomodes.reserve_writer(ino)?)),
            (true, false) => Some(self.iomodes.reserve_reader(ino)),
        };
        if let Some(fh) = self.open_on_writer(ino, mode).await? {
            return Ok(self.opened(fh, true, slot));
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
        let EntryKind::File {
            size, etag, posix, ..
        } = node.kind
        else {
            return Err(FsError(libc::EISDIR));
        };
        let version = ObjectVersion {
            key: node.key.clone(),
            etag,
            size,
        };
        let reader: Arc<dyn FileReader> = Arc::from(self.read_path.open(version.clone()));
        if !mode.write {
            let slot = self.settle_read_open(slot, &version).await;
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            self.files
                .lock()
                .unwrap()
                .insert(fh, OpenFile::Read(reader));
            self.reading(fh, version);
            return Ok(self.opened(fh, keep_cache, slot));
        }
        let start = if mode.truncate || size == 0 {
            Start::Empty
        } else {
            Start::Existing(version)
        };
        let fresh = self.new_writer(&node.key, start)?;
        if let Some(p) = &posix {
            fresh.inherit_posix(p);
        }
        let (fh, w) = self.start_writer(ino, fresh.clone(), Some(reader), mode);
        let opened = self.opened(fh, keep_cache, slot);
        if mode.truncate && !Arc::ptr_eq(&w, &fresh) {
            self.truncate_on_open(&w).await?;
        }
        Ok(opened)
    }

    /// A handle on the writer `ino` already has, if it has one: all handles of a file being
    /// written see the same bytes.
    async fn open_on_writer(&self, ino: u64, mode: OpenMode) -> FsResult<Option<u64>> {
        let joined = {
            let mut writers = self.writers.lock().unwrap();
            writers.get_mut(&ino).map(|entry| {
                // Counted before the lock goes, so a release cannot finish it in between.
                entry.handles += 1;
                entry.writable += usize::from(mode.write);
                (entry.w.clone(), entry.base.clone())
            })
        };
        let Some((w, base)) = joined else {
            return Ok(None);
        };
        let fh = self.insert_write_handle(ino, w.clone(), base, mode);
        if mode.truncate {
            self.truncate_on_open(&w).await?;
        }
        Ok(Some(fh))
    }

    async fn truncate_on_open(&self, w: &Arc<WriteHandle>) -> FsResult<()> {
        w.set_size(0).await.map_err(|e| {
            tracing::error!("truncating {}: {e}", w.key());
            FsError(e.errno())
        })
    }

    /// Registers `fresh` as the writer of `ino` and opens a handle on it; when another open
    /// got there first, the handle joins that writer and `fresh` is dropped.
    fn start_writer(
        &self,
        ino: u64,
        fresh: Arc<WriteHandle>,
        base: Option<Arc<dyn FileReader>>,
        mode: OpenMode,
    ) -> (u64, Arc<WriteHandle>) {
        let (w, base, lost) = {
            let mut writers = self.writers.lock().unwrap();
            let entry = writers.entry(ino).or_insert_with(|| Writer {
                w: fresh.clone(),
                base,
                handles: 0,
                writable: 0,
            });
            entry.handles += 1;
            entry.writable += usize::from(mode.write);
            let lost = !Arc::ptr_eq(&entry.w, &fresh);
            (entry.w.clone(), entry.base.clone(), lost)
        };
        if lost {
            fresh.discard();
        }
        (self.insert_write_handle(ino, w.clone(), base, mode), w)
    }

    fn insert_write_handle(
        &self,
        ino: u64,
        w: Arc<WriteHandle>,
        base: Option<Arc<dyn FileReader>>,
        mode: OpenMode,
    ) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let file = OpenFile::Write {
            ino,
            w,
            base,
            writable: mode.write,
            opener: if mode.write {
                process::of_thread(mode.pid)
            } else {
                None
            },
            sharers: Arc::default(),
        };
        self.files.lock().unwrap().insert(fh, file);
        fh
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
            FsError(e.errno())
        })
    }

    /// Handles open for writing `ino`, on this mount.
    fn writable_handles(&self, ino: u64) -> usize {
        self.writers
            .lock()
            .unwrap()
            .get(&ino)
            .map_or(0, |w| w.writable)
    }

    pub(super) fn writer(&self, ino: u64) -> Option<Arc<WriteHandle>> {
        self.writers.lock().unwrap().get(&ino).map(|w| w.w.clone())
    }

    /// The inode of `name` in `parent` if it is a file being written (maybe not in the lake yet).
    pub(super) fn pending_child(&self, parent: u64, name: &str) -> Option<u64> {
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
    /// commits, as [`flush`](Self::flush) does, unless a copy of the descriptor that can
    /// write is still open in it (a `dup`) or in a process seen closing a copy (a child that
    /// kept one across exec, as `Popen(stdout=f)` does): then the last close commits, so
    /// the lake never shows the part written so far. Another process closing a descriptor
    /// it inherited commits nothing: the writer may still be writing. Nor does a process that
    /// SIGKILL is ending. The last close ([`release`](Self::release)) commits what nobody
    /// committed.
    pub async fn close(&self, fh: u64, pid: u32) -> FsResult<()> {
        if process::being_killed(pid) {
            // Nobody sees this close's answer, and a killed process waiting on a hung lake
            // would not die: the last close commits, in the background.
            tracing::debug!("handle {fh}: closed by a killed process: committed at the last close");
            return Ok(());
        }
        if let Ok(OpenFile::Write {
            ino,
            opener: Some(opener),
            writable: true,
            w,
            sharers,
            ..
        }) = self.open_file(fh)
        {
            if let Some(closer) = process::of_thread(pid) {
                if closer != opener {
                    sharers.lock().unwrap().insert(closer);
                    tracing::debug!(
                        "{}: closed by process {closer}, opened by {opener}: committed at the last close",
                        w.key()
                    );
                    return Ok(());
                }
                if w.awaits_commit() && self.written_elsewhere(ino, opener, &sharers) {
                    tracing::debug!(
                        "{}: another descriptor still writes it: committed at its close",
                        w.key()
                    );
                    return Ok(());
                }
            }
        }
        self.flush(fh).await
    }

    /// Whether the opener, or a process known to share its handle, still has a descriptor
    /// that can write `ino` of this mount.
    fn written_elsewhere(&self, ino: u64, opener: u32, sharers: &Mutex<HashSet<u32>>) -> bool {
        let Some(&dev) = self.device.get() else {
            return false;
        };
        let others: Vec<u32> = sharers.lock().unwrap().iter().copied().collect();
        std::iter::once(opener)
            .chain(others)
            .any(|p| process::has_writable_fd(p, dev, ino))
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

    pub(super) async fn commit(&self, ino: u64, w: &Arc<WriteHandle>) -> FsResult<()> {
        self.commit_as(ino, w, false).await
    }

    /// A commit; `live`: a periodic one of a file still open (see `live`), whose failure
    /// is logged and left to the next.
    pub(super) async fn commit_as(
        &self,
        ino: u64,
        w: &Arc<WriteHandle>,
        live: bool,
    ) -> FsResult<()> {
        if w.awaits_commit() {
            self.retain_readers(&w.key()).await;
        }
        let done = if live {
            w.commit_live().await
        } else {
            w.commit().await
        };
        match done {
            Ok(None) => Ok(()),
            Ok(Some((done, size))) => {
                let posix = w.posix();
                let kind = EntryKind::File {
                    size,
                    mtime: posix.mtime.unwrap_or(done.mtime),
                    etag: done.etag.clone(),
                    posix: posix.boxed(),
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
            Err(e) if live => {
                tracing::warn!("live commit of {} failed: {e}; trying again later", w.key());
                Err(FsError(e.errno()))
            }
            Err(e) => {
                let kept = match w.keep_staged() {
                    Ok(path) => format!("the data is kept in {}", path.display()),
                    Err(e) => format!("its staging file is gone and cannot be made again ({e})"),
                };
                tracing::error!("upload of {} failed: {e}; {kept}", w.key());
                Err(FsError(libc::EIO))
            }
        }
    }

    /// The last close of a handle. The release of the last writable handle of a file commits
    /// what is not committed yet (errors are only logged: nobody is left to tell); the last
    /// handle removes the staging file once safe.
    /// The last close of a read handle, done at once: it waits for nothing, so the FUSE
    /// layer answers it without a task. False for a write handle: `release` finishes those.
    /// Needs a tokio runtime entered (a kept copy's delete is spawned).
    pub fn release_if_reading(&self, fh: u64) -> bool {
        let file = {
            let mut files = self.files.lock().unwrap();
            if matches!(files.get(&fh), Some(OpenFile::Write { .. })) {
                return false;
            }
            files.remove(&fh)
        };
        self.iomodes.release(fh);
        self.done_reading(fh);
        drop(file);
        true
    }

    pub async fn release(&self, fh: u64) {
        self.iomodes.release(fh);
        let Some(file) = self.files.lock().unwrap().remove(&fh) else {
            return;
        };
        let OpenFile::Write {
            ino, w, writable, ..
        } = file
        else {
            self.done_reading(fh);
            return;
        };
        // The writer stays registered while this commits, so an open meanwhile joins it
        // (and sees the staged bytes) instead of reading the lake's older version.
        let last_writable = {
            let mut writers = self.writers.lock().unwrap();
            match writers.get_mut(&ino) {
                Some(entry) if Arc::ptr_eq(&entry.w, &w) => {
                    entry.writable -= usize::from(writable);
                    entry.writable == 0
                }
                _ => true,
            }
        };
        if writable && last_writable && w.awaits_commit() {
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
            w.finish().await;
        }
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
            posix: None,
        };
        let ino = self
            .inodes
            .lock()
            .unwrap()
            .upsert(parent, name, key.clone(), kind.clone(), 1);
        let mode = OpenMode {
            write: true,
            truncate: true,
            pid,
        };
        if let Some(fh) = self.open_on_writer(ino, mode).await? {
            return Ok((self.getattr(ino).await?, fh));
        }
        let fresh = self.new_writer(&key, Start::Empty)?;
        let (fh, w) = self.start_writer(ino, fresh.clone(), None, mode);
        if !Arc::ptr_eq(&w, &fresh) {
            self.truncate_on_open(&w).await?;
        }
        Ok((self.getattr(ino).await?, fh))
    }

    /// Sets the size (truncate(2), ftruncate(2), O_TRUNC); other attributes (mode, owner,
    /// times) are accepted and not stored: the mount shows its configured ones.
    /// truncate, chmod, chown, utimens: the size first, then what goes into metadata.
    pub async fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        fh: Option<u64>,
        attrs: &crate::store::posix::PosixAttrs,
    ) -> FsResult<Attr> {
        if let Some(size) = size {
            self.set_size(ino, size, fh).await?;
        }
        if *attrs != Default::default() {
            self.store_attrs(ino, attrs).await?;
        }
        self.getattr(ino).await
    }

    async fn set_size(&self, ino: u64, size: u64, fh: Option<u64>) -> FsResult<Attr> {
        self.writable()?;
        let node = self.node(ino)?;
        if node.kind.is_dir() {
            return Err(FsError(libc::EISDIR));
        }
        if size > MAX_FILE_SIZE {
            return Err(FsError(libc::EFBIG));
        }
        if let Some(Ok(OpenFile::Write { w, .. })) = fh.map(|fh| self.open_file(fh)) {
            // ftruncate(2) through a handle that writes the file.
            w.set_size(size).await.map_err(|e| {
                tracing::error!("truncating {}: {e}", w.key());
                FsError(e.errno())
            })?;
            return self.getattr(ino).await;
        }
        // truncate(2) of a path: through a handle of its own, which joins a writer still
        // registered (one another process writes, or one whose last release is on its way)
        // and keeps it registered until this change is committed by the last close. A writer
        // used without a handle could be finished under it and the change lost.
        let current = self.getattr(ino).await?;
        if current.size == size {
            return Ok(current);
        }
        let mode = OpenMode {
            write: true,
            truncate: size == 0,
            pid: 0,
        };
        let (fh, _) = self.open(ino, mode).await?;
        let result: FsResult<()> = async {
            let OpenFile::Write { w, .. } = self.open_file(fh)? else {
                return Ok(());
            };
            w.set_size(size).await.map_err(|e| {
                tracing::error!("truncating {}: {e}", w.key());
                FsError(e.errno())
            })?;
            // Alone, the change is in the lake when truncate returns; next to other writing
            // handles it goes up with their last close, like their own writes.
            if self.writable_handles(ino) == 1 {
                self.flush(fh).await?;
            }
            Ok(())
        }
        .await;
        self.release(fh).await;
        result?;
        self.getattr(ino).await
    }
}
