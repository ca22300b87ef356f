//! Local disks, from /proc/mounts and statvfs: the report in the status file and the choice of
//! the cache disk (the largest local, writable, non-OS disk: an Azure VM's temp disk at /mnt or
//! /mnt/resource).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File systems that live on a local block device and can hold a cache.
const LOCAL_FS: &[&str] = &["ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub device: String,
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub mountpoint: PathBuf,
    pub device: String,
    pub fstype: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// On the disk that holds `/`.
    pub os_disk: bool,
}

/// Parses /proc/mounts (octal escapes such as `\040` decoded).
pub fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let device = unescape(f.next()?);
            let mountpoint = PathBuf::from(unescape(f.next()?));
            let fstype = f.next()?.to_string();
            let options = f.next().unwrap_or("");
            Some(MountEntry {
                device,
                mountpoint,
                fstype,
                read_only: options.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// Mount tables escape spaces and the like as octal (`\040`).
pub(crate) fn unescape(s: &str) -> String {
    crate::mount::unescape_mountinfo(s)
}

/// The whole disk a partition belongs to: `/dev/sda1` -> `sda`, `/dev/nvme0n1p2` -> `nvme0n1`.
fn disk_of(device: &str) -> String {
    let name = device.rsplit('/').next().unwrap_or(device);
    if name.starts_with("nvme") || name.starts_with("mmcblk") {
        match name.rfind('p') {
            Some(i)
                if i > 0
                    && name[i + 1..].chars().all(|c| c.is_ascii_digit())
                    && i + 1 < name.len() =>
            {
                name[..i].to_string()
            }
            _ => name.to_string(),
        }
    } else {
        name.trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string()
    }
}

/// Local block-device file systems with their sizes (`size` is statvfs, injectable for tests).
pub fn local_disks(mounts: &[MountEntry], size: impl Fn(&Path) -> Option<(u64, u64)>) -> Vec<Disk> {
    let root_disk = mounts
        .iter()
        .rev()
        .find(|m| m.mountpoint == Path::new("/"))
        .map(|m| disk_of(&m.device));
    let mut seen = std::collections::HashSet::new();
    let mut disks = Vec::new();
    for m in mounts.iter().rev() {
        let real = m.device.starts_with("/dev/")
            && !m.device.starts_with("/dev/loop")
            && LOCAL_FS.contains(&m.fstype.as_str());
        if !real || !seen.insert(m.mountpoint.clone()) {
            continue;
        }
        let Some((total_bytes, free_bytes)) = size(&m.mountpoint) else {
            continue;
        };
        let os_disk = root_disk.as_deref() == Some(disk_of(&m.device).as_str())
            || m.mountpoint == Path::new("/")
            || m.mountpoint.starts_with("/boot");
        disks.push(Disk {
            mountpoint: m.mountpoint.clone(),
            device: m.device.clone(),
            fstype: m.fstype.clone(),
            total_bytes,
            free_bytes,
            os_disk: os_disk || m.read_only,
        });
    }
    disks.reverse();
    disks
}

/// The disk for the block cache: the largest writable local disk that is not the OS disk.
pub fn choose_cache_disk(disks: &[Disk]) -> Option<&Disk> {
    disks
        .iter()
        .filter(|d| !d.os_disk)
        .max_by_key(|d| (d.total_bytes, std::cmp::Reverse(d.mountpoint.clone())))
}

/// Total and free bytes of the file system holding `path`.
pub fn statvfs(path: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// This machine's local disks.
pub fn scan() -> Vec<Disk> {
    let text = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    local_disks(&parse_mounts(&text), statvfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /proc/mounts of an Azure NC-series node: OS disk sda, temp disk sdb at /mnt, a data
    /// disk, and a FUSE mount that must be ignored.
    const AZURE: &str = "\
/dev/root / ext4 rw,relatime,discard 0 0
devtmpfs /dev devtmpfs rw,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev 0 0
/dev/sda15 /boot/efi vfat rw,relatime 0 0
/dev/sda16 /boot ext4 rw,relatime 0 0
/dev/sdb1 /mnt ext4 rw,relatime 0 0
/dev/sdc1 /data\\040disk xfs rw,relatime 0 0
/dev/loop0 /snap/core/1 squashfs ro 0 0
lakemount /mnt/lake fuse rw,nosuid,nodev 0 0
";

    fn sizes(p: &Path) -> Option<(u64, u64)> {
        match p.to_str()? {
            "/" => Some((30 << 30, 10 << 30)),
            "/boot" => Some((1 << 30, 1 << 29)),
            "/mnt" => Some((700 << 30, 690 << 30)),
            "/data disk" => Some((100 << 30, 90 << 30)),
            _ => None,
        }
    }

    #[test]
    fn the_temp_disk_is_chosen_for_the_cache() {
        let mut mounts = parse_mounts(AZURE);
        // /dev/root names no disk: the OS disk is known by its mount point.
        mounts[0].device = "/dev/sda1".into();
        let disks = local_disks(&mounts, sizes);
        let names: Vec<_> = disks.iter().map(|d| d.mountpoint.clone()).collect();
        assert_eq!(
            names,
            ["/", "/boot", "/mnt", "/data disk"].map(PathBuf::from)
        );
        assert!(disks[0].os_disk && disks[1].os_disk && !disks[2].os_disk);
        assert_eq!(
            choose_cache_disk(&disks).unwrap().mountpoint,
            Path::new("/mnt")
        );
    }

    #[test]
    fn mnt_resource_on_older_images_is_found_too() {
        let text = "/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /mnt/resource ext4 rw 0 0\n";
        let disks = local_disks(&parse_mounts(text), |_| Some((1, 1)));
        assert_eq!(
            choose_cache_disk(&disks).unwrap().mountpoint,
            Path::new("/mnt/resource")
        );
    }

    #[test]
    fn nvme_partitions_belong_to_their_disk() {
        assert_eq!(disk_of("/dev/nvme0n1p2"), "nvme0n1");
        assert_eq!(disk_of("/dev/nvme1n1"), "nvme1n1");
        assert_eq!(disk_of("/dev/sda1"), "sda");
        let text = "/dev/nvme0n1p1 / ext4 rw 0 0\n/dev/nvme0n1p3 /var ext4 rw 0 0\n/dev/nvme1n1 /mnt xfs rw 0 0\n";
        let disks = local_disks(&parse_mounts(text), |_| Some((10, 5)));
        assert!(disks[1].os_disk);
        assert_eq!(
            choose_cache_disk(&disks).unwrap().mountpoint,
            Path::new("/mnt")
        );
    }

    #[test]
    fn no_local_disk_but_the_os_disk_means_no_choice() {
        let text = "/dev/sda1 / ext4 rw 0 0\noverlay /var/lib/docker overlay rw 0 0\n/dev/sdb1 /ro ext4 ro 0 0\n";
        let disks = local_disks(&parse_mounts(text), |_| Some((10, 5)));
        assert!(choose_cache_disk(&disks).is_none());
    }

    #[test]
    fn this_machine_can_be_scanned() {
        // Whatever the machine has, the scan must not fail and sizes must be sane.
        for d in scan() {
            assert!(d.free_bytes <= d.total_bytes, "{d:?}");
        }
    }
}
