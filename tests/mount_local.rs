//! The embedded default: a local directory mounted through real FUSE.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::mount::{errno, is_mounted, lakemount, wait_for, Mount};
use common::tree::{pseudo_random, snapshot};

fn build_tree(root: &Path) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("README.txt", b"sample lake\n");
    w("labels/train.csv", b"id,label\n1,cat\n2,dog\n");
    w("images/a/b/c/deep.bin", &pseudo_random(70_000, 1));
    w("images/big.bin", &pseudo_random(5 << 20, 2));
    w("images/empty.bin", b"");
    w("names/with space & ü.txt", b"odd but legal");
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    for i in 0..1000 {
        w(&format!("many/f{i:04}.txt"), format!("{i}\n").as_bytes());
    }
}

/// A mount of the lake at `lake` with its own staging directory (kept while the mount is).
fn writable_mount(lake: &Path) -> (Mount, tempfile::TempDir) {
    let staging = tempfile::tempdir().unwrap();
    let st = staging.path().to_str().unwrap();
    let m = Mount::start(&lake_url(lake), &["--staging-dir", st], &[])
        .unwrap_or_else(|o| panic!("{o:?}"));
    (m, staging)
}

fn lake_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

#[test]
fn mount_of_a_local_directory_matches_it_byte_for_byte() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let m = Mount::start(&lake_url(src.path()), &[], &[]).unwrap_or_else(|o| panic!("{o:?}"));
    assert_eq!(snapshot(&m.path()), snapshot(src.path()));
}

#[test]
fn missing_names_are_enoent_and_a_read_only_mount_refuses_writes_with_erofs() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let m = Mount::start(&lake_url(src.path()), &["--read-only"], &[])
        .unwrap_or_else(|o| panic!("{o:?}"));
    let mp = m.path();
    assert_eq!(
        errno(std::fs::metadata(mp.join("nope"))),
        Some(libc::ENOENT)
    );
    assert_eq!(
        errno(std::fs::metadata(mp.join("labels/nope.csv"))),
        Some(libc::ENOENT)
    );
    assert_eq!(
        errno(std::fs::File::create(mp.join("new.txt"))),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(std::fs::create_dir(mp.join("newdir"))),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(std::fs::remove_file(mp.join("README.txt"))),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(std::fs::remove_dir(mp.join("empty-dir"))),
        Some(libc::EROFS)
    );
    let append = std::fs::OpenOptions::new()
        .append(true)
        .open(mp.join("README.txt"));
    assert_eq!(errno(append), Some(libc::EROFS));
    let trunc = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(mp.join("README.txt"));
    assert_eq!(errno(trunc), Some(libc::EROFS));
    assert_eq!(
        errno(std::fs::rename(mp.join("README.txt"), mp.join("moved.txt"))),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(std::os::unix::fs::symlink("README.txt", mp.join("link"))),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(std::fs::hard_link(mp.join("README.txt"), mp.join("hard"))),
        Some(libc::EROFS)
    );
    let chmod = std::fs::set_permissions(
        mp.join("README.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    );
    assert_eq!(errno(chmod), Some(libc::EROFS));
    let path = std::ffi::CString::new(mp.join("README.txt").into_os_string().into_encoded_bytes())
        .unwrap();
    // SAFETY: a valid path and name, and a null buffer of size 0 (a size query).
    let r = unsafe { libc::getxattr(path.as_ptr(), c"user.x".as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EOPNOTSUPP))
    );
    // The source is untouched.
    assert_eq!(
        std::fs::read(src.path().join("README.txt")).unwrap(),
        b"sample lake\n"
    );
}

#[test]
fn unmount_removes_the_mount_and_refuses_what_is_not_ours() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let m = Mount::start(&lake_url(src.path()), &[], &[]).unwrap_or_else(|o| panic!("{o:?}"));
    let mp = m.path();
    let out = lakemount(&["unmount", mp.to_str().unwrap()], &[])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!is_mounted(&mp));
    let out = lakemount(&["unmount", mp.to_str().unwrap()], &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a mount point"));
    let out = lakemount(&["unmount", "/proc"], &[]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a lakemount mount"),
        "{out:?}"
    );
}

