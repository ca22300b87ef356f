//! Namespaces at scale: a tree of N files in 1,000 directories (a `file://` lake), walked with
//! `find` through lakemount, through rclone mount (where installed) and on the local disk, in
//! one run. Per entry: `find` time cold (page caches dropped) and warm, a stat of every entry;
//! the kernel inodes a walk leaves, the daemon's memory per entry (above its idle RSS) after
//! the walk, after the kernel forgot its inodes and after the metadata TTL expired, and the
//! listings a warm walk makes. Ends with how per-entry time grows with N (an exponent: 1.0 is
//! linear). First, `ls -f` of a generated directory of a million names listed in pages: when
//! its first names show.
//!
//!   cargo bench --bench namespace                         (N = 100,000 and 1,000,000)
//!   LAKEMOUNT_BENCH_ENTRIES=100000,1000000,10000000 cargo bench --bench namespace
//!
//! Needs root (FUSE, dropping caches). The trees are hard links to a few empty files, kept
//! under target/bench-namespace/ for the next run (10 M entries take about a minute to make).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::dirents::getdents;
use common::{timed, Daemon, MIB};
use lakemount::config::MountSettings;
use lakemount::lake_url::LakeUrl;
use lakemount::metrics::Metrics;
use lakemount::mount::{build_fs, runtime, Session};
use lakemount::store::{ListPage, ObjectInfo, Store, StoreError, StoreResult};
use std::sync::Arc;

const DIRS: usize = 1000;

/// The tree of `n` files, made once: `dNNNN/fNNNNNNNN.jpg`, hard links to empty files.
fn tree(n: usize) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-namespace/n{n}"));
    let done = root.with_extension("done");
    if done.exists() {
        return root;
    }
    let _ = std::fs::remove_dir_all(&root);
    let seeds = root.with_extension("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    for d in 0..DIRS {
        std::fs::create_dir_all(root.join(format!("d{d:04}"))).unwrap();
    }
    let (_, secs) = timed(|| {
        let mut seed = PathBuf::new();
        for i in 0..n {
            // ext4 allows 65,000 links to one inode.
            if i % 60_000 == 0 {
                seed = seeds.join(format!("{i}"));
                std::fs::write(&seed, b"").unwrap();
            }
            let p = root.join(format!("d{:04}/f{i:08}.jpg", i % DIRS));
            std::fs::hard_link(&seed, p).unwrap();
        }
    });
    std::fs::remove_dir_all(&seeds).unwrap();
    std::fs::write(&done, b"").unwrap();
    println!("made a tree of {n} entries in {secs:.0} s");
    root
}

fn drop_caches(what: &str) {
    std::fs::write("/proc/sys/vm/drop_caches", what).expect("dropping caches needs root");
}

