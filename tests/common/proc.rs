//! A running daemon seen through /proc: which process serves a mount, its memory, its files.

use std::path::Path;
use std::time::Duration;

use super::mount::wait_for;

/// The pid of the daemon serving `mp`: the `lakemount mount ... MP ... --foreground` that a
/// `lakemount mount` started (or a test started itself).
pub fn daemon_pid(mp: &Path) -> Option<u32> {
    let want = mp.to_str()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_daemon = args.first()?.ends_with(b"lakemount")
            && args.contains(&&b"mount"[..])
            && args.contains(&want.as_bytes())
            && args.contains(&&b"--foreground"[..]);
        (is_daemon && !is_gone(pid)).then_some(pid)
    })
}

/// Gone or a zombie: nothing of it runs any more (nobody may reap an orphaned daemon).
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

/// SIGKILL, then waits (bounded) until the process no longer runs.
pub fn kill_9(pid: u32) {
    // SAFETY: kill(2) of a process this test started (through `lakemount mount`).
    assert_eq!(
        unsafe { libc::kill(pid as i32, libc::SIGKILL) },
        0,
        "kill {pid}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || is_gone(pid)),
        "{pid} survived SIGKILL"
    );
}

/// A field of /proc/PID/status in bytes (VmHWM, VmRSS).
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib * 1024
}

/// Open descriptors of `pid`: (sockets, everything else).
pub fn fd_counts(pid: u32) -> (usize, usize) {
    let mut sockets = 0;
    let mut other = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        match std::fs::read_link(e.path()) {
            Ok(t) if t.to_string_lossy().starts_with("socket:") => sockets += 1,
            // A descriptor closed between the listing and the readlink counts as nothing.
            Ok(_) => other += 1,
            Err(_) => {}
        }
    }
    (sockets, other)
}
