//! Bounded stress runs against Azurite. 16 readers and 4 writers through one mount with
//! `--max-memory 256M` for a fixed time (LAKEMOUNT_STRESS_SECS, default 20); and 64 handles
//! open at once reading 64 different files with `--max-memory 128M`. Every byte read is
//! compared with what it must be; the daemon must stay within its memory budget (+ 64 MiB)
//! and hold no more file descriptors at the end than at the start.

mod common;

use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::azurite::Azurite;
use common::mount::{mount_azurite, wait_for};
use common::proc::{daemon_pid, fd_counts, is_gone, status_bytes};
use common::tree::pseudo_random;

const CONTAINER: &str = "lake";
const MIB: u64 = 1 << 20;
const READERS: usize = 16;
const WRITERS: usize = 4;
const MAX_MEMORY: u64 = 256 * MIB;
/// What the daemon may use beyond --max-memory: code, runtime, buffers in flight.
const RSS_SLACK: u64 = 64 * MIB;

/// xorshift64: reproducible choices without an RNG crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Small files (under one block) and multi-block ones (8 MiB blocks), about 280 MiB in all:
/// more than the memory budget, so blocks are evicted and fetched again.
fn dataset() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut rng = Rng(0x5eed);
    for i in 0..48 {
        let len = rng.below(300_000) as usize;
        files.push((format!("small/s{i:02}.bin"), pseudo_random(len, 100 + i)));
    }
    for i in 0..6 {
        let len = (3 * MIB + rng.below(6 * MIB)) as usize;
        files.push((format!("mid/m{i}.bin"), pseudo_random(len, 200 + i)));
    }
    for i in 0..4 {
        let len = (56 * MIB) as usize + 4321;
        files.push((format!("large/l{i}.bin"), pseudo_random(len, 300 + i)));
    }
    files
}

#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    whole_files: AtomicU64,
    listings: AtomicU64,
    bytes_read: AtomicU64,
    files_written: AtomicU64,
    bytes_written: AtomicU64,
    checked_in_lake: AtomicU64,
    deleted: AtomicU64,
    errors: AtomicU64,
    mismatches: AtomicU64,
    /// The first few problems, to say what went wrong.
    first: Mutex<Vec<String>>,
}

impl Tally {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn problem(&self, counter: &AtomicU64, what: String) {
        Tally::add(counter, 1);
        let mut first = self.first.lock().unwrap();
        if first.len() < 10 {
            first.push(what);
        }
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Reads whole files, ranges (one or several preads per handle) and listings until `end`.
fn reader(id: u64, mp: &Path, files: &[(String, Vec<u8>)], end: Instant, t: &Tally) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id + 1));
    while Instant::now() < end {
        let (name, want) = &files[rng.below(files.len() as u64) as usize];
        let path = mp.join(name);
        match rng.below(10) {
            0 => match std::fs::read_dir(mp.join("small")).map(|d| d.count()) {
                Ok(48) => Tally::add(&t.listings, 1),
                Ok(_) => t.problem(&t.mismatches, "small/ does not list 48 files".into()),
                Err(e) => t.problem(&t.errors, format!("list small/: {e}")),
            },
            1..=3 => match std::fs::read(&path) {
                Ok(got) if got == *want => {
                    Tally::add(&t.whole_files, 1);
                    Tally::add(&t.bytes_read, got.len() as u64);
                }
                Ok(got) => t.problem(
                    &t.mismatches,
                    format!("{name}: whole read gave {} bytes, not the file", got.len()),
                ),
                Err(e) => t.problem(&t.errors, format!("read {name}: {e}")),
            },
            _ => {
                let f = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        t.problem(&t.errors, format!("open {name}: {e}"));
                        continue;
                    }
                };
                let len = want.len() as u64;
                let mut off = rng.below(len.max(1));
                // A few ranges on one handle, mostly moving forward as a data loader does.
                for _ in 0..1 + rng.below(4) {
                    let n = 1 + rng.below(4 * MIB);
                    let mut buf = vec![0u8; n as usize];
                    match read_at(&f, &mut buf, off) {
                        Ok(got) => {
                            let expect =
                                &want[(off.min(len)) as usize..(off + n).min(len) as usize];
                            if &buf[..got] != expect {
                                t.problem(
                                    &t.mismatches,
                                    format!(
                                        "{name}: {n} bytes at {off}: wrong bytes or length {got}"
                                    ),
                                );
                            }
                            Tally::add(&t.reads, 1);
                            Tally::add(&t.bytes_read, got as u64);
                        }
                        Err(e) => t.problem(&t.errors, format!("read {name} at {off}: {e}")),
                    }
                    off = if rng.below(4) == 0 {
                        rng.below(len.max(1))
                    } else {
                        off + n
                    };
                }
            }
        }
    }
}

