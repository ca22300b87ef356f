//! The write path as programs use it, through real FUSE mounts of both lakes (a local
//! directory and Azurite): close and reopen, a child holding a copy, dup, two handles, two
//! mounts, a daemon stopped with files open, a full or vanished staging disk, bad sizes.
//! What lands in the lake is read out of band, never through the mount.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lake::{both, Lake};
use common::mount::{errno, wait_for, Mount};
use common::tmpfs::Tmpfs;
use common::tree::pseudo_random;

/// open(O_RDWR | O_CREAT): an existing file keeps its bytes.
fn rw(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

/// A child process holding a copy of `f` (as its stdout) until `release` is called. Like
/// Python's `subprocess.Popen(cmd, stdout=f)`, the child closes the descriptor it inherited
/// before it runs `script`, so the daemon has seen it close a copy by the time spawn returns.
struct Holder {
    child: std::process::Child,
}

impl Holder {
    fn new(f: &std::fs::File, script: &str) -> Holder {
        use std::os::unix::process::CommandExt;
        let copy = f.try_clone().unwrap();
        let inherited = copy.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::from(copy));
        // SAFETY: close(2) is async-signal-safe; the fd is the child's copy, already on stdout.
        unsafe {
            cmd.pre_exec(move || {
                libc::close(inherited);
                Ok(())
            });
        }
        Holder {
            child: cmd.spawn().unwrap(),
        }
    }

    /// Lets the child go on past its `read`, and waits for it to exit.
    fn release(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_reopened_file_keeps_every_write_whatever_closes_the_first_handle_and_when() {
    both(|lake| {
        let m = lake.mount(&["--block-size", "1M"]);
        let mut late = Vec::new();
        // The first handle's last copy goes at each point of the second handle's life.
        for round in 0..12u8 {
            let name = format!("r{round}");
            let path = m.path().join(&name);
            let (a, b, c) = (
                vec![b'A' + round; 100],
                vec![b'b'; 1 << 20],
                vec![b'C'; 100],
            );
            let f = rw(&path);
            f.write_all_at(&a, 0).unwrap();
            let holder = Holder::new(&f, "read x");
            drop(f);
            let g = rw(&path);
            if round % 3 == 0 {
                holder.release();
                g.write_all_at(&b, 100).unwrap();
            } else {
                g.write_all_at(&b, 100).unwrap();
                if round % 3 == 1 {
                    holder.release();
                } else {
                    // The child outlives every close of the parent.
                    late.push(holder);
                }
            }
            g.write_all_at(&c, 100 + b.len() as u64).unwrap();
            drop(g);
            let want = [a, b, c].concat();
            assert_eq!(
                lake.get(&name).map(|d| d.len()),
                Some(want.len()),
                "{}: round {round}: close returned 0, so the lake has it",
                lake.name()
            );
            assert!(lake.holds(&name, &want), "{}: round {round}", lake.name());
        }
        for holder in late {
            holder.release();
        }
        // fork(2): the child holds the first descriptor and closes it while the parent,
        // having reopened the file, waits for it; then the parent writes on.
        for round in 0..10u32 {
            let path = m.path().join("forked");
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            f.write_all_at(&[b'A'; 100], 0).unwrap();
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000 * (1 + round as i64 % 5),
            };
            // SAFETY: the child calls only async-signal-safe functions, then _exit.
            let child = unsafe { libc::fork() };
            if child == 0 {
                unsafe {
                    libc::nanosleep(&pause, std::ptr::null_mut());
                    libc::close(f.as_raw_fd());
                    libc::_exit(0);
                }
            }
            drop(f);
            let g = rw(&path);
            g.write_all_at(&[b'B'; 100], 100).unwrap();
            let mut status = 0;
            // SAFETY: waiting for the child forked above.
            assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
            g.write_all_at(&[b'C'; 100], 200).unwrap();
            drop(g);
            let want = [[b'A'; 100], [b'B'; 100], [b'C'; 100]].concat();
            assert_eq!(
                lake.get("forked"),
                Some(want),
                "{}: round {round}",
                lake.name()
            );
        }
        // No child at all: the kernel's release of the first handle arrives while the second writes.
        for round in 0..40u32 {
            let path = m.path().join("again");
            let f = rw(&path);
            f.write_all_at(format!("{round:06}").as_bytes(), 0).unwrap();
            drop(f);
            let g = rw(&path);
            g.write_all_at(b"+tail", 6).unwrap();
            drop(g);
            let want = format!("{round:06}+tail");
            assert_eq!(
                lake.get("again").as_deref(),
                Some(want.as_bytes()),
                "{}: round {round}",
                lake.name()
            );
        }
    });
}

/// Every byte of `path` through a shared, read-only mapping.
fn mmap_read(path: &Path, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: a fresh read-only mapping of `len` bytes of a file at least that long, copied
    // out and unmapped before the file goes.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let out = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        libc::munmap(p, len);
        out
    }
}

