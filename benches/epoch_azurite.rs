//! A training epoch straight from an Azure-API server (Azurite on loopback): lakemount vs
//! rclone mount (`--vfs-cache-mode full`) over the same 5,000 x 100 KB blobs, when rclone is
//! installed. Epoch = `find | xargs -P8 cat`; the second epoch runs with page caches dropped.
//!
//!   cargo bench --bench epoch_azurite

#[allow(dead_code)]
#[path = "../tests/common/azurite.rs"]
mod azurite;
mod common;

use std::path::Path;
use std::process::Command;

use common::{epoch, Daemon};

use azurite::Azurite;

const FILES: usize = 5000;

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
    let cache = work.path().join("lm-cache");
    let endpoint = az.endpoint();
    let lm = Daemon::lakemount(
        "az://devstoreaccount1/lake",
        &mp,
        &[
            "--endpoint",
            &endpoint,
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        &[("AZURE_STORAGE_CONNECTION_STRING", az.connection_string())],
    );
    let lm1 = epoch(&mp.join("epoch"), FILES);
    drop_pages(&mp);
    let lm2 = epoch(&mp.join("epoch"), FILES);
    drop(lm);
    println!("lakemount over Azurite: epoch 1 {lm1:.2} s, epoch 2 {lm2:.2} s");

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
