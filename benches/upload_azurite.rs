//! Bulk upload to an Azure-API server (Azurite on loopback), ratios within one run, plus the
//! peak RSS of `lakemount upload` and of the mount daemon:
//!
//! 1. `lakemount upload --threads 16` of 1 GiB + 5,000 x 100 KB vs `rclone copy --transfers 16`
//!    of the same tree (when rclone is installed): time ratio, target <= 1.0;
//! 2. `cp` of the 1 GiB file into a mount vs `lakemount upload` of it: throughput ratio,
//!    target >= 0.7.
//!
//!   cargo bench --bench upload_azurite

#[allow(dead_code)]
#[path = "../tests/common/azurite.rs"]
mod azurite;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use azurite::Azurite;
use common::Daemon;

const SMALL: usize = 5000;
const BIG: u64 = 1 << 30;

/// Runs `cmd` to completion; returns (seconds, peak RSS in bytes).
// The child is reaped by wait4 (which also reports its peak RSS), not Child::wait.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (f64, u64) {
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, which nothing else waits for.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let secs = started.elapsed().as_secs_f64();
    assert!(
        pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed ({status})"
    );
    (secs, usage.ru_maxrss as u64 * 1024)
}

fn upload(az: &Azurite, src: &Path, container: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lakemount"));
    cmd.args(["upload", src.to_str().unwrap()])
        .arg(format!("az://devstoreaccount1/{container}"))
        .args(["--threads", "16", "--endpoint", &az.endpoint()])
        .env("AZURE_STORAGE_CONNECTION_STRING", az.connection_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

fn write_big(path: &Path) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let chunk = common::tree::pseudo_random(1 << 20, 42);
    for i in 0..(BIG >> 20) {
        // Each MiB different, so nothing downstream can dedupe.
        let mut c = chunk.clone();
        c[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all(&c).unwrap();
    }
}

fn main() {
    let az = Azurite::start();
    for c in ["up-lm", "up-rc", "up-cp", "up-one"] {
        az.create_container(c);
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    write_big(&tree.join("big.bin"));
    for i in 0..SMALL {
        let dir = tree.join(format!("crops/d{:02}", i % 50));
        std::fs::create_dir_all(&dir).unwrap();
        let data = common::tree::pseudo_random(100_000, i as u64);
        std::fs::write(dir.join(format!("{i:04}.jpg")), data).unwrap();
    }
    let total_mib = (BIG + SMALL as u64 * 100_000) as f64 / 1048576.0;

    // 1. The whole tree: lakemount upload vs rclone copy.
    let (lm_secs, lm_rss) = run_measured(&mut upload(&az, &tree, "up-lm"));
    println!(
        "lakemount upload --threads 16: {total_mib:.0} MiB in {lm_secs:.1} s ({:.0} MiB/s), peak RSS {} MiB",
        total_mib / lm_secs,
        lm_rss >> 20
    );
    if Command::new("rclone").arg("version").output().is_ok() {
        let conf = work.path().join("rclone.conf");
        let sas_url = format!("{}?{}", az.endpoint(), az.account_sas("rwdlac"));
        std::fs::write(
            &conf,
            format!("[az]\ntype = azureblob\nsas_url = {sas_url}\n"),
        )
        .unwrap();
        let mut rc = Command::new("rclone");
        rc.args(["--config", conf.to_str().unwrap(), "copy"])
            .arg(&tree)
            .args(["az:up-rc", "--transfers", "16"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let (rc_secs, rc_rss) = run_measured(&mut rc);
        println!(
            "rclone copy --transfers 16: {rc_secs:.1} s ({:.0} MiB/s), peak RSS {} MiB",
            total_mib / rc_secs,
            rc_rss >> 20
        );
        println!(
            "1. time ratio lakemount / rclone: {:.2} (target <= 1.0)",
            lm_secs / rc_secs
        );
    } else {
        println!("1. rclone is not installed: no comparison");
    }

    // 2. The 1 GiB file alone: cp into a mount vs lakemount upload.
    let one = work.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::rename(tree.join("big.bin"), one.join("big.bin")).unwrap();
    let (up_secs, _) = run_measured(&mut upload(&az, &one, "up-one"));
    let mp = work.path().join("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    let staging = work.path().join("staging");
    let d = Daemon::lakemount(
        "az://devstoreaccount1/up-cp",
        &mp,
        &[
            "--endpoint",
            &az.endpoint(),
            "--staging-dir",
            staging.to_str().unwrap(),
        ],
        &[("AZURE_STORAGE_CONNECTION_STRING", az.connection_string())],
    );
    let started = Instant::now();
    let ok = Command::new("cp")
        .arg(one.join("big.bin"))
        .arg(mp.join("big.bin"))
        .status()
        .unwrap()
        .success();
    let cp_secs = started.elapsed().as_secs_f64();
    assert!(ok, "cp into the mount failed");
    let daemon_rss = d.peak_rss();
    drop(d);
    let mib = BIG as f64 / 1048576.0;
    println!(
        "1 GiB: lakemount upload {:.0} MiB/s, cp into the mount {:.0} MiB/s (daemon peak RSS {} MiB)",
        mib / up_secs,
        mib / cp_secs,
        daemon_rss >> 20
    );
    println!(
        "2. throughput ratio cp-into-mount / upload: {:.2} (target >= 0.7)",
        up_secs / cp_secs
    );
}
