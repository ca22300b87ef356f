//! A mount of a snapshot at scale: a manifest of 1,000 directories x 1,000 files (one
//! million objects; `LAKEMOUNT_BENCH_ENTRIES` for another count) written, loaded and mounted,
//! then `find` over the mount and `stat` of random paths, with the daemon's memory per entry.
//! Only metadata is touched, so the lake behind it is an empty local directory.
//!
//!   cargo bench --bench snapshot_scale            (needs FUSE rights)

mod common;

use std::process::{Command, Stdio};

use common::{timed, Daemon, MIB};
use lakemount::snapshot::manifest::{Entry, Manifest};

fn rss(pid_status: &str, field: &str) -> u64 {
    pid_status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn main() {
    let n: usize = std::env::var("LAKEMOUNT_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dirs = 1000.min(n.max(1));
    let work = tempfile::tempdir().unwrap();
    let lake_dir = work.path().join("lake");
    let mp = work.path().join("mnt");
    std::fs::create_dir_all(&lake_dir).unwrap();
    std::fs::create_dir_all(&mp).unwrap();
    let lake = format!("file://{}", lake_dir.display());
    let path = work.path().join("scale.manifest");

    let (m, make) = timed(|| {
        let entries = (0..n)
            .map(|i| Entry {
                key: format!("d{:04}/f{:07}.jpg", i % dirs, i),
                size: 100_000 + i as u64 % 977,
                etag: format!("\"0x8DD{i:011X}\""),
                mtime: "2026-12-01T00:00:00Z".into(),
                md5: None,
                dir: false,
                meta: Default::default(),
            })
            .collect();
        Manifest::new(&lake, entries).unwrap()
    });
    let (_, write) = timed(|| m.write(&path).unwrap());
    drop(m);
    let size = std::fs::metadata(&path).unwrap().len();
    let (loaded, load) = timed(|| Manifest::load(&path).unwrap());
    drop(loaded);
    println!(
        "manifest of {n} entries: built {make:.1} s, written {write:.1} s, {:.0} MiB on disk ({:.0} bytes per entry), loaded and checked {load:.1} s",
        size as f64 / MIB as f64,
        size as f64 / n as f64
    );

    let (d, mount) = timed(|| {
        Daemon::lakemount(
            &lake,
            &mp,
            &[
                "--manifest",
                path.to_str().unwrap(),
                "--metadata-ttl",
                "3600",
            ],
            &[],
        )
    });
    let status = || std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let idle = rss(&status(), "VmRSS:");
    let find = |what: &str| {
        let (out, secs) = timed(|| {
            Command::new("find")
                .arg(&mp)
                .stdout(Stdio::piped())
                .output()
                .unwrap()
        });
        let lines = out.stdout.iter().filter(|b| **b == b'\n').count();
        assert_eq!(lines, n + dirs + 1, "find lists every file and directory");
        println!(
            "find ({what}): {secs:.2} s, {:.1} us per entry",
            secs * 1e6 / (n + dirs) as f64
        );
    };
    find("cold");
    find("warm");
    let after = rss(&status(), "VmRSS:");
    let mut x = 12345u64;
    let stats = 10_000;
    let (_, secs) = timed(|| {
        for _ in 0..stats {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (x >> 33) as usize % n;
            let p = mp.join(format!("d{:04}/f{:07}.jpg", i % dirs, i));
            std::fs::metadata(&p).unwrap();
        }
    });
    println!(
        "stat of {stats} random paths: {:.1} us each",
        secs * 1e6 / stats as f64
    );
    // The kernel lets go of its inodes (as under memory pressure): the daemon forgets them
    // and gives the memory back. Polled until it stops falling, at most 30 s.
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "2").is_ok();
    let mut forgotten = rss(&status(), "VmRSS:");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut still = 0;
    while dropped && still < 10 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = rss(&status(), "VmRSS:");
        still = if now + MIB >= forgotten { still + 1 } else { 0 };
        forgotten = forgotten.min(now);
    }
    println!(
        "daemon: mounted in {mount:.1} s; RSS {:.0} MiB after mount ({:.0} bytes per entry), {:.0} MiB after find ({:.0} bytes per entry), {} after the kernel forgot its inodes; peak {:.0} MiB",
        idle as f64 / MIB as f64,
        idle as f64 / n as f64,
        after as f64 / MIB as f64,
        after as f64 / n as f64,
        if dropped {
            format!(
                "{:.0} MiB ({:.0} bytes per entry)",
                forgotten as f64 / MIB as f64,
                forgotten as f64 / n as f64
            )
        } else {
            "not measured (no right to drop caches)".into()
        },
        d.peak_rss() as f64 / MIB as f64
    );
}
