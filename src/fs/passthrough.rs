//! Which kernel I/O mode each open handle of a file is in, so reads of a file the disk cache
//! holds whole can go from the kernel straight to the cache's file (FUSE passthrough).
//!
//! The kernel keeps one mode per inode. While a handle reads it through a backing file, every
//! other open of that inode must name the same backing file, and an open that mixes modes
//! fails with EIO. So a file is opened with passthrough only when no handle has it open the
//! normal way; while passthrough handles are open, read opens join them (same backing file:
//! the version they opened) and write opens fail with ETXTBSY, like writing a running program.
//!
//! A backing file outlives its last handle, idle, so that the next open of the file (the next
//! epoch) names it again without opening and registering a file: see `IdleBackings`.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{FsError, LakeFs, Opened};
use crate::metrics::Metrics;
use crate::reader::{Complete, ObjectVersion};

/// A cache file backing passthrough opens of one inode. `edge` is the FUSE layer's handle
/// for it, made at the first open and dropped (closing it in the kernel) with the last.
pub struct Backing {
    pub file: File,
    pub edge: Mutex<Option<Box<dyn Any + Send>>>,
    /// The object version whose bytes the file holds.
    version: ObjectVersion,
}

impl Backing {
    pub fn new(file: File, version: ObjectVersion) -> Arc<Backing> {
        Arc::new(Backing {
            file,
            edge: Mutex::new(None),
            version,
        })
    }

    /// Registered with the kernel (an open named it).
    fn registered(&self) -> bool {
        self.edge.lock().unwrap().is_some()
    }
}

#[derive(Default)]
struct Modes {
    plain: usize,
    passthrough: usize,
    backing: Option<Arc<Backing>>,
}

struct Table {
    by_ino: HashMap<u64, Modes>,
    /// Each handle's inode and whether it is a passthrough one.
    by_fh: HashMap<u64, (u64, bool)>,
    idle: IdleBackings,
}

/// Backing files of inodes with no handle open, still registered with the kernel, least
/// recently closed first out. A small file's open otherwise costs more than its read: opening
/// the cache file, locking and registering it, and closing both at release. Reused only for
/// the same object version, and only while the disk cache finds the file unchanged since its
/// check (`ReadPath::still_complete`). Each holds a descriptor and the file's shared lock; a
/// file evicted meanwhile is unlinked and its space comes back only when it leaves the set, so
/// the bytes of idle files are bounded too, and only small files are kept (for a large one the
/// open is a small part of reading it anyway).
pub struct IdleBackings {
    lru: LruCache<u64, Arc<Backing>>,
    bytes: u64,
    max_bytes: u64,
    max_file: u64,
}

/// Idle backing files at most: one descriptor each (and a registration in the kernel). Also
/// at most half the descriptors the process may open.
pub const IDLE_BACKINGS: usize = 16_384;
/// Bytes of idle backing files at most: the disk space evictions may have to leave allocated
/// until their files leave the idle set.
pub const IDLE_BACKING_BYTES: u64 = 1 << 30;
/// The largest file kept idle: a default block.
pub const IDLE_BACKING_FILE: u64 = 8 << 20;

impl IdleBackings {
    pub fn new(max_files: usize, max_bytes: u64, max_file: u64) -> IdleBackings {
        IdleBackings {
            lru: LruCache::new(NonZeroUsize::new(max_files.max(1)).unwrap()),
            bytes: 0,
            max_bytes,
            max_file,
        }
    }

    /// Keeps `b` for `ino`; returns what has to go (to be dropped outside any lock: dropping
    /// a backing closes it in the kernel).
    fn keep(&mut self, ino: u64, b: Arc<Backing>) -> Vec<Arc<Backing>> {
        let size = b.version.size;
        if size > self.max_file.min(self.max_bytes) || !b.registered() {
            return vec![b];
        }
        let mut out = Vec::new();
        if let Some((_, old)) = self.lru.push(ino, b) {
            self.bytes -= old.version.size;
            out.push(old);
        }
        self.bytes += size;
        while self.bytes > self.max_bytes {
            let Some((_, old)) = self.lru.pop_lru() else {
                break;
            };
            self.bytes -= old.version.size;
            out.push(old);
        }
        out
    }

    fn take(&mut self, ino: u64) -> Option<Arc<Backing>> {
        let b = self.lru.pop(&ino)?;
        self.bytes -= b.version.size;
        Some(b)
    }

    fn clear(&mut self) -> Vec<Arc<Backing>> {
        self.bytes = 0;
        let mut out = Vec::new();
        while let Some((_, b)) = self.lru.pop_lru() {
            out.push(b);
        }
        out
    }

    fn len(&self) -> usize {
        self.lru.len()
    }
}

pub struct IoModes {
    table: Mutex<Table>,
    enabled: AtomicBool,
    /// Large files being checked in the background (one check each).
    checking: Arc<Mutex<HashSet<ObjectVersion>>>,
}

/// Files up to this size are checked before their first passthrough open (about 30 ms of
/// disk); larger ones in the background.
const CHECK_BEFORE_OPEN: u64 = 64 << 20;