#[test]
fn a_second_handle_reads_the_original_bytes_while_a_writer_holds_the_file() {
    both(|lake| {
        let m = lake.mount(&["--block-size", "1M"]);
        let mut writers = Vec::new();
        // In the lake before the mount looks: a name another client adds later may be
        // answered from a listing for up to the metadata TTL.
        for i in 0..6u64 {
            lake.put(&format!("orig{i}"), &pseudo_random(3 << 20, i));
        }
        for i in 0..6u64 {
            let name = format!("orig{i}");
            let data = pseudo_random(3 << 20, i);
            let path = m.path().join(&name);
            let writer = rw(&path);
            if i % 2 == 1 {
                // Closed and opened again at once: the first release may still be on its way.
                drop(writer);
                writers.push(rw(&path));
            } else {
                writers.push(writer);
            }
            let mut got = Vec::new();
            std::fs::File::open(&path)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            assert!(
                got == data,
                "{}: {name}: read(2) while a writer holds it",
                lake.name()
            );
            assert!(
                mmap_read(&path, data.len()) == data,
                "{}: {name}: mmap while a writer holds it",
                lake.name()
            );
        }
    });
}

#[test]
fn the_lake_never_shows_part_of_a_file_a_dup_or_a_child_still_writes() {
    both(|lake| {
        let m = lake.mount(&[]);
        // subprocess.Popen(cmd, stdout=f) and the parent closes f first.
        let f = std::fs::File::create(m.path().join("popen.log")).unwrap();
        let holder = Holder::new(&f, "echo first; read x; echo second");
        drop(f);
        assert!(
            !wait_for(Duration::from_millis(300), || lake
                .get("popen.log")
                .is_some()),
            "{}: the child's first line alone reached the lake",
            lake.name()
        );
        holder.release();
        assert!(
            lake.holds("popen.log", b"first\nsecond\n"),
            "{}",
            lake.name()
        );

        // dup(2), then the original closed.
        lake.put("dup.bin", b"old");
        let f = std::fs::File::create(m.path().join("dup.bin")).unwrap();
        f.write_all_at(&[b'a'; 1000], 0).unwrap();
        // SAFETY: dup(2) of a descriptor we own; the copy is owned by `copy` from here on.
        let mut copy = unsafe { std::fs::File::from_raw_fd(libc::dup(f.as_raw_fd())) };
        drop(f);
        assert_eq!(
            lake.get("dup.bin").as_deref(),
            Some(&b"old"[..]),
            "{}",
            lake.name()
        );
        copy.write_all_at(&[b'b'; 1000], 1000).unwrap();
        copy.flush().unwrap();
        drop(copy);
        let want = [[b'a'; 1000], [b'b'; 1000]].concat();
        assert_eq!(
            lake.get("dup.bin"),
            Some(want),
            "{}: the last close commits",
            lake.name()
        );
    });
}

#[test]
fn two_mounts_writing_one_name_the_last_commit_wins_whole() {
    both(|lake| {
        let (ma, mb) = (
            lake.mount(&["--block-size", "1M"]),
            lake.mount(&["--block-size", "1M"]),
        );
        let (da, db) = (pseudo_random(3 << 20, 1), pseudo_random((3 << 20) + 5, 2));
        let fa = rw(&ma.path().join("shared.bin"));
        let fb = rw(&mb.path().join("shared.bin"));
        // Both have whole blocks staged in the lake before either commits.
        fa.write_all_at(&da, 0).unwrap();
        fb.write_all_at(&db, 0).unwrap();
        fa.sync_all().unwrap();
        assert!(
            lake.get("shared.bin") == Some(da.clone()),
            "{}",
            lake.name()
        );
        fb.sync_all().expect("the second commit succeeds");
        assert!(
            lake.get("shared.bin") == Some(db.clone()),
            "{}: the last commit wins, whole",
            lake.name()
        );
    });
}

fn staged_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "data"))
                .collect()
        })
        .unwrap_or_default()
}

