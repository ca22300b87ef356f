//! What a passthrough open needs of the disk cache: an object's data file, checked whole and
//! held under a shared lock so that no eviction punches it while a handle reads it.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::{flock, Complete, DiskCache};
use crate::cache::known::Stamp;
use crate::cache::objfile::{self, ObjectFiles, ObjectKey};
use crate::metrics::Metrics;

impl DiskCache {
    /// The data file of `key` if every block of it is here, for a passthrough open: read-only,
    /// holding a shared lock so that no eviction (here or in another mount sharing the
    /// directory) punches a hole in it while it is open. Its every byte is checked against the
    /// table the first time in this process and again after any change this process made;
    /// without `may_verify` such a file answers `NeedsCheck` (the check reads the whole file:
    /// the caller does it off its thread). A block that fails is dropped and the answer is
    /// `No`: the reader takes the normal path.
    pub fn open_complete(&self, key: &ObjectKey, may_verify: bool) -> Complete {
        let hash: Arc<str> = key.hash().into();
        let files = self.files(&hash);
        let Ok(data) = File::open(&files.data) else {
            return Complete::No;
        };
        // Locked before the table is read: a hole punched after the check cannot happen.
        if !flock(&data, libc::LOCK_SH) {
            return Complete::No;
        }
        // Still the file in place (not one an eviction just unlinked).
        let meta = match data.metadata() {
            Ok(m) if m.nlink() > 0 => m,
            _ => return Complete::No,
        };
        // Taken under the lock: no hole can appear between it and the table read below.
        let stamp = Stamp::of(&meta);
        let known = self.known.checked(&hash);
        if known == Some(stamp) {
            // Checked whole and untouched since: the table need not be read again (on a cold
            // page cache, that read would double the disk reads of a small file's open).
            self.hit_whole(&hash, key, &files);
            return Complete::File(data);
        }
        let verify = known.is_none();
        if verify && !may_verify {
            return Complete::NeedsCheck;
        }
        match objfile::is_complete(&files, key, &data, verify) {
            Ok(true) => {
                self.known.set_checked(&hash, stamp);
                self.hit_whole(&hash, key, &files);
                Complete::File(data)
            }
            Ok(false) => Complete::No,
            Err(e) => {
                tracing::warn!(
                    "disk cache: {} fails its check, dropped: {e}",
                    files.data.display()
                );
                Metrics::add(&self.metrics.disk_corrupt_blocks_total, 1);
                drop(data);
                self.drop_object(&hash, key);
                Complete::No
            }
        }
    }

    /// Whether `data`, a file `open_complete` gave for `key` and open ever since (so its
    /// shared lock has kept evictions from punching it), may serve another passthrough open:
    /// still in place (not unlinked by an eviction) and unchanged since this process checked
    /// it. One `fstat`: no path to open, no table to read.
    pub fn still_complete(&self, key: &ObjectKey, data: &File) -> bool {
        let hash: Arc<str> = key.hash().into();
        let Ok(meta) = data.metadata() else {
            return false;
        };
        if meta.nlink() == 0 || self.known.checked(&hash) != Some(Stamp::of(&meta)) {
            return false;
        }
        self.hit_whole(&hash, key, &self.files(&hash));
        true
    }

    fn hit_whole(&self, hash: &Arc<str>, key: &ObjectKey, files: &ObjectFiles) {
        let mut idx = self.index.lock().unwrap();
        for i in 0..key.blocks() {
            idx.lru.promote(&(hash.clone(), i));
        }
        drop(idx);
        self.touch(hash, files);
    }
}
