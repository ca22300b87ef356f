//! Writing a file through the mount: every byte goes to a local staging file first, then up
//! to the lake as blocks (Put Block), several at a time while the writer is still writing;
//! a commit (Put Block List) makes the object appear whole, at once.
//!
//! The staging file holds the whole content, so writes may come in any order, rewrite what
//! was written, leave holes (zeros) or truncate: a block is uploaded early once everything
//! before its end has been written, and again at commit if it changed since. A failed upload
//! loses nothing: the staging file stays, with a sidecar naming the lake key it was meant for.
//!
//! The invariants (SEMANTICS.md, "Who commits what"):
//! - One [`WriteHandle`] per file being written on a mount, shared by every open handle of
//!   it: they all read and write the same staged bytes.
//! - Changes (write, truncate, copying in the original) and commits take turns on one lock,
//!   so a commit uploads a content nothing changes under it, and what it marks clean is
//!   exactly what it uploaded. A write that comes during a commit waits for it and makes the
//!   file dirty again.
//! - Until the original object has been copied in whole (`loaded`), the staging file is not
//!   read: readers get the original object.
//! - The sidecar says `uploaded` only while the lake holds exactly the staged bytes; it says
//!   otherwise before a change is acknowledged.

mod base;
mod commit;
pub mod staging;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::{Notify, Semaphore};

use crate::reader::ObjectVersion;
use crate::store::posix::PosixAttrs;
use crate::store::{DynStore, StoreError, StoreResult};
use staging::StagedFile;
pub use staging::{leftovers, Leftover};

/// The largest file a block blob can hold (50,000 blocks of 4,000 MiB): a size past it is
/// EFBIG at once, not a staging file nobody can upload.
pub const MAX_FILE_SIZE: u64 = 50_000 * 4000 * (1 << 20);

/// Settings shared by all write handles of one mount.
#[derive(Clone, Debug)]
pub struct WriteConfig {
    /// Where staging files go (the cache disk on a Batch node).
    pub staging_dir: PathBuf,
    /// Size of the blocks uploaded (Azure allows 50,000 per object).
    pub block_size: u64,
}

/// What a handle starts from.
pub enum Start {
    /// A new, empty file (create, or open with O_TRUNC).
    Empty,
    /// An existing object, copied into staging on the first change (writes at any offset,
    /// appends, truncation to a non-zero size), then rewritten whole at commit.
    Existing(ObjectVersion),
}

struct State {
    size: u64,
    /// Everything below this offset has been written (or loaded).
    filled: u64,
    /// Written ranges above `filled` (start -> end), merged into it as the gap closes.
    extents: BTreeMap<u64, u64>,
    /// Per block: bumped by every change to it.
    version: HashMap<u64, u64>,
    /// Per block: the version its copy in the lake has (staged, or committed when the store
    /// keeps committed blocks), and the id it has there.
    uploaded: HashMap<u64, (u64, String)>,
    /// Blocks of the original object not read into the staging file (see `base`).
    absent: BTreeSet<u64>,
    /// The lake object that holds the `absent` blocks: the original, then each commit's.
    lake_etag: String,
    in_flight: HashSet<u64>,
    /// Next block to consider for an early upload.
    next_early: u64,
    md5: Option<Md5>,
    /// Bytes `md5` has consumed, in order; `None` once a write broke the order.
    hashed: Option<u64>,
    /// Changed since the last commit (or never committed).
    dirty: bool,
    /// When it last went from clean to dirty: a live commit is due `--commit-interval` later.
    dirty_since: Option<Instant>,
    /// The content is in the staging file (false only while an existing object is untouched).
    loaded: bool,
    /// The name was unlinked while open: nothing is committed any more.
    unlinked: bool,
    /// The last commit failed: the staging file must be kept.
    failed: bool,
    /// A write or truncate failed (a full staging disk): the staged content is not what the
    /// writer meant, so it is never committed; it stays staged.
    broken: Option<String>,
    /// Commits done; part of block ids so a later commit never reuses a committed block.
    generation: u64,
    last_error: Option<StoreError>,
    /// When the content last changed: the file's mtime while it is being written.
    modified: SystemTime,
    /// Modes, owners and a time set (chmod, chown, utimens) to go up with the next commit;
    /// a change of the content drops the time (it is `modified` again).
    posix: PosixAttrs,
}

