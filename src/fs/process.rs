//! Which process a request comes from. FUSE names the calling thread; whether two requests
//! come from one process (thread group) is read from `/proc`.

/// The process (thread group id) of thread `tid`, or `None` if that cannot be told (`tid` 0:
/// the caller is outside the daemon's pid namespace; or the thread is gone).
pub fn of_thread(tid: u32) -> Option<u32> {
    if tid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether thread `tid` belongs to a process being killed by SIGKILL. Its descriptors are
/// being closed by the kernel and nobody can see what those closes return; waiting for an
/// upload there only keeps a killed process from dying. Read from `/proc/TID/status` only:
/// `/proc/TID/stat` of an exiting process can wait on the very close being answered here.
pub fn being_killed(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .is_ok_and(|status| sigkill_pending(&status))
}

/// Whether a `/proc/TID/status` text shows SIGKILL pending, for the thread or its process.
/// SIGKILL cannot be blocked or handled: one pending means the process is dying.
fn sigkill_pending(status: &str) -> bool {
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    status.lines().any(|l| {
        let mask = l
            .strip_prefix("ShdPnd:")
            .or_else(|| l.strip_prefix("SigPnd:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & SIGKILL_BIT != 0)
    })
}

/// Whether process `pid` has a descriptor open for writing on the file `(dev, ino)`. Reads
/// its `/proc` fd table without calling into the file system: the inode comes from statx
/// with `AT_STATX_DONT_SYNC`, which a FUSE mount answers from the kernel's own copy.
pub fn has_writable_fd(pid: u32, dev: u64, ino: u64) -> bool {
    let dir = format!("/proc/{pid}/fd");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let Some(fd) = e.file_name().to_str().map(str::to_string) else {
            return false;
        };
        same_file(&format!("{dir}/{fd}"), dev, ino) && writable(pid, &fd)
    })
}

fn same_file(path: &str, dev: u64, ino: u64) -> bool {
    let Ok(c) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: a zeroed statx is a valid out-buffer; `c` is a NUL-terminated path.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_DONT_SYNC,
            libc::STATX_INO,
            &mut st,
        )
    };
    r == 0 && st.stx_ino == ino && libc::makedev(st.stx_dev_major, st.stx_dev_minor) == dev
}

fn writable(pid: u32, fd: &str) -> bool {
    let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
        return false;
    };
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
        .is_some_and(|flags| flags & libc::O_ACCMODE != libc::O_RDONLY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pending_sigkill_means_the_process_is_being_killed() {
        let status = |shd: &str, sig: &str| {
            format!("Name:\tcp\nState:\tD (disk sleep)\nSigPnd:\t{sig}\nShdPnd:\t{shd}\nSigBlk:\t0000000000000100\n")
        };
        assert!(sigkill_pending(&status(
            "0000000000000100",
            "0000000000000000"
        )));
        assert!(sigkill_pending(&status(
            "0000000000000000",
            "0000000000000100"
        )));
        assert!(sigkill_pending(&status(
            "0000000000004100",
            "0000000000000000"
        )));
        // SIGTERM (bit 15) may be blocked by a live process; a blocked-mask line is not pending.
        assert!(!sigkill_pending(&status(
            "0000000000004000",
            "0000000000000000"
        )));
        assert!(!sigkill_pending(&status(
            "0000000000000000",
            "0000000000000000"
        )));
        assert!(!sigkill_pending("garbage"));
        // Live processes: this one, a sleeping child, and one that is gone.
        assert!(!being_killed(std::process::id()));
        assert!(!being_killed(0));
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        assert!(!being_killed(child.id()), "a sleeping process");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!being_killed(child.id()), "a reaped process is gone");
    }

    #[test]
    fn threads_belong_to_their_process_and_other_processes_differ() {
        let me = std::process::id();
        // SAFETY: gettid(2) has no preconditions.
        let main_tid = unsafe { libc::gettid() } as u32;
        assert_eq!(of_thread(main_tid), Some(me));
        let other_thread = std::thread::spawn(|| {
            // SAFETY: as above.
            of_thread(unsafe { libc::gettid() } as u32)
        })
        .join()
        .unwrap();
        assert_eq!(other_thread, Some(me));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let child_process = of_thread(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(child_process, Some(child.id()));
        assert_eq!(of_thread(0), None);
    }

    #[test]
    fn only_descriptors_open_for_writing_on_the_file_count() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (f, g) = (dir.path().join("f"), dir.path().join("g"));
        std::fs::write(&f, b"x").unwrap();
        std::fs::write(&g, b"y").unwrap();
        let m = std::fs::metadata(&f).unwrap();
        let me = std::process::id();
        let reader = std::fs::File::open(&f).unwrap();
        let other = std::fs::OpenOptions::new().write(true).open(&g).unwrap();
        assert!(
            !has_writable_fd(me, m.dev(), m.ino()),
            "read-only and other files"
        );
        let writer = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        assert!(has_writable_fd(me, m.dev(), m.ino()));
        drop((reader, other, writer));
        assert!(!has_writable_fd(me, m.dev(), m.ino()));
        assert!(
            !has_writable_fd(u32::MAX, m.dev(), m.ino()),
            "no such process"
        );
    }
}
