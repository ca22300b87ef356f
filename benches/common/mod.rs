//! What the benchmarks share: daemons under a guard, page-cache control, timing, epochs.
#![allow(dead_code)]

#[path = "../../tests/common/dirents.rs"]
pub mod dirents;
#[path = "../../tests/common/metrics.rs"]
pub mod metrics;
#[path = "../../tests/common/tree.rs"]
pub mod tree;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const MIB: u64 = 1 << 20;

pub fn mounted(mp: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
}

/// Polls (bounded) until `mp` is a mount point.
pub fn wait_mounted(mp: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mounted(mp) {
        assert!(Instant::now() < deadline, "{} never mounted", mp.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Drops a file's pages from the page cache (FUSE files too; no root needed).
pub fn drop_pages(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn drop_tree(dir: &Path) {
    for p in files(dir) {
        drop_pages(&p);
    }
}

pub fn read_all(path: &Path) -> u64 {
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

pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64())
}

/// `find DIR -type f | xargs -P8 -n50 cat > /dev/null`, the shape of a data-loader epoch,
/// after checking that all `expect` files are there. Returns seconds.
pub fn epoch(dir: &Path, expect: usize) -> f64 {
    assert_eq!(
        files(dir).len(),
        expect,
        "{} does not show all files",
        dir.display()
    );
    let cmd = format!(
        "find '{}' -type f | xargs -P8 -n50 cat > /dev/null",
        dir.display()
    );
    timed(|| {
        assert!(Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()
            .unwrap()
            .success())
    })
    .1
}

/// A FUSE daemon in the foreground (lakemount, rclone), stopped and unmounted on drop.
pub struct Daemon {
    child: Child,
    mp: PathBuf,
    metrics: Option<String>,
}

impl Daemon {
    /// `lakemount mount LAKE MP --foreground --metrics-addr ... EXTRA`, once it answers.
    pub fn lakemount(lake: &str, mp: &Path, extra: &[&str], env: &[(&str, String)]) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lakemount"));
        cmd.args([
            "mount",
            lake,
            mp.to_str().unwrap(),
            "--foreground",
            "--metrics-addr",
            &metrics,
        ])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)));
        let mut d = Daemon::spawn(cmd, mp);
        d.metrics = Some(metrics);
        d
    }

    pub fn spawn(mut cmd: Command, mp: &Path) -> Daemon {
        let child = cmd.stderr(Stdio::null()).spawn().unwrap();
        let d = Daemon {
            child,
            mp: mp.to_path_buf(),
            metrics: None,
        };
        wait_mounted(mp);
        d
    }

    pub fn metric(&self, name: &str) -> u64 {
        metrics::scrape(self.metrics.as_ref().expect("a lakemount daemon"), name)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens `path` through the mount until an open gets passthrough (a file over 64 MiB is
    /// checked in the background after its first open), at most a minute; false if none did.
    pub fn wait_passthrough(&self, path: &Path) -> bool {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            let before = self.metric("passthrough_opens_total");
            drop(std::fs::File::open(path).unwrap());
            if self.metric("passthrough_opens_total") > before {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// CPU seconds (user and system) the daemon has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    /// Peak resident memory (VmHWM) of the daemon so far.
    pub fn peak_rss(&self) -> u64 {
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
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mp)
            .stderr(Stdio::null())
            .status();
        // SAFETY: SIGTERM to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if mounted(&self.mp) {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}

/// A cache disk formatted as `lake-agent` formats a node's: ext4 with its journal, on a loop
/// device over a sparse file, mounted at `path`; unmounted (and detached) on drop. A cache
/// directory on the machine's own file system would measure that file system instead (one
/// without a journal makes every new file scan for recently freed inodes).
pub struct CacheDisk {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl CacheDisk {
    pub fn new(gib: u64) -> CacheDisk {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(gib << 30)
            .unwrap();
        let run = |c: &mut Command| {
            let out = c.output().unwrap();
            assert!(
                out.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "nodiscard,lazy_itable_init=1"])
            .arg(&img));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&path));
        CacheDisk { path, _dir: dir }
    }
}

impl Drop for CacheDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}