/// An open's place in the table, taken before the handle exists; given back on drop unless
/// bound to the handle.
pub struct Reservation<'a> {
    modes: &'a IoModes,
    ino: u64,
    backing: Option<Arc<Backing>>,
    bound: bool,
}

/// What a read open found: a mode already decided, or none (the file has no open handles
/// and may be tried for passthrough).
pub enum ReadSlot<'a> {
    Decided(Reservation<'a>),
    Open(u64),
}

impl IoModes {
    pub fn new(enabled: bool, idle: IdleBackings) -> IoModes {
        IoModes {
            table: Mutex::new(Table {
                by_ino: HashMap::new(),
                by_fh: HashMap::new(),
                idle,
            }),
            enabled: AtomicBool::new(enabled),
            checking: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Whether a background check of `v` may start (none running).
    fn start_check(&self, v: &ObjectVersion) -> bool {
        self.checking.lock().unwrap().insert(v.clone())
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns passthrough off for the rest of the mount (the kernel or the capability is
    /// missing). Handles open keep their mode.
    pub fn disable(&self, why: &str) {
        if self.enabled.swap(false, Ordering::Relaxed) {
            tracing::warn!("passthrough reads are off: {why}");
        }
        let gone = self.table.lock().unwrap().idle.clear();
        drop(gone);
    }

    fn reserve(&self, ino: u64, t: &mut Table, backing: Option<Arc<Backing>>) -> Reservation<'_> {
        let m = t.by_ino.entry(ino).or_default();
        match &backing {
            Some(b) => {
                m.passthrough += 1;
                m.backing.get_or_insert_with(|| b.clone());
            }
            None => m.plain += 1,
        }
        Reservation {
            modes: self,
            ino,
            backing,
            bound: false,
        }
    }

    /// A write open: the normal mode, or ETXTBSY while passthrough readers hold the file.
    pub fn reserve_writer(&self, ino: u64) -> Result<Reservation<'_>, FsError> {
        let mut t = self.table.lock().unwrap();
        if t.by_ino.get(&ino).is_some_and(|m| m.passthrough > 0) {
            return Err(FsError(libc::ETXTBSY));
        }
        // The file is about to change: its idle backing would not be reused.
        let gone = t.idle.take(ino);
        let r = self.reserve(ino, &mut t, None);
        drop(t);
        drop(gone);
        Ok(r)
    }

    /// The idle backing file of `ino` for `version`, taken out of the idle set, when no
    /// handle has the inode open. One for another version is dropped.
    pub fn take_idle(&self, ino: u64, version: &ObjectVersion) -> Option<Arc<Backing>> {
        let mut t = self.table.lock().unwrap();
        if t.by_ino.contains_key(&ino) {
            return None;
        }
        let b = t.idle.take(ino)?;
        drop(t);
        (b.version == *version).then_some(b)
    }

    /// A read open: joins the mode the file's open handles are in, if any.
    pub fn reserve_reader(&self, ino: u64) -> ReadSlot<'_> {
        let mut t = self.table.lock().unwrap();
        match t.by_ino.get(&ino) {
            Some(m) if m.passthrough > 0 => {
                let b = m.backing.clone();
                ReadSlot::Decided(self.reserve(ino, &mut t, b))
            }
            Some(m) if m.plain > 0 => ReadSlot::Decided(self.reserve(ino, &mut t, None)),
            _ if !self.enabled() => ReadSlot::Decided(self.reserve(ino, &mut t, None)),
            _ => ReadSlot::Open(ino),
        }
    }

    /// Settles a read open that found the file closed, with the cache file it may use (None:
    /// not complete in the cache). Handles opened meanwhile decide the mode.
    pub fn settle(&self, ino: u64, candidate: Option<Arc<Backing>>) -> Reservation<'_> {
        let mut t = self.table.lock().unwrap();
        let backing = match t.by_ino.get(&ino) {
            Some(m) if m.passthrough > 0 => m.backing.clone(),
            Some(m) if m.plain > 0 => None,
            _ if !self.enabled() => None,
            _ => candidate.clone(),
        };
        let r = self.reserve(ino, &mut t, backing);
        drop(t);
        drop(candidate);
        r
    }

    /// The last close of handle `fh`.
    pub fn release(&self, fh: u64) {
        let mut t = self.table.lock().unwrap();
        let Some((ino, passthrough)) = t.by_fh.remove(&fh) else {
            return;
        };
        let gone = Self::unreserve(&mut t, ino, passthrough);
        drop(t);
        drop(gone);
    }

    /// Passthrough of `fh` was refused at the edge: it reads the normal way, and so does
    /// every later open of the mount. True if `fh` was a passthrough handle.
    pub fn refused(&self, fh: u64, why: &str) -> bool {
        self.disable(why);
        let mut t = self.table.lock().unwrap();
        let Some((ino, pt)) = t.by_fh.get_mut(&fh) else {
            return false;
        };
        if !*pt {
            return false;
        }
        *pt = false;
        let ino = *ino;
        let gone = Self::unreserve(&mut t, ino, true);
        t.by_ino.entry(ino).or_default().plain += 1;
        drop(t);
        drop(gone);
        true
    }

