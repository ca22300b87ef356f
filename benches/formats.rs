//! Data-format benchmark: what a training job's second epoch costs through the mount, from
//! the disk cache, against the same files on local disk. Ratios are measured in one run (the
//! machine is shared and noisy), medians of 3 alternating trials with every page cache
//! dropped before each, plus the daemon's peak RSS and CPU seconds:
//!
//!   ./scripts/install-deps && cargo bench --bench formats      (root needed)
//!
//! Workloads (`benches/formats.py`, in the venv `target/bench-venv`): 5,000 random LMDB gets
//! (mmap), 300 gathers of 64 random rows from a 256 MiB `.npy` opened with `mmap_mode="r"`,
//! 300 random 16-row slices of a chunked 256 MiB HDF5 dataset, and an epoch of 2,000 JPEGs
//! decoded by 4 forked workers. The lake is a local directory, warmed into the cache with
//! `lakemount warm`, then mounted read-only with `--max-memory 128M` (less than the data): with
//! passthrough (the default there) and without.

mod common;

use std::path::Path;
use std::process::Command;

use common::{drop_tree, Daemon};

const WORKLOADS: [&str; 4] = ["lmdb_gets", "npy_gathers", "h5_slices", "jpeg_epoch"];

fn python() -> String {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-venv/bin/python");
    assert!(
        Path::new(p).exists(),
        "{p} is missing: run ./scripts/install-deps first"
    );
    p.to_string()
}

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/benches/formats.py")
}

/// Seconds of workload `name` over `root`.
fn run(root: &Path, name: &str) -> f64 {
    let out = Command::new(python())
        .args([script(), "run", root.to_str().unwrap(), name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} over {}: {out:?}",
        root.display()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[name].as_f64().unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    lakemount::tune_allocator();
    let work = tempfile::tempdir().unwrap();
    let (lake, cache, mp) = (
        work.path().join("lake"),
        work.path().join("cache"),
        work.path().join("mnt"),
    );
    for d in [&lake, &cache, &mp] {
        std::fs::create_dir_all(d).unwrap();
    }
    let gen = Command::new(python())
        .args([script(), "gen", lake.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(gen.success());
    let url = format!("file://{}", lake.display());
    let cache_arg = cache.to_str().unwrap();
    let warm = Command::new(env!("CARGO_BIN_EXE_lakemount"))
        .args(["warm", &url, "--cache-dir", cache_arg])
        .output()
        .unwrap();
    assert!(warm.status.success(), "{warm:?}");

    for (label, pt) in [("passthrough", "auto"), ("no passthrough", "off")] {
        // A memory tier much smaller than the data, as on a node whose dataset is larger
        // than RAM: the second epoch reads the disk cache.
        let args = [
            "--cache-dir",
            cache_arg,
            "--read-only",
            "--max-memory",
            "128M",
            "--passthrough",
            pt,
        ];
        let d = Daemon::lakemount(&url, &mp, &args, &[]);
        let (mut cpu, mut served) = (0.0, 0.0);
        for name in WORKLOADS {
            let (mut local, mut mounted) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                for dir in [&lake, &cache, &mp] {
                    drop_tree(dir);
                }
                local.push(run(&lake, name));
                for dir in [&lake, &cache, &mp] {
                    drop_tree(dir);
                }
                let cpu0 = d.cpu_seconds();
                mounted.push(run(&mp, name));
                cpu += d.cpu_seconds() - cpu0;
            }
            let (l, m) = (median(local), median(mounted));
            served += m;
            println!(
                "{name}, {label}: local {l:.3} s, mount (disk cache) {m:.3} s = {:.2}x local (target <= 1.2x)",
                m / l
            );
        }
        assert_eq!(
            d.metric("store_get_requests_total"),
            0,
            "the warmed data came from the lake"
        );
        println!(
            "formats, {label}: daemon peak RSS {:.0} MiB, {cpu:.1} CPU s over the {served:.1} s of its 12 workload runs",
            d.peak_rss() as f64 / (1 << 20) as f64,
        );
        drop(d);
    }
}