/// Runs `lakemount mount` expecting failure: exit code != 0 and exactly one line on stderr.
fn mount_fails(args: &[&str]) -> String {
    let out = lakemount(args, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one clear line, got: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_mount_requests_fail_with_one_clear_line() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let mp = tempfile::tempdir().unwrap();
    let mps = mp.path().to_str().unwrap();
    let lake = lake_url(src.path());

    assert!(mount_fails(&["mount", &lake, src.path().to_str().unwrap()]).contains("is not empty"));
    assert!(mount_fails(&["mount", &lake, &format!("{mps}/missing")]).contains("does not exist"));
    assert!(mount_fails(&["mount", "file:///no/such/lake", mps]).contains("/no/such/lake"));
    assert!(mount_fails(&["mount", "s3://bucket", mps]).contains("invalid lake URL"));
    assert!(mount_fails(&["mount", &lake, mps, "--file-mode", "999"]).contains("invalid mode"));
    let cfg = mp.path().join("bad.toml");
    std::fs::write(&cfg, "lake = 3\n").unwrap();
    assert!(mount_fails(&["mount", "--config", cfg.to_str().unwrap()]).contains("bad.toml"));
    assert!(!is_mounted(mp.path()));

    let m = Mount::start(&lake, &[], &[]).unwrap_or_else(|o| panic!("{o:?}"));
    let again = mount_fails(&["mount", &lake, m.path().to_str().unwrap()]);
    assert!(again.contains("already a mount point"), "{again}");
}

/// Kills a foreground daemon if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn foreground_mount_unmounts_cleanly_on_sigterm() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let mp = tempfile::tempdir().unwrap();
    let _guard = Remount(mp.path().to_path_buf());
    let mut child = Child(
        lakemount(
            &[
                "mount",
                &lake_url(src.path()),
                mp.path().to_str().unwrap(),
                "--foreground",
            ],
            &[],
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    assert!(
        wait_for(Duration::from_secs(30), || is_mounted(mp.path())),
        "never mounted"
    );
    assert_eq!(
        std::fs::read(mp.path().join("README.txt")).unwrap(),
        b"sample lake\n"
    );
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let mut status = None;
    assert!(wait_for(Duration::from_secs(30), || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    }));
    assert!(status.unwrap().success(), "{status:?}");
    assert!(!is_mounted(mp.path()));
}

#[test]
fn a_killed_daemon_leaves_a_dead_mount_that_the_next_mount_replaces() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let mp = tempfile::tempdir().unwrap();
    let mps = mp.path().to_str().unwrap();
    let lake = lake_url(src.path());
    // Declared first so it is dropped last: whatever fails below, nothing stays mounted.
    let _guard = Remount(mp.path().to_path_buf());
    let mut child = Child(
        lakemount(&["mount", &lake, mps, "--foreground"], &[])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Serving, not just mounted: the daemon dies with the mount in use.
    let readme = mp.path().join("README.txt");
    assert!(wait_for(Duration::from_secs(30), || std::fs::read(&readme).is_ok()));
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // Directory contents are not in the kernel's attribute cache: this reaches the dead daemon.
    let dead = std::fs::read_dir(mp.path()).unwrap_err();
    assert!(
        matches!(
            dead.raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        ),
        "the kernel keeps a dead mount: {dead}"
    );

    let log = mp.path().with_extension("log");
    let out = lakemount(
        &["mount", &lake, mps, "--log-file", log.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read(mp.path().join("README.txt")).unwrap(),
        b"sample lake\n"
    );
}

/// Unmounts a mount made by hand in a test.
struct Remount(std::path::PathBuf);

impl Drop for Remount {
    fn drop(&mut self) {
        let _ = lakemount(&["unmount", "--lazy", self.0.to_str().unwrap()], &[]).output();
        wait_for(Duration::from_secs(10), || !is_mounted(&self.0));
    }
}

/// A local lake is hierarchical: renames of files and whole directories are atomic
/// (rename(2) in the lake directory), and every change lands in the directory at once.
#[test]
fn a_writable_local_mount_creates_renames_and_removes_in_the_lake() {
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let (m, staging) = writable_mount(src.path());
    let mp = m.path();
    let lake = src.path();
    std::fs::create_dir(mp.join("out")).unwrap();
    std::fs::write(mp.join("out/result.bin"), pseudo_random(3 << 20, 9)).unwrap();
    assert_eq!(
        std::fs::read(lake.join("out/result.bin")).unwrap(),
        pseudo_random(3 << 20, 9)
    );
    // A directory rename is one rename in the lake: the same inode, nothing copied.
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = ino(&lake.join("many"));
    std::fs::rename(mp.join("many"), mp.join("renamed")).unwrap();
    assert_eq!(ino(&lake.join("renamed")), before);
    assert_eq!(std::fs::read(mp.join("renamed/f0007.txt")).unwrap(), b"7\n");
    assert_eq!(
        errno(std::fs::metadata(mp.join("many"))),
        Some(libc::ENOENT)
    );
    std::fs::rename(mp.join("README.txt"), mp.join("out/README.txt")).unwrap();
    assert!(lake.join("out/README.txt").is_file() && !lake.join("README.txt").exists());
    assert_eq!(
        errno(std::fs::remove_dir(mp.join("out"))),
        Some(libc::ENOTEMPTY)
    );
    std::fs::remove_dir_all(mp.join("out")).unwrap();
    assert!(!lake.join("out").exists());
    assert_eq!(
        errno(std::os::unix::fs::symlink("x", mp.join("link"))),
        Some(libc::EPERM)
    );
    assert_eq!(
        errno(std::fs::hard_link(
            mp.join("labels/train.csv"),
            mp.join("hard")
        )),
        Some(libc::EPERM)
    );
    // Swapping two names is more than a lake can do in one step.
    let cpath = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let (a, b) = (cpath(&mp.join("renamed")), cpath(&mp.join("labels")));
    // SAFETY: valid NUL-terminated absolute paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EINVAL))
    );
    let fifo =
        std::ffi::CString::new(mp.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EPERM))
    );
    let shown: Vec<_> = std::fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !shown.iter().any(|n| n.starts_with(".lakemount")),
        "the local store's own staging area is hidden: {shown:?}"
    );
    assert_eq!(
        std::fs::read_dir(staging.path()).unwrap().count(),
        0,
        "staging emptied"
    );
}