fn close_errno(f: std::fs::File) -> Option<i32> {
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: closing the descriptor we own, once; close(2)'s own result is what is tested.
    let r = unsafe { libc::close(fd) };
    (r != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
}

#[test]
fn a_staging_directory_removed_under_a_writer_keeps_the_data_where_the_log_says() {
    let lake_dir = tempfile::tempdir().unwrap();
    let root = lake_dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let staging = tempfile::tempdir().unwrap();
    let sd = staging.path().join("s");
    let url = format!("file://{}", root.display());
    let m = Mount::start(&url, &["--staging-dir", sd.to_str().unwrap()], &[]).unwrap();
    let data = pseudo_random(2 << 20, 3);
    let f = rw(&m.path().join("precious.bin"));
    f.write_all_at(&data, 0).unwrap();
    std::fs::remove_dir_all(&sd).unwrap();
    // The lake goes too, a file in its place: the upload fails.
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    assert_eq!(close_errno(f), Some(libc::EIO));
    let kept = staged_files(&sd);
    assert_eq!(kept.len(), 1, "kept under a new name: {kept:?}");
    assert!(std::fs::read(&kept[0]).unwrap() == data, "every byte kept");
    assert!(
        wait_for(Duration::from_secs(10), || m
            .log_text()
            .contains(&kept[0].display().to_string())),
        "the log names where: {}",
        m.log_text()
    );
}

fn daemon(m: &Mount) -> u32 {
    common::proc::daemon_pid(&m.path()).expect("daemon")
}

#[test]
fn a_daemon_stopped_with_files_open_reports_only_what_never_reached_the_lake() {
    both(|lake| {
        let staging = tempfile::tempdir().unwrap();
        let st = staging.path().to_str().unwrap();
        let m = lake.mount(&["--staging-dir", st]);
        let done = rw(&m.path().join("done.bin"));
        done.write_all_at(b"whole", 0).unwrap();
        let open = rw(&m.path().join("open.bin"));
        open.write_all_at(b"partial", 0).unwrap();
        let pid = daemon(&m);
        // SAFETY: kill(2) of the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
        // The detached mount still serves open files: this close succeeds...
        assert_eq!(close_errno(done), None);
        assert_eq!(lake.get("done.bin").as_deref(), Some(&b"whole"[..]));
        // ...and the daemon dies before any release of it comes.
        common::proc::kill_9(pid);
        drop(open);
        let next = lake.mount(&["--staging-dir", st]);
        let log = next.log_text();
        assert!(
            log.contains("open.bin"),
            "{}: the unclosed file is named: {log}",
            lake.name()
        );
        assert!(
            !log.contains("done.bin"),
            "{}: no false alarm: {log}",
            lake.name()
        );
        let left: Vec<_> = staged_files(staging.path())
            .into_iter()
            .map(|p| (std::fs::read_to_string(p.with_extension("target")), p))
            .collect();
        assert_eq!(left.len(), 1, "{}: {left:?}\n{log}", lake.name());
    });
}

#[test]
fn a_full_staging_disk_is_enospc_to_the_writer_eio_at_close_and_leaves_nothing_empty() {
    both(|lake| {
        let disk = Tmpfs::mount("4M");
        let st = disk.path().join("staging");
        let m = lake.mount(&["--staging-dir", st.to_str().unwrap()]);
        // Appending to a 6 MB file: copying it in does not fit.
        let old = pseudo_random(6 << 20, 9);
        lake.put("big.bin", &old);
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(m.path().join("big.bin"))
            .unwrap();
        assert_eq!(
            errno((&f).write_all(b"more")),
            Some(libc::ENOSPC),
            "{}",
            lake.name()
        );
        assert_eq!(close_errno(f), Some(libc::EIO), "{}", lake.name());
        assert!(
            lake.get("big.bin") == Some(old),
            "{}: the lake keeps the old file",
            lake.name()
        );
        // A disk filled by someone else: create itself fails.
        let filler = disk.path().join("filler");
        let _ = std::fs::write(&filler, vec![0u8; 8 << 20]);
        let created = std::fs::File::create(m.path().join("new.bin"));
        let e = created.as_ref().err().and_then(|e| e.raw_os_error());
        let write_e = created.ok().map(|f| {
            (&f).write_all(&[1u8; 1 << 20])
                .err()
                .and_then(|e| e.raw_os_error())
        });
        assert!(
            e == Some(libc::ENOSPC) || write_e == Some(Some(libc::ENOSPC)),
            "{}: create {e:?}, write {write_e:?}",
            lake.name()
        );
        std::fs::remove_file(&filler).unwrap();
        drop(m);
        let empty: Vec<_> = staged_files(&st)
            .into_iter()
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == 0))
            .collect();
        assert!(
            empty.is_empty(),
            "{}: empty staging files left: {empty:?}",
            lake.name()
        );
    });
}