pub struct WriteHandle {
    store: DynStore,
    key: Mutex<String>,
    staged: StagedFile,
    block_size: u64,
    upload_id: String,
    slots: Arc<Semaphore>,
    base: Option<ObjectVersion>,
    st: Mutex<State>,
    /// Signalled whenever an upload finishes.
    idle: Notify,
    /// Taken by every change and by every commit: they take turns (see the module comment).
    turn: tokio::sync::Mutex<()>,
}

fn unique_id() -> String {
    use sha2::Digest as _;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
    );
    let h = sha2::Sha256::digest(seed.as_bytes());
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn io(what: &Path, e: std::io::Error) -> StoreError {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    StoreError::Local(format!("staging file {}: {e}", what.display()), errno)
}

impl WriteHandle {
    /// A handle writing `key`, staged in a new file of `cfg.staging_dir`.
    pub fn create(
        store: DynStore,
        key: &str,
        start: Start,
        cfg: &WriteConfig,
        slots: Arc<Semaphore>,
    ) -> StoreResult<Arc<WriteHandle>> {
        let dir = &cfg.staging_dir;
        let id = unique_id();
        let (base, loaded) = match start {
            Start::Empty => (None, true),
            Start::Existing(v) => (Some(v), false),
        };
        // An untouched existing object needs no recovery: the lake has it.
        let staged = StagedFile::create(dir, &id, &store.describe(), key, !loaded)
            .map_err(|e| io(dir, e))?;
        let st = State {
            size: 0,
            filled: 0,
            extents: BTreeMap::new(),
            version: HashMap::new(),
            uploaded: HashMap::new(),
            absent: BTreeSet::new(),
            lake_etag: String::new(),
            in_flight: HashSet::new(),
            next_early: 0,
            md5: Some(Md5::new()),
            hashed: Some(0),
            dirty: loaded,
            dirty_since: loaded.then(Instant::now),
            loaded,
            unlinked: false,
            failed: false,
            broken: None,
            generation: 0,
            last_error: None,
            modified: SystemTime::now(),
            posix: PosixAttrs::default(),
        };
        Ok(Arc::new(WriteHandle {
            store,
            key: Mutex::new(key.to_string()),
            staged,
            block_size: cfg.block_size.max(1),
            upload_id: id,
            slots,
            base,
            st: Mutex::new(st),
            idle: Notify::new(),
            turn: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn key(&self) -> String {
        self.key.lock().unwrap().clone()
    }

    pub fn staging_path(&self) -> PathBuf {
        self.staged.path()
    }

    /// The size the file has as far as this handle knows.
    pub fn size(&self) -> u64 {
        let st = self.st.lock().unwrap();
        if st.loaded {
            st.size
        } else {
            self.base.as_ref().map_or(0, |b| b.size)
        }
    }

    /// The mtime to show while the file is written: a time set since the last change, or
    /// when the content last changed.
    pub fn modified(&self) -> SystemTime {
        let st = self.st.lock().unwrap();
        st.posix.mtime.unwrap_or(st.modified)
    }

    /// The attributes the next commit stores.
    pub fn posix(&self) -> PosixAttrs {
        self.st.lock().unwrap().posix.clone()
    }

    /// The modes and owners of the object being rewritten, kept by the rewrite (its time
    /// is the rewrite's own).
    pub fn inherit_posix(&self, a: &PosixAttrs) {
        let mut st = self.st.lock().unwrap();
        st.posix = PosixAttrs {
            mtime: None,
            ..a.clone()
        };
    }

    /// Sets attributes for the next commit; says whether one is due (the content changed
    /// since the last), else the caller stores them on the object in the lake itself.
    pub fn set_posix(&self, a: &PosixAttrs) -> bool {
        let mut st = self.st.lock().unwrap();
        st.posix.merge(a);
        st.dirty
    }

    /// Whether reads must come from the staging file (false: the untouched original object).
    pub fn is_loaded(&self) -> bool {
        self.st.lock().unwrap().loaded
    }

    /// Copies the original object into the staging file before its first change. Called
    /// with the turn held, so it runs once and no write lands before it is done.
    async fn load(&self) -> StoreResult<()> {
        let Some(base) = &self.base else {
            return Ok(());
        };
        if self.st.lock().unwrap().loaded || self.adopt_base().await? {
            return Ok(());
        }
        let bs = self.block_size;
        let file = self.staged.file();
        let mut off = 0;
        while off < base.size {
            let end = (off + bs).min(base.size);
            let data = self
                .store
                .get_range(&base.key, off..end, &base.etag)
                .await?;
            if data.len() as u64 != end - off {
                return Err(StoreError::Other(format!("{}: short read", base.key)));
            }
            file.write_all_at(&data, off)
                .map_err(|e| io(&self.staging_path(), e))?;
            off = end;
        }
        // A copy the size of the original, so no reader ever finds the file shorter.
        file.set_len(base.size)
            .map_err(|e| io(&self.staging_path(), e))?;
        let mut st = self.st.lock().unwrap();
        st.now_loaded(base.size);
        for b in 0..base.size.div_ceil(bs) {
            *st.version.entry(b).or_default() += 1;
        }
        Ok(())
    }

    /// Before a change is acknowledged: the file is dirty, and the sidecar says so.
    fn begin_change(&self) -> StoreResult<()> {
        let was_clean = !self.st.lock().unwrap().dirty;
        if was_clean {
            self.staged
                .mark(false)
                .map_err(|e| io(&self.staged.sidecar(), e))?;
        }
        let mut st = self.st.lock().unwrap();
        if !st.dirty {
            st.dirty_since = Some(Instant::now());
        }
        st.dirty = true;
        st.modified = SystemTime::now();
        st.posix.mtime = None;
        Ok(())
    }

    /// Writes `data` at `offset`; returns the bytes taken.
    pub async fn write(self: &Arc<Self>, offset: u64, data: &[u8]) -> StoreResult<u32> {
        if offset.saturating_add(data.len() as u64) > MAX_FILE_SIZE {
            // Refused before anything changed: the file stays what it was.
            return Err(StoreError::Local(
                format!("{}: past the largest size a blob can have", self.key()),
                libc::EFBIG,
            ));
        }
        let _turn = self.turn.lock().await;
        let r = self.write_staged(offset, data).await;
        self.note_failure(&r);
        r
    }

    /// A failed change leaves a staged content nobody wrote: remember it, never commit it.
    fn note_failure<T>(&self, r: &StoreResult<T>) {
        if let Err(e) = r {
            self.st
                .lock()
                .unwrap()
                .broken
                .get_or_insert_with(|| e.to_string());
        }
    }

    async fn write_staged(self: &Arc<Self>, offset: u64, data: &[u8]) -> StoreResult<u32> {
        let end = offset + data.len() as u64;
        self.load().await?;
        if !data.is_empty() {
            // Blocks left in the lake that this write changes but does not cover are read
            // in first (see `base`).
            let bs = self.block_size;
            let size = self.st.lock().unwrap().size;
            let first = offset.min(size) / bs;
            let partial = (first..=(end - 1) / bs)
                .filter(|b| !(b * bs >= offset && ((b + 1) * bs).min(size.max(end)) <= end));
            self.read_in(partial.collect::<Vec<_>>()).await?;
            {
                let mut st = self.st.lock().unwrap();
                for b in first..=(end - 1) / bs {
                    st.absent.remove(&b);
                }
            }
            self.whole_again()?;
        }
        self.begin_change()?;
        self.staged
            .file()
            .write_all_at(data, offset)
            .map_err(|e| io(&self.staging_path(), e))?;
        let mut st = self.st.lock().unwrap();
        // Every block whose bytes or length change gets a new version: those written, and
        // those a write past the end grows (the old last block, and holes of zeros).
        let changed_from = offset.min(st.size);
        st.size = st.size.max(end);
        if st.hashed == Some(offset) {
            // The common case, a sequential writer: hash as we go, so commit need not reread.
            if let Some(m) = st.md5.as_mut() {
                m.update(data);
            }
            st.hashed = Some(end);
        } else {
            st.hashed = None;
        }
        if !data.is_empty() {
            let bs = self.block_size;
            for b in changed_from / bs..=(end - 1) / bs {
                *st.version.entry(b).or_default() += 1;
            }
        }
        mark_written(&mut st, offset, end);
        self.start_early_uploads(&mut st);
        Ok(data.len() as u32)
    }

    /// Sets the size (truncate or extend with zeros).
    pub async fn set_size(self: &Arc<Self>, size: u64) -> StoreResult<()> {
        if size > MAX_FILE_SIZE {
            // Refused before anything changed: the file stays what it was.
            return Err(StoreError::Local(
                format!("{}: {size} bytes is past the largest blob", self.key()),
                libc::EFBIG,
            ));
        }
        let _turn = self.turn.lock().await;
        let r = self.resize_staged(size).await;
        self.note_failure(&r);
        r
    }

    async fn resize_staged(self: &Arc<Self>, size: u64) -> StoreResult<()> {
        if size > 0 {
            self.load().await?;
        }
        {
            // Blocks left in the lake that change length are read in; those past the new
            // size are gone from the file (see `base`).
            let bs = self.block_size;
            let old = self.st.lock().unwrap().size;
            let (lo, hi) = (old.min(size), old.max(size));
            if lo < hi {
                let keep: Vec<u64> = (lo / bs..=(hi - 1) / bs)
                    .filter(|b| b * bs < size)
                    .collect();
                self.read_in(keep).await?;
                self.st.lock().unwrap().absent.retain(|b| b * bs < size);
                self.whole_again()?;
            }
        }
        self.begin_change()?;
        self.staged
            .file()
            .set_len(size)
            .map_err(|e| io(&self.staging_path(), e))?;
        let mut st = self.st.lock().unwrap();
        let old = if st.loaded {
            st.size
        } else {
            self.base.as_ref().map_or(0, |b| b.size)
        };
        st.loaded = true;
        st.size = size;
        st.filled = st.filled.min(size);
        st.extents.retain(|s, _| *s < size);
        for e in st.extents.values_mut() {
            *e = (*e).min(size);
        }
        if size == 0 {
            st.md5 = Some(Md5::new());
            st.hashed = Some(0);
            st.next_early = 0;
        } else if st.hashed.is_some_and(|h| h > size) || size > old {
            st.hashed = None;
        }
        let bs = self.block_size;
        let (lo, hi) = (old.min(size), old.max(size));
        if lo < hi {
            for b in lo / bs..=(hi - 1) / bs {
                *st.version.entry(b).or_default() += 1;
            }
        }
        st.next_early = st.next_early.min(size / bs);
        Ok(())
    }

    /// Reads from the staging file (only when [`WriteHandle::is_loaded`]). A read racing a
    /// truncate gets fewer bytes, never an error.
    pub async fn read(&self, offset: u64, len: u32) -> StoreResult<Bytes> {
        let size = self.size();
        let end = offset.saturating_add(len as u64).min(size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        if !self.staged_whole() {
            return self.read_mixed(offset, end).await;
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let got = self.read_staged_at(&mut buf, offset)?;
        buf.truncate(got);
        Ok(Bytes::from(buf))
    }

    /// Fills `buf` from the staging file at `offset`; fewer bytes at its end.
    fn read_staged_at(&self, buf: &mut [u8], offset: u64) -> StoreResult<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self
                .staged
                .file()
                .read_at(&mut buf[got..], offset + got as u64)
            {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(&self.staging_path(), e)),
            }
        }
        Ok(got)
    }

    /// The name was removed: nothing more is committed, and the staging file can go. Waits
    /// for a commit under way (a release's, an fsync's), so the caller's delete comes after
    /// it and the name cannot come back.
    pub async fn mark_unlinked(&self) {
        let _turn = self.turn.lock().await;
        self.st.lock().unwrap().unlinked = true;
    }

    /// Points the handle at another key (the file was renamed while open).
    pub fn retarget(&self, key: &str) {
        *self.key.lock().unwrap() = key.to_string();
        let clean = !self.st.lock().unwrap().dirty;
        self.staged.retarget(key, clean);
        // Blocks staged under the old key are not the new key's.
        self.forget_staged_blocks();
    }

    /// Changed and not yet tried: the last close commits it. After a failed commit (the
    /// writer was told EIO) the data stays staged for recovery rather than appearing later.
    pub fn awaits_commit(&self) -> bool {
        let st = self.st.lock().unwrap();
        st.dirty && !st.unlinked && !st.failed && st.broken.is_none()
    }

    /// Awaits a commit and has for `interval` or longer: a live commit is due.
    pub fn live_commit_due(&self, interval: Duration) -> bool {
        let since = self.st.lock().unwrap().dirty_since;
        self.awaits_commit() && since.is_some_and(|t| t.elapsed() >= interval)
    }

    /// Makes sure the staged data has a name someone can recover it from; returns it. Not
    /// while blocks of it are only in the lake: the file is not whole, and an upload of it
    /// would write holes.
    pub fn keep_staged(&self) -> std::io::Result<PathBuf> {
        if !self.staged_whole() {
            return Err(std::io::Error::other(
                "only the changed blocks are staged; the rest was the lake object's, which another writer replaced",
            ));
        }
        self.staged.keep()
    }

    /// A writer that never served a handle (another open registered first): nothing of it
    /// is wanted.
    pub fn discard(&self) {
        self.staged.remove();
    }

    /// Called when the last handle goes: the staging file is removed unless its content
    /// never reached the lake. Then it is kept under a name (made anew if someone removed
    /// it), and the log says where, or that it could not be kept.
    pub async fn finish(&self) {
        let keep = {
            let st = self.st.lock().unwrap();
            (st.failed || st.dirty || st.broken.is_some()) && !st.unlinked
        };
        if !keep {
            self.staged.remove();
            return;
        }
        if !self.staged_whole() {
            // Blocks left in the lake are read in, so what is kept is the whole file.
            if let Err(e) = self.read_in_all().await {
                self.staged.remove();
                tracing::error!(
                    "{}: not uploaded, and the change is lost: only the changed blocks were staged, and the rest cannot be read from the lake ({e})",
                    self.key()
                );
                return;
            }
        }
        match self.staged.keep() {
            Ok(path) => tracing::error!(
                "{}: not uploaded; the data is kept in {} (its target is in {}); upload it with `lakemount upload`",
                self.key(),
                path.display(),
                self.staged.sidecar().display()
            ),
            Err(e) => tracing::error!(
                "{}: not uploaded, and the staged data is lost: its staging file was removed and cannot be written again ({e})",
                self.key()
            ),
        }
    }
}

impl State {
    /// The staging file now stands for the whole file, `size` bytes, all of them written
    /// (read in, or left in the lake: see `base`), in no order the running MD5 followed.
    fn now_loaded(&mut self, size: u64) {
        self.loaded = true;
        self.size = size;
        self.filled = size;
        self.hashed = None;
    }
}

/// Records `[start, end)` as written and grows the filled prefix.
fn mark_written(st: &mut State, start: u64, end: u64) {
    if start <= st.filled {
        st.filled = st.filled.max(end);
    } else {
        let e = st.extents.entry(start).or_insert(end);
        *e = (*e).max(end);
    }
    while let Some((&s, &e)) = st.extents.first_key_value() {
        if s > st.filled {
            break;
        }
        st.filled = st.filled.max(e);
        st.extents.remove(&s);
    }
}

#[cfg(test)]
mod tests;