#[test]
fn unsupported_operations_answer_their_errno_and_a_normal_run_logs_nothing_per_operation() {
    use std::os::fd::AsRawFd;
    let src = tempfile::tempdir().unwrap();
    build_tree(src.path());
    let (m, _staging) = writable_mount(src.path());
    let mp = m.path();
    // What every Python open() does: ask whether the file is a terminal.
    for i in 0..200 {
        let f = std::fs::File::open(mp.join(format!("many/f{i:04}.txt"))).unwrap();
        // SAFETY: TCGETS into a zeroed termios on a descriptor we own.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TCGETS, &mut t) };
        assert_eq!(
            (r, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::ENOTTY))
        );
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(mp.join("new.bin"))
        .unwrap();
    // SAFETY: fallocate(2) on a descriptor we own.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 4096) };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EOPNOTSUPP))
    );
    drop(f);
    // copy_file_range falls back to reads and writes.
    std::fs::copy(mp.join("README.txt"), mp.join("copy.txt")).unwrap();
    assert_eq!(
        std::fs::read(src.path().join("copy.txt")).unwrap(),
        b"sample lake\n"
    );
    assert_eq!(
        errno(std::os::unix::fs::symlink("README.txt", mp.join("ln"))),
        Some(libc::EPERM)
    );
    assert_eq!(
        errno(std::fs::hard_link(mp.join("README.txt"), mp.join("hl"))),
        Some(libc::EPERM)
    );
    std::fs::File::open(mp.join("many"))
        .unwrap()
        .sync_all()
        .unwrap();
    let c = std::ffi::CString::new(mp.join("README.txt").to_str().unwrap()).unwrap();
    // SAFETY: access(2) on a NUL-terminated path.
    assert_eq!(unsafe { libc::access(c.as_ptr(), libc::R_OK) }, 0);
    let out = lakemount(&["unmount", mp.to_str().unwrap()], &[])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(wait_for(Duration::from_secs(10), || m
        .log_text()
        .contains("was unmounted")));
    let log = m.log_text();
    let noisy: Vec<&str> = log.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert!(noisy.is_empty(), "log lines beyond INFO: {noisy:#?}");
    assert!(log.lines().count() < 10, "{log}");
}

