//! Baseline of the mount over the embedded default (a local directory as the lake), measured
//! against the same files read directly, in one run so the ratios hold on a noisy machine.
//!
//!   cargo bench --bench mount_local            (needs root for FUSE and dropping caches)
//!
//! Prints: sequential-read throughput ratio (mount / local, both cold), `ls -lR` and `find`
//! time ratios (mount / local), and the daemon's peak RSS.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIG: usize = 512 << 20;
const FILES: usize = 5_000;

fn drop_caches() {
    // Best effort: without root the ratios compare warm page caches.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn mounted(mp: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
}

struct Daemon {
    child: Child,
    mp: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if mounted(&self.mp) {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn run(cmd: &str, args: &[&str]) {
    let ok = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "{cmd} {args:?} failed");
}

fn main() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("lake");
    let mp = work.path().join("mnt");
    std::fs::create_dir_all(src.join("tree")).unwrap();
    std::fs::create_dir_all(&mp).unwrap();
    let block: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(src.join("big.bin")).unwrap();
        for _ in 0..BIG >> 20 {
            f.write_all(&block).unwrap();
        }
    }
    for i in 0..FILES {
        let d = src.join(format!("tree/d{:02}", i % 50));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i:05}.bin")), &block[..4096]).unwrap();
    }

    let child = Command::new(env!("CARGO_BIN_EXE_lakemount"))
        .args([
            "mount",
            &format!("file://{}", src.display()),
            mp.to_str().unwrap(),
            "--foreground",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon {
        child,
        mp: mp.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mounted(&mp) {
        assert!(Instant::now() < deadline, "mount did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }

    let cat = |dir: &Path| {
        drop_caches();
        time(|| run("cat", &[dir.join("big.bin").to_str().unwrap()]))
    };
    let local_read = cat(&src);
    let mount_read = cat(&mp);
    let mib = (BIG >> 20) as f64;
    println!(
        "sequential read {} MiB, cold: local {:.0} MiB/s, mount {:.0} MiB/s, ratio mount/local {:.2}",
        BIG >> 20,
        mib / local_read.as_secs_f64(),
        mib / mount_read.as_secs_f64(),
        local_read.as_secs_f64() / mount_read.as_secs_f64()
    );

    for (name, args) in [("ls -lR", vec!["-lR"]), ("find", vec![])] {
        let tool = if name == "find" { "find" } else { "ls" };
        let go = |dir: &Path| {
            drop_caches();
            let mut a = args.clone();
            let d = dir.join("tree");
            a.insert(0, d.to_str().unwrap());
            if tool == "ls" {
                a.swap(0, 1);
            }
            time(|| run(tool, &a))
        };
        let local = go(&src);
        let cold = go(&mp);
        let warm = go(&mp);
        println!(
            "{name} over {FILES} files: local {:.0} ms, mount cold {:.0} ms (x{:.1}), mount warm {:.0} ms (x{:.1})",
            local.as_secs_f64() * 1e3,
            cold.as_secs_f64() * 1e3,
            cold.as_secs_f64() / local.as_secs_f64(),
            warm.as_secs_f64() * 1e3,
            warm.as_secs_f64() / local.as_secs_f64()
        );
    }
    println!(
        "daemon peak RSS: {:.1} MiB",
        peak_rss_mib(daemon.child.id())
    );
}
