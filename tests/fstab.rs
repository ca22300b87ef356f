//! Mounting from /etc/fstab: real mount(8) and umount(8) with a temporary fstab (`-T`), the
//! `mount.lakemount` helper in /sbin (a link to this build while the test runs), and the
//! `.mount` unit systemd's fstab generator makes of the same line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::mount::{errno, is_mounted, lakemount_bin, output_text as text, wait_for};
use common::proc::{daemon_pid, is_gone};

/// Where mount(8) finds the helper of type `lakemount`.
const HELPER: &str = "/sbin/mount.lakemount";
/// Where fuse's mount.fuse finds `lakemount` for type `fuse.lakemount` (it runs it with a
/// PATH of its own: /usr/sbin is on it).
const FUSE_HELPER: &str = "/usr/sbin/lakemount";

/// `path` pointing at this build until dropped; what was there before comes back.
struct Link {
    path: &'static str,
    before: Option<PathBuf>,
}

impl Link {
    fn install(path: &'static str) -> Link {
        let before = std::fs::read_link(path).ok();
        if before.is_none() && Path::new(path).exists() {
            panic!("{path} exists and is not a link: not replacing it");
        }
        let _ = std::fs::remove_file(path);
        std::os::unix::fs::symlink(lakemount_bin(), path).unwrap();
        Link { path, before }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path);
        if let Some(old) = &self.before {
            let _ = std::os::unix::fs::symlink(old, self.path);
        }
    }
}

/// Unmounts `mp` at the end, also when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

#[test]
fn fstab_lines_mount_with_mount_a_and_by_mountpoint_and_unmount_with_umount() {
    let _helper = Link::install(HELPER);
    let _fuse_helper = Link::install(FUSE_HELPER);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["lake1", "lake2", "mp1", "mp2", "mp3", "st1", "st2", "units"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("lake1/hello.txt"), b"from the lake\n").unwrap();
    std::fs::write(d.join("lake2/ro.txt"), b"read only\n").unwrap();
    let p = |s: &str| d.join(s).to_str().unwrap().to_string();
    let fstab = d.join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# lakes\n\
             file://{lake1} {mp1} lakemount staging_dir={st1},commit_interval=5,_netdev,nofail,x-systemd.requires=network-online.target 0 0\n\
             file://{lake2} {mp2} fuse.lakemount ro,noauto,staging_dir={st2} 0 0\n\
             file://{lake1} {mp3} lakemount noauto,cache_dri=/nope 0 0\n",
            lake1 = p("lake1"),
            lake2 = p("lake2"),
            mp1 = p("mp1"),
            mp2 = p("mp2"),
            mp3 = p("mp3"),
            st1 = p("st1"),
            st2 = p("st2"),
        ),
    )
    .unwrap();
    let _u1 = Unmount(d.join("mp1"));
    let _u2 = Unmount(d.join("mp2"));
    let _u3 = Unmount(d.join("mp3"));

    // `mount -a`: every line without noauto.
    let out = run(Command::new("mount").arg("-a").arg("-T").arg(&fstab));
    assert!(out.status.success(), "mount -a: {}", text(&out));
    assert!(is_mounted(&d.join("mp1")));
    assert!(!is_mounted(&d.join("mp2")), "noauto is left alone");
    assert_eq!(
        std::fs::read(d.join("mp1/hello.txt")).unwrap(),
        b"from the lake\n"
    );
    std::fs::write(d.join("mp1/new.txt"), b"written").unwrap();
    assert_eq!(std::fs::read(d.join("lake1/new.txt")).unwrap(), b"written");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with(&format!("lakemount {} fuse", p("mp1")))),
        "{}",
        mounts
            .lines()
            .filter(|l| l.contains("lake"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // `mount MOUNTPOINT`: the line's options, `ro` among them (type fuse.lakemount).
    let out = run(Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(d.join("mp2")));
    assert!(out.status.success(), "mount mp2: {}", text(&out));
    assert_eq!(std::fs::read(d.join("mp2/ro.txt")).unwrap(), b"read only\n");
    assert_eq!(
        errno(std::fs::write(d.join("mp2/x"), b"x")),
        Some(libc::EROFS)
    );

    // An option that is no flag: mount(8) fails with the helper's one line.
    let out = run(Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(d.join("mp3")));
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains("mount.lakemount: error: unknown option \"cache_dri=/nope\""),
        "{err}"
    );
    assert!(!is_mounted(&d.join("mp3")));

    // umount(8) ends the mounts and their daemons.
    for mp in ["mp1", "mp2"] {
        let pid = daemon_pid(&d.join(mp)).expect("a daemon serves the mount");
        let out = run(Command::new("umount").arg(d.join(mp)));
        assert!(out.status.success(), "umount {mp}: {}", text(&out));
        assert!(!is_mounted(&d.join(mp)));
        assert!(
            wait_for(Duration::from_secs(10), || is_gone(pid)),
            "the daemon of {mp} exits after umount"
        );
    }

    // What systemd makes of the first line at boot: a .mount unit after the network.
    let units = d.join("units");
    let out = run(
        Command::new("/lib/systemd/system-generators/systemd-fstab-generator")
            .args([&units, &units, &units])
            .env("SYSTEMD_FSTAB", &fstab),
    );
    assert!(out.status.success(), "generator: {}", text(&out));
    let name = run(Command::new("systemd-escape")
        .arg("--path")
        .arg("--suffix=mount")
        .arg(d.join("mp1")));
    let name = String::from_utf8_lossy(&name.stdout).trim().to_string();
    let unit = std::fs::read_to_string(units.join(&name)).unwrap();
    for want in [
        "Requires=network-online.target",
        "Type=lakemount",
        &format!("What=file://{}", p("lake1")),
    ] {
        assert!(unit.contains(want), "{want}: {unit}");
    }
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(units.join(&name)));
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        text(&out)
    );
}
