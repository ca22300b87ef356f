//! The persistent block cache on local disk (on a Batch node: the temp SSD).
//!
//! One file per block, `blocks-v1/XX/HASH`, where HASH is the SHA-256 of the block's identity
//! (object, ETag, block size, index), so a changed blob can never be served from old blocks.
//! A file is a header (magic, CRC32C and length of the data, the identity itself) followed by
//! the data. It is written to a temporary file and renamed into place, so readers (this mount,
//! another mount sharing the directory, a later run) see whole blocks or nothing; a block that
//! fails any check is a miss and is deleted. Files are 0600 in 0700 directories.
//!
//! Eviction is LRU by access within a run; after a restart the order is rebuilt from the files'
//! modification times (touched on every hit), by a scan that reads metadata only.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;

const MAGIC: &[u8; 8] = b"LMBLK001";
const SUBDIR: &str = "blocks-v1";
/// How finely a hit's time is written back to the block file's mtime.
const RECENCY_STEP: Duration = Duration::from_secs(600);
/// Temporary files older than this were left by a crashed writer.
const STALE_TMP: Duration = Duration::from_secs(600);

/// Sizes like `100G`, `512MiB`, `1T`, `80%` (of the cache file system) or `free:15%`
/// (whatever keeps at least 15% of the file system free, re-checked at every write: the
/// cache yields to other users of the disk, such as a job's checkpoints).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CacheSize {
    Bytes(u64),
    PercentOfDisk(f64),
    KeepFree(f64),
}

impl std::str::FromStr for CacheSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(f) = t.strip_prefix("free:") {
            return match f.trim().strip_suffix('%').map(|p| p.trim().parse::<f64>()) {
                Some(Ok(v)) if (0.0..100.0).contains(&v) => Ok(CacheSize::KeepFree(v)),
                _ => Err(format!(
                    "invalid size {s:?}: free:PCT keeps PCT percent of the disk free, PCT in [0, 100)"
                )),
            };
        }
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 100.0 => Ok(CacheSize::PercentOfDisk(v)),
                _ => Err(format!(
                    "invalid size {s:?}: a percentage must be in (0, 100]"
                )),
            };
        }
        parse_bytes(t).map(CacheSize::Bytes)
    }
}

/// Parses `8M`, `8MiB`, `1.5G`, `4096` (binary units; B, K, M, G, T).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit
        .trim()
        .to_ascii_lowercase()
        .trim_end_matches("ib")
        .trim_end_matches('b')
    {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: use a number with an optional K, M, G or T suffix"
            ))
        }
    };
    match num.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok((v * mult as f64) as u64),
        _ => Err(format!(
            "invalid size {s:?}: use a number with an optional K, M, G or T suffix"
        )),
    }
}

/// Total size of the file system holding `dir`.
pub fn fs_size(dir: &Path) -> io::Result<u64> {
    fs_space(dir).map(|(total, _)| total)
}

/// Total and available (to unprivileged users) bytes of the file system holding `dir`.
fn fs_space(dir: &Path) -> io::Result<(u64, u64)> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we own; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

type SpaceProbe = Box<dyn Fn() -> io::Result<(u64, u64)> + Send + Sync>;

struct Index {
    lru: LruCache<String, u64>,
    bytes: u64,
}

pub struct DiskCache {
    root: PathBuf,
    capacity: u64,
    /// With `free:PCT`: the bytes to leave free on the file system.
    keep_free: Option<u64>,
    /// Total and available bytes of the cache's file system (a fake one in tests).
    space: SpaceProbe,
    index: Mutex<Index>,
    metrics: Arc<Metrics>,
    /// Writes handed to `write_behind` and not finished yet.
    pending: AtomicUsize,
}

/// What `lakemount cache stats` reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub blocks: u64,
    pub bytes: u64,
    pub capacity: u64,
}

fn hash(identity: &str) -> String {
    format!("{:x}", Sha256::digest(identity.as_bytes()))
}

