//! A cache disk that fills up (a real 16 MiB tmpfs under a `--cache-size` far larger than it):
//! the daemon evicts or skips caching, and readers always get the right bytes, never an error.

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::azurite::Azurite;
use common::mount::{mount_azurite, Mount};
use common::tmpfs::Tmpfs;
use common::tree::{pseudo_random, sha256, sha256_file};

const CONTAINER: &str = "lake";
const MIB: usize = 1 << 20;

/// Used and total bytes of the file system holding `p`.
fn df(p: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct we own; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    let f = st.f_frsize;
    ((st.f_blocks - st.f_bfree) * f, st.f_blocks * f)
}

fn metric(m: &Mount, name: &str) -> u64 {
    common::metrics::from_log(&m.log_text(), name)
}

/// Drops the file's pages from the kernel's cache so the next read reaches the daemon.
fn drop_pages(p: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(p).unwrap();
    // SAFETY: a valid open descriptor.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
}

/// Mounts with the cache on `cache`, 1 MiB blocks and less memory than the cache disk, so
/// that reads go through the disk cache rather than being held in memory.
fn mount(az: &Azurite, cache: &Path) -> Mount {
    let args = [
        "--cache-dir",
        cache.to_str().unwrap(),
        "--cache-size",
        "1G",
        "--block-size",
        "1M",
        "--max-memory",
        "4M",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    mount_azurite(az, CONTAINER, &args)
}

#[test]
fn a_cache_disk_smaller_than_the_data_evicts_and_never_fails_a_read() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let data = pseudo_random(64 * MIB, 21);
    az.put_blob_large(CONTAINER, "data/64MiB.bin", &data);
    // Declared before the mount: dropped after it.
    let disk = Tmpfs::mount("16m");
    let m = mount(&az, &disk.path());
    let path = m.path().join("data/64MiB.bin");
    let want = sha256(&data);
    assert_eq!(sha256_file(&path), want, "sequential pass");
    drop_pages(&path);
    // Backwards, so that the blocks the disk still holds (the last ones) are asked for
    // before they are evicted (a sequential scan larger than an LRU cache never hits).
    let f = std::fs::File::open(&path).unwrap();
    let mut back = vec![0u8; data.len()];
    for chunk in (0..data.len() / MIB).rev() {
        let at = chunk * MIB;
        f.read_exact_at(&mut back[at..at + MIB], at as u64).unwrap();
    }
    assert!(back == data, "backward pass");
    let (used, total) = df(&disk.path());
    let evictions = metric(&m, "disk_evictions_total");
    let hits = metric(&m, "disk_hit_bytes_total");
    let failed = metric(&m, "disk_write_errors_total");
    eprintln!(
        "cache disk {} of {} MiB used; {evictions} evictions, {} MiB read from it, {failed} \
         blocks not cached",
        used >> 20,
        total >> 20,
        hits >> 20
    );
    assert!(
        evictions >= 48,
        "64 MiB through 16 MiB: {evictions} evictions"
    );
    assert!(
        hits > 0,
        "the backward pass reads blocks the disk still holds"
    );
    assert!(used <= total);
    assert!(!m.log_text().contains("ERROR"), "{}", m.log_text());
}

#[test]
fn a_cache_disk_filled_by_someone_else_leaves_reads_correct() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let data = pseudo_random(16 * MIB, 22);
    az.put_blob_large(CONTAINER, "data/16MiB.bin", &data);
    let disk = Tmpfs::mount("16m");
    // Everything but what the cache's directories need goes to another user's file.
    let cache = disk.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let mut hog = std::fs::File::create(disk.path().join("hog")).unwrap();
    let chunk = vec![1u8; 64 << 10];
    while hog.write_all(&chunk).is_ok() {}
    let m = mount(&az, &cache);
    let path = m.path().join("data/16MiB.bin");
    let want = sha256(&data);
    for pass in 1..=2 {
        assert_eq!(sha256_file(&path), want, "pass {pass}");
        drop_pages(&path);
    }
    let failed = metric(&m, "disk_write_errors_total");
    assert!(
        failed > 0,
        "nothing could be cached, so writes must have failed"
    );
    assert_eq!(metric(&m, "disk_hit_bytes_total"), 0);
    let log = m.log_text();
    assert!(log.contains("disk cache: cannot write"), "{log}");
    assert!(
        log.matches("disk cache: cannot write").count() <= 8,
        "a full disk must not flood the log: {log}"
    );
}
