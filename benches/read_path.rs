//! Read-path benchmarks. Ratios are measured in one run (the machine is shared and noisy),
//! plus peak memory:
//!
//!   cargo bench --bench read_path        (root or FUSE rights needed)
//!
//! a. cold sequential read of 1 GiB through a mount over a throttled in-memory store
//!    (20 ms first byte, 200 MiB/s link) vs that link's cap: does read-ahead hide latency?
//! b. the same 1 GiB from the disk block cache after a remount, page caches dropped, vs
//!    reading an identical local file with its page cache dropped;
//! c. a training epoch over 5,000 x 100 KB files (`find | xargs -P8 cat`): second epoch through
//!    the mount (from the memory block cache; and from the disk cache after a remount) vs the
//!    same tree on local disk, page caches dropped;
//! d. peak RSS of the daemon with 4 concurrent sequential readers vs its --max-memory.
//!
//! a runs the filesystem in this process over the throttled store; b-d run the `lakemount`
//! daemon itself over a local directory lake, and check with its metrics that the cached
//! epochs made zero requests to the lake.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lakemount::config::MountSettings;
use lakemount::lake_url::LakeUrl;
use lakemount::metrics::Metrics;
use lakemount::mount::{build_fs, runtime, Session};
use lakemount::store::memory::MemoryStore;
use lakemount::store::throttle::ThrottledStore;
use lakemount::store::DynStore;

const MIB: u64 = 1 << 20;
const CAP: u64 = 200 * MIB;
const LATENCY: Duration = Duration::from_millis(20);

fn settings(mountpoint: &Path) -> MountSettings {
    MountSettings {
        lake: LakeUrl::Local {
            path: "/bench".into(),
        },
        mountpoint: mountpoint.into(),
        read_only: true,
        foreground: true,
        allow_other: false,
        uid: 0,
        gid: 0,
        file_mode: 0o644,
        dir_mode: 0o755,
        metadata_ttl: Duration::from_secs(300),
        endpoint: None,
        auth: Default::default(),
        log_file: None,
        block_size: 8 * MIB,
        max_readahead: 128 * MIB,
        max_memory: 1 << 30,
        cache_dir: None,
        cache_size: lakemount::cache::disk::CacheSize::Bytes(64 << 30),
        metrics_addr: None,
    }
}

