//! fio against the mount, in one run so the ratios hold on a noisy machine: sequential 1 MiB
//! reads with 1 and 4 jobs (4 files of 256 MiB) and random 4 KiB reads with 4 jobs (10 s,
//! O_DIRECT: each read reaches the file system), each
//!   - on local disk (the same files, page cache dropped),
//!   - cold, through a mount over a throttled in-memory store (20 ms first byte, 200 MiB/s),
//!   - warm, from the disk block cache after a remount (page caches dropped),
//!
//! with the daemon's peak RSS and CPU seconds per GiB served for the warm case.
//!
//!   cargo bench --bench fio            (needs fio, installed by ./scripts/install-deps; root)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::tree::pseudo_random as content;
use common::{read_all, Daemon, MIB};
use lakemount::config::MountSettings;
use lakemount::lake_url::LakeUrl;
use lakemount::metrics::Metrics;
use lakemount::mount::{build_fs, runtime, Session};
use lakemount::store::memory::MemoryStore;
use lakemount::store::throttle::ThrottledStore;

const FILES: usize = 4;
const SIZE: u64 = 256 * MIB;
const CAP: u64 = 200 * MIB;

/// A job: name and fio arguments, given the files.
type Job = (&'static str, fn(&[PathBuf]) -> Vec<String>);

fn jobs() -> Vec<Job> {
    vec![
        ("seq 1M x1", |f| {
            vec![
                "--name=s".into(),
                "--rw=read".into(),
                "--bs=1M".into(),
                format!("--filename={}", f[0].display()),
            ]
        }),
        ("seq 1M x4", |f| {
            let mut a = vec!["--rw=read".into(), "--bs=1M".into()];
            for (i, p) in f.iter().enumerate() {
                a.push(format!("--name=s{i}"));
                a.push(format!("--filename={}", p.display()));
            }
            a
        }),
        ("rand 4K x4", |f| {
            vec![
                "--name=r".into(),
                "--rw=randread".into(),
                "--bs=4k".into(),
                // Past the page cache, which would soon hold the whole file.
                "--direct=1".into(),
                "--numjobs=4".into(),
                "--time_based".into(),
                "--runtime=10".into(),
                format!("--filename={}", f[0].display()),
            ]
        }),
    ]
}

/// Runs fio; returns (MiB/s, IOPS) summed over its jobs.
fn fio(args: &[String]) -> (f64, f64) {
    let out = Command::new("fio")
        .args(["--ioengine=psync", "--output-format=json", "--readonly"])
        .args(["--invalidate=1", "--group_reporting=0"])
        .args(args)
        .output()
        .expect("fio (./scripts/install-deps installs it)");
    assert!(out.status.success(), "fio {args:?}: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut bw, mut iops) = (0.0, 0.0);
    for j in v["jobs"].as_array().unwrap() {
        bw += j["read"]["bw_bytes"].as_f64().unwrap_or(0.0);
        iops += j["read"]["iops"].as_f64().unwrap_or(0.0);
    }
    (bw / MIB as f64, iops)
}

fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("dropping caches needs root");
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    (0..FILES).map(|i| dir.join(format!("f{i}.bin"))).collect()
}

fn main() {
    lakemount::tune_allocator();
    let work = tempfile::tempdir().unwrap();
    let (lake, mp, cache) = (
        work.path().join("lake"),
        work.path().join("mnt"),
        work.path().join("cache"),
    );
    for d in [&lake, &mp, &cache] {
        std::fs::create_dir_all(d).unwrap();
    }
    let data: Vec<Vec<u8>> = (0..FILES)
        .map(|i| content(SIZE as usize, i as u64 + 1))
        .collect();
    for (p, d) in files_in(&lake).iter().zip(&data) {
        std::fs::write(p, d).unwrap();
    }

    let mut rows = Vec::new();
    for (name, args) in jobs() {
        drop_caches();
        let local = fio(&args(&files_in(&lake)));

        // Cold: a fresh mount over the throttled store, filesystem in this process.
        let rt = runtime().unwrap();
        let mem = Arc::new(MemoryStore::new());
        for (i, d) in data.iter().enumerate() {
            mem.put(&format!("f{i}.bin"), d.clone());
        }
        let store = Arc::new(ThrottledStore::new(
            mem,
            Duration::from_millis(20),
            Some(CAP),
        ));
        let settings = MountSettings {
            metadata_ttl: Duration::from_secs(300),
            read_only: true,
            ..MountSettings::defaults(
                LakeUrl::Local {
                    path: "/fio".into(),
                },
                mp.clone(),
            )
        };
        let fs = build_fs(store, &settings, Arc::new(Metrics::default())).unwrap();
        let s = Session::start(fs, &mp, false, rt.handle().clone()).unwrap();
        let cold = fio(&args(&files_in(&mp)));
        drop(s);
        drop(rt);
        rows.push((name, local, cold));
    }

    // Warm: fill the disk cache, remount, drop the page caches.
    let lake_url = format!("file://{}", lake.display());
    let flags = ["--read-only", "--cache-dir", cache.to_str().unwrap()];
    let d = Daemon::lakemount(&lake_url, &mp, &flags, &[]);
    for p in files_in(&mp) {
        read_all(&p);
    }
    drop(d);
    let d = Daemon::lakemount(&lake_url, &mp, &flags, &[]);
    // A file's first open after the remount starts the check of its bytes (passthrough);
    // the jobs measure the opens after it.
    for p in files_in(&mp) {
        assert!(
            d.wait_passthrough(&p),
            "{} never opened with passthrough",
            p.display()
        );
    }
    let mut warm = Vec::new();
    let cpu0 = d.cpu_seconds();
    let mut served = 0.0;
    for (name, args) in jobs() {
        drop_caches();
        let r = fio(&args(&files_in(&mp)));
        served += r.0 * if name.starts_with("rand") { 10.0 } else { 0.0 };
        warm.push(r);
    }
    let cpu = d.cpu_seconds() - cpu0;
    let gets = d.metric("store_get_requests_total");
    let peak = d.peak_rss();
    drop(d);
    // Bytes the sequential jobs read: one file, then all four.
    served += (SIZE * (1 + FILES as u64)) as f64 / MIB as f64;

    println!("fio, psync, page caches dropped before each job; MiB/s (IOPS for random):");
    for ((name, local, cold), w) in rows.iter().zip(&warm) {
        let (l, c, h) = if name.starts_with("rand") {
            (local.1, cold.1, w.1)
        } else {
            (local.0, cold.0, w.0)
        };
        let link = if name.starts_with("rand") {
            String::new()
        } else {
            format!("{:.2} of the link, ", c / (CAP / MIB) as f64)
        };
        println!(
            "  {name:<11} local {l:>8.0} | cold over a {} MiB/s link {c:>7.0} ({link}{:.3} of local) | warm from the disk cache {h:>8.0} ({:.2} of local)",
            CAP / MIB,
            c / l,
            h / l
        );
    }
    println!(
        "warm: {gets} requests to the lake; daemon peak RSS {:.0} MiB; {:.2} CPU seconds per GiB served",
        peak as f64 / MIB as f64,
        cpu / (served / 1024.0)
    );
}