/// pread until `buf` is full or the file ends; returns the bytes read.
fn read_at(f: &std::fs::File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Creates files in its own directory (write in uneven pieces, close, read back), checks some
/// through Azurite directly, deletes every other one, until `end`.
fn writer(id: u64, mp: &Path, az: &common::azurite::Client, end: Instant, t: &Tally) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (id + 1));
    let dir = mp.join(format!("out/w{id}"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        t.problem(&t.errors, format!("mkdir {}: {e}", dir.display()));
        return;
    }
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        let name = format!("out/w{id}/f{i:04}.bin");
        let path = mp.join(&name);
        let len = match rng.below(4) {
            0 => rng.below(64 << 10),
            _ => rng.below(20 * MIB),
        } as usize;
        let data = pseudo_random(len, id << 32 | i);
        if let Err(e) = write_file(&path, &data, &mut rng) {
            t.problem(&t.errors, format!("write {name}: {e}"));
            continue;
        }
        Tally::add(&t.files_written, 1);
        Tally::add(&t.bytes_written, len as u64);
        match std::fs::read(&path) {
            Ok(got) if got == data => {}
            Ok(got) => t.problem(
                &t.mismatches,
                format!(
                    "{name}: read back {} bytes, not what was written",
                    got.len()
                ),
            ),
            Err(e) => t.problem(&t.errors, format!("read back {name}: {e}")),
        }
        if i.is_multiple_of(4) {
            // Another client sees the file whole once close has returned.
            match az.request("GET", &format!("{CONTAINER}/{name}"), &[], &[], b"") {
                Ok(r) if r.status == 200 && r.body == data => Tally::add(&t.checked_in_lake, 1),
                Ok(r) => t.problem(
                    &t.mismatches,
                    format!(
                        "{name} in the lake: HTTP {}, {} bytes",
                        r.status,
                        r.body.len()
                    ),
                ),
                Err(e) => t.problem(&t.errors, format!("GET {name} from Azurite: {e}")),
            }
        }
        if i.is_multiple_of(2) {
            match std::fs::remove_file(&path) {
                Ok(()) if std::fs::metadata(&path).is_err() => Tally::add(&t.deleted, 1),
                Ok(()) => t.problem(&t.mismatches, format!("{name} still there after unlink")),
                Err(e) => t.problem(&t.errors, format!("unlink {name}: {e}")),
            }
        }
    }
}

