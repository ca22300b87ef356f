//! Which kernel I/O mode each open handle of a file is in, so reads of a file the disk cache
//! holds whole can go from the kernel straight to the cache's file (FUSE passthrough).
//!
//! The kernel keeps one mode per inode. While a handle reads it through a backing file, every
//! other open of that inode must name the same backing file, and an open that mixes modes
//! fails with EIO. So a file is opened with passthrough only when no handle has it open the
//! normal way; while passthrough handles are open, read opens join them (same backing file:
//! the version they opened) and write opens fail with ETXTBSY, like writing a running program.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{FsError, LakeFs, Opened};
use crate::metrics::Metrics;
use crate::reader::{Complete, ObjectVersion};

/// A cache file backing passthrough opens of one inode. `edge` is the FUSE layer's handle
/// for it, made at the first open and dropped (closing it in the kernel) with the last.
pub struct Backing {
    pub file: File,
    pub edge: Mutex<Option<Box<dyn Any + Send>>>,
}

#[derive(Default)]
struct Modes {
    plain: usize,
    passthrough: usize,
    backing: Option<Arc<Backing>>,
}

#[derive(Default)]
struct Table {
    by_ino: HashMap<u64, Modes>,
    /// Each handle's inode and whether it is a passthrough one.
    by_fh: HashMap<u64, (u64, bool)>,
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
    pub fn new(enabled: bool) -> IoModes {
        IoModes {
            table: Mutex::new(Table::default()),
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
        Ok(self.reserve(ino, &mut t, None))
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
    pub fn settle(&self, ino: u64, candidate: Option<File>) -> Reservation<'_> {
        let mut t = self.table.lock().unwrap();
        let backing = match t.by_ino.get(&ino) {
            Some(m) if m.passthrough > 0 => m.backing.clone(),
            Some(m) if m.plain > 0 => None,
            _ if !self.enabled() => None,
            _ => candidate.map(|file| {
                Arc::new(Backing {
                    file,
                    edge: Mutex::new(None),
                })
            }),
        };
        self.reserve(ino, &mut t, backing)
    }

    /// The last close of handle `fh`.
    pub fn release(&self, fh: u64) {
        let mut t = self.table.lock().unwrap();
        let Some((ino, passthrough)) = t.by_fh.remove(&fh) else {
            return;
        };
        Self::unreserve(&mut t, ino, passthrough);
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
        Self::unreserve(&mut t, ino, true);
        t.by_ino.entry(ino).or_default().plain += 1;
        true
    }

    fn unreserve(t: &mut Table, ino: u64, passthrough: bool) {
        let Some(m) = t.by_ino.get_mut(&ino) else {
            return;
        };
        if passthrough {
            m.passthrough -= 1;
            if m.passthrough == 0 {
                m.backing = None;
            }
        } else {
            m.plain -= 1;
        }
        if m.plain == 0 && m.passthrough == 0 {
            t.by_ino.remove(&ino);
        }
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
            IoModes::unreserve(&mut t, self.ino, self.backing.is_some());
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
mod tests {
    use super::*;

    fn file() -> File {
        tempfile::tempfile().unwrap()
    }

    #[test]
    fn a_file_open_the_normal_way_is_not_given_passthrough() {
        let m = IoModes::new(true);
        let ReadSlot::Open(ino) = m.reserve_reader(7) else {
            panic!("no handles yet")
        };
        let plain = m.settle(ino, None);
        assert!(plain.backing().is_none());
        plain.bind(1);
        let ReadSlot::Decided(r) = m.reserve_reader(7) else {
            panic!("a plain handle is open")
        };
        assert!(r.backing().is_none(), "joins the plain handle");
        r.bind(2);
        m.release(1);
        m.release(2);
        assert!(matches!(m.reserve_reader(7), ReadSlot::Open(7)));
    }

    #[test]
    fn passthrough_handles_share_one_backing_and_keep_writers_out() {
        let m = IoModes::new(true);
        let first = m.settle(7, Some(file()));
        let b = first.backing().expect("passthrough");
        first.bind(1);
        // A candidate found at the same time as the first loses: one backing per inode.
        let late = m.settle(7, Some(file()));
        assert!(Arc::ptr_eq(&late.backing().unwrap(), &b));
        late.bind(2);
        let ReadSlot::Decided(joined) = m.reserve_reader(7) else {
            panic!("decided by the open handles")
        };
        assert!(Arc::ptr_eq(&joined.backing().unwrap(), &b));
        drop(joined);
        assert_eq!(
            m.passthrough_handles(7),
            2,
            "an unbound reservation gives its place back"
        );
        assert_eq!(m.reserve_writer(7).err(), Some(FsError(libc::ETXTBSY)));
        m.release(1);
        m.release(2);
        drop(b);
        assert!(m.reserve_writer(7).is_ok(), "no readers left");
    }

    #[test]
    fn a_writer_open_keeps_new_readers_off_passthrough() {
        let m = IoModes::new(true);
        m.reserve_writer(7).unwrap().bind(1);
        let ReadSlot::Decided(r) = m.reserve_reader(7) else {
            panic!("a writer is open")
        };
        assert!(r.backing().is_none());
        // A reader that found the file closed and then a writer opened: normal mode.
        let m = IoModes::new(true);
        assert!(matches!(m.reserve_reader(8), ReadSlot::Open(8)));
        m.reserve_writer(8).unwrap().bind(3);
        assert!(m.settle(8, Some(file())).backing().is_none());
    }

    #[test]
    fn a_refused_passthrough_turns_it_off_and_counts_the_handle_as_normal() {
        let m = IoModes::new(true);
        m.settle(7, Some(file())).bind(1);
        assert!(m.refused(1, "no capability"));
        assert!(!m.refused(1, "again"), "a normal handle now");
        assert!(!m.enabled());
        assert_eq!(m.passthrough_handles(7), 0);
        assert!(
            m.reserve_writer(7).is_ok(),
            "the handle is a normal one now"
        );
        let ReadSlot::Decided(r) = m.reserve_reader(9) else {
            panic!("passthrough is off")
        };
        assert!(r.backing().is_none());
    }
}