#[test]
fn truncate_past_the_largest_blob_is_efbig_changes_nothing_and_a_smaller_one_still_works() {
    both(|lake| {
        let staging = tempfile::tempdir().unwrap();
        let m = lake.mount(&["--staging-dir", staging.path().to_str().unwrap()]);
        lake.put("t.bin", b"0123456789");
        let path = m.path().join("t.bin");
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: truncate(2) on a NUL-terminated path.
        let r = unsafe { libc::truncate(c.as_ptr(), 999_999_999_999_999) };
        assert_eq!(
            (r, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::EFBIG)),
            "{}",
            lake.name()
        );
        assert!(
            wait_for(Duration::from_secs(10), || staged_files(staging.path())
                .is_empty()),
            "{}: no staging file left",
            lake.name()
        );
        assert_eq!(lake.get("t.bin").as_deref(), Some(&b"0123456789"[..]));
        let before = std::fs::metadata(&path).unwrap().mtime();
        let f = rw(&path);
        f.set_len(4).unwrap();
        drop(f);
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(after.len(), 4);
        assert!(after.mtime() >= before, "{}", lake.name());
        assert_eq!(
            lake.get("t.bin").as_deref(),
            Some(&b"0123"[..]),
            "{}",
            lake.name()
        );
    });
}

#[test]
fn ftruncate_replaces_an_old_mtime_at_once() {
    let lake = Lake::local();
    lake.put("old.bin", b"0123456789");
    let Lake::Local(dir) = &lake else {
        unreachable!()
    };
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("old.bin"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let m = lake.mount(&[]);
    let path = m.path().join("old.bin");
    assert_eq!(std::fs::metadata(&path).unwrap().mtime(), 1_000_000_000);
    let f = rw(&path);
    f.set_len(3).unwrap();
    assert!(f.metadata().unwrap().mtime() > 1_700_000_000, "while open");
    drop(f);
    assert!(
        std::fs::metadata(&path).unwrap().mtime() > 1_700_000_000,
        "after close"
    );
}

#[test]
fn a_lake_path_past_path_max_is_enametoolong() {
    let base = tempfile::tempdir().unwrap();
    // A lake root 3,900 bytes long: one more 255-byte name takes it past PATH_MAX.
    let mut root = base.path().to_path_buf();
    while root.as_os_str().len() < 3900 {
        root.push("d".repeat(200));
    }
    std::fs::create_dir_all(&root).unwrap();
    let url = format!("file://{}", root.display());
    let m = Mount::start(&url, &[], &[]).unwrap_or_else(|o| panic!("{o:?}"));
    let long = "n".repeat(255);
    assert_eq!(
        errno(std::fs::metadata(m.path().join(&long))),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(
        errno(std::fs::create_dir(m.path().join(&long))),
        Some(libc::ENAMETOOLONG)
    );
}

/// A program started from the mount keeps its file: every way of opening it to write or
/// truncate it is ETXTBSY from the kernel, and none of them empties it under the running
/// program first (a truncating open that reached the daemon before the kernel's check did,
/// and the program died of SIGSEGV). Loops over the orders the opens can come in.
#[test]
fn a_running_program_is_etxtbsy_to_writers_and_keeps_running_with_its_bytes() {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let sleep = std::fs::read("/bin/sleep").unwrap();
    let opens: [(&str, libc::c_int); 4] = [
        ("O_WRONLY", libc::O_WRONLY),
        ("O_RDWR", libc::O_RDWR),
        ("O_RDONLY|O_TRUNC", libc::O_RDONLY | libc::O_TRUNC),
        ("O_WRONLY|O_TRUNC", libc::O_WRONLY | libc::O_TRUNC),
    ];
    both(|lake| {
        let m = lake.mount(&[]);
        for first in 0..opens.len() {
            let name = format!("prog{first}");
            let path = m.path().join(&name);
            std::fs::write(&path, &sleep).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            // Another test thread forking while this file's write descriptor was open hands
            // its child a copy until that child execs: exec is ETXTBSY until then.
            let mut spawned = None;
            wait_for(Duration::from_secs(10), || {
                match Command::new(&path).arg("30").spawn() {
                    Ok(c) => spawned = Some(c),
                    Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "{e}"),
                }
                spawned.is_some()
            });
            let mut child = spawned.expect("the program starts within 10 s");
            let order = opens.iter().cycle().skip(first).take(opens.len());
            for (what, flags) in order {
                let r = std::fs::OpenOptions::new()
                    .read(flags & libc::O_ACCMODE != libc::O_WRONLY)
                    .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
                    .custom_flags(flags & libc::O_TRUNC)
                    .open(&path);
                assert_eq!(errno(r), Some(libc::ETXTBSY), "{}: {what}", lake.name());
            }
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: truncate(2) of a NUL-terminated path.
            let r = unsafe { libc::truncate(c.as_ptr(), 0) };
            assert_eq!(
                (r, std::io::Error::last_os_error().raw_os_error()),
                (-1, Some(libc::ETXTBSY)),
                "{}: truncate(2)",
                lake.name()
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "{}: the program died under the opens",
                lake.name()
            );
            child.kill().unwrap();
            child.wait().unwrap();
            assert_eq!(
                lake.get(&name).as_deref(),
                Some(&sleep[..]),
                "{}",
                lake.name()
            );
        }
    });
}
