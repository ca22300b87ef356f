//! Files the disk cache holds whole, read by the kernel straight from the cache file (FUSE
//! passthrough), through real mounts of a local-directory lake: bytes, corruption, the
//! fallbacks, and the kernel's one-mode-per-inode rule under opens in many orders.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::metrics::from_log;
use common::mount::{is_mounted, wait_for, Mount};
use common::tree::pseudo_random;

const MIB: usize = 1 << 20;

/// Sizes around the 1 MiB block: empty, tiny, a page, one block exactly, blocks and a tail.
fn lake_files(lake: &Path) -> Vec<(String, Vec<u8>)> {
    let sizes = [0, 1, 4095, MIB, MIB + 1, 3 * MIB + 12_345];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let name = format!("f{i}.bin");
            let data = pseudo_random(n, i as u64 + 1);
            std::fs::write(lake.join(&name), &data).unwrap();
            (name, data)
        })
        .collect()
}

fn mount(lake: &Path, cache: &Path, extra: &[&str]) -> Mount {
    let mut args = vec![
        "--cache-dir",
        cache.to_str().unwrap(),
        "--block-size",
        "1M",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Mount::start(&format!("file://{}", lake.display()), &args, &[])
        .unwrap_or_else(|o| panic!("mount failed: {o:?}"))
}

/// A writable mount with `--passthrough on` and its own staging directory (kept while the
/// mount is).
fn writable_passthrough_mount(lake: &Path, cache: &Path) -> (Mount, tempfile::TempDir) {
    let staging = tempfile::tempdir().unwrap();
    let st = staging.path().to_str().unwrap();
    let m = mount(lake, cache, &["--passthrough", "on", "--staging-dir", st]);
    (m, staging)
}

fn metric(m: &Mount, name: &str) -> u64 {
    from_log(&m.log_text(), name)
}

/// Reads `path` three ways: whole, by scattered preads, and through mmap.
fn check(path: &Path, want: &[u8]) {
    assert_eq!(std::fs::read(path).unwrap(), want, "{}", path.display());
    let f = File::open(path).unwrap();
    let mut buf = vec![0u8; 5000];
    for off in [0usize, 4095, MIB - 7, MIB, 2 * MIB + 3] {
        if off >= want.len() {
            continue;
        }
        let n = f.read_at(&mut buf, off as u64).unwrap();
        assert_eq!(
            &buf[..n],
            &want[off..(off + 5000).min(want.len())],
            "at {off}"
        );
    }
    if !want.is_empty() {
        // SAFETY: a private read-only mapping of a file we keep open; unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                want.len(),
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap {}", path.display());
        // SAFETY: the mapping is want.len() bytes long.
        let mapped = unsafe { std::slice::from_raw_parts(p as *const u8, want.len()) };
        assert!(mapped == want, "mmap of {}", path.display());
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, want.len()) };
    }
}

/// The cache's data files (not tables, not temporary files).
fn cache_files(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(cache.join("objects-v2")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.contains('.') {
                out.push(p);
            }
        }
    }
    out
}

fn cache_file_of_size(cache: &Path, len: usize) -> PathBuf {
    cache_files(cache)
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() == len as u64)
        .unwrap_or_else(|| panic!("no cache file of {len} bytes"))
}

/// Every file read once so the cache holds it whole, then the mount is gone.
fn fill(lake: &Path, cache: &Path, files: &[(String, Vec<u8>)]) {
    let m = mount(lake, cache, &["--read-only"]);
    for (name, data) in files {
        assert_eq!(&std::fs::read(m.path().join(name)).unwrap(), data);
    }
}