#[test]
fn a_daemon_started_under_a_low_open_file_limit_raises_it_and_takes_many_writers() {
    use std::os::unix::process::CommandExt;
    let src = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let st = staging.path().to_str().unwrap();
    // A soft limit of 256 (systemd's default is 1,024), the hard one left as it is.
    let m = Mount::start_with(&lake_url(src.path()), &["--staging-dir", st], &[], |cmd| {
        // SAFETY: getrlimit/setrlimit are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = 256;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            });
        }
    })
    .unwrap_or_else(|o| panic!("{o:?}"));
    let files: Vec<std::fs::File> = (0..600)
        .map(|i| {
            let mut f = std::fs::File::create(m.path().join(format!("w{i:03}"))).unwrap();
            f.write_all(format!("{i}").as_bytes()).unwrap();
            f
        })
        .collect();
    drop(files);
    for i in [0, 299, 599] {
        assert_eq!(
            std::fs::read_to_string(src.path().join(format!("w{i:03}"))).unwrap(),
            i.to_string()
        );
    }
}

#[test]
fn metrics_served_beyond_loopback_are_warned_about() {
    let src = tempfile::tempdir().unwrap();
    let m = Mount::start(&lake_url(src.path()), &["--metrics-addr", "0.0.0.0:0"], &[])
        .unwrap_or_else(|o| panic!("{o:?}"));
    assert!(
        wait_for(Duration::from_secs(10), || m
            .log_text()
            .contains("beyond this machine")),
        "{}",
        m.log_text()
    );
}

#[test]
fn the_daemon_log_can_be_truncated_in_place_as_logrotate_copytruncate_does() {
    use std::os::unix::ffi::OsStrExt;
    let lake = tempfile::tempdir().unwrap();
    // A name the lake cannot show: every listing of it logs a warning.
    let bad = std::ffi::OsStr::from_bytes(b"bad-\xff");
    std::fs::write(lake.path().join(bad), "x").unwrap();
    let m = Mount::start(&lake_url(lake.path()), &["--metadata-ttl", "0"], &[])
        .unwrap_or_else(|o| panic!("{o:?}"));
    let mp = m.path();
    let warned = || m.log_text().contains("not UTF-8");
    std::fs::read_dir(&mp).unwrap().for_each(drop);
    assert!(wait_for(Duration::from_secs(10), warned));
    let before = std::fs::metadata(m.log_path()).unwrap().len();
    // What logrotate's copytruncate does after copying the file away.
    std::fs::OpenOptions::new()
        .write(true)
        .open(m.log_path())
        .unwrap()
        .set_len(0)
        .unwrap();
    std::fs::read_dir(&mp).unwrap().for_each(drop);
    assert!(wait_for(Duration::from_secs(10), warned));
    let after = std::fs::read(m.log_path()).unwrap();
    assert!(
        !after.contains(&0),
        "the daemon wrote at its old offset ({before} bytes): the file has a hole"
    );
    assert!(after.len() as u64 <= before, "{} bytes after", after.len());
}

/// `find` over a directory of 3,000 files, then `ls -l` of it, through a real FUSE mount
/// with the filesystem in this process: the walk that only lists leaves a kernel inode for a
/// listing's first buffer of names at most, the one that stats every entry for all of them.
#[test]
fn a_walk_that_only_lists_leaves_no_kernel_inode_per_file() {
    use lakemount::config::MountSettings;
    use lakemount::lake_url::LakeUrl;
    use lakemount::metrics::Metrics;
    use lakemount::mount::{build_fs, runtime, Session};
    use lakemount::store::local::LocalStore;
    use std::sync::Arc;

    let lake = tempfile::tempdir().unwrap();
    let mp = tempfile::tempdir().unwrap();
    std::fs::create_dir(lake.path().join("d")).unwrap();
    for i in 0..3000 {
        std::fs::write(lake.path().join(format!("d/f{i:05}.jpg")), b"").unwrap();
    }
    let settings = MountSettings {
        metadata_ttl: Duration::from_secs(300),
        ..MountSettings::defaults(
            LakeUrl::Local {
                path: lake.path().into(),
            },
            mp.path().into(),
        )
    };
    let rt = runtime().unwrap();
    let store = Arc::new(LocalStore::new(lake.path()));
    let fs = build_fs(store, &settings, Arc::new(Metrics::default())).unwrap();
    let session = Session::start(fs.clone(), mp.path(), false, rt.handle().clone()).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        out.stdout.iter().filter(|b| **b == b'\n').count()
    };
    let dir = mp.path().join("d");
    let d = dir.to_str().unwrap();
    assert_eq!(run(&["find", d]), 3001);
    let after_find = fs.inode_count();
    assert_eq!(run(&["ls", "-l", d]), 3001);
    let after_ls = fs.inode_count();
    drop(session);
    assert!(
        after_find < 600,
        "find left {after_find} inodes for 3,000 files"
    );
    assert!(after_ls >= 3000, "ls -l stats every entry: {after_ls}");
}

