//! Is a lake mounted, and does it answer? The stat runs in a child process with a deadline,
//! never in a thread of ours: a hung FUSE daemon would leave that thread (and so the agent)
//! stuck in the kernel for good.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::disks::parse_mounts;

const POLL: Duration = Duration::from_millis(100);

/// Whether the top mount at `mp` is a lakemount FUSE mount.
pub fn is_lakemount(mp: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    parse_mounts(&text)
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == mp)
        .is_some_and(|m| {
            m.device == "lakemount" && (m.fstype == "fuse" || m.fstype == "fuse.lakemount")
        })
}

/// Lists `mp` from a child process within `limit`: Ok, or what went wrong.
pub fn answers(mp: &Path, limit: Duration) -> std::result::Result<(), String> {
    // `ls -d` would be answered from the kernel's attribute cache; listing asks the daemon.
    let mut child = Command::new("ls")
        .arg("-A")
        .arg("--")
        .arg(mp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ls: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(_)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(err.trim().to_string());
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {limit:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The device (`major:minor`, one per FUSE connection) of the top lakemount mount at `mp`.
fn lakemount_device(mp: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().rev().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 5 || Path::new(&super::disks::unescape(f[4])) != mp {
            return None;
        }
        let mut rest = line.split(" - ").nth(1)?.split(' ');
        let (fstype, source) = (rest.next()?, rest.next()?);
        let ours = source == "lakemount" && (fstype == "fuse" || fstype == "fuse.lakemount");
        // The top mount decides: a lakemount under something else is not what `mp` shows.
        Some(ours.then(|| f[2].to_string()))
    })?
}

/// Whether `mp` is a lakemount mount that answers now. The same mount must be there before
/// and after the listing: a dead mount being replaced is lazily detached, and a listing in
/// that moment would be answered by the empty directory underneath.
pub fn is_ready(mp: &Path) -> bool {
    let Some(before) = lakemount_device(mp) else {
        return false;
    };
    answers(mp, Duration::from_secs(10)).is_ok() && lakemount_device(mp) == Some(before)
}

/// Waits until `mp` is a lakemount mount that answers, up to `limit`. `failed` is asked on
/// every round and ends the wait early with its reason (the daemon gave up).
pub fn wait_ready(
    mp: &Path,
    limit: Duration,
    mut failed: impl FnMut() -> Option<String>,
) -> Result<Duration> {
    let start = Instant::now();
    let deadline = start + limit;
    let mut last = String::from("not mounted yet");
    loop {
        if let Some(why) = failed() {
            bail!("{why}");
        }
        if let Some(dev) = lakemount_device(mp) {
            let left = deadline.saturating_duration_since(Instant::now());
            match answers(
                mp,
                left.clamp(Duration::from_millis(100), Duration::from_secs(5)),
            ) {
                // Still the same mount: not a dead one replaced while it was listed.
                Ok(()) if lakemount_device(mp) == Some(dev) => return Ok(start.elapsed()),
                Ok(()) => last = "replaced while it was checked".into(),
                Err(e) => last = format!("mounted but not answering: {e}"),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer within {}s ({last})",
                mp.display(),
                limit.as_secs_f64()
            );
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_not_a_lake_and_the_wait_says_so() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_lakemount(dir.path()));
        assert!(answers(dir.path(), Duration::from_secs(5)).is_ok());
        let e = wait_ready(dir.path(), Duration::from_millis(300), || None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not answer within 0.3s"), "{e}");
        let e = wait_ready(dir.path(), Duration::from_secs(30), || {
            Some("gave up".into())
        })
        .unwrap_err()
        .to_string();
        assert_eq!(e, "gave up");
    }
}