/// Active FUSE inodes in the kernel (all mounts).
fn fuse_inodes() -> u64 {
    let slab = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    slab.lines()
        .find(|l| l.starts_with("fuse_inode "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// RSS once it stops falling (polled, at most 30 s).
fn settled_rss(pid: u32) -> u64 {
    let end = Instant::now() + Duration::from_secs(30);
    let (mut low, mut still) = (rss(pid), 0);
    while still < 10 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        let now = rss(pid);
        still = if now + MIB >= low { still + 1 } else { 0 };
        low = low.min(now);
    }
    low
}

/// Seconds for `find DIR` (with `-printf` args: a stat of every entry), checking the count.
fn find(dir: &Path, stat: bool, expect: usize) -> f64 {
    let mut cmd = Command::new("find");
    cmd.arg(dir);
    if stat {
        cmd.args(["-printf", "%s\n"]);
    }
    let (out, secs) = timed(|| cmd.stdout(Stdio::piped()).output().unwrap());
    let lines = out.stdout.iter().filter(|b| **b == b'\n').count();
    assert_eq!(lines, expect, "find {} lists every entry", dir.display());
    secs
}

#[derive(Default)]
struct Walk {
    cold: f64,
    warm: f64,
    stat: f64,
    inodes: u64,
    rss: u64,
}

fn walk(mp: &Path, pid: Option<u32>, expect: usize) -> Walk {
    drop_caches("3");
    let before = fuse_inodes();
    let cold = find(mp, false, expect);
    let inodes = fuse_inodes().saturating_sub(before);
    let rss = pid.map_or(0, rss);
    let warm = find(mp, false, expect);
    // A stat of every entry costs a lookup each in any FUSE file system (tens of us on this
    // VM's small kernel hash tables): measured up to 2 M entries.
    let stat = if expect <= 2_100_000 {
        find(mp, true, expect)
    } else {
        f64::NAN
    };
    Walk {
        cold,
        warm,
        stat,
        inodes,
        rss,
    }
}

fn rclone(tree: &Path, mp: &Path) -> Option<Daemon> {
    Command::new("rclone").arg("version").output().ok()?;
    let mut cmd = Command::new("rclone");
    cmd.args(["mount", tree.to_str()?, mp.to_str()?, "--read-only"])
        .args(["--dir-cache-time", "1h", "--attr-timeout", "1h"]);
    Some(Daemon::spawn(cmd, mp))
}

/// A lake whose directory `big/` holds `n` generated names, listed in pages of 5,000 that
/// take 20 ms each (Azure's page size; a round trip to a nearby region).
#[derive(Debug)]
struct Huge {
    n: usize,
}

#[async_trait::async_trait]
impl Store for Huge {
    fn describe(&self) -> String {
        "a generated directory".into()
    }

    async fn list_page(&self, prefix: &str, marker: Option<String>) -> StoreResult<ListPage> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if prefix.is_empty() {
            return Ok(ListPage {
                prefixes: vec!["big/".into()],
                ..ListPage::default()
            });
        }
        let start: usize = marker.map_or(0, |m| m.parse().unwrap());
        let end = (start + 5000).min(self.n);
        let file = |i: usize| ObjectInfo {
            key: format!("big/f{i:08}.jpg"),
            size: 100_000,
            mtime: std::time::UNIX_EPOCH,
            etag: format!("\"0x{i:X}\""),
            is_dir_marker: false,
            content_md5: None,
            metadata: Default::default(),
        };
        Ok(ListPage {
            objects: (start..end).map(file).collect(),
            prefixes: Vec::new(),
            next: (end < self.n).then(|| end.to_string()),
        })
    }

    async fn head(&self, _: &str) -> StoreResult<Option<ObjectInfo>> {
        Ok(None)
    }

    async fn get_range(&self, key: &str, _: std::ops::Range<u64>, _: &str) -> StoreResult<Bytes> {
        Err(StoreError::NotFound(key.into()))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        Err(StoreError::NotFound(key.into()))
    }
}

/// `ls -f` of a directory of a million names, pages of 5,000 at 20 ms: when the first names
/// show, and when all have.
fn streaming(mp: &Path) {
    let n = 1_000_000;
    let rt = runtime().unwrap();
    let settings = MountSettings {
        metadata_ttl: Duration::from_secs(300),
        read_only: true,
        ..MountSettings::defaults(
            LakeUrl::Local {
                path: "/huge".into(),
            },
            mp.into(),
        )
    };
    let fs = build_fs(
        Arc::new(Huge { n }),
        &settings,
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let session = Session::start(fs, mp, false, rt.handle().clone()).unwrap();
    let start = Instant::now();
    let dir = std::fs::File::open(mp.join("big")).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let first = getdents(&dir, &mut buf).len();
    let first_at = start.elapsed();
    let mut all = first;
    loop {
        let k = getdents(&dir, &mut buf).len();
        if k == 0 {
            break;
        }
        all += k;
    }
    let all_at = start.elapsed();
    assert_eq!(all, n + 2);
    println!(
        "ls -f of a {n}-entry directory (pages of 5,000 at 20 ms): first {} names after {:.0} ms, all after {:.1} s",
        first,
        first_at.as_secs_f64() * 1000.0,
        all_at.as_secs_f64()
    );
    drop(dir);
    drop(session);
}

fn main() {
    let sizes: Vec<usize> = std::env::var("LAKEMOUNT_BENCH_ENTRIES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .expect("LAKEMOUNT_BENCH_ENTRIES: entry counts, comma-separated")
        })
        .collect();
    let work = tempfile::tempdir().unwrap();
    let mp = work.path().join("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    streaming(&mp);
    let mut rows = Vec::new();
    for &n in &sizes {
        let root = tree(n);
        let expect = n + DIRS + 1;
        let per = |s: f64| s * 1e6 / expect as f64;

        let lake = format!("file://{}", root.display());
        let ttl = ["--read-only", "--metadata-ttl", "3600"];
        let d = Daemon::lakemount(&lake, &mp, &ttl, &[]);
        let idle = rss(d.pid());
        let lists0 = d.metric("store_list_requests_total");
        let lm = walk(&mp, Some(d.pid()), expect);
        let lists = d.metric("store_list_requests_total") - lists0;
        // The warm walk and the stat walk: whatever they listed again.
        let relisted = lists.saturating_sub(DIRS as u64 + 1);
        drop_caches("2");
        // Past the daemon's housekeeping round (at most 10 s), which trims the heap.
        std::thread::sleep(Duration::from_secs(11));
        let forgot = settled_rss(d.pid());
        let peak = d.peak_rss();
        drop(d);

        // Expiry: the same walk under a short TTL, then past it.
        let short = ["--read-only", "--metadata-ttl", "2"];
        let d = Daemon::lakemount(&lake, &mp, &short, &[]);
        let idle_short = rss(d.pid());
        find(&mp, false, expect);
        drop_caches("2");
        // Past the TTL and the daemon's next round of housekeeping, with no use of the mount.
        std::thread::sleep(Duration::from_secs(5));
        let expired = settled_rss(d.pid());
        drop(d);

        let rc = rclone(&root, &mp).map(|d| {
            let idle = rss(d.pid());
            let mut w = walk(&mp, Some(d.pid()), expect);
            w.rss = w.rss.saturating_sub(idle);
            drop(d);
            w
        });
        let local = walk(&root, None, expect);

        println!("\n{n} files in {DIRS} directories ({expect} entries):");
        let rcs = |f: &dyn Fn(&Walk) -> f64| {
            rc.as_ref()
                .map_or("-".into(), |w| format!("{:.2}", per(f(w))))
        };
        println!(
            "  find cold, us per entry:   lakemount {:.2} | rclone {} | local {:.2}",
            per(lm.cold),
            rcs(&|w| w.cold),
            per(local.cold)
        );
        println!(
            "  find warm, us per entry:   lakemount {:.2} | rclone {} | local {:.2}",
            per(lm.warm),
            rcs(&|w| w.warm),
            per(local.warm)
        );
        println!(
            "  stat walk (find -printf %s), us per entry: lakemount {:.2} | rclone {} | local {:.2}",
            per(lm.stat),
            rcs(&|w| w.stat),
            per(local.stat)
        );
        println!(
            "  kernel FUSE inodes after a cold find: lakemount {} | rclone {}",
            lm.inodes,
            rc.as_ref().map_or("-".into(), |w| w.inodes.to_string())
        );
        println!(
            "  daemon RSS per entry above its idle RSS: lakemount {:.0} B after the cold walk, {:.0} B after the kernel forgot its inodes, {:.0} B after the TTL expired (peak {:.0} MiB) | rclone {}",
            lm.rss.saturating_sub(idle) as f64 / expect as f64,
            forgot.saturating_sub(idle) as f64 / expect as f64,
            expired.saturating_sub(idle_short) as f64 / expect as f64,
            peak as f64 / MIB as f64,
            rc.as_ref()
                .map_or("-".into(), |w| format!("{:.0} B", w.rss as f64 / expect as f64))
        );
        println!(
            "  listings: {lists} for the three walks ({} directories), {relisted} listed again",
            DIRS + 1
        );
        rows.push((
            n,
            per(lm.cold),
            per(lm.warm),
            rc.map(|w| (per(w.cold), per(w.warm))),
        ));
    }
    for pair in rows.windows(2) {
        let ((n0, c0, w0, r0), (n1, c1, w1, r1)) = (&pair[0], &pair[1]);
        let k = |a: f64, b: f64| ((b / a).ln() / (*n1 as f64 / *n0 as f64).ln()) + 1.0;
        let rc = match (r0, r1) {
            (Some((rc0, rw0)), Some((rc1, rw1))) => {
                format!(
                    "rclone {:.2} cold, {:.2} warm",
                    k(*rc0, *rc1),
                    k(*rw0, *rw1)
                )
            }
            _ => "rclone not installed".into(),
        };
        println!(
            "\ngrowth of find time from {n0} to {n1} (exponent, 1.0 = linear): lakemount {:.2} cold, {:.2} warm | {rc}",
            k(*c0, *c1),
            k(*w0, *w1)
        );
    }
}
