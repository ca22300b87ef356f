//! Disk-cache reads for a caller that must not wait for the disk (a runtime worker): answered
//! only from what the kernel and this process hold in memory. The path resolves from the
//! dentry cache (`openat2` with `RESOLVE_CACHED`), the bytes come from the page cache
//! (`preadv2` with `RWF_NOWAIT`), the block's checksums from `known`. Anything else (a cold
//! file, an entry not known, a chunk failing its checksum) is left to `get_range` on a blocking
//! thread, which also does every write a read may lead to (dropping a bad block; a recency
//! write goes to the fill threads). A read the page cache can answer then costs no trip to
//! another thread, and nothing here waits for the disk: requests stay bounded in time.

use std::ffi::CString;
use std::fs::File;
use std::ops::Range;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::DiskCache;
use crate::cache::known::Stamp;
use crate::cache::objfile::{self, ObjectKey};
use crate::metrics::Metrics;

impl DiskCache {
    /// `get_range`, when it can be answered without waiting for the disk; `None` otherwise
    /// (then ask `get_range`, off the caller's thread).
    pub fn get_range_cached(
        self: &Arc<Self>,
        key: &ObjectKey,
        index: u64,
        range: Range<u64>,
    ) -> Option<Bytes> {
        let hash: Arc<str> = key.hash().into();
        let files = self.files(&hash);
        let data = open_cached(&files.data)?;
        let stamp = Stamp::of(&data.metadata().ok()?);
        let entry = self.known.entry(&hash, index, stamp)?;
        let (bytes, read) =
            objfile::read_checked_with(&data, key, index, &entry, range, libc::RWF_NOWAIT).ok()?;
        self.count_hit(&hash, index, read);
        Metrics::add(&self.metrics.disk_reads_inline_total, 1);
        if let Some(now) = self.recency_due(&hash) {
            self.filler.run(move || super::write_recency(&files, now));
        }
        Some(bytes)
    }
}

/// The kernel's `struct open_how` (libc's cannot be built outside libc).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` read-only if every component of it is in the dentry cache; `None` when the
/// lookup would need the disk (or the kernel lacks `RESOLVE_CACHED`, Linux < 5.12, or the
/// file is not this process's own).
fn open_cached(path: &Path) -> Option<File> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let how = OpenHow {
        // No access time to write back: a read that dirtied the inode could wait for the
        // journal. (The cache's files are this process's own, as O_NOATIME requires.)
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOATIME) as u64,
        mode: 0,
        resolve: libc::RESOLVE_CACHED,
    };
    // SAFETY: a valid NUL-terminated path and an open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    // SAFETY: a descriptor just opened, owned by nothing else.
    (fd >= 0).then(|| unsafe { File::from_raw_fd(fd as i32) })
}

/// Whether this kernel and the file system of `dir` answer reads of cached bytes without
/// waiting (tests that count such reads check this first).
#[cfg(test)]
pub(crate) fn inline_reads_work_in(dir: &Path) -> bool {
    let p = dir.join(".nowait-probe");
    let works = std::fs::write(&p, [7u8; 4096]).is_ok()
        && std::fs::read(&p).is_ok()
        && open_cached(&p)
            .is_some_and(|f| objfile::read_fresh_with(&f, 4096, 0, libc::RWF_NOWAIT).is_ok());
    let _ = std::fs::remove_file(&p);
    works
}

#[cfg(test)]
mod tests {
    use super::super::tests::{key, open, pattern};
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;

    /// Whether the first page of `f` is in the page cache (`mincore` of a mapping of it).
    fn first_page_resident(f: &File) -> bool {
        let mut v = [0u8; 1];
        // SAFETY: a read-only shared mapping of one page of an open file, unmapped below;
        // mincore writes one byte for that page into `v`.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::mincore(p, 4096, v.as_mut_ptr()), 0);
            libc::munmap(p, 4096);
        }
        v[0] & 1 == 1
    }

    #[test]
    fn only_a_read_the_page_cache_and_known_checksums_can_answer_is_served_without_the_disk() {
        let d = tempfile::tempdir().unwrap();
        if !inline_reads_work_in(d.path()) {
            eprintln!("this kernel or file system cannot read without waiting: nothing to test");
            return;
        }
        let c = Arc::new(open(d.path(), 1 << 20));
        // Not held whole (block 2 missing), so a bad block would be dropped alone.
        let data = pattern(3 * 4096, 9);
        let k = key("nowait", data.len() as u64, 4096);
        c.put(&k, 0, &data[..4096]);
        c.put(&k, 1, &data[4096..8192]);
        let inline = || Metrics::get(&c.metrics.disk_reads_inline_total);

        // A block whose checksums this process has not read yet: left to the blocking path.
        assert!(c.get_range_cached(&k, 0, 0..4096).is_none());
        assert_eq!(&c.get_range(&k, 0, 0..4096).unwrap()[..], &data[..4096]);
        // Now known, and its bytes are in the page cache (just written and read).
        let got = c.get_range_cached(&k, 0, 10..300).expect("served inline");
        assert_eq!(&got[..], &data[10..300]);
        assert_eq!(inline(), 1);
        // A block held but not read yet in this process: not known.
        assert!(c.get_range_cached(&k, 1, 0..4096).is_none());
        // Not held at all.
        assert!(c.get_range_cached(&k, 2, 0..4096).is_none());

        // Another process writes the file: its state changed, so what was known is not used.
        let files = c.files(&k.hash());
        let other = File::options().write(true).open(&files.data).unwrap();
        other.write_all_at(&data[..4096], 0).unwrap();
        assert!(c.get_range_cached(&k, 0, 0..4096).is_none());
        assert_eq!(&c.get_range(&k, 0, 0..4096).unwrap()[..], &data[..4096]);
        assert!(c.get_range_cached(&k, 0, 0..4096).is_some());

        // Bytes that fail their checksum are never served, even under a stamp that matches
        // (as if the change had left no trace): the blocking path then drops the block.
        let hash: Arc<str> = k.hash().into();
        let entry = Arc::new(objfile::held_entry(&files, &k, 0).unwrap().unwrap());
        other.write_all_at(&[data[7] ^ 0x20], 7).unwrap();
        let now = Stamp::of(&std::fs::metadata(&files.data).unwrap());
        c.known.remember(&hash, 0, now, entry);
        let served = inline();
        assert!(c.get_range_cached(&k, 0, 0..4096).is_none());
        assert_eq!(inline(), served);
        assert_eq!(Metrics::get(&c.metrics.disk_corrupt_blocks_total), 0);
        assert!(c.get_range(&k, 0, 0..4096).is_none());
        assert_eq!(Metrics::get(&c.metrics.disk_corrupt_blocks_total), 1);

        // Bytes not in the page cache are not waited for. (Where the file system keeps its
        // pages regardless, as tmpfs does, there is nothing to check.)
        c.put(&k, 0, &data[..4096]);
        assert!(c.get_range(&k, 0, 0..4096).is_some());
        let f = File::open(&files.data).unwrap();
        f.sync_all().unwrap();
        // SAFETY: plain syscall on an open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if !first_page_resident(&f) {
            assert!(c.get_range_cached(&k, 0, 0..4096).is_none());
        }
    }
}