#[test]
fn a_file_held_whole_in_the_cache_is_read_by_the_kernel_from_it() {
    let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = lake_files(lake.path());
    let m = mount(lake.path(), cache.path(), &["--read-only"]);
    // First read: from the lake, through the daemon; the cache fills behind it.
    for (name, data) in &files {
        check(&m.path().join(name), data);
    }
    let cached = files.iter().filter(|(_, d)| !d.is_empty()).count();
    assert!(wait_for(Duration::from_secs(10), || {
        cache_files(cache.path()).len() == cached
    }));
    // Written behind: wait until every block has landed (the tables say so).
    let (gets, hits) = (
        metric(&m, "store_get_requests_total"),
        metric(&m, "disk_hit_bytes_total"),
    );
    // Each file in turn: the cache's writes land in no particular order.
    for (name, _) in files.iter().filter(|(_, d)| !d.is_empty()) {
        assert!(
            wait_for(Duration::from_secs(10), || {
                let opens = metric(&m, "passthrough_opens_total");
                drop(File::open(m.path().join(name)).unwrap());
                metric(&m, "passthrough_opens_total") > opens
            }),
            "{name} never became complete in the cache"
        );
    }
    // Second read: every non-empty file opened with passthrough, none of its bytes through
    // the daemon.
    let before = metric(&m, "passthrough_opens_total");
    for (name, data) in &files {
        check(&m.path().join(name), data);
    }
    let opened = metric(&m, "passthrough_opens_total") - before;
    assert!(
        opened >= 2 * cached as u64,
        "{opened} passthrough opens for {cached} files read twice each"
    );
    assert_eq!(metric(&m, "store_get_requests_total"), gets);
    assert_eq!(metric(&m, "disk_hit_bytes_total"), hits);
    drop(m);
    // After a remount: each file is checked once, then read from the cache file.
    let m = mount(lake.path(), cache.path(), &["--read-only"]);
    for (name, data) in &files {
        check(&m.path().join(name), data);
    }
    assert_eq!(metric(&m, "store_get_requests_total"), 0);
    assert_eq!(metric(&m, "disk_corrupt_blocks_total"), 0);
    assert!(metric(&m, "passthrough_opens_total") >= 2 * cached as u64);
}

#[test]
fn a_flipped_byte_in_a_cached_file_never_reaches_a_reader() {
    let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = lake_files(lake.path());
    let (name, data) = &files[5];
    // First byte, the last of a block, the first of the next, the last of the file.
    for at in [0usize, MIB - 1, MIB, data.len() - 1] {
        fill(lake.path(), cache.path(), &files[5..]);
        let victim = cache_file_of_size(cache.path(), data.len());
        let f = File::options()
            .read(true)
            .write(true)
            .open(&victim)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at as u64).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], at as u64).unwrap();
        drop(f);
        let m = mount(lake.path(), cache.path(), &["--read-only"]);
        check(&m.path().join(name), data);
        assert_eq!(metric(&m, "disk_corrupt_blocks_total"), 1, "byte {at}");
        // The bad copy was dropped and refetched whole; the new one is used.
        assert!(metric(&m, "store_get_requests_total") >= 1);
        assert!(
            wait_for(Duration::from_secs(10), || {
                let before = metric(&m, "passthrough_opens_total");
                check(&m.path().join(name), data);
                metric(&m, "passthrough_opens_total") > before
            }),
            "the refetched copy is used"
        );
    }
}

#[test]
fn a_large_file_is_checked_in_the_background_while_its_first_open_reads_the_normal_way() {
    // Over the size checked before an open (64 MiB): no open waits for the check.
    let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let data = pseudo_random(65 * MIB + 5, 3);
    std::fs::write(lake.path().join("large.bin"), &data).unwrap();
    let files = vec![("large.bin".to_string(), data.clone())];
    fill(lake.path(), cache.path(), &files);
    let m = mount(lake.path(), cache.path(), &["--read-only"]);
    let path = m.path().join("large.bin");
    let f = File::open(&path).unwrap();
    assert_eq!(metric(&m, "passthrough_opens_total"), 0, "not checked yet");
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert!(head == data[..4096]);
    drop(f);
    assert!(
        wait_for(Duration::from_secs(30), || {
            drop(File::open(&path).unwrap());
            metric(&m, "passthrough_opens_total") > 0
        }),
        "once checked, it opens with passthrough"
    );
    check(&path, &data);
    assert_eq!(metric(&m, "store_get_requests_total"), 0);
    assert_eq!(metric(&m, "disk_corrupt_blocks_total"), 0);
}