/// Drops `path`'s pages from the page cache (FUSE files too; no root needed).
fn drop_pages(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn drop_tree(dir: &Path) {
    for p in walk(dir) {
        drop_pages(&p);
    }
}

fn read_all(path: &Path) -> u64 {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut n = 0;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            return n;
        }
        n += k as u64;
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

/// `find DIR -type f | xargs -P8 -n50 cat > /dev/null`: the shape of a data-loader epoch.
fn epoch(dir: &Path) -> f64 {
    timed(|| {
        let cmd = format!(
            "find '{}' -type f | xargs -P8 -n50 cat > /dev/null",
            dir.display()
        );
        assert!(Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()
            .unwrap()
            .success());
    })
    .1
}

fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn mounted(mp: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
}

/// The real daemon in the foreground; SIGTERM (unmount) on drop.
struct Daemon {
    child: Child,
    metrics: String,
}

impl Daemon {
    fn start(lake: &Path, mp: &Path, extra: &[&str]) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_lakemount"))
            .args([
                "mount",
                &format!("file://{}", lake.display()),
                mp.to_str().unwrap(),
                "--foreground",
            ])
            .args(["--metrics-addr", &metrics])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !mounted(mp) {
            assert!(Instant::now() < deadline, "daemon did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, metrics }
    }

    fn metric(&self, name: &str) -> u64 {
        let mut s = std::net::TcpStream::connect(&self.metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let want = format!("lakemount_{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib * 1024
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to our own child; it unmounts and exits.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn main() {
    lakemount::tune_allocator();
    let work = tempfile::tempdir().unwrap();
    let mp = work.path().join("mnt");
    let lake = work.path().join("lake");
    let cache = work.path().join("cache");
    std::fs::create_dir_all(&mp).unwrap();
    std::fs::create_dir_all(&lake).unwrap();
    let big = content(1 << 30, 1);
    std::fs::write(lake.join("big.bin"), &big).unwrap();

    // a. cold sequential read over a throttled link, filesystem in this process.
    {
        let rt = runtime().unwrap();
        let mem = Arc::new(MemoryStore::new());
        mem.put("big.bin", big);
        let store: DynStore = Arc::new(ThrottledStore::new(mem, LATENCY, Some(CAP)));
        let fs = build_fs(store, &settings(&mp), Arc::new(Metrics::default())).unwrap();
        let s = Session::start(fs, &mp, false, rt.handle().clone()).unwrap();
        let (n, secs) = timed(|| read_all(&mp.join("big.bin")));
        println!(
            "a. cold sequential 1 GiB over a {} MiB/s link with 20 ms first byte: {:.0} MiB/s, ratio to the cap {:.2} (target >= 0.85)",
            CAP / MIB,
            n as f64 / secs / MIB as f64,
            n as f64 / secs / CAP as f64
        );
        drop(s);
    }

    for i in 0..5000u64 {
        let rel = format!("epoch/d{:02}/f{i:04}.bin", i % 50);
        let p = lake.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content(100_000, i + 10)).unwrap();
    }
    let cache_arg = ["--cache-dir", cache.to_str().unwrap()];

    // First pass fills the caches; the second epoch on the same mount reads the memory tier.
    let d = Daemon::start(&lake, &mp, &cache_arg);
    read_all(&mp.join("big.bin"));
    let first = epoch(&mp.join("epoch"));
    drop_tree(&mp.join("epoch"));
    let gets = d.metric("store_get_requests_total");
    let second_mem = epoch(&mp.join("epoch"));
    assert_eq!(
        d.metric("store_get_requests_total"),
        gets,
        "second epoch made requests"
    );
    drop(d);

    // Remount: only the disk tier is left. Drop every page cache involved.
    std::thread::sleep(Duration::from_secs(1));
    drop_tree(&cache);
    drop_tree(&lake);
    let d = Daemon::start(&lake, &mp, &cache_arg);
    let (_, local_secs) = timed(|| read_all(&lake.join("big.bin")));
    let (_, cached_secs) = timed(|| read_all(&mp.join("big.bin")));
    println!(
        "b. 1 GiB from the disk cache after a remount: {:.0} MiB/s vs local file {:.0} MiB/s, page caches dropped: ratio {:.2} (target >= 0.8)",
        1024.0 / cached_secs,
        1024.0 / local_secs,
        local_secs / cached_secs
    );
    drop_tree(&lake);
    let local_epoch = epoch(&lake.join("epoch"));
    let second_disk = epoch(&mp.join("epoch"));
    assert_eq!(
        d.metric("store_get_requests_total"),
        0,
        "the remounted epoch touched the lake"
    );
    drop(d);
    println!(
        "c. epoch of 5,000 x 100 KB: local disk {local_epoch:.2} s; mount: first {first:.2} s, second (memory cache) {second_mem:.2} s \
= ratio {:.2}, second after remount (disk cache) {second_disk:.2} s = ratio {:.2} (target >= 0.5)",
        local_epoch / second_mem,
        local_epoch / second_disk
    );

    // d. 4 concurrent sequential readers against a 256 MiB budget.
    for i in 0..4 {
        std::fs::write(lake.join(format!("f{i}.bin")), content(512 << 20, 100 + i)).unwrap();
    }
    let d = Daemon::start(
        &lake,
        &mp,
        &["--max-memory", "256M", "--max-readahead", "64M"],
    );
    let (_, secs) = timed(|| {
        std::thread::scope(|sc| {
            for i in 0..4 {
                let p = mp.join(format!("f{i}.bin"));
                sc.spawn(move || read_all(&p));
            }
        })
    });
    let peak = d.peak_rss();
    let wasted = d.metric("prefetched_unused_bytes_total");
    drop(d);
    println!(
        "d. 4 concurrent readers of 512 MiB each ({:.0} MiB/s together): daemon peak RSS {:.0} MiB with --max-memory 256 MiB \
(target <= 320 MiB); read-ahead wasted {} bytes",
        2048.0 / secs,
        peak as f64 / MIB as f64,
        wasted
    );
}
