//! The cache volume bootstrap makes of a GPU node's raw local NVMe disks, on real block
//! devices: loop devices (losetup) over sparse files stand in for the disks. One disk, four
//! disks, a rerun, a reboot (unmounted, mounted again with its data), a disk that holds a file
//! system (left alone, the start task fails saying which) and a disk that is not there.

#[path = "common/agent.rs"]
mod agent_common;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agent_common::{agent, text};

/// A loop device over a sparse file, detached when dropped.
struct Disk {
    dev: PathBuf,
    _file: tempfile::NamedTempFile,
}

impl Disk {
    fn new(mib: u64) -> Disk {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(mib << 20).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {}", text(&out));
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Disk { dev, _file: file }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A node directory whose bootstrap makes the volume of `disks` at `DIR/nvme`; unmounts it
/// when dropped (before the disks go).
struct VolumeNode {
    dir: tempfile::TempDir,
}

impl VolumeNode {
    fn new(disks: &[&Disk]) -> VolumeNode {
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<String> = disks
            .iter()
            .map(|d| format!("\"{}\"", d.dev.display()))
            .collect();
        std::fs::write(
            dir.path().join("lake-agent.toml"),
            format!(
                "[agent]\nstatus_dir = \"{}\"\ngpus = \"none\"\n\n\
                 [cache]\ndevices = [{}]\nvolume_mount = \"{}\"\n",
                dir.path().join("status").display(),
                list.join(", "),
                dir.path().join("nvme").display()
            ),
        )
        .unwrap();
        VolumeNode { dir }
    }

    fn mountpoint(&self) -> PathBuf {
        self.dir.path().join("nvme")
    }

    fn bootstrap(&self) -> Output {
        let config = self.dir.path().join("lake-agent.toml");
        agent(&["--config", config.to_str().unwrap(), "bootstrap"], &[])
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// The file system type mounted at the volume's mount point, if any.
    fn mounted(&self) -> Vec<String> {
        let want = self.mountpoint().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(1) == Some(&want.as_str())).then(|| f[2].to_string())
            })
            .collect()
    }

    fn unmount(&self) {
        if !self.mounted().is_empty() {
            let out = Command::new("umount")
                .arg(self.mountpoint())
                .output()
                .unwrap();
            assert!(out.status.success(), "umount: {}", text(&out));
        }
    }
}

impl Drop for VolumeNode {
    fn drop(&mut self) {
        if !self.mounted().is_empty() {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.mountpoint())
                .status();
        }
    }
}

fn label(dev: &Path) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "LABEL"])
        .arg(dev)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Bootstrap makes the volume, puts the cache on it, and finds it again on a rerun and after
/// a "reboot" (unmounted) with what was on it.
fn made_found_and_kept(disks: &[&Disk], fstype: &str) {
    let node = VolumeNode::new(disks);
    let out = node.bootstrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains(&format!(
            "cache volume: {fstype} over {} disk(s)",
            disks.len()
        )) && said.contains("made now"),
        "{said}"
    );
    assert_eq!(node.mounted(), [fstype]);
    let cache = node.mountpoint().join("lakecache");
    assert!(
        said.contains(&format!("cache in {}", cache.display())),
        "{said}"
    );
    for d in disks {
        assert_eq!(label(&d.dev), "lakecache");
    }
    std::fs::write(cache.join("block"), b"cached data").unwrap();
    // All disks' space is the volume's (RAID0 stripes data over them).
    let total = common_total(&node.mountpoint());
    let per_disk = 256u64 << 20;
    assert!(
        total > per_disk * (disks.len() as u64) * 7 / 10,
        "{total} bytes over {} disks",
        disks.len()
    );

    // A rerun: the same volume, still mounted once, its data kept.
    let out = node.bootstrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(found)"));
    assert_eq!(node.mounted(), [fstype]);
    assert_eq!(std::fs::read(cache.join("block")).unwrap(), b"cached data");

    // A reboot: nothing mounted; the volume is mounted again as it was, never made anew.
    node.unmount();
    let out = node.bootstrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(found)"));
    assert_eq!(std::fs::read(cache.join("block")).unwrap(), b"cached data");
}

fn common_total(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: statvfs writes into the zeroed struct; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_blocks as u64 * st.f_frsize as u64
}

#[test]
fn one_disk_becomes_an_ext4_volume_found_again_on_a_rerun_and_after_a_reboot() {
    let disk = Disk::new(256);
    made_found_and_kept(&[&disk], "ext4");
}

#[test]
fn four_disks_become_one_striped_btrfs_volume_found_again_on_a_rerun_and_after_a_reboot() {
    let disks: Vec<Disk> = (0..4).map(|_| Disk::new(256)).collect();
    let refs: Vec<&Disk> = disks.iter().collect();
    made_found_and_kept(&refs, "btrfs");
}

#[test]
fn a_disk_that_holds_a_file_system_is_left_alone_and_the_start_task_fails_saying_which() {
    let used = Disk::new(256);
    let empty = Disk::new(256);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "userdata"])
        .arg(&used.dev)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let node = VolumeNode::new(&[&empty, &used]);
    let out = node.bootstrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| panic!("{}", text(&out)));
    assert!(
        line.contains(&used.dev.display().to_string())
            && line.contains("ext4 file system labelled \"userdata\"")
            && line.contains("left alone"),
        "{line}"
    );
    assert_eq!(label(&used.dev), "userdata", "its file system is untouched");
    assert_eq!(label(&empty.dev), "", "nothing was made on the other disk");
    assert!(node.mounted().is_empty());

    // A disk that is not there: one line, and nothing made.
    let missing = tempfile::tempdir().unwrap().path().join("nvme9n1");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\nstatus_dir = \"{}\"\ngpus = \"none\"\n[cache]\ndevices = [\"{}\"]\nvolume_mount = \"{}\"\n",
            dir.path().join("status").display(),
            missing.display(),
            dir.path().join("nvme").display()
        ),
    )
    .unwrap();
    let out = agent(&["--config", cfg.to_str().unwrap(), "bootstrap"], &[])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("cache.devices: {}", missing.display())),
        "{}",
        text(&out)
    );
}
