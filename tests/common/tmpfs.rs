//! A real tmpfs of a chosen size, for tests of full disks.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::mount::{is_mounted, wait_for};

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs: {out:?}");
        Tmpfs { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let p = self.dir.path();
        // The daemon that used it may still be closing its files after its unmount.
        let gone = wait_for(Duration::from_secs(10), || {
            !is_mounted(p)
                || Command::new("umount")
                    .arg(p)
                    .status()
                    .is_ok_and(|s| s.success())
        });
        if !gone {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}
