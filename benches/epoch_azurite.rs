//! A training epoch straight from an Azure-API server (Azurite on loopback): lakemount vs
//! what the server itself delivers (curl fetching the same 5,000 x 100 KB blobs, 8 transfers
//! in parallel), and vs rclone mount (`--vfs-cache-mode full`) when rclone is installed.
//! Epoch = `find | xargs -P8 cat`; the second epoch runs with page caches dropped. Epoch one is
//! measured three times on fresh mounts, alternating with curl; medians are compared.
//!
//!   cargo bench --bench epoch_azurite        (root: FUSE, and the cache's loop disk)

#[allow(dead_code)]
#[path = "../tests/common/azurite.rs"]
mod azurite;
mod common;

use std::path::Path;
use std::process::Command;

use common::{epoch, Daemon};

use azurite::Azurite;

const FILES: usize = 5000;

fn shown(v: &[f64]) -> String {
    let s: Vec<String> = v.iter().map(|t| format!("{t:.2}")).collect();
    s.join(" / ")
}

/// sync(1): the cache disk, and the host file holding it (the loop disk's image).
fn sync() {
    let st = Command::new("sync").status().unwrap();
    assert!(st.success(), "sync failed");
}

fn drop_pages(dir: &Path) {
    common::drop_tree(dir);
}

fn main() {
    let az = Azurite::start();
    az.create_container("lake");
    let names: Vec<String> = (0..FILES)
        .map(|i| format!("epoch/d{:02}/f{i:04}.bin", i % 50))
        .collect();
    std::thread::scope(|s| {
        for chunk in names.chunks(FILES / 8) {
            let c = az.client();
            s.spawn(move || {
                for (i, n) in chunk.iter().enumerate() {
                    c.put_blob("lake", n, &vec![(i % 251) as u8; 100_000]);
                }
            });
        }
    });
    let work = tempfile::tempdir().unwrap();

    let mp = work.path().join("lakemount");
    std::fs::create_dir_all(&mp).unwrap();
    let endpoint = az.endpoint();
    // The cache on a disk formatted as a node's, a new directory each trial.
    let disk = common::CacheDisk::new(4);
    // Without one (memory only), to show what writing the cache costs.
    let mount = |trial: usize, with_disk: bool| {
        let cache = disk.path.join(format!("lm-cache-{trial}"));
        let cache_args = ["--cache-dir", cache.to_str().unwrap()];
        Daemon::lakemount(
            "az://devstoreaccount1/lake",
            &mp,
            &[
                &["--endpoint", &endpoint][..],
                if with_disk { &cache_args } else { &[] },
            ]
            .concat(),
            &[("AZURE_STORAGE_CONNECTION_STRING", az.connection_string())],
        )
    };
    // The origin's own capacity: curl with 8 transfers in flight over the same blobs, in one
    // process (no process per file), bytes to /dev/null.
    let list = work.path().join("curl.cfg");
    let sas = az.account_sas("r");
    let cfg: String = names
        .iter()
        .map(|n| format!("url = \"{endpoint}/lake/{n}?{sas}\"\noutput = \"/dev/null\"\n"))
        .collect();
    std::fs::write(&list, cfg).unwrap();
    let curl = || {
        common::timed(|| {
            let st = Command::new("curl")
                .args([
                    "--parallel",
                    "--parallel-max",
                    "8",
                    "--no-progress-meter",
                    "-Sf",
                    "-K",
                ])
                .arg(&list)
                .status()
                .unwrap();
            assert!(st.success(), "curl failed");
        })
        .1
    };
    let (mut firsts, mut curls, mut memory_only) = (Vec::new(), Vec::new(), Vec::new());
    let (mut lm2, mut cpu, mut cpu_memory) = (0.0, Vec::new(), Vec::new());
    let mut syncs = Vec::new();
    for trial in 0..3 {
        curls.push(curl());
        let lm = mount(trial, true);
        firsts.push(epoch(&mp.join("epoch"), FILES));
        cpu.push(lm.cpu_seconds());
        if trial == 0 {
            drop_pages(&mp);
            lm2 = epoch(&mp.join("epoch"), FILES);
        }
        drop(lm);
        // The cache files go to disk before the next trial, not during it: untimed here, so
        // the time it takes is shown apart. Left to the kernel, the writeback of one trial's
        // files (through the loop disk into its image) ran during the next trials and slowed
        // them by up to 45%, with or without a disk cache.
        syncs.push(common::timed(sync).1);
        let lm = mount(trial, false);
        memory_only.push(epoch(&mp.join("epoch"), FILES));
        cpu_memory.push(lm.cpu_seconds());
        drop(lm);
    }
    println!(
        "trials in order (s): curl {}; with the disk cache {} (then writing its files to disk {}); without {}",
        shown(&curls),
        shown(&firsts),
        shown(&syncs),
        shown(&memory_only)
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[1]
    };
    let (lm1, origin, cpu1) = (median(&mut firsts), median(&mut curls), median(&mut cpu));
    println!(
        "lakemount over Azurite: epoch 1 {lm1:.2} s (median of 3, fresh mounts; daemon {cpu1:.1} CPU s, {:.0} us a file), \
epoch 2 {lm2:.2} s",
        cpu1 * 1e6 / FILES as f64
    );
    let (mem1, cpu_mem) = (median(&mut memory_only), median(&mut cpu_memory));
    println!(
        "origin: curl, 8 parallel transfers of the same blobs {origin:.2} s (median of 3); lakemount's epoch 1 \
runs at {:.2} of it (target >= 0.9); without a disk cache {mem1:.2} s = {:.2} of it (daemon {cpu_mem:.1} CPU s)",
        origin / lm1,
        origin / mem1
    );

    if Command::new("rclone").arg("version").output().is_err() {
        println!("rclone is not installed: no comparison");
        return;
    }
    let conf = work.path().join("rclone.conf");
    let sas_url = format!("{}/lake?{}", az.endpoint(), az.account_sas("rl"));
    std::fs::write(
        &conf,
        format!("[az]\ntype = azureblob\nsas_url = {sas_url}\n"),
    )
    .unwrap();
    let rmp = work.path().join("rclone");
    std::fs::create_dir_all(&rmp).unwrap();
    let mut cmd = Command::new("rclone");
    let rc_cache = work.path().join("rc-cache");
    cmd.args([
        "--config",
        conf.to_str().unwrap(),
        "mount",
        "az:",
        rmp.to_str().unwrap(),
    ])
    .args([
        "--vfs-cache-mode",
        "full",
        "--cache-dir",
        rc_cache.to_str().unwrap(),
    ]);
    let rc = Daemon::spawn(cmd, &rmp);
    // An account SAS makes rclone show the containers at its root.
    let rc1 = epoch(&rmp.join("lake/epoch"), FILES);
    drop_pages(&rmp);
    let rc2 = epoch(&rmp.join("lake/epoch"), FILES);
    drop(rc);
    println!("rclone mount --vfs-cache-mode full: epoch 1 {rc1:.2} s, epoch 2 {rc2:.2} s");
    println!(
        "lakemount speed-up over rclone: epoch 1 x{:.1}, epoch 2 x{:.1} (target: faster)",
        rc1 / lm1,
        rc2 / lm2
    );
}
