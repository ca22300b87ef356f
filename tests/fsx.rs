//! fsx (the Rust port of xfstests' file system exerciser) against real mounts of both lakes.
//! Every read fsx makes is checked by fsx itself; after its last close, the object in the lake
//! (read out of band) must equal the file the same run leaves on a local disk.
//!
//! Jobs: writes kept open; close/reopen with mmap and cache invalidation; close/reopen after
//! almost every op (fsx's `-c 1`), all over files of several 1 MiB blocks. About 20,000 ops per
//! lake, through a mount with a disk cache; `LAKEMOUNT_SOAK=N` multiplies the ops by N.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::lake::Lake;

struct Job {
    name: &'static str,
    ops: u32,
    weights: &'static str,
}

const JOBS: &[Job] = &[
    Job {
        name: "kept-open",
        ops: 8000,
        weights: "read = 10\nwrite = 10\nmapread = 0\nmapwrite = 0\ntruncate = 2\nfsync = 1\n",
    },
    Job {
        name: "reopen-mmap",
        ops: 6000,
        weights: "read = 10\nwrite = 10\nmapread = 2\nmapwrite = 2\nclose_open = 2\n\
                  invalidate = 1\ntruncate = 2\nfsync = 1\n",
    },
    Job {
        name: "reopen-often",
        ops: 6000,
        weights:
            "read = 10\nwrite = 10\nmapread = 0\nmapwrite = 0\nclose_open = 10\ntruncate = 2\n",
    },
];

/// Files of up to 2.5 blocks of the mount's 1 MiB, in operations of up to 256 KiB.
const FLEN: u32 = 5 << 19;

fn fsx_bin() -> PathBuf {
    common::tools::cargo_installed("fsx")
}

fn soak() -> u32 {
    std::env::var("LAKEMOUNT_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Runs one fsx job on `file`; panics with fsx's own report when it finds anything wrong.
fn fsx(job: &Job, seed: u64, file: &Path, work: &Path) {
    let conf = work.join(format!("{}.toml", job.name));
    let text = format!(
        "flen = {FLEN}\n[opsize]\nmax = 262144\n[weights]\n{}",
        job.weights
    );
    std::fs::write(&conf, text).unwrap();
    let out = Command::new(fsx_bin())
        .args([
            "-N",
            &(job.ops * soak()).to_string(),
            "-S",
            &seed.to_string(),
        ])
        .arg("-f")
        .arg(&conf)
        .arg("-P")
        .arg(work)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fsx {} (seed {seed}) on {} failed:\n{}{}",
        job.name,
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn exercise(lake: &Lake) {
    // With a disk cache: reads after a reopen come from it, random ones keep their pages there.
    let cache = tempfile::tempdir().unwrap();
    let m = lake.mount(&[
        "--block-size",
        "1M",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    let work = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    for (i, job) in JOBS.iter().enumerate() {
        let seed = 1000 + i as u64;
        let name = format!("fsx-{}", job.name);
        fsx(job, seed, &m.path().join(&name), work.path());
        // The same run on a local disk leaves what fsx believes it wrote.
        let reference = local.path().join(&name);
        fsx(job, seed, &reference, work.path());
        let want = std::fs::read(&reference).unwrap();
        assert!(
            lake.holds(&name, &want),
            "{}: after fsx {}'s last close the lake does not hold what it wrote ({} bytes expected, {:?} there)",
            lake.name(),
            job.name,
            want.len(),
            lake.get(&name).map(|d| d.len())
        );
    }
    let log = m.log_text();
    assert!(
        !log.contains("ERROR"),
        "{}: daemon errors:\n{log}",
        lake.name()
    );
}

#[test]
fn fsx_finds_no_mismatch_eio_or_sigbus_on_a_local_lake() {
    exercise(&Lake::local());
}

#[test]
fn fsx_finds_no_mismatch_eio_or_sigbus_on_azurite() {
    exercise(&Lake::azurite());
}
