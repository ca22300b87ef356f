//! What this process remembers of the disk cache's object files between calls: which files
//! it checked whole (for passthrough opens) and the table entries of blocks it read lately (so
//! a read opens no table). Each fact is tied to its data file's state when learnt (`Stamp`):
//! any change to the file, by this process or another sharing the directory, makes the next
//! call read the table again.

use std::collections::HashMap;
use std::fs;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::objfile::Entry;

/// Entries remembered at most: about 8 MiB with 8 MiB blocks (128 checksums each), far less
/// for small files.
const ENTRIES: usize = 16_384;

/// A data file's state: a punched hole (fewer blocks allocated), a write (ctime) or a
/// replacement (inode) changes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    ctime: (i64, i64),
    allocated: u64,
}

impl Stamp {
    pub fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
            allocated: m.blocks(),
        }
    }
}

/// A block: its object's hash and its index.
type Block = (Arc<str>, u64);

pub struct Known {
    /// Objects whose every byte this process checked and has not changed since, with their
    /// data file's state at the check.
    checked: Mutex<HashMap<Arc<str>, Stamp>>,
    entries: Mutex<LruCache<Block, (Stamp, Arc<Entry>)>>,
}

impl Known {
    pub fn new() -> Known {
        Known {
            checked: Mutex::new(HashMap::new()),
            entries: Mutex::new(LruCache::new(NonZeroUsize::new(ENTRIES).unwrap())),
        }
    }

    /// The state its data file had when this process last checked the object whole.
    pub fn checked(&self, hash: &Arc<str>) -> Option<Stamp> {
        self.checked.lock().unwrap().get(hash).copied()
    }

    pub fn set_checked(&self, hash: &Arc<str>, stamp: Stamp) {
        self.checked.lock().unwrap().insert(hash.clone(), stamp);
    }

    /// The entry of a block read before, if its data file is still in state `now`.
    pub fn entry(&self, hash: &Arc<str>, index: u64, now: Stamp) -> Option<Arc<Entry>> {
        let mut m = self.entries.lock().unwrap();
        match m.get(&(hash.clone(), index)) {
            Some((s, e)) if *s == now => Some(e.clone()),
            _ => None,
        }
    }

    pub fn remember(&self, hash: &Arc<str>, index: u64, stamp: Stamp, entry: Arc<Entry>) {
        let mut m = self.entries.lock().unwrap();
        m.put((hash.clone(), index), (stamp, entry));
    }

    /// This process changed the object, or dropped block `index` (all blocks: `None`).
    pub fn changed(&self, hash: &Arc<str>, index: Option<u64>, blocks: u64) {
        self.checked.lock().unwrap().remove(hash);
        let mut m = self.entries.lock().unwrap();
        for i in index.map_or(0..blocks, |i| i..i + 1) {
            m.pop(&(hash.clone(), i));
        }
    }

    pub fn clear(&self) {
        self.checked.lock().unwrap().clear();
        self.entries.lock().unwrap().clear();
    }
}