/// Writes `data` in uneven pieces and closes with close(2), whose result says whether the
/// commit worked (dropping a `File` would ignore it).
fn write_file(path: &PathBuf, data: &[u8], rng: &mut Rng) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let mut off = 0;
    while off < data.len() {
        let n = (1 + rng.below(MIB) as usize).min(data.len() - off);
        f.write_all(&data[off..off + n])?;
        off += n;
    }
    let fd = f.into_raw_fd();
    // SAFETY: closing the descriptor we own, once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn sixteen_readers_and_four_writers_see_no_error_and_no_wrong_byte() {
    let secs: u64 = std::env::var("LAKEMOUNT_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let files = dataset();
    std::thread::scope(|s| {
        for chunk in files.chunks(8) {
            let az = &az;
            s.spawn(move || {
                for (name, data) in chunk {
                    az.put_blob_large(CONTAINER, name, data);
                }
            });
        }
    });
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    let cache = tempfile::tempdir().unwrap();
    let m = mount_azurite(
        &az,
        CONTAINER,
        &[
            "--max-memory",
            "256M",
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--cache-size",
            "128M",
        ],
    );
    let mp = m.path();
    let pid = daemon_pid(&mp).expect("the mount's daemon is running");
    let (sockets_before, fds_before) = fd_counts(pid);
    let idle_rss = status_bytes(pid, "VmRSS");

    let t = Arc::new(Tally::default());
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for id in 0..READERS as u64 {
            let (mp, files, t) = (&mp, &files, &t);
            s.spawn(move || reader(id, mp, files, end, t));
        }
        for id in 0..WRITERS as u64 {
            let (mp, t, az) = (&mp, &t, az.client());
            s.spawn(move || writer(id, mp, &az, end, t));
        }
    });
    let ran = start.elapsed().as_secs_f64();

    let peak = status_bytes(pid, "VmHWM");
    // Handles are released by the kernel after close returns: give it a moment.
    let mut fds_after = (0, 0);
    let settled = wait_for(Duration::from_secs(10), || {
        fds_after = fd_counts(pid);
        fds_after.1 <= fds_before + 2
    });
    let g = Tally::get;
    eprintln!(
        "stress: {ran:.1} s over {} files ({} MiB), --max-memory 256M, --cache-size 128M\n  \
         {READERS} readers: {} ranged reads, {} whole files, {} listings, {} MiB read\n  \
         {WRITERS} writers: {} files ({} MiB) written, read back and checked, {} also checked \
         in the lake, {} deleted\n  \
         errors {}, mismatches {}; daemon RSS {} MiB idle, {} MiB peak (limit {} MiB); \
         descriptors: files {fds_before} -> {}, sockets {sockets_before} -> {}",
        files.len(),
        total / MIB,
        g(&t.reads),
        g(&t.whole_files),
        g(&t.listings),
        g(&t.bytes_read) / MIB,
        g(&t.files_written),
        g(&t.bytes_written) / MIB,
        g(&t.checked_in_lake),
        g(&t.deleted),
        g(&t.errors),
        g(&t.mismatches),
        idle_rss / MIB,
        peak / MIB,
        (MAX_MEMORY + RSS_SLACK) / MIB,
        fds_after.1,
        fds_after.0,
    );
    let first = t.first.lock().unwrap().clone();
    assert_eq!((g(&t.errors), g(&t.mismatches)), (0, 0), "{first:#?}");
    assert!(g(&t.reads) > 0 && g(&t.whole_files) > 0 && g(&t.files_written) > 0);
    assert!(
        peak <= MAX_MEMORY + RSS_SLACK,
        "peak RSS {} MiB over the budget",
        peak / MIB
    );
    assert!(
        settled,
        "descriptors leaked: {fds_before} files open before, {} after",
        fds_after.1
    );
    // Sockets are the HTTP connection pool: bounded by the requests once in flight.
    assert!(fds_after.0 <= 128, "{} sockets open", fds_after.0);
    assert!(!is_gone(pid), "the daemon survived");
}

/// Readers of the many-readers case, and what each file holds: more than one block each, so
/// every handle reads ahead and has a block of its own in use.
const MANY: usize = 64;
const MANY_FILE: usize = (12 << 20) + 4321;

/// One pass over a file the way `cat` reads it (128 KiB reads), compared as it goes.
fn cat(path: &Path, want: &[u8]) -> Result<(), String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("open: {e}"))?;
    let mut buf = vec![0u8; 128 << 10];
    let mut at = 0;
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("read at {at}: {e}"))?;
        if n == 0 {
            break;
        }
        if want.get(at..at + n) != Some(&buf[..n]) {
            return Err(format!("wrong bytes at {at}"));
        }
        at += n;
    }
    if at == want.len() {
        Ok(())
    } else {
        Err(format!("{at} of {} bytes", want.len()))
    }
}