fn mkdir_private(p: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

impl DiskCache {
    /// Opens (creating if needed) the cache in `dir` and rebuilds its index from the files there.
    pub fn open(dir: &Path, size: CacheSize, metrics: Arc<Metrics>) -> io::Result<DiskCache> {
        let probe_at = dir.to_path_buf();
        Self::open_with(dir, size, metrics, Box::new(move || fs_space(&probe_at)))
    }

    fn open_with(
        dir: &Path,
        size: CacheSize,
        metrics: Arc<Metrics>,
        space: SpaceProbe,
    ) -> io::Result<DiskCache> {
        // A directory we create is private; an existing one (say /mnt) keeps its mode, and the
        // blocks live in our own private subdirectory either way.
        mkdir_private(dir)?;
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
                bytes: 0,
            }),
            metrics,
            pending: AtomicUsize::new(0),
        };
        cache.rebuild()?;
        Ok(cache)
    }

    /// Reads the metadata of every block file (no data) and orders them oldest first.
    fn rebuild(&self) -> io::Result<()> {
        let mut found: Vec<(SystemTime, String, u64)> = Vec::new();
        for sub in fs::read_dir(&self.root)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                let Ok(meta) = f.metadata() else { continue };
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                if name.contains(".tmp") {
                    if mtime.elapsed().unwrap_or_default() > STALE_TMP {
                        let _ = fs::remove_file(f.path());
                    }
                    continue;
                }
                found.push((mtime, name, meta.len()));
            }
        }
        found.sort();
        let mut idx = self.index.lock().unwrap();
        for (_, name, len) in found {
            idx.bytes += len;
            idx.lru.put(name, len);
        }
        drop(idx);
        self.evict_to(self.capacity());
        Ok(())
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
        DiskStats {
            blocks: idx.lru.len() as u64,
            bytes: idx.bytes,
            capacity,
        }
    }

    fn path_of(&self, h: &str) -> PathBuf {
        self.root.join(&h[..2]).join(h)
    }

    /// Whether a block is indexed (it may still turn out corrupt when read).
    pub fn contains(&self, identity: &str) -> bool {
        self.index.lock().unwrap().lru.contains(&hash(identity))
    }

    /// The block's data if a valid copy is on disk. Anything wrong with the file makes it a
    /// miss and removes it.
    pub fn get(&self, identity: &str, expected_len: u64) -> Option<Bytes> {
        let h = hash(identity);
        let path = self.path_of(&h);
        match read_block(&path, identity, expected_len) {
            Ok(Some(data)) => {
                self.index.lock().unwrap().lru.promote(&h);
                Metrics::add(&self.metrics.disk_hit_bytes_total, data.len() as u64);
                Some(data)
            }
            Ok(None) => {
                self.forget(&h);
                None
            }
            Err(e) => {
                tracing::warn!("disk cache: dropping bad block {}: {e}", path.display());
                Metrics::add(&self.metrics.disk_corrupt_blocks_total, 1);
                let _ = fs::remove_file(&path);
                self.forget(&h);
                None
            }
        }
    }

    fn forget(&self, h: &str) {
        let mut idx = self.index.lock().unwrap();
        if let Some(len) = idx.lru.pop(h) {
            idx.bytes -= len;
        }
    }

    /// Stores a block. A full disk evicts older blocks and tries once more; failing that the
    /// block is simply not cached (readers never see a cache write error).
    pub fn put(&self, identity: &str, data: &[u8]) {
        let h = hash(identity);
        let path = self.path_of(&h);
        let mut result = write_block(&path, identity, data);
        if matches!(&result, Err(e) if e.raw_os_error() == Some(libc::ENOSPC)) {
            let target = self
                .stats()
                .bytes
                .saturating_sub(self.stats().bytes / 4 + data.len() as u64);
            self.evict_to(target);
            result = write_block(&path, identity, data);
        }
        match result {
            Ok(len) => {
                let mut idx = self.index.lock().unwrap();
                if let Some(old) = idx.lru.put(h, len) {
                    idx.bytes -= old;
                }
                idx.bytes += len;
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
                        path.display()
                    );
                }
            }
        }
    }

    /// Stores a block from a blocking-pool thread, so a slow or full cache disk never delays
    /// the reader that fetched it. Needs a tokio runtime.
    /// `data` is held until then: a block's lease, so the memory budget counts it.
    pub fn write_behind(
        self: &Arc<Self>,
        identity: String,
        data: impl AsRef<[u8]> + Send + 'static,
    ) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            me.put(&identity, data.as_ref());
            drop(data);
            me.pending.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Waits (polling, at most `limit`) until every `write_behind` has landed; false on timeout.
    /// Called at unmount so blocks fetched last are not lost with the daemon.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while self.pending.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Removes least recently used blocks until at most `target` bytes remain.
    fn evict_to(&self, target: u64) {
        loop {
            let victim = {
                let mut idx = self.index.lock().unwrap();
                if idx.bytes <= target {
                    return;
                }
                match idx.lru.pop_lru() {
                    Some((h, len)) => {
                        idx.bytes -= len;
                        h
                    }
                    None => return,
                }
            };
            let _ = fs::remove_file(self.path_of(&victim));
            Metrics::add(&self.metrics.disk_evictions_total, 1);
        }
    }

    /// Deletes every block.
    pub fn clear(&self) -> io::Result<u64> {
        let mut idx = self.index.lock().unwrap();
        let n = idx.lru.len() as u64;
        idx.lru.clear();
        idx.bytes = 0;
        drop(idx);
        fs::remove_dir_all(&self.root)?;
        mkdir_private(&self.root)?;
        Ok(n)
    }
}

