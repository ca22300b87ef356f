//! A training epoch straight from an Azure-API server (Azurite on loopback): lakemount vs
//! rclone mount (`--vfs-cache-mode full`) over the same 5,000 x 100 KB blobs, when rclone is
//! installed. Epoch = `find | xargs -P8 cat`; the second epoch runs with page caches dropped.
//!
//!   cargo bench --bench epoch_azurite

#[allow(dead_code)]
#[path = "../tests/common/azurite.rs"]
mod azurite;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use azurite::Azurite;
use base64::Engine as _;
use hmac::{Hmac, Mac};

const FILES: usize = 5000;

fn mounted(mp: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
}

fn wait_mounted(mp: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mounted(mp) {
        assert!(Instant::now() < deadline, "{} never mounted", mp.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn drop_pages(dir: &Path) {
    let cmd = format!(
        "find '{}' -type f -exec dd of=/dev/null if={{}} iflag=nocache count=0 status=none \\;",
        dir.display()
    );
    let _ = Command::new("sh").arg("-c").arg(cmd).status();
}

fn epoch(dir: &Path) -> f64 {
    let count = Command::new("sh")
        .arg("-c")
        .arg(format!("find '{}' -type f | wc -l", dir.display()))
        .output()
        .unwrap();
    let n: usize = String::from_utf8_lossy(&count.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert_eq!(n, FILES, "{} does not show all files", dir.display());
    let t = Instant::now();
    let cmd = format!(
        "find '{}' -type f | xargs -P8 -n50 cat > /dev/null",
        dir.display()
    );
    assert!(Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap()
        .success());
    t.elapsed().as_secs_f64()
}

/// An account SAS (read + list on blobs) signed with the account key, for rclone's sas_url.
fn account_sas() -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(azurite::KEY)
        .unwrap();
    let (sp, ss, srt, se, spr, sv) = (
        "rl",
        "b",
        "sco",
        "2035-01-01T00:00:00Z",
        "http",
        "2019-12-12",
    );
    let to_sign = format!(
        "{}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n",
        azurite::ACCOUNT
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!(
        "sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={}&spr={spr}&sig={}",
        enc(se),
        enc(&sig)
    )
}

/// Unmounts and stops a FUSE daemon we started, also on panic.
struct Daemon(Child, PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.1).status();
        // SAFETY: SIGTERM to our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
        if mounted(&self.1) {
            let _ = Command::new("umount").arg("-l").arg(&self.1).status();
        }
    }
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
    let child = Command::new(env!("CARGO_BIN_EXE_lakemount"))
        .args([
            "mount",
            "az://devstoreaccount1/lake",
            mp.to_str().unwrap(),
            "--foreground",
        ])
        .args([
            "--endpoint",
            &az.endpoint(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ])
        .env("AZURE_STORAGE_CONNECTION_STRING", az.connection_string())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lm = Daemon(child, mp.clone());
    wait_mounted(&mp);
    let lm1 = epoch(&mp.join("epoch"));
    drop_pages(&mp);
    let lm2 = epoch(&mp.join("epoch"));
    drop(lm);
    println!("lakemount over Azurite: epoch 1 {lm1:.2} s, epoch 2 {lm2:.2} s");

    if Command::new("rclone").arg("version").output().is_err() {
        println!("rclone is not installed: no comparison");
        return;
    }
    let conf = work.path().join("rclone.conf");
    std::fs::write(
        &conf,
        format!(
            "[az]\ntype = azureblob\nsas_url = {}/lake?{}\n",
            az.endpoint(),
            account_sas()
        ),
    )
    .unwrap();
    let rmp = work.path().join("rclone");
    std::fs::create_dir_all(&rmp).unwrap();
    let child = Command::new("rclone")
        .args([
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
            work.path().join("rc-cache").to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rc = Daemon(child, rmp.clone());
    wait_mounted(&rmp);
    // An account SAS makes rclone show the containers at its root.
    let rc1 = epoch(&rmp.join("lake/epoch"));
    drop_pages(&rmp);
    let rc2 = epoch(&rmp.join("lake/epoch"));
    drop(rc);
    println!("rclone mount --vfs-cache-mode full: epoch 1 {rc1:.2} s, epoch 2 {rc2:.2} s");
    println!(
        "lakemount speed-up over rclone: epoch 1 x{:.1}, epoch 2 x{:.1} (target: faster)",
        rc1 / lm1,
        rc2 / lm2
    );
}
