//! The cache volume: a GPU node's local NVMe disks (NC A100 v4: 1-4 x 960 GiB, NCads H100
//! v5: one of 3.5-7 TB) come raw, neither formatted nor mounted. Bootstrap makes them one file
//! system for the block cache: ext4 on a single disk, btrfs striped over several (RAID0 for
//! data; it needs neither md nor device-mapper in the kernel), labelled `lakecache` and
//! mounted at `cache.volume_mount`.
//!
//! Never destructive: a disk is only formatted when it holds nothing (no partition, no file
//! system or RAID signature, not mounted, not in use by another device); a volume made earlier
//! (the same label on every disk) is mounted again as it is, after a reboot or on a rerun. With
//! `devices = "auto"` other disks are passed over; a disk named in `devices` that is in use is
//! an error, and the start task fails saying which.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The label of the file system bootstrap makes, and how it knows its own.
pub const LABEL: &str = "lakecache";

/// Which disks make the volume (`cache.devices`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Devices {
    /// Local NVMe disks that hold nothing (the default).
    #[default]
    Auto,
    /// No volume: the cache goes on the largest local disk.
    None,
    /// These block devices, each empty or already part of the volume.
    List(Vec<PathBuf>),
}

impl<'de> serde::Deserialize<'de> for Devices {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<PathBuf>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "auto" => Ok(Devices::Auto),
            Raw::Word(w) if w == "none" => Ok(Devices::None),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "cache.devices: \"auto\", \"none\" or a list of devices, not {w:?}"
            ))),
            Raw::List(l) if l.is_empty() => Ok(Devices::None),
            Raw::List(l) => Ok(Devices::List(l)),
        }
    }
}

/// What a disk holds, as blkid sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Signature {
    fstype: Option<String>,
    label: Option<String>,
    uuid: Option<String>,
}

/// The volume bootstrap prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub mountpoint: PathBuf,
    pub devices: Vec<PathBuf>,
    pub fstype: String,
    /// Made now (false: found, made by an earlier bootstrap).
    pub created: bool,
}

/// Makes (or finds again) the volume and mounts it; `None` when there are no disks for it.
/// `auto` looks for disks only on a Batch node (`in_batch`): elsewhere (a workstation) it
/// formats nothing it was not told to.
pub fn prepare(devices: &Devices, mountpoint: &Path, in_batch: bool) -> Result<Option<Volume>> {
    let chosen = match devices {
        Devices::None => return Ok(None),
        Devices::Auto if !in_batch => return Ok(None),
        Devices::Auto => {
            let found = local_nvme_disks();
            if found.is_empty() {
                return Ok(None);
            }
            found
        }
        Devices::List(list) => list.clone(),
    };
    let mut sigs = Vec::new();
    for dev in &chosen {
        check_free(dev)?;
        sigs.push(signature(dev)?);
    }
    let ours = |s: &Signature| s.label.as_deref() == Some(LABEL);
    let fstype = if chosen.len() == 1 { "ext4" } else { "btrfs" };
    let created = if sigs.iter().all(|s| s.fstype.is_none()) {
        make(&chosen, fstype)?;
        true
    } else if sigs
        .iter()
        .all(|s| ours(s) && s.fstype.as_deref() == Some(fstype))
        && sigs.windows(2).all(|w| w[0].uuid == w[1].uuid)
    {
        false
    } else {
        // Name a disk that holds something else first, else one that holds nothing while
        // the others hold a volume, else one of another volume.
        let foreign =
            |s: &Signature| s.fstype.is_some() && !(ours(s) && s.fstype.as_deref() == Some(fstype));
        let pairs = || chosen.iter().zip(&sigs);
        let (dev, s) = pairs()
            .find(|(_, s)| foreign(s))
            .or_else(|| pairs().find(|(_, s)| s.fstype.is_none()))
            .or_else(|| pairs().next_back())
            .expect("at least one disk");
        bail!(
            "cache.devices: {} holds {}, not a {fstype} `{LABEL}` volume of these {} disk(s): left alone \
             (take it out of cache.devices, or wipe it with `wipefs -a` if its data is not wanted)",
            dev.display(),
            describe(s),
            chosen.len()
        );
    };
    mount(&chosen, fstype, mountpoint)?;
    Ok(Some(Volume {
        mountpoint: mountpoint.to_path_buf(),
        devices: chosen,
        fstype: fstype.into(),
        created,
    }))
}

fn describe(s: &Signature) -> String {
    match (&s.fstype, &s.label) {
        (None, _) => "nothing (while the others hold a volume)".into(),
        (Some(t), Some(l)) => format!("a {t} file system labelled {l:?}"),
        (Some(t), None) => format!("a {t} signature"),
    }
}

/// A disk that is mounted, partitioned or used by another device is never touched.
fn check_free(dev: &Path) -> Result<()> {
    let meta =
        std::fs::metadata(dev).with_context(|| format!("cache.devices: {}", dev.display()))?;
    if !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        bail!("cache.devices: {} is not a block device", dev.display());
    }
    let name = dev
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let sys = Path::new("/sys/class/block").join(&name);
    let partitions = std::fs::read_dir(&sys)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&name))
        })
        .unwrap_or(false);
    if partitions {
        bail!(
            "cache.devices: {} has partitions: left alone",
            dev.display()
        );
    }
    let holders = std::fs::read_dir(sys.join("holders"))
        .map(|d| d.count())
        .unwrap_or(0);
    if holders > 0 {
        bail!(
            "cache.devices: {} is in use by another device (RAID or device-mapper): left alone",
            dev.display()
        );
    }
    // Mounted: where the volume goes (a rerun) or elsewhere (refused), `mount` tells.
    Ok(())
}