fn header(identity: &str, data: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(24 + identity.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    h.extend_from_slice(&(data.len() as u64).to_le_bytes());
    h.extend_from_slice(&(identity.len() as u32).to_le_bytes());
    h.extend_from_slice(identity.as_bytes());
    h
}

fn write_block(path: &Path, identity: &str, data: &[u8]) -> io::Result<u64> {
    let dir = path.parent().expect("block paths have a parent");
    mkdir_private(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{:?}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id(),
        std::thread::current().id()
    ));
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let head = header(identity, data);
        f.write_all(&head)?;
        f.write_all(data)?;
        fs::rename(&tmp, path)?;
        Ok((head.len() + data.len()) as u64)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// `Ok(None)`: no such file. `Err`: a file that must not be trusted.
fn read_block(path: &Path, identity: &str, expected_len: u64) -> io::Result<Option<Bytes>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let mut fixed = [0u8; 24];
    f.read_exact(&mut fixed)
        .map_err(|_| bad("truncated header"))?;
    if &fixed[..8] != MAGIC {
        return Err(bad("bad magic"));
    }
    let crc = u32::from_le_bytes(fixed[8..12].try_into().unwrap());
    let len = u64::from_le_bytes(fixed[12..20].try_into().unwrap());
    let id_len = u32::from_le_bytes(fixed[20..24].try_into().unwrap()) as usize;
    if id_len != identity.len() || len != expected_len {
        return Err(bad("header does not match the block"));
    }
    let mut id = vec![0u8; id_len];
    f.read_exact(&mut id).map_err(|_| bad("truncated header"))?;
    if id != identity.as_bytes() {
        // Two identities with one SHA-256: not going to happen, but never serve the wrong block.
        return Err(bad("identity mismatch"));
    }
    // Read one byte past the expected end to catch trailing garbage; no zero-filled buffer.
    let mut data = Vec::with_capacity(len as usize + 1);
    (&mut f).take(len + 1).read_to_end(&mut data)?;
    if (data.len() as u64) < len {
        return Err(bad("truncated data"));
    }
    if data.len() as u64 > len {
        return Err(bad("trailing bytes"));
    }
    if crc32c::crc32c(&data) != crc {
        return Err(bad("checksum mismatch"));
    }
    // Persist the recency for the next index rebuild, coarsely: one timestamp write per
    // block per RECENCY_STEP, not one per hit.
    let now = SystemTime::now();
    let stale = f.metadata()?.modified().map_or(true, |m| {
        now.duration_since(m).unwrap_or_default() > RECENCY_STEP
    });
    if stale {
        let _ = f.set_modified(now);
    }
    Ok(Some(Bytes::from(data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::AtomicU64;

    fn open(dir: &Path, cap: u64) -> DiskCache {
        DiskCache::open(dir, CacheSize::Bytes(cap), Arc::new(Metrics::default())).unwrap()
    }

    fn block_file(dir: &Path) -> PathBuf {
        let sub = fs::read_dir(dir.join(SUBDIR))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        fs::read_dir(sub).unwrap().next().unwrap().unwrap().path()
    }

    #[test]
    fn blocks_survive_a_reopen_with_private_permissions() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("cache");
        let c = open(&d, 1 << 20);
        c.put("az://a/c/k\n\"e\"\n8\n0", b"hello");
        assert_eq!(&c.get("az://a/c/k\n\"e\"\n8\n0", 5).unwrap()[..], b"hello");
        assert!(c.get("az://a/c/k\n\"other-etag\"\n8\n0", 5).is_none());
        drop(c);
        let c = open(&d, 1 << 20);
        assert_eq!(c.stats().blocks, 1);
        assert_eq!(&c.get("az://a/c/k\n\"e\"\n8\n0", 5).unwrap()[..], b"hello");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join(SUBDIR)), 0o700);
        assert_eq!(mode(&block_file(&d)), 0o600);
    }

    #[test]
    fn corrupt_or_truncated_blocks_are_misses_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let m = Arc::new(Metrics::default());
        let c = DiskCache::open(d.path(), CacheSize::Bytes(1 << 20), m.clone()).unwrap();
        c.put("id", b"0123456789");
        let f = block_file(d.path());
        let mut bytes = fs::read(&f).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&f, &bytes).unwrap();
        assert!(c.get("id", 10).is_none(), "flipped byte");
        assert!(!f.exists());
        c.put("id", b"0123456789");
        let f = block_file(d.path());
        let bytes = fs::read(&f).unwrap();
        fs::write(&f, &bytes[..bytes.len() - 3]).unwrap();
        assert!(c.get("id", 10).is_none(), "truncated");
        assert!(!f.exists());
        assert_eq!(Metrics::get(&m.disk_corrupt_blocks_total), 2);
        assert_eq!(c.stats().blocks, 0);
    }

    #[test]
    fn a_free_space_reserve_bounds_the_cache_by_what_the_disk_has_left() {
        // A 100 MiB disk, 20 MiB free before the cache writes anything; others may use more.
        let d = tempfile::tempdir().unwrap();
        let others = Arc::new(AtomicU64::new(80 << 20));
        let (root, used) = (d.path().join(SUBDIR), others.clone());
        let probe: SpaceProbe = Box::new(move || {
            let ours: u64 = fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .flat_map(|sub| fs::read_dir(sub.path()).into_iter().flatten().flatten())
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum();
            let total = 100u64 << 20;
            Ok((
                total,
                (total - used.load(Ordering::Relaxed)).saturating_sub(ours),
            ))
        });
        let m = Arc::new(Metrics::default());
        let c = DiskCache::open_with(d.path(), CacheSize::KeepFree(10.0), m, probe).unwrap();
        for i in 0..30 {
            c.put(&format!("block-{i}"), &vec![i as u8; 1 << 20]);
        }
        let held = c.stats().bytes;
        assert!(
            (9 << 20..=10 << 20).contains(&held),
            "10 MiB reserve of a disk with 20 MiB free: {held} bytes held"
        );
        // Someone else takes 6 MiB: the cache gives it back at its next write.
        others.fetch_add(6 << 20, Ordering::Relaxed);
        c.put("one-more", &[0u8; 1 << 20]);
        let held = c.stats().bytes;
        assert!(
            (3 << 20..=4 << 20).contains(&held),
            "after others used 6 MiB: {held} bytes held"
        );
    }

    #[test]
    fn least_recently_used_blocks_are_evicted_at_capacity() {
        let d = tempfile::tempdir().unwrap();
        let per_block = header("k0", &[0u8; 1000]).len() as u64 + 1000;
        let c = open(d.path(), per_block * 3);
        for i in 0..3 {
            c.put(&format!("k{i}"), &[i as u8; 1000]);
        }
        assert!(c.get("k0", 1000).is_some(), "k0 is now the most recent");
        c.put("k3", &[3u8; 1000]);
        assert!(c.contains("k0") && !c.contains("k1") && c.contains("k2") && c.contains("k3"));
        assert_eq!(c.stats().bytes, per_block * 3);
        assert_eq!(c.clear().unwrap(), 3);
        assert!(c.get("k0", 1000).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn written_behind_blocks_have_landed_once_idle() {
        let d = tempfile::tempdir().unwrap();
        let c = Arc::new(open(d.path(), 1 << 30));
        for i in 0..20 {
            c.write_behind(format!("k{i}"), Bytes::from(vec![i as u8; 4096]));
        }
        let c2 = c.clone();
        let idle = tokio::task::spawn_blocking(move || c2.wait_idle(Duration::from_secs(10)))
            .await
            .unwrap();
        assert!(idle);
        assert_eq!(c.stats().blocks, 20);
        assert_eq!(&c.get("k7", 4096).unwrap()[..], &[7u8; 4096][..]);
    }

    #[test]
    fn sizes_parse_with_units_and_percentages() {
        assert_eq!(parse_bytes("8M").unwrap(), 8 << 20);
        assert_eq!(parse_bytes("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(
            "50%".parse::<CacheSize>().unwrap(),
            CacheSize::PercentOfDisk(50.0)
        );
        assert!("150%".parse::<CacheSize>().is_err());
        assert_eq!(
            "free:15%".parse::<CacheSize>().unwrap(),
            CacheSize::KeepFree(15.0)
        );
        assert!("free:100%".parse::<CacheSize>().is_err());
        assert!("free:10G".parse::<CacheSize>().is_err());
        assert_eq!(
            "2T".parse::<CacheSize>().unwrap(),
            CacheSize::Bytes(2 << 40)
        );
    }
}