    /// Gives back a handle's place; the inode's backing file goes idle with its last
    /// passthrough handle. Returns what is to be dropped once the table's lock is let go.
    #[must_use]
    fn unreserve(t: &mut Table, ino: u64, passthrough: bool) -> Vec<Arc<Backing>> {
        let Some(m) = t.by_ino.get_mut(&ino) else {
            return Vec::new();
        };
        let mut idle = None;
        if passthrough {
            m.passthrough -= 1;
            if m.passthrough == 0 {
                idle = m.backing.take();
            }
        } else {
            m.plain -= 1;
        }
        if m.plain == 0 && m.passthrough == 0 {
            t.by_ino.remove(&ino);
        }
        match idle {
            // Kept only while no handle has the inode open (a refused open turns the handle
            // into a normal one, which must not find a backing kept for its inode).
            Some(b) if !t.by_ino.contains_key(&ino) => t.idle.keep(ino, b),
            Some(b) => vec![b],
            None => Vec::new(),
        }
    }

    /// Idle backing files held now.
    pub fn idle_backings(&self) -> usize {
        self.table.lock().unwrap().idle.len()
    }

    /// Passthrough handles of `ino` open now.
    pub fn passthrough_handles(&self, ino: u64) -> usize {
        let t = self.table.lock().unwrap();
        t.by_ino.get(&ino).map_or(0, |m| m.passthrough)
    }
}

impl Reservation<'_> {
    /// The backing file when this open is a passthrough one: the inode's, shared by all.
    pub fn backing(&self) -> Option<Arc<Backing>> {
        let t = self.modes.table.lock().unwrap();
        self.backing.as_ref()?;
        t.by_ino.get(&self.ino).and_then(|m| m.backing.clone())
    }

    /// Ties the reservation to the handle made for it.
    pub fn bind(mut self, fh: u64) {
        self.bound = true;
        let pt = self.backing.is_some();
        self.modes
            .table
            .lock()
            .unwrap()
            .by_fh
            .insert(fh, (self.ino, pt));
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.bound {
            let mut t = self.modes.table.lock().unwrap();
            let gone = IoModes::unreserve(&mut t, self.ino, self.backing.is_some());
            drop(t);
            drop(gone);
        }
    }
}

impl LakeFs {
    /// Settles the mode of a read open that found the file closed: through the cache's file
    /// when the disk cache holds it whole. A file checked before takes a few local calls. A
    /// file not checked yet is read whole and checked first, off the runtime: before this
    /// open when it is small (the reader is about to read those bytes anyway), else in the
    /// background while this open reads the normal way, so no open waits for a large file.
    pub(super) async fn settle_read_open<'a>(
        &'a self,
        slot: Option<ReadSlot<'a>>,
        version: &ObjectVersion,
    ) -> Option<ReadSlot<'a>> {
        let Some(ReadSlot::Open(ino)) = slot else {
            return slot;
        };
        if let Some(b) = self.iomodes.take_idle(ino, version) {
            if self.read_path.still_complete(version, &b.file) {
                Metrics::add(&self.metrics().passthrough_backings_reused_total, 1);
                return Some(ReadSlot::Decided(self.iomodes.settle(ino, Some(b))));
            }
        }
        let candidate = match self.read_path.complete_file(version, false) {
            Complete::File(f) => Some(f),
            Complete::No => None,
            Complete::NeedsCheck => {
                let (path, v) = (self.read_path.clone(), version.clone());
                let check = move || path.complete_file(&v, true);
                if version.size <= CHECK_BEFORE_OPEN {
                    match tokio::task::spawn_blocking(check).await {
                        Ok(Complete::File(f)) => Some(f),
                        _ => None,
                    }
                } else {
                    if self.iomodes.start_check(version) {
                        let (checking, v) = (self.iomodes.checking.clone(), version.clone());
                        tokio::task::spawn_blocking(move || {
                            // The file it opens is let go at once: the check is what counts.
                            drop(check());
                            checking.lock().unwrap().remove(&v);
                        });
                    }
                    None
                }
            }
        };
        let candidate = candidate.map(|f| Backing::new(f, version.clone()));
        Some(ReadSlot::Decided(self.iomodes.settle(ino, candidate)))
    }

    /// The reply to an open whose handle `fh` exists: its reservation bound to it, and the
    /// backing file when it is a passthrough one.
    pub(super) fn opened(&self, fh: u64, keep_cache: bool, slot: Option<ReadSlot>) -> Opened {
        let r = match slot {
            None => None,
            Some(ReadSlot::Decided(r)) => Some(r),
            Some(ReadSlot::Open(ino)) => Some(self.iomodes.settle(ino, None)),
        };
        let passthrough = r.as_ref().and_then(|r| r.backing());
        if let Some(r) = r {
            r.bind(fh);
        }
        if passthrough.is_some() {
            Metrics::add(&self.metrics().passthrough_opens_total, 1);
        }
        Opened {
            fh,
            keep_cache,
            passthrough,
        }
    }
}

#[cfg(test)]
#[path = "passthrough_tests.rs"]
mod tests;
