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

#[cfg(test)]
mod tests {
    use super::*;

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
}