#[test]
fn sixty_four_readers_of_different_files_stay_within_max_memory_and_give_it_back() {
    let az = Azurite::start();
    az.create_container(CONTAINER);
    let files: Vec<(String, Vec<u8>)> = (0..MANY)
        .map(|i| {
            (
                format!("f{i:02}.bin"),
                pseudo_random(MANY_FILE, 500 + i as u64),
            )
        })
        .collect();
    std::thread::scope(|s| {
        for chunk in files.chunks(MANY / 4) {
            let az = &az;
            s.spawn(move || {
                for (name, data) in chunk {
                    az.put_blob_large(CONTAINER, name, data);
                }
            });
        }
    });
    let staging = tempfile::tempdir().unwrap();
    let budget = 128 * MIB;
    let m = mount_azurite(
        &az,
        CONTAINER,
        &[
            "--max-memory",
            "128M",
            "--staging-dir",
            staging.path().to_str().unwrap(),
        ],
    );
    let mp = m.path();
    let pid = daemon_pid(&mp).expect("the mount's daemon is running");
    let idle = status_bytes(pid, "VmRSS");
    // Two rounds: the second shows that memory given back after the first is used again
    // rather than added to. In each, all handles are open at once and stay open until every
    // reader is done, so nothing a handle keeps between reads is missed.
    let mut after_close = Vec::new();
    for round in 0..2 {
        let opened = std::sync::Barrier::new(MANY);
        let done = std::sync::Barrier::new(MANY + 1);
        let problems = Mutex::new(Vec::new());
        let mut held = 0;
        std::thread::scope(|s| {
            for (name, want) in &files {
                let (mp, opened, done, problems) = (&mp, &opened, &done, &problems);
                s.spawn(move || {
                    let keep = std::fs::File::open(mp.join(name));
                    opened.wait();
                    if let Err(e) = cat(&mp.join(name), want) {
                        problems.lock().unwrap().push(format!("{name}: {e}"));
                    }
                    done.wait();
                    drop(keep);
                });
            }
            done.wait();
            held = status_bytes(pid, "VmRSS");
        });
        let problems = problems.into_inner().unwrap();
        assert!(problems.is_empty(), "round {round}: {problems:#?}");
        after_close.push((held, status_bytes(pid, "VmRSS")));
    }
    let peak = status_bytes(pid, "VmHWM");
    eprintln!(
        "{MANY} readers of {} MiB files, --max-memory 128M: daemon RSS {} MiB idle, {} MiB peak \
         (limit {} MiB); rounds (all open, all closed): {:?} MiB",
        MANY_FILE >> 20,
        idle / MIB,
        peak / MIB,
        (budget + RSS_SLACK) / MIB,
        after_close
            .iter()
            .map(|(a, b)| (a / MIB, b / MIB))
            .collect::<Vec<_>>()
    );
    assert!(
        peak <= budget + RSS_SLACK,
        "peak RSS {} MiB is over --max-memory 128M + {} MiB",
        peak / MIB,
        RSS_SLACK / MIB
    );
    for (held, closed) in &after_close {
        assert!(
            *held <= budget + RSS_SLACK && *closed <= budget + RSS_SLACK,
            "RSS {} MiB with the handles open, {} MiB after they closed",
            held / MIB,
            closed / MIB
        );
    }
    // What the first round's handles gave back when they closed served the second round:
    // it did not add to what the daemon holds (a few MiB of allocator slack aside).
    assert!(
        after_close[1].0 <= after_close[0].1 + 16 * MIB,
        "the second round grew RSS from {} to {} MiB",
        after_close[0].1 / MIB,
        after_close[1].0 / MIB
    );
}