/// Random 4 KiB `pread`s far apart in a 256 MiB file, through a real mount: the kernel asks for
/// little more than each read, and the daemon fetches only that, never whole 8 MiB blocks.
/// `n` offsets of 4 KiB reads in a file of `size` bytes (seeded by `x`), each more than
/// 17 MiB from the one before: random reads, never a short seek or a sequential run.
fn far_offsets(size: u64, mut x: u64, n: u64) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    while (out.len() as u64) < n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 24) % (size - 4096);
        if off.abs_diff(out.last().copied().unwrap_or(0)) > 17 << 20 {
            out.push(off);
        }
    }
    out
}

#[test]
fn random_preads_fetch_about_the_bytes_they_read() {
    use std::os::unix::fs::FileExt;
    let lake = tempfile::tempdir().unwrap();
    let size = 256u64 << 20;
    std::fs::write(lake.path().join("big.bin"), pseudo_random(size as usize, 7)).unwrap();
    let data = std::fs::read(lake.path().join("big.bin")).unwrap();
    let url = format!("file://{}", lake.path().display());
    let m = Mount::start(&url, &["--read-only", "--metrics-addr", "127.0.0.1:0"], &[])
        .unwrap_or_else(|o| panic!("mount failed: {o:?}"));
    let f = std::fs::File::open(m.path().join("big.bin")).unwrap();
    let reads = 100u64;
    let mut buf = vec![0u8; 4096];
    for off in far_offsets(size, 11, reads) {
        f.read_exact_at(&mut buf, off).unwrap();
        assert_eq!(
            buf,
            data[off as usize..off as usize + 4096],
            "bytes at {off}"
        );
    }
    let fetched = common::metrics::from_log(&m.log_text(), "store_get_bytes_total");
    assert!(
        fetched <= 4 * reads * 4096,
        "{fetched} bytes fetched for {reads} reads of 4 KiB"
    );
}

#[test]
fn random_preads_of_a_cached_file_read_about_their_bytes_from_the_disk_cache() {
    use std::os::unix::fs::FileExt;
    let (lake, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let size = 256u64 << 20;
    let data = pseudo_random(size as usize, 8);
    std::fs::write(lake.path().join("big.bin"), &data).unwrap();
    let url = format!("file://{}", lake.path().display());
    let c = cache.path().to_str().unwrap();
    let warm = lakemount(&["warm", &url, "--cache-dir", c], &[])
        .output()
        .unwrap();
    assert!(warm.status.success(), "{warm:?}");
    // No passthrough (a writable mount): the daemon serves every read from the disk cache.
    let staging = tempfile::tempdir().unwrap();
    let st = staging.path().to_str().unwrap();
    let m = Mount::start(
        &url,
        &[
            "--cache-dir",
            c,
            "--staging-dir",
            st,
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[],
    )
    .unwrap_or_else(|o| panic!("mount failed: {o:?}"));
    let f = std::fs::File::open(m.path().join("big.bin")).unwrap();
    let reads = 100u64;
    let mut buf = vec![0u8; 4096];
    for off in far_offsets(size, 5, reads) {
        f.read_exact_at(&mut buf, off).unwrap();
        assert!(
            buf == data[off as usize..off as usize + 4096],
            "bytes at {off}"
        );
    }
    let log = m.log_text();
    let from_disk = common::metrics::from_log(&log, "disk_hit_bytes_total");
    assert_eq!(
        common::metrics::from_log(&log, "store_get_requests_total"),
        0
    );
    // At most the two 64 KiB checksum chunks a read can touch (whole 8 MiB blocks before).
    assert!(
        from_disk <= reads * (128 << 10),
        "{from_disk} bytes read from the disk cache for {reads} reads of 4 KiB"
    );
}