/// What blkid finds on `dev` (probing the device itself, not a cache).
fn signature(dev: &Path) -> Result<Signature> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(dev)
        .output()
        .context("cannot run blkid (util-linux)")?;
    // Exit 2: nothing found.
    if out.status.code() == Some(2) {
        return Ok(Signature::default());
    }
    if !out.status.success() {
        bail!(
            "blkid {}: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    Ok(Signature {
        fstype: get("TYPE").or_else(|| get("PTTYPE")),
        label: get("LABEL"),
        uuid: get("UUID"),
    })
}

fn make(devices: &[PathBuf], fstype: &str) -> Result<()> {
    let mut cmd = if fstype == "ext4" {
        // No discard at mkfs time: a fresh Azure NVMe disk is empty, and discarding TBs takes
        // minutes.
        let mut c = Command::new("mkfs.ext4");
        c.args([
            "-q",
            "-F",
            "-L",
            LABEL,
            "-E",
            "nodiscard,lazy_itable_init=1",
        ]);
        c
    } else {
        let mut c = Command::new("mkfs.btrfs");
        c.args(["-q", "-f", "-K", "-L", LABEL, "-d", "raid0", "-m", "raid1"]);
        c
    };
    let out = cmd
        .args(devices)
        .output()
        .with_context(|| format!("cannot run mkfs.{fstype} (install e2fsprogs / btrfs-progs)"))?;
    if !out.status.success() {
        bail!(
            "mkfs.{fstype} of {}: {}",
            list(devices),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Mounts the volume at `mountpoint` unless it is there already.
fn mount(devices: &[PathBuf], fstype: &str, mountpoint: &Path) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let want = mountpoint.to_string_lossy().replace(' ', "\\040");
    let canonical: Vec<PathBuf> = devices
        .iter()
        .map(|d| d.canonicalize().unwrap_or_else(|_| d.clone()))
        .collect();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let source = Path::new(f[0])
            .canonicalize()
            .unwrap_or_else(|_| f[0].into());
        let ours = canonical.contains(&source);
        match (f[1] == want, ours) {
            (true, true) => return Ok(()),
            (true, false) => bail!(
                "cache.volume_mount {} has {} mounted on it, not the cache volume",
                mountpoint.display(),
                f[0]
            ),
            (false, true) => bail!(
                "cache.devices: {} is mounted at {}: left alone",
                source.display(),
                f[1]
            ),
            (false, false) => {}
        }
    }
    std::fs::create_dir_all(mountpoint)
        .with_context(|| format!("cannot create {}", mountpoint.display()))?;
    let mut opts = String::from("noatime");
    if fstype == "btrfs" {
        // Every member named: no `btrfs device scan` needed after a reboot.
        for d in &devices[1..] {
            opts.push_str(&format!(",device={}", d.display()));
        }
    }
    let out = Command::new("mount")
        .args(["-t", fstype, "-o", &opts])
        .arg(&devices[0])
        .arg(mountpoint)
        .output()
        .context("cannot run mount")?;
    if !out.status.success() {
        bail!(
            "mount of the cache volume ({}) at {}: {}",
            list(devices),
            mountpoint.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn list(devices: &[PathBuf]) -> String {
    devices
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Local NVMe disks that hold nothing, or hold the volume: whole disks named nvme*, not
/// remote disks on the NVMe controller (Azure's "NVMe Accelerator"), with no partitions,
/// not held by another device and not mounted.
fn local_nvme_disks() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nvme"))
        .filter(|n| {
            let model =
                std::fs::read_to_string(format!("/sys/block/{n}/device/model")).unwrap_or_default();
            !model.contains("Accelerator")
        })
        .map(|n| Path::new("/dev").join(n))
        .filter(|d| check_free(d).is_ok())
        .filter(|d| {
            signature(d).is_ok_and(|s| s.fstype.is_none() || s.label.as_deref() == Some(LABEL))
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_auto_none_or_a_list() {
        #[derive(serde::Deserialize)]
        struct C {
            devices: Devices,
        }
        let parse = |s: &str| toml::from_str::<C>(s).map(|c| c.devices);
        assert_eq!(parse("devices = \"auto\"").unwrap(), Devices::Auto);
        assert_eq!(parse("devices = \"none\"").unwrap(), Devices::None);
        assert_eq!(parse("devices = []").unwrap(), Devices::None);
        assert_eq!(
            parse("devices = [\"/dev/nvme0n1\", \"/dev/nvme1n1\"]").unwrap(),
            Devices::List(vec!["/dev/nvme0n1".into(), "/dev/nvme1n1".into()])
        );
        let e = parse("devices = \"all\"").unwrap_err().to_string();
        assert!(e.contains("\"auto\", \"none\" or a list"), "{e}");
    }
}