#[test]
fn a_partly_cached_file_is_read_the_normal_way() {
    let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = lake_files(lake.path());
    let (name, data) = &files[5];
    fill(lake.path(), cache.path(), &files[5..]);
    // Mark block 1 as not held, as an eviction leaves it: its table entry's length 0. An
    // entry is the block's length and a CRC32C per chunk; the table ends with the 4 entries.
    let data_file = cache_file_of_size(cache.path(), data.len());
    let table = data_file.with_extension("sums");
    let t = std::fs::read(&table).unwrap();
    let entry = 4 + 4 * (MIB as u64).div_ceil(lakemount::cache::objfile::CHUNK) as usize;
    let entries = t.len() - 4 * entry;
    let f = File::options().write(true).open(&table).unwrap();
    f.write_all_at(&[0u8; 4], (entries + entry) as u64).unwrap();
    drop(f);
    let m = mount(lake.path(), cache.path(), &["--read-only"]);
    assert!(&std::fs::read(m.path().join(name)).unwrap() == data);
    assert_eq!(metric(&m, "passthrough_opens_total"), 0);
    assert_eq!(
        metric(&m, "store_get_requests_total"),
        1,
        "only the missing block came from the lake"
    );
    // That read completed the cached copy: later opens use it.
    assert!(wait_for(Duration::from_secs(10), || {
        check(&m.path().join(name), data);
        metric(&m, "passthrough_opens_total") > 0
    }));
}

#[test]
fn passthrough_off_and_writable_mounts_by_default_read_the_normal_way() {
    let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = lake_files(lake.path());
    fill(lake.path(), cache.path(), &files);
    let staging = tempfile::tempdir().unwrap();
    let st = staging.path().to_str().unwrap();
    for extra in [
        &["--read-only", "--passthrough", "off"][..],
        &["--staging-dir", st][..],
    ] {
        let m = mount(lake.path(), cache.path(), extra);
        for (name, data) in &files {
            check(&m.path().join(name), data);
        }
        assert_eq!(metric(&m, "passthrough_opens_total"), 0, "{extra:?}");
        assert_eq!(metric(&m, "store_get_requests_total"), 0, "{extra:?}");
        assert!(metric(&m, "disk_hit_bytes_total") > 0, "{extra:?}");
    }
}

/// A mount run by an unprivileged user (through fusermount3), unmounted when dropped.
struct UserMount {
    mp: PathBuf,
}

impl Drop for UserMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mp).output();
        if is_mounted(&self.mp) {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).output();
        }
    }
}

/// /dev/fuse usable by every user, as Debian ships it (some images make it root's only);
/// the mode it had comes back when dropped.
struct FuseDeviceOpen {
    mode: Option<u32>,
}

impl FuseDeviceOpen {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777;
        if mode == 0o666 {
            return FuseDeviceOpen { mode: None };
        }
        let perms = std::fs::Permissions::from_mode(0o666);
        std::fs::set_permissions("/dev/fuse", perms).unwrap();
        FuseDeviceOpen { mode: Some(mode) }
    }
}

impl Drop for FuseDeviceOpen {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(m) = self.mode {
            let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(m));
        }
    }
}

const NOBODY: u32 = 65534;

fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn without_the_capability_reads_take_the_normal_path() {
    // Everything owned by an unprivileged user, who mounts without CAP_SYS_ADMIN: the
    // kernel refuses backing files, and the mount says so once and reads the normal way.
    let work = tempfile::tempdir().unwrap();
    let (lake, cache, mp) = (
        work.path().join("lake"),
        work.path().join("cache"),
        work.path().join("mnt"),
    );
    for d in [&lake, &cache, &mp] {
        std::fs::create_dir(d).unwrap();
    }
    let files = lake_files(&lake);
    let chown = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(work.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let log = work.path().join("daemon.log");
    let bin = common::mount::lakemount_bin();
    let _device = FuseDeviceOpen::new();
    let url = format!("file://{}", lake.display());
    let out = as_nobody(&[
        bin,
        "mount",
        &url,
        mp.to_str().unwrap(),
        "--read-only",
        "--passthrough",
        "on",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--block-size",
        "1M",
        "--metrics-addr",
        "127.0.0.1:0",
        "--log-file",
        log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let _m = UserMount { mp: mp.clone() };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let read_all = || {
        for (name, data) in &files {
            let out = as_nobody(&["cat", mp.join(name).to_str().unwrap()]);
            assert!(out.status.success(), "{name}: {out:?}");
            assert!(&out.stdout == data, "{name}");
        }
    };
    read_all();
    assert!(wait_for(Duration::from_secs(10), || {
        read_all();
        log_text().contains("passthrough reads are off")
    }));
    // The refused open is not counted as a passthrough one.
    assert_eq!(from_log(&log_text(), "passthrough_opens_total"), 0);
    read_all();
    // Each block fetched once; later opens read the normal way (page cache, disk cache).
    let blocks: usize = files.iter().map(|(_, d)| d.len().div_ceil(MIB)).sum();
    assert_eq!(
        from_log(&log_text(), "store_get_requests_total"),
        blocks as u64
    );
    assert_eq!(log_text().matches("passthrough reads are off").count(), 1);
}

#[test]
fn opens_in_any_order_never_mix_kernel_modes() {
    // Readers and writers of one cached file opened and closed in pseudo-random orders on a
    // writable mount with passthrough on: a read open always succeeds and reads the file's
    // bytes, a write open succeeds or (while passthrough readers hold the file) fails with
    // ETXTBSY, never EIO.
    let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = lake_files(lake.path());
    let (name, data) = &files[4];
    fill(lake.path(), cache.path(), &files[4..5]);
    let (m, _staging) = writable_passthrough_mount(lake.path(), cache.path());
    let path = m.path().join(name);
    let (mut x, mut open, mut busy) = (7u64, Vec::<File>::new(), 0);
    for step in 0..300 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        match (x >> 33) % 5 {
            0 | 1 => {
                let mut f = File::open(&path).unwrap_or_else(|e| panic!("step {step}: {e}"));
                let mut got = Vec::new();
                f.read_to_end(&mut got).unwrap();
                assert!(&got == data, "step {step}: wrong bytes");
                open.push(f);
            }
            2 => {
                // Opened for writing, nothing written: the file stays as it is.
                match File::options().write(true).open(&path) {
                    Ok(f) => open.push(f),
                    Err(e) => {
                        assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "step {step}: {e}");
                        busy += 1;
                    }
                }
            }
            _ => {
                if !open.is_empty() {
                    let i = (x >> 40) as usize % open.len();
                    drop(open.swap_remove(i));
                }
            }
        }
    }
    drop(open);
    assert!(
        metric(&m, "passthrough_opens_total") > 0,
        "passthrough was used"
    );
    assert!(busy > 0, "some write opens met passthrough readers");
    // With every handle closed, a writer opens.
    assert!(wait_for(Duration::from_secs(10), || File::options()
        .write(true)
        .open(&path)
        .is_ok()));
}

#[test]
fn a_passthrough_handle_survives_dup_fork_and_its_file_being_replaced() {
    // A reader reading through the cache file: its descriptor duplicated, its original closed,
    // a forked child reading after the parent closed, and the file replaced by rename
    // meanwhile (a checkpoint saver's `os.replace`). Every handle reads the version it opened;
    // a new open reads the new file.
    let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = lake_files(lake.path());
    fill(lake.path(), cache.path(), &files[3..6]);
    let (m, _staging) = writable_passthrough_mount(lake.path(), cache.path());
    // One cached file for each order of the replace: before the fork, between fork and the
    // parent's close, after both.
    for order in 0..3u64 {
        let (name, old) = &files[3 + order as usize];
        let path = m.path().join(name);
        let before = metric(&m, "passthrough_opens_total");
        let f = File::open(&path).unwrap();
        assert_eq!(
            metric(&m, "passthrough_opens_total"),
            before + 1,
            "order {order}: opened with passthrough"
        );
        let dup = f.try_clone().unwrap();
        drop(f);
        let new = pseudo_random(old.len(), 100 + order);
        let tmp = m.path().join(format!("{name}.tmp{order}"));
        let replace = || {
            std::fs::write(&tmp, &new).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        if order == 0 {
            replace();
        }
        // SAFETY: the child only reads through an inherited descriptor and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut got = vec![0u8; old.len()];
            let ok = dup.read_exact_at(&mut got, 0).is_ok() && &got == old;
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        if order == 1 {
            replace();
        }
        drop(dup);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "order {order}: the child read other bytes than the version it opened"
        );
        if order == 2 {
            replace();
        }
        assert!(
            std::fs::read(&path).unwrap() == new,
            "order {order}: a new open reads the replacement"
        );
    }
}

#[test]
fn a_reopened_file_names_its_registered_cache_file_again_until_it_is_evicted() {
    // A data loader's epochs: every file opened, read and closed, then again. A cache file
    // stays registered with the kernel after its last close, so the next open names it again
    // without opening a file; it reads the same bytes. An eviction meanwhile takes it away:
    // the next open reads from the lake.
    let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = lake_files(lake.path());
    let held = &files[1..6];
    fill(lake.path(), cache.path(), held);
    // Room for those five files (4.01 MiB in 7 blocks) and not for a sixth of 2 MiB more.
    let m = mount(
        lake.path(),
        cache.path(),
        &["--read-only", "--cache-size", "7M"],
    );
    for (name, data) in held {
        check(&m.path().join(name), data);
    }
    let opens = metric(&m, "passthrough_opens_total");
    assert!(opens >= 2 * held.len() as u64, "{opens} passthrough opens");
    let (reused, gets) = (
        metric(&m, "passthrough_backings_reused_total"),
        metric(&m, "store_get_requests_total"),
    );
    for epoch in 0..3 {
        for (name, data) in held {
            check(&m.path().join(name), data);
        }
        let again = metric(&m, "passthrough_backings_reused_total") - reused;
        assert_eq!(
            again,
            2 * held.len() as u64 * (epoch + 1),
            "epoch {epoch}: every open (two a file) names the registered file again"
        );
    }
    assert_eq!(metric(&m, "store_get_requests_total"), gets);
    // A new file of 2 blocks pushes the least recently used blocks out: files held by no
    // handle, only by the kernel's registration, are unlinked whole.
    let extra = pseudo_random(2 * MIB, 99);
    std::fs::write(lake.path().join("extra.bin"), &extra).unwrap();
    assert_eq!(std::fs::read(m.path().join("extra.bin")).unwrap(), extra);
    assert!(wait_for(Duration::from_secs(10), || {
        metric(&m, "disk_evictions_total") > 0
    }));
    let (reused, gets) = (
        metric(&m, "passthrough_backings_reused_total"),
        metric(&m, "store_get_requests_total"),
    );
    for (name, data) in held {
        check(&m.path().join(name), data);
    }
    let reused_now = metric(&m, "passthrough_backings_reused_total") - reused;
    let fetched = metric(&m, "store_get_requests_total") - gets;
    assert!(
        fetched > 0 && reused_now < 2 * held.len() as u64,
        "evicted files are read from the lake ({fetched} GETs), not through their old cache \
         files ({reused_now} of {} opens reused)",
        2 * held.len()
    );
    assert_eq!(metric(&m, "disk_corrupt_blocks_total"), 0);
}

#[test]
fn a_mapping_left_after_its_file_is_closed_keeps_reading_right_bytes_while_the_cache_evicts() {
    // A program maps a cached file, closes its descriptor and goes on reading the mapping
    // (the kernel reads the cache file behind it), while the cache evicts that file: through
    // this mount's reads of another file, or a second mount's sharing the cache directory.
    // Its pages must never turn into a punched hole's zeros. Objects of many blocks and of
    // one, shared and private mappings. The file (9 MiB) is too large to stay registered after
    // its close: only the mapping refers to the cache file.
    for (block, other_mount, shared) in [
        ("1M", false, true),
        ("1M", true, false),
        ("16M", false, false),
        ("16M", true, true),
    ] {
        let case = format!("{block} blocks, evicted by another mount: {other_mount}");
        let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let big = pseudo_random(9 * MIB + 77, 5);
        std::fs::write(lake.path().join("big.bin"), &big).unwrap();
        let other = pseudo_random(24 * MIB, 6);
        std::fs::write(lake.path().join("other.bin"), &other).unwrap();
        let lake_url = format!("file://{}", lake.path().display());
        let args = [
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--block-size",
            block,
            "--metrics-addr",
            "127.0.0.1:0",
            "--read-only",
            "--cache-size",
            "32M",
            "--max-memory",
            "64M",
        ];
        let start = || Mount::start(&lake_url, &args, &[]).expect("mount");
        let m = start();
        assert_eq!(std::fs::read(m.path().join("big.bin")).unwrap(), big);
        let path = m.path().join("big.bin");
        let mut f = None;
        assert!(
            wait_for(Duration::from_secs(10), || {
                let before = metric(&m, "passthrough_opens_total");
                // The last try's handle goes first: while a handle reads the normal way, no
                // open of the same file can be a passthrough one.
                drop(f.take());
                f = Some(File::open(&path).unwrap());
                metric(&m, "passthrough_opens_total") > before
            }),
            "{case}: never opened with passthrough"
        );
        let f = f.unwrap();
        let flags = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // SAFETY: a read-only mapping, unmapped below; the descriptor is closed at once.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                big.len(),
                libc::PROT_READ,
                flags,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        drop(f);
        // SAFETY: the mapping is big.len() bytes long and stays mapped until the munmap.
        let mapped = unsafe { std::slice::from_raw_parts(p as *const u8, big.len()) };
        assert!(mapped == &big[..], "{case}: read through the mapping");
        let second = other_mount.then(start);
        let reader = second.as_ref().unwrap_or(&m);
        // 24 MiB more into a 32 MiB cache: big.bin must go.
        assert!(std::fs::read(reader.path().join("other.bin")).unwrap() == other);
        assert!(
            wait_for(Duration::from_secs(10), || metric(
                reader,
                "disk_evictions_total"
            ) > 0),
            "{case}: nothing evicted"
        );
        // A punched hole also drops the pages it covered: they would be read from it again.
        let wrong = (0..big.len()).step_by(4096).find(|&i| mapped[i] != big[i]);
        // SAFETY: unmapping what was mapped above.
        unsafe { libc::munmap(p, big.len()) };
        assert_eq!(
            wrong, None,
            "{case}: the mapping read other bytes after an eviction"
        );
    }
}

#[test]
fn a_file_changed_after_its_last_close_is_never_read_through_its_old_cache_file() {
    // A cached file read through passthrough and closed keeps its cache file registered. Then
    // the file changes: written over in place through the mount, replaced by a rename through
    // the mount (a checkpoint saver), or replaced in the lake behind the mount. The next
    // reads see the new bytes, never the old cache file's.
    for change in ["in place", "rename over", "in the lake"] {
        let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let old = pseudo_random(2 * MIB + 5, 11);
        std::fs::write(lake.path().join("f.bin"), &old).unwrap();
        fill(lake.path(), cache.path(), &[("f.bin".into(), old.clone())]);
        let staging = tempfile::tempdir().unwrap();
        let st = staging.path().to_str().unwrap();
        let m = mount(
            lake.path(),
            cache.path(),
            &[
                "--passthrough",
                "on",
                "--staging-dir",
                st,
                "--metadata-ttl",
                "0",
            ],
        );
        let path = m.path().join("f.bin");
        // Read and closed twice: the second open names the registered file again.
        check(&path, &old);
        check(&path, &old);
        assert!(
            metric(&m, "passthrough_backings_reused_total") > 0,
            "{change}: the idle cache file was not reused"
        );
        let new = pseudo_random(2 * MIB + 6, 12);
        match change {
            "in place" => std::fs::write(&path, &new).unwrap(),
            "rename over" => {
                let tmp = m.path().join("f.bin.tmp");
                std::fs::write(&tmp, &new).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            _ => std::fs::write(lake.path().join("f.bin"), &new).unwrap(),
        }
        // Through the mount the change is seen at once; from the lake once the listing is
        // asked again (a TTL of 0). Every read is one version whole, never a mix.
        let seen = wait_for(Duration::from_secs(10), || {
            let got = std::fs::read(&path).unwrap();
            assert!(got == old || got == new, "{change}: a mix of versions");
            got == new
        });
        assert!(seen, "{change}: the old cache file was still read");
        check(&path, &new);
        check(&path, &new);
    }
}
